//! The `passerelle` command line: offline tools for integrators (validate,
//! translate, list formats and schemas).
//!
//! Exit codes: 0 success; 1 the input is invalid or could not be translated;
//! 2 the command itself is wrong (usage, unreadable file, bad mapping).

pub mod audit;
pub mod conformance;
pub mod consent;
pub mod demo;
pub mod outbox;
pub mod policy;
pub mod serve;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::error::{Error, Violation};
use crate::formats::{self, Context, FormatOptions};
use crate::model::common::{Organisation, OrganisationKind};
use crate::model::ids::{ReferralId, Siret};
use crate::model::{LossReport, Message};
use crate::validate::{self, Limits, SchemaName};

/// Passerelle: carries referrals (orientations) between associations and public employment operators.
#[derive(Debug, Parser)]
#[command(name = "passerelle", version, about)]
pub struct Cli {
    /// The store for commands that keep state: an SQLite file, or a PostgreSQL URL (postgres://...) for `outbox` and `audit`.
    #[arg(long, global = true, default_value = "passerelle.db")]
    pub store: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate canonical JSON documents against their schema (detected from `schema_version` unless given).
    Validate {
        /// The schema to check against (`referral/v1`, `referral/v2`, `status/v1`, `consent/v1`).
        #[arg(long)]
        schema: Option<String>,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Input limits.
        #[command(flatten)]
        limits: LimitArgs,
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Translate a message from one format to another: result on stdout, loss report and errors on stderr.
    Translate {
        /// The input format (see `passerelle formats`).
        #[arg(long)]
        from: String,
        /// The output format.
        #[arg(long)]
        to: String,
        /// The CSV mapping file, for `--from csv`.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Facts the input format does not carry.
        #[command(flatten)]
        context: ContextArgs,
        /// Input limits.
        #[command(flatten)]
        limits: LimitArgs,
        /// The input file, or `-` for standard input.
        #[arg(default_value = "-")]
        input: String,
    },
    /// List the formats, what each can read and write, and their limits.
    Formats,
    /// The closed loop on this machine: the gateway, a receiver playing France Travail, the samples sent and answered.
    Demo {
        /// The gateway configuration to start from.
        #[arg(long, default_value = "config/passerelle.toml")]
        config: PathBuf,
        /// The samples folder.
        #[arg(long, default_value = "samples")]
        samples: PathBuf,
        /// Where the demo's store and received messages go (emptied first).
        #[arg(long, default_value = "passerelle-demo")]
        folder: PathBuf,
    },
    /// Walk through the formats offline on the shared samples: CSV and DORA in, France Travail out, a decision back.
    Tour {
        /// The samples folder.
        #[arg(long, default_value = "samples")]
        samples: PathBuf,
        /// The CSV mapping files folder.
        #[arg(long, default_value = "config/mappings")]
        mappings: PathBuf,
    },
    /// Record consent records and their events in the store, and show them with their derived state.
    Consent {
        /// What to do with consent records.
        #[command(subcommand)]
        action: consent::ConsentAction,
    },
    /// Run the gateway: HTTPS/JSON and gRPC on one port (see config/passerelle.toml).
    Serve {
        /// The configuration file.
        #[arg(long, default_value = "config/passerelle.toml")]
        config: PathBuf,
    },
    /// Generate an API key for an organisation, with the hash to put in the configuration.
    ApiKey {
        /// What to do with API keys.
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Prove conformance: a gateway, an operator's receiver or an association's messages against the suite.
    Conformance {
        /// What to check.
        #[command(subcommand)]
        action: conformance::ConformanceAction,
    },
    /// Inspect the store's outbox and replay its dead letters.
    Outbox {
        /// What to do with the outbox.
        #[command(subcommand)]
        action: outbox::OutboxAction,
    },
    /// Verify the hash chain of the store's audit log, or export it as JSON lines.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        action: audit::AuditAction,
    },
    /// Check minimisation policy files (default: every file in config/policies) and their keys.
    Policy {
        /// What to do with policies.
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Dry run of the forwarding decision: consent, then the policy; prints the minimised referral and the report.
    Minimise {
        /// The minimisation policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The consent record file (consent/v1 JSON); without it the decision is a refusal.
        #[arg(long)]
        consent: Option<PathBuf>,
        /// The time of the decision (RFC 3339; default: now).
        #[arg(long)]
        now: Option<DateTime<Utc>>,
        /// The referral (canonical JSON, v1 or v2).
        referral: PathBuf,
    },
    /// List or show the JSON Schemas.
    Schema {
        /// What to do with the schemas.
        #[command(subcommand)]
        action: SchemaAction,
    },
}

/// `passerelle api-key` actions.
#[derive(Debug, Subcommand)]
pub enum ApiKeyAction {
    /// Print a new random key and its configuration line.
    New,
}

/// `passerelle policy` actions.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Load each policy and resolve its keys; one line per file.
    Check {
        /// The policy files (default: every `.toml` in config/policies).
        files: Vec<PathBuf>,
    },
}

/// `passerelle schema` actions.
#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// List the schemas with the proto message each describes.
    List,
    /// Print one schema.
    Show {
        /// The schema name, for example `referral/v2`.
        name: String,
        /// Print the field paths of the schema's message with their data
        /// category and special-category (GDPR Art. 9) flag instead of the schema.
        #[arg(long)]
        categories: bool,
        /// How to print the categories.
        #[arg(long, value_enum, requires = "categories")]
        output: Option<Output>,
    },
}

