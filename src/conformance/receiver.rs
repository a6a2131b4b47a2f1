//! `passerelle conformance receiver`: the runner plays the gateway against an
//! operator's receiving endpoint.
//!
//! # The protocol
//! The operator's endpoint (`--target URL`) takes Standard Webhooks POSTs, as
//! `docs/delivery.md` ("For receivers") specifies them. For the run it is
//! configured with:
//! - the Standard Webhooks secret the runner signs with (`--secret
//!   whsec_...`, or the environment variable `PASSERELLE_CONFORMANCE_SECRET`);
//! - a gateway base URL, `http://{gateway_listen}` (`--gateway-listen`,
//!   default `127.0.0.1:9798`), where it posts its status events back. The
//!   runner serves that part of the gateway API itself:
//!   `POST /v1/referrals/{id}/events` with any `Authorization: Bearer` key
//!   (none is recorded as a failure), an `application/json` (or `+json`)
//!   body, validated as `passerelle.status.v1` (`schemas/status/v1.json`)
//!   and recorded. It answers as the gateway does: 201 for a new event, 200
//!   for the same `event_id` and body again, and problem documents (401, 415,
//!   400, 422, 404 for a referral the runner never sent).
//!
//! The runner then sends, each message about a fresh referral id, with the
//! headers the gateway sends (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, `content-type: application/json`,
//! `passerelle-message-kind`, `passerelle-referral-id`, `passerelle-attempt`):
//!
//! | case | requirement | message | expected |
//! |---|---|---|---|
//! | `signed-referral-acknowledged` | RECEIVER-01 | a well-signed canonical v2 referral | 2xx |
//! | `received-event-posted` | RECEIVER-02 | (the same referral) | a valid `STATUS_RECEIVED` status/v1 event about it, posted back within `--wait` |
//! | `bad-signature-refused` | RECEIVER-03 | a referral signed with another secret | 4xx, and no status event about it |
//! | `missing-signature-refused` | RECEIVER-04 | a referral without `webhook-timestamp` and `webhook-signature` | 4xx, and no status event about it |
//! | `stale-timestamp-refused` | RECEIVER-05 | a referral signed correctly, timestamped 10 minutes ago | 4xx, and no status event about it |
//! | `duplicate-processed-once` | RECEIVER-06 | one referral sent twice, same `webhook-id` and body (attempts 1 and 2) | 2xx both times (409 accepted the second time, as the gateway counts it delivered), exactly one status event (distinct `event_id`) |
//! | `status-event-acknowledged` | RECEIVER-07 | a `status_event` message (`STATUS_WITHDRAWN` about the first referral) | 2xx |
//!
//! Timing: the referrals are sent first; the runner then waits until the
//! expected status events have come (at most `--wait` after each message was
//! acknowledged), then a settle time (a fifth of the wait, between 0.5 and
//! 2 s) so that an event that must not come has had its chance; only then is
//! the status event message sent, and every case judged. A refused message
//! is thus watched at least as long as a good one took to be reported back,
//! plus the settle time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::mask::{mask_body, mask_headers};
use super::{CaseResult, Exchange, Level, Outcome, Requirement, RunReport};
use crate::delivery::webhook::{ATTEMPT_HEADER, KIND_HEADER, REFERRAL_HEADER, signature};
use crate::error::Error;
use crate::validate::{Limits, SchemaName, parse_json, schemas};

/// Where the runner serves the gateway API by default.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:9798";
/// How long a status event may take to come back, by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// How old the stale message's timestamp is (Standard Webhooks tolerates 5 minutes).
pub const STALE_BY_SECONDS: i64 = 600;
/// How long the receiver may take to answer a message (the gateway's default timeout).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A well-signed referral is acknowledged with 2xx.
pub const ACKNOWLEDGES: &str = "RECEIVER-01";
/// A `STATUS_RECEIVED` event comes back for a referral taken.
pub const POSTS_RECEIVED: &str = "RECEIVER-02";
/// A bad signature is refused with 4xx, and the message not processed.
pub const REFUSES_BAD_SIGNATURE: &str = "RECEIVER-03";
/// A message without signature headers is refused with 4xx.
pub const REFUSES_UNSIGNED: &str = "RECEIVER-04";
/// A timestamp beyond the tolerance is refused with 4xx.
pub const REFUSES_STALE: &str = "RECEIVER-05";
/// A duplicate `webhook-id` is acknowledged and processed once.
pub const DEDUPLICATES: &str = "RECEIVER-06";
/// A `status_event` message is acknowledged with 2xx.
pub const ACKNOWLEDGES_STATUS_EVENT: &str = "RECEIVER-07";

