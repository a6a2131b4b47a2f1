//! The referral lifecycle end to end: status events over HTTPS against the
//! real binary (legal paths, illegal transitions, final statuses, the
//! sender's withdrawal, replays), and the expiry of referrals nobody acted on,
//! on a gateway built over a SQLite store in a temporary folder.

mod common;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::gateway::{
    TestGateway, accepted_referral, bearer, consent, consent_event, new_id, on_postgres,
    organisation, pull_inbox, referral,
};
use passerelle::audit::{AuditEntry, AuditKind};
use passerelle::config::{GatewayConfig, Organisation};
use passerelle::consent::{ConsentEvent, ConsentEventKind, RecordId};
use passerelle::decision::RefusalReason;
use passerelle::error::Error;
use passerelle::gateway::{GATEWAY_ACTOR, Gateway, Submission};
use passerelle::policy::Policy;
use passerelle::store::postgres::ScratchDatabase;
use passerelle::store::{ConsentStore, NewStatusEvent, ReferralStore, Store, StoreLocation};
use passerelle::telemetry::Metrics;
use reqwest::StatusCode;
use serde_json::{Value, json};

const REFERRALS: &str = "/v1/referrals";
const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";

/// A status event about `referral_id` by `author` (an organisation id).
fn event(referral_id: &str, author: &str, status: &str) -> Value {
    let mut event = json!({
        "event_id": new_id(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral_id,
        "status": status,
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": organisation(author).siret,
    });
    match status {
        "STATUS_REJECTED" => event["rejection_reason"] = json!("REJECTION_REASON_UNREACHABLE"),
        "STATUS_COMPLETED" => event["outcome"] = json!("OUTCOME_EMPLOYMENT"),
        "STATUS_APPOINTMENT_SCHEDULED" => event["appointment_at"] = json!("2026-12-09T09:30:00Z"),
        _ => {}
    }
    event
}

/// Posts an event as `caller`: the HTTP status and the body.
async fn post(gateway: &TestGateway, caller: &str, event: &Value) -> (StatusCode, Value) {
    let referral_id = event["referral_id"].as_str().expect("referral id");
    let response = gateway
        .client()
        .post(gateway.url(&format!("{REFERRALS}/{referral_id}/events")))
        .header("authorization", bearer(caller))
        .json(event)
        .send()
        .await
        .expect("event");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

/// The statuses of a referral as its sender sees them, oldest first.
async fn statuses(gateway: &TestGateway, referral_id: &str) -> Vec<String> {
    let view: Value = gateway
        .client()
        .get(gateway.url(&format!("{REFERRALS}/{referral_id}")))
        .header("authorization", bearer(KONEXIO))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    view["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["status"].as_str().expect("status").to_owned())
        .collect()
}

/// Asserts a 422 validation problem with one illegal-transition violation
/// at /status; answers its detail.
fn illegal_transition(status: StatusCode, body: &Value) -> String {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["type"],
        json!("https://passerelle.eu/problems/validation")
    );
    let violations = body["violations"].as_array().expect("violations");
    assert_eq!(violations.len(), 1, "{body}");
    assert_eq!(violations[0]["pointer"], json!("/status"));
    assert_eq!(violations[0]["rule"], json!("illegal-transition"));
    violations[0]["detail"].as_str().expect("detail").to_owned()
}

#[tokio::test]
async fn a_referral_goes_from_acceptance_to_completion_and_nothing_follows() {
    let gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    let path = [
        "STATUS_ACCEPTED",
        "STATUS_APPOINTMENT_SCHEDULED",
        "STATUS_APPOINTMENT_HELD",
        "STATUS_IN_PROGRESS",
        "STATUS_COMPLETED",
    ];
    for status in path {
        let (code, body) = post(
            &gateway,
            FRANCE_TRAVAIL,
            &event(&referral_id, FRANCE_TRAVAIL, status),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{status}: {body}");
    }
    assert_eq!(statuses(&gateway, &referral_id).await, path);

    // Completed is final: neither the recipient nor the sender may go on.
    let (code, body) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_IN_PROGRESS"),
    )
    .await;
    let detail = illegal_transition(code, &body);
    assert!(detail.contains("STATUS_COMPLETED is final"), "{detail}");
    let (code, body) = post(
        &gateway,
        KONEXIO,
        &event(&referral_id, KONEXIO, "STATUS_WITHDRAWN"),
    )
    .await;
    illegal_transition(code, &body);
    assert_eq!(statuses(&gateway, &referral_id).await, path);
}

#[tokio::test]
async fn an_illegal_transition_is_refused_with_an_explanation_and_audited() {
    let gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    let refused = event(&referral_id, FRANCE_TRAVAIL, "STATUS_IN_PROGRESS");
    let (code, body) = post(&gateway, FRANCE_TRAVAIL, &refused).await;
    let detail = illegal_transition(code, &body);
    assert_eq!(
        detail,
        "STATUS_IN_PROGRESS may not follow no status yet; the recipient may post \
         STATUS_RECEIVED, STATUS_ACCEPTED, STATUS_REJECTED next (the referral's lifecycle \
         allows STATUS_SENT, STATUS_RECEIVED, STATUS_ACCEPTED, STATUS_REJECTED, \
         STATUS_WITHDRAWN, STATUS_EXPIRED after it)"
    );
    // A status that is not the recipient's to post is forbidden outright.
    let (code, body) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_EXPIRED"),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(statuses(&gateway, &referral_id).await.is_empty());

    // The refusal is in the audit log, by its ids and codes.
    let store = Store::open(&StoreLocation::parse(&gateway.store_location))
        .await
        .expect("open the store");
    let entries: Vec<Value> = store
        .audit_entries()
        .await
        .expect("the audit log")
        .into_iter()
        .map(|chained| serde_json::to_value(chained.entry).expect("JSON entry"))
        .collect();
    let refusal = entries
        .iter()
        .find(|entry| entry["event_id"] == refused["event_id"])
        .expect("the refused event is audited");
    assert_eq!(refusal["kind"], json!("status_event_refused"));
    assert_eq!(refusal["reason"], json!("illegal-transition"));
    assert_eq!(refusal["event_kind"], json!("STATUS_IN_PROGRESS"));
    assert_eq!(refusal["actor"], json!(FRANCE_TRAVAIL));
}

#[tokio::test]
async fn a_replayed_event_is_still_a_replay_after_the_lifecycle_moved_on() {
    let gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    let accepted = event(&referral_id, FRANCE_TRAVAIL, "STATUS_ACCEPTED");
    let (code, _) = post(&gateway, FRANCE_TRAVAIL, &accepted).await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_APPOINTMENT_SCHEDULED"),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    // Accepted may not follow a scheduled appointment, but this is the same
    // event sent again (a retry after a lost answer): answered as a replay.
    let (code, body) = post(&gateway, FRANCE_TRAVAIL, &accepted).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], json!(true));
    // A new event saying the same is a transition, and refused.
    let (code, body) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_ACCEPTED"),
    )
    .await;
    illegal_transition(code, &body);
    assert_eq!(
        statuses(&gateway, &referral_id).await,
        ["STATUS_ACCEPTED", "STATUS_APPOINTMENT_SCHEDULED"]
    );
}

