//! `passerelle consent record|event|show`: consent records in the local store.
//!
//! Exit codes follow the rest of the command line: 0 done; 1 the record or
//! event is refused (`Error::Invalid`: invalid or out of order;
//! `Error::Conflict`: the id is stored with other content; `Error::NotFound`:
//! no such record); 2 the command itself is wrong (`Error::Config`: a bad SIRET
//! or id on the command line; `Error::Io`: an unreadable file or store).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::{write_failed, write_json};
use crate::consent::{ConsentEvent, ConsentEventKind, ConsentRecord, ConsentState, RecordId};
use crate::error::Error;
use crate::formats;
use crate::model::ids::Siret;
use crate::store::{ConsentStore, SqliteStore, Stored};
use crate::validate::Limits;

/// `passerelle consent` actions.
#[derive(Debug, Subcommand)]
pub enum ConsentAction {
    /// Validate a consent record (consent/v1 JSON) and store it; prints its id and state.
    Record {
        /// The consent record file.
        file: PathBuf,
        /// The time at which to report the state (RFC 3339; default: now).
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// Append an event to a stored record (events are appended, never changed).
    Event {
        /// The record id (a UUID), or the consent reference a referral carries.
        record_id: String,
        /// What happened.
        #[arg(long, value_enum)]
        kind: EventKind,
        /// When it happened (RFC 3339; default: now). Never before the record's last event.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// SIRET of the organisation recording the event.
        #[arg(long)]
        by: String,
    },
    /// Print a stored record as JSON with its state derived at a time.
    Show {
        /// The record id (a UUID), or the consent reference a referral carries.
        record_id: String,
        /// The time at which to derive the state (RFC 3339; default: now).
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
}

/// Event kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventKind {
    /// Consent given (or information delivered, for a public task).
    Given,
    /// Consent renewed.
    Renewed,
    /// Consent refused.
    Refused,
    /// Consent withdrawn.
    Withdrawn,
    /// The person objected (GDPR Art. 21).
    Objected,
    /// The record expired.
    Expired,
    /// The record was found invalid.
    Invalidated,
}

impl From<EventKind> for ConsentEventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Given => Self::Given,
            EventKind::Renewed => Self::Renewed,
            EventKind::Refused => Self::Refused,
            EventKind::Withdrawn => Self::Withdrawn,
            EventKind::Objected => Self::Objected,
            EventKind::Expired => Self::Expired,
            EventKind::Invalidated => Self::Invalidated,
        }
    }
}

/// What `consent show` prints.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    record: &'a ConsentRecord,
    state: ConsentState,
    at: DateTime<Utc>,
}

/// Runs a `consent` action against the store file `store`.
pub fn run(action: ConsentAction, store: &Path, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".to_owned(),
            source,
        })?;
    match action {
        ConsentAction::Record { file, at } => {
            let limits = Limits::default();
            let handle = std::fs::File::open(&file).map_err(|source| Error::Io {
                context: format!("opening {}", file.display()),
                source,
            })?;
            let bytes = formats::read_limited(Box::new(handle), &limits)?;
            let record = ConsentRecord::parse(&bytes, &limits)?;
            let store = SqliteStore::open(store)?;
            let stored = runtime.block_on(store.put_record(record.clone()))?;
            store.close()?;
            let at = at.unwrap_or_else(Utc::now);
            let what = match stored {
                Stored::Inserted => "stored",
                Stored::AlreadyStored => "already stored, unchanged",
            };
            writeln!(
                out,
                "consent record {}: {what}; state at {}: {}",
                record.record_id,
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                record.state_at(at)
            )
            .map_err(write_failed)?;
        }
        ConsentAction::Event {
            record_id,
            kind,
            at,
            by,
        } => {
            let record_id = record_id_argument(&record_id)?;
            let recorded_by = Siret::parse(&by).map_err(|error| usage(format!("--by: {error}")))?;
            let at = at.unwrap_or_else(Utc::now);
            let event = ConsentEvent {
                kind: kind.into(),
                at,
                recorded_by,
            };
            let store = SqliteStore::open(store)?;
            runtime.block_on(store.append_event(record_id, event))?;
            let record = runtime
                .block_on(store.record(record_id))?
                .ok_or_else(|| Error::NotFound(format!("consent record {record_id}")))?;
            store.close()?;
            writeln!(
                out,
                "consent record {record_id}: {} appended; state at {}: {}",
                ConsentEventKind::from(kind).wire_name(),
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                record.state_at(at)
            )
            .map_err(write_failed)?;
        }
        ConsentAction::Show { record_id, at } => {
            let record_id = record_id_argument(&record_id)?;
            let store = SqliteStore::open(store)?;
            let record = runtime
                .block_on(store.record(record_id))?
                .ok_or_else(|| Error::NotFound(format!("consent record {record_id}")))?;
            store.close()?;
            let at = at.unwrap_or_else(Utc::now);
            let shown = Shown {
                record: &record,
                state: record.state_at(at),
                at,
            };
            write_json(out, &shown, true)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn record_id_argument(text: &str) -> Result<RecordId, Error> {
    RecordId::for_reference(text).map_err(|error| usage(format!("RECORD_ID: {error}")))
}

fn usage(detail: String) -> Error {
    Error::Config {
        file: "command line".to_owned(),
        key: "arguments".to_owned(),
        detail,
    }
}
