//! The push transports against real receivers started on 127.0.0.1 port 0:
//! an HTTP receiver (plain, HTTPS, and HTTPS requiring a client certificate)
//! scripted by path, a socket that closes without answering, a port nobody
//! listens on, and a gRPC `passerelle.receiver.v1` receiver scripted by
//! referral id. Webhook signatures are checked by an independent
//! implementation of Standard Webhooks (tests/support/verify_standard_webhook.py,
//! Python's standard library).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use common::gateway::Pki;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use passerelle::config::PushTarget;
use passerelle::delivery::grpc_push::GrpcSender;
use passerelle::delivery::grpc_push::receiver_v1::receiver_service_server::{
    ReceiverService, ReceiverServiceServer,
};
use passerelle::delivery::grpc_push::receiver_v1::{
    DeliverRequest, DeliverResponse, MessageKind as WireKind,
};
use passerelle::delivery::webhook::{WebhookSender, signature};
use passerelle::delivery::{Attempt, MessageKind, Outbound};
use passerelle::policy::KeyReference;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

/// The signing key of the tests (32 random-looking bytes, test-only).
const KEY: &[u8; 32] = b"test-only-webhook-key-0123456789";
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_millis(1500);
/// Within the timeout.
const SLOW: Duration = Duration::from_millis(400);
/// Well past the timeout.
const STUCK: Duration = Duration::from_secs(10);

fn secret_text() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

fn outbound(message_id: &str, referral_id: &str, attempt: u32) -> Outbound {
    Outbound {
        message_id: message_id.to_owned(),
        kind: MessageKind::Referral,
        referral_id: referral_id.to_owned(),
        format: "france-travail".to_owned(),
        content_type: "application/json",
        // Key order and spacing as the format writes them: the signature is
        // over these exact bytes.
        body: br#"{"id_orientation": "ref-1", "structure": {"siret": "81234567800013"}}"#.to_vec(),
        attempt,
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A temporary folder holding the secret and PEM files of push targets.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::write(dir.path().join("secret"), format!("{}\n", secret_text()))
            .expect("secret file");
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    fn target(&self, url: String) -> PushTarget {
        PushTarget {
            url,
            secret: Some(KeyReference::parse("file:secret", self.dir.path()).expect("reference")),
            ca: None,
            client_identity: None,
        }
    }
}

// ---------------------------------------------------------------- HTTP receiver

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Received>>>);

impl Log {
    fn all(&self) -> Vec<Received> {
        self.0.lock().expect("log").clone()
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

/// Answers by path: `/ok` 200, `/fail` 500, `/gone` 410, `/bad` 400, `/busy`
/// 429, `/duplicate` 409, `/moved` 308 to `/ok`, `/slow` 200 after [`SLOW`],
/// `/stuck` 200 after [`STUCK`].
async fn scripted(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    log.0.lock().expect("log").push(Received {
        path: path.clone(),
        headers,
        body,
    });
    match path.as_str() {
        "/ok" => StatusCode::OK.into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response(),
        "/gone" => StatusCode::GONE.into_response(),
        "/bad" => (StatusCode::BAD_REQUEST, "unexpected field").into_response(),
        "/busy" => StatusCode::TOO_MANY_REQUESTS.into_response(),
        "/duplicate" => StatusCode::CONFLICT.into_response(),
        "/moved" => (StatusCode::PERMANENT_REDIRECT, [("location", "/ok")]).into_response(),
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            StatusCode::NO_CONTENT.into_response()
        }
        "/stuck" => {
            tokio::time::sleep(STUCK).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct HttpReceiver {
    address: SocketAddr,
    log: Log,
}

impl HttpReceiver {
    /// Plain HTTP on loopback.
    async fn plain() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let log = Log::default();
        let app = Router::new().fallback(scripted).with_state(log.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, log }
    }

    /// HTTPS with the test PKI's server certificate; with `require_client`,
    /// only clients presenting a certificate of the test CA are served.
    async fn tls(pki: &Pki, require_client: bool) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocols");
        let builder = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM"))
                .expect("CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).expect("PEM")],
                PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).expect("key PEM"),
            )
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let log = Log::default();
        let app = Router::new().fallback(scripted).with_state(log.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A refused handshake is the point of some tests.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { address, log }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.address)
    }
}

/// Checks a signature with the independent implementation: true when it
/// exits 0 (valid), false when it exits 1 (invalid).
fn verified_independently(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("header {name}"))
            .to_owned()
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/verify_standard_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(header("webhook-id"))
        .arg(header("webhook-timestamp"))
        .arg(header("webhook-signature"))
        .env("STANDARD_WEBHOOK_SECRET", secret_text())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("body to the verifier");
    match child.wait().expect("verifier ends").code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("the verifier failed to run: exit {other:?}"),
    }
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("header {name}"))
}

