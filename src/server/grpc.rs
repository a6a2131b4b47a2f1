//! The gRPC API `passerelle.gateway.v1` (`proto/passerelle/gateway/v1/gateway.proto`),
//! with the standard health and reflection services, mounted on the same
//! router (and port) as the HTTP API.
//!
//! Each method authenticates the caller as HTTP does, turns the typed request
//! into the document the HTTP API takes, calls the same
//! [`Gateway`](crate::gateway::Gateway) method, and types its answer:
//! - a referral is re-encoded and submitted as `passerelle-proto-v1`/`-v2`, so
//!   the protobuf adapter, the schema and every pipeline check apply;
//! - status events and consent records go through their proto3 JSON form
//!   (the canonical JSON of `docs/json-mapping.md`), written and read by
//!   prost-reflect's serde support (`proto_json` below).
//! - answers are typed back from the gateway's canonical values.
//!
//! The inbox (pull delivery, [`inbox`]) is one server stream per open
//! `Pull`: a task leases pages of the caller's inbox and sends their items,
//! then waits for the outbox signal or the delivery poll interval, until the
//! client goes away or the gateway shuts down.
//!
//! Errors are [`grpc_status`] of the one error type. Field violations are JSON
//! pointers from the request message: the gateway's pointers into the document
//! are prefixed with the request field that carries it (`/referral_v2`,
//! `/event`, `/record`).
//!
//! prost drops unknown fields silently, which every other ingress refuses:
//! [`StrictCodec`] decodes each request a second time against the descriptors
//! and refuses any field number the API does not define, at any depth.

use std::collections::BTreeSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, Utc};
use prost::bytes::Buf;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
// tonic's own re-export: the one `Stream` adapter a server stream needs,
// without another dependency.
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use super::AppState;
use super::auth::PeerIdentity;
use super::problem::{grpc_status, wire_form};
use crate::config::Organisation;
use crate::decision::LegalBasis;
use crate::delivery::inbox::{self, InboxItem};
use crate::error::{Error, Violation};
use crate::gateway::{DecisionReport, ReferralView, Role, Submission};
use crate::model::proto::{consent_v1, referral_v2, status_v1};
use crate::model::status::StatusEvent;
use crate::model::v2;

use self::gateway_v1::consent_service_server::{ConsentService, ConsentServiceServer};
use self::gateway_v1::inbox_service_server::{InboxService, InboxServiceServer};
use self::gateway_v1::referral_service_server::{ReferralService, ReferralServiceServer};
use self::gateway_v1::submit_referral_request::Referral as SubmittedReferral;

/// `passerelle.gateway.v1`: messages, servers and clients.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod gateway_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.gateway.v1.rs"));
}

/// The encoded `FileDescriptorSet` of the gateway API and everything it
/// imports (for reflection and the request checks).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/passerelle_gateway_descriptor.bin"
));

/// The gRPC services: `passerelle.gateway.v1`, health (each service reported
/// serving) and reflection (v1). Requests are limited to the configured body
/// size. The routes have no fallback of their own, so that they merge into the
/// HTTP router (whose fallback answers unknown paths).
pub fn routes(state: AppState) -> Routes {
    let limit = usize::try_from(state.gateway.config().server.max_body_bytes).unwrap_or(usize::MAX);
    let referrals = ReferralServiceServer::new(Referrals {
        state: state.clone(),
    })
    .max_decoding_message_size(limit);
    let consents = ConsentServiceServer::new(Consents {
        state: state.clone(),
    })
    .max_decoding_message_size(limit);
    let inboxes = InboxServiceServer::new(Inboxes { state }).max_decoding_message_size(limit);
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in [
        gateway_v1::referral_service_server::SERVICE_NAME,
        gateway_v1::consent_service_server::SERVICE_NAME,
        gateway_v1::inbox_service_server::SERVICE_NAME,
    ] {
        set_serving_now(&reporter, service);
    }
    let routes = Routes::from(axum::Router::new())
        .add_service(health)
        .add_service(referrals)
        .add_service(consents)
        .add_service(inboxes);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => routes.add_service(reflection),
        Err(error) => {
            // The descriptor sets are compiled in and checked by a unit test:
            // failing here is a build defect, not a reason to refuse to serve.
            tracing::error!(error = %error, "gRPC reflection is unavailable");
            routes
        }
    }
}

/// Sets a service's health status on a reporter no one else holds yet.
/// The reporter's setters are async only because they take a tokio lock; a
/// lock nobody else can hold is free at the first poll, so one poll settles
/// it (unconstrained, so that a spent task budget cannot make it wait) and
/// `routes` stays a plain function.
fn set_serving_now(reporter: &HealthReporter, service: &str) {
    let update = std::pin::pin!(tokio::task::unconstrained(
        reporter.set_service_status(service, ServingStatus::Serving)
    ));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    if update.poll(&mut context).is_pending() {
        tracing::error!(service, "the gRPC health status could not be set");
    }
}

// ------------------------------------------------------------------ services

/// `passerelle.gateway.v1.ReferralService` over the gateway.
#[derive(Debug, Clone)]
pub struct Referrals {
    state: AppState,
}

/// `passerelle.gateway.v1.ConsentService` over the gateway.
#[derive(Debug, Clone)]
pub struct Consents {
    state: AppState,
}

