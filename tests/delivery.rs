//! Durable delivery against real receivers: the gateway binary pushes signed
//! webhooks to an HTTP receiver started by the test, retries with backoff,
//! dead-letters, cancels when consent is withdrawn, notifies a withdrawal
//! after delivery, and serves pull inboxes with leases.

mod common;

use std::time::Duration;

use base64::Engine;
use common::gateway::{
    Options, TestGateway, accepted_referral, bearer, consent_event, organisation, pull_inbox,
    sample,
};
use common::receiver::Receiver;
use passerelle::delivery::grpc_push::receiver_v1::receiver_service_server::{
    ReceiverService, ReceiverServiceServer,
};
use passerelle::delivery::grpc_push::receiver_v1::{
    DeliverRequest, DeliverResponse, MessageKind as WireKind,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const SECRET_VARIABLE: &str = "PASSERELLE_TEST_WEBHOOK_SECRET";

/// A Standard Webhooks secret made for the run.
fn secret() -> (String, Vec<u8>) {
    let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    (
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&key)
        ),
        key,
    )
}

/// A gateway pushing France Travail's messages to `receiver` as webhooks in
/// France Travail's format, with quick retries; the association pulls.
fn gateway_pushing_to(receiver: &Receiver, max_attempts: u32) -> (TestGateway, Vec<u8>) {
    let (text, key) = secret();
    let gateway = TestGateway::start_with(Options {
        organisation_toml: vec![(
            FRANCE_TRAVAIL,
            format!(
                "[organisation.delivery]\nmode = \"webhook\"\nurl = \"{}\"\nformat = \"france-travail\"\nsecret = \"env:{SECRET_VARIABLE}\"\nmax_attempts = {max_attempts}\ntimeout_seconds = 2\n",
                receiver.url
            ),
        )],
        extra_toml: "\n[delivery]\npoll_interval_milliseconds = 50\nbase_delay_milliseconds = 50\nmax_delay_seconds = 1\nlease_seconds = 1\n".to_owned(),
        environment: vec![(SECRET_VARIABLE.to_owned(), text)],
        ..Options::default()
    });
    (gateway, key)
}

async fn state_of(gateway: &TestGateway, referral_id: &str) -> String {
    let view: Value = gateway
        .client()
        .get(gateway.url(&format!("/v1/referrals/{referral_id}")))
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    view["state"].as_str().expect("state").to_owned()
}

async fn wait_for_state(gateway: &TestGateway, referral_id: &str, expected: &str) {
    for _ in 0..200 {
        if state_of(gateway, referral_id).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "referral {referral_id} never reached {expected} (it is {}); log:\n{}",
        state_of(gateway, referral_id).await,
        gateway.logs()
    );
}

