//! gRPC push: each message is handed to the destination's
//! `passerelle.receiver.v1.ReceiverService/Deliver`, with the same bytes a
//! webhook would carry and the same message id on every attempt.
//!
//! The channel connects lazily, and again after a failure, so a receiver that
//! is down when the gateway starts is simply retried. TLS uses rustls (ring)
//! with the destination's CA (the Mozilla roots when none is configured), and
//! its client certificate when it has one. The status code alone decides the
//! outcome (see
//! [`classify`]); its message and details are never read.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use self::receiver_v1::receiver_service_client::ReceiverServiceClient;
use self::receiver_v1::{DeliverRequest, MessageKind as WireKind};
use super::{Attempt, MessageKind, Outbound};
use crate::config::PushTarget;
use crate::error::Error;

/// `passerelle.receiver.v1`: messages, client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod receiver_v1 {
    include!(concat!(env!("OUT_DIR"), "/passerelle.receiver.v1.rs"));
}

/// Sends a destination's messages to its `ReceiverService`.
#[derive(Clone)]
pub struct GrpcSender {
    client: ReceiverServiceClient<Channel>,
    url: String,
    timeout: Duration,
}

impl fmt::Debug for GrpcSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcSender")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GrpcSender {
    /// A sender for `target`: checks its URL, CA and client identity now and
    /// connects on the first attempt; each attempt may take `timeout`.
    pub async fn new(target: &PushTarget, timeout: Duration) -> Result<Self, Error> {
        let invalid_url = |error: tonic::transport::Error| {
            Error::config(
                "delivery",
                "url",
                format!("not a usable gRPC URL ({error})"),
            )
        };
        let mut endpoint = Endpoint::from_shared(target.url.clone())
            .map_err(invalid_url)?
            .connect_timeout(timeout)
            .timeout(timeout);
        if target.url.starts_with("https://") {
            let mut tls = match &target.ca {
                Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            if let Some((certificate, key)) = &target.client_identity {
                tls = tls.identity(Identity::from_pem(read(certificate)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(|error| {
                Error::config(
                    "delivery",
                    "ca",
                    format!("the CA or client certificate cannot be used ({error})"),
                )
            })?;
        }
        Ok(Self {
            client: ReceiverServiceClient::new(endpoint.connect_lazy()),
            url: target.url.clone(),
            timeout,
        })
    }

    /// One attempt to deliver `message`. The payload is never logged.
    pub async fn send(&self, message: &Outbound) -> Attempt {
        let mut request = tonic::Request::new(DeliverRequest {
            message_id: message.message_id.clone(),
            kind: wire_kind(message.kind) as i32,
            referral_id: message.referral_id.clone(),
            format: message.format.clone(),
            content_type: message.content_type.to_owned(),
            payload: message.body.clone(),
            attempt: message.attempt,
        });
        // Tells the receiver the deadline (`grpc-timeout`), so it can stop early.
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.deliver(request)).await {
            Ok(Ok(_)) => Attempt::Delivered,
            Ok(Err(status)) => classify(status.code()),
            Err(_) => Attempt::Retry("timeout".to_owned()),
        }
    }
}

fn wire_kind(kind: MessageKind) -> WireKind {
    match kind {
        MessageKind::Referral => WireKind::Referral,
        MessageKind::StatusEvent => WireKind::StatusEvent,
    }
}

/// What a receiver's status code means for a message (the contract written
/// in `receiver.proto`):
/// - OK, and ALREADY_EXISTS (it holds this message id already): delivered;
/// - NOT_FOUND, UNIMPLEMENTED: no receiver service there any more: gone;
/// - INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, PERMISSION_DENIED,
///   UNAUTHENTICATED: trying again would get the same answer: refused;
/// - the others, transient by nature (UNAVAILABLE, DEADLINE_EXCEEDED,
///   RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, CANCELLED, DATA_LOSS):
///   retried.
pub fn classify(code: Code) -> Attempt {
    let reason = format!("grpc-{}", code_name(code));
    match code {
        Code::Ok | Code::AlreadyExists => Attempt::Delivered,
        Code::NotFound | Code::Unimplemented => Attempt::Gone(reason),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated => Attempt::Refused(reason),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled
        | Code::DataLoss => Attempt::Retry(reason),
    }
}

/// The code's name in lower-case words joined by `-` (`not-found`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid-argument",
        Code::DeadlineExceeded => "deadline-exceeded",
        Code::NotFound => "not-found",
        Code::AlreadyExists => "already-exists",
        Code::PermissionDenied => "permission-denied",
        Code::ResourceExhausted => "resource-exhausted",
        Code::FailedPrecondition => "failed-precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out-of-range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data-loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_outcomes() {
        assert_eq!(classify(Code::Ok), Attempt::Delivered);
        assert_eq!(classify(Code::AlreadyExists), Attempt::Delivered);
        assert_eq!(
            classify(Code::NotFound),
            Attempt::Gone("grpc-not-found".to_owned())
        );
        assert_eq!(
            classify(Code::Unimplemented),
            Attempt::Gone("grpc-unimplemented".to_owned())
        );
        assert_eq!(
            classify(Code::InvalidArgument),
            Attempt::Refused("grpc-invalid-argument".to_owned())
        );
        assert_eq!(
            classify(Code::PermissionDenied),
            Attempt::Refused("grpc-permission-denied".to_owned())
        );
        for (code, reason) in [
            (Code::Unavailable, "grpc-unavailable"),
            (Code::DeadlineExceeded, "grpc-deadline-exceeded"),
            (Code::ResourceExhausted, "grpc-resource-exhausted"),
            (Code::Internal, "grpc-internal"),
        ] {
            assert_eq!(classify(code), Attempt::Retry(reason.to_owned()));
        }
    }
}
