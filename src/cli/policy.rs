//! `passerelle policy check` and `passerelle minimise`: minimisation policies
//! checked offline, and a dry run of the forwarding decision on one referral.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{write_failed, write_json};
use crate::consent::{ConsentRecord, Purpose};
use crate::decision::{Decision, decide};
use crate::error::Error;
use crate::formats::Context;
use crate::formats::canonical::{CanonicalJson, decode_json};
use crate::model::Message;
use crate::policy::{KeyRing, Policy};
use crate::validate::Limits;

/// The policies `policy check` reads when no file is named.
pub const DEFAULT_POLICY_DIR: &str = "config/policies";

/// One checked policy file.
#[derive(Debug, Serialize)]
struct Checked {
    file: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Loads each policy and resolves its keys; prints one line per file.
pub fn check(files: &[PathBuf], out: &mut dyn Write) -> Result<ExitCode, Error> {
    let files = if files.is_empty() {
        policy_files(Path::new(DEFAULT_POLICY_DIR))?
    } else {
        files.to_vec()
    };
    let mut failed = 0;
    for file in &files {
        let checked = match Policy::load(file).and_then(|policy| {
            let mut keys = KeyRing::new();
            keys.add(&policy)?;
            Ok(policy)
        }) {
            Ok(policy) => Checked {
                file: file.display().to_string(),
                ok: true,
                id: Some(policy.id().to_owned()),
                version: Some(policy.version().to_owned()),
                error: None,
            },
            Err(error) => {
                failed += 1;
                Checked {
                    file: file.display().to_string(),
                    ok: false,
                    id: None,
                    version: None,
                    error: Some(error.to_string()),
                }
            }
        };
        let line = match (&checked.error, &checked.id, &checked.version) {
            (Some(error), _, _) => format!("{}: {error}", checked.file),
            (None, Some(id), Some(version)) => {
                format!("{}: ok ({id}, version {version})", checked.file)
            }
            _ => format!("{}: ok", checked.file),
        };
        writeln!(out, "{line}").map_err(write_failed)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn policy_files(folder: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(folder).map_err(|source| Error::Io {
        context: format!("reading {}", folder.display()),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Dry run of the decision: decodes the referral (canonical v1 or v2 JSON),
/// reads the consent record, applies the policy, prints the decision as JSON.
pub fn minimise(
    policy: &Path,
    consent: Option<&Path>,
    referral: &Path,
    now: Option<DateTime<Utc>>,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let limits = Limits::default();
    let policy = Policy::load(policy)?;
    let mut keys = KeyRing::new();
    keys.add(&policy)?;
    let consent = consent
        .map(|path| ConsentRecord::parse(&read(path, &limits)?, &limits))
        .transpose()?;
    let context = Context {
        limits,
        ..Context::now()
    };
    let bytes = read(referral, &limits)?;
    let message = decode_json(&bytes, CanonicalJson::V2, &context)
        .or_else(|_| decode_json(&bytes, CanonicalJson::V1, &context))?;
    let Message::Referral(referral) = message else {
        return Err(Error::UnsupportedFormat(
            "minimise takes a referral; status events are minimised on their way back".to_owned(),
        ));
    };
    let purpose = Purpose::parse(policy.purpose()).map_err(|error| Error::Config {
        file: policy.file().to_owned(),
        key: "purpose".to_owned(),
        detail: error.to_string(),
    })?;
    let decision = decide(
        &referral,
        &referral.sender.organisation,
        &referral.recipient.organisation,
        &purpose,
        consent.as_ref(),
        &policy,
        &keys,
        now.unwrap_or_else(Utc::now),
    );
    write_json(out, &decision, true)?;
    Ok(match decision {
        Decision::Forward(_) => ExitCode::SUCCESS,
        Decision::Refuse(_) => ExitCode::from(1),
    })
}

fn read(path: &Path, limits: &Limits) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    crate::formats::read_limited(Box::new(file), limits)
}