/// Output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One line per error, for people.
    Text,
    /// A JSON document, for programs.
    Json,
}

/// Input limits.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Largest accepted document, in bytes.
    #[arg(long, default_value_t = Limits::default().max_bytes)]
    pub max_bytes: u64,
    /// Deepest accepted nesting of objects and arrays.
    #[arg(long, default_value_t = Limits::default().max_depth)]
    pub max_depth: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_bytes,
            max_depth: self.max_depth,
        }
    }
}

/// Facts some formats do not carry (who sends, who receives, which referral).
#[derive(Debug, Clone, clap::Args)]
pub struct ContextArgs {
    /// SIRET of the sending organisation (CSV and DORA inputs; author of France Travail decisions).
    #[arg(long)]
    pub sender: Option<String>,
    /// Kind of the sending organisation.
    #[arg(long, value_enum, default_value_t = Kind::Association)]
    pub sender_kind: Kind,
    /// Name of the sending organisation.
    #[arg(long)]
    pub sender_name: Option<String>,
    /// SIRET of the recipient organisation (CSV and DORA inputs name none).
    #[arg(long)]
    pub recipient: Option<String>,
    /// Kind of the recipient organisation.
    #[arg(long, value_enum, default_value_t = Kind::FranceTravail)]
    pub recipient_kind: Kind,
    /// Name of the recipient organisation.
    #[arg(long)]
    pub recipient_name: Option<String>,
    /// The referral a France Travail decision is about.
    #[arg(long)]
    pub referral_id: Option<String>,
    /// The time to stamp on messages whose format has none (RFC 3339; default: now).
    #[arg(long)]
    pub now: Option<DateTime<Utc>>,
}

/// Organisation kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// An association.
    Association,
    /// France Travail.
    FranceTravail,
    /// A Mission Locale.
    MissionLocale,
    /// A Cap Emploi.
    CapEmploi,
    /// A département.
    Departement,
    /// Any other kind.
    Other,
}

impl From<Kind> for OrganisationKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Association => Self::Association,
            Kind::FranceTravail => Self::FranceTravail,
            Kind::MissionLocale => Self::MissionLocale,
            Kind::CapEmploi => Self::CapEmploi,
            Kind::Departement => Self::Departement,
            Kind::Other => Self::Other,
        }
    }
}