#[tokio::test]
async fn the_sender_withdraws_its_referral_and_only_that() {
    let gateway = TestGateway::start();
    let (referral_id, _, _) = accepted_referral(&gateway).await;
    let (code, _) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_ACCEPTED"),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    // The sender posts no decision of the recipient's...
    let (code, body) = post(
        &gateway,
        KONEXIO,
        &event(&referral_id, KONEXIO, "STATUS_COMPLETED"),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    // ...but may withdraw the referral, which ends it.
    let (code, body) = post(
        &gateway,
        KONEXIO,
        &event(&referral_id, KONEXIO, "STATUS_WITHDRAWN"),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_APPOINTMENT_SCHEDULED"),
    )
    .await;
    let detail = illegal_transition(code, &body);
    assert!(detail.contains("STATUS_WITHDRAWN is final"), "{detail}");
    assert_eq!(
        statuses(&gateway, &referral_id).await,
        ["STATUS_ACCEPTED", "STATUS_WITHDRAWN"]
    );
}

/// A status policy for operators, so that an expiry reaches both parties
/// (the example configuration has one for associations only).
const OPERATOR_STATUS_POLICY: &str = r#"
id = "operator-status-test"
version = "1"
message = "status"
recipient = { kind = "france_travail" }
purpose = "dpv:CommunicationManagement"
allow = ["event_id", "schema_version", "referral_id", "status", "occurred_at", "author_siret",
         "rejection_reason", "outcome", "appointment_at"]
"#;

/// A gateway over the example configuration and a fresh store: an SQLite
/// file in `folder`, or a scratch PostgreSQL database when the tests run
/// there (kept alive by the returned guard).
async fn library_gateway(folder: &Path) -> (Gateway, Option<ScratchDatabase>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/passerelle.toml");
    let mut config = GatewayConfig::load(&file).expect("the example configuration");
    let database = if on_postgres() {
        Some(
            ScratchDatabase::create()
                .await
                .expect("PostgreSQL for tests"),
        )
    } else {
        None
    };
    config.store = match &database {
        Some(database) => StoreLocation::Postgres(database.url.clone()),
        None => StoreLocation::Sqlite(folder.join("store.db")),
    };
    config.policies.push(
        Policy::parse(OPERATOR_STATUS_POLICY, "operator-status-test.toml")
            .expect("the operator status policy"),
    );
    let store = Arc::new(Store::open(&config.store).await.expect("open the store"));
    (Gateway::new(config, store, Metrics::new()), database)
}

fn member<'a>(gateway: &'a Gateway, id: &str) -> &'a Organisation {
    gateway
        .config()
        .organisations
        .by_id(id)
        .unwrap_or_else(|| panic!("no organisation {id} in the example configuration"))
}

