//! Starts the real `passerelle serve` binary on port 0, with TLS certificates
//! generated for the run (a CA, the server's certificate, one client
//! certificate per organisation), a configuration in a temporary folder, the
//! repository's policies and mappings, and a fresh SQLite store.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle::store::postgres::ScratchDatabase;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The pseudonymisation key given to the gateway under test (test-only).
pub const PSEUDONYM_KEY: &str = "test-only-pseudonym-key-for-the-gateway-tests";

/// One organisation of the test configuration.
#[derive(Debug, Clone)]
pub struct TestOrganisation {
    /// Its id in the configuration.
    pub id: &'static str,
    /// Its SIRET.
    pub siret: &'static str,
    /// Its kind.
    pub kind: &'static str,
    /// Its API key.
    pub api_key: &'static str,
    /// Whether its client certificate is registered by subject (else by SPKI fingerprint).
    pub by_subject: bool,
}

/// The organisations every test gateway serves.
pub const ORGANISATIONS: &[TestOrganisation] = &[
    TestOrganisation {
        id: "konexio-saint-denis",
        siret: super::ASSOCIATION_SIRET,
        kind: "association",
        api_key: "test-key-konexio-0123456789",
        by_subject: true,
    },
    TestOrganisation {
        id: "france-travail-saint-denis",
        siret: super::FRANCE_TRAVAIL_SIRET,
        kind: "france_travail",
        api_key: "test-key-france-travail-0123456789",
        by_subject: false,
    },
    TestOrganisation {
        id: "mission-locale-plaine-commune",
        siret: super::MISSION_LOCALE_SIRET,
        kind: "mission_locale",
        api_key: "test-key-mission-locale-0123456789",
        by_subject: true,
    },
    TestOrganisation {
        id: "autre-association",
        siret: "20001234500001",
        kind: "association",
        api_key: "test-key-autre-association-0123456789",
        by_subject: false,
    },
];

/// The organisation with this id.
pub fn organisation(id: &str) -> &'static TestOrganisation {
    ORGANISATIONS
        .iter()
        .find(|organisation| organisation.id == id)
        .unwrap_or_else(|| panic!("no test organisation {id}"))
}

/// How to start a test gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// TLS (the default) or plain HTTP on loopback.
    pub tls: bool,
    /// Requests per second and burst per organisation.
    pub rate: (u32, u32),
    /// The body limit.
    pub max_body_bytes: u64,
    /// The OTLP endpoint to export to.
    pub otlp_endpoint: Option<String>,
    /// The log level directive.
    pub log_level: String,
    /// The store file (default: a fresh one in the temporary folder).
    pub store: Option<PathBuf>,
    /// TOML added at the end of an organisation's table, by id (its
    /// `[organisation.delivery]` table, for instance).
    pub organisation_toml: Vec<(&'static str, String)>,
    /// TOML tables added to the configuration (`[delivery]`, for instance).
    pub extra_toml: String,
    /// Environment variables for the gateway process.
    pub environment: Vec<(String, String)>,
    /// The idle timeout (TLS handshake, request headers), in seconds.
    pub idle_timeout_seconds: u64,
    /// The request timeout, in seconds.
    pub request_timeout_seconds: u64,
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most requests handled at once.
    pub max_requests_in_flight: usize,
    /// A configuration file to start with instead of the one written from
    /// these options (which then only say whether it serves TLS).
    pub config: Option<PathBuf>,
    /// A PostgreSQL database to share with other gateways (replicas).
    pub database: Option<Arc<ScratchDatabase>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: true,
            rate: (1000, 1000),
            max_body_bytes: 1024 * 1024,
            otlp_endpoint: None,
            log_level: "info".to_owned(),
            store: None,
            organisation_toml: Vec::new(),
            extra_toml: String::new(),
            environment: Vec::new(),
            idle_timeout_seconds: 30,
            request_timeout_seconds: 30,
            max_connections: 1024,
            max_requests_in_flight: 128,
            config: None,
            database: None,
        }
    }
}