impl ContextArgs {
    fn context(&self, limits: Limits) -> Result<Context, Error> {
        let organisation =
            |flag: &str, siret: &Option<String>, kind: Kind, name: &Option<String>| {
                siret
                    .as_deref()
                    .map(|siret| {
                        Siret::parse(siret)
                            .map(|siret| Organisation {
                                siret,
                                kind: kind.into(),
                                name: name.clone(),
                            })
                            .map_err(|error| usage(format!("--{flag}: {error}")))
                    })
                    .transpose()
            };
        Ok(Context {
            now: self.now.unwrap_or_else(Utc::now),
            sender: organisation("sender", &self.sender, self.sender_kind, &self.sender_name)?,
            recipient: organisation(
                "recipient",
                &self.recipient,
                self.recipient_kind,
                &self.recipient_name,
            )?,
            referral_id: self
                .referral_id
                .as_deref()
                .map(|id| {
                    ReferralId::parse(id).map_err(|error| usage(format!("--referral-id: {error}")))
                })
                .transpose()?,
            limits,
        })
    }
}

fn usage(detail: String) -> Error {
    Error::Config {
        file: "command line".to_owned(),
        key: "arguments".to_owned(),
        detail,
    }
}

/// Runs a parsed command line, writing to the given streams; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let result = match cli.command {
        Command::Validate {
            schema,
            output,
            limits,
            files,
        } => validate_files(schema.as_deref(), output, &limits.limits(), &files, out),
        Command::Translate {
            from,
            to,
            mapping,
            context,
            limits,
            input,
        } => translate(
            &from,
            &to,
            mapping,
            &context,
            &limits.limits(),
            &input,
            out,
            err,
        ),
        Command::Formats => list_formats(out),
        Command::Demo {
            config,
            samples,
            folder,
        } => demo::run(&config, &samples, &folder, out),
        Command::Tour { samples, mappings } => tour(&samples, &mappings, out),
        Command::Schema { action } => schema_command(action, out),
        Command::Consent { action } => consent::run(action, &cli.store, out),
        Command::Serve { config } => serve::run(&config, out),
        Command::ApiKey {
            action: ApiKeyAction::New,
        } => serve::new_api_key(out),
        Command::Outbox { action } => outbox::run(
            action,
            &crate::store::StoreLocation::parse(&cli.store.to_string_lossy()),
            out,
        ),
        Command::Conformance { action } => conformance::run(action, out),
        Command::Audit { action } => audit::run(
            action,
            &crate::store::StoreLocation::parse(&cli.store.to_string_lossy()),
            out,
        ),
        Command::Policy {
            action: PolicyAction::Check { files },
        } => policy::check(&files, out),
        Command::Minimise {
            policy: policy_file,
            consent,
            now,
            referral,
        } => policy::minimise(&policy_file, consent.as_deref(), &referral, now, out),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`passerelle … | head`): nothing more to say to it.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            match error {
                Error::Invalid(_)
                | Error::Malformed { .. }
                | Error::TooLarge { .. }
                | Error::TooDeep { .. } => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}

/// Writes a value as JSON (pretty or on one line), then a newline.
pub(crate) fn write_json<T: Serialize + ?Sized>(
    out: &mut dyn Write,
    value: &T,
    pretty: bool,
) -> Result<(), Error> {
    let written = if pretty {
        serde_json::to_writer_pretty(&mut *out, value)
    } else {
        serde_json::to_writer(&mut *out, value)
    };
    written.map_err(|error| match error.io_error_kind() {
        Some(kind) => write_failed(io::Error::from(kind)),
        None => Error::Internal(format!("encoding JSON: {error}")),
    })?;
    writeln!(out).map_err(write_failed)
}

pub(crate) fn write_failed(source: io::Error) -> Error {
    Error::Io {
        context: "writing the output".to_owned(),
        source,
    }
}

/// The result of validating one file.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'static str>,
    errors: Vec<Violation>,
}