#[tokio::test]
async fn a_webhook_arrives_signed_and_an_independent_verifier_accepts_it() {
    let receiver = HttpReceiver::plain().await;
    let files = Files::new();
    let sender =
        WebhookSender::new(&files.target(receiver.url("http", "/ok")), TIMEOUT).expect("sender");
    let message = outbound("8f6c1c4e-31b5-4f0e-9a53-0d3c2f6e7a01", "ref-1", 1);
    let at = now();
    assert_eq!(sender.send(&message, at).await, Attempt::Delivered);

    let received = receiver.log.at("/ok");
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(
        request.body.as_ref(),
        message.body.as_slice(),
        "the body arrives byte for byte"
    );
    assert_eq!(header(request, "webhook-id"), message.message_id);
    assert_eq!(
        header(request, "webhook-timestamp"),
        at.timestamp().to_string()
    );
    assert_eq!(
        header(request, "webhook-signature"),
        signature(KEY, &message.message_id, at.timestamp(), &message.body)
    );
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "passerelle-message-kind"), "referral");
    assert_eq!(header(request, "passerelle-referral-id"), "ref-1");
    assert_eq!(header(request, "passerelle-attempt"), "1");

    assert!(verified_independently(&request.headers, &request.body));
    // A single changed byte, or another id, and the signature no longer holds.
    let mut tampered = request.body.to_vec();
    tampered[2] ^= 0x01;
    assert!(!verified_independently(&request.headers, &tampered));
    let mut other_id = request.headers.clone();
    other_id.insert(
        "webhook-id",
        "8f6c1c4e-31b5-4f0e-9a53-0d3c2f6e7a02"
            .parse()
            .expect("value"),
    );
    assert!(!verified_independently(&other_id, &request.body));
}

#[tokio::test]
async fn retries_keep_the_webhook_id_and_sign_each_attempt_afresh() {
    let receiver = HttpReceiver::plain().await;
    let files = Files::new();
    let sender =
        WebhookSender::new(&files.target(receiver.url("http", "/fail")), TIMEOUT).expect("sender");
    let first = Utc::now() - chrono::Duration::seconds(90);
    let second = Utc::now();
    for (attempt, at) in [(1, first), (2, second)] {
        let message = outbound("1d2c3b4a-0000-4000-8000-000000000001", "ref-2", attempt);
        assert_eq!(
            sender.send(&message, at).await,
            Attempt::Retry("http-500".to_owned())
        );
    }
    let received = receiver.log.at("/fail");
    assert_eq!(received.len(), 2);
    assert_eq!(
        header(&received[0], "webhook-id"),
        header(&received[1], "webhook-id"),
        "receivers deduplicate on webhook-id: it must not change between attempts"
    );
    assert_eq!(
        header(&received[0], "webhook-timestamp"),
        first.timestamp().to_string()
    );
    assert_eq!(
        header(&received[1], "webhook-timestamp"),
        second.timestamp().to_string()
    );
    assert_ne!(
        header(&received[0], "webhook-signature"),
        header(&received[1], "webhook-signature")
    );
    assert_eq!(header(&received[1], "passerelle-attempt"), "2");
    for request in &received {
        assert!(verified_independently(&request.headers, &request.body));
    }
}

#[tokio::test]
async fn each_answer_maps_to_its_outcome() {
    let receiver = HttpReceiver::plain().await;
    let files = Files::new();
    let cases = [
        ("/gone", Attempt::Gone("http-410".to_owned())),
        ("/bad", Attempt::Refused("http-400".to_owned())),
        ("/busy", Attempt::Retry("http-429".to_owned())),
        ("/duplicate", Attempt::Delivered),
        ("/nowhere", Attempt::Refused("http-404".to_owned())),
        ("/moved", Attempt::Refused("http-308".to_owned())),
    ];
    for (path, expected) in cases {
        let sender =
            WebhookSender::new(&files.target(receiver.url("http", path)), TIMEOUT).expect("sender");
        let message = outbound("5e0f0f0f-0000-4000-8000-000000000003", "ref-3", 1);
        assert_eq!(sender.send(&message, now()).await, expected, "{path}");
    }
    // A redirect is not followed: the message went to the configured URL only.
    assert!(receiver.log.at("/ok").is_empty());
}

