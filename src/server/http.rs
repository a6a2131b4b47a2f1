//! The HTTP API under `/v1` (JSON; a CSV batch for spreadsheet exports), the
//! health endpoints and the OpenAPI document. Handlers authenticate, call the
//! [`Gateway`](crate::gateway::Gateway) and write its answer or a problem.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::Instrument;

use super::AppState;
use super::auth::PeerIdentity;
use super::problem::{HttpError, Problem, problem_response};
use crate::config::Organisation;
use crate::delivery::inbox;
use crate::error::Error;
use crate::gateway::{CsvBatch, RowAnswer, Submission, at_line};

/// The OpenAPI 3.1 document of this API, as served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/passerelle.json");

/// Media types that declare the canonical schema version of a referral.
const VERSIONED_MEDIA_TYPES: &[(&str, &str)] = &[
    (
        "application/vnd.passerelle.referral.v1+json",
        "passerelle-v1",
    ),
    (
        "application/vnd.passerelle.referral.v2+json",
        "passerelle-v2",
    ),
    (
        "application/vnd.passerelle.referral.v1+protobuf",
        "passerelle-proto-v1",
    ),
    (
        "application/vnd.passerelle.referral.v2+protobuf",
        "passerelle-proto-v2",
    ),
];

/// Every route, as its template (also the `route` attribute of request metrics).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/referrals"),
    ("GET", "/v1/referrals/{id}"),
    ("POST", "/v1/referrals/{id}/events"),
    ("POST", "/v1/consents"),
    ("GET", "/v1/consents/{id}"),
    ("POST", "/v1/consents/{id}/events"),
    ("GET", "/v1/inbox"),
    ("POST", "/v1/inbox/{id}/ack"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/referrals", post(submit_referral))
        .route("/v1/referrals/{id}", get(read_referral))
        .route("/v1/referrals/{id}/events", post(post_event))
        .route("/v1/consents", post(put_consent))
        .route("/v1/consents/{id}", get(read_consent))
        .route("/v1/consents/{id}/events", post(append_consent_event))
        .route("/v1/inbox", get(pull_inbox))
        .route("/v1/inbox/{id}/ack", post(acknowledge))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times and counts each request by route template and status, in a span
/// that holds no personal data (method and route template only).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| {
            ROUTES
                .iter()
                .find(|(_, template)| *template == matched.as_str())
        })
        .map_or("other", |(_, template)| *template);
    let started = Instant::now();
    let span = tracing::info_span!("request", method = %request.method(), route, status = tracing::field::Empty);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    state
        .gateway
        .metrics()
        .request(route, response.status().as_u16(), started.elapsed());
    response
}

/// Unknown paths: a problem for HTTP clients, `UNIMPLEMENTED` for gRPC ones.
pub async fn not_found(headers: HeaderMap) -> Response {
    let grpc = content_type(&headers).is_some_and(|media| media.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("no such gRPC method")
            .into_http::<Body>()
            .into_response();
    }
    problem_response(&Error::NotFound("no such endpoint".to_owned()))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.to_owned(),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_shutting_down() {
        return problem_response(&Error::Unavailable("shutting down".to_owned()));
    }
    match state.gateway.ready().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "readiness check failed");
            problem_response(&Error::Unavailable("the store does not answer".to_owned()))
        }
    }
}

/// The caller, authenticated from the request's headers and certificate.
fn caller(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&PeerIdentity>,
) -> Result<Organisation, Error> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(value.to_str().map_err(|_| {
            Error::Unauthenticated("the Authorization header is not ASCII".to_owned())
        })?),
        None => None,
    };
    state
        .auth
        .authenticate(&state.gateway.config().organisations, authorization, peer)
}

/// Reads the body, refusing more than the configured limit.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Error> {
    let limit = body_limit(state, headers)?;
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        // One copy of the frames into one buffer, whose allocation the Vec
        // then takes over.
        Ok(collected) => Ok(Vec::from(collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Error::TooLarge { limit })
        }
        Err(_) => Err(unreadable_body()),
    }
}

