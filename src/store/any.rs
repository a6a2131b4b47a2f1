//! [`Store`]: the store the configuration chose, SQLite or PostgreSQL, behind
//! one type, so that the gateway, the delivery worker and the tools are
//! written once. Each method hands its call to the implementation.

use chrono::{DateTime, Utc};

use super::{
    Accepted, ConsentStore, NewReferral, NewStatusEvent, OutboxMessage, Outcome, PgStore,
    ReferralStore, SqliteStore, Standing, StoreLocation, Stored, StoredReferral, Written,
};
use crate::audit::{AuditEntry, ChainedEntry};
use crate::consent::{ConsentEvent, ConsentRecord, RecordId};
use crate::error::Error;

/// The store of a gateway.
#[derive(Debug)]
pub enum Store {
    /// One SQLite file, one writer thread with group commit.
    Sqlite(SqliteStore),
    /// A PostgreSQL database, shared by replicas.
    Postgres(PgStore),
}

/// Hands a call to the implementation: `dispatch!(self, store => store.method(..).await)`.
///
/// The PostgreSQL call runs boxed. Its futures (sqlx's) take several
/// kilobytes; unboxed, every call's future would be that large whichever the
/// store, and each move of it (into its caller's future, into a task) a copy
/// of that size. Boxed, a SQLite call's future is its own size.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => Box::pin(async move { $call }).await,
        }
    };
}

impl Store {
    /// Opens the store at `location`: creates the SQLite file, or connects to
    /// PostgreSQL; applies the migrations either way.
    pub async fn open(location: &StoreLocation) -> Result<Self, Error> {
        match location {
            StoreLocation::Sqlite(path) => SqliteStore::open(path).map(Self::Sqlite),
            StoreLocation::Postgres(url) => PgStore::connect(url).await.map(Self::Postgres),
        }
    }

    /// Waits for the writes queued to be committed, then closes.
    pub async fn close(self) -> Result<(), Error> {
        match self {
            Self::Sqlite(store) => tokio::task::spawn_blocking(move || store.close())
                .await
                .map_err(|_| Error::Internal("store: closing failed".to_owned()))?,
            Self::Postgres(store) => {
                store.close().await;
                Ok(())
            }
        }
    }

    /// See [`SqliteStore::claim_due`].
    pub async fn claim_due(
        &self,
        destinations: Vec<String>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        dispatch!(self, store => store.claim_due(destinations, now, lease_until, limit).await)
    }