/// The canonical v2 referral every message is built from (synthetic people).
const SAMPLE_REFERRAL: &str = include_str!("../../samples/referral-v2.json");

/// What `conformance receiver` was asked.
#[derive(Clone)]
pub struct ReceiverOptions {
    /// The receiving endpoint's URL.
    pub target: String,
    /// The Standard Webhooks key the endpoint verifies with.
    pub secret: Vec<u8>,
    /// Where the runner serves the gateway API the endpoint posts status events to.
    pub gateway_listen: SocketAddr,
    /// How long a status event may take to come back.
    pub wait: Duration,
    /// A PEM file of the CA that signed the endpoint's certificate.
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for ReceiverOptions {
    // The secret stays out of every log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverOptions")
            .field("target", &self.target)
            .field("gateway_listen", &self.gateway_listen)
            .field("wait", &self.wait)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// One check of the run, as the table at the top of this module lists them.
struct Check {
    id: &'static str,
    title: &'static str,
    requirement: &'static str,
    level: Level,
}

static CHECKS: [Check; 7] = [
    Check {
        id: "signed-referral-acknowledged",
        title: "A well-signed referral is acknowledged with 2xx",
        requirement: ACKNOWLEDGES,
        level: Level::Must,
    },
    Check {
        id: "received-event-posted",
        title: "A valid STATUS_RECEIVED event about the referral is posted back within the wait",
        requirement: POSTS_RECEIVED,
        // docs/api.md: the recipient *may* post STATUS_RECEIVED.
        level: Level::Should,
    },
    Check {
        id: "bad-signature-refused",
        title: "A referral signed with another secret is refused with 4xx and not processed",
        requirement: REFUSES_BAD_SIGNATURE,
        level: Level::Must,
    },
    Check {
        id: "missing-signature-refused",
        title: "A referral without signature headers is refused with 4xx and not processed",
        requirement: REFUSES_UNSIGNED,
        level: Level::Must,
    },
    Check {
        id: "stale-timestamp-refused",
        title: "A referral timestamped 10 minutes ago is refused with 4xx and not processed",
        requirement: REFUSES_STALE,
        level: Level::Must,
    },
    Check {
        id: "duplicate-processed-once",
        title: "A message delivered twice is acknowledged both times and yields one status event",
        requirement: DEDUPLICATES,
        level: Level::Must,
    },
    Check {
        id: "status-event-acknowledged",
        title: "A status_event message is acknowledged with 2xx",
        requirement: ACKNOWLEDGES_STATUS_EVENT,
        level: Level::Must,
    },
];

/// Plays the gateway against the endpoint and reports every check. An
/// error means the run could not start (a bad URL, the gateway address
/// taken ...); a non-conforming endpoint is a report whose
/// [`RunReport::conforms`] is false. The report quotes no requirement text:
/// see [`quote_requirements`].
pub async fn run(options: ReceiverOptions) -> Result<RunReport, String> {
    reqwest::Url::parse(&options.target)
        .map_err(|error| format!("--target {}: not a URL ({error})", options.target))?;
    let sample: Value = serde_json::from_str(SAMPLE_REFERRAL)
        .map_err(|error| format!("the embedded sample referral is not JSON: {error}"))?;
    let events = EventSink::start(options.gateway_listen).await?;
    let client = client(&options)?;
    let started_at = Utc::now();
    let clock = Instant::now();
    let runner = Runner {
        options,
        client,
        events,
        sample,
    };
    let cases = runner.play().await;
    Ok(RunReport {
        mode: "receiver".to_owned(),
        suite: String::new(),
        target: runner.options.target.clone(),
        started_at: started_at.to_rfc3339(),
        duration_ms: millis(clock.elapsed()),
        requirements: Vec::new(),
        cases,
    })
}

/// Puts the suite's `RECEIVER-` requirements in the report, and gives each
/// case the level its requirement has there (the run's own levels
/// otherwise).
pub fn quote_requirements(report: &mut RunReport, requirements: &[Requirement]) {
    report.requirements = requirements
        .iter()
        .filter(|requirement| requirement.id.starts_with("RECEIVER-"))
        .cloned()
        .collect();
    for case in &mut report.cases {
        if let Some(requirement) = report
            .requirements
            .iter()
            .find(|requirement| case.requirements.contains(&requirement.id))
        {
            case.level = requirement.level;
        }
    }
}

fn client(options: &ReceiverOptions) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .connect_timeout(ANSWER_TIMEOUT)
        // As the gateway: a redirect is not an acknowledgement.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "passerelle-conformance/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca)
            .map_err(|error| format!("{}: cannot be read: {error}", ca.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|error| format!("{}: not a PEM certificate: {error}", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))
}

/// How a message is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// With the endpoint's secret, now.
    Good,
    /// With another secret.
    OtherSecret,
    /// Without `webhook-timestamp` and `webhook-signature`.
    Unsigned,
    /// With the endpoint's secret, [`STALE_BY_SECONDS`] ago.
    Stale,
}

/// A message to send.
struct Message {
    label: &'static str,
    kind: &'static str,
    referral: String,
    webhook_id: String,
    attempt: u32,
    body: Vec<u8>,
    signing: Signing,
}

impl Message {
    /// The next attempt of the same message: same `webhook-id`, same body.
    fn again(&self, label: &'static str) -> Self {
        Self {
            label,
            kind: self.kind,
            referral: self.referral.clone(),
            webhook_id: self.webhook_id.clone(),
            attempt: self.attempt + 1,
            body: self.body.clone(),
            signing: self.signing,
        }
    }
}

/// What came of sending a message.
struct Sent {
    /// The answer's status, or why none came.
    status: Result<u16, String>,
    /// When it was sent.
    started: Instant,
    /// When the answer came.
    at: Instant,
    exchange: Exchange,
}

struct Runner {
    options: ReceiverOptions,
    client: reqwest::Client,
    events: EventSink,
    sample: Value,
}

impl Runner {
    async fn play(&self) -> Vec<CaseResult> {
        let acknowledged = fresh_id();
        let bad_signature = fresh_id();
        let unsigned = fresh_id();
        let stale = fresh_id();
        let duplicated = fresh_id();
        for referral in [
            &acknowledged,
            &bad_signature,
            &unsigned,
            &stale,
            &duplicated,
        ] {
            self.events.expect(referral);
        }

        let first = self
            .send(self.referral("a well-signed referral", &acknowledged, Signing::Good))
            .await;
        let bad = self
            .send(self.referral(
                "a referral signed with another secret",
                &bad_signature,
                Signing::OtherSecret,
            ))
            .await;
        let missing = self
            .send(self.referral(
                "a referral without signature headers",
                &unsigned,
                Signing::Unsigned,
            ))
            .await;
        let old = self
            .send(self.referral(
                "a referral timestamped 10 minutes ago",
                &stale,
                Signing::Stale,
            ))
            .await;
        let original = self.referral("a referral (attempt 1)", &duplicated, Signing::Good);
        let again = original.again("the same message again (attempt 2)");
        let duplicate_first = self.send(original).await;
        let duplicate_second = self.send(again).await;

        // Wait for what must come, then the settle time for what must not.
        let deadline = |sent: &Sent| sent.at + self.options.wait;
        let last = deadline(&first).max(deadline(&duplicate_second));
        while Instant::now() < last {
            let received =
                self.events.about(&acknowledged).iter().any(|event| {
                    event.refusal.is_none() && event.status() == Some("STATUS_RECEIVED")
                });
            let duplicate = !self.events.about(&duplicated).is_empty();
            if received && duplicate {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(settle(self.options.wait)).await;

        let status_event = self
            .send(Message {
                label: "a status_event message",
                kind: "status_event",
                referral: acknowledged.clone(),
                webhook_id: fresh_id(),
                attempt: 1,
                body: withdrawal(&acknowledged, &self.sample),
                signing: Signing::Good,
            })
            .await;

        let judged = Instant::now();
        let observed = |sent: &Sent| judged.saturating_duration_since(sent.started);
        let answered = |sent: &Sent| sent.at.saturating_duration_since(sent.started);
        let mut cases = Vec::new();
        let gateway = self.events.address;
        let with_events = |mut exchanges: Vec<Exchange>, referral: &str| {
            exchanges.extend(
                self.events
                    .about(referral)
                    .iter()
                    .map(|event| event.exchange(gateway)),
            );
            exchanges
        };

        // 1. Acknowledged.
        let mut failures = Vec::new();
        acknowledged_2xx(&first, "the well-signed referral", &mut failures);
        cases.push(case(
            &CHECKS[0],
            &first,
            failures,
            vec![first.exchange.clone()],
            answered(&first),
        ));

        // 2. STATUS_RECEIVED posted back.
        let failures = self.received_posted(&acknowledged, &first);
        let came = self
            .events
            .about(&acknowledged)
            .iter()
            .find(|event| event.refusal.is_none() && event.status() == Some("STATUS_RECEIVED"))
            .map_or(judged, |event| event.at);
        cases.push(case(
            &CHECKS[1],
            &first,
            failures,
            with_events(Vec::new(), &acknowledged),
            came.saturating_duration_since(first.at),
        ));

        // 3, 4, 5. Refused and not processed.
        for (check, sent, referral, what) in [
            (
                &CHECKS[2],
                &bad,
                &bad_signature,
                "signed with another secret",
            ),
            (&CHECKS[3], &missing, &unsigned, "without signature headers"),
            (&CHECKS[4], &old, &stale, "timestamped 10 minutes ago"),
        ] {
            let mut failures = Vec::new();
            refused_4xx(sent, &format!("a referral {what}"), &mut failures);
            let posted = self.events.about(referral);
            if !posted.is_empty() {
                failures.push(format!(
                    "{} status event(s) about the referral {what} were posted back: \
                     a refused message must not be processed",
                    posted.len()
                ));
            }
            cases.push(case(
                check,
                sent,
                failures,
                with_events(vec![sent.exchange.clone()], referral),
                observed(sent),
            ));
        }

        // 6. Deduplicated.
        let mut failures = Vec::new();
        acknowledged_2xx(&duplicate_first, "the first delivery", &mut failures);
        match duplicate_second.status {
            Ok(200..=299 | 409) => {}
            Ok(status) => failures.push(format!(
                "the second delivery of the same webhook-id was answered {status}: a duplicate \
                 is acknowledged with 2xx (or 409, which the gateway also counts delivered); the \
                 gateway would {}",
                consequence(status)
            )),
            Err(_) => acknowledged_2xx(&duplicate_second, "the second delivery", &mut failures),
        }
        let posted = self.events.about(&duplicated);
        let mut event_ids: Vec<String> = posted.iter().map(PostedEvent::identity).collect();
        event_ids.sort_unstable();
        event_ids.dedup();
        match event_ids.len() {
            1 => {}
            0 => failures.push(format!(
                "no status event about the referral was posted back within {} s: it cannot be \
                 seen whether the duplicate was processed once",
                self.options.wait.as_secs_f64()
            )),
            count => failures.push(format!(
                "{count} distinct status events about the referral were posted back for one \
                 message delivered twice: the duplicate webhook-id was processed again"
            )),
        }
        cases.push(case(
            &CHECKS[5],
            &duplicate_first,
            failures,
            with_events(
                vec![
                    duplicate_first.exchange.clone(),
                    duplicate_second.exchange.clone(),
                ],
                &duplicated,
            ),
            observed(&duplicate_first),
        ));

        // 7. A status event acknowledged.
        let mut failures = Vec::new();
        acknowledged_2xx(&status_event, "the status_event message", &mut failures);
        cases.push(case(
            &CHECKS[6],
            &status_event,
            failures,
            vec![status_event.exchange.clone()],
            answered(&status_event),
        ));
        cases
    }

    /// The failures of check 2: a valid `STATUS_RECEIVED` event about
    /// `referral`, within the wait of its acknowledgement.
    fn received_posted(&self, referral: &str, sent: &Sent) -> Vec<String> {
        let wait = self.options.wait.as_secs_f64();
        let posted = self.events.about(referral);
        let mut failures = Vec::new();
        for event in &posted {
            if let Some(refusal) = &event.refusal {
                failures.push(format!(
                    "a status event about the referral was refused ({}): {refusal}",
                    event.status_code
                ));
            }
        }
        let received: Vec<&PostedEvent> = posted
            .iter()
            .filter(|event| event.refusal.is_none() && event.status() == Some("STATUS_RECEIVED"))
            .collect();
        match received.first() {
            Some(event) if event.at > sent.at + self.options.wait => failures.push(format!(
                "the STATUS_RECEIVED event came {:.1} s after the referral was acknowledged, \
                 over the wait of {wait} s",
                event.at.duration_since(sent.at).as_secs_f64()
            )),
            Some(_) => {}
            None if posted.is_empty() => {
                let mut failure = format!(
                    "no status event about the referral was posted back to http://{}/v1/referrals/{referral}/events \
                     within {wait} s",
                    self.events.address
                );
                let stray = self.events.stray();
                if !stray.is_empty() {
                    failure.push_str(&format!(
                        "; requests came to other paths: {}",
                        stray.join(", ")
                    ));
                }
                failures.push(failure);
            }
            None => {
                let statuses: Vec<&str> = posted
                    .iter()
                    .filter(|event| event.refusal.is_none())
                    .filter_map(PostedEvent::status)
                    .collect();
                failures.push(format!(
                    "no valid STATUS_RECEIVED event about the referral was posted back (valid \
                     events: {})",
                    if statuses.is_empty() {
                        "none".to_owned()
                    } else {
                        statuses.join(", ")
                    }
                ));
            }
        }
        failures
    }

    /// A referral message about `referral`: the sample with that id, created now.
    fn referral(&self, label: &'static str, referral: &str, signing: Signing) -> Message {
        let mut document = self.sample.clone();
        document["referral_id"] = Value::from(referral);
        document["created_at"] = Value::from(now());
        Message {
            label,
            kind: "referral",
            referral: referral.to_owned(),
            webhook_id: fresh_id(),
            attempt: 1,
            body: serde_json::to_vec(&document).unwrap_or_default(),
            signing,
        }
    }

    async fn send(&self, message: Message) -> Sent {
        let now = Utc::now().timestamp();
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), message.webhook_id.clone()),
        ];
        let signed = |secret: &[u8], timestamp: i64| {
            [
                ("webhook-timestamp".to_owned(), timestamp.to_string()),
                (
                    "webhook-signature".to_owned(),
                    signature(secret, &message.webhook_id, timestamp, &message.body),
                ),
            ]
        };
        match message.signing {
            Signing::Good => headers.extend(signed(&self.options.secret, now)),
            Signing::OtherSecret => {
                let other: [u8; 32] = rand::random();
                headers.extend(signed(&other, now));
            }
            Signing::Stale => headers.extend(signed(&self.options.secret, now - STALE_BY_SECONDS)),
            Signing::Unsigned => {}
        }
        headers.extend([
            (KIND_HEADER.to_owned(), message.kind.to_owned()),
            (REFERRAL_HEADER.to_owned(), message.referral.clone()),
            (ATTEMPT_HEADER.to_owned(), message.attempt.to_string()),
        ]);
        let mut request = self.client.post(&self.options.target);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let mut exchange = Exchange {
            label: message.label.to_owned(),
            method: "POST".to_owned(),
            url: self.options.target.clone(),
            request_headers: mask_headers(&headers),
            request_body: mask_body(Some("application/json"), &message.body),
            status: None,
            response_headers: Vec::new(),
            response_body: String::new(),
            curl: None,
        };
        let started = Instant::now();
        let status = match request.body(message.body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = header_pairs(response.headers());
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .bytes()
                    .await
                    .map(|body| body.to_vec())
                    .unwrap_or_default();
                exchange.status = Some(status);
                exchange.response_headers = mask_headers(&headers);
                exchange.response_body = mask_body(content_type.as_deref(), &body);
                Ok(status)
            }
            Err(error) => Err(format!(
                "no answer from {}: {}",
                self.options.target,
                error_chain(&error)
            )),
        };
        Sent {
            status,
            started,
            at: Instant::now(),
            exchange,
        }
    }
}

