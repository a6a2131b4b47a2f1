//! The store: where consent records, accepted referrals, status events, the
//! outbox and the audit log are kept durably. The traits below, one
//! implementation per database: [`sqlite`] (one file, the default) and
//! [`postgres`] (several replicas on one database), both behind [`Store`],
//! which the configuration chooses; both pass the same tests.
//!
//! The trait is async-friendly: every method returns a `Send` future, so a
//! server can await it on any executor thread. Implementations answer a write
//! only once it is durable.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::audit::AuditEntry;
use crate::consent::{ConsentEvent, ConsentRecord, RecordId};
use crate::error::Error;

mod any;
mod location;
mod outbox;
pub mod postgres;
mod referrals;
pub mod sqlite;

pub use any::Store;
pub use location::StoreLocation;
pub(crate) use outbox::claim_share;
pub use outbox::{OutboxMessage, Outcome};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What [`ConsentStore::put_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The record was new and is now stored.
    Inserted,
    /// The same record was already stored (a retry): nothing changed.
    AlreadyStored,
}

/// Durable, append-only storage of consent records.
pub trait ConsentStore: Send + Sync {
    /// Stores a new record (checked with [`ConsentRecord::check`]). Storing
    /// the same record again is an idempotent success, even after events were
    /// appended to it (its events must then be the first ones stored); the same
    /// id with other content is [`Error::Conflict`].
    fn put_record(
        &self,
        record: ConsentRecord,
    ) -> impl Future<Output = Result<Stored, Error>> + Send;

    /// Appends an event to a stored record: [`Error::NotFound`] for an unknown
    /// record, [`Error::Invalid`] (rule `event-out-of-order`) for an event dated
    /// before the record's last one.
    fn append_event(
        &self,
        record_id: RecordId,
        event: ConsentEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The record with all its events, if stored.
    fn record(
        &self,
        record_id: RecordId,
    ) -> impl Future<Output = Result<Option<ConsentRecord>, Error>> + Send;
}

/// A referral the gateway accepted, ready to store (JSON already serialised).
#[derive(Debug, Clone)]
pub struct NewReferral {
    /// The referral id (the idempotency key).
    pub referral_id: String,
    /// The sending organisation's id.
    pub sender: String,
    /// The recipient organisation's id.
    pub recipient: String,
    /// SHA-256 (hex) of the submission, to tell a retry from a reuse of the id.
    pub fingerprint: String,
    /// The format the referral arrived in.
    pub input_format: String,
    /// Canonical v2 JSON as sent.
    pub referral: String,
    /// Canonical v2 JSON after minimisation.
    pub minimised: String,
    /// The decision report as JSON.
    pub decision: String,
    /// The consent record it leaves under.
    pub consent_record_id: Option<String>,
    /// The consent record the decision read and how many events it had then.
    /// The SQLite store, which may answer a decision's read from its copy of
    /// the record, accepts nothing ([`Accepted::ConsentChanged`]) once the
    /// record has another count in the accept's transaction. PostgreSQL
    /// decisions always read the record from the database.
    pub consent_seen: Option<(RecordId, usize)>,
    /// When it was accepted.
    pub accepted_at: DateTime<Utc>,
}

impl NewReferral {
    /// The referral as stored once it is accepted, `accepted_at` as the store
    /// wrote it: moved, not copied, so that answering costs no copy of its
    /// JSON.
    fn into_stored(self, accepted_at: String) -> StoredReferral {
        StoredReferral {
            referral_id: self.referral_id,
            sender: self.sender,
            recipient: self.recipient,
            fingerprint: self.fingerprint,
            input_format: self.input_format,
            referral: self.referral,
            minimised: self.minimised,
            decision: self.decision,
            consent_record_id: self.consent_record_id,
            state: "queued".to_owned(),
            accepted_at,
            events: Vec::new(),
        }
    }
}

/// A stored referral with its status events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReferral {
    /// The referral id.
    pub referral_id: String,
    /// The sending organisation's id.
    pub sender: String,
    /// The recipient organisation's id.
    pub recipient: String,
    /// SHA-256 (hex) of the submission.
    pub fingerprint: String,
    /// The format it arrived in.
    pub input_format: String,
    /// Canonical v2 JSON as sent.
    pub referral: String,
    /// Canonical v2 JSON after minimisation.
    pub minimised: String,
    /// The decision report as JSON.
    pub decision: String,
    /// The consent record it leaves under.
    pub consent_record_id: Option<String>,
    /// Its delivery state (`queued`, ...).
    pub state: String,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// Its status events, oldest first.
    pub events: Vec<StoredEvent>,
}

/// A stored status event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event id.
    pub event_id: String,
    /// The author organisation's id.
    pub author: String,
    /// The status (proto value name).
    pub status: String,
    /// Canonical status/v1 JSON.
    pub event: String,
    /// When the gateway recorded it (RFC 3339).
    pub recorded_at: String,
}

/// A status event to store, and what to queue for the other party.
#[derive(Debug, Clone)]
pub struct NewStatusEvent {
    /// The event id (idempotency key).
    pub event_id: String,
    /// The referral it is about.
    pub referral_id: String,
    /// The author organisation's id.
    pub author: String,
    /// The status (proto value name).
    pub status: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// SHA-256 (hex) of the event.
    pub fingerprint: String,
    /// Canonical status/v1 JSON as posted.
    pub event: String,
    /// When the gateway recorded it.
    pub recorded_at: DateTime<Utc>,
    /// How many events the referral had when this one was checked against its
    /// lifecycle: if another was stored since, the write is refused with
    /// [`Error::Conflict`] so that the check can run again on the new history.
    pub preceding_events: usize,
    /// The messages to deliver, each minimised for its destination: the other
    /// party, or both parties for an event of the gateway's (an expiry).
    pub forward: Vec<Outgoing>,
}

/// A message queued for an organisation.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message id, stable across retries (one per destination).
    pub message_id: String,
    /// The destination organisation's id.
    pub destination: String,
    /// Canonical JSON of what leaves.
    pub payload: String,
}

/// What decides whether a referral may still leave, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The id of the consent record it was accepted under.
    pub consent_record_id: Option<String>,
    /// That record, when the id names a stored record.
    pub consent_record: Option<ConsentRecord>,
    /// The statuses recorded about it (proto value names), oldest first.
    pub statuses: Vec<String>,
}

/// What [`ReferralStore::accept_referral`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and queued now.
    New(StoredReferral),
    /// The same referral was already stored: nothing new was created.
    Replayed(StoredReferral),
    /// Nothing was stored: the consent record changed since the decision read
    /// it ([`NewReferral::consent_seen`]). The referral is to be decided again.
    ConsentChanged,
}

/// What a write of an idempotent item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored now.
    Written,
    /// The same item was already stored: nothing changed.
    AlreadyWritten,
}

/// Durable storage of accepted referrals, their status events, the outbox and
/// the audit log.
pub trait ReferralStore: Send + Sync {
    /// Stores an accepted referral, queues it for its recipient and appends
    /// `audit`, in one transaction. The same id from the same sender with the
    /// same fingerprint is a replay (answered with the stored referral, and
    /// `replay_audit` appended); any other reuse of the id is
    /// [`Error::IdempotencyKeyReused`].
    fn accept_referral(
        &self,
        referral: NewReferral,
        audit: AuditEntry,
        replay_audit: AuditEntry,
    ) -> impl Future<Output = Result<Accepted, Error>> + Send;

    /// The referral with its events, if stored.
    fn referral(
        &self,
        referral_id: String,
    ) -> impl Future<Output = Result<Option<StoredReferral>, Error>> + Send;

    /// The referral's consent record and statuses, if stored: what delivery
    /// checks before each attempt, read without the referral's content (on
    /// SQLite, in one read transaction). `consent_record_id`, read with the
    /// referral's outbox message ([`OutboxMessage::consent_record_id`]), spares
    /// reading the referral's row: the referral is then taken to be stored.
    fn standing(
        &self,
        referral_id: String,
        consent_record_id: Option<String>,
    ) -> impl Future<Output = Result<Option<Standing>, Error>> + Send;

    /// Stores a status event, queues its forwards and appends `audit`, in one
    /// transaction; idempotent by event id like referrals. A new event is
    /// refused with [`Error::Conflict`] when the referral no longer has
    /// [`NewStatusEvent::preceding_events`] events.
    fn record_status_event(
        &self,
        event: NewStatusEvent,
        audit: AuditEntry,
    ) -> impl Future<Output = Result<Written, Error>> + Send;

    /// The referrals that may have expired, oldest first: accepted before
    /// `before`, with no status event recorded since, and with only statuses
    /// among `open_statuses` (proto value names) recorded at all. The caller
    /// checks each against the lifecycle before expiring it.
    fn stale_referrals(
        &self,
        before: DateTime<Utc>,
        open_statuses: Vec<String>,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Appends one audit entry on its own (a refusal, an operator's act).
    fn audit(&self, entry: AuditEntry) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records that the referral's recipient read it through the API: appends
    /// `audit` and marks the referral as held by its recipient, in one
    /// transaction, so that a consent withdrawal reaches the recipient even
    /// if no delivery was ever attempted (see `offered_under_consent`).
    fn record_recipient_read(
        &self,
        referral_id: String,
        audit: AuditEntry,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Messages queued and not yet delivered.
    fn queue_depth(&self) -> impl Future<Output = Result<u64, Error>> + Send;
}
