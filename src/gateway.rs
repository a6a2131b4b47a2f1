//! The pipeline behind every endpoint, whatever the transport (HTTP or gRPC):
//! decode → validate → authorise → consent → minimise → enqueue, as
//! `DESIGN.md` draws it. The server modules only authenticate the caller and
//! translate requests and answers; everything a referral goes through is here.
//!
//! Each stage runs in a `tracing` span named after it. Spans and audit entries
//! carry ids, codes and field paths only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{Instrument, info_span};

use crate::audit::{AuditEntry, AuditKind};
use crate::config::{GatewayConfig, Organisation};
use crate::consent::{self, ConsentEvent, ConsentEventKind, ConsentRecord, Purpose, RecordId};
use crate::decision::{
    self, Decision, Forward, Grant, LegalBasis, MinimisationReport, Refusal, RefusalReason,
};
use crate::error::{Error, Violation};
use crate::formats::csv_mapping::{CsvFormat, Mapping};
use crate::formats::{self, Context, Format, FormatOptions};
use crate::model::categories::DataCategory;
use crate::model::ids::{ReferralId, Siret};
use crate::model::lifecycle::{self, Author};
use crate::model::status::{Status, StatusEvent, StatusV1Tag};
use crate::model::{Message, Translated, v2};
use crate::policy::{MessageKind, Policy};
use crate::store::{
    Accepted, ConsentStore, NewReferral, NewStatusEvent, Outgoing, ReferralStore, Stored,
    StoredReferral, Written,
};
use crate::telemetry::Metrics;
use crate::validate::Limits;

/// The store the gateway runs on.
pub use crate::store::Store;

/// Formats a referral may arrive in over the API.
pub const INPUT_FORMATS: &[&str] = &[
    "passerelle-v1",
    "passerelle-v2",
    "passerelle-proto-v1",
    "passerelle-proto-v2",
    "dora",
    "csv",
];

/// The author and audit actor of what the gateway does on its own (expiry).
pub const GATEWAY_ACTOR: &str = "passerelle";

/// The source of the ids derived for an expiry (its event, its messages).
const EXPIRY_SOURCE: &str = "passerelle-expiry";
/// The source under which withdrawal notice ids are derived.
const WITHDRAWAL_SOURCE: &str = "passerelle-consent-withdrawal";

/// How many times a status event is checked against a history that keeps
/// changing under it before the caller is asked to post again.
const LIFECYCLE_ATTEMPTS: u32 = 3;

/// How many times a referral is decided on a consent record that keeps
/// changing before its commit, before the caller is asked to send it again.
const DECISION_ATTEMPTS: u32 = 3;

/// The gateway: configuration, store and metrics, shared by every request.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    store: Arc<Store>,
    metrics: Metrics,
    outbox: Arc<tokio::sync::Notify>,
}

/// A referral submission as it arrives: bytes in a named format.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The input format (one of [`INPUT_FORMATS`]).
    pub format: String,
    /// The document.
    pub body: Vec<u8>,
    /// The recipient, for formats that do not name it (DORA).
    pub recipient: Option<String>,
}

/// A CSV batch as it arrives: the file is read while its rows are decided,
/// never held whole.
pub struct CsvBatch {
    /// The recipient (a CSV export names none).
    pub recipient: Option<String>,
    /// The mapping (a file stem in the mappings folder).
    pub mapping: Option<String>,
    /// The file. Read on a blocking thread; a read error whose inner error is
    /// an [`Error`] (the body's size limit, its deadline) ends the batch with
    /// that error.
    pub input: Box<dyn std::io::Read + Send>,
}

impl std::fmt::Debug for CsvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvBatch")
            .field("recipient", &self.recipient)
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

/// What decodes a submission: an adapter by name, or a CSV mapping (the
/// adapter is then built on the thread that decodes the rows).
enum Source {
    Named(Box<dyn Format + Send + Sync>),
    Mapping(Box<Mapping>),
}

/// The answer to an accepted referral (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SubmitAnswer {
    /// The referral id.
    pub referral_id: String,
    /// Its delivery state (`queued` when just accepted).
    pub state: String,
    /// Whether this answer replays an earlier identical submission (sent as
    /// the `Idempotent-Replayed` header, so the body is the same both times).
    #[serde(skip)]
    pub replayed: bool,
    /// What the decision did.
    pub decision: DecisionReport,
}

/// The decision report of an accepted referral: what left and under what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DecisionReport {
    /// The policy applied.
    pub policy_id: String,
    /// Its version.
    pub policy_version: String,
    /// Field paths removed.
    pub removed: Vec<String>,
    /// Field paths pseudonymised.
    pub pseudonymised: Vec<String>,
    /// Field paths replaced by a derived value.
    pub derived: Vec<String>,
    /// The consent record the data leaves under.
    pub consent_record_id: String,
    /// The GDPR Art. 6 basis.
    pub legal_basis: LegalBasis,
}

/// One row of a CSV batch: its line and its own answer.
#[derive(Debug)]
pub struct RowAnswer {
    /// The 1-based line of the row.
    pub line: Option<u64>,
    /// Accepted, or why not.
    pub result: Result<SubmitAnswer, Error>,
}

/// The caller's part in a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The organisation that sent it: sees it all.
    Sender,
    /// The organisation it is addressed to: sees the minimised copy.
    Recipient,
}

/// What an organisation sees of a referral.
#[derive(Debug, Clone, Serialize)]
pub struct ReferralView {
    /// The referral id.
    pub referral_id: String,
    /// `sender` (the full referral as sent) or `recipient` (the minimised copy).
    pub role: Role,
    /// The delivery state.
    pub state: String,
    /// When the gateway accepted it.
    pub accepted_at: String,
    /// The referral, as the caller may see it.
    pub referral: serde_json::Value,
    /// The decision report (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    /// The status events, oldest first.
    pub events: Vec<serde_json::Value>,
}

/// The answer to a status event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventAnswer {
    /// The event id.
    pub event_id: String,
    /// The referral it is about.
    pub referral_id: String,
    /// Whether it replays an earlier identical event.
    pub replayed: bool,
    /// Whether it is queued for the other party (false when its policy refused it).
    pub forwarded: bool,
}

