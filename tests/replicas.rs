//! Several gateway processes on one PostgreSQL database, as an operator runs
//! them: whichever replica answers 202, the referral reaches the receiver
//! once (one `webhook-id` per referral, never two), status events come back,
//! the audit log stays one verifiable chain, and a replica killed with
//! SIGKILL mid-delivery leaves nothing lost: the others take its leased
//! messages once the leases expire.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::gateway::{
    Options, TestGateway, bearer, new_id, organisation, referral, store_consent,
};
use common::receiver::Receiver;
use passerelle::store::PgStore;
use passerelle::store::postgres::ScratchDatabase;

const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const SECRET_VARIABLE: &str = "PASSERELLE_TEST_WEBHOOK_SECRET";
const V2: &str = "application/vnd.passerelle.referral.v2+json";

/// A replica's options: the shared database, France Travail pushed to
/// `receiver` with attempts that time out after `timeout_seconds`.
fn replica(database: &Arc<ScratchDatabase>, receiver: &Receiver, timeout_seconds: u64) -> Options {
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7_u8; 32])
    );
    Options {
        database: Some(Arc::clone(database)),
        organisation_toml: vec![(
            FRANCE_TRAVAIL,
            format!(
                "[organisation.delivery]\nmode = \"webhook\"\nurl = \"{}\"\nformat = \"passerelle-v2\"\nsecret = \"env:{SECRET_VARIABLE}\"\ntimeout_seconds = {timeout_seconds}\nmax_attempts = 50\n",
                receiver.url
            ),
        )],
        extra_toml: "\n[delivery]\npoll_interval_milliseconds = 50\nbase_delay_milliseconds = 100\nmax_delay_seconds = 1\n".to_owned(),
        environment: vec![(SECRET_VARIABLE.to_owned(), secret)],
        ..Options::default()
    }
}

/// `count` gateways on one scratch database, France Travail pushed to `receiver`.
async fn replicas(
    count: usize,
    receiver: &Receiver,
    timeout_seconds: u64,
) -> (Arc<ScratchDatabase>, Vec<TestGateway>) {
    let database = Arc::new(
        ScratchDatabase::create()
            .await
            .expect("PostgreSQL for the replicas"),
    );
    let gateways = (0..count)
        .map(|_| TestGateway::start_with(replica(&database, receiver, timeout_seconds)))
        .collect();
    (database, gateways)
}

/// Sends `count` referrals under one consent record, spread over the
/// replicas, `parallel` at a time; returns their ids.
async fn send(gateways: &[TestGateway], count: usize) -> Vec<String> {
    let record_id = store_consent(&gateways[0]).await;
    let ids: Vec<String> = (0..count).map(|_| new_id()).collect();
    let mut sending = tokio::task::JoinSet::new();
    for (index, referral_id) in ids.iter().enumerate() {
        let gateway = &gateways[index % gateways.len()];
        let client = gateway.client();
        let url = gateway.url("/v1/referrals");
        let body = referral(referral_id, &record_id);
        sending.spawn(async move {
            let answer = client
                .post(url)
                .header("authorization", bearer(KONEXIO))
                .header("content-type", V2)
                .json(&body)
                .send()
                .await
                .expect("an answer");
            assert_eq!(
                answer.status(),
                202,
                "{}",
                answer.text().await.unwrap_or_default()
            );
        });
    }
    while let Some(done) = sending.join_next().await {
        done.expect("sent");
    }
    ids
}

/// Referral id → the distinct webhook-ids acknowledged for it.
fn delivered(receiver: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_referral: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in receiver.accepted() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON");
        let referral_id = body["referral_id"]
            .as_str()
            .expect("referral_id")
            .to_owned();
        by_referral
            .entry(referral_id)
            .or_default()
            .insert(request.id);
    }
    by_referral
}

async fn all_delivered(receiver: &Receiver, ids: &[String], timeout: Duration) -> bool {
    let wanted: BTreeSet<&String> = ids.iter().collect();
    receiver
        .wait_for(
            |_| {
                let delivered = delivered(receiver);
                wanted.iter().all(|id| delivered.contains_key(*id))
            },
            timeout,
        )
        .await
}