    /// See [`SqliteStore::lease_inbox`].
    pub async fn lease_inbox(
        &self,
        destination: String,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxMessage>, Error> {
        dispatch!(self, store => store.lease_inbox(destination, after, limit, now, lease_until).await)
    }

    /// See [`SqliteStore::complete`].
    pub async fn complete(
        &self,
        message_id: String,
        outcome: Outcome,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<bool, Error> {
        dispatch!(self, store => store.complete(message_id, outcome, now, audit).await)
    }

    /// See [`SqliteStore::acknowledge`].
    pub async fn acknowledge(
        &self,
        destination: String,
        message_id: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        dispatch!(self, store => store.acknowledge(destination, message_id, now, audit).await)
    }

    /// The consent record for a decision whose accept checks it has not
    /// changed ([`super::NewReferral::consent_seen`]): on SQLite, the copy
    /// last read (see [`SqliteStore::recent_record`]); on PostgreSQL, read
    /// from the database.
    pub async fn recent_record(&self, record_id: RecordId) -> Result<Option<ConsentRecord>, Error> {
        match self {
            Self::Sqlite(store) => store.recent_record(record_id).await,
            Self::Postgres(store) => Box::pin(store.record(record_id)).await,
        }
    }

    /// See [`SqliteStore::offered_under_consent`].
    pub async fn offered_under_consent(&self, record_id: &str) -> Result<Vec<String>, Error> {
        match self {
            Self::Sqlite(store) => store.offered_under_consent(record_id),
            Self::Postgres(store) => store.offered_under_consent(record_id).await,
        }
    }

    /// See [`SqliteStore::disable_destination`].
    pub async fn disable_destination(
        &self,
        destination: String,
        reason: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        dispatch!(self, store => store.disable_destination(destination, reason, now, audit).await)
    }

    /// See [`SqliteStore::enable_destination`].
    pub async fn enable_destination(
        &self,
        destination: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<bool, Error> {
        dispatch!(self, store => store.enable_destination(destination, now, audit).await)
    }

    /// See [`SqliteStore::disabled_destinations`].
    pub async fn disabled_destinations(&self) -> Result<Vec<(String, String)>, Error> {
        match self {
            Self::Sqlite(store) => store.disabled_destinations(),
            Self::Postgres(store) => store.disabled_destinations().await,
        }
    }

    /// See [`SqliteStore::outbox_messages`].
    pub async fn outbox_messages(
        &self,
        state: Option<&str>,
        destination: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        match self {
            Self::Sqlite(store) => store.outbox_messages(state, destination, limit),
            Self::Postgres(store) => store.outbox_messages(state, destination, limit).await,
        }
    }

    /// See [`SqliteStore::outbox_message`].
    pub async fn outbox_message(&self, message_id: &str) -> Result<Option<OutboxMessage>, Error> {
        match self {
            Self::Sqlite(store) => store.outbox_message(message_id),
            Self::Postgres(store) => store.outbox_message(message_id).await,
        }
    }

    /// See [`SqliteStore::retry_dead`].
    pub async fn retry_dead(
        &self,
        message_id: Option<String>,
        destination: Option<String>,
        now: DateTime<Utc>,
        actor: String,
    ) -> Result<u64, Error> {
        dispatch!(self, store => store.retry_dead(message_id, destination, now, actor).await)
    }

    /// See [`SqliteStore::purge`].
    pub async fn purge(
        &self,
        before: DateTime<Utc>,
        dead: bool,
        now: DateTime<Utc>,
        actor: String,
    ) -> Result<u64, Error> {
        dispatch!(self, store => store.purge(before, dead, now, actor).await)
    }

    /// Every entry of the audit log, in order.
    pub async fn audit_entries(&self) -> Result<Vec<ChainedEntry>, Error> {
        match self {
            Self::Sqlite(store) => crate::audit::entries(store),
            Self::Postgres(store) => super::postgres::audit_entries(store).await,
        }
    }
}

impl ConsentStore for Store {
    async fn put_record(&self, record: ConsentRecord) -> Result<Stored, Error> {
        dispatch!(self, store => store.put_record(record).await)
    }

    async fn append_event(&self, record_id: RecordId, event: ConsentEvent) -> Result<(), Error> {
        dispatch!(self, store => store.append_event(record_id, event).await)
    }

    async fn record(&self, record_id: RecordId) -> Result<Option<ConsentRecord>, Error> {
        dispatch!(self, store => store.record(record_id).await)
    }
}

impl ReferralStore for Store {
    async fn accept_referral(
        &self,
        referral: NewReferral,
        audit: AuditEntry,
        replay_audit: AuditEntry,
    ) -> Result<Accepted, Error> {
        dispatch!(self, store => store.accept_referral(referral, audit, replay_audit).await)
    }

    async fn referral(&self, referral_id: String) -> Result<Option<StoredReferral>, Error> {
        dispatch!(self, store => store.referral(referral_id).await)
    }

    async fn standing(
        &self,
        referral_id: String,
        consent_record_id: Option<String>,
    ) -> Result<Option<Standing>, Error> {
        dispatch!(self, store => store.standing(referral_id, consent_record_id).await)
    }

    async fn record_status_event(
        &self,
        event: NewStatusEvent,
        audit: AuditEntry,
    ) -> Result<Written, Error> {
        dispatch!(self, store => store.record_status_event(event, audit).await)
    }

    async fn stale_referrals(
        &self,
        before: DateTime<Utc>,
        open_statuses: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        dispatch!(self, store => store.stale_referrals(before, open_statuses).await)
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), Error> {
        dispatch!(self, store => store.audit(entry).await)
    }

    async fn record_recipient_read(
        &self,
        referral_id: String,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        dispatch!(self, store => store.record_recipient_read(referral_id, audit).await)
    }

    async fn queue_depth(&self) -> Result<u64, Error> {
        dispatch!(self, store => store.queue_depth().await)
    }
}