/// The answer to a stored consent record or event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentAnswer {
    /// The record id.
    pub record_id: String,
    /// Whether the record was already stored identically.
    pub replayed: bool,
    /// The record's state now (`active`, `withdrawn`, ...).
    pub state: &'static str,
}

impl Gateway {
    /// A gateway over an open store.
    pub fn new(config: GatewayConfig, store: Arc<Store>, metrics: Metrics) -> Self {
        if minimisation_skipped_for_tests() {
            tracing::warn!(
                "{FAULT_VARIABLE}=skip-minimisation: referrals are forwarded UNMINIMISED (a test build's fault, for the conformance suite's own tests)"
            );
        }
        Self {
            config,
            store,
            metrics,
            outbox: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes every task waiting for queued messages (the push worker, open
    /// inbox streams), and the next one to wait if none is waiting now.
    fn wake_outbox(&self) {
        self.outbox.notify_waiters();
        self.outbox.notify_one();
    }

    /// Woken each time a message is queued (the outbox worker waits on it).
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.outbox)
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.server.max_body_bytes,
            max_depth: self.config.server.max_json_depth,
        }
    }

    /// Submits one referral document (every format but CSV).
    pub async fn submit(
        &self,
        caller: &Organisation,
        submission: Submission,
    ) -> Result<SubmitAnswer, Error> {
        let format = submission.format.clone();
        if format == "csv" {
            return Err(Error::UnsupportedFormat(
                "csv is a batch format: it answers per row".to_owned(),
            ));
        }
        let (source, context) =
            self.prepare(caller, &format, submission.recipient.as_deref(), None)?;
        let Source::Named(adapter) = source else {
            return Err(Error::Internal(
                "a single document was prepared as a CSV batch".to_owned(),
            ));
        };
        let decoded = info_span!("decode", format = %format).in_scope(|| {
            adapter
                .decode(Box::new(submission.body.as_slice()), &context)?
                .next()
                .ok_or_else(|| Error::invalid("", "empty", "no document in the body"))
        })?;
        self.submit_record(caller, &format, decoded.result).await
    }

    /// Submits a CSV batch: each row is accepted or refused on its own (the
    /// API says so: a batch is not atomic), and its answer is sent to
    /// `answers` in the rows' order as soon as it and the rows before it are
    /// done. Rows are decoded on a blocking thread as the file is read and up
    /// to 128 are submitted at once, without waiting for a whole group to
    /// end, each on a task of its own so that rows are decided on every
    /// worker thread, their commits share fsyncs and the store's writer never
    /// idles; memory holds those rows, not the file nor its decoded rows.
    /// Sending an answer never waits: the reading of the file must not wait
    /// on a client that reads the answer only once it has sent the whole
    /// file. An error of the whole file (its header, its encoding, a read
    /// error of the input such as its size limit) ends the batch with `Err`.
    pub async fn submit_csv(
        self: &Arc<Self>,
        caller: &Organisation,
        batch: CsvBatch,
        answers: tokio::sync::mpsc::UnboundedSender<RowAnswer>,
    ) -> Result<(), Error> {
        const IN_FLIGHT: usize = 128;
        let (source, context) = self.prepare(
            caller,
            "csv",
            batch.recipient.as_deref(),
            batch.mapping.as_deref(),
        )?;
        let Source::Mapping(mapping) = source else {
            return Err(Error::Internal(
                "a CSV batch was prepared without its mapping".to_owned(),
            ));
        };
        let input = batch.input;
        let (rows, mut received) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let span = info_span!("decode", format = "csv");
        let decoding = tokio::task::spawn_blocking(move || {
            span.in_scope(|| -> Result<(), Error> {
                let adapter = CsvFormat::new(*mapping);
                let records = adapter.decode(input, &context)?;
                for record in records {
                    // The input itself failed (too large, too slow): the
                    // file's error, not a row's.
                    let record = match record.result {
                        Err(error @ (Error::TooLarge { .. } | Error::TimedOut(_))) => {
                            return Err(error);
                        }
                        result => (record.line, result),
                    };
                    if rows.blocking_send(record).is_err() {
                        break;
                    }
                }
                Ok(())
            })
        });
        let format: Arc<str> = Arc::from("csv");
        let caller = Arc::new(caller.clone());
        let mut submitted =
            futures_util::stream::poll_fn(move |context| received.poll_recv(context))
                .map(|(line, result)| {
                    let (gateway, caller, format) =
                        (Arc::clone(self), Arc::clone(&caller), Arc::clone(&format));
                    let row = tokio::spawn(async move {
                        gateway.submit_record(&caller, &format, result).await
                    });
                    async move {
                        RowAnswer {
                            line,
                            result: row.await.unwrap_or_else(|_| {
                                Err(Error::Internal("a CSV row's task failed".to_owned()))
                            }),
                        }
                    }
                })
                .buffered(IN_FLIGHT);
        while let Some(answer) = submitted.next().await {
            if answers.send(answer).is_err() {
                // The client went away; the rows submitted so far stand.
                break;
            }
        }
        // Dropping the stream drops the rows' receiver, which stops the
        // decoding thread if it still runs.
        drop(submitted);
        decoding
            .await
            .map_err(|_| Error::Internal("the CSV decoding thread failed".to_owned()))?
    }

    async fn submit_record(
        &self,
        caller: &Organisation,
        format: &str,
        decoded: Result<Translated<Message>, Error>,
    ) -> Result<SubmitAnswer, Error> {
        match decoded {
            Ok(translated) => self.submit_decoded(caller, format, translated.value).await,
            Err(error) => {
                self.metrics.referral_refused("invalid");
                Err(error)
            }
        }
    }