/// Sends a referral from Konexio to France Travail through the library.
async fn library_referral(gateway: &Gateway) -> String {
    let konexio = member(gateway, KONEXIO);
    let record_id = new_id();
    let body = serde_json::to_vec(&consent(&record_id)).expect("JSON");
    gateway
        .put_consent(konexio, &body)
        .await
        .expect("consent stored");
    let referral_id = new_id();
    let answer = gateway
        .submit(
            konexio,
            Submission {
                format: "passerelle-v2".to_owned(),
                body: serde_json::to_vec(&referral(&referral_id, &record_id)).expect("JSON"),
                recipient: None,
            },
        )
        .await
        .expect("referral accepted");
    assert_eq!(answer.referral_id, referral_id);
    referral_id
}

async fn library_post(gateway: &Gateway, caller: &str, event: &Value) -> Result<(), Error> {
    let referral_id = event["referral_id"].as_str().expect("referral id");
    let body = serde_json::to_vec(event).expect("JSON");
    gateway
        .post_event(member(gateway, caller), referral_id, "passerelle-v2", &body)
        .await
        .map(|_| ())
}

/// The status-event messages queued for a referral: (message id, destination, payload).
async fn queued_events(gateway: &Gateway, referral_id: &str) -> Vec<(String, String, Value)> {
    let mut queued: Vec<(String, String, Value)> = gateway
        .store()
        .outbox_messages(None, None, 10_000)
        .await
        .expect("the outbox")
        .into_iter()
        .filter(|message| message.referral_id == referral_id && message.kind == "status_event")
        .map(|message| {
            (
                message.message_id,
                message.destination,
                serde_json::from_str(&message.payload).expect("JSON payload"),
            )
        })
        .collect();
    queued.sort_by(|left, right| left.1.cmp(&right.1));
    queued
}

