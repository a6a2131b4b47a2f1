//! `passerelle conformance receiver` against two receivers written here, as
//! an operator would write them: a correct one (Standard Webhooks verified
//! with an independent HMAC, timestamps within 5 minutes, webhook-ids
//! deduplicated, a `STATUS_RECEIVED` event posted back for each referral)
//! and a broken one that takes any signature. The correct one conforms; the
//! broken one fails exactly the three signature checks.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use passerelle::conformance::receiver::{self, ReceiverOptions};
use passerelle::conformance::{Outcome, RunReport};
use sha2::Sha256;

/// Standard Webhooks' recommended tolerance.
const TOLERANCE_SECONDS: i64 = 300;

/// The SIRET the receiver posts its events as (France Travail Saint-Denis in the sample).
const RECIPIENT_SIRET: &str = "13000548100002";

struct Receiver {
    secret: Vec<u8>,
    /// The gateway base URL events are posted back to.
    gateway: String,
    /// Whether signatures are checked at all (the broken receiver does not).
    verifies: bool,
    seen: Mutex<HashSet<String>>,
    client: reqwest::Client,
}

/// Starts a receiver on 127.0.0.1:0; its URL.
async fn start_receiver(secret: Vec<u8>, gateway: SocketAddr, verifies: bool) -> String {
    let receiver = Arc::new(Receiver {
        secret,
        gateway: format!("http://{gateway}"),
        verifies,
        seen: Mutex::default(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client"),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/hook")
}

async fn hook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if receiver.verifies && !verify(&receiver.secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    if id.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    if !receiver.seen.lock().expect("seen").insert(id) {
        // Already taken: acknowledged, not processed again.
        return StatusCode::OK;
    }
    match header("passerelle-message-kind").as_str() {
        "referral" => {
            let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return StatusCode::BAD_REQUEST;
            };
            let Some(referral) = document["referral_id"].as_str().map(str::to_owned) else {
                return StatusCode::BAD_REQUEST;
            };
            // Answered at once; processed (and reported) afterwards.
            let receiver = Arc::clone(&receiver);
            tokio::spawn(async move { post_received(&receiver, &referral).await });
            StatusCode::NO_CONTENT
        }
        "status_event" => StatusCode::NO_CONTENT,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn post_received(receiver: &Receiver, referral: &str) {
    let event = serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral,
        "status": "STATUS_RECEIVED",
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "author_siret": RECIPIENT_SIRET,
    });
    let answer = receiver
        .client
        .post(format!(
            "{}/v1/referrals/{referral}/events",
            receiver.gateway
        ))
        .bearer_auth("conformance-test-key")
        .json(&event)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status().as_u16(), 201, "the event was taken");
}

/// Standard Webhooks verification, written from the specification (not the
/// gateway's code): HMAC-SHA256 of `{id}.{timestamp}.{body}`, any `v1,`
/// signature of the header, compared in constant time.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        text("webhook-id"),
        text("webhook-timestamp"),
        text("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - seconds).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    signatures.split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .is_some_and(|tag| mac.clone().verify_slice(&tag).is_ok())
    })
}

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address")
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn run_against(verifies: bool) -> RunReport {
    install_crypto();
    let secret: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
    let gateway = free_address();
    let target = start_receiver(secret.clone(), gateway, verifies).await;
    receiver::run(ReceiverOptions {
        target,
        secret,
        gateway_listen: gateway,
        wait: Duration::from_secs(5),
        ca: None,
    })
    .await
    .expect("the run starts")
}

fn failed(report: &RunReport) -> BTreeSet<&str> {
    report
        .cases
        .iter()
        .filter(|case| case.outcome.is_failure())
        .map(|case| case.id.as_str())
        .collect()
}

fn explain(report: &RunReport) -> String {
    report
        .cases
        .iter()
        .map(|case| format!("{} {:?}", case.id, case.outcome))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_correct_receiver_conforms() {
    let report = run_against(true).await;
    assert_eq!(report.mode, "receiver");
    assert_eq!(report.cases.len(), 7, "{}", explain(&report));
    assert!(
        report
            .cases
            .iter()
            .all(|case| case.outcome == Outcome::Passed),
        "{}",
        explain(&report)
    );
    assert!(report.conforms());
    let requirements: Vec<&str> = report
        .cases
        .iter()
        .flat_map(|case| case.requirements.iter().map(String::as_str))
        .collect();
    assert_eq!(
        requirements,
        [
            "RECEIVER-01",
            "RECEIVER-02",
            "RECEIVER-03",
            "RECEIVER-04",
            "RECEIVER-05",
            "RECEIVER-06",
            "RECEIVER-07"
        ]
    );
    // The event posted back is shown with the check that expected it, its
    // credentials masked.
    let received = report
        .cases
        .iter()
        .find(|case| case.id == "received-event-posted")
        .expect("check 2");
    let posted = received
        .exchanges
        .iter()
        .find(|exchange| exchange.url.ends_with("/events"))
        .expect("the event posted back");
    assert_eq!(posted.status, Some(201));
    assert!(
        !posted
            .request_headers
            .iter()
            .any(|(_, value)| value.contains("conformance-test-key")),
        "{:?}",
        posted.request_headers
    );
}

#[tokio::test]
async fn a_receiver_taking_any_signature_fails_exactly_the_signature_checks() {
    let report = run_against(false).await;
    assert_eq!(
        failed(&report),
        BTreeSet::from([
            "bad-signature-refused",
            "missing-signature-refused",
            "stale-timestamp-refused",
        ]),
        "{}",
        explain(&report)
    );
    assert!(!report.conforms());
    for case in report.cases.iter().filter(|case| case.outcome.is_failure()) {
        let Outcome::Failed { failures } = &case.outcome else {
            panic!("{}: {:?}", case.id, case.outcome);
        };
        // Taken (2xx) and processed (a status event posted back).
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("must be refused with 4xx")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("must not be processed")),
            "{failures:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_receiver_is_an_error_in_every_check() {
    install_crypto();
    let report = receiver::run(ReceiverOptions {
        target: format!("http://{}/hook", free_address()),
        secret: vec![7; 32],
        gateway_listen: free_address(),
        wait: Duration::from_millis(500),
        ca: None,
    })
    .await
    .expect("the run starts");
    assert_eq!(report.cases.len(), 7);
    assert!(
        report
            .cases
            .iter()
            .all(|case| matches!(case.outcome, Outcome::Error { .. })),
        "{}",
        explain(&report)
    );
}

#[tokio::test]
async fn a_gateway_address_taken_stops_the_run_before_anything_is_sent() {
    install_crypto();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let error = receiver::run(ReceiverOptions {
        target: "http://127.0.0.1:9/hook".to_owned(),
        secret: vec![7; 32],
        gateway_listen: taken.local_addr().expect("address"),
        wait: Duration::from_secs(1),
        ca: None,
    })
    .await
    .expect_err("the address is taken");
    assert!(error.contains("cannot listen"), "{error}");
}