    /// Checks a submission's format, recipient and mapping, and gives what
    /// decodes it and the context to decode it in.
    fn prepare(
        &self,
        caller: &Organisation,
        format: &str,
        recipient: Option<&str>,
        mapping: Option<&str>,
    ) -> Result<(Source, Context), Error> {
        if !INPUT_FORMATS.contains(&format) {
            return Err(Error::UnsupportedFormat(format!(
                "\"{format}\" is not an input format of the API; use one of {}",
                INPUT_FORMATS.join(", ")
            )));
        }
        let recipient = match recipient {
            None => None,
            Some(siret) => Some(self.recipient_by_siret(siret, "recipient")?.party.clone()),
        };
        let context = Context {
            now: Utc::now(),
            sender: Some(caller.party.clone()),
            recipient,
            referral_id: None,
            limits: self.limits(),
        };
        let needs_recipient = matches!(format, "dora" | "csv");
        if needs_recipient && context.recipient.is_none() {
            return Err(Error::invalid(
                "",
                "recipient-required",
                format!(
                    "the {format} format does not name the recipient: give its SIRET as the recipient parameter"
                ),
            ));
        }
        let source = if format == "csv" {
            let name = mapping.ok_or_else(|| {
                Error::invalid(
                    "",
                    "mapping-required",
                    format!(
                        "a CSV batch needs the mapping parameter; known mappings: {}",
                        self.mapping_names()
                    ),
                )
            })?;
            let mapping = self.config.mappings.get(name).ok_or_else(|| {
                Error::invalid(
                    "",
                    "unknown-mapping",
                    format!(
                        "no mapping named \"{name}\"; known mappings: {}",
                        self.mapping_names()
                    ),
                )
            })?;
            Source::Mapping(Box::new(mapping.clone()))
        } else {
            Source::Named(formats::by_name(format, &FormatOptions::default())?)
        };
        Ok((source, context))
    }

    fn mapping_names(&self) -> String {
        let names: Vec<&str> = self.config.mappings.keys().map(String::as_str).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    fn recipient_by_siret(&self, siret: &str, pointer: &str) -> Result<&Organisation, Error> {
        let parsed = Siret::parse(siret)
            .map_err(|error| Error::invalid(pointer, "siret", format!("not a SIRET: {error}")))?;
        self.config.organisations.by_siret(&parsed).ok_or_else(|| {
            Error::invalid(
                pointer,
                "unknown-recipient",
                "no organisation with this SIRET is connected to the gateway",
            )
        })
    }

    async fn submit_decoded(
        &self,
        caller: &Organisation,
        format: &str,
        message: Message,
    ) -> Result<SubmitAnswer, Error> {
        let Message::Referral(referral) = message else {
            return Err(Error::invalid(
                "/schema_version",
                "referral-expected",
                "this endpoint takes referrals; status events go to /v1/referrals/{id}/events",
            ));
        };
        let referral_id = referral.referral_id.to_string();
        let span = info_span!("submit_referral", referral_id = %referral_id, format = %format);
        let result = self
            .submit_referral(caller, format, *referral)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &result {
            Ok(answer) if !answer.replayed => {
                tracing::info!(state = %answer.state, "referral accepted");
                self.metrics.referral_accepted(metric_format(format));
            }
            Ok(_) => tracing::info!("referral replayed: already accepted with the same content"),
            Err(error) => {
                let code = match error {
                    Error::Refused(refusal) => refusal.reason.code(),
                    error => error_code(error),
                };
                tracing::info!(reason = code, "referral refused");
                self.metrics.referral_refused(code);
            }
        });
        result
    }

    async fn submit_referral(
        &self,
        caller: &Organisation,
        format: &str,
        referral: v2::Referral,
    ) -> Result<SubmitAnswer, Error> {
        let referral_id = referral.referral_id.to_string();
        let recipient = info_span!("authorise").in_scope(|| {
            if referral.sender.organisation.siret != caller.party.siret {
                return Err(Error::Forbidden(
                    "the referral names another organisation as its sender; an organisation sends only its own referrals"
                        .to_owned(),
                ));
            }
            self.recipient_by_siret(
                referral.recipient.organisation.siret.as_str(),
                "/recipient/organisation/siret",
            )
        })?;
        // The sender and the recipient are who the configuration says they
        // are: what a referral claims about their kind and name is replaced,
        // so that no recipient trusts a sender's word for it and the policies'
        // rules on the sender's kind and name see the truth.
        let mut referral = referral;
        referral.sender.organisation = as_configured(&caller.party, &referral.sender.organisation);
        referral.recipient.organisation =
            as_configured(&recipient.party, &referral.recipient.organisation);
        let now = Utc::now();
        // The consent record is first taken as this gateway last read it,
        // without a read of the store; the accept's transaction checks that it
        // has not changed since. A refusal is only given on a fresh read, and
        // a record that changed before the commit is read again and the
        // referral decided again.
        let mut fresh = false;
        for _ in 0..DECISION_ATTEMPTS {
            let record = self
                .consent_for(&referral, format, now, fresh)
                .instrument(info_span!("consent"))
                .await?;
            let decided = self.decide(caller, recipient, &referral, record.as_ref(), now);
            let forward = match decided {
                Decision::Refuse(_) if !fresh && record.is_some() => {
                    fresh = true;
                    continue;
                }
                Decision::Refuse(refusal) => {
                    return Err(self
                        .refused(
                            caller,
                            recipient,
                            &referral_id,
                            record.map(|record| record.record_id),
                            refusal,
                        )
                        .await);
                }
                Decision::Forward(forward) => forward,
            };
            let consent_seen = record.map(|record| (record.record_id, record.events.len()));
            match self
                .accept(
                    caller,
                    recipient,
                    format,
                    &referral,
                    forward,
                    consent_seen,
                    now,
                )
                .await?
            {
                Some(answer) => return Ok(answer),
                None => fresh = true,
            }
        }
        Err(Error::Conflict(format!(
            "the consent record of referral {referral_id} changed while it was being decided; send it again"
        )))
    }

    /// Decides whether the referral leaves for `recipient` and minimises it.
    fn decide(
        &self,
        caller: &Organisation,
        recipient: &Organisation,
        referral: &v2::Referral,
        record: Option<&ConsentRecord>,
        now: DateTime<Utc>,
    ) -> Decision {
        let purpose = Purpose::orientation();
        let policy = self.policy_for(recipient, MessageKind::Referral, purpose.as_str());
        info_span!("minimise").in_scope(|| match policy {
            None => Decision::Refuse(Refusal::new(
                RefusalReason::PolicyNotApplicable,
                format!(
                    "no minimisation policy covers recipient {} for purpose {}",
                    recipient.id,
                    purpose.as_str()
                ),
            )),
            Some(policy) => decision::decide(
                referral,
                &caller.party,
                &recipient.party,
                &purpose,
                record,
                policy,
                &self.config.keys,
                now,
            ),
        })
    }