/// How long to watch, once what must come has come, for what must not: a
/// fifth of the wait, between half a second and 2 seconds.
fn settle(wait: Duration) -> Duration {
    (wait / 5).clamp(Duration::from_millis(500), Duration::from_secs(2))
}

fn acknowledged_2xx(sent: &Sent, what: &str, failures: &mut Vec<String>) {
    match &sent.status {
        Ok(200..=299) => {}
        Ok(status) => failures.push(format!(
            "{what} was answered {status}, not 2xx: the gateway would {}",
            consequence(*status)
        )),
        Err(error) => failures.push(format!("{what}: {error}")),
    }
}

fn refused_4xx(sent: &Sent, what: &str, failures: &mut Vec<String>) {
    match &sent.status {
        Ok(400..=499) => {}
        Ok(status @ 200..=299) => failures.push(format!(
            "{what} was answered {status}: it was taken, where it must be refused with 4xx \
             (Standard Webhooks: verify the signature and the timestamp before anything else)"
        )),
        Ok(status) => failures.push(format!(
            "{what} was answered {status}, not 4xx: the gateway would {}",
            consequence(*status)
        )),
        Err(error) => failures.push(format!("{what}: {error}")),
    }
}

/// What the gateway does with an answer (docs/delivery.md).
fn consequence(status: u16) -> &'static str {
    match status {
        200..=299 | 409 => "count the message delivered",
        410 => "dead-letter the message and disable the destination",
        408 | 425 | 429 | 500..=599 => "try the message again later",
        300..=399 => "dead-letter the message (redirects are not followed)",
        _ => "dead-letter the message",
    }
}

