//! `passerelle conformance run|receiver|sender`: the conformance suite of
//! `conformance/` against a gateway, an operator's receiver, or an
//! association's sample messages. Exit codes: 0 conforms, 1 does not, 2 the
//! run could not be made.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{ContextArgs, LimitArgs, usage, write_failed};
use crate::conformance::receiver::{self, ReceiverOptions};
use crate::conformance::run::{self, RunOptions};
use crate::conformance::sender::{self, SenderOptions};
use crate::conformance::suite::Suite;
use crate::conformance::{Level, Outcome, RunReport, report};
use crate::delivery::webhook::parse_secret;
use crate::error::Error;

/// The environment variable holding the Standard Webhooks secret shared
/// with the target.
pub const SECRET_VARIABLE: &str = "PASSERELLE_CONFORMANCE_SECRET";

/// `passerelle conformance` actions.
#[derive(Debug, Subcommand)]
pub enum ConformanceAction {
    /// Run the suite's cases against a live gateway, playing every organisation's receiver.
    Run {
        /// The gateway's base URL.
        #[arg(long)]
        target: String,
        /// The suite: a version under conformance/ (`v1`) or a folder.
        #[arg(long, default_value = "v1")]
        suite: String,
        /// Run only the cases of this level (must, should, may).
        #[arg(long)]
        level: Option<String>,
        /// Run only this case (repeatable).
        #[arg(long = "case")]
        cases: Vec<String>,
        /// Where the runner's receiver listens (default: the suite's receiver_listen).
        #[arg(long)]
        receiver_listen: Option<SocketAddr>,
        /// Seconds to wait for an expected delivery.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// Seconds to wait before concluding that nothing more arrives.
        #[arg(long, default_value_t = 0.5)]
        settle: f64,
        /// The CA certificate (PEM) of the target's TLS certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Reports to write: junit=FILE,json=FILE,html=FILE (any of them).
        #[arg(long)]
        report: Option<String>,
    },
    /// Play the gateway against an operator's receiving endpoint (Standard Webhooks).
    Receiver {
        /// The receiving endpoint's URL.
        #[arg(long)]
        target: String,
        /// The suite whose requirements are quoted.
        #[arg(long, default_value = "v1")]
        suite: String,
        /// Where the runner serves the gateway API the receiver posts status events to.
        #[arg(long, default_value = "127.0.0.1:9798")]
        gateway_listen: SocketAddr,
        /// Seconds to wait for a status event to come back.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// The CA certificate (PEM) of the endpoint's TLS certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Reports to write: junit=FILE,json=FILE,html=FILE (any of them).
        #[arg(long)]
        report: Option<String>,
    },
    /// Check an association's messages offline and explain each failure by the requirement it breaks.
    Sender {
        /// The suite whose requirements are quoted.
        #[arg(long, default_value = "v1")]
        suite: String,
        /// The files' format (detected otherwise: .csv, canonical JSON, DORA).
        #[arg(long)]
        format: Option<String>,
        /// The CSV mapping file, for CSV exports.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Facts the formats do not carry.
        #[command(flatten)]
        context: ContextArgs,
        /// Input limits.
        #[command(flatten)]
        limits: LimitArgs,
        /// Reports to write: junit=FILE,json=FILE,html=FILE (any of them).
        #[arg(long)]
        report: Option<String>,
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs a `conformance` action.
pub(crate) fn run(action: ConformanceAction, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let (report, spec) = match action {
        ConformanceAction::Run {
            target,
            suite,
            level,
            cases,
            receiver_listen,
            wait,
            settle,
            ca,
            report,
        } => {
            let level = level
                .map(|name| {
                    Level::parse(&name)
                        .ok_or_else(|| usage(format!("--level {name}: one of must, should, may")))
                })
                .transpose()?;
            let options = RunOptions {
                target,
                suite: suite_folder(&suite),
                level,
                cases,
                receiver_listen,
                receiver_secret: secret()?,
                wait: seconds("--wait", wait)?,
                settle: seconds("--settle", settle)?,
                ca,
            };
            (block_on(run::run(options))?, report)
        }
        ConformanceAction::Receiver {
            target,
            suite,
            gateway_listen,
            wait,
            ca,
            report,
        } => {
            let options = ReceiverOptions {
                target,
                secret: secret()?,
                gateway_listen,
                wait: seconds("--wait", wait)?,
                ca,
            };
            let suite = Suite::load(&suite_folder(&suite)).map_err(usage)?;
            let mut run = block_on(receiver::run(options))?;
            receiver::quote_requirements(&mut run, &suite.requirements);
            run.suite = suite_name(&suite);
            (run, report)
        }
        ConformanceAction::Sender {
            suite,
            format,
            mapping,
            context,
            limits,
            report: spec,
            files,
        } => {
            let suite = Suite::load(&suite_folder(&suite)).map_err(usage)?;
            let options = SenderOptions {
                files,
                format,
                mapping,
                context: context.context(limits.limits())?,
            };
            let mut report = sender::check(&options, &suite.requirements);
            report.suite = suite_name(&suite);
            (report, spec)
        }
    };
    summarise(&report, out)?;
    if let Some(spec) = spec {
        report::write_reports(&report, &spec).map_err(usage)?;
    }
    Ok(if report.conforms() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line per case, its failures under it, then the verdict.
fn summarise(report: &RunReport, out: &mut dyn Write) -> Result<(), Error> {
    for case in &report.cases {
        let (mark, notes): (&str, Vec<&str>) = match &case.outcome {
            Outcome::Passed => ("pass", Vec::new()),
            Outcome::Failed { failures } => ("FAIL", failures.iter().map(String::as_str).collect()),
            Outcome::Error { message } => ("ERROR", vec![message.as_str()]),
            Outcome::Skipped { reason } => ("skip", vec![reason.as_str()]),
        };
        writeln!(
            out,
            "{mark:5} {:6} {:18} {}",
            case.level.as_str(),
            case.topic,
            case.id
        )
        .map_err(write_failed)?;
        for note in notes {
            writeln!(out, "        {note}").map_err(write_failed)?;
        }
    }
    let (passed, failed, skipped) = report.counts();
    writeln!(
        out,
        "{}: {passed} passed, {failed} failed, {skipped} skipped ({} against {}, {:.1} s)",
        if report.conforms() {
            "conforms"
        } else {
            "DOES NOT CONFORM"
        },
        report.suite,
        report.target,
        report.duration_ms as f64 / 1000.0
    )
    .map_err(write_failed)
}

fn suite_name(suite: &Suite) -> String {
    let manifest = &suite.manifest;
    format!("{} {} {}", manifest.name, manifest.suite, manifest.version)
}

/// A folder holding a `suite.json`, or a version under `conformance/` (`v1`).
fn suite_folder(suite: &str) -> PathBuf {
    let folder = PathBuf::from(suite);
    if folder.join("suite.json").is_file() {
        folder
    } else {
        Path::new("conformance").join(suite)
    }
}

fn secret() -> Result<Vec<u8>, Error> {
    let written = std::env::var(SECRET_VARIABLE).map_err(|_| {
        usage(format!(
            "set {SECRET_VARIABLE} to the Standard Webhooks secret (whsec_...) the target signs with"
        ))
    })?;
    parse_secret(written.as_bytes()).map_err(|detail| usage(format!("{SECRET_VARIABLE}: {detail}")))
}

fn seconds(flag: &str, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| usage(format!("{flag} {value}: a number of seconds, 0 or more")))
}

fn block_on<F: Future<Output = Result<RunReport, String>>>(future: F) -> Result<RunReport, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".to_owned(),
            source,
        })?;
    runtime.block_on(future).map_err(usage)
}