/// Test certificates: the CA, the server's, and each organisation's client certificate.
pub struct Pki {
    /// The CA certificate (PEM), trusted by clients and for client certificates.
    pub ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The server certificate and key (PEM).
    pub server: (String, String),
    /// Client certificate and key (PEM) by organisation id.
    pub clients: HashMap<&'static str, (String, String)>,
}

impl Pki {
    /// Generates a CA and every certificate the tests use.
    pub fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Passerelle test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let server = leaf(&ca, &["127.0.0.1", "localhost"], "passerelle-test-server");
        let clients = ORGANISATIONS
            .iter()
            .map(|organisation| (organisation.id, leaf(&ca, &[], organisation.id)))
            .collect();
        Self {
            ca_pem: ca.pem(),
            ca,
            server,
            clients,
        }
    }

    /// A client certificate signed by the CA but registered to nobody.
    pub fn stranger(&self) -> (String, String) {
        leaf(&self.ca, &[], "unregistered-client")
    }

    /// A client certificate from another CA, for the same name as an organisation.
    pub fn foreign(common_name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Another CA");
        let other = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("other CA");
        leaf(&other, &[], common_name)
    }
}

fn leaf(ca: &Issuer<'_, KeyPair>, names: &[&str], common_name: &str) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Passerelle tests");
    let key = KeyPair::generate().expect("leaf key");
    let certificate = params.signed_by(&key, ca).expect("leaf certificate");
    (certificate.pem(), key.serialize_pem())
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, as configurations write it.
pub fn spki_sha256(certificate_pem: &str) -> String {
    use sha2::Digest;
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes()).expect("PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    hex::encode(sha2::Sha256::digest(parsed.public_key().raw))
}

/// A running gateway.
pub struct TestGateway {
    /// Where it listens.
    pub address: SocketAddr,
    /// `https://127.0.0.1:PORT` (or http).
    pub base: String,
    /// The temporary folder holding the configuration, certificates and store.
    pub dir: tempfile::TempDir,
    /// The certificates.
    pub pki: Arc<Pki>,
    /// The store file (SQLite runs).
    pub store: PathBuf,
    /// Where the store is, as `--store` takes it: the SQLite file, or the
    /// PostgreSQL URL when the tests run on PostgreSQL.
    pub store_location: String,
    /// The configuration file.
    pub config: PathBuf,
    /// The scratch PostgreSQL database (PostgreSQL runs), dropped with the gateway.
    database: Option<Arc<ScratchDatabase>>,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl TestGateway {
    /// Starts a gateway with the default options.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a gateway.
    pub fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let pki = Arc::new(Pki::generate());
        Self::start_in(dir, pki, options)
    }

    /// Starts a gateway in an existing folder with existing certificates
    /// (a restart on the same store).
    pub fn start_in(dir: tempfile::TempDir, pki: Arc<Pki>, options: Options) -> Self {
        let store = options
            .store
            .clone()
            .unwrap_or_else(|| dir.path().join("store.db"));
        let stashed = stopped_databases()
            .lock()
            .expect("databases")
            .remove(dir.path());
        let database = match (stashed, &options.database) {
            (Some(database), _) => Some(database),
            (None, Some(database)) => Some(Arc::clone(database)),
            (None, None) if options.store.is_none() && on_postgres() => Some(scratch_database()),
            (None, None) => None,
        };
        let store_location = match &database {
            Some(database) => database.url.clone(),
            None => store.display().to_string(),
        };
        let store_toml = match &database {
            Some(database) => format!("postgres = \"{}\"", database.url),
            None => format!("sqlite = \"{}\"", store.display()),
        };
        let config = match &options.config {
            Some(config) => config.clone(),
            None => write_config(dir.path(), &pki, &options, &store_toml),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("PASSERELLE_PSEUDONYM_KEY", PSEUDONYM_KEY)
            .envs(
                options
                    .environment
                    .iter()
                    .map(|(name, value)| (name, value)),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start passerelle serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buffer = [0_u8; 8192];
                while let Ok(read) = pipe.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .expect("log buffer")
                        .push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep reading so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the gateway did not start; its log:\n{}",
                    stderr.lock().expect("log buffer")
                )
            });
        let address: SocketAddr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        let scheme = if options.tls { "https" } else { "http" };
        Self {
            address,
            base: format!("{scheme}://{address}"),
            dir,
            pki,
            store,
            store_location,
            config,
            database,
            child: Some(child),
            stderr,
        }
    }

    /// The URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().expect("log buffer").clone()
    }

    /// An HTTPS client trusting the test CA, without a client certificate.
    pub fn client(&self) -> reqwest::Client {
        client(&self.pki.ca_pem, None)
    }

    /// An HTTPS client presenting the organisation's client certificate.
    pub fn client_with_certificate(&self, organisation: &str) -> reqwest::Client {
        let (certificate, key) = &self.pki.clients[organisation];
        client(&self.pki.ca_pem, Some((certificate, key)))
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait(&mut child, Duration::from_secs(60))
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the gateway and hands back its folder and certificates for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, Arc<Pki>, PathBuf) {
        self.terminate();
        self.stop_owned()
    }

    /// Hands back the folder, certificates and store of a stopped gateway.
    pub fn stop_owned(mut self) -> (tempfile::TempDir, Arc<Pki>, PathBuf) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("placeholder"));
        // A restart in the same folder finds the same database.
        if let Some(database) = self.database.take() {
            stopped_databases()
                .lock()
                .expect("databases")
                .insert(dir.path().to_path_buf(), database);
        }
        (dir, Arc::clone(&self.pki), self.store.clone())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the gateway did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTPS client trusting `ca_pem`, presenting an identity when given.