#[tokio::test]
async fn a_slow_receiver_within_the_timeout_gets_the_message() {
    let receiver = HttpReceiver::plain().await;
    let files = Files::new();
    let sender =
        WebhookSender::new(&files.target(receiver.url("http", "/slow")), TIMEOUT).expect("sender");
    let started = Instant::now();
    let attempt = sender
        .send(
            &outbound("6a6a6a6a-0000-4000-8000-000000000004", "ref-4", 1),
            now(),
        )
        .await;
    assert_eq!(attempt, Attempt::Delivered);
    assert!(started.elapsed() >= SLOW);
}

#[tokio::test]
async fn a_receiver_past_the_timeout_is_retried_and_not_waited_for() {
    let receiver = HttpReceiver::plain().await;
    let files = Files::new();
    let sender =
        WebhookSender::new(&files.target(receiver.url("http", "/stuck")), TIMEOUT).expect("sender");
    let started = Instant::now();
    let attempt = sender
        .send(
            &outbound("7b7b7b7b-0000-4000-8000-000000000005", "ref-5", 1),
            now(),
        )
        .await;
    assert_eq!(attempt, Attempt::Retry("timeout".to_owned()));
    let elapsed = started.elapsed();
    assert!(elapsed >= TIMEOUT && elapsed < STUCK, "{elapsed:?}");
    assert_eq!(receiver.log.at("/stuck").len(), 1);
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(Mutex::new(0_u32));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().expect("count") += 1;
            // Reads the request's start, then hangs up without a word.
            let mut buffer = [0_u8; 64];
            let _ = stream.read(&mut buffer).await;
            drop(stream);
        }
    });
    let files = Files::new();
    let sender = WebhookSender::new(&files.target(format!("http://{address}/hook")), TIMEOUT)
        .expect("sender");
    let attempt = sender
        .send(
            &outbound("8c8c8c8c-0000-4000-8000-000000000006", "ref-6", 1),
            now(),
        )
        .await;
    assert_eq!(attempt, Attempt::Retry("transport".to_owned()));
    assert!(*accepted.lock().expect("count") >= 1);
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let files = Files::new();
    let sender = WebhookSender::new(&files.target(format!("http://{address}/hook")), TIMEOUT)
        .expect("sender");
    let attempt = sender
        .send(
            &outbound("9d9d9d9d-0000-4000-8000-000000000007", "ref-7", 1),
            now(),
        )
        .await;
    assert_eq!(attempt, Attempt::Retry("connect".to_owned()));
}

#[tokio::test]
async fn https_receivers_are_checked_against_the_configured_ca() {
    let pki = Pki::generate();
    let receiver = HttpReceiver::tls(&pki, false).await;
    let files = Files::new();
    let mut target = files.target(receiver.url("https", "/ok"));

    // No CA: the Mozilla roots, which do not know the test CA.
    let public_roots = WebhookSender::new(&target, TIMEOUT).expect("sender");
    assert_eq!(
        public_roots
            .send(
                &outbound("aeaeaeae-0000-4000-8000-000000000007", "ref-7", 1),
                now()
            )
            .await,
        Attempt::Retry("tls".to_owned())
    );

    target.ca = Some(files.write("ca.pem", &pki.ca_pem));
    let sender = WebhookSender::new(&target, TIMEOUT).expect("sender");
    let message = outbound("aeaeaeae-0000-4000-8000-000000000008", "ref-8", 1);
    assert_eq!(sender.send(&message, now()).await, Attempt::Delivered);
    let received = receiver.log.at("/ok");
    assert_eq!(received.len(), 1);
    assert!(verified_independently(
        &received[0].headers,
        &received[0].body
    ));

    // A receiver whose certificate another CA signed is not sent anything.
    let stranger = Pki::generate();
    target.ca = Some(files.write("other-ca.pem", &stranger.ca_pem));
    let sender = WebhookSender::new(&target, TIMEOUT).expect("sender");
    assert_eq!(
        sender.send(&message, now()).await,
        Attempt::Retry("tls".to_owned())
    );
    assert_eq!(receiver.log.at("/ok").len(), 1);
}

#[tokio::test]
async fn a_receiver_requiring_a_client_certificate_gets_the_gateways() {
    let pki = Pki::generate();
    let receiver = HttpReceiver::tls(&pki, true).await;
    let files = Files::new();
    let mut target = files.target(receiver.url("https", "/ok"));
    target.ca = Some(files.write("ca.pem", &pki.ca_pem));
    let message = outbound("bfbfbfbf-0000-4000-8000-000000000009", "ref-9", 1);

    let anonymous = WebhookSender::new(&target, TIMEOUT).expect("sender");
    let attempt = anonymous.send(&message, now()).await;
    assert!(matches!(attempt, Attempt::Retry(_)), "{attempt:?}");
    assert!(receiver.log.all().is_empty());

    let (certificate, key) = &pki.clients["france-travail-saint-denis"];
    target.client_identity = Some((
        files.write("client.pem", certificate),
        files.write("client.key", key),
    ));
    let identified = WebhookSender::new(&target, TIMEOUT).expect("sender");
    assert_eq!(identified.send(&message, now()).await, Attempt::Delivered);
    assert_eq!(receiver.log.at("/ok").len(), 1);
}