    /// Audits a refusal and gives the error that answers it.
    async fn refused(
        &self,
        caller: &Organisation,
        recipient: &Organisation,
        referral_id: &str,
        record_id: Option<RecordId>,
        refusal: Refusal,
    ) -> Error {
        let mut entry = AuditEntry::new(AuditKind::ReferralRefused)
            .actor(&caller.id)
            .referral(referral_id)
            .recipient(&recipient.id)
            .reason(refusal.reason.code());
        if let Some(record_id) = record_id {
            entry = entry.consent_record(record_id);
        }
        let purpose = Purpose::orientation();
        if let Some(policy) = self.policy_for(recipient, MessageKind::Referral, purpose.as_str()) {
            entry = entry.policy(policy.id(), policy.version());
        }
        match self.store.audit(entry).await {
            Ok(()) => Error::Refused(refusal),
            Err(error) => error,
        }
    }

    /// Stores a referral the decision forwards and queues it: `None` when its
    /// consent record has changed since `consent_seen` was read, and the
    /// referral is to be decided again.
    #[allow(clippy::too_many_arguments)]
    async fn accept(
        &self,
        caller: &Organisation,
        recipient: &Organisation,
        format: &str,
        referral: &v2::Referral,
        forward: Box<Forward>,
        consent_seen: Option<(RecordId, usize)>,
        now: DateTime<Utc>,
    ) -> Result<Option<SubmitAnswer>, Error> {
        let referral_id = referral.referral_id.to_string();
        let report = DecisionReport {
            policy_id: forward.report.policy_id.clone(),
            policy_version: forward.report.policy_version.clone(),
            removed: forward.report.removed.clone(),
            pseudonymised: forward.report.pseudonymised.clone(),
            derived: forward.report.derived.clone(),
            consent_record_id: forward.grant.record_id.clone(),
            legal_basis: forward.grant.basis,
        };
        let accepted = AuditEntry::new(AuditKind::ReferralAccepted)
            .actor(&caller.id)
            .referral(&referral_id)
            .recipient(&recipient.id)
            .consent_record(&report.consent_record_id)
            .minimisation(&forward.report);
        let replayed = AuditEntry::new(AuditKind::ReferralReplayed)
            .actor(&caller.id)
            .referral(&referral_id);
        let referral_json = to_json(referral)?;
        let minimised = if minimisation_skipped_for_tests() {
            referral_json.clone()
        } else {
            to_json(&forward.referral)?
        };
        let new = NewReferral {
            referral_id: referral_id.clone(),
            sender: caller.id.clone(),
            recipient: recipient.id.clone(),
            fingerprint: fingerprint_referral(referral, &referral_json, format)?,
            input_format: format.to_owned(),
            referral: referral_json,
            minimised,
            decision: to_json(&report)?,
            consent_record_id: Some(report.consent_record_id.clone()),
            consent_seen,
            accepted_at: now,
        };
        let stored = self
            .store
            .accept_referral(new, accepted, replayed)
            .instrument(info_span!("enqueue"))
            .await?;
        let (stored, replayed) = match stored {
            Accepted::New(stored) => (stored, false),
            Accepted::Replayed(stored) => (stored, true),
            Accepted::ConsentChanged => return Ok(None),
        };
        self.wake_outbox();

        Ok(Some(SubmitAnswer {
            referral_id,
            state: stored.state,
            replayed,
            decision: if replayed {
                serde_json::from_str(&stored.decision).map_err(|_| {
                    Error::Internal("store: a stored decision report is unreadable".to_owned())
                })?
            } else {
                report
            },
        }))
    }

    /// The consent record a referral leaves under: the one it references, or
    /// for DORA the public-task record standing for its commitment (stored).
    /// Unless `fresh`, a referenced record may be the copy this gateway read
    /// last, without the events another process appended since.
    async fn consent_for(
        &self,
        referral: &v2::Referral,
        format: &str,
        now: DateTime<Utc>,
        fresh: bool,
    ) -> Result<Option<ConsentRecord>, Error> {
        if format == "dora" {
            let record = consent::from_dora_commitment(referral, now);
            let record_id = record.record_id;
            match self.store.put_record(record).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
            return self.store.record(record_id).await;
        }
        let Some(reference) = referral.consent_reference.as_deref() else {
            return Ok(None);
        };
        match RecordId::for_reference(reference) {
            Ok(record_id) if fresh => self.store.record(record_id).await,
            Ok(record_id) => self.store.recent_record(record_id).await,
            Err(_) => Ok(None),
        }
    }

    fn policy_for(
        &self,
        recipient: &Organisation,
        message: MessageKind,
        purpose: &str,
    ) -> Option<&Policy> {
        self.config.policies.iter().find(|policy| {
            policy.message() == message && policy.applies_to(&recipient.party, purpose)
        })
    }

    /// The referral and the caller's role in it; [`Error::NotFound`] for an
    /// organisation that is neither its sender nor its recipient, exactly as
    /// for an id that does not exist.
    async fn visible_referral(
        &self,
        caller: &Organisation,
        referral_id: &str,
    ) -> Result<(StoredReferral, Role), Error> {
        let not_found = || Error::NotFound(format!("referral {referral_id}"));
        let id = ReferralId::parse(referral_id).map_err(|_| not_found())?;
        let stored = self
            .store
            .referral(id.to_string())
            .await?
            .ok_or_else(not_found)?;
        let role = if stored.sender == caller.id {
            Role::Sender
        } else if stored.recipient == caller.id {
            Role::Recipient
        } else {
            return Err(not_found());
        };
        Ok((stored, role))
    }