#[tokio::test]
async fn referrals_nobody_decided_on_expire_once_and_both_sides_are_told() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let (gateway, _database) = library_gateway(folder.path()).await;
    let forgotten = library_referral(&gateway).await;
    let received = library_referral(&gateway).await;
    let decided = library_referral(&gateway).await;
    library_post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&received, FRANCE_TRAVAIL, "STATUS_RECEIVED"),
    )
    .await
    .expect("received");
    library_post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&decided, FRANCE_TRAVAIL, "STATUS_ACCEPTED"),
    )
    .await
    .expect("accepted");
    let thirty_days = Duration::days(30);

    // Not yet: the delay has not passed since acceptance.
    let soon = Utc::now() + Duration::days(29);
    let expired = gateway
        .expire_stale(soon, thirty_days)
        .await
        .expect("expiry");
    assert!(expired.is_empty(), "{expired:?}");

    // Later: the two undecided referrals expire, oldest first; the accepted one does not.
    let later = Utc::now() + Duration::days(31);
    let expired = gateway
        .expire_stale(later, thirty_days)
        .await
        .expect("expiry");
    assert_eq!(expired, [forgotten.clone(), received.clone()]);

    let stored = gateway
        .store()
        .referral(forgotten.clone())
        .await
        .expect("read")
        .expect("stored");
    let expiry = stored.events.last().expect("an event");
    assert_eq!(expiry.status, "STATUS_EXPIRED");
    assert_eq!(expiry.author, GATEWAY_ACTOR);
    let accepted_at: DateTime<Utc> = stored.accepted_at.parse().expect("time");
    let document: Value = serde_json::from_str(&expiry.event).expect("JSON");
    let occurred_at: DateTime<Utc> = document["occurred_at"]
        .as_str()
        .expect("occurred_at")
        .parse()
        .expect("time");
    assert_eq!(occurred_at, accepted_at + thirty_days);

    // Both sides are told, each under its own message id, the same event.
    let queued = queued_events(&gateway, &forgotten).await;
    let destinations: Vec<&str> = queued.iter().map(|(_, to, _)| to.as_str()).collect();
    assert_eq!(destinations, [FRANCE_TRAVAIL, KONEXIO]);
    assert_ne!(queued[0].0, queued[1].0);
    for (_, _, payload) in &queued {
        assert_eq!(payload["status"], json!("STATUS_EXPIRED"));
        assert_eq!(payload["event_id"], json!(expiry.event_id));
    }
    let audited = gateway
        .store()
        .audit_entries()
        .await
        .expect("audit log")
        .into_iter()
        .filter(|chained| {
            chained.entry.kind == AuditKind::StatusEventRecorded
                && chained.entry.event_id.as_deref() == Some(expiry.event_id.as_str())
        })
        .count();
    assert_eq!(audited, 1);

    // Running it again expires nothing new and queues nothing more.
    let again = gateway
        .expire_stale(later + Duration::hours(1), thirty_days)
        .await
        .expect("expiry");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(queued_events(&gateway, &forgotten).await, queued);

    // Expired is final.
    let late = library_post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&forgotten, FRANCE_TRAVAIL, "STATUS_ACCEPTED"),
    )
    .await
    .expect_err("too late");
    let Error::Invalid(violations) = late else {
        panic!("not a validation error: {late:?}");
    };
    assert_eq!(violations[0].rule, "illegal-transition");
    assert!(
        violations[0].detail.contains("STATUS_EXPIRED is final"),
        "{}",
        violations[0].detail
    );
}

#[tokio::test]
async fn an_event_checked_against_an_outdated_history_is_not_stored() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let (gateway, _database) = library_gateway(folder.path()).await;
    let referral_id = library_referral(&gateway).await;
    library_post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_ACCEPTED"),
    )
    .await
    .expect("accepted");
    // A writer that checked its event when the referral had no status yet
    // (say, a rejection racing the acceptance) must not store it now.
    let rejection = event(&referral_id, FRANCE_TRAVAIL, "STATUS_REJECTED");
    let written = gateway
        .store()
        .record_status_event(
            NewStatusEvent {
                event_id: rejection["event_id"].as_str().expect("id").to_owned(),
                referral_id: referral_id.clone(),
                author: FRANCE_TRAVAIL.to_owned(),
                status: "STATUS_REJECTED".to_owned(),
                occurred_at: Utc::now(),
                fingerprint: "0".repeat(64),
                event: rejection.to_string(),
                recorded_at: Utc::now(),
                preceding_events: 0,
                forward: Vec::new(),
            },
            AuditEntry::new(AuditKind::StatusEventRecorded).actor(FRANCE_TRAVAIL),
        )
        .await;
    assert!(matches!(written, Err(Error::Conflict(_))), "{written:?}");
    let stored = gateway
        .store()
        .referral(referral_id)
        .await
        .expect("read")
        .expect("stored");
    let history: Vec<&str> = stored
        .events
        .iter()
        .map(|event| event.status.as_str())
        .collect();
    assert_eq!(history, ["STATUS_ACCEPTED"]);
}

