//! The gateway's configuration file (`passerelle serve --config FILE`): where
//! it listens, its store, its policies and mappings, and the organisations it
//! serves with their credentials.
//!
//! Every error at start-up names the file, the key and the problem. Relative
//! paths are resolved against the folder of the configuration file, so the
//! gateway starts the same way from any working directory.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::consent::record::kind_name;
use crate::error::Error;
use crate::formats::csv_mapping::Mapping;
use crate::model::common::{Organisation as Party, OrganisationKind};
use crate::model::ids::Siret;
use crate::policy::{KeyRing, Policy};
use crate::telemetry::TelemetryConfig;

/// The whole configuration, checked and with its files loaded.
#[derive(Debug)]
pub struct GatewayConfig {
    /// The configuration file.
    pub file: PathBuf,
    /// Listening, TLS and protection settings.
    pub server: ServerConfig,
    /// The store: an SQLite file (the embedded default) or a PostgreSQL database.
    pub store: crate::store::StoreLocation,
    /// The organisations, by id.
    pub organisations: Organisations,
    /// The minimisation policies.
    pub policies: Vec<Policy>,
    /// The pseudonymisation keys the policies reference.
    pub keys: KeyRing,
    /// Key references given a random key at start-up (development only).
    pub ephemeral_keys: Vec<String>,
    /// The CSV mappings, by name (the file stem).
    pub mappings: BTreeMap<String, Mapping>,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// How the outbox worker runs.
    pub delivery: DeliverySettings,
}

/// How the outbox worker runs (the `[delivery]` table).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How often the worker looks for due messages when nothing wakes it.
    pub poll_interval: Duration,
    /// The first retry delay; each retry doubles it (full jitter), up to `max_delay`.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How long a pulled message stays leased before it is offered again.
    pub lease: Duration,
    /// Messages claimed at once.
    pub batch: u32,
    /// Requests to destinations at once (an attempt gives its slot back
    /// once answered, before its outcome commits).
    pub concurrency: usize,
    /// A referral with no status event for this long expires (DORA: 30 days).
    pub expiry: Duration,
    /// How often expiry is checked.
    pub expiry_check: Duration,
}

/// Where and how the gateway listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// TLS settings; `None` only for plain HTTP on a loopback address.
    pub tls: Option<TlsConfig>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// The deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How long a connection may stay silent (TLS handshake, request headers, HTTP/2 keep-alive).
    pub idle_timeout: Duration,
    /// The most connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The most requests handled at once, health checks aside; more wait,
    /// their bodies unread, so memory stays bounded however many connections send.
    pub max_requests_in_flight: usize,
    /// Requests per second allowed to one organisation, on average.
    pub rate_per_second: u32,
    /// Requests one organisation may send in a burst above the average.
    pub rate_burst: u32,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

/// TLS files (PEM).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub certificate: PathBuf,
    /// The server's private key.
    pub private_key: PathBuf,
    /// CA certificates that sign organisations' client certificates (mTLS);
    /// `None`: API keys only.
    pub client_ca: Option<PathBuf>,
}

/// One organisation the gateway serves.
#[derive(Debug, Clone)]
pub struct Organisation {
    /// Stable id used in the audit log and in URLs of the configuration.
    pub id: String,
    /// The organisation as the model names it (SIRET, kind, name).
    pub party: Party,
    /// SHA-256 hashes of its API keys.
    pub api_key_hashes: Vec<[u8; 32]>,
    /// Its client certificates (mTLS).
    pub certificates: Vec<CertificateMatch>,
    /// How messages reach it.
    pub delivery: Delivery,
}

/// How messages for an organisation leave the gateway.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Push (webhook, gRPC) or pull (inbox).
    pub mode: DeliveryMode,
    /// The format messages are written in (`passerelle-v2`, `passerelle-v1`, `france-travail`).
    pub format: String,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a message still undelivered is dead-lettered.
    pub max_age: Duration,
    /// How long one push attempt may take.
    pub timeout: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::Pull,
            format: defaults::delivery_format(),
            max_attempts: defaults::max_attempts(),
            max_age: Duration::from_secs(defaults::max_age_hours() * 3600),
            timeout: Duration::from_secs(defaults::timeout_seconds()),
        }
    }
}