#[test]
fn secret_errors_name_the_reference_never_the_secret() {
    let files = Files::new();
    let mut target = files.target("http://127.0.0.1:9/hook".to_owned());
    // 16 bytes, too short for Standard Webhooks.
    std::fs::write(
        files.dir.path().join("short"),
        "whsec_c2hvcnQtYnV0LXNlY3JldCE=",
    )
    .expect("write");
    target.secret = Some(KeyReference::parse("file:short", files.dir.path()).expect("reference"));
    let error = WebhookSender::new(&target, TIMEOUT).expect_err("too short");
    let text = error.to_string();
    assert!(text.contains("secret file:short"), "{text}");
    assert!(text.contains("at least 24"), "{text}");
    assert!(!text.contains("c2hvcnQtYnV0LXNlY3JldCE"), "{text}");

    target.secret = Some(KeyReference::parse("file:missing", files.dir.path()).expect("reference"));
    let error = WebhookSender::new(&target, TIMEOUT).expect_err("no file");
    assert!(error.to_string().contains("secret file:missing"), "{error}");

    // The raw form: the file's bytes are the key.
    std::fs::write(files.dir.path().join("raw"), KEY).expect("write");
    target.secret = Some(KeyReference::parse("file:raw", files.dir.path()).expect("reference"));
    assert!(WebhookSender::new(&target, TIMEOUT).is_ok());
}

#[test]
fn the_debug_form_shows_no_secret() {
    let files = Files::new();
    let sender = WebhookSender::new(&files.target("http://127.0.0.1:9/hook".to_owned()), TIMEOUT)
        .expect("sender");
    let text = format!("{sender:?}");
    assert!(text.contains("127.0.0.1:9/hook"), "{text}");
    assert!(!text.contains("test-only"), "{text}");
    assert!(!text.contains(&secret_text()[6..20]), "{text}");
}

// ---------------------------------------------------------------- gRPC receiver

/// Answers by referral id: `ok` OK, `unavailable`, `not-found`,
/// `already-exists`, `invalid` (INVALID_ARGUMENT), `slow` OK after [`SLOW`],
/// `stuck` OK after [`STUCK`].
#[derive(Clone, Default)]
struct ScriptedReceiver {
    log: Arc<Mutex<Vec<DeliverRequest>>>,
}

#[tonic::async_trait]
impl ReceiverService for ScriptedReceiver {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, Status> {
        let request = request.into_inner();
        let script = request.referral_id.clone();
        self.log.lock().expect("log").push(request);
        match script.as_str() {
            "ok" => {}
            "unavailable" => return Err(Status::unavailable("restarting")),
            "not-found" => return Err(Status::not_found("no such receiver")),
            "already-exists" => return Err(Status::already_exists("seen")),
            "invalid" => return Err(Status::invalid_argument("bad payload")),
            "slow" => tokio::time::sleep(SLOW).await,
            "stuck" => tokio::time::sleep(STUCK).await,
            _ => return Err(Status::internal("unscripted")),
        }
        Ok(tonic::Response::new(DeliverResponse {}))
    }
}

/// Starts the scripted receiver, over TLS with the test PKI's server
/// certificate when given one.
async fn grpc_receiver(pki: Option<&Pki>) -> (SocketAddr, ScriptedReceiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let receiver = ScriptedReceiver::default();
    let mut builder = Server::builder();
    if let Some(pki) = pki {
        builder = builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(&pki.server.0, &pki.server.1)),
            )
            .expect("server TLS");
    }
    let router = builder.add_service(ReceiverServiceServer::new(receiver.clone()));
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    (address, receiver)
}

fn grpc_target(url: String) -> PushTarget {
    PushTarget {
        url,
        secret: None,
        ca: None,
        client_identity: None,
    }
}