/// The body limit, after refusing a body whose declared length is over it.
fn body_limit(state: &AppState, headers: &HeaderMap) -> Result<u64, Error> {
    let limit = state.gateway.config().server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Error::TooLarge { limit });
    }
    Ok(limit)
}

fn unreadable_body() -> Error {
    Error::Malformed {
        detail: "the request body could not be read to its end".to_owned(),
        line: None,
        column: None,
    }
}

/// The body of a CSV batch as a blocking reader for the thread that decodes
/// it, so that the file is read as its rows are decided and never held whole.
/// It is bounded by the body limit, and must arrive within the request
/// timeout counted from `started`: the batch is answered while its file is
/// read, so the request's own timeout stops at the answer's head. Either
/// failure is an I/O error holding the [`Error`] to answer.
fn body_reader(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    started: tokio::time::Instant,
) -> Result<Box<dyn std::io::Read + Send>, Error> {
    let limit = body_limit(state, headers)?;
    let timeout = state.gateway.config().server.request_timeout;
    let deadline = started + timeout;
    let frames = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .into_data_stream();
    let chunks = futures_util::stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        let failure = match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(bytes))) => return Some((Ok(bytes), Some(frames))),
            Ok(None) => return None,
            Ok(Some(Err(error))) if error.is::<http_body_util::LengthLimitError>() => {
                Error::TooLarge { limit }
            }
            Ok(Some(Err(_))) => unreadable_body(),
            Err(_) => Error::TimedOut(format!(
                "the CSV file was not received within {} s; send it again (rows already \
                 accepted are replayed, not stored twice)",
                timeout.as_secs()
            )),
        };
        // The stream ends after its error.
        Some((Err(std::io::Error::other(failure)), None))
    });
    Ok(Box::new(SyncIoBridge::new(StreamReader::new(Box::pin(
        chunks,
    )))))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// A query string the endpoint cannot read (an unknown or repeated
/// parameter): a problem like any other. The parameters are all strings, so
/// the framework's message names parameters, never values.
fn query_error(rejection: QueryRejection) -> Error {
    Error::Malformed {
        detail: format!("the query string: {}", rejection.body_text()),
        line: None,
        column: None,
    }
}

/// The parameters of `POST /v1/referrals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitParameters {
    /// The input format, when the media type does not declare it.
    format: Option<String>,
    /// The recipient's SIRET, for DORA and CSV.
    recipient: Option<String>,
    /// The mapping name, for CSV.
    mapping: Option<String>,
}

/// The input format of a submission, from `?format=` or the media type; the
/// media type must agree with the format's family.
fn declared_format(parameters: &SubmitParameters, headers: &HeaderMap) -> Result<String, Error> {
    let media = content_type(headers);
    let from_media = media.as_deref().and_then(|media| {
        VERSIONED_MEDIA_TYPES
            .iter()
            .find(|(name, _)| *name == media)
            .map(|(_, format)| *format)
    });
    let format = match (&parameters.format, from_media) {
        (Some(format), Some(declared)) if format != declared => {
            return Err(Error::UnsupportedFormat(format!(
                "the format parameter ({format}) and the media type ({declared}) disagree"
            )));
        }
        (Some(format), _) => format.clone(),
        (None, Some(declared)) => declared.to_owned(),
        (None, None) => {
            return Err(Error::UnsupportedFormat(
                "declare what the body is: Content-Type application/vnd.passerelle.referral.v2+json (or v1), or ?format= one of passerelle-v1, passerelle-v2, passerelle-proto-v1, passerelle-proto-v2, dora, csv"
                    .to_owned(),
            ));
        }
    };
    let expected: &[&str] = match format.as_str() {
        "passerelle-v1" | "passerelle-v2" | "dora" => &[
            "application/json",
            "application/vnd.passerelle.referral.v1+json",
            "application/vnd.passerelle.referral.v2+json",
        ],
        "passerelle-proto-v1" | "passerelle-proto-v2" => &[
            "application/x-protobuf",
            "application/protobuf",
            "application/vnd.passerelle.referral.v1+protobuf",
            "application/vnd.passerelle.referral.v2+protobuf",
        ],
        "csv" => &["text/csv"],
        _ => &[],
    };
    match media {
        Some(media) if expected.contains(&media.as_str()) => Ok(format),
        _ if expected.is_empty() => Ok(format),
        _ => Err(Error::UnsupportedFormat(format!(
            "a {format} body is sent as {}",
            expected.join(" or ")
        ))),
    }
}