fn validate_files(
    schema: Option<&str>,
    output: Output,
    limits: &Limits,
    files: &[PathBuf],
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let forced = schema.map(SchemaName::parse).transpose()?;
    let mut reports = Vec::new();
    for file in files {
        let bytes = read_file(file, limits)?;
        let (schema, result) = match validate::parse_json(&bytes, limits) {
            Err(error) => (forced, Err(error)),
            Ok(document) => match forced.map_or_else(|| SchemaName::detect(&document), Ok) {
                Err(error) => (None, Err(error)),
                Ok(schema) => (Some(schema), check_document(&document, schema)),
            },
        };
        reports.push(FileReport {
            file: file.display().to_string(),
            valid: result.is_ok(),
            schema: schema.map(SchemaName::as_str),
            errors: result.err().map(violations_of).unwrap_or_default(),
        });
    }
    match output {
        Output::Json => {
            write_json(out, &reports, true)?;
        }
        Output::Text => {
            for report in &reports {
                if report.valid {
                    writeln!(
                        out,
                        "{}: valid ({})",
                        report.file,
                        report.schema.unwrap_or("?")
                    )
                    .map_err(write_failed)?;
                }
                for violation in &report.errors {
                    writeln!(out, "{}: {violation}", report.file).map_err(write_failed)?;
                }
            }
        }
    }
    Ok(if reports.iter().all(|r| r.valid) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks a document against a schema and the typed model behind it.
fn check_document(document: &serde_json::Value, schema: SchemaName) -> Result<(), Error> {
    use crate::model::{status, v1, v2};
    match schema {
        SchemaName::ReferralV1 => {
            validate::decode_value::<v1::Referral>(document, schema).map(drop)
        }
        SchemaName::ReferralV2 => {
            validate::decode_value::<v2::Referral>(document, schema).map(drop)
        }
        SchemaName::StatusV1 => {
            validate::decode_value::<status::StatusEvent>(document, schema).map(drop)
        }
        SchemaName::ConsentV1 => validate::schemas::schema(schema).validate(document),
    }
}

/// Any error as a list of violations, so that every failure prints the same way.
fn violations_of(error: Error) -> Vec<Violation> {
    match error {
        Error::Invalid(violations) => violations,
        Error::TooDeep { pointer, limit } => vec![Violation::new(
            pointer,
            "max-depth",
            format!("at most {limit} levels of nesting"),
        )],
        other => vec![Violation::new("", "document", other.to_string())],
    }
}

fn read_file(file: &Path, limits: &Limits) -> Result<Vec<u8>, Error> {
    let handle = std::fs::File::open(file).map_err(|source| Error::Io {
        context: format!("opening {}", file.display()),
        source,
    })?;
    formats::read_limited(Box::new(handle), limits)
}

#[allow(clippy::too_many_arguments)]
fn translate(
    from: &str,
    to: &str,
    mapping: Option<PathBuf>,
    context: &ContextArgs,
    limits: &Limits,
    input: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let options = FormatOptions { mapping };
    let source = formats::by_name(from, &options)?;
    let target = formats::by_name(to, &options)?;
    if !source.can_decode() {
        return Err(Error::UnsupportedFormat(format!(
            "{from} cannot be read, only written"
        )));
    }
    if !target.can_encode() {
        return Err(Error::UnsupportedFormat(format!(
            "{to} cannot be written, only read"
        )));
    }
    let context = context.context(*limits)?;
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(io::BufReader::new(std::fs::File::open(input).map_err(
            |source| Error::Io {
                context: format!("opening {input}"),
                source,
            },
        )?))
    };
    let mut failures = 0_u64;
    let mut out = io::BufWriter::new(out);
    for record in source.decode(reader, &context)? {
        let prefix = record
            .line
            .map(|line| format!("line {line}: "))
            .unwrap_or_default();
        let encoded = record.result.and_then(|decoded| {
            let mut encoded = target.encode(&decoded.value, &context)?;
            let mut losses = decoded.losses;
            losses.extend(std::mem::take(&mut encoded.losses));
            Ok((decoded.value, encoded.value, losses))
        });
        match encoded {
            Ok((message, bytes, losses)) => {
                write_record(&mut out, record.line, &message, &bytes)?;
                report_losses(err, &prefix, &losses)?;
            }
            Err(error) => {
                failures += 1;
                for violation in violations_of(error) {
                    // A violation located in a CSV row already says its line.
                    let prefix = if violation.line.is_some() {
                        ""
                    } else {
                        prefix.as_str()
                    };
                    writeln!(err, "error: {prefix}{violation}").map_err(write_failed)?;
                }
            }
        }
    }
    out.flush().map_err(write_failed)?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        writeln!(err, "{failures} record(s) refused").map_err(write_failed)?;
        ExitCode::from(1)
    })
}

