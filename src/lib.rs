//! Passerelle: a gateway carrying referrals (*orientations*) of people far from
//! employment between associations and the public employment operators, with
//! consent and data minimisation enforced before anything is forwarded.
//!
//! # Layout
//! The modules follow the pipeline (see `DESIGN.md`):
//! - [`model`]: canonical types, schema versions v1 and v2, status events,
//!   typed identifiers, v1 ⇄ v2 conversion with loss reports, protobuf types.
//! - [`formats`]: one trait, one adapter per field format (canonical JSON and
//!   protobuf, CSV with a mapping file, DORA, France Travail).
//! - [`validate`]: strict JSON parsing and limits, the JSON Schema registry.
//! - [`consent`]: consent records, their state derived from events, and their
//!   evaluation into a grant or a refusal.
//! - [`policy`]: minimisation policies (one TOML file per recipient and
//!   purpose), checked at load, applied within a consent grant with a report.
//! - [`store`]: the store trait and its SQLite implementation (one writer
//!   thread, group commit).
//! - [`error`]: the one error type; messages never repeat input values.
//! - [`cli`]: the `passerelle` command line.
//!
//! The core (model, formats, validate) does no I/O beyond reading the input it
//! is handed, so it is tested without sockets.

pub mod cli;
pub mod consent;
pub mod decision;
pub mod error;
pub mod formats;
pub mod model;
pub mod policy;
pub mod store;
pub mod validate;

pub use error::{Error, Violation};