/// Messages still queued under a lease that has not run out.
async fn held_leases(database: &ScratchDatabase) -> i64 {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'queued' AND lease_until > now()")
        .fetch_one(&mut connection)
        .await
        .expect("count leases")
}

async fn audit_chain_verifies(database: &ScratchDatabase) {
    let store = PgStore::connect_existing(&database.url)
        .await
        .expect("open the shared store");
    let rows = store.audit_rows().await.expect("the audit log");
    assert!(rows.len() > 20, "{} entries", rows.len());
    let report = passerelle::audit::verify_rows(rows, None).expect("verify");
    assert!(report.intact, "{:?}", report.first_broken);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_every_referral_once_and_status_events_come_back() {
    replicas_deliver_every_referral_once_and_status_events_come_back(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_every_referral_once_and_status_events_come_back() {
    replicas_deliver_every_referral_once_and_status_events_come_back(3).await;
}

/// `count` replicas under load: every referral answered 202 by any of them is
/// delivered once; a status event posted to one is read on another.
async fn replicas_deliver_every_referral_once_and_status_events_come_back(count: usize) {
    let receiver = Receiver::start().await;
    // An attempt that times out after the receiver took the message is sent
    // again (at-least-once): on a loaded machine a 1 s timeout can, so the
    // timeout here is long enough that a second acknowledgement means a
    // message was claimed twice.
    let (database, gateways) = replicas(count, &receiver, 10).await;
    let ids = send(&gateways, 150).await;
    assert!(
        all_delivered(&receiver, &ids, Duration::from_secs(60)).await,
        "not every referral was delivered"
    );
    // Settle: a second delivery of any of them would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered(&receiver);
    assert_eq!(
        delivered.len(),
        ids.len(),
        "a referral arrived that was not sent"
    );
    let doubled: Vec<_> = delivered
        .iter()
        .filter(|(_, hooks)| hooks.len() > 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "delivered under two webhook-ids: {doubled:?}"
    );
    let acknowledged_twice = receiver.accepted().len() - ids.len();
    assert_eq!(acknowledged_twice, 0, "a message was acknowledged twice");

    // France Travail answers through one replica; Konexio reads it on another.
    let referral_id = &ids[0];
    let event = serde_json::json!({
        "schema_version": "passerelle.status.v1",
        "event_id": new_id(),
        "referral_id": referral_id,
        "status": "STATUS_RECEIVED",
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "author_siret": organisation(FRANCE_TRAVAIL).siret,
    });
    let answer = gateways[count - 1]
        .client()
        .post(gateways[count - 1].url(&format!("/v1/referrals/{referral_id}/events")))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .json(&event)
        .send()
        .await
        .expect("an answer");
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap_or_default()
    );
    let view: serde_json::Value = gateways[0]
        .client()
        .get(gateways[0].url(&format!("/v1/referrals/{referral_id}")))
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    let statuses: Vec<&str> = view["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["status"].as_str())
        .collect();
    assert_eq!(statuses, ["STATUS_RECEIVED"], "{view}");

    drop(gateways);
    audit_chain_verifies(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_leaves_its_leased_messages_to_the_others() {
    let receiver = Receiver::start().await;
    // Slow enough (under the 1 s attempt timeout) that both replicas are
    // holding leased messages when the first one dies.
    receiver.delay(Duration::from_millis(800));
    let (database, mut gateways) = replicas(2, &receiver, 1).await;
    let ids = send(&gateways, 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateways[0].kill();
    let leased = held_leases(&database).await;
    assert!(
        leased > 0,
        "no lease was held when the replica died: the test proves nothing"
    );
    receiver.delay(Duration::ZERO);
    assert!(
        all_delivered(&receiver, &ids, Duration::from_secs(60)).await,
        "the surviving replica did not finish the killed one's work"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered(&receiver);
    assert_eq!(delivered.len(), ids.len());
    // A message the killed replica sent without seeing the answer is sent
    // again, under the same webhook-id: the receiver deduplicates on it.
    let doubled: Vec<_> = delivered
        .iter()
        .filter(|(_, hooks)| hooks.len() > 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "delivered under two webhook-ids: {doubled:?}"
    );
    drop(gateways);
    audit_chain_verifies(&database).await;
}