/// The channel of an organisation's deliveries.
#[derive(Debug, Clone)]
pub enum DeliveryMode {
    /// The organisation fetches its messages from its inbox and acknowledges them.
    Pull,
    /// Signed POSTs (Standard Webhooks) to the organisation's URL.
    Webhook(PushTarget),
    /// Calls to the organisation's `passerelle.receiver.v1` gRPC service.
    Grpc(PushTarget),
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The receiver's URL.
    pub url: String,
    /// The signing secret's reference (`env:NAME` or `file:PATH`), for webhooks.
    pub secret: Option<crate::policy::KeyReference>,
    /// CA certificates (PEM) the receiver's certificate must chain to; none: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// The gateway's client certificate and key (PEM) for receivers that require mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// How a client certificate is recognised as an organisation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateMatch {
    /// The certificate's subject, as RFC 4514 text (`CN=...,O=...`).
    Subject(String),
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER), lower-case hex.
    SpkiSha256(String),
}

/// The organisations, indexed by id, SIRET, API key hash and certificate.
#[derive(Debug, Default)]
pub struct Organisations {
    list: Vec<Organisation>,
    by_key: HashMap<[u8; 32], usize>,
    by_siret: HashMap<String, usize>,
}

impl Organisations {
    /// All organisations, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Organisation> {
        self.list.iter()
    }

    /// The organisation holding this API key.
    pub fn by_api_key(&self, key: &str) -> Option<&Organisation> {
        self.by_key
            .get(&hash_api_key(key))
            .map(|index| &self.list[*index])
    }

    /// The organisation with this SIRET.
    pub fn by_siret(&self, siret: &Siret) -> Option<&Organisation> {
        self.by_siret
            .get(siret.as_str())
            .map(|index| &self.list[*index])
    }

    /// Changes how an organisation's messages leave (the demo points France
    /// Travail at its local receiver).
    pub fn set_delivery(&mut self, id: &str, delivery: Delivery) -> Result<(), Error> {
        let organisation = self
            .list
            .iter_mut()
            .find(|organisation| organisation.id == id)
            .ok_or_else(|| Error::NotFound(format!("organisation {id}")))?;
        organisation.delivery = delivery;
        Ok(())
    }

    /// The organisation with this id.
    pub fn by_id(&self, id: &str) -> Option<&Organisation> {
        self.list.iter().find(|organisation| organisation.id == id)
    }

    /// The organisation one of whose certificate rules matches.
    pub fn by_certificate(&self, subject: &str, spki_sha256: &str) -> Option<&Organisation> {
        self.list.iter().find(|organisation| {
            organisation.certificates.iter().any(|rule| match rule {
                CertificateMatch::Subject(expected) => expected == subject,
                CertificateMatch::SpkiSha256(expected) => expected == spki_sha256,
            })
        })
    }
}

/// A certificate subject as the gateway compares it: RFC 4514 text without
/// spaces around the commas and equal signs between attributes.
pub fn normalise_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(|part| part.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
}

/// SHA-256 of an API key, as the configuration stores it.
pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: ServerFile,
    store: StoreFile,
    policies: FolderFile,
    #[serde(default)]
    mappings: Option<FolderFile>,
    #[serde(default)]
    development: DevelopmentFile,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    delivery: DeliveryDefaultsFile,
    #[serde(default, rename = "organisation")]
    organisations: Vec<OrganisationFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: String,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    tls: Option<TlsFile>,
    #[serde(default = "defaults::max_body_bytes")]
    max_body_bytes: u64,
    #[serde(default = "defaults::max_json_depth")]
    max_json_depth: usize,
    #[serde(default = "defaults::request_timeout_seconds")]
    request_timeout_seconds: u64,
    #[serde(default = "defaults::idle_timeout_seconds")]
    idle_timeout_seconds: u64,
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    #[serde(default = "defaults::max_requests_in_flight")]
    max_requests_in_flight: usize,
    #[serde(default)]
    rate_limit: RateLimitFile,
    #[serde(default = "defaults::shutdown_grace_seconds")]
    shutdown_grace_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    certificate: PathBuf,
    private_key: PathBuf,
    #[serde(default)]
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    requests_per_second: u32,
    burst: u32,
}

impl Default for RateLimitFile {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    /// The embedded store's file.
    sqlite: Option<PathBuf>,
    /// A PostgreSQL URL, or `env:NAME` naming the variable that holds it (a
    /// URL with a password belongs in the environment, not in this file).
    postgres: Option<String>,
}