pub fn client(ca_pem: &str, identity: Option<(&String, &String)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((certificate, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(certificate.as_bytes()).expect("PEM")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM"),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Whether the tests run on PostgreSQL (`PASSERELLE_TEST_STORE=postgres`, as
/// `.ci/test` runs the integration tests a second time) rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var("PASSERELLE_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// The databases of stopped gateways, by folder, for their restart.
fn stopped_databases() -> &'static Mutex<HashMap<PathBuf, Arc<ScratchDatabase>>> {
    static DATABASES: std::sync::OnceLock<Mutex<HashMap<PathBuf, Arc<ScratchDatabase>>>> =
        std::sync::OnceLock::new();
    DATABASES.get_or_init(Mutex::default)
}

/// A new scratch database.
pub fn scratch_database() -> Arc<ScratchDatabase> {
    // The harness is synchronous, and may be called inside a runtime.
    let created = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(ScratchDatabase::create())
    })
    .join()
    .expect("creating a scratch database");
    Arc::new(created.unwrap_or_else(|error| panic!("{error}")))
}

fn write_config(dir: &Path, pki: &Pki, options: &Options, store: &str) -> PathBuf {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    };
    write("ca.pem", &pki.ca_pem);
    write("server.pem", &pki.server.0);
    write("server.key", &pki.server.1);
    let listen = "127.0.0.1:0";
    let transport = if options.tls {
        "[server.tls]\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\nclient_ca = \"ca.pem\"\n"
            .to_owned()
    } else {
        String::new()
    };
    let plain = if options.tls {
        ""
    } else {
        "plain_http = true\n"
    };
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\n{plain}max_body_bytes = {}\nrequest_timeout_seconds = {}\nidle_timeout_seconds = {}\nmax_connections = {}\nmax_requests_in_flight = {}\nshutdown_grace_seconds = 20\nrate_limit = {{ requests_per_second = {}, burst = {} }}\n{transport}\n",
        options.max_body_bytes,
        options.request_timeout_seconds,
        options.idle_timeout_seconds,
        options.max_connections,
        options.max_requests_in_flight,
        options.rate.0,
        options.rate.1
    );
    text.push_str(&format!(
        "[store]\n{}\n\n[policies]\ndirectory = \"{}\"\n\n[mappings]\ndirectory = \"{}\"\n\n",
        store,
        repository.join("config/policies").display(),
        repository.join("config/mappings").display()
    ));
    text.push_str(&format!(
        "[telemetry]\nlog_format = \"json\"\nlog_level = \"{}\"\nmetrics_interval_seconds = 1\n",
        options.log_level
    ));
    if let Some(endpoint) = &options.otlp_endpoint {
        text.push_str(&format!("otlp_endpoint = \"{endpoint}\"\n"));
    }
    for organisation in ORGANISATIONS {
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(organisation.api_key.as_bytes()))
        };
        let certificate = &pki.clients[organisation.id].0;
        let rule = if organisation.by_subject {
            format!(
                "{{ subject = \"CN={}, O=Passerelle tests\" }}",
                organisation.id
            )
        } else {
            format!("{{ spki_sha256 = \"{}\" }}", spki_sha256(certificate))
        };
        text.push_str(&format!(
            "\n[[organisation]]\nid = \"{}\"\nsiret = \"{}\"\nkind = \"{}\"\napi_keys = [\"sha256:{hash}\"]\nclient_certificates = [{rule}]\n",
            organisation.id, organisation.siret, organisation.kind
        ));
        for (id, extra) in &options.organisation_toml {
            if *id == organisation.id {
                text.push_str(extra);
                text.push('\n');
            }
        }
    }
    text.push_str(&options.extra_toml);
    write("passerelle.toml", &text)
}

