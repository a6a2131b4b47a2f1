//! Delivery: the outbox worker that takes queued messages from the store,
//! checks consent again, writes each in its recipient's format and pushes it
//! (webhook, gRPC) — or leaves it in the recipient's inbox for pull — with
//! retries, backoff and dead letters.
//!
//! # Layout
//! - [`worker`]: claims due messages, re-checks consent, encodes, sends,
//!   records the outcome (retry with backoff, dead letter, cancel).
//! - [`inbox`]: pull delivery: leases and acknowledgements.
//! - [`webhook`]: signed POSTs (Standard Webhooks).
//! - [`grpc_push`]: calls to a receiver's `passerelle.receiver.v1` service.

pub mod grpc_push;
pub mod inbox;
pub mod webhook;
pub mod worker;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A minimised referral, for its recipient.
    Referral,
    /// A status event, for the other party of a referral.
    StatusEvent,
}

impl MessageKind {
    /// The name used in the store, headers and receivers' requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::StatusEvent => "status_event",
        }
    }
}

/// A message ready to leave, already in its recipient's format.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Stable across retries: receivers deduplicate on it (`webhook-id`).
    pub message_id: String,
    /// What it is.
    pub kind: MessageKind,
    /// The referral it belongs to.
    pub referral_id: String,
    /// The format of `body` (`passerelle-v2`, `france-travail`, ...).
    pub format: String,
    /// The media type of `body`.
    pub content_type: &'static str,
    /// The encoded message.
    pub body: Vec<u8>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// What one push attempt came to. Reasons are status codes and error kinds,
/// never what the receiver answered in its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver acknowledged it (2xx, or gRPC OK).
    Delivered,
    /// A transient failure (5xx, 429, 408, timeout, connection refused or
    /// closed): try again later.
    Retry(String),
    /// The receiver refused it for good (4xx but 408, 409, 410, 429; gRPC
    /// INVALID_ARGUMENT ...): dead-letter it now.
    Refused(String),
    /// The receiver is gone (410, gRPC NOT_FOUND/UNIMPLEMENTED on the
    /// service): disable the destination and report it.
    Gone(String),
}
