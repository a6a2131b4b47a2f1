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
//! - [`decision`]: the pure forwarding decision (consent, then policy).
//! - [`gateway`]: the pipeline behind every endpoint: decode → validate →
//!   authorise → consent → minimise → enqueue.
//! - [`store`]: the store traits and their SQLite implementation (one writer
//!   thread, group commit): consent records, referrals, status events, outbox.
//! - [`delivery`]: the outbox worker (consent re-checked, backoff, dead
//!   letters), webhooks, gRPC push, the pull inbox.
//! - [`audit`]: the append-only, hash-chained audit log.
//! - [`server`]: `passerelle serve`: TLS, authentication, the HTTP API, the
//!   gRPC services, problem+json.
//! - [`config`]: the gateway's configuration file.
//! - [`telemetry`]: logs, spans, metrics and their OTLP export.
//! - [`error`]: the one error type; messages never repeat input values.
//! - [`conformance`]: the conformance runner: a gateway, a receiver or a
//!   sender's messages checked against a suite of `conformance/`.
//! - [`cli`]: the `passerelle` command line.
//!
//! The core (model, formats, validate, consent, policy, decision) does no I/O
//! beyond reading the input it is handed, so it is tested without sockets; the
//! gateway, store and server are the shell around it.

pub mod audit;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod consent;
pub mod decision;
pub mod delivery;
pub mod error;
pub mod formats;
pub mod gateway;
pub mod model;
pub mod policy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use error::{Error, Violation};