/// `passerelle.gateway.v1.InboxService` over the pull inbox ([`inbox`]).
#[derive(Debug, Clone)]
pub struct Inboxes {
    state: AppState,
}

const SUBMIT_REFERRAL: &str = "/passerelle.gateway.v1.ReferralService/SubmitReferral";
const GET_REFERRAL: &str = "/passerelle.gateway.v1.ReferralService/GetReferral";
const POST_STATUS_EVENT: &str = "/passerelle.gateway.v1.ReferralService/PostStatusEvent";
const PUT_CONSENT: &str = "/passerelle.gateway.v1.ConsentService/PutConsent";
const GET_CONSENT: &str = "/passerelle.gateway.v1.ConsentService/GetConsent";
const APPEND_CONSENT_EVENT: &str = "/passerelle.gateway.v1.ConsentService/AppendConsentEvent";
const PULL: &str = "/passerelle.gateway.v1.InboxService/Pull";
const ACKNOWLEDGE: &str = "/passerelle.gateway.v1.InboxService/Acknowledge";

/// The messages a `Pull` stream leases at once when the request leaves
/// `limit` at 0, as `GET /v1/inbox` does without `limit`.
const DEFAULT_PULL_LIMIT: u32 = 20;

/// The fully qualified proto messages carried as JSON documents.
const STATUS_EVENT: &str = "passerelle.status.v1.StatusEvent";
const CONSENT_RECORD: &str = "passerelle.consent.v1.ConsentRecord";
const CONSENT_EVENT: &str = "passerelle.consent.v1.ConsentEvent";