#[tokio::test]
async fn grpc_receivers_get_the_message_and_their_codes_map_to_outcomes() {
    let (address, receiver) = grpc_receiver(None).await;
    let sender = GrpcSender::new(&grpc_target(format!("http://{address}")), TIMEOUT)
        .await
        .expect("sender");

    let mut message = outbound("c0c0c0c0-0000-4000-8000-00000000000a", "ok", 2);
    message.kind = MessageKind::StatusEvent;
    assert_eq!(sender.send(&message).await, Attempt::Delivered);
    let received = receiver.log.lock().expect("log").clone();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.message_id, message.message_id);
    assert_eq!(request.kind, WireKind::StatusEvent as i32);
    assert_eq!(request.referral_id, "ok");
    assert_eq!(request.format, "france-travail");
    assert_eq!(request.content_type, "application/json");
    assert_eq!(
        request.payload, message.body,
        "the same bytes as a webhook body"
    );
    assert_eq!(request.attempt, 2);

    let cases = [
        ("unavailable", Attempt::Retry("grpc-unavailable".to_owned())),
        ("not-found", Attempt::Gone("grpc-not-found".to_owned())),
        ("already-exists", Attempt::Delivered),
        (
            "invalid",
            Attempt::Refused("grpc-invalid-argument".to_owned()),
        ),
    ];
    for (script, expected) in cases {
        let message = outbound("c1c1c1c1-0000-4000-8000-00000000000b", script, 1);
        assert_eq!(sender.send(&message).await, expected, "{script}");
    }
}

#[tokio::test]
async fn slow_grpc_receivers_within_the_timeout_deliver_and_stuck_ones_are_retried() {
    let (address, _receiver) = grpc_receiver(None).await;
    let sender = GrpcSender::new(&grpc_target(format!("http://{address}")), TIMEOUT)
        .await
        .expect("sender");
    let started = Instant::now();
    let slow = outbound("d0d0d0d0-0000-4000-8000-00000000000c", "slow", 1);
    assert_eq!(sender.send(&slow).await, Attempt::Delivered);
    assert!(started.elapsed() >= SLOW);

    let started = Instant::now();
    let stuck = outbound("d1d1d1d1-0000-4000-8000-00000000000d", "stuck", 1);
    let attempt = sender.send(&stuck).await;
    // The receiver sees the deadline (grpc-timeout) and may answer
    // DEADLINE_EXCEEDED first; either way the message is retried.
    assert!(
        matches!(&attempt, Attempt::Retry(reason) if reason == "timeout" || reason == "grpc-deadline-exceeded" || reason == "grpc-cancelled"),
        "{attempt:?}"
    );
    assert!(started.elapsed() < STUCK);
}

#[tokio::test]
async fn a_grpc_receiver_that_is_down_is_retried_and_one_without_the_service_is_gone() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    // Built while the receiver is down: the channel connects lazily.
    let sender = GrpcSender::new(&grpc_target(format!("http://{address}")), TIMEOUT)
        .await
        .expect("sender");
    let message = outbound("e0e0e0e0-0000-4000-8000-00000000000e", "ok", 1);
    assert_eq!(
        sender.send(&message).await,
        Attempt::Retry("grpc-unavailable".to_owned())
    );

    // A gRPC server that does not implement passerelle.receiver.v1.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let other = listener.local_addr().expect("address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let sender = GrpcSender::new(&grpc_target(format!("http://{other}")), TIMEOUT)
        .await
        .expect("sender");
    assert_eq!(
        sender.send(&message).await,
        Attempt::Gone("grpc-unimplemented".to_owned())
    );
}

#[tokio::test]
async fn grpc_over_tls_checks_the_receiver_against_the_configured_ca() {
    let pki = Pki::generate();
    let (address, receiver) = grpc_receiver(Some(&pki)).await;
    let files = Files::new();
    let mut target = grpc_target(format!("https://{address}"));
    // No CA: the Mozilla roots, which do not know the test CA.
    let public_roots = GrpcSender::new(&target, TIMEOUT).await.expect("sender");
    assert!(matches!(
        public_roots
            .send(&outbound("f0f0f0f0-0000-4000-8000-00000000000e", "ok", 1))
            .await,
        Attempt::Retry(_)
    ));

    target.ca = Some(files.write("ca.pem", &pki.ca_pem));
    let sender = GrpcSender::new(&target, TIMEOUT).await.expect("sender");
    let message = outbound("f0f0f0f0-0000-4000-8000-00000000000f", "ok", 1);
    assert_eq!(sender.send(&message).await, Attempt::Delivered);
    assert_eq!(receiver.log.lock().expect("log").len(), 1);

    let stranger = Pki::generate();
    target.ca = Some(files.write("other-ca.pem", &stranger.ca_pem));
    let sender = GrpcSender::new(&target, TIMEOUT).await.expect("sender");
    let attempt = sender.send(&message).await;
    assert!(matches!(attempt, Attempt::Retry(_)), "{attempt:?}");
    assert_eq!(receiver.log.lock().expect("log").len(), 1);
}