/// A sample of `samples/` as JSON.
pub fn sample(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).expect("sample")).expect("sample JSON")
}

/// The sample consent record under another id.
pub fn consent(record_id: &str) -> serde_json::Value {
    let mut record = sample("consent-record.json");
    record["record_id"] = serde_json::json!(record_id);
    record
}

/// The sample referral under another id, referencing `record_id`.
pub fn referral(referral_id: &str, record_id: &str) -> serde_json::Value {
    let mut referral = sample("referral-v2.json");
    referral["referral_id"] = serde_json::json!(referral_id);
    referral["consent_reference"] = serde_json::json!(record_id);
    referral
}

/// A fresh UUID, as text.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `Authorization` value of an organisation's API key.
pub fn bearer(id: &str) -> String {
    format!("Bearer {}", organisation(id).api_key)
}

/// Stores the sample consent record under a new id, as Konexio; returns the id.
pub async fn store_consent(gateway: &TestGateway) -> String {
    let record_id = new_id();
    let stored = gateway
        .client()
        .post(gateway.url("/v1/consents"))
        .header("authorization", bearer("konexio-saint-denis"))
        .json(&consent(&record_id))
        .send()
        .await
        .expect("consent");
    assert_eq!(stored.status(), reqwest::StatusCode::CREATED);
    record_id
}

/// Stores a consent record and sends the sample referral to France Travail
/// under it, as Konexio: (referral id, record id, the 202 answer).
pub async fn accepted_referral(gateway: &TestGateway) -> (String, String, serde_json::Value) {
    let record_id = store_consent(gateway).await;
    let referral_id = new_id();
    let response = gateway
        .client()
        .post(gateway.url("/v1/referrals"))
        .header("authorization", bearer("konexio-saint-denis"))
        .header(
            "content-type",
            "application/vnd.passerelle.referral.v2+json",
        )
        .json(&referral(&referral_id, &record_id))
        .send()
        .await
        .expect("referral");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let answer = response.json().await.expect("answer");
    (referral_id, record_id, answer)
}

/// One page (up to 10 messages) of `organisation`'s inbox, as it pulls it.
pub async fn pull_inbox(gateway: &TestGateway, organisation: &str) -> serde_json::Value {
    gateway
        .client()
        .get(gateway.url("/v1/inbox?limit=10"))
        .header("authorization", bearer(organisation))
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("JSON")
}

/// Records a consent event (`CONSENT_EVENT_KIND_WITHDRAWN`, ...) on a record,
/// now, as the organisation `by`; returns the answer.
pub async fn consent_event(
    gateway: &TestGateway,
    record_id: &str,
    kind: &str,
    by: &str,
) -> reqwest::Response {
    gateway
        .client()
        .post(gateway.url(&format!("/v1/consents/{record_id}/events")))
        .header("authorization", bearer(by))
        .json(&serde_json::json!({
            "kind": kind,
            "at": chrono::Utc::now().to_rfc3339(),
            "recorded_by": organisation(by).siret,
        }))
        .send()
        .await
        .expect("consent event")
}