fn outbox(gateway: &TestGateway, arguments: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("--store")
        .arg(&gateway.store_location)
        .arg("outbox")
        .args(arguments)
        .output()
        .expect("passerelle outbox");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_is_pushed_once_signed_in_the_recipients_format() {
    let receiver = Receiver::start().await;
    let (gateway, key) = gateway_pushing_to(&receiver, 5);
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    assert!(
        receiver
            .wait_for(|received| !received.is_empty(), Duration::from_secs(10))
            .await,
        "nothing was pushed; log:\n{}",
        gateway.logs()
    );
    wait_for_state(&gateway, &referral_id, "delivered").await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "pushed once");
    let push = &received[0];
    assert_eq!(push.id, referral_id, "webhook-id is the referral id");
    assert_eq!(push.kind, "referral");
    // The signature, recomputed here from the spec: HMAC-SHA256 over "id.timestamp.body".
    let mut signed = format!("{}.{}.", push.id, push.timestamp).into_bytes();
    signed.extend_from_slice(&push.body);
    let expected = {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
        mac.update(&signed);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    assert!(
        push.signature
            .split(' ')
            .any(|signature| signature == format!("v1,{expected}")),
        "{}",
        push.signature
    );
    // France Travail's format, minimised: its orientation shape, no birth name.
    let body: Value = serde_json::from_slice(&push.body).expect("JSON body");
    assert!(
        body["orientation"].get("criteres_orientation").is_some(),
        "{body}"
    );
    assert_eq!(body["reference_partenaire"], json!(referral_id));
    assert!(!String::from_utf8_lossy(&push.body).contains("Ben Saïd Ben Saïd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_under_the_same_id_until_delivered() {
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 503, 429], 200);
    let (gateway, _) = gateway_pushing_to(&receiver, 10);
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &referral_id, "delivered").await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "three failures, then the delivery");
    assert!(received.iter().all(|push| push.id == referral_id));
    assert_eq!(receiver.accepted().len(), 1);
    let shown: Value =
        serde_json::from_str(&outbox(&gateway, &["show", &referral_id])).expect("JSON");
    assert_eq!(shown["state"], json!("delivered"));
    assert_eq!(shown["attempts"], json!(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_attempts_a_message_is_a_dead_letter_that_can_be_replayed() {
    let receiver = Receiver::start().await;
    receiver.answer(&[], 500);
    let (gateway, _) = gateway_pushing_to(&receiver, 3);
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &referral_id, "dead_lettered").await;
    assert_eq!(
        receiver.received().len(),
        3,
        "exactly max_attempts attempts"
    );
    let dead = outbox(&gateway, &["list", "--state", "dead"]);
    let listed: Value =
        serde_json::from_str(dead.lines().next().expect("one dead letter")).expect("JSON");
    assert_eq!(listed["message_id"], json!(referral_id));
    assert_eq!(listed["last_error"], json!("http-500"));
    assert!(!dead.contains("Aïcha"), "payloads are never listed");
    // The receiver is fixed; the operator replays the dead letter.
    receiver.answer(&[], 200);
    assert!(outbox(&gateway, &["retry", &referral_id]).contains("1 message"));
    wait_for_state(&gateway, &referral_id, "delivered").await;
    assert_eq!(receiver.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_410_is_disabled() {
    let receiver = Receiver::start().await;
    receiver.answer(&[], 410);
    let (gateway, _) = gateway_pushing_to(&receiver, 10);
    let (first, _, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &first, "dead_lettered").await;
    let (second, _, _) = accepted_referral(&gateway).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing more is pushed to a gone receiver"
    );
    assert_eq!(state_of(&gateway, &second).await, "queued");
    assert!(gateway.logs().contains("gone"), "the disabling is reported");
    let disabled = outbox(&gateway, &["disabled"]);
    assert!(disabled.contains(FRANCE_TRAVAIL), "{disabled}");
    assert!(disabled.contains("http-410"), "{disabled}");
    // The receiver is back; the operator enables it: the queued referral leaves.
    receiver.answer(&[], 200);
    assert!(outbox(&gateway, &["enable", FRANCE_TRAVAIL]).contains("enabled"));
    wait_for_state(&gateway, &second, "delivered").await;
    assert!(outbox(&gateway, &["disabled"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_while_queued_cancels_the_delivery() {
    let receiver = Receiver::start().await;
    receiver.answer(&[], 503);
    let (gateway, _) = gateway_pushing_to(&receiver, 100);
    let (referral_id, record_id, _) = accepted_referral(&gateway).await;
    assert!(
        receiver
            .wait_for(|received| !received.is_empty(), Duration::from_secs(10))
            .await
    );
    let withdrawn = consent_event(
        &gateway,
        &record_id,
        "CONSENT_EVENT_KIND_WITHDRAWN",
        KONEXIO,
    )
    .await;
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    receiver.answer(&[], 200);
    wait_for_state(&gateway, &referral_id, "withdrawn").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = receiver.accepted();
    assert!(
        accepted.iter().all(|push| push.kind != "referral"),
        "never delivered after the withdrawal"
    );
    // The receiver had been offered it (and answered 503): it may hold it, so
    // it is told of the withdrawal all the same (GDPR Art. 19).
    assert!(
        receiver
            .wait_for(
                |received| received
                    .iter()
                    .any(|push| push.kind == "status_event" && push.status == 200),
                Duration::from_secs(10)
            )
            .await
    );
    let shown: Value =
        serde_json::from_str(&outbox(&gateway, &["show", &referral_id])).expect("JSON");
    assert_eq!(shown["state"], json!("cancelled"));
    assert_eq!(shown["last_error"], json!("consent-withdrawn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_after_delivery_is_notified_to_the_recipient() {
    let receiver = Receiver::start().await;
    let (gateway, _) = gateway_pushing_to(&receiver, 5);
    let (referral_id, record_id, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &referral_id, "delivered").await;
    let withdrawn = consent_event(
        &gateway,
        &record_id,
        "CONSENT_EVENT_KIND_WITHDRAWN",
        KONEXIO,
    )
    .await;
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    assert!(
        receiver
            .wait_for(
                |received| received.iter().any(|push| push.kind == "status_event"),
                Duration::from_secs(10)
            )
            .await,
        "no withdrawal notice; log:\n{}",
        gateway.logs()
    );
    let notice = receiver
        .received()
        .into_iter()
        .find(|push| push.kind == "status_event")
        .expect("notice");
    let event: Value = serde_json::from_slice(&notice.body).expect("JSON");
    assert_eq!(event["status"], json!("STATUS_WITHDRAWN"));
    assert_eq!(event["referral_id"], json!(referral_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_reach_a_pulling_sender_and_are_offered_again_until_acknowledged() {
    let receiver = Receiver::start().await;
    let (gateway, _) = gateway_pushing_to(&receiver, 5);
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &referral_id, "delivered").await;
    // France Travail's decision, in its own format, comes back.
    let decision = sample("france-travail-decision.json");
    let posted = gateway
        .client()
        .post(gateway.url(&format!(
            "/v1/referrals/{referral_id}/events?format=france-travail"
        )))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .json(&decision)
        .send()
        .await
        .expect("decision");
    assert_eq!(
        posted.status(),
        StatusCode::CREATED,
        "{}",
        posted.text().await.unwrap_or_default()
    );
    let pull = || pull_inbox(&gateway, KONEXIO);
    let first = pull().await;
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{first}");
    let delivery_id = items[0]["delivery_id"].as_str().expect("id").to_owned();
    assert_eq!(items[0]["message"]["referral_id"], json!(referral_id));
    assert!(items[0]["message"]["status"].is_string());
    // Leased: not offered again at once; offered again once the lease is over.
    assert!(pull().await["items"].as_array().expect("items").is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = pull().await;
    assert_eq!(again["items"][0]["delivery_id"], json!(delivery_id));
    // France Travail receives by webhook: its inbox is not for pulling.
    let pushed = gateway
        .client()
        .get(gateway.url("/v1/inbox"))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .send()
        .await
        .expect("pull");
    assert_eq!(pushed.status(), StatusCode::FORBIDDEN);
    let acknowledge = |by: &str| {
        gateway
            .client()
            .post(gateway.url(&format!("/v1/inbox/{delivery_id}/ack")))
            .header("authorization", bearer(by))
            .send()
    };
    // Another organisation cannot acknowledge it.
    let foreign = acknowledge(FRANCE_TRAVAIL).await.expect("ack");
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let acknowledged = acknowledge(KONEXIO).await.expect("ack");
    assert_eq!(acknowledged.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(pull().await["items"].as_array().expect("items").is_empty());
}

/// A gRPC receiver recording every delivery, answering OK.
#[derive(Clone, Default)]
struct GrpcReceiver {
    log: std::sync::Arc<std::sync::Mutex<Vec<DeliverRequest>>>,
}

#[tonic::async_trait]
impl ReceiverService for GrpcReceiver {
    async fn deliver(
        &self,
        request: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        self.log.lock().expect("log").push(request.into_inner());
        Ok(tonic::Response::new(DeliverResponse {}))
    }
}

/// The gateway pushes to a receiver implementing `passerelle.receiver.v1`,
/// in the receiver's configured format: here canonical version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_receiver_gets_the_referral_in_its_format_version_1() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let receiver = GrpcReceiver::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ReceiverServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let gateway = TestGateway::start_with(Options {
        organisation_toml: vec![(
            FRANCE_TRAVAIL,
            format!(
                "[organisation.delivery]\nmode = \"grpc\"\nurl = \"http://{address}\"\nformat = \"passerelle-v1\"\ntimeout_seconds = 2\n"
            ),
        )],
        extra_toml: "\n[delivery]\npoll_interval_milliseconds = 50\n".to_owned(),
        ..Options::default()
    });
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    wait_for_state(&gateway, &referral_id, "delivered").await;
    let log = receiver.log.lock().expect("log").clone();
    assert_eq!(log.len(), 1);
    let delivery = &log[0];
    assert_eq!(delivery.message_id, referral_id);
    assert_eq!(delivery.referral_id, referral_id);
    assert_eq!(delivery.format, "passerelle-v1");
    assert_eq!(delivery.kind, i32::from(WireKind::Referral));
    let document: Value = serde_json::from_slice(&delivery.payload).expect("JSON payload");
    assert_eq!(document["schema_version"], json!("passerelle.referral.v1"));
    assert_eq!(document["referral_id"], json!(referral_id));
    // The minimised copy: what France Travail's policy removes never leaves.
    let payload = String::from_utf8_lossy(&delivery.payload);
    assert!(!payload.contains("Passer par l'accueil"), "{payload}");
    assert!(!payload.contains("Arrivée en France"), "{payload}");
}

/// The sender withdraws its referral while it waits for the receiver: it is
/// cancelled, never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_withdrawn_by_its_sender_while_queued_is_not_delivered() {
    let receiver = Receiver::start().await;
    receiver.answer(&[], 503);
    let (gateway, _) = gateway_pushing_to(&receiver, 100);
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    assert!(
        receiver
            .wait_for(|received| !received.is_empty(), Duration::from_secs(10))
            .await
    );
    let withdrawn = gateway
        .client()
        .post(gateway.url(&format!("/v1/referrals/{referral_id}/events")))
        .header("authorization", bearer(KONEXIO))
        .json(&json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "schema_version": "passerelle.status.v1",
            "referral_id": referral_id,
            "status": "STATUS_WITHDRAWN",
            "occurred_at": chrono::Utc::now().to_rfc3339(),
            "author_siret": organisation(KONEXIO).siret,
        }))
        .send()
        .await
        .expect("withdraw");
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    receiver.answer(&[], 200);
    wait_for_state(&gateway, &referral_id, "withdrawn").await;
    let shown: Value =
        serde_json::from_str(&outbox(&gateway, &["show", &referral_id])).expect("JSON");
    assert_eq!(shown["state"], json!("cancelled"));
    assert_eq!(shown["last_error"], json!("referral-withdrawn"));
    assert!(
        receiver
            .accepted()
            .iter()
            .all(|push| push.kind != "referral")
    );
}
