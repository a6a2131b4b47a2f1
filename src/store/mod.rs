//! The store: where consent records (and, next, accepted referrals) are kept
//! durably. One trait, one implementation per database: [`sqlite`] (one file,
//! the default) today; a PostgreSQL implementation will satisfy the same trait
//! and pass the same tests.
//!
//! The trait is async-friendly: every method returns a `Send` future, so a
//! server can await it on any executor thread. Implementations answer a write
//! only once it is durable.

use std::future::Future;

use crate::consent::{ConsentEvent, ConsentRecord, RecordId};
use crate::error::Error;

pub mod sqlite;

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
