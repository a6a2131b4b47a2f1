//! One error type for the whole gateway. Messages describe rules and shapes,
//! never the values of the input, because those may be personal data.

use std::fmt;

/// One broken rule at one place of an input document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the document (`""` is the whole document). For CSV rows,
    /// the pointer of the canonical field the column maps to.
    pub pointer: String,
    /// Stable rule name (`required`, `unknown-field`, `siret-checksum`, `maxLength`, ...).
    pub rule: String,
    /// What was expected and what was found, described without repeating the value.
    pub detail: String,
    /// The CSV line (1-based, header is line 1), for spreadsheet inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The CSV source column, for spreadsheet inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl Violation {
    /// A violation at a JSON pointer.
    pub fn new(
        pointer: impl Into<String>,
        rule: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            pointer: pointer.into(),
            rule: rule.into(),
            detail: detail.into(),
            line: None,
            column: None,
        }
    }

    /// The same violation, located at a CSV line and column.
    pub fn at_cell(mut self, line: u64, column: Option<String>) -> Self {
        self.line = Some(line);
        self.column = column;
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(column) = &self.column {
            write!(f, "column \"{column}\": ")?;
        }
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {} ({})", self.detail, self.rule)
    }
}

/// Everything that can go wrong, one variant per cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document breaks schema or value rules (unknown fields included); all are listed.
    #[error("{} violation(s): {}", .0.len(), join(.0))]
    Invalid(Vec<Violation>),
    /// The input is not well-formed for its format (JSON syntax, bad UTF-8, CSV structure).
    #[error("malformed input: {detail}{}", location(*.line, *.column))]
    Malformed {
        /// What is wrong.
        detail: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
    },
    /// The input is larger than the configured limit.
    #[error("input too large: more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The input nests deeper than the configured limit.
    #[error("input nests deeper than {limit} levels at {pointer}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        pointer: String,
    },
    /// No format of that name, or the format cannot go in that direction.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// A configuration or mapping file is wrong.
    #[error("{file}: {key}: {detail}")]
    Config {
        /// The file.
        file: String,
        /// The key or path inside it.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The item named does not exist (a consent record id unknown to the store, ...).
    #[error("not found: {0}")]
    NotFound(String),
    /// The item exists already with other content (same id, different record).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request carries no valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The authenticated organisation may not do this (send as another organisation, ...).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The organisation sent more requests than its rate allows.
    #[error("rate limited: retry after {retry_after_seconds} s")]
    RateLimited {
        /// When to retry, in whole seconds.
        retry_after_seconds: u64,
    },
    /// The referral may not leave: consent, policy or minimisation refused it.
    #[error("refused ({}): {}", .0.reason.code(), .0.explanation)]
    Refused(crate::decision::Refusal),
    /// The same id (idempotency key) was used before with other content.
    #[error("idempotency key reused: {0}")]
    IdempotencyKeyReused(String),
    /// The request took longer than the gateway's request timeout.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The gateway cannot serve now (shutting down, store stopped); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an impossible state; opaque to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The violations, for an invalid document.
    pub fn violations(&self) -> &[Violation] {
        match self {
            Self::Invalid(violations) => violations,
            _ => &[],
        }
    }

    /// A configuration error at a key of a file.
    pub fn config(file: &str, key: &str, detail: impl Into<String>) -> Self {
        Self::Config {
            file: file.to_owned(),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    /// A TOML syntax or shape error in a configuration file, with its line.
    pub fn toml(file: &str, text: &str, key: &str, error: &toml::de::Error) -> Self {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let detail = match line {
            Some(line) => format!("{} (line {line})", error.message()),
            None => error.message().to_owned(),
        };
        Self::config(file, key, detail)
    }

    /// A single-violation error.
    pub fn invalid(
        pointer: impl Into<String>,
        rule: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::Invalid(vec![Violation::new(pointer, rule, detail)])
    }
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}