fn case(
    check: &Check,
    sent: &Sent,
    failures: Vec<String>,
    exchanges: Vec<Exchange>,
    duration: Duration,
) -> CaseResult {
    let outcome = match &sent.status {
        // The endpoint did not answer the case's message: it did not run to its end.
        Err(message) => Outcome::Error {
            message: message.clone(),
        },
        Ok(_) if failures.is_empty() => Outcome::Passed,
        Ok(_) => Outcome::Failed { failures },
    };
    CaseResult {
        id: check.id.to_owned(),
        title: check.title.to_owned(),
        level: check.level,
        topic: "receiver".to_owned(),
        requirements: vec![check.requirement.to_owned()],
        outcome,
        duration_ms: millis(duration),
        exchanges,
    }
}

/// The status event the gateway pushes to a recipient when the person
/// withdraws their consent after delivery (GDPR Art. 19).
fn withdrawal(referral: &str, sample: &Value) -> Vec<u8> {
    let author = sample
        .pointer("/sender/organisation/siret")
        .cloned()
        .unwrap_or_else(|| Value::from("81234567800013"));
    let event = json!({
        "event_id": fresh_id(),
        "schema_version": SchemaName::StatusV1.schema_version(),
        "referral_id": referral,
        "status": "STATUS_WITHDRAWN",
        "occurred_at": now(),
        "author_siret": author,
    });
    serde_json::to_vec(&event).unwrap_or_default()
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

/// One status event the endpoint posted to the emulated gateway.
#[derive(Debug, Clone)]
struct PostedEvent {
    /// The referral id of the path.
    referral: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body, when it is a valid status event.
    event: Option<Value>,
    /// Why the gateway refuses it, if it does.
    refusal: Option<String>,
    /// The status it was answered.
    status_code: u16,
    answer: Vec<u8>,
    at: Instant,
}

impl PostedEvent {
    /// The event's `status`, when the body is a valid event.
    fn status(&self) -> Option<&str> {
        self.event.as_ref()?.get("status")?.as_str()
    }

    /// The event's `event_id`, or, for a body without one, something that
    /// tells this post apart from every other.
    fn identity(&self) -> String {
        self.event
            .as_ref()
            .and_then(|event| event.get("event_id"))
            .and_then(Value::as_str)
            .map_or_else(
                || format!("unreadable post at {:?}", self.at),
                str::to_owned,
            )
    }

    fn exchange(&self, gateway: SocketAddr) -> Exchange {
        let content_type = self
            .headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map(|(_, value)| value.as_str());
        let answer_type = if self.status_code < 300 {
            "application/json"
        } else {
            "application/problem+json"
        };
        Exchange {
            label: "status event posted back by the receiver".to_owned(),
            method: "POST".to_owned(),
            url: format!("http://{gateway}/v1/referrals/{}/events", self.referral),
            request_headers: mask_headers(&self.headers),
            request_body: mask_body(content_type, &self.body),
            status: Some(self.status_code),
            response_headers: vec![("content-type".to_owned(), answer_type.to_owned())],
            response_body: mask_body(Some(answer_type), &self.answer),
            curl: None,
        }
    }
}

#[derive(Debug, Default)]
struct Posts {
    /// Referral ids the runner sent.
    expected: Vec<String>,
    events: Vec<PostedEvent>,
    /// `METHOD /path` of requests to anything but the events endpoint.
    stray: Vec<String>,
}

/// The emulated gateway: `POST /v1/referrals/{id}/events`, recorded. It
/// stops when dropped.
#[derive(Debug)]
struct EventSink {
    address: SocketAddr,
    posts: Arc<Mutex<Posts>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl EventSink {
    async fn start(listen: SocketAddr) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| format!("the emulated gateway cannot listen on {listen}: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("the emulated gateway has no address: {error}"))?;
        let posts = Arc::new(Mutex::new(Posts::default()));
        let app = Router::new()
            .route("/v1/referrals/{id}/events", post(post_event))
            .fallback(stray)
            .with_state(Arc::clone(&posts));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(error = %error, "the emulated gateway stopped");
            }
        });
        Ok(Self {
            address,
            posts,
            server,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Posts> {
        lock(&self.posts)
    }

    /// Makes `referral` known, as if the gateway had stored it.
    fn expect(&self, referral: &str) {
        self.lock().expected.push(referral.to_owned());
    }

    /// The events posted about `referral` (by the path or by the body), oldest first.
    fn about(&self, referral: &str) -> Vec<PostedEvent> {
        self.lock()
            .events
            .iter()
            .filter(|event| {
                event.referral == referral
                    || event
                        .event
                        .as_ref()
                        .and_then(|body| body.get("referral_id"))
                        .and_then(Value::as_str)
                        == Some(referral)
            })
            .cloned()
            .collect()
    }

    fn stray(&self) -> Vec<String> {
        self.lock().stray.clone()
    }
}

fn lock(posts: &Mutex<Posts>) -> std::sync::MutexGuard<'_, Posts> {
    posts.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn stray(State(posts): State<Arc<Mutex<Posts>>>, method: Method, uri: Uri) -> StatusCode {
    lock(&posts).stray.push(format!("{method} {}", uri.path()));
    StatusCode::NOT_FOUND
}

async fn post_event(
    State(posts): State<Arc<Mutex<Posts>>>,
    Path(referral): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inspected = inspect(&referral, &headers, &body);
    let mut posts = lock(&posts);
    let refusal = match inspected {
        Err(refusal) => Err(refusal),
        Ok(_) if !posts.expected.contains(&referral) => Err(Refusal {
            status: StatusCode::NOT_FOUND,
            slug: "not-found",
            detail: "no referral with this id was sent to the receiver".to_owned(),
        }),
        Ok(event) => {
            let event_id = event
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let earlier = posts
                .events
                .iter()
                .find(|earlier| earlier.refusal.is_none() && earlier.identity() == event_id);
            match earlier {
                Some(earlier) if earlier.event.as_ref() != Some(&event) => Err(Refusal {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    slug: "idempotency-key-reused",
                    detail: "an earlier event has this event_id and other content".to_owned(),
                }),
                replayed => Ok((event, replayed.is_some())),
            }
        }
    };
    let (status, answer, event, refusal) = match refusal {
        Ok((event, replayed)) => {
            let answer = json!({
                "event_id": event.get("event_id"),
                "referral_id": referral,
                "replayed": replayed,
                "forwarded": true,
            });
            let status = if replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, answer, Some(event), None)
        }
        Err(refusal) => (
            refusal.status,
            refusal.problem(),
            None,
            Some(format!("{}: {}", refusal.slug, refusal.detail)),
        ),
    };
    let answer_bytes = serde_json::to_vec(&answer).unwrap_or_default();
    posts.events.push(PostedEvent {
        referral,
        headers: header_pairs(&headers),
        body: body.to_vec(),
        event,
        refusal,
        status_code: status.as_u16(),
        answer: answer_bytes.clone(),
        at: Instant::now(),
    });
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut response =
        (status, [(header::CONTENT_TYPE, content_type)], answer_bytes).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"passerelle\""),
        );
    }
    response
}

