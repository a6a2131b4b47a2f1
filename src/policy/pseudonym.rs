//! Keyed pseudonyms: HMAC-SHA256 of the value under a key that policies name
//! by reference and never contain.
//!
//! A reference is `env:NAME` (the environment variable `NAME`) or `file:PATH`
//! (the file's bytes, one trailing line ending removed; a relative `PATH` is
//! taken from the policy file's folder). A key has at least 32 bytes. The
//! [`KeyRing`] reads the keys of the policies it is given, once, at load time;
//! its errors name the policy file and the reference, never the key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Policy;
use crate::error::Error;

/// The shortest key accepted, in bytes (the output size of SHA-256).
pub const MIN_KEY_BYTES: usize = 32;

/// Where a pseudonymisation key is found. Two references are the same key
/// when they name the same variable or the same resolved path.
#[derive(Debug, Clone)]
pub enum KeyReference {
    /// An environment variable.
    Env(String),
    /// A file, its path resolved against the policy file's folder.
    File {
        /// The path as the policy writes it.
        written: String,
        /// The path to read.
        resolved: PathBuf,
    },
}

impl KeyReference {
    /// Parses `env:NAME` or `file:PATH`, resolving a relative path against
    /// `folder`; the error says what a reference looks like.
    pub fn parse(text: &str, folder: &Path) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if valid {
                return Ok(Self::Env(name.to_owned()));
            }
            return Err(format!(
                "\"{text}\": an environment variable name is upper-case letters, digits and _"
            ));
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err(format!("\"{text}\": file: needs a path"));
            }
            let resolved = if Path::new(path).is_absolute() {
                PathBuf::from(path)
            } else {
                folder.join(path)
            };
            return Ok(Self::File {
                written: path.to_owned(),
                resolved,
            });
        }
        Err(format!(
            "\"{text}\" is not a key reference: use env:NAME or file:PATH (the key itself never goes in a policy)"
        ))
    }

    /// The key bytes (a final newline of a key file is not part of the key).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Self::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(value.into_bytes()),
                Err(std::env::VarError::NotPresent) => {
                    Err("the environment variable is not set".to_owned())
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err("the environment variable is not valid UTF-8".to_owned())
                }
            },
            Self::File { resolved, .. } => {
                let mut bytes = std::fs::read(resolved).map_err(|error| {
                    format!(
                        "the key file {} cannot be read ({error})",
                        resolved.display()
                    )
                })?;
                // Keys are usually written as text with a final newline, which is not part of them.
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                Ok(bytes)
            }
        }
    }
}

impl KeyReference {
    /// What identifies the key: the variable name or the resolved path's bytes
    /// (cheaper to hash than a path's components, looked up on every pseudonym).
    fn identity(&self) -> (u8, &[u8]) {
        match self {
            Self::Env(name) => (0, name.as_bytes()),
            Self::File { resolved, .. } => (1, resolved.as_os_str().as_encoded_bytes()),
        }
    }
}

impl PartialEq for KeyReference {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for KeyReference {}

impl std::hash::Hash for KeyReference {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl fmt::Display for KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File { written, .. } => write!(f, "file:{written}"),
        }
    }
}

/// The pseudonymisation keys of a set of policies, ready to use. Its `Debug`
/// form lists references only.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: HashMap<KeyReference, Hmac<Sha256>>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every key the policies reference.
    pub fn load<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Result<Self, Error> {
        let mut ring = Self::new();
        for policy in policies {
            ring.add(policy)?;
        }
        Ok(ring)
    }

    /// Reads the keys one policy references; an error names the policy file,
    /// the reference and the pseudonymised path, never the key.
    pub fn add(&mut self, policy: &Policy) -> Result<(), Error> {
        for (path, reference) in policy.pseudonymised() {
            if self.keys.contains_key(reference) {
                continue;
            }
            let problem = match reference.read() {
                Ok(key) if key.len() >= MIN_KEY_BYTES => {
                    match Hmac::<Sha256>::new_from_slice(&key) {
                        Ok(mac) => {
                            self.keys.insert(reference.clone(), mac);
                            continue;
                        }
                        Err(_) => "the key cannot be used for HMAC-SHA256".to_owned(),
                    }
                }
                Ok(key) => format!(
                    "the key has {} bytes; at least {MIN_KEY_BYTES} are needed",
                    key.len()
                ),
                Err(problem) => problem,
            };
            return Err(Error::Config {
                file: policy.file().to_owned(),
                key: reference.to_string(),
                detail: format!("key for pseudonymised path {path}: {problem}"),
            });
        }
        Ok(())
    }

    /// Reads every key the policies reference and generates a random key for
    /// each reference that resolves to nothing (development only: pseudonyms
    /// then change at every start). Returns the ring and the references
    /// generated, so the caller can warn about them.
    pub fn load_or_generate(policies: &[Policy]) -> (Self, Vec<String>) {
        let mut ring = Self::new();
        let mut generated = Vec::new();
        for policy in policies {
            for (_, reference) in policy.pseudonymised() {
                if ring.keys.contains_key(reference) {
                    continue;
                }
                let key = match reference.read() {
                    Ok(key) if key.len() >= MIN_KEY_BYTES => key,
                    _ => {
                        generated.push(reference.to_string());
                        // Two version-4 UUIDs: 244 bits from the operating system's generator.
                        [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
                            .iter()
                            .flat_map(|uuid| uuid.into_bytes())
                            .collect()
                    }
                };
                if let Ok(mac) = Hmac::<Sha256>::new_from_slice(&key) {
                    ring.keys.insert(reference.clone(), mac);
                }
            }
        }
        (ring, generated)
    }

    /// Whether the ring holds every key the policy references.
    pub fn covers(&self, policy: &Policy) -> bool {
        policy
            .pseudonymised()
            .all(|(_, reference)| self.keys.contains_key(reference))
    }

    /// The pseudonym of a value: HMAC-SHA256 under the referenced key, in
    /// lower-case hexadecimal; `None` when the ring lacks the key.
    pub fn pseudonym(&self, reference: &KeyReference, value: &str) -> Option<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.keys.get(reference)?.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut pseudonym = String::with_capacity(digest.len() * 2);
        for byte in digest.iter() {
            pseudonym.push(char::from(DIGITS[usize::from(byte >> 4)]));
            pseudonym.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        Some(pseudonym)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut references: Vec<String> = self.keys.keys().map(ToString::to_string).collect();
        references.sort();
        f.debug_struct("KeyRing")
            .field("references", &references)
            .finish()
    }
}