#[tonic::async_trait]
impl ReferralService for Referrals {
    async fn submit_referral(
        &self,
        request: Request<gateway_v1::SubmitReferralRequest>,
    ) -> Result<Response<gateway_v1::SubmitReferralResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            SUBMIT_REFERRAL,
            request,
            |caller, request| async move {
                let (format, field, body) = match request.referral {
                    Some(SubmittedReferral::ReferralV1(referral)) => (
                        "passerelle-proto-v1",
                        "referral_v1",
                        referral.encode_to_vec(),
                    ),
                    Some(SubmittedReferral::ReferralV2(referral)) => (
                        "passerelle-proto-v2",
                        "referral_v2",
                        referral.encode_to_vec(),
                    ),
                    None => {
                        return Err(Error::invalid(
                            "/referral_v2",
                            "required",
                            "a referral (referral_v1 or referral_v2), found none",
                        ));
                    }
                };
                let submission = Submission {
                    format: format.to_owned(),
                    body,
                    recipient: None,
                };
                let answer = gateway
                    .submit(&caller, submission)
                    .await
                    .map_err(|error| within(field, error))?;
                Ok(gateway_v1::SubmitReferralResponse {
                    referral_id: answer.referral_id,
                    state: delivery_state(&answer.state).into(),
                    replayed: answer.replayed,
                    decision: Some(decision_report(answer.decision)),
                })
            },
        )
        .await
    }

    async fn get_referral(
        &self,
        request: Request<gateway_v1::GetReferralRequest>,
    ) -> Result<Response<gateway_v1::GetReferralResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            GET_REFERRAL,
            request,
            |caller, request| async move {
                let view = gateway.referral(&caller, &request.referral_id).await?;
                referral_answer(view)
            },
        )
        .await
    }

    async fn post_status_event(
        &self,
        request: Request<gateway_v1::PostStatusEventRequest>,
    ) -> Result<Response<gateway_v1::PostStatusEventResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            POST_STATUS_EVENT,
            request,
            |caller, request| async move {
                let event = request.event.ok_or_else(|| {
                    Error::invalid("/event", "required", "a status event, found none")
                })?;
                // The event names its referral; HTTP takes it from the path too.
                if event.referral_id.is_empty() {
                    return Err(Error::invalid(
                        "/event/referral_id",
                        "required",
                        "a value, found none",
                    ));
                }
                let referral_id = event.referral_id.clone();
                let answer = async {
                    let body = proto_json::document(&event, STATUS_EVENT)?;
                    gateway
                        .post_event(&caller, &referral_id, "passerelle-v2", &body)
                        .await
                }
                .await
                .map_err(|error| within("event", error))?;
                Ok(gateway_v1::PostStatusEventResponse {
                    event_id: answer.event_id,
                    referral_id: answer.referral_id,
                    replayed: answer.replayed,
                    forwarded: answer.forwarded,
                })
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl ConsentService for Consents {
    async fn put_consent(
        &self,
        request: Request<gateway_v1::PutConsentRequest>,
    ) -> Result<Response<gateway_v1::PutConsentResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            PUT_CONSENT,
            request,
            |caller, request| async move {
                let record = request.record.ok_or_else(|| {
                    Error::invalid("/record", "required", "a consent record, found none")
                })?;
                let answer = async {
                    let body = proto_json::document(&record, CONSENT_RECORD)?;
                    gateway.put_consent(&caller, &body).await
                }
                .await
                .map_err(|error| within("record", error))?;
                Ok(gateway_v1::PutConsentResponse {
                    record_id: answer.record_id,
                    replayed: answer.replayed,
                    state: consent_state(answer.state).into(),
                })
            },
        )
        .await
    }

    async fn get_consent(
        &self,
        request: Request<gateway_v1::GetConsentRequest>,
    ) -> Result<Response<gateway_v1::GetConsentResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            GET_CONSENT,
            request,
            |caller, request| async move {
                let record = gateway.consent(&caller, &request.record_id).await?;
                let state = record.state_at(Utc::now()).as_str();
                let document = serde_json::to_value(&record).map_err(|_| {
                    Error::Internal("a consent record does not encode as JSON".to_owned())
                })?;
                Ok(gateway_v1::GetConsentResponse {
                    record: Some(proto_json::message(&document, CONSENT_RECORD)?),
                    state: consent_state(state).into(),
                })
            },
        )
        .await
    }

    async fn append_consent_event(
        &self,
        request: Request<gateway_v1::AppendConsentEventRequest>,
    ) -> Result<Response<gateway_v1::AppendConsentEventResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            APPEND_CONSENT_EVENT,
            request,
            |caller, request| async move {
                let event = request.event.ok_or_else(|| {
                    Error::invalid("/event", "required", "a consent event, found none")
                })?;
                let answer = async {
                    let body = proto_json::document(&event, CONSENT_EVENT)?;
                    gateway
                        .append_consent_event(&caller, &request.record_id, &body)
                        .await
                }
                .await
                .map_err(|error| within("event", error))?;
                Ok(gateway_v1::AppendConsentEventResponse {
                    record_id: answer.record_id,
                    state: consent_state(answer.state).into(),
                })
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl InboxService for Inboxes {
    type PullStream = ReceiverStream<Result<gateway_v1::PullResponse, Status>>;

    async fn pull(
        &self,
        request: Request<gateway_v1::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let state = self.state.clone();
        answer(&self.state, PULL, request, |caller, request| async move {
            let limit = match request.limit {
                0 => DEFAULT_PULL_LIMIT,
                limit if limit <= inbox::MAX_LIMIT => limit,
                limit => {
                    return Err(Error::invalid(
                        "/limit",
                        "maximum",
                        format!("at most {}, found {limit}", inbox::MAX_LIMIT),
                    ));
                }
            };
            // One message waits in the channel at most: a page is leased only
            // once the previous one is nearly taken, so leases do not run out
            // while their messages queue behind a slow client.
            let (sender, receiver) = mpsc::channel(1);
            tokio::spawn(
                stream_inbox(state, caller, request.after, limit, sender).in_current_span(),
            );
            Ok(ReceiverStream::new(receiver))
        })
        .await
    }

    async fn acknowledge(
        &self,
        request: Request<gateway_v1::AcknowledgeRequest>,
    ) -> Result<Response<gateway_v1::AcknowledgeResponse>, Status> {
        let gateway = &self.state.gateway;
        answer(
            &self.state,
            ACKNOWLEDGE,
            request,
            |caller, request| async move {
                inbox::acknowledge(gateway, &caller, &request.delivery_id).await?;
                Ok(gateway_v1::AcknowledgeResponse {})
            },
        )
        .await
    }
}

/// Sends `caller`'s inbox to a `Pull` stream, from `after` on, `limit`
/// messages leased at a time, until the client goes away (its messages not
/// acknowledged are offered again once their lease ends), an error (sent as
/// the stream's status), or the gateway shuts down (UNAVAILABLE, so that the
/// client opens the stream again on a gateway that serves).
///
/// The outbox signal is one permit shared with the delivery worker and the
/// other streams (`notify_one`), and says nothing of leases ending: an empty
/// inbox is also looked at again every poll interval.
async fn stream_inbox(
    state: AppState,
    caller: Organisation,
    mut after: i64,
    limit: u32,
    sender: mpsc::Sender<Result<gateway_v1::PullResponse, Status>>,
) {
    let gateway = &state.gateway;
    let signal = gateway.outbox_signal();
    let poll_interval = gateway.config().delivery.poll_interval;
    loop {
        if state.is_shutting_down() {
            let status = grpc_status(&Error::Unavailable(
                "the gateway is shutting down; open the stream again".to_owned(),
            ));
            // Whether the client is still there to hear it changes nothing.
            let _ = sender.send(Err(status)).await;
            return;
        }
        let page = match inbox::pull(gateway, &caller, after, limit).await {
            Ok(page) => page,
            Err(error) => {
                let _ = sender.send(Err(grpc_status(&error))).await;
                return;
            }
        };
        after = page.cursor;
        let empty = page.items.is_empty();
        for item in page.items {
            let message = pull_response(item).map_err(|error| grpc_status(&error));
            let failed = message.is_err();
            if sender.send(message).await.is_err() || failed {
                return;
            }
        }
        if empty {
            tokio::select! {
                () = signal.notified() => {}
                () = tokio::time::sleep(poll_interval) => {}
                () = sender.closed() => return,
            }
        }
    }
}

/// Runs one call in a span named after the method (no personal data: the
/// method and the outcome's code), authenticates the caller, and records the
/// request metric with the HTTP status the same outcome has over HTTP, so
/// that both transports count alike.
async fn answer<R, T, F, Fut>(
    state: &AppState,
    method: &'static str,
    request: Request<R>,
    handle: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(Organisation, R) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let span = tracing::info_span!("rpc", method, code = tracing::field::Empty);
    let result = async {
        let caller = caller(state, &request)?;
        handle(caller, request.into_inner()).await
    }
    .instrument(span.clone())
    .await;
    let (code, status) = match &result {
        Ok(_) => (tonic::Code::Ok, 200),
        Err(error) => {
            let form = wire_form(error);
            (form.grpc, form.status.as_u16())
        }
    };
    span.record("code", i32::from(code));
    state
        .gateway
        .metrics()
        .request(method, status, started.elapsed());
    let _entered = span.enter();
    result
        .map(Response::new)
        .map_err(|error| grpc_status(&error))
}

/// The caller, from the `authorization` metadata and the client certificate.
fn caller<R>(state: &AppState, request: &Request<R>) -> Result<Organisation, Error> {
    let authorization = match request.metadata().get("authorization") {
        Some(value) => Some(value.to_str().map_err(|_| {
            Error::Unauthenticated("the authorization metadata is not ASCII".to_owned())
        })?),
        None => None,
    };
    let peer = request.extensions().get::<PeerIdentity>();
    state
        .auth
        .authenticate(&state.gateway.config().organisations, authorization, peer)
}

/// Field violations located in the request: the document's pointers
/// prefixed with the request field that carries it.
fn within(field: &str, error: Error) -> Error {
    match error {
        Error::Invalid(violations) => Error::Invalid(
            violations
                .into_iter()
                .map(|violation| Violation {
                    pointer: format!("/{field}{}", violation.pointer),
                    ..violation
                })
                .collect(),
        ),
        other => other,
    }
}

// ------------------------------------------------------------------ answers

/// The proto value of a delivery state; unspecified for one this API version
/// does not name (the delivery worker may add states before the API does).
fn delivery_state(state: &str) -> gateway_v1::DeliveryState {
    gateway_v1::DeliveryState::from_str_name(&format!(
        "DELIVERY_STATE_{}",
        state.to_ascii_uppercase()
    ))
    .unwrap_or(gateway_v1::DeliveryState::Unspecified)
}

/// The proto value of a consent state (its snake_case name).
fn consent_state(state: &str) -> gateway_v1::ConsentState {
    gateway_v1::ConsentState::from_str_name(&format!(
        "CONSENT_STATE_{}",
        state.to_ascii_uppercase()
    ))
    .unwrap_or(gateway_v1::ConsentState::Unspecified)
}

/// An inbox item, typed. The payload is the item's JSON document, encoded
/// again (it was parsed from the bytes the format wrote).
fn pull_response(item: InboxItem) -> Result<gateway_v1::PullResponse, Error> {
    let lease_until = DateTime::parse_from_rfc3339(&item.lease_until)
        .map_err(|_| Error::Internal("store: a stored lease end does not read back".to_owned()))?
        .with_timezone(&Utc);
    let payload = serde_json::to_vec(&item.message)
        .map_err(|_| Error::Internal("an inbox message does not encode as JSON".to_owned()))?;
    let kind = gateway_v1::InboxItemKind::from_str_name(&format!(
        "INBOX_ITEM_KIND_{}",
        item.kind.to_ascii_uppercase()
    ))
    .unwrap_or(gateway_v1::InboxItemKind::Unspecified);
    Ok(gateway_v1::PullResponse {
        item: Some(gateway_v1::InboxItem {
            delivery_id: item.delivery_id,
            cursor: item.cursor,
            kind: kind.into(),
            referral_id: item.referral_id,
            format: item.format,
            attempt: item.attempt,
            lease_until: Some(timestamp(lease_until)),
            payload,
        }),
    })
}

/// The `Timestamp` of an instant.
fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        // Below 10^9, so it fits; the leap-second form (up to 2*10^9 - 1) is capped.
        nanos: i32::try_from(instant.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(0),
    }
}