/// Why the emulated gateway refuses a posted event.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    slug: &'static str,
    detail: String,
}

impl Refusal {
    fn problem(&self) -> Value {
        json!({
            "type": format!("https://passerelle.eu/problems/{}", self.slug),
            "title": self.slug.replace('-', " "),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

/// Checks a posted event as the gateway does, before it looks its referral
/// up: credentials, media type, JSON, the status/v1 schema, and the path's
/// referral id against the body's. The event when it passes.
fn inspect(referral: &str, headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|key| !key.trim().is_empty());
    if !bearer {
        return Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            slug: "unauthenticated",
            detail: "posted without an Authorization: Bearer key".to_owned(),
        });
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if !media.is_some_and(|media| media == "application/json" || media.ends_with("+json")) {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            slug: "unsupported-format",
            detail: "a status event is posted as Content-Type application/json".to_owned(),
        });
    }
    let document = parse_json(body, &Limits::default()).map_err(|error| Refusal {
        status: StatusCode::BAD_REQUEST,
        slug: "malformed",
        detail: error.to_string(),
    })?;
    schemas::schema(SchemaName::StatusV1)
        .validate(&document)
        .map_err(|error| Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            slug: "validation",
            detail: describe(error),
        })?;
    if document.get("referral_id").and_then(Value::as_str) != Some(referral) {
        return Err(Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            slug: "validation",
            detail: "/referral_id (referral-id-mismatch): the event is about another referral \
                     than the one in the URL"
                .to_owned(),
        });
    }
    Ok(document)
}

