//! One error type, two wire forms: every [`Error`] maps, in one exhaustive
//! `match`, to an HTTP status with an RFC 9457 problem type and to a gRPC
//! code. Problem bodies say which rule and which field (JSON pointers), never
//! the values sent; internal errors are opaque to clients and logged without
//! personal data.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, Violation};

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where problem types are documented; each type is this prefix and a slug.
pub const PROBLEM_BASE: &str = "https://passerelle.eu/problems/";

/// How one error cause appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireForm {
    /// The HTTP status.
    pub status: StatusCode,
    /// The problem type's slug (appended to [`PROBLEM_BASE`]).
    pub slug: &'static str,
    /// The problem's title: the same for every occurrence of the type.
    pub title: &'static str,
    /// The gRPC status code.
    pub grpc: tonic::Code,
}

/// The wire form of an error.
pub fn wire_form(error: &Error) -> WireForm {
    use tonic::Code;
    let form = |status, slug, title, grpc| WireForm {
        status,
        slug,
        title,
        grpc,
    };
    match error {
        Error::Invalid(_) => form(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The document breaks the schema or a value rule",
            Code::InvalidArgument,
        ),
        Error::Malformed { .. } => form(
            StatusCode::BAD_REQUEST,
            "malformed",
            "The body is not well-formed for its format",
            Code::InvalidArgument,
        ),
        Error::TooLarge { .. } => form(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "The body is larger than the gateway accepts",
            Code::ResourceExhausted,
        ),
        Error::TooDeep { .. } => form(
            StatusCode::BAD_REQUEST,
            "too-deep",
            "The document nests deeper than the gateway accepts",
            Code::InvalidArgument,
        ),
        Error::UnsupportedFormat(_) => form(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-format",
            "The format or media type is not one the endpoint takes",
            Code::InvalidArgument,
        ),
        Error::NotFound(_) => form(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            Code::NotFound,
        ),
        Error::Conflict(_) => form(
            StatusCode::CONFLICT,
            "conflict",
            "The resource exists with other content",
            Code::AlreadyExists,
        ),
        Error::Unauthenticated(_) => form(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The request carries no valid credentials",
            Code::Unauthenticated,
        ),
        Error::Forbidden(_) => form(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The organisation may not do this",
            Code::PermissionDenied,
        ),
        Error::RateLimited { .. } => form(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests from this organisation",
            Code::ResourceExhausted,
        ),
        Error::Refused(_) => form(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            "The referral may not be forwarded",
            Code::FailedPrecondition,
        ),
        Error::IdempotencyKeyReused(_) => form(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "The id was already used with other content",
            Code::AlreadyExists,
        ),
        Error::TimedOut(_) => form(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "The request took longer than the gateway allows",
            Code::DeadlineExceeded,
        ),
        Error::Unavailable(_) => form(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The gateway cannot serve this now",
            Code::Unavailable,
        ),
        Error::Config { .. } | Error::Io { .. } | Error::Internal(_) => form(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            Code::Internal,
        ),
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// The problem type URI.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The type's title.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened here, without input values.
    pub detail: String,
    /// Field violations (JSON pointers, rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ProblemViolation>,
    /// The refusal reason code, for consent and policy refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds to wait, for rate limiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// One violation in a problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProblemViolation {
    /// JSON pointer.
    pub pointer: String,
    /// Stable rule name.
    pub rule: String,
    /// What was expected.
    pub detail: String,
    /// The CSV line, for batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The CSV column, for batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl From<&Violation> for ProblemViolation {
    fn from(violation: &Violation) -> Self {
        Self {
            pointer: violation.pointer.clone(),
            rule: violation.rule.clone(),
            detail: violation.detail.clone(),
            line: violation.line,
            column: violation.column.clone(),
        }
    }
}

impl Problem {
    /// The problem document of an error. Internal errors are logged here
    /// (their messages hold ids and rules, never values) and answered opaquely.
    pub fn of(error: &Error) -> Self {
        let form = wire_form(error);
        let detail = match error {
            Error::Config { .. } | Error::Io { .. } | Error::Internal(_) => {
                tracing::error!(error = %error, "internal error");
                "The gateway failed to handle the request; it is logged. Retry later, or tell the operator."
                    .to_owned()
            }
            Error::Invalid(violations) => format!(
                "{} violation(s); see violations for each field and rule",
                violations.len()
            ),
            other => other.to_string(),
        };
        Self {
            problem_type: format!("{PROBLEM_BASE}{}", form.slug),
            title: form.title.to_owned(),
            status: form.status.as_u16(),
            detail,
            violations: error.violations().iter().map(Into::into).collect(),
            reason: match error {
                Error::Refused(refusal) => Some(refusal.reason.code().to_owned()),
                _ => None,
            },
            retry_after: match error {
                Error::RateLimited {
                    retry_after_seconds,
                } => Some(*retry_after_seconds),
                _ => None,
            },
        }
    }
}

/// An error answered over HTTP as problem+json.
#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        problem_response(&self.0)
    }
}

/// The problem+json response of an error (with `Retry-After` when rate limited).
pub fn problem_response(error: &Error) -> Response {
    let problem = Problem::of(error);
    let status = wire_form(error).status;
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if matches!(error, Error::Unauthenticated(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"passerelle\""),
        );
    }
    if let Some(seconds) = problem.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The gRPC status of an error, with `google.rpc` details: `BadRequest` field
/// violations, `ErrorInfo` with the problem slug and reason code, `RetryInfo`.
pub fn grpc_status(error: &Error) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let form = wire_form(error);
    let problem = Problem::of(error);
    let mut details = ErrorDetails::new();
    for violation in &problem.violations {
        details.add_bad_request_violation(
            violation.pointer.clone(),
            format!("{}: {}", violation.rule, violation.detail),
        );
    }
    let mut metadata = std::collections::HashMap::new();
    if let Some(reason) = &problem.reason {
        metadata.insert("reason".to_owned(), reason.clone());
    }
    details.set_error_info(form.slug, "passerelle.eu", metadata);
    if let Some(seconds) = problem.retry_after {
        details.set_retry_info(Some(std::time::Duration::from_secs(seconds)));
    }
    tonic::Status::with_error_details(form.grpc, problem.detail, details)
}
