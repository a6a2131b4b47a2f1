//! `passerelle audit`: verify the hash chain of the store's audit log, and
//! export it as JSON lines (see `docs/audit.md`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Output, write_failed, write_json};
use crate::audit::{self, ChainHead, VerifyReport};
use crate::error::Error;
use crate::store::{PgStore, StoreLocation};

/// `passerelle audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Walk the chain and name the first entry altered, removed or reordered (exit 1 if any).
    Verify {
        /// A head printed by an earlier verify (`SEQ:HASH`, kept elsewhere): the chain must still reach
        /// it unchanged, which catches entries removed from the end.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<ChainHead>,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write every entry as one JSON line: seq, at, the entry's fields, previous_hash, hash.
    Export {
        /// The file to write (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// The audit log of a PostgreSQL store, read in one snapshot.
fn postgres_rows(url: &str) -> Result<Vec<audit::Row>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".to_owned(),
            source,
        })?;
    runtime.block_on(async {
        let store = PgStore::connect_existing(url).await?;
        let rows = store.audit_rows().await;
        store.close().await;
        rows
    })
}

/// Runs an `audit` action against the store at `store` (an SQLite file or a
/// PostgreSQL URL): exit code 0 when the chain is intact (or exported), 1
/// when it is broken.
pub(crate) fn run(
    action: AuditAction,
    store: &StoreLocation,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let export = |out: &mut dyn Write| match store {
        StoreLocation::Sqlite(path) => audit::export(path, out),
        StoreLocation::Postgres(url) => audit::export_rows(&postgres_rows(url)?, out),
    };
    match action {
        AuditAction::Verify {
            expect_head,
            output,
        } => {
            let report = match store {
                StoreLocation::Sqlite(path) => audit::verify(path, expect_head.as_ref())?,
                StoreLocation::Postgres(url) => {
                    audit::verify_rows(postgres_rows(url)?, expect_head.as_ref())?
                }
            };
            match output {
                Output::Json => write_json(out, &report, true)?,
                Output::Text => write_report(out, &report)?,
            }
            Ok(if report.intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditAction::Export { output: None } => {
            export(out)?;
            Ok(ExitCode::SUCCESS)
        }
        AuditAction::Export { output: Some(file) } => {
            let created = File::create(&file).map_err(|source| Error::Io {
                context: format!("creating {}", file.display()),
                source,
            })?;
            let mut writer = BufWriter::new(created);
            let written = export(&mut writer)?;
            writer.flush().map_err(|source| Error::Io {
                context: format!("writing {}", file.display()),
                source,
            })?;
            writeln!(out, "{written} audit entries written to {}", file.display())
                .map_err(write_failed)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_report(out: &mut dyn Write, report: &VerifyReport) -> Result<(), Error> {
    let head = match &report.head {
        Some(head) => format!("head {head}"),
        None => "empty".to_owned(),
    };
    match &report.first_broken {
        None => writeln!(out, "audit log intact: {} entries, {head}", report.entries),
        Some(broken) => writeln!(
            out,
            "audit log broken at entry {} ({}): {}\n{} entries read, {head}",
            broken.seq, broken.problem, broken.detail, report.entries
        ),
    }
    .map_err(write_failed)
}