fn decision_report(report: DecisionReport) -> gateway_v1::DecisionReport {
    let legal_basis = match report.legal_basis {
        LegalBasis::Consent => consent_v1::LegalBasis::Consent,
        LegalBasis::PublicTask => consent_v1::LegalBasis::PublicTask,
    };
    gateway_v1::DecisionReport {
        policy_id: report.policy_id,
        policy_version: report.policy_version,
        removed: report.removed,
        pseudonymised: report.pseudonymised,
        derived: report.derived,
        consent_record_id: report.consent_record_id,
        legal_basis: legal_basis.into(),
    }
}

/// A referral view, typed. The view holds what the store wrote from the
/// canonical types, so a value that does not read back is an internal error.
fn referral_answer(view: ReferralView) -> Result<gateway_v1::GetReferralResponse, Error> {
    // serde's messages can quote the value they stumbled on, and internal
    // errors are logged: only the kind of document is named.
    fn unreadable(what: &str) -> impl FnOnce(serde_json::Error) -> Error + '_ {
        move |_| Error::Internal(format!("store: a stored {what} does not read back"))
    }
    let referral: v2::Referral =
        serde_json::from_value(view.referral).map_err(unreadable("referral"))?;
    let decision = match view.decision {
        Some(decision) => Some(decision_report(
            serde_json::from_value(decision).map_err(unreadable("decision report"))?,
        )),
        None => None,
    };
    let events = view
        .events
        .into_iter()
        .map(|event| {
            serde_json::from_value::<StatusEvent>(event)
                .map(|event| status_v1::StatusEvent::from(&event))
                .map_err(unreadable("status event"))
        })
        .collect::<Result<_, _>>()?;
    let accepted_at = DateTime::parse_from_rfc3339(&view.accepted_at)
        .map_err(|_| {
            Error::Internal("store: a stored acceptance time does not read back".to_owned())
        })?
        .with_timezone(&Utc);
    let role = match view.role {
        Role::Sender => gateway_v1::Role::Sender,
        Role::Recipient => gateway_v1::Role::Recipient,
    };
    Ok(gateway_v1::GetReferralResponse {
        referral_id: view.referral_id,
        role: role.into(),
        state: delivery_state(&view.state).into(),
        accepted_at: Some(timestamp(accepted_at)),
        referral: Some(referral_v2::Referral::from(&referral)),
        decision,
        events,
    })
}

