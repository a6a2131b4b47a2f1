//! The conformance suite's runner: integrators prove that their sender,
//! receiver or gateway speaks Passerelle. The suites themselves (requirements,
//! fixtures, cases) live in the top-level `conformance/` folder, one folder per
//! suite version; `conformance/README.md` specifies how a target takes part.
//!
//! # Layout
//! - [`suite`]: a suite folder loaded and checked: requirements, fixtures,
//!   case files (checked against the suite's JSON Schema for cases).
//! - [`run`]: `passerelle conformance run`: each case's requests against a
//!   live gateway, with [`capture`] playing every organisation's receiver.
//! - [`receiver`]: `passerelle conformance receiver`: the runner plays the
//!   gateway against an operator's receiving endpoint.
//! - [`sender`]: `passerelle conformance sender`: an association's sample
//!   messages checked offline, each failure named by the requirement it breaks.
//! - [`mask`]: personal data masked out of what a report shows.
//! - [`report`]: JUnit XML, JSON and a self-contained HTML page.

pub mod capture;
pub mod mask;
pub mod receiver;
pub mod report;
pub mod run;
pub mod sender;
pub mod suite;

use serde::{Deserialize, Serialize};

/// How binding a requirement or a case is (RFC 2119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// MUST: a target failing it does not conform.
    Must,
    /// SHOULD: expected unless the target documents why not.
    Should,
    /// MAY: optional behaviour, checked when present.
    May,
}

impl Level {
    /// The name used in case files, folders and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "must",
            Self::Should => "should",
            Self::May => "may",
        }
    }

    /// Parses a level name (`must`, `should`, `may`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "must" => Some(Self::Must),
            "should" => Some(Self::Should),
            "may" => Some(Self::May),
            _ => None,
        }
    }
}

/// A requirement of the suite, as `requirements.json` states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Its stable id (`CONSENT-01`).
    pub id: String,
    /// What a conforming implementation does.
    pub text: String,
    /// Where it comes from: a GDPR article, a specification section.
    pub source: String,
    /// How binding it is.
    pub level: Level,
}

/// What a case came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Every expectation held.
    Passed,
    /// At least one expectation did not hold; each failure says which and why.
    Failed {
        /// One sentence per expectation that did not hold.
        failures: Vec<String>,
    },
    /// Not run, for the reason given (in the case file or by the runner).
    Skipped {
        /// Why it was not run.
        reason: String,
    },
    /// The case could not be run to its end (its setup failed, the target
    /// could not be reached): counts as a failure.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Outcome {
    /// Whether the case counts against conformance.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Error { .. })
    }
}

/// One request the runner made, or one delivery it received, as a report
/// shows it: personal data already masked (see [`mask`]), credentials
/// replaced by a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What it was in the case (`given[0]`, `when`, `delivered to france-travail-saint-denis`).
    pub label: String,
    /// The HTTP method.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Request headers, credentials masked.
    pub request_headers: Vec<(String, String)>,
    /// The request body, masked.
    pub request_body: String,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Response headers.
    pub response_headers: Vec<(String, String)>,
    /// The response body, masked.
    pub response_body: String,
    /// A command line replaying the request (masked body, key from the environment).
    pub curl: Option<String>,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case id.
    pub id: String,
    /// Its one-line title.
    pub title: String,
    /// Its level.
    pub level: Level,
    /// Its topic (the folder under its level).
    pub topic: String,
    /// The requirements it checks.
    pub requirements: Vec<String>,
    /// What it came to.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What was sent and received, in order.
    pub exchanges: Vec<Exchange>,
}

/// A whole run: what `--report` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// What ran: `gateway`, `receiver` or `sender`.
    pub mode: String,
    /// The suite's name and version (`passerelle-conformance v1 1.0.0`).
    pub suite: String,
    /// The target's URL, or the files checked.
    pub target: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The suite's requirements, for the per-requirement tables.
    pub requirements: Vec<Requirement>,
    /// Every case, in suite order.
    pub cases: Vec<CaseResult>,
}

impl RunReport {
    /// Cases passed, failed (or in error) and skipped.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for case in &self.cases {
            match case.outcome {
                Outcome::Passed => counts.0 += 1,
                Outcome::Failed { .. } | Outcome::Error { .. } => counts.1 += 1,
                Outcome::Skipped { .. } => counts.2 += 1,
            }
        }
        counts
    }

    /// Whether the target conforms: no case failed.
    pub fn conforms(&self) -> bool {
        !self.cases.iter().any(|case| case.outcome.is_failure())
    }
}
