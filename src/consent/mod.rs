//! Consent records and their evaluation: does a lawful basis cover this
//! recipient, this purpose and these data, now? Pure: no I/O (records are
//! kept by [`crate::store`]).
//!
//! - [`record`]: the record (`passerelle.consent.v1`), parsed into typed values.
//! - [`state`]: the state at a time, derived from the append-only events.
//! - [`evaluate`](mod@evaluate): record + recipient + purpose + required
//!   categories → a [`Grant`](crate::decision::Grant) or a
//!   [`Refusal`](crate::decision::Refusal).
//! - [`dora`]: DORA's data-protection commitment as a public-task record.
//!
//! `docs/consent.md` documents the purposes used, the state rules and their
//! edge cases.

pub mod dora;
pub mod evaluate;
pub mod record;
pub mod state;

pub use dora::from_dora_commitment;
pub use evaluate::evaluate;
pub use record::{
    Collection, CollectionMethod, ConsentEvent, ConsentEventKind, ConsentRecord, Notice, Purpose,
    RecipientScope, RecordId, Sha256Hex, SubjectId,
};
pub use state::ConsentState;