impl StoreFile {
    fn location(self, name: &str, folder: &Path) -> Result<crate::store::StoreLocation, Error> {
        use crate::store::StoreLocation;
        match (self.sqlite, self.postgres) {
            (Some(file), None) => Ok(StoreLocation::Sqlite(folder.join(file))),
            (None, Some(reference)) => {
                let url = match reference.strip_prefix("env:") {
                    Some(variable) => std::env::var(variable).map_err(|_| {
                        Error::config(
                            name,
                            "store.postgres",
                            format!("the environment variable {variable} is not set"),
                        )
                    })?,
                    None => reference,
                };
                match StoreLocation::parse(&url) {
                    location @ StoreLocation::Postgres(_) => Ok(location),
                    StoreLocation::Sqlite(_) => Err(Error::config(
                        name,
                        "store.postgres",
                        "expected a postgres:// or postgresql:// URL",
                    )),
                }
            }
            _ => Err(Error::config(
                name,
                "store",
                "give exactly one of sqlite = \"FILE\" or postgres = \"URL\" (or \"env:NAME\")",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderFile {
    directory: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DevelopmentFile {
    /// Generate random pseudonymisation keys at start-up for references that
    /// resolve to nothing (loopback plain HTTP only): pseudonyms then change
    /// at every start.
    #[serde(default)]
    ephemeral_pseudonym_keys: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganisationFile {
    id: String,
    #[serde(default)]
    name: Option<String>,
    siret: String,
    kind: String,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    client_certificates: Vec<CertificateFile>,
    #[serde(default)]
    delivery: Option<DeliveryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DeliveryDefaultsFile {
    poll_interval_milliseconds: u64,
    base_delay_milliseconds: u64,
    max_delay_seconds: u64,
    lease_seconds: u64,
    batch: u32,
    concurrency: usize,
    expiry_days: u64,
    expiry_check_seconds: u64,
}

impl Default for DeliveryDefaultsFile {
    fn default() -> Self {
        Self {
            poll_interval_milliseconds: 200,
            base_delay_milliseconds: 1000,
            max_delay_seconds: 3600,
            lease_seconds: 60,
            batch: 64,
            concurrency: 64,
            expiry_days: 30,
            expiry_check_seconds: 3600,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    mode: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default = "defaults::delivery_format")]
    format: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    client_certificate: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    #[serde(default = "defaults::max_attempts")]
    max_attempts: u32,
    #[serde(default = "defaults::max_age_hours")]
    max_age_hours: u64,
    #[serde(default = "defaults::timeout_seconds")]
    timeout_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    spki_sha256: Option<String>,
}

mod defaults {
    pub(super) fn delivery_format() -> String {
        "passerelle-v2".to_owned()
    }
    pub(super) fn max_attempts() -> u32 {
        12
    }
    pub(super) fn max_age_hours() -> u64 {
        72
    }
    pub(super) fn timeout_seconds() -> u64 {
        10
    }
    pub(super) fn max_body_bytes() -> u64 {
        1024 * 1024
    }
    pub(super) fn max_json_depth() -> usize {
        32
    }
    pub(super) fn request_timeout_seconds() -> u64 {
        30
    }
    pub(super) fn idle_timeout_seconds() -> u64 {
        60
    }
    pub(super) fn max_connections() -> usize {
        1024
    }
    pub(super) fn max_requests_in_flight() -> usize {
        128
    }
    pub(super) fn shutdown_grace_seconds() -> u64 {
        30
    }
}

impl GatewayConfig {
    /// Reads and checks the configuration file and the policy and mapping
    /// files it names.
    pub fn load(file: &Path) -> Result<Self, Error> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
            context: format!("reading the configuration {name}"),
            source,
        })?;
        let parsed: File = toml::Deserializer::parse(&text)
            .map_err(|error| Error::toml(&name, &text, "", &error))
            .and_then(|deserializer| {
                serde_path_to_error::deserialize(deserializer).map_err(|error| {
                    let key = error.path().to_string();
                    Error::toml(&name, &text, &key, error.inner())
                })
            })?;
        let folder = file.parent().unwrap_or_else(|| Path::new("."));
        let server = server(&name, folder, parsed.server)?;
        if parsed.development.ephemeral_pseudonym_keys
            && (server.tls.is_some() || !server.listen.ip().is_loopback())
        {
            return Err(Error::config(
                &name,
                "development.ephemeral_pseudonym_keys",
                "ephemeral keys are for development only: allowed with plain HTTP on a loopback address",
            ));
        }
        parsed
            .telemetry
            .check()
            .map_err(|detail| Error::config(&name, "telemetry", detail))?;
        let organisations = organisations(&name, folder, parsed.organisations)?;
        let policies = load_policies(&name, &folder.join(&parsed.policies.directory))?;
        let (keys, ephemeral_keys) = if parsed.development.ephemeral_pseudonym_keys {
            KeyRing::load_or_generate(&policies)
        } else {
            (KeyRing::load(&policies)?, Vec::new())
        };
        let mappings = match parsed.mappings {
            Some(mappings) => load_mappings(&name, &folder.join(mappings.directory))?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            file: file.to_path_buf(),
            server,
            store: parsed.store.location(&name, folder)?,
            organisations,
            policies,
            keys,
            ephemeral_keys,
            mappings,
            telemetry: parsed.telemetry,
            delivery: delivery_defaults(&name, &parsed.delivery)?,
        })
    }
}

fn server(name: &str, folder: &Path, file: ServerFile) -> Result<ServerConfig, Error> {
    let listen: SocketAddr = file.listen.parse().map_err(|_| {
        Error::config(
            name,
            "server.listen",
            "expected an address and port such as 127.0.0.1:8443 or [::1]:8443",
        )
    })?;
    let tls = match (file.tls, file.plain_http) {
        (Some(_), true) => {
            return Err(Error::config(
                name,
                "server.plain_http",
                "plain_http and [server.tls] exclude each other",
            ));
        }
        (None, false) => {
            return Err(Error::config(
                name,
                "server.tls",
                "missing: the gateway serves TLS (set certificate and private_key), or plain_http = true on a loopback address for development",
            ));
        }
        (None, true) => {
            if !listen.ip().is_loopback() {
                return Err(Error::config(
                    name,
                    "server.plain_http",
                    "plain HTTP is only allowed on a loopback address (127.0.0.1, ::1): personal data never crosses a network unencrypted",
                ));
            }
            None
        }
        (Some(tls), false) => Some(TlsConfig {
            certificate: folder.join(tls.certificate),
            private_key: folder.join(tls.private_key),
            client_ca: tls.client_ca.map(|ca| folder.join(ca)),
        }),
    };
    let positive = |key: &str, value: u64| {
        if value == 0 {
            Err(Error::config(name, key, "must be greater than 0"))
        } else {
            Ok(value)
        }
    };
    positive("server.max_body_bytes", file.max_body_bytes)?;
    positive("server.max_json_depth", file.max_json_depth as u64)?;
    positive(
        "server.request_timeout_seconds",
        file.request_timeout_seconds,
    )?;
    positive("server.idle_timeout_seconds", file.idle_timeout_seconds)?;
    positive("server.max_connections", file.max_connections as u64)?;
    positive(
        "server.max_requests_in_flight",
        file.max_requests_in_flight as u64,
    )?;
    positive(
        "server.rate_limit.requests_per_second",
        u64::from(file.rate_limit.requests_per_second),
    )?;
    positive("server.rate_limit.burst", u64::from(file.rate_limit.burst))?;
    Ok(ServerConfig {
        listen,
        tls,
        max_body_bytes: file.max_body_bytes,
        max_json_depth: file.max_json_depth,
        request_timeout: Duration::from_secs(file.request_timeout_seconds),
        idle_timeout: Duration::from_secs(file.idle_timeout_seconds),
        max_connections: file.max_connections,
        max_requests_in_flight: file.max_requests_in_flight,
        rate_per_second: file.rate_limit.requests_per_second,
        rate_burst: file.rate_limit.burst,
        shutdown_grace: Duration::from_secs(file.shutdown_grace_seconds),
    })
}

fn delivery_defaults(name: &str, file: &DeliveryDefaultsFile) -> Result<DeliverySettings, Error> {
    let values = [
        (
            "delivery.poll_interval_milliseconds",
            file.poll_interval_milliseconds,
        ),
        (
            "delivery.base_delay_milliseconds",
            file.base_delay_milliseconds,
        ),
        ("delivery.max_delay_seconds", file.max_delay_seconds),
        ("delivery.lease_seconds", file.lease_seconds),
        ("delivery.batch", u64::from(file.batch)),
        ("delivery.concurrency", file.concurrency as u64),
        ("delivery.expiry_days", file.expiry_days),
        ("delivery.expiry_check_seconds", file.expiry_check_seconds),
    ];
    for (key, value) in values {
        if value == 0 {
            return Err(Error::config(name, key, "must be greater than 0"));
        }
    }
    Ok(DeliverySettings {
        poll_interval: Duration::from_millis(file.poll_interval_milliseconds),
        base_delay: Duration::from_millis(file.base_delay_milliseconds),
        max_delay: Duration::from_secs(file.max_delay_seconds),
        lease: Duration::from_secs(file.lease_seconds),
        batch: file.batch,
        concurrency: file.concurrency,
        expiry: Duration::from_secs(file.expiry_days * 24 * 3600),
        expiry_check: Duration::from_secs(file.expiry_check_seconds),
    })
}

fn delivery_settings(
    name: &str,
    folder: &Path,
    key: &str,
    file: DeliveryFile,
) -> Result<Delivery, Error> {
    let field = |field: &str| format!("{key}.{field}");
    if !matches!(
        file.format.as_str(),
        "passerelle-v1" | "passerelle-v2" | "france-travail"
    ) {
        return Err(Error::config(
            name,
            &field("format"),
            "expected passerelle-v1, passerelle-v2 or france-travail",
        ));
    }
    if file.max_attempts == 0 || file.max_age_hours == 0 || file.timeout_seconds == 0 {
        return Err(Error::config(
            name,
            key,
            "max_attempts, max_age_hours and timeout_seconds must be greater than 0",
        ));
    }
    let target = |file: &DeliveryFile| -> Result<PushTarget, Error> {
        let url = file.url.clone().ok_or_else(|| {
            Error::config(
                name,
                &field("url"),
                "missing: push delivery needs the receiver's URL",
            )
        })?;
        let loopback_http = url.starts_with("http://127.0.0.1")
            || url.starts_with("http://localhost")
            || url.starts_with("http://[::1]");
        if !url.starts_with("https://") && !loopback_http {
            return Err(Error::config(
                name,
                &field("url"),
                "expected an https:// URL (http:// only to a loopback address, for development)",
            ));
        }
        let client_identity = match (&file.client_certificate, &file.client_key) {
            (Some(certificate), Some(private_key)) => {
                Some((folder.join(certificate), folder.join(private_key)))
            }
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    name,
                    &field("client_certificate"),
                    "client_certificate and client_key go together",
                ));
            }
        };
        let secret = match &file.secret {
            Some(reference) => Some(
                crate::policy::KeyReference::parse(reference, folder)
                    .map_err(|detail| Error::config(name, &field("secret"), detail))?,
            ),
            None => None,
        };
        Ok(PushTarget {
            url,
            secret,
            ca: file.ca.as_ref().map(|ca| folder.join(ca)),
            client_identity,
        })
    };
    let mode = match file.mode.as_str() {
        "pull" => DeliveryMode::Pull,
        "webhook" => {
            let target = target(&file)?;
            if target.secret.is_none() {
                return Err(Error::config(
                    name,
                    &field("secret"),
                    "missing: webhooks are signed (Standard Webhooks); give env:NAME or file:PATH",
                ));
            }
            DeliveryMode::Webhook(target)
        }
        "grpc" => DeliveryMode::Grpc(target(&file)?),
        _ => {
            return Err(Error::config(
                name,
                &field("mode"),
                "expected pull, webhook or grpc",
            ));
        }
    };
    Ok(Delivery {
        mode,
        format: file.format,
        max_attempts: file.max_attempts,
        max_age: Duration::from_secs(file.max_age_hours * 3600),
        timeout: Duration::from_secs(file.timeout_seconds),
    })
}

fn organisations(
    name: &str,
    folder: &Path,
    files: Vec<OrganisationFile>,
) -> Result<Organisations, Error> {
    let mut organisations = Organisations::default();
    let mut ids = BTreeMap::new();
    for (index, file) in files.into_iter().enumerate() {
        let key = |field: &str| format!("organisation[{index}].{field}");
        let valid_id = !file.id.is_empty()
            && file.id.len() <= 64
            && file
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_id {
            return Err(Error::config(
                name,
                &key("id"),
                "expected 1 to 64 characters among a-z, 0-9 and -",
            ));
        }
        if ids.insert(file.id.clone(), index).is_some() {
            return Err(Error::config(
                name,
                &key("id"),
                "another organisation has the same id",
            ));
        }
        let siret = Siret::parse(&file.siret)
            .map_err(|error| Error::config(name, &key("siret"), error.to_string()))?;
        if organisations.by_siret.contains_key(siret.as_str()) {
            return Err(Error::config(
                name,
                &key("siret"),
                "another organisation has the same SIRET",
            ));
        }
        let kind = kind_from_name(&file.kind).ok_or_else(|| {
            Error::config(
                name,
                &key("kind"),
                "expected association, france_travail, mission_locale, cap_emploi, departement or other",
            )
        })?;
        let mut hashes = Vec::new();
        for (number, stored) in file.api_keys.iter().enumerate() {
            let hash = stored
                .strip_prefix("sha256:")
                .and_then(|hex_digits| hex::decode(hex_digits).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    Error::config(
                        name,
                        &key(&format!("api_keys[{number}]")),
                        "expected sha256: followed by 64 hex digits (the hash of the key, never the key: `passerelle api-key new` prints both)",
                    )
                })?;
            if organisations.by_key.insert(hash, index).is_some() {
                return Err(Error::config(
                    name,
                    &key(&format!("api_keys[{number}]")),
                    "this key hash is already given to an organisation",
                ));
            }
            hashes.push(hash);
        }
        let mut certificates = Vec::new();
        for (number, certificate) in file.client_certificates.into_iter().enumerate() {
            let rule = match (certificate.subject, certificate.spki_sha256) {
                (Some(subject), None) if !subject.trim().is_empty() => {
                    CertificateMatch::Subject(normalise_subject(&subject))
                }
                (None, Some(fingerprint))
                    if fingerprint.len() == 64
                        && fingerprint
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
                {
                    CertificateMatch::SpkiSha256(fingerprint)
                }
                _ => {
                    return Err(Error::config(
                        name,
                        &key(&format!("client_certificates[{number}]")),
                        "expected exactly one of subject (RFC 4514, e.g. \"CN=api,O=Example\") or spki_sha256 (64 lower-case hex digits)",
                    ));
                }
            };
            certificates.push(rule);
        }
        let delivery = match file.delivery {
            Some(delivery) => delivery_settings(name, folder, &key("delivery"), delivery)?,
            None => Delivery::default(),
        };
        organisations
            .by_siret
            .insert(siret.as_str().to_owned(), index);
        organisations.list.push(Organisation {
            id: file.id,
            party: Party {
                siret,
                kind,
                name: file.name,
            },
            api_key_hashes: hashes,
            certificates,
            delivery,
        });
    }
    Ok(organisations)
}