    /// What `caller` may see of a referral: the sender everything, the
    /// recipient the minimised copy (the read is audited and marks the
    /// referral as held by the recipient); anyone else
    /// [`Error::NotFound`], exactly as if it did not exist.
    pub async fn referral(
        &self,
        caller: &Organisation,
        referral_id: &str,
    ) -> Result<ReferralView, Error> {
        let (stored, role) = self.visible_referral(caller, referral_id).await?;
        if role == Role::Recipient {
            let entry = AuditEntry::new(AuditKind::ReferralRead)
                .actor(&caller.id)
                .referral(&stored.referral_id);
            self.store
                .record_recipient_read(stored.referral_id.clone(), entry)
                .await?;
        }
        view(stored, role)
    }

    /// Records a status event about a referral, posted by its recipient (or a
    /// withdrawal by its sender), once the referral's lifecycle allows it
    /// ([`lifecycle::check_transition`]; a refusal is audited), and queues it,
    /// minimised, for the other party.
    pub async fn post_event(
        &self,
        caller: &Organisation,
        referral_id: &str,
        format: &str,
        body: &[u8],
    ) -> Result<EventAnswer, Error> {
        let (mut stored, role) = self.visible_referral(caller, referral_id).await?;
        let id = ReferralId::parse(&stored.referral_id)
            .map_err(|_| Error::Internal("store: a stored referral id is unreadable".to_owned()))?;
        let context = Context {
            now: Utc::now(),
            sender: Some(caller.party.clone()),
            recipient: None,
            referral_id: Some(id),
            limits: self.limits(),
        };
        let event = info_span!("decode", format = %format).in_scope(|| {
            let adapter: Box<dyn Format + Send + Sync> = match format {
                "passerelle-v1" | "passerelle-v2" | "france-travail" => {
                    formats::by_name(format, &FormatOptions::default())?
                }
                other => {
                    return Err(Error::UnsupportedFormat(format!(
                        "\"{other}\" is not a status event format; use passerelle-v2 (status/v1 JSON) or france-travail (a decision)"
                    )));
                }
            };
            let mut records = adapter.decode(Box::new(body), &context)?;
            match records.next().map(|record| record.result) {
                Some(Ok(Translated {
                    value: Message::Status(event),
                    ..
                })) => Ok(*event),
                Some(Ok(_)) => Err(Error::invalid(
                    "/schema_version",
                    "status-event-expected",
                    "this endpoint takes status events (passerelle.status.v1)",
                )),
                Some(Err(error)) => Err(error),
                None => Err(Error::invalid("", "empty", "no status event in the body")),
            }
        })?;
        if event.referral_id != id {
            return Err(Error::invalid(
                "/referral_id",
                "referral-id-mismatch",
                "the event is about another referral than the one in the URL",
            ));
        }
        if event.author_siret != caller.party.siret {
            return Err(Error::Forbidden(
                "the event names another organisation as its author".to_owned(),
            ));
        }
        let (author, destination) = match role {
            Role::Sender => (Author::Sender, stored.recipient.clone()),
            Role::Recipient => (Author::Recipient, stored.sender.clone()),
        };
        let event_id = event.event_id.to_string();
        let forward = self.forward_event(&event, &destination, &stored).await;
        let mut audit = AuditEntry::new(AuditKind::StatusEventRecorded)
            .actor(&caller.id)
            .referral(&stored.referral_id)
            .event(&event_id)
            .event_kind(event.status.wire_name())
            .recipient(&destination);
        let forwarded = match &forward {
            Ok((_, report)) => {
                audit = audit.minimisation(report);
                true
            }
            Err(refusal) => {
                // Recorded, not forwarded: the destination's policy refused it.
                audit = audit.reason(refusal.reason.code());
                false
            }
        };
        let forward: Vec<Outgoing> = forward
            .ok()
            .map(|(payload, _)| Outgoing {
                message_id: event_id.clone(),
                destination,
                payload,
            })
            .into_iter()
            .collect();
        let json = to_json(&event)?;
        let mut attempt = 1;
        let written = loop {
            if let Err(error) = check_lifecycle(&stored, &event_id, event.status, author) {
                let reason = match &error {
                    Error::Invalid(_) => "illegal-transition",
                    other => error_code(other),
                };
                let refused = AuditEntry::new(AuditKind::StatusEventRefused)
                    .actor(&caller.id)
                    .referral(&stored.referral_id)
                    .event(&event_id)
                    .event_kind(event.status.wire_name())
                    .reason(reason);
                self.store.audit(refused).await?;
                return Err(error);
            }
            let new = NewStatusEvent {
                event_id: event_id.clone(),
                referral_id: stored.referral_id.clone(),
                author: caller.id.clone(),
                status: event.status.wire_name().to_owned(),
                occurred_at: event.occurred_at,
                fingerprint: fingerprint(&json),
                event: json.clone(),
                recorded_at: Utc::now(),
                preceding_events: stored.events.len(),
                forward: forward.clone(),
            };
            match self
                .store
                .record_status_event(new, audit.clone())
                .instrument(info_span!("enqueue"))
                .await
            {
                // Another event was stored since the check: check again
                // against the history as it is now.
                Err(Error::Conflict(_)) if attempt < LIFECYCLE_ATTEMPTS => {
                    attempt += 1;
                    stored = self.visible_referral(caller, referral_id).await?.0;
                }
                result => break result?,
            }
        };
        if written == Written::Written && forwarded {
            self.wake_outbox();
        }
        self.metrics.status_event(event.status.wire_name());
        Ok(EventAnswer {
            event_id,
            referral_id: stored.referral_id,
            replayed: written == Written::AlreadyWritten,
            forwarded,
        })
    }