/// Writes one translated record: a single document as is (pretty JSON), rows of
/// a line-oriented input as JSON lines `{"line": N, "kind": .., "document": ..}`.
fn write_record(
    out: &mut dyn Write,
    line: Option<u64>,
    message: &Message,
    bytes: &[u8],
) -> Result<(), Error> {
    let json: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    match (line, json) {
        (None, Some(json)) => write_json(out, &json, true),
        (None, None) => out.write_all(bytes).map_err(write_failed),
        (Some(line), Some(document)) => {
            let kind = match message {
                Message::Referral(_) => "referral",
                Message::Status(_) => "status",
            };
            let row = serde_json::json!({ "line": line, "kind": kind, "document": document });
            write_json(out, &row, false)
        }
        (Some(_), None) => Err(Error::UnsupportedFormat(
            "a binary output format takes one record; this input has several rows".to_owned(),
        )),
    }
}

fn report_losses(err: &mut dyn Write, prefix: &str, losses: &LossReport) -> Result<(), Error> {
    for loss in &losses.losses {
        writeln!(err, "loss: {prefix}{}: {}", loss.path, loss.reason).map_err(write_failed)?;
    }
    Ok(())
}

fn list_formats(out: &mut dyn Write) -> Result<ExitCode, Error> {
    let options = FormatOptions::default();
    for name in formats::NAMES {
        let direction = match formats::by_name(name, &options) {
            Ok(format) => {
                let direction = match (format.can_decode(), format.can_encode()) {
                    (true, true) => "in, out",
                    (true, false) => "in",
                    (false, true) => "out",
                    (false, false) => "none",
                };
                writeln!(
                    out,
                    "{name} ({direction})\n  {}\n  limits: {}",
                    format.description(),
                    format.limits()
                )
            }
            // The CSV format needs its mapping file to be built; describe it without one.
            Err(_) => writeln!(
                out,
                "{name} (in)\n  {}\n  limits: {}",
                formats::CSV_DESCRIPTION,
                formats::CSV_LIMITS
            ),
        };
        direction.map_err(write_failed)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn schema_command(action: SchemaAction, out: &mut dyn Write) -> Result<ExitCode, Error> {
    match action {
        SchemaAction::List => {
            for name in SchemaName::ALL {
                writeln!(
                    out,
                    "{:<12} {:<26} {}",
                    name.as_str(),
                    name.schema_version(),
                    name.proto_message()
                )
                .map_err(write_failed)?;
            }
        }
        SchemaAction::Show {
            name,
            categories: true,
            output,
        } => {
            return show_categories(
                SchemaName::parse(&name)?,
                output.unwrap_or(Output::Text),
                out,
            );
        }
        SchemaAction::Show { name, .. } => {
            let schema = validate::schemas::schema(SchemaName::parse(&name)?);
            write_json(out, &schema.document, true)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `schema show NAME --categories`: every field path of the schema's message
/// with its data category, as declared in the protos.
fn show_categories(
    schema: SchemaName,
    output: Output,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let fields = crate::model::categories::fields(schema);
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = fields
                .iter()
                .map(|field| {
                    serde_json::json!({
                        "path": field.path,
                        "category": field.category,
                        "special": field.category.is_special(),
                    })
                })
                .collect();
            let document = serde_json::json!({
                "schema": schema.as_str(),
                "message": schema.proto_message(),
                "fields": rows,
            });
            write_json(out, &document, true)?;
        }
        Output::Text if fields.is_empty() => {
            writeln!(
                out,
                "{} ({}) has no field categories: consent records never leave the controller's store",
                schema.as_str(),
                schema.proto_message()
            )
            .map_err(write_failed)?;
        }
        Output::Text => {
            let path_width = fields
                .iter()
                .map(|field| field.path.len())
                .chain(["PATH".len()])
                .max()
                .unwrap_or_default();
            let category_width = fields
                .iter()
                .map(|field| field.category.as_str().len())
                .chain(["CATEGORY".len()])
                .max()
                .unwrap_or_default();
            writeln!(
                out,
                "{:<path_width$}  {:<category_width$}  ART.9",
                "PATH", "CATEGORY"
            )
            .map_err(write_failed)?;
            for field in fields {
                let special = if field.category.is_special() {
                    "yes"
                } else {
                    ""
                };
                let line = format!(
                    "{:<path_width$}  {:<category_width$}  {special}",
                    field.path,
                    field.category.as_str()
                );
                writeln!(out, "{}", line.trim_end()).map_err(write_failed)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tour's steps: a title and the command line that performs it.
fn tour_steps(samples: &Path, mappings: &Path) -> Vec<(&'static str, Vec<String>)> {
    let sample = |name: &str| samples.join(name).display().to_string();
    let mapping = mappings.join("carnet-de-bord.toml").display().to_string();
    let args = |line: &[&str]| line.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "An association's spreadsheet export, read through its mapping file: one canonical v2 referral per row",
            args(&[
                "translate",
                "--from",
                "csv",
                "--mapping",
                &mapping,
                "--to",
                "passerelle-v2",
                "--sender",
                "81234567800013",
                "--sender-name",
                "Konexio Saint-Denis",
                "--recipient",
                "13000548100002",
                "--recipient-name",
                "France Travail Saint-Denis",
                "--now",
                "2026-12-01T09:00:00Z",
                &sample("association-export-cdb.csv"),
            ]),
        ),
        (
            "A DORA orientation, read into the canonical model (what DORA's form has and the model does not is reported)",
            args(&[
                "translate",
                "--from",
                "dora",
                "--to",
                "passerelle-v2",
                "--sender",
                "81234567800013",
                "--recipient",
                "13000548100002",
                "--recipient-name",
                "France Travail Saint-Denis",
                "--now",
                "2026-12-01T09:00:00Z",
                &sample("dora-orientation.json"),
            ]),
        ),
        (
            "A canonical referral written in France Travail's orientationusager/v1 shape (what it cannot carry is reported)",
            args(&[
                "translate",
                "--from",
                "passerelle-v2",
                "--to",
                "france-travail",
                &sample("referral-v2.json"),
            ]),
        ),
        (
            "The same referral served in schema version 1 (what v1 cannot carry is reported)",
            args(&[
                "translate",
                "--from",
                "passerelle-v2",
                "--to",
                "passerelle-v1",
                &sample("referral-v2.json"),
            ]),
        ),
        (
            "France Travail's decision coming back as a status event for the association",
            args(&[
                "translate",
                "--from",
                "france-travail",
                "--to",
                "passerelle-v2",
                "--sender",
                "13000548100002",
                "--sender-kind",
                "france-travail",
                "--referral-id",
                "0b6f1c2e-7d4a-4e59-9c1b-3a2d5e8f9a10",
                &sample("france-travail-decision.json"),
            ]),
        ),
        (
            "Validating a canonical document offline",
            args(&["validate", &sample("referral-v2.json")]),
        ),
    ]
}

fn tour(samples: &Path, mappings: &Path, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let mut failed = 0;
    for (number, (title, arguments)) in tour_steps(samples, mappings).into_iter().enumerate() {
        let shown: Vec<String> = arguments
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        writeln!(
            out,
            "\n== {}. {title}\n$ passerelle {}\n",
            number + 1,
            shown.join(" ")
        )
        .map_err(write_failed)?;
        let cli = Cli::try_parse_from(std::iter::once("passerelle".to_owned()).chain(arguments))
            .map_err(|error| {
                Error::Internal(format!("tour step is not a valid command line: {error}"))
            })?;
        let mut captured = Vec::new();
        let code = run(cli, out, &mut captured);
        out.write_all(&captured).map_err(write_failed)?;
        if code != ExitCode::SUCCESS {
            failed += 1;
        }
    }
    writeln!(
        out,
        "\nEvery step above is a plain command: copy it to run it on your own files. \
         `passerelle formats` lists the formats and their limits."
    )
    .map_err(write_failed)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