// ------------------------------------------------------------------ the codec

/// The descriptors of [`DESCRIPTOR_SET`].
fn pool() -> Result<&'static DescriptorPool, Error> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET)
            .map_err(|error| format!("the gateway descriptor set does not decode: {error}"))
    })
    .as_ref()
    .map_err(|detail| Error::Internal(detail.clone()))
}

fn descriptor(message: &str) -> Result<prost_reflect::MessageDescriptor, Error> {
    pool()?
        .get_message_by_name(message)
        .ok_or_else(|| Error::Internal(format!("no descriptor for {message}")))
}

/// The prost codec, strict on requests: a request is refused when it holds a
/// field number its message does not define, at any depth (rule
/// `unknown-field`), as JSON and binary documents are over HTTP. Answers are
/// read leniently, as protobuf clients should: a newer gateway may add fields.
/// Requests are told apart by their names (buf's STANDARD lint makes every
/// request message `<Method>Request`).
#[derive(Debug)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Encodes a message with prost.
#[derive(Debug)]
pub struct ProstEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buffer)
            .map_err(|error| Status::internal(format!("encoding an answer: {error}")))
    }
}

/// Decodes a message with prost, then checks a request for unknown fields.
#[derive(Debug)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buffer.copy_to_bytes(buffer.remaining());
        let name = U::full_name();
        let message = U::decode(bytes.as_ref()).map_err(|error| {
            grpc_status(&Error::Malformed {
                detail: format!("not a protobuf encoding of {name}: {error}"),
                line: None,
                column: None,
            })
        })?;
        if U::PACKAGE == "passerelle.gateway.v1" && U::NAME.ends_with("Request") {
            let unknown = unknown_fields(&bytes, &name).map_err(|error| grpc_status(&error))?;
            if !unknown.is_empty() {
                return Err(grpc_status(&Error::Invalid(unknown)));
            }
        }
        Ok(Some(message))
    }
}

/// Every field of an encoded message whose number its message type does not
/// define, at the JSON pointer of the enclosing message followed by the
/// number (`/referral_v2/person/99`); once per message and number.
pub fn unknown_fields(bytes: &[u8], message: &str) -> Result<Vec<Violation>, Error> {
    let decoded =
        DynamicMessage::decode(descriptor(message)?, bytes).map_err(|error| Error::Malformed {
            detail: format!("not a protobuf encoding of {message}: {error}"),
            line: None,
            column: None,
        })?;
    let mut found = Vec::new();
    each_message(&decoded, "", &mut |message, pointer| {
        let mut numbers = BTreeSet::new();
        for field in message.unknown_fields() {
            if numbers.insert(field.number()) {
                found.push(Violation::new(
                    format!("{pointer}/{}", field.number()),
                    "unknown-field",
                    format!(
                        "no field number {} in {} of this API version, found one",
                        field.number(),
                        message.descriptor().full_name()
                    ),
                ));
            }
        }
    });
    Ok(found)
}

