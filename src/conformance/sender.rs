//! `passerelle conformance sender`: an association's sample messages checked
//! offline, before it connects: each file (each row of a CSV export) is
//! decoded in its format exactly as the gateway would, and every failure is
//! explained against the requirement of the suite it breaks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;

use super::{CaseResult, Level, Outcome, Requirement, RunReport};
use crate::error::{Error, Violation};
use crate::formats::{self, Context, FormatOptions, Record};
use crate::model::Message;

/// Valid against the canonical schema of its declared version.
pub const VALID: &str = "SENDER-01";
/// A referral names the consent record it leaves under.
pub const CONSENT_REFERENCE: &str = "SENDER-02";
/// A canonical document declares its schema version.
pub const SCHEMA_VERSION: &str = "SENDER-03";
/// No field outside the schema.
pub const NO_UNKNOWN_FIELD: &str = "SENDER-04";
/// SIRETs pass their checksum.
pub const SIRET: &str = "SENDER-05";
/// A CSV export has exactly the headers its mapping names.
pub const CSV_HEADERS: &str = "SENDER-06";

/// What `conformance sender` was asked.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// The files to check.
    pub files: Vec<PathBuf>,
    /// Their format; detected from each file otherwise (`.csv` is `csv`, a
    /// JSON document with a `schema_version` is canonical, another is DORA).
    pub format: Option<String>,
    /// The CSV mapping file, for CSV exports.
    pub mapping: Option<PathBuf>,
    /// Facts the formats do not carry (sender, recipient, time, limits).
    pub context: Context,
}

/// Checks each file; one case per document or CSV row. `requirements` are
/// the suite's, so that failures quote them.
pub fn check(options: &SenderOptions, requirements: &[Requirement]) -> RunReport {
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut cases = Vec::new();
    for file in &options.files {
        cases.extend(check_file(file, options, requirements));
    }
    let used: Vec<Requirement> = requirements
        .iter()
        .filter(|requirement| requirement.id.starts_with("SENDER-"))
        .cloned()
        .collect();
    RunReport {
        mode: "sender".to_owned(),
        suite: String::new(),
        target: options
            .files
            .iter()
            .map(|file| file.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started_at: started_at.to_rfc3339(),
        duration_ms: clock.elapsed().as_millis() as u64,
        requirements: used,
        cases,
    }
}

fn check_file(
    file: &Path,
    options: &SenderOptions,
    requirements: &[Requirement],
) -> Vec<CaseResult> {
    let shown = file.display().to_string();
    let clock = Instant::now();
    let whole_file = |requirement: &str, failure: String| {
        vec![case(
            &shown,
            vec![requirement.to_owned()],
            Outcome::Failed {
                failures: vec![explain(failure, requirement, requirements)],
            },
            clock,
        )]
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            return vec![case(
                &shown,
                Vec::new(),
                Outcome::Error {
                    message: format!("cannot be read: {error}"),
                },
                clock,
            )];
        }
    };
    let format = match options
        .format
        .clone()
        .map_or_else(|| detect(file, &bytes), Ok)
    {
        Ok(format) => format,
        Err(failure) => return whole_file(SCHEMA_VERSION, failure),
    };
    let adapter = match formats::by_name(
        &format,
        &FormatOptions {
            mapping: options.mapping.clone(),
        },
    ) {
        Ok(adapter) => adapter,
        Err(error) => {
            return vec![case(
                &shown,
                Vec::new(),
                Outcome::Error {
                    message: error.to_string(),
                },
                clock,
            )];
        }
    };
    let records = match adapter.decode(Box::new(bytes.as_slice()), &options.context) {
        Ok(records) => records,
        // The whole file is refused: for a CSV export, its header row.
        Err(error) => {
            let requirement = if format == "csv" { CSV_HEADERS } else { VALID };
            let failures = violations(error)
                .iter()
                .map(|violation| explain(describe(violation), requirement, requirements))
                .collect();
            return vec![case(
                &shown,
                vec![requirement.to_owned()],
                Outcome::Failed { failures },
                clock,
            )];
        }
    };
    let mut cases = Vec::new();
    for Record { line, result } in records {
        let id = match line {
            Some(line) if format == "csv" => format!("{shown}:{line}"),
            _ => shown.clone(),
        };
        let clock = Instant::now();
        let mut failures = Vec::new();
        let mut broken = Vec::new();
        match result {
            Ok(translated) => {
                if let Message::Referral(referral) = &translated.value
                    && referral
                        .consent_reference
                        .as_deref()
                        .is_none_or(str::is_empty)
                {
                    failures.push(explain(
                        "/consent_reference (required): a referral names the consent record it leaves under"
                            .to_owned(),
                        CONSENT_REFERENCE,
                        requirements,
                    ));
                    broken.push(CONSENT_REFERENCE.to_owned());
                }
            }
            Err(error) => {
                for violation in violations(error) {
                    let requirement = requirement_of(&violation);
                    failures.push(explain(describe(&violation), requirement, requirements));
                    if !broken.iter().any(|id| id == requirement) {
                        broken.push(requirement.to_owned());
                    }
                }
            }
        }
        let outcome = if failures.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed { failures }
        };
        let requirements_checked = if broken.is_empty() {
            vec![VALID.to_owned(), CONSENT_REFERENCE.to_owned()]
        } else {
            broken
        };
        cases.push(case(&id, requirements_checked, outcome, clock));
    }
    if cases.is_empty() {
        return whole_file(VALID, "the file holds no document".to_owned());
    }
    cases
}