/// One row of a CSV batch answer.
#[derive(Debug, Serialize)]
struct RowResult {
    line: Option<u64>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<crate::gateway::DecisionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Problem>,
}

async fn submit_referral(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    parameters: Result<Query<SubmitParameters>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let started = tokio::time::Instant::now();
    let caller = caller(&state, &headers, peer.as_deref())?;
    let Query(parameters) = parameters.map_err(query_error)?;
    let format = declared_format(&parameters, &headers)?;
    if format == "csv" {
        let batch = CsvBatch {
            recipient: parameters.recipient,
            mapping: parameters.mapping,
            input: body_reader(&state, &headers, body, started)?,
        };
        return csv_batch(&state, caller, batch).await;
    }
    let body = read_body(&state, &headers, body).await?;
    let submission = Submission {
        format,
        body,
        recipient: parameters.recipient,
    };
    let answer = state.gateway.submit(&caller, submission).await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(&answer)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/referrals/{}", answer.referral_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if answer.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A CSV batch, answered as a stream: `{"rows":[...],"accepted":N,"refused":M}`,
/// each row written as soon as it is decided while the file is still being
/// read. An error of the whole file found before any row (its header, the
/// mapping) is a problem like any other; one found later ends the stream with
/// an `error` member holding the problem.
///
/// The answers wait in memory only for a client that does not read them yet:
/// one that reads the answer only after sending its whole file (many HTTP/1.1
/// clients do) must not stop the reading of that file, or neither side would
/// move. A client that reads while it sends holds the batch to a few hundred
/// rows in memory, whatever the size of the file.
async fn csv_batch(
    state: &AppState,
    caller: Organisation,
    batch: CsvBatch,
) -> Result<Response, HttpError> {
    let (sink, mut answers) = tokio::sync::mpsc::unbounded_channel::<RowAnswer>();
    let gateway = std::sync::Arc::clone(&state.gateway);
    let batch = tokio::spawn(async move { gateway.submit_csv(&caller, batch, sink).await });
    let first = answers.recv().await;
    let batch = if first.is_none() {
        // No row at all: the batch's own outcome is the answer.
        batch
            .await
            .map_err(|_| Error::Internal("a CSV batch task failed".to_owned()))??;
        None
    } else {
        Some(batch)
    };
    struct Progress {
        next: Option<RowAnswer>,
        answers: tokio::sync::mpsc::UnboundedReceiver<RowAnswer>,
        batch: Option<tokio::task::JoinHandle<Result<(), Error>>>,
        accepted: usize,
        refused: usize,
        opened: bool,
        closed: bool,
    }
    let progress = Progress {
        next: first,
        answers,
        batch,
        accepted: 0,
        refused: 0,
        opened: false,
        closed: false,
    };
    let chunks = futures_util::stream::unfold(progress, |mut progress| async move {
        if progress.closed {
            return None;
        }
        let row = match progress.next.take() {
            Some(row) => Some(row),
            None => progress.answers.recv().await,
        };
        let separator = if progress.opened { "," } else { "{\"rows\":[" };
        if let Some(row) = row {
            progress.opened = true;
            if row.result.is_ok() {
                progress.accepted += 1;
            } else {
                progress.refused += 1;
            }
            let mut chunk = separator.as_bytes().to_vec();
            chunk.extend(serde_json::to_vec(&row_result(row)).unwrap_or_default());
            return Some((Ok::<_, std::convert::Infallible>(chunk), progress));
        }
        progress.closed = true;
        let outcome = match progress.batch.take() {
            Some(batch) => batch
                .await
                .unwrap_or_else(|_| Err(Error::Internal("a CSV batch task failed".to_owned()))),
            None => Ok(()),
        };
        let mut tail = if progress.opened {
            "]".to_owned()
        } else {
            "{\"rows\":[]".to_owned()
        };
        tail.push_str(&format!(
            ",\"accepted\":{},\"refused\":{}",
            progress.accepted, progress.refused
        ));
        if let Err(error) = outcome {
            let problem = serde_json::to_string(&Problem::of(&error)).unwrap_or_default();
            tail.push_str(&format!(",\"error\":{problem}"));
        }
        tail.push('}');
        Some((Ok(tail.into_bytes()), progress))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The answer of one row of a batch.
fn row_result(row: RowAnswer) -> RowResult {
    match row.result {
        Ok(answer) => RowResult {
            line: row.line,
            status: StatusCode::ACCEPTED.as_u16(),
            referral_id: Some(answer.referral_id),
            state: Some(answer.state),
            decision: Some(answer.decision),
            problem: None,
        },
        Err(error) => {
            let problem = Problem::of(&at_line(error, row.line));
            RowResult {
                line: row.line,
                status: problem.status,
                referral_id: None,
                state: None,
                decision: None,
                problem: Some(problem),
            }
        }
    }
}

async fn read_referral(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let view = state.gateway.referral(&caller, &id).await?;
    Ok(axum::Json(view).into_response())
}

/// The parameters of `POST /v1/referrals/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParameters {
    /// `passerelle-v2` (status/v1 JSON, the default) or `france-travail` (a decision).
    format: Option<String>,
}

async fn post_event(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(id): Path<String>,
    parameters: Result<Query<EventParameters>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let Query(parameters) = parameters.map_err(query_error)?;
    let body = read_json_body(&state, &headers, body).await?;
    let format = parameters.format.as_deref().unwrap_or("passerelle-v2");
    let answer = state
        .gateway
        .post_event(&caller, &id, format, &body)
        .await?;
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// Reads a JSON body (`application/json` or a `+json` type), within the limit.
async fn read_json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Error> {
    match content_type(headers) {
        Some(media) if media == "application/json" || media.ends_with("+json") => {
            read_body(state, headers, body).await
        }
        _ => Err(Error::UnsupportedFormat(
            "this endpoint takes Content-Type application/json".to_owned(),
        )),
    }
}

async fn put_consent(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let body = read_json_body(&state, &headers, body).await?;
    let answer = state.gateway.put_consent(&caller, &body).await?;
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(answer)).into_response())
}

async fn read_consent(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let record = state.gateway.consent(&caller, &id).await?;
    Ok(axum::Json(record).into_response())
}

async fn append_consent_event(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let body = read_json_body(&state, &headers, body).await?;
    let answer = state
        .gateway
        .append_consent_event(&caller, &id, &body)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// The parameters of `GET /v1/inbox`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxParameters {
    /// The cursor of the last page (0, or absent, for the start).
    after: Option<i64>,
    /// The most messages to lease (1 to 100, default 20).
    limit: Option<u32>,
}

async fn pull_inbox(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    parameters: Result<Query<InboxParameters>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    let Query(parameters) = parameters.map_err(query_error)?;
    let page = inbox::pull(
        &state.gateway,
        &caller,
        parameters.after.unwrap_or(0),
        parameters.limit.unwrap_or(20),
    )
    .await?;
    Ok(axum::Json(page).into_response())
}

async fn acknowledge(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let caller = caller(&state, &headers, peer.as_deref())?;
    inbox::acknowledge(&state.gateway, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