/// Calls `visit` on a message and on every message it holds, at any depth,
/// each with its JSON pointer (field names and list indexes).
fn each_message(
    message: &DynamicMessage,
    pointer: &str,
    visit: &mut dyn FnMut(&DynamicMessage, &str),
) {
    visit(message, pointer);
    for (field, value) in message.fields() {
        let pointer = format!("{pointer}/{}", field.name());
        match value {
            prost_reflect::Value::Message(inner) => each_message(inner, &pointer, visit),
            prost_reflect::Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let prost_reflect::Value::Message(inner) = item {
                        each_message(inner, &format!("{pointer}/{index}"), visit);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The proto3 JSON mapping with the original field names (the JSON form of
/// `docs/json-mapping.md`), by prost-reflect's serde support: messages to the
/// documents the gateway parses, and stored documents back to messages.
mod proto_json {
    use prost::Message;
    use prost_reflect::{DeserializeOptions, DynamicMessage, ReflectMessage, SerializeOptions};
    use serde_json::Value as Json;

    use super::{descriptor, each_message};
    use crate::error::{Error, Violation};

    const TIMESTAMP: &str = "google.protobuf.Timestamp";

    /// Earliest and latest instants of a `Timestamp` (0001-01-01T00:00:00Z and
    /// 9999-12-31T23:59:59Z), in Unix seconds.
    const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

    /// The nanoseconds a `Timestamp` may hold: `google/protobuf/timestamp.proto`
    /// says "must be from 0 to 999,999,999 inclusive".
    const TIMESTAMP_NANOS: std::ops::RangeInclusive<i32> = 0..=999_999_999;

    /// The canonical form: original (snake_case) names and unset fields left
    /// out. Enums are written by name, and an enum number the proto does not
    /// name as a number, which the schema then refuses at its pointer.
    /// `docs/json-mapping.md` maps `int64` to JSON integers where the proto3
    /// mapping writes strings (no field has one today, only `Timestamp`, which
    /// is written as a string anyway).
    const CANONICAL: SerializeOptions = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(false);

    /// The JSON document of a message, as bytes for the gateway. A `Timestamp`
    /// the proto says is invalid is refused at its pointer (rule `format`).
    pub(super) fn document(message: &impl Message, name: &str) -> Result<Vec<u8>, Error> {
        let mut decoded = DynamicMessage::new(descriptor(name)?);
        decoded
            .transcode_from(message)
            .map_err(|error| Error::Internal(format!("re-reading a {name}: {error}")))?;
        let invalid = invalid_timestamps(&decoded);
        if !invalid.is_empty() {
            return Err(Error::Invalid(invalid));
        }
        let mut serializer = serde_json::Serializer::new(Vec::new());
        decoded
            .serialize_with_options(&mut serializer, &CANONICAL)
            .map_err(|_| Error::Internal(format!("a {name} does not encode as JSON")))?;
        Ok(serializer.into_inner())
    }

    /// The message of a JSON document the gateway wrote (from its canonical
    /// types): anything that does not map is an internal error.
    pub(super) fn message<M: Message + Default>(document: &Json, name: &str) -> Result<M, Error> {
        let mut track = serde_path_to_error::Track::new();
        let decoded = DynamicMessage::deserialize_with_options(
            descriptor(name)?,
            serde_path_to_error::Deserializer::new(document, &mut track),
            &DeserializeOptions::new().deny_unknown_fields(true),
        )
        // serde's message may quote the value (personal data): only its
        // place is kept, for the logs.
        .map_err(|_| {
            Error::Internal(format!(
                "a stored {name} does not map to its proto at {}",
                track.path()
            ))
        })?;
        decoded
            .transcode_to()
            .map_err(|error| Error::Internal(format!("re-reading a {name}: {error}")))
    }

    /// Every `Timestamp` outside the proto's range, at its pointer.
    ///
    /// Kept by hand because prost-reflect differs from the canonical form
    /// here: it checks only the seconds, and its error is serde's, with no
    /// place to report; and it normalises nanos outside 0..=999999999 into
    /// another instant (`{seconds: 0, nanos: -1}` prints as
    /// `1969-12-31T23:59:59.999999999Z`, and past 9999 as a year `+10000`)
    /// where the proto says such a `Timestamp` is invalid.
    fn invalid_timestamps(message: &DynamicMessage) -> Vec<Violation> {
        let mut found = Vec::new();
        each_message(message, "", &mut |message, pointer| {
            if message.descriptor().full_name() != TIMESTAMP {
                return;
            }
            let valid = message
                .transcode_to::<prost_types::Timestamp>()
                .is_ok_and(|timestamp| {
                    TIMESTAMP_SECONDS.contains(&timestamp.seconds)
                        && TIMESTAMP_NANOS.contains(&timestamp.nanos)
                });
            if !valid {
                found.push(Violation::new(
                    pointer,
                    "format",
                    "a Timestamp between 0001-01-01 and 9999-12-31 with nanos in 0..=999999999, found one out of range",
                ));
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_in_requests_at_any_depth() {
        const FIELD_99: [u8; 3] = [0x98, 0x06, 0x01]; // field 99, varint, value 1
        let mut person = referral_v2::Person {
            first_name: "Prénomtest".to_owned(),
            ..Default::default()
        }
        .encode_to_vec();
        person.extend(FIELD_99);
        let mut referral = Vec::new();
        prost::encoding::bytes::encode(6, &person, &mut referral);
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(2, &referral, &mut bytes);
        bytes.extend(FIELD_99);
        let found: Vec<(String, String)> =
            unknown_fields(&bytes, "passerelle.gateway.v1.SubmitReferralRequest")
                .expect("decodes")
                .into_iter()
                .map(|violation| (violation.pointer, violation.rule))
                .collect();
        assert_eq!(
            found,
            [
                ("/99".to_owned(), "unknown-field".to_owned()),
                (
                    "/referral_v2/person/99".to_owned(),
                    "unknown-field".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_well_formed_request_has_no_unknown_field() {
        let request = gateway_v1::GetReferralRequest {
            referral_id: "0b6c8e8e-6a49-4d0b-9a57-6c1f1e2b7d10".to_owned(),
        };
        let found = unknown_fields(
            &request.encode_to_vec(),
            "passerelle.gateway.v1.GetReferralRequest",
        )
        .expect("decodes");
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn violations_are_located_in_the_request() {
        let error = within(
            "referral_v2",
            Error::Invalid(vec![
                Violation::new("/person/first_name", "required", "a value, found none"),
                Violation::new("", "type", "an object"),
            ]),
        );
        let pointers: Vec<&str> = error
            .violations()
            .iter()
            .map(|violation| violation.pointer.as_str())
            .collect();
        assert_eq!(pointers, ["/referral_v2/person/first_name", "/referral_v2"]);
        assert!(matches!(
            within("event", Error::NotFound("referral".to_owned())),
            Error::NotFound(_)
        ));
    }

    #[test]
    fn a_status_event_becomes_its_canonical_json() {
        let event = status_v1::StatusEvent {
            event_id: "5f0c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f".to_owned(),
            schema_version: "passerelle.status.v1".to_owned(),
            referral_id: "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7".to_owned(),
            status: status_v1::Status::Rejected.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_796_200_200,
                nanos: 250_000_000,
            }),
            author_siret: "13000548100002".to_owned(),
            rejection_reason: 42,
            ..Default::default()
        };
        let bytes = proto_json::document(&event, STATUS_EVENT).expect("maps");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "event_id": "5f0c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f",
                "schema_version": "passerelle.status.v1",
                "referral_id": "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7",
                "status": "STATUS_REJECTED",
                "occurred_at": "2026-12-02T08:30:00.250Z",
                "author_siret": "13000548100002",
                // Unknown to the schema: kept as a number for the schema to refuse.
                "rejection_reason": 42,
            })
        );
    }

    #[test]
    fn a_timestamp_out_of_range_is_refused_at_its_pointer() {
        let event = consent_v1::ConsentEvent {
            kind: consent_v1::ConsentEventKind::Given.into(),
            at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            recorded_by: "81234567800013".to_owned(),
        };
        let error = proto_json::document(&event, CONSENT_EVENT).expect_err("out of range");
        assert_eq!(error.violations()[0].pointer, "/at");
        assert_eq!(error.violations()[0].rule, "format");
    }

    #[test]
    fn every_timestamp_out_of_range_is_refused_at_its_pointer() {
        let record = consent_v1::ConsentRecord {
            record_id: "9d2f7c1a-8e3b-4a6d-b5c4-1f0e2d3c4b5a".to_owned(),
            // 9999-12-31T23:59:59Z, the last valid instant.
            valid_from: Some(prost_types::Timestamp {
                seconds: 253_402_300_799,
                nanos: 0,
            }),
            // One second later: year 10000.
            valid_until: Some(prost_types::Timestamp {
                seconds: 253_402_300_800,
                nanos: 0,
            }),
            events: vec![
                consent_v1::ConsentEvent {
                    at: Some(prost_types::Timestamp {
                        seconds: 1_796_200_200,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                // Nanos that would carry into the next second.
                consent_v1::ConsentEvent {
                    at: Some(prost_types::Timestamp {
                        seconds: 1_796_200_200,
                        nanos: 1_000_000_000,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let error = proto_json::document(&record, CONSENT_RECORD).expect_err("out of range");
        let found: Vec<(&str, &str)> = error
            .violations()
            .iter()
            .map(|violation| (violation.pointer.as_str(), violation.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [("/valid_until", "format"), ("/events/1/at", "format")]
        );
    }

    #[test]
    fn the_last_instant_and_enum_names_are_written_in_the_canonical_form() {
        let event = consent_v1::ConsentEvent {
            kind: consent_v1::ConsentEventKind::Given.into(),
            at: Some(prost_types::Timestamp {
                seconds: 253_402_300_799,
                nanos: 999_999_999,
            }),
            recorded_by: String::new(),
        };
        let bytes = proto_json::document(&event, CONSENT_EVENT).expect("maps");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "CONSENT_EVENT_KIND_GIVEN",
                "at": "9999-12-31T23:59:59.999999999Z",
            })
        );
    }

    #[test]
    fn a_stored_document_that_does_not_map_is_an_internal_error_without_its_values() {
        let detail = |document: &serde_json::Value| match proto_json::message::<
            consent_v1::ConsentRecord,
        >(document, CONSENT_RECORD)
        {
            Err(Error::Internal(detail)) => detail,
            other => panic!("an internal error, found {other:?}"),
        };
        let (_, canonical) = golden_consent_record();
        // prost-reflect refuses an unknown member from the object that holds it.
        let mut unknown = canonical.clone();
        unknown["events"][1]["nickname"] = serde_json::json!("Prénomtest");
        let found = detail(&unknown);
        assert!(found.ends_with(" at events[1]"), "{found}");
        assert!(!found.contains("Prénomtest"), "{found}");
        let mut misspelt = canonical;
        misspelt["events"][0]["at"] = serde_json::json!("30/11/2026");
        let found = detail(&misspelt);
        assert!(found.ends_with(" at events[0].at"), "{found}");
        assert!(!found.contains("30/11/2026"), "{found}");
    }

    /// The golden consent record, parsed, and its canonical JSON.
    fn golden_consent_record() -> (crate::consent::ConsentRecord, serde_json::Value) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/consent/consent-given.json"
        );
        let text = std::fs::read(path).expect("golden consent record");
        let record =
            crate::consent::ConsentRecord::parse(&text, &crate::validate::Limits::default())
                .expect("valid record");
        let canonical = serde_json::to_value(&record).expect("JSON");
        (record, canonical)
    }

    #[test]
    fn a_consent_record_maps_to_json_and_back_unchanged() {
        let (record, canonical) = golden_consent_record();
        let message: consent_v1::ConsentRecord =
            proto_json::message(&canonical, CONSENT_RECORD).expect("maps to proto");
        assert_eq!(message.collection.as_ref().map(|c| c.method), Some(1));
        assert_eq!(message.events.len(), 2);
        let back = proto_json::document(&message, CONSENT_RECORD).expect("maps to JSON");
        let reparsed =
            crate::consent::ConsentRecord::parse(&back, &crate::validate::Limits::default())
                .expect("still valid");
        assert_eq!(reparsed, record);
        // The very form the gateway writes (names, enum names, UTC times),
        // not only a document that means the same; but `false` in a plain
        // proto3 `bool` is its default, which the proto3 mapping leaves out.
        let mut expected = canonical;
        let removed = expected["collection"]
            .as_object_mut()
            .and_then(|collection| collection.remove("on_behalf_of_guardian"));
        assert_eq!(removed, Some(serde_json::Value::Bool(false)));
        let written: serde_json::Value = serde_json::from_slice(&back).expect("JSON");
        assert_eq!(written, expected);
    }

    #[test]
    fn states_map_to_their_proto_values() {
        for state in [
            "queued",
            "delivered",
            "dead_lettered",
            "withdrawn",
            "expired",
        ] {
            assert_ne!(
                delivery_state(state),
                gateway_v1::DeliveryState::Unspecified,
                "{state}"
            );
        }
        assert_eq!(
            delivery_state("on_the_moon"),
            gateway_v1::DeliveryState::Unspecified
        );
        use crate::consent::ConsentState;
        for state in [
            ConsentState::Active,
            ConsentState::NotYetValid,
            ConsentState::Expired,
            ConsentState::Refused,
            ConsentState::Withdrawn,
            ConsentState::Objected,
            ConsentState::Invalidated,
            ConsentState::NeverGiven,
        ] {
            assert_ne!(
                consent_state(state.as_str()),
                gateway_v1::ConsentState::Unspecified,
                "{state}"
            );
        }
    }

    fn inbox_item(kind: &'static str) -> InboxItem {
        InboxItem {
            delivery_id: "0b6c8e8e-6a49-4d0b-9a57-6c1f1e2b7d10".to_owned(),
            cursor: 7,
            kind,
            referral_id: "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7".to_owned(),
            format: "passerelle-v2".to_owned(),
            attempt: 2,
            lease_until: "2026-12-02T08:30:00.250+00:00".to_owned(),
            message: serde_json::json!({"referral_id": "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7"}),
        }
    }

    #[test]
    fn an_inbox_item_is_typed_with_its_document_as_the_payload() {
        let item = pull_response(inbox_item("referral"))
            .expect("typed")
            .item
            .expect("an item");
        assert_eq!(item.delivery_id, "0b6c8e8e-6a49-4d0b-9a57-6c1f1e2b7d10");
        assert_eq!(item.cursor, 7);
        assert_eq!(item.kind(), gateway_v1::InboxItemKind::Referral);
        assert_eq!(item.referral_id, "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7");
        assert_eq!(item.format, "passerelle-v2");
        assert_eq!(item.attempt, 2);
        assert_eq!(
            item.lease_until,
            Some(prost_types::Timestamp {
                seconds: 1_796_200_200,
                nanos: 250_000_000,
            })
        );
        let payload: serde_json::Value = serde_json::from_slice(&item.payload).expect("JSON");
        assert_eq!(
            payload,
            serde_json::json!({"referral_id": "3f8a1c2e-5b7d-4e9f-a0b1-c2d3e4f5a6b7"})
        );
    }

    #[test]
    fn each_inbox_kind_has_its_proto_value() {
        let kind = |name| {
            pull_response(inbox_item(name))
                .expect("typed")
                .item
                .expect("an item")
                .kind()
        };
        assert_eq!(
            kind(crate::delivery::MessageKind::Referral.as_str()),
            gateway_v1::InboxItemKind::Referral
        );
        assert_eq!(
            kind(crate::delivery::MessageKind::StatusEvent.as_str()),
            gateway_v1::InboxItemKind::StatusEvent
        );
        assert_eq!(
            kind("carrier_pigeon"),
            gateway_v1::InboxItemKind::Unspecified
        );
    }

    #[test]
    fn a_lease_end_that_does_not_read_back_is_an_internal_error() {
        let mut item = inbox_item("referral");
        item.lease_until = String::new();
        assert!(matches!(pull_response(item), Err(Error::Internal(_))));
    }

    #[test]
    fn the_reflection_service_builds_from_the_compiled_descriptors() {
        let services: Vec<String> = prost_types::FileDescriptorSet::decode(DESCRIPTOR_SET)
            .expect("decodes")
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect();
        assert_eq!(
            services,
            [
                "passerelle.gateway.v1.ReferralService",
                "passerelle.gateway.v1.ConsentService",
                "passerelle.gateway.v1.InboxService"
            ]
        );
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("reflection builds");
    }

    #[tokio::test]
    async fn a_service_set_serving_now_is_serving_at_once() {
        use tonic_health::pb::health_check_response::ServingStatus as Wire;
        use tonic_health::pb::health_server::Health;
        let reporter = HealthReporter::new();
        set_serving_now(&reporter, gateway_v1::consent_service_server::SERVICE_NAME);
        let checker = tonic_health::server::HealthService::from_health_reporter(reporter);
        let answer = checker
            .check(Request::new(tonic_health::pb::HealthCheckRequest {
                service: gateway_v1::consent_service_server::SERVICE_NAME.to_owned(),
            }))
            .await
            .expect("known service")
            .into_inner();
        assert_eq!(answer.status, Wire::Serving as i32);
        let unknown = checker
            .check(Request::new(tonic_health::pb::HealthCheckRequest {
                service: "passerelle.gateway.v1.NoSuchService".to_owned(),
            }))
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
}