fn case(id: &str, requirements: Vec<String>, outcome: Outcome, clock: Instant) -> CaseResult {
    CaseResult {
        id: id.to_owned(),
        title: format!("{id} as an association would send it"),
        level: Level::Must,
        topic: "sender".to_owned(),
        requirements,
        outcome,
        duration_ms: clock.elapsed().as_millis() as u64,
        exchanges: Vec::new(),
    }
}

/// The format of a file, from its extension and content.
fn detect(file: &Path, bytes: &[u8]) -> Result<String, String> {
    if file
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"))
    {
        return Ok("csv".to_owned());
    }
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        format!("not JSON ({error}) and not a .csv file: name its format with --format")
    })?;
    match document.get("schema_version").and_then(|version| version.as_str()) {
        Some(version) if version.starts_with("passerelle.referral.v1") => Ok("passerelle-v1".to_owned()),
        Some(version) if version.starts_with("passerelle.referral.v2") => Ok("passerelle-v2".to_owned()),
        Some(_) => Err("/schema_version: not a referral schema version this suite knows (passerelle.referral.v1 or v2)".to_owned()),
        None if document.get("referral_id").is_some() => Err(
            "/schema_version (required): a canonical referral declares its schema version".to_owned(),
        ),
        None => Ok("dora".to_owned()),
    }
}

fn violations(error: Error) -> Vec<Violation> {
    match error {
        Error::Invalid(violations) => violations,
        other => vec![Violation::new("", "document", other.to_string())],
    }
}

/// The requirement a violation breaks, from its rule and pointer.
fn requirement_of(violation: &Violation) -> &'static str {
    let rule = violation.rule.as_str();
    if rule == "unknown-field" || rule == "additionalProperties" {
        NO_UNKNOWN_FIELD
    } else if rule.starts_with("siret") {
        SIRET
    } else if violation.pointer == "/schema_version" {
        SCHEMA_VERSION
    } else if violation.pointer == "/consent_reference" {
        CONSENT_REFERENCE
    } else if violation.column.is_some() && rule.contains("column") {
        CSV_HEADERS
    } else {
        VALID
    }
}

fn describe(violation: &Violation) -> String {
    let mut text = String::new();
    if let Some(line) = violation.line {
        text.push_str(&format!("line {line}: "));
    }
    if let Some(column) = &violation.column {
        text.push_str(&format!("column {column}: "));
    }
    let pointer = if violation.pointer.is_empty() {
        "the document"
    } else {
        violation.pointer.as_str()
    };
    text.push_str(&format!(
        "{pointer} ({}): {}",
        violation.rule, violation.detail
    ));
    text
}

fn explain(failure: String, requirement: &str, requirements: &[Requirement]) -> String {
    match requirements.iter().find(|known| known.id == requirement) {
        Some(known) => format!(
            "{failure} — breaks {requirement}: {} ({})",
            known.text, known.source
        ),
        None => format!("{failure} — breaks {requirement}"),
    }
}