/// A recipient that read a referral through the API and posted its receipt
/// before any delivery attempt (it pulls, and has not pulled yet) holds it: a
/// consent withdrawal is notified to it as one after a delivery would be.
#[tokio::test]
async fn a_withdrawal_reaches_a_recipient_that_acknowledged_the_referral_before_its_delivery() {
    let gateway = TestGateway::start();
    let (referral_id, record_id, _) = accepted_referral(&gateway).await;
    let (status, body) = post(
        &gateway,
        FRANCE_TRAVAIL,
        &event(&referral_id, FRANCE_TRAVAIL, "STATUS_RECEIVED"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let withdrawn = consent_event(
        &gateway,
        &record_id,
        "CONSENT_EVENT_KIND_WITHDRAWN",
        KONEXIO,
    )
    .await;
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    // France Travail pulls: the notice waits in its inbox.
    assert_one_withdrawal_notice(&gateway, &referral_id).await;
}

// A recipient that only read the referral through the API holds it as much as
// one it was delivered to: its read is recorded, and a withdrawal reaches it.
#[tokio::test]
async fn a_withdrawal_reaches_a_recipient_that_only_read_the_referral_through_the_api() {
    let gateway = TestGateway::start();
    let (referral_id, record_id, _) = accepted_referral(&gateway).await;
    let read = gateway
        .client()
        .get(gateway.url(&format!("/v1/referrals/{referral_id}")))
        .header("authorization", bearer(FRANCE_TRAVAIL))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), StatusCode::OK);
    let withdrawn = consent_event(
        &gateway,
        &record_id,
        "CONSENT_EVENT_KIND_WITHDRAWN",
        KONEXIO,
    )
    .await;
    assert_eq!(withdrawn.status(), StatusCode::CREATED);
    assert_one_withdrawal_notice(&gateway, &referral_id).await;
}

/// France Travail, which pulls, finds one withdrawal notice in its inbox, for
/// `referral_id`.
async fn assert_one_withdrawal_notice(gateway: &TestGateway, referral_id: &str) {
    let page = pull_inbox(gateway, FRANCE_TRAVAIL).await;
    let notices: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|item| item["message"]["status"] == json!("STATUS_WITHDRAWN"))
        .collect();
    assert_eq!(notices.len(), 1, "{page}");
    assert_eq!(notices[0]["message"]["referral_id"], json!(referral_id));
}

/// The gateway decides on a consent record as it last read it, and the
/// accept's transaction checks that the record has not changed since: a
/// withdrawal recorded by another process on the same store (`passerelle
/// consent event`) refuses the next referral all the same, and nothing of
/// that referral is stored.
#[tokio::test]
async fn a_withdrawal_recorded_by_another_process_refuses_the_next_referral() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let (gateway, _database) = library_gateway(folder.path()).await;
    let konexio = member(&gateway, KONEXIO);
    let record_id = new_id();
    let body = serde_json::to_vec(&consent(&record_id)).expect("JSON");
    gateway
        .put_consent(konexio, &body)
        .await
        .expect("consent stored");
    let send = |referral_id: &str| {
        gateway.submit(
            konexio,
            Submission {
                format: "passerelle-v2".to_owned(),
                body: serde_json::to_vec(&referral(referral_id, &record_id)).expect("JSON"),
                recipient: None,
            },
        )
    };
    send(&new_id())
        .await
        .expect("accepted while consent is given");

    let other_process = Store::open(&gateway.config().store)
        .await
        .expect("a second store on the same database");
    other_process
        .append_event(
            RecordId::parse(&record_id).expect("record id"),
            ConsentEvent {
                kind: ConsentEventKind::Withdrawn,
                at: Utc::now(),
                recorded_by: konexio.party.siret.clone(),
            },
        )
        .await
        .expect("withdrawal recorded");
    other_process.close().await.expect("closed");

    let refused = new_id();
    let error = send(&refused)
        .await
        .expect_err("refused once consent is withdrawn");
    assert!(
        matches!(&error, Error::Refused(refusal) if refusal.reason == RefusalReason::ConsentWithdrawn),
        "{error:?}"
    );
    assert!(
        gateway
            .store()
            .referral(refused)
            .await
            .expect("read")
            .is_none()
    );
}