/// A validation error as pointers and rules (never the values).
fn describe(error: Error) -> String {
    match error {
        Error::Invalid(violations) => violations
            .iter()
            .map(|violation| {
                let pointer = if violation.pointer.is_empty() {
                    "the document"
                } else {
                    violation.pointer.as_str()
                };
                format!("{pointer} ({}): {}", violation.rule, violation.detail)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, header::HeaderValue::from_static(value));
        }
        map
    }

    fn event(referral: &str) -> Value {
        json!({
            "event_id": fresh_id(),
            "schema_version": "passerelle.status.v1",
            "referral_id": referral,
            "status": "STATUS_RECEIVED",
            "occurred_at": now(),
            "author_siret": "13000548100002",
        })
    }

    const JSON_WITH_KEY: &[(&str, &str)] = &[
        ("authorization", "Bearer any-key"),
        ("content-type", "application/json; charset=utf-8"),
    ];

    #[test]
    fn the_messages_sent_are_valid_documents() {
        let sample: Value = serde_json::from_str(SAMPLE_REFERRAL).expect("the sample");
        let referral = fresh_id();
        let mut document = sample.clone();
        document["referral_id"] = Value::from(referral.as_str());
        document["created_at"] = Value::from(now());
        schemas::schema(SchemaName::ReferralV2)
            .validate(&document)
            .expect("a valid canonical v2 referral");
        let withdrawal: Value =
            serde_json::from_slice(&withdrawal(&referral, &sample)).expect("JSON");
        schemas::schema(SchemaName::StatusV1)
            .validate(&withdrawal)
            .expect("a valid status/v1 event");
        assert_eq!(withdrawal["referral_id"], Value::from(referral));
    }

    #[test]
    fn a_valid_event_passes_with_any_bearer_key() {
        let referral = fresh_id();
        let body = serde_json::to_vec(&event(&referral)).expect("JSON");
        let checked = inspect(&referral, &headers(JSON_WITH_KEY), &body).expect("valid");
        assert_eq!(checked["status"], "STATUS_RECEIVED");
    }

    #[test]
    fn events_are_refused_as_the_gateway_refuses_them() {
        let referral = fresh_id();
        let body = serde_json::to_vec(&event(&referral)).expect("JSON");
        let refused = |headers: &HeaderMap, path: &str, body: &[u8]| {
            inspect(path, headers, body).expect_err("refused")
        };

        let no_key = refused(
            &headers(&[("content-type", "application/json")]),
            &referral,
            &body,
        );
        assert_eq!(
            (no_key.status.as_u16(), no_key.slug),
            (401, "unauthenticated")
        );
        let empty_key = refused(
            &headers(&[
                ("authorization", "Bearer "),
                ("content-type", "application/json"),
            ]),
            &referral,
            &body,
        );
        assert_eq!(empty_key.status.as_u16(), 401);

        let text = refused(
            &headers(&[
                ("authorization", "Bearer k"),
                ("content-type", "text/plain"),
            ]),
            &referral,
            &body,
        );
        assert_eq!(text.status.as_u16(), 415);

        let malformed = refused(&headers(JSON_WITH_KEY), &referral, b"{\"event_id\":");
        assert_eq!(
            (malformed.status.as_u16(), malformed.slug),
            (400, "malformed")
        );

        let mut invalid = event(&referral);
        invalid["status"] = Value::from("RECEIVED");
        invalid["nickname"] = Value::from("Camille Exemple");
        let invalid = refused(
            &headers(JSON_WITH_KEY),
            &referral,
            &serde_json::to_vec(&invalid).expect("JSON"),
        );
        assert_eq!((invalid.status.as_u16(), invalid.slug), (422, "validation"));
        assert!(
            invalid.detail.contains("/status (enum)"),
            "{}",
            invalid.detail
        );
        assert!(
            invalid.detail.contains("/nickname (unknown-field)"),
            "{}",
            invalid.detail
        );
        assert!(!invalid.detail.contains("Camille"), "{}", invalid.detail);

        let elsewhere = refused(&headers(JSON_WITH_KEY), &fresh_id(), &body);
        assert!(
            elsewhere.detail.contains("referral-id-mismatch"),
            "{}",
            elsewhere.detail
        );
    }

    #[test]
    fn settle_is_a_fifth_of_the_wait_within_bounds() {
        assert_eq!(settle(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(settle(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(settle(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(settle(Duration::from_secs(60)), Duration::from_secs(2));
    }

    #[test]
    fn requirements_quoted_set_the_levels() {
        let mut report = RunReport {
            mode: "receiver".to_owned(),
            suite: String::new(),
            target: "http://127.0.0.1:1/hook".to_owned(),
            started_at: now(),
            duration_ms: 0,
            requirements: Vec::new(),
            cases: vec![CaseResult {
                id: CHECKS[1].id.to_owned(),
                title: CHECKS[1].title.to_owned(),
                level: CHECKS[1].level,
                topic: "receiver".to_owned(),
                requirements: vec![POSTS_RECEIVED.to_owned()],
                outcome: Outcome::Passed,
                duration_ms: 0,
                exchanges: Vec::new(),
            }],
        };
        let requirement = |id: &str, level| Requirement {
            id: id.to_owned(),
            text: "text".to_owned(),
            source: "source".to_owned(),
            level,
        };
        quote_requirements(
            &mut report,
            &[
                requirement("SENDER-01", Level::Must),
                requirement(POSTS_RECEIVED, Level::Must),
            ],
        );
        assert_eq!(report.requirements.len(), 1);
        assert_eq!(report.cases[0].level, Level::Must);
    }
}
