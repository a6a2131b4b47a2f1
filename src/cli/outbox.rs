//! `passerelle outbox list|show|retry|purge`: inspect the outbox of a store
//! and replay its dead letters. Works beside a running gateway (the store is
//! shared safely: WAL and one writer per process, each write a transaction).
//! Payloads are never printed: they are personal data; ids, states, attempts
//! and error codes are.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::{write_failed, write_json};
use crate::audit::{AuditEntry, AuditKind};
use crate::error::Error;
use crate::store::{OutboxMessage, Store, StoreLocation};

/// `passerelle outbox` actions.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List messages, newest first (one JSON object per line).
    List {
        /// Only this state: queued, delivered, dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only this destination (organisation id).
        #[arg(long)]
        destination: Option<String>,
        /// The most messages to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one message: state, attempts, last error, next attempt.
    Show {
        /// The message id.
        message_id: String,
    },
    /// Queue dead letters again, attempts starting over: one by id, or every one (of a destination).
    Retry {
        /// The message id; without it, every dead letter (of --destination).
        message_id: Option<String>,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
    },
    /// List the destinations disabled after answering 410 Gone, with the error.
    Disabled,
    /// Enable a disabled destination again (its receiver is back): its queued messages are pushed again.
    Enable {
        /// The destination (organisation id).
        destination: String,
    },
    /// Delete finished messages (delivered, cancelled) queued before a time; the audit log keeps their history.
    Purge {
        /// Queued before this time (RFC 3339).
        #[arg(long)]
        before: DateTime<Utc>,
        /// Dead letters too.
        #[arg(long)]
        dead: bool,
    },
}

/// Runs an outbox action on the store (an SQLite file or a PostgreSQL URL).
pub(crate) fn run(
    action: OutboxAction,
    store: &StoreLocation,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    if let StoreLocation::Sqlite(path) = store
        && !path.exists()
    {
        return Err(Error::Io {
            context: format!("opening the store {}", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".to_owned(),
            source,
        })?;
    let store = runtime.block_on(Store::open(store))?;
    let code = match action {
        OutboxAction::List {
            state,
            destination,
            limit,
        } => {
            if let Some(state) = &state
                && !matches!(
                    state.as_str(),
                    "queued" | "delivered" | "dead" | "cancelled"
                )
            {
                return Err(Error::config(
                    "command line",
                    "--state",
                    "expected queued, delivered, dead or cancelled",
                ));
            }
            for message in runtime.block_on(store.outbox_messages(
                state.as_deref(),
                destination.as_deref(),
                limit,
            ))? {
                write_json(out, &message, false)?;
            }
            ExitCode::SUCCESS
        }
        OutboxAction::Show { message_id } => {
            match runtime.block_on(store.outbox_message(&message_id))? {
                Some(message) => {
                    write_json(out, &message, true)?;
                    ExitCode::SUCCESS
                }
                None => return Err(Error::NotFound(format!("message {message_id}"))),
            }
        }
        OutboxAction::Retry {
            message_id,
            destination,
        } => {
            let queued = runtime.block_on(store.retry_dead(
                message_id.clone(),
                destination,
                Utc::now(),
                "operator".to_owned(),
            ))?;
            if queued == 0
                && let Some(message_id) = message_id
            {
                let state = runtime
                    .block_on(store.outbox_message(&message_id))?
                    .map(|message: OutboxMessage| message.state);
                return Err(match state {
                    None => Error::NotFound(format!("message {message_id}")),
                    Some(state) => Error::Conflict(format!(
                        "message {message_id} is {state}, not a dead letter"
                    )),
                });
            }
            writeln!(out, "{queued} message(s) queued again").map_err(write_failed)?;
            ExitCode::SUCCESS
        }
        OutboxAction::Disabled => {
            for (destination, reason) in runtime.block_on(store.disabled_destinations())? {
                write_json(
                    out,
                    &serde_json::json!({ "destination": destination, "reason": reason }),
                    false,
                )?;
            }
            ExitCode::SUCCESS
        }
        OutboxAction::Enable { destination } => {
            let audit = AuditEntry::new(AuditKind::DeliveryAttempted)
                .actor("operator")
                .recipient(&destination)
                .reason("destination-enabled");
            let enabled = runtime.block_on(store.enable_destination(
                destination.clone(),
                Utc::now(),
                audit,
            ))?;
            if !enabled {
                return Err(Error::NotFound(format!(
                    "disabled destination {destination}"
                )));
            }
            writeln!(out, "{destination} enabled").map_err(write_failed)?;
            ExitCode::SUCCESS
        }
        OutboxAction::Purge { before, dead } => {
            let removed =
                runtime.block_on(store.purge(before, dead, Utc::now(), "operator".to_owned()))?;
            writeln!(out, "{removed} message(s) purged").map_err(write_failed)?;
            ExitCode::SUCCESS
        }
    };
    runtime.block_on(store.close())?;
    Ok(code)
}