fn kind_from_name(name: &str) -> Option<OrganisationKind> {
    [
        OrganisationKind::Association,
        OrganisationKind::FranceTravail,
        OrganisationKind::MissionLocale,
        OrganisationKind::CapEmploi,
        OrganisationKind::Departement,
        OrganisationKind::Other,
    ]
    .into_iter()
    .find(|kind| kind_name(*kind) == name)
}

fn load_policies(name: &str, folder: &Path) -> Result<Vec<Policy>, Error> {
    let mut files = toml_files(name, "policies.directory", folder)?;
    files.sort();
    files.iter().map(|file| Policy::load(file)).collect()
}

fn load_mappings(name: &str, folder: &Path) -> Result<BTreeMap<String, Mapping>, Error> {
    let mut mappings = BTreeMap::new();
    for file in toml_files(name, "mappings.directory", folder)? {
        let stem = file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        mappings.insert(stem, Mapping::load(&file)?);
    }
    Ok(mappings)
}

fn toml_files(name: &str, key: &str, folder: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(folder).map_err(|error| {
        Error::config(
            name,
            key,
            format!("cannot read the folder {}: {error}", folder.display()),
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| {
                Error::config(
                    name,
                    key,
                    format!("cannot read the folder {}: {error}", folder.display()),
                )
            })?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORGANISATION: &str = "[[organisation]]\nid = \"asso\"\nsiret = \"81234567800013\"\nkind = \"association\"\napi_keys = [\"sha256:a1d4a6ae7b00cedbab1f2cc406f8f0b8990387ea4bc81b34ffad41b5cb499793\"]\n";

    /// Writes a configuration whose policies folder is the repository's.
    fn load(server: &str, rest: &str) -> Result<GatewayConfig, Error> {
        let directory = tempfile::tempdir().expect("temporary folder");
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies");
        let text = format!(
            "[server]\n{server}\n[store]\nsqlite = \"store.db\"\n[policies]\ndirectory = \"{}\"\n{rest}",
            policies.display()
        );
        let file = directory.path().join("passerelle.toml");
        std::fs::write(&file, text).expect("write");
        GatewayConfig::load(&file)
    }

    fn config_error(result: Result<GatewayConfig, Error>) -> (String, String) {
        match result {
            Err(Error::Config { key, detail, .. }) => (key, detail),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn the_example_configuration_loads() {
        let config = GatewayConfig::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/passerelle.toml"),
        )
        .expect("the example configuration is valid");
        assert!(config.server.tls.is_none());
        assert!(config.server.listen.ip().is_loopback());
        assert_eq!(config.organisations.iter().count(), 3);
        let konexio = config
            .organisations
            .by_api_key("dev-key-konexio-saint-denis")
            .expect("the documented development key");
        assert_eq!(konexio.id, "konexio-saint-denis");
        assert!(config.organisations.by_api_key("dev-key-unknown").is_none());
        assert!(config.mappings.contains_key("carnet-de-bord"));
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let (key, detail) = config_error(load(
            "listen = \"0.0.0.0:8080\"\nplain_http = true",
            ORGANISATION,
        ));
        assert_eq!(key, "server.plain_http");
        assert!(detail.contains("loopback"), "{detail}");
        let (key, _) = config_error(load("listen = \"127.0.0.1:8080\"", ORGANISATION));
        assert_eq!(key, "server.tls");
    }

    #[test]
    fn ephemeral_keys_are_refused_with_tls() {
        let (key, _) = config_error(load(
            "listen = \"127.0.0.1:8443\"\n[server.tls]\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"",
            &format!("[development]\nephemeral_pseudonym_keys = true\n{ORGANISATION}"),
        ));
        assert_eq!(key, "development.ephemeral_pseudonym_keys");
    }

    #[test]
    fn organisation_errors_name_the_entry_and_field() {
        let plain = "listen = \"127.0.0.1:0\"\nplain_http = true";
        let development = "[development]\nephemeral_pseudonym_keys = true\n";
        let cases = [
            (
                ORGANISATION.replace("81234567800013", "81234567800014"),
                "organisation[0].siret",
            ),
            (
                ORGANISATION.replace("\"association\"", "\"club\""),
                "organisation[0].kind",
            ),
            (
                ORGANISATION.replace("sha256:a1d4", "a1d4"),
                "organisation[0].api_keys[0]",
            ),
            (
                ORGANISATION.replace("\"asso\"", "\"Asso!\""),
                "organisation[0].id",
            ),
            (
                format!(
                    "{ORGANISATION}{}",
                    ORGANISATION.replace("81234567800013", "13000548100002")
                ),
                "organisation[1].id",
            ),
            (
                format!(
                    "{ORGANISATION}client_certificates = [{{ subject = \"CN=a\", spki_sha256 = \"00\" }}]\n"
                ),
                "organisation[0].client_certificates[0]",
            ),
        ];
        let delivery = |table: &str| format!("{ORGANISATION}[organisation.delivery]\n{table}\n");
        let cases = cases.into_iter().chain([
            (
                delivery("mode = \"carrier-pigeon\""),
                "organisation[0].delivery.mode",
            ),
            (
                delivery("mode = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\""),
                "organisation[0].delivery.secret",
            ),
            (
                delivery("mode = \"grpc\"\nurl = \"http://receiver.example:50051\""),
                "organisation[0].delivery.url",
            ),
            (
                delivery("mode = \"pull\"\nformat = \"dora\""),
                "organisation[0].delivery.format",
            ),
        ]);
        for (organisation, expected) in cases {
            let (key, detail) = config_error(load(plain, &format!("{development}{organisation}")));
            assert_eq!(key, expected, "{detail}");
        }
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let (key, detail) = config_error(load(
            "listen = \"127.0.0.1:0\"\nplain_http = true\nmax_bodybytes = 10",
            ORGANISATION,
        ));
        assert!(detail.contains("max_bodybytes"), "{detail}");
        assert!(key.starts_with("server"), "{key}");
        assert!(detail.contains("line 4"), "{detail}");
    }

    #[test]
    fn subjects_compare_without_spaces() {
        assert_eq!(
            normalise_subject("CN = api , O=Example, OU= Team"),
            "CN=api,O=Example,OU=Team"
        );
    }
}