    /// Expires the referrals nobody acted on in time: each one still
    /// undecided (its lifecycle allows [`Status::Expired`]) and without any
    /// status event for `after` since it was accepted or last heard of. Each
    /// gets an Expired event of the gateway's, queued for both its sender and
    /// its recipient (as their status policies allow) and audited. Answers
    /// the referrals expired by this call: calling again expires nothing new,
    /// since the event and message ids derive from the referral id.
    pub async fn expire_stale(
        &self,
        now: DateTime<Utc>,
        after: chrono::Duration,
    ) -> Result<Vec<String>, Error> {
        let open = Status::ALL
            .iter()
            .filter(|status| lifecycle::allowed_next(Some(**status)).contains(&Status::Expired))
            .map(|status| status.wire_name().to_owned())
            .collect();
        let candidates = self.store.stale_referrals(now - after, open).await?;
        let mut expired = Vec::new();
        for referral_id in candidates {
            let span = info_span!("expire", referral_id = %referral_id);
            if self
                .expire(&referral_id, now, after)
                .instrument(span)
                .await?
            {
                expired.push(referral_id);
            }
        }
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "stale referrals expired");
            self.wake_outbox();
        }
        Ok(expired)
    }

    /// Expires one referral if it is still stale; whether it did.
    async fn expire(
        &self,
        referral_id: &str,
        now: DateTime<Utc>,
        after: chrono::Duration,
    ) -> Result<bool, Error> {
        let Some(stored) = self.store.referral(referral_id.to_owned()).await? else {
            return Ok(false);
        };
        if lifecycle::check_transition(&history(&stored)?, Status::Expired, Author::Gateway)
            .is_err()
        {
            return Ok(false);
        }
        // Events are loaded in the order they were recorded: the last one is
        // the latest news.
        let last_heard = stored
            .events
            .last()
            .map_or(&stored.accepted_at, |event| &event.recorded_at);
        let deadline = stored_time(last_heard)? + after;
        if deadline > now {
            return Ok(false);
        }
        let unreadable = || Error::Internal("store: a stored referral is unreadable".to_owned());
        let document: serde_json::Value =
            serde_json::from_str(&stored.referral).map_err(|_| unreadable())?;
        // The schema requires an author; the gateway has no SIRET of its own,
        // so the event names the organisation the referral expired at.
        let recipient_siret = document
            .pointer("/recipient/organisation/siret")
            .and_then(serde_json::Value::as_str)
            .and_then(|siret| Siret::parse(siret).ok())
            .ok_or_else(unreadable)?;
        let event = StatusEvent {
            event_id: ReferralId::derived(EXPIRY_SOURCE, &stored.referral_id),
            schema_version: StatusV1Tag,
            referral_id: ReferralId::parse(&stored.referral_id).map_err(|_| unreadable())?,
            status: Status::Expired,
            // The moment it became stale, not the moment this call noticed:
            // the same event whenever the expiry runs.
            occurred_at: deadline,
            author_siret: recipient_siret,
            rejection_reason: None,
            outcome: None,
            appointment_at: None,
            comment: None,
        };
        let event_id = event.event_id.to_string();
        let mut audit = AuditEntry::new(AuditKind::StatusEventRecorded)
            .actor(GATEWAY_ACTOR)
            .referral(&stored.referral_id)
            .event(&event_id)
            .event_kind(Status::Expired.wire_name());
        let mut forward = Vec::new();
        for (party, destination) in [("sender", &stored.sender), ("recipient", &stored.recipient)] {
            match self.forward_event(&event, destination, &stored).await {
                Ok((payload, _)) => forward.push(Outgoing {
                    message_id: ReferralId::derived(
                        EXPIRY_SOURCE,
                        &format!("{}\u{1f}{party}", stored.referral_id),
                    )
                    .to_string(),
                    destination: destination.clone(),
                    payload,
                }),
                // Recorded all the same; the audit says why one side is not told.
                Err(refusal) => audit = audit.reason(refusal.reason.code()),
            }
        }
        let new = gateway_event(&stored, &event, forward)?;
        match self.store.record_status_event(new, audit).await {
            Ok(Written::Written) => {
                self.metrics.status_event(Status::Expired.wire_name());
                Ok(true)
            }
            // Expired by a concurrent run, or someone acted meanwhile: the
            // next run looks at it again.
            Ok(Written::AlreadyWritten) | Err(Error::Conflict(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The event minimised for `destination` by its status policy, as JSON,
    /// with the minimisation report.
    async fn forward_event(
        &self,
        event: &StatusEvent,
        destination: &str,
        stored: &StoredReferral,
    ) -> Result<(String, MinimisationReport), Refusal> {
        let organisation = self
            .config
            .organisations
            .by_id(destination)
            .ok_or_else(|| {
                Refusal::new(
                    RefusalReason::PolicyNotApplicable,
                    "the destination is no longer connected to the gateway",
                )
            })?;
        let purpose = Purpose::status_follow_up();
        let policy = self
            .policy_for(organisation, MessageKind::Status, purpose.as_str())
            .ok_or_else(|| {
                Refusal::new(
                    RefusalReason::PolicyNotApplicable,
                    format!(
                        "no status policy covers {} for purpose {}",
                        organisation.id,
                        purpose.as_str()
                    ),
                )
            })?;
        // A status event carries codes and dates, no personal data but its
        // free-text comment: it leaves with the non-personal categories only,
        // whatever the consent record says.
        let grant = Grant {
            record_id: stored.consent_record_id.clone().unwrap_or_default(),
            basis: LegalBasis::PublicTask,
            special_category_basis: None,
            categories: DataCategory::ALL
                .iter()
                .copied()
                .filter(|category| !category.is_personal())
                .collect(),
        };
        let (minimised, report) = policy.minimise_status(event, &grant, &self.config.keys)?;
        let json = to_json(&minimised).map_err(|_| {
            Refusal::new(
                RefusalReason::PolicyNotApplicable,
                "the minimised event could not be encoded",
            )
        })?;
        Ok((json, report))
    }

    /// Stores a consent record posted by one of its controllers or its collector.
    pub async fn put_consent(
        &self,
        caller: &Organisation,
        body: &[u8],
    ) -> Result<ConsentAnswer, Error> {
        let record = ConsentRecord::parse(body, &self.limits())?;
        if !may_manage(caller, &record) {
            return Err(Error::Forbidden(
                "only a controller named in the record, or the organisation that collected it, may store it"
                    .to_owned(),
            ));
        }
        let record_id = record.record_id;
        let event_count = record.events.len();
        let stored = self.store.put_record(record.clone()).await?;
        let entry = AuditEntry::new(AuditKind::ConsentRecorded)
            .actor(&caller.id)
            .consent_record(record_id);
        if stored == Stored::Inserted {
            self.store.audit(entry).await?;
        }
        let current = self
            .store
            .record(record_id)
            .await?
            .unwrap_or_else(|| record.clone());
        debug_assert!(current.events.len() >= event_count);
        Ok(ConsentAnswer {
            record_id: record_id.to_string(),
            replayed: stored == Stored::AlreadyStored,
            state: current.state_at(Utc::now()).as_str(),
        })
    }

    /// A consent record, for its controllers, its collector and the
    /// recipients it covers; [`Error::NotFound`] for anyone else.
    pub async fn consent(
        &self,
        caller: &Organisation,
        record_id: &str,
    ) -> Result<ConsentRecord, Error> {
        let not_found = || Error::NotFound(format!("consent record {record_id}"));
        let id = RecordId::parse(record_id).map_err(|_| not_found())?;
        let record = self.store.record(id).await?.ok_or_else(not_found)?;
        if may_manage(caller, &record)
            || record.covers_recipient(&caller.party.siret, caller.party.kind)
        {
            Ok(record)
        } else {
            Err(not_found())
        }
    }

    /// Appends an event (withdrawn, objected, renewed ...) to a consent
    /// record. Controllers and the collector may append any event; a recipient
    /// the record covers may record a withdrawal or an objection it received.
    pub async fn append_consent_event(
        &self,
        caller: &Organisation,
        record_id: &str,
        body: &[u8],
    ) -> Result<ConsentAnswer, Error> {
        let not_found = || Error::NotFound(format!("consent record {record_id}"));
        let id = RecordId::parse(record_id).map_err(|_| not_found())?;
        let record = self.store.record(id).await?.ok_or_else(not_found)?;
        let manager = may_manage(caller, &record);
        let recipient = record.covers_recipient(&caller.party.siret, caller.party.kind);
        if !manager && !recipient {
            return Err(not_found());
        }
        let document = crate::validate::parse_json(body, &self.limits())?;
        let event: ConsentEvent = crate::validate::typed(&document)?;
        if event.recorded_by != caller.party.siret {
            return Err(Error::Forbidden(
                "the event names another organisation in recorded_by".to_owned(),
            ));
        }
        let stopping = matches!(
            event.kind,
            ConsentEventKind::Withdrawn | ConsentEventKind::Objected
        );
        if !manager && !stopping {
            return Err(Error::Forbidden(
                "a recipient may record a withdrawal or an objection, not other consent events"
                    .to_owned(),
            ));
        }
        let kind = event.kind;
        self.store.append_event(id, event).await?;
        let entry = AuditEntry::new(AuditKind::ConsentEventRecorded)
            .actor(&caller.id)
            .consent_record(id)
            .event_kind(kind.wire_name());
        self.store.audit(entry).await?;
        if stopping {
            self.notify_withdrawal(caller, &id.to_string())
                .instrument(info_span!("notify_withdrawal"))
                .await?;
        }
        let current = self.store.record(id).await?.ok_or_else(not_found)?;
        Ok(ConsentAnswer {
            record_id: id.to_string(),
            replayed: false,
            state: current.state_at(Utc::now()).as_str(),
        })
    }

    /// Tells the recipients of referrals already delivered — or offered, so
    /// possibly held — under a consent record that the person withdrew or
    /// objected (GDPR Art. 19): a
    /// `STATUS_WITHDRAWN` event, recorded in each referral's history and
    /// queued for its recipient through its usual channel. Referrals still
    /// queued are cancelled by the outbox worker before their next attempt.
    async fn notify_withdrawal(&self, caller: &Organisation, record_id: &str) -> Result<(), Error> {
        for referral_id in self.store.offered_under_consent(record_id).await? {
            let Some(stored) = self.store.referral(referral_id.clone()).await? else {
                continue;
            };
            let unreadable =
                || Error::Internal("store: a stored referral is unreadable".to_owned());
            if lifecycle::check_transition(&history(&stored)?, Status::Withdrawn, Author::Gateway)
                .is_err()
            {
                // Its path is over (completed, rejected, expired): nothing left to stop.
                let audit = AuditEntry::new(AuditKind::StatusEventRefused)
                    .actor(GATEWAY_ACTOR)
                    .referral(&stored.referral_id)
                    .consent_record(record_id)
                    .reason("referral-already-closed");
                self.store.audit(audit).await?;
                continue;
            }
            let event = StatusEvent {
                event_id: ReferralId::derived(WITHDRAWAL_SOURCE, &stored.referral_id),
                schema_version: StatusV1Tag,
                referral_id: ReferralId::parse(&stored.referral_id).map_err(|_| unreadable())?,
                status: Status::Withdrawn,
                occurred_at: Utc::now(),
                author_siret: caller.party.siret.clone(),
                rejection_reason: None,
                outcome: None,
                appointment_at: None,
                comment: None,
            };
            let event_id = event.event_id.to_string();
            let mut audit = AuditEntry::new(AuditKind::StatusEventRecorded)
                .actor(GATEWAY_ACTOR)
                .referral(&stored.referral_id)
                .event(&event_id)
                .event_kind(Status::Withdrawn.wire_name())
                .consent_record(record_id)
                .recipient(&stored.recipient);
            let mut forward = Vec::new();
            match self.forward_event(&event, &stored.recipient, &stored).await {
                Ok((payload, _)) => forward.push(Outgoing {
                    message_id: event_id.clone(),
                    destination: stored.recipient.clone(),
                    payload,
                }),
                Err(refusal) => audit = audit.reason(refusal.reason.code()),
            }
            let new = gateway_event(&stored, &event, forward)?;
            match self.store.record_status_event(new, audit).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        self.wake_outbox();
        Ok(())
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ready(&self) -> Result<(), Error> {
        self.store.queue_depth().await.map(|_| ())
    }
}

fn may_manage(caller: &Organisation, record: &ConsentRecord) -> bool {
    record.controllers.contains(&caller.party.siret)
        || record
            .collection
            .as_ref()
            .is_some_and(|collection| collection.collected_by == caller.party.siret)
}

/// The statuses a referral went through, oldest first.
/// A status event of the gateway's own (an expiry, a withdrawal notice),
/// checked against the history it was decided on.
fn gateway_event(
    stored: &StoredReferral,
    event: &StatusEvent,
    forward: Vec<Outgoing>,
) -> Result<NewStatusEvent, Error> {
    let json = to_json(event)?;
    Ok(NewStatusEvent {
        event_id: event.event_id.to_string(),
        referral_id: stored.referral_id.clone(),
        author: GATEWAY_ACTOR.to_owned(),
        status: event.status.wire_name().to_owned(),
        occurred_at: event.occurred_at,
        fingerprint: fingerprint(&json),
        event: json,
        recorded_at: Utc::now(),
        preceding_events: stored.events.len(),
        forward,
    })
}

fn history(stored: &StoredReferral) -> Result<Vec<Status>, Error> {
    stored
        .events
        .iter()
        .map(|event| {
            Status::from_wire_name(&event.status)
                .ok_or_else(|| Error::Internal("store: a stored status is unreadable".to_owned()))
        })
        .collect()
}

/// Checks a status event against the referral's lifecycle. An event already
/// in the history is not checked again: posting it anew is a replay (or a
/// reuse of its id), which the store tells apart.
fn check_lifecycle(
    stored: &StoredReferral,
    event_id: &str,
    next: Status,
    author: Author,
) -> Result<(), Error> {
    if stored.events.iter().any(|event| event.event_id == event_id) {
        return Ok(());
    }
    lifecycle::check_transition(&history(stored)?, next, author)
}

/// A time the store wrote (RFC 3339).
fn stored_time(text: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| Error::Internal("store: a stored time is unreadable".to_owned()))
}

fn view(stored: StoredReferral, role: Role) -> Result<ReferralView, Error> {
    let unreadable = || Error::Internal("store: a stored referral is unreadable".to_owned());
    let document = match role {
        Role::Sender => &stored.referral,
        Role::Recipient => &stored.minimised,
    };
    let referral = serde_json::from_str(document).map_err(|_| unreadable())?;
    let decision = if role == Role::Sender {
        Some(serde_json::from_str(&stored.decision).map_err(|_| unreadable())?)
    } else {
        None
    };
    let events = stored
        .events
        .iter()
        .map(|event| serde_json::from_str(&event.event).map_err(|_| unreadable()))
        .collect::<Result<_, _>>()?;
    Ok(ReferralView {
        referral_id: stored.referral_id,
        role,
        state: stored.state,
        accepted_at: stored.accepted_at,
        referral,
        decision,
        events,
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| Error::Internal(format!("encoding JSON: {error}")))
}

fn fingerprint(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The idempotency fingerprint of a referral: its canonical form, with the
/// creation time left out for formats that do not carry one (DORA, CSV stamp
/// the time of reading, which differs on a retry).
fn fingerprint_referral(
    referral: &v2::Referral,
    canonical: &str,
    format: &str,
) -> Result<String, Error> {
    if matches!(format, "dora" | "csv") {
        let mut stable = referral.clone();
        stable.created_at = DateTime::<Utc>::UNIX_EPOCH;
        return Ok(fingerprint(&to_json(&stable)?));
    }
    Ok(fingerprint(canonical))
}

/// The format name as a metric attribute (a fixed set: never caller input).
fn metric_format(format: &str) -> &'static str {
    INPUT_FORMATS
        .iter()
        .find(|name| **name == format)
        .copied()
        .unwrap_or("other")
}

/// An organisation as the configuration declares it; the name the message
/// gave is kept only when the configuration names none.
fn as_configured(
    configured: &crate::model::common::Organisation,
    declared: &crate::model::common::Organisation,
) -> crate::model::common::Organisation {
    crate::model::common::Organisation {
        siret: configured.siret.clone(),
        kind: configured.kind,
        name: configured.name.clone().or_else(|| declared.name.clone()),
    }
}

/// The environment variable that breaks a test build on purpose (see
/// [`minimisation_skipped_for_tests`]).
pub const FAULT_VARIABLE: &str = "PASSERELLE_FAULT";

/// Whether this gateway forwards referrals as sent, unminimised: a fault
/// that only debug builds can be started with (`PASSERELLE_FAULT=skip-minimisation`),
/// so that the conformance suite's tests show the suite fails a gateway that
/// leaks. Release builds do not contain it.
#[cfg(debug_assertions)]
fn minimisation_skipped_for_tests() -> bool {
    std::env::var(FAULT_VARIABLE).is_ok_and(|fault| fault == "skip-minimisation")
}

/// Release builds cannot skip minimisation.
#[cfg(not(debug_assertions))]
const fn minimisation_skipped_for_tests() -> bool {
    false
}

/// A stable code for an error, as a metric attribute.
pub fn error_code(error: &Error) -> &'static str {
    match error {
        Error::Invalid(_) => "invalid",
        Error::Malformed { .. } => "malformed",
        Error::TooLarge { .. } => "too-large",
        Error::TooDeep { .. } => "too-deep",
        Error::UnsupportedFormat(_) => "unsupported-format",
        Error::Config { .. } => "configuration",
        Error::Io { .. } => "io",
        Error::NotFound(_) => "not-found",
        Error::Conflict(_) => "conflict",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::Forbidden(_) => "forbidden",
        Error::RateLimited { .. } => "rate-limited",
        Error::Refused(refusal) => refusal.reason.code(),
        Error::IdempotencyKeyReused(_) => "idempotency-key-reused",
        Error::TimedOut(_) => "timeout",
        Error::Unavailable(_) => "unavailable",
        Error::Internal(_) => "internal",
    }
}

/// Violations of a CSV row located at its line, for batch answers.
pub fn at_line(error: Error, line: Option<u64>) -> Error {
    match (error, line) {
        (Error::Invalid(violations), Some(line)) => Error::Invalid(
            violations
                .into_iter()
                .map(|violation| {
                    if violation.line.is_some() {
                        violation
                    } else {
                        Violation {
                            line: Some(line),
                            ..violation
                        }
                    }
                })
                .collect(),
        ),
        (error, _) => error,
    }
}
