//! The runner's receiver in `conformance run`: it plays every organisation's
//! push endpoint (`POST /receiver/{organisation id}`), checks each message's
//! Standard Webhooks signature and keeps what arrived, so that a case can
//! say exactly what was forwarded to whom.
//!
//! A message with a bad, missing or stale signature is answered 401 and
//! kept, marked, so that the case it belongs to fails with the reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::delivery::webhook::{KIND_HEADER, REFERRAL_HEADER, signature};

/// How far a `webhook-timestamp` may be from the receiver's clock, as
/// Standard Webhooks recommends.
pub const TOLERANCE_SECONDS: i64 = 300;

/// One message the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The organisation it was pushed to (the path's last segment).
    pub organisation: String,
    /// `webhook-id`.
    pub webhook_id: String,
    /// `passerelle-message-kind`.
    pub kind: String,
    /// `passerelle-referral-id`.
    pub referral: String,
    /// Every header, as received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Why the signature was refused, if it was.
    pub signature_problem: Option<&'static str>,
    /// The status it was answered.
    pub status: u16,
}

impl Received {
    /// The `content-type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Default)]
struct Inner {
    received: Vec<Received>,
    /// Referral id → (attempts to fail, status to answer them).
    failing: HashMap<String, (u32, u16)>,
    /// Attempts seen per webhook id.
    attempts: HashMap<String, u32>,
}

/// A running receiver, shared by the cases of a run.
#[derive(Debug, Clone)]
pub struct Capture {
    address: SocketAddr,
    secret: Arc<Vec<u8>>,
    inner: Arc<Mutex<Inner>>,
}

impl Capture {
    /// Starts the receiver on `listen`; messages must be signed with `secret`.
    pub async fn start(listen: SocketAddr, secret: Vec<u8>) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| {
                format!("the conformance receiver cannot listen on {listen}: {error}")
            })?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("the conformance receiver has no address: {error}"))?;
        let capture = Self {
            address,
            secret: Arc::new(secret),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/receiver/{organisation}", post(receive))
            .with_state(capture.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(error = %error, "the conformance receiver stopped");
            }
        });
        Ok(capture)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Makes the first `attempts` attempts of each message of `referral` answer `status`.
    pub fn fail_first(&self, referral: &str, attempts: u32, status: u16) {
        self.lock()
            .failing
            .insert(referral.to_owned(), (attempts, status));
    }

    /// What arrived for `organisation` about `referral`, of `kind`, oldest first.
    pub fn received(&self, organisation: &str, kind: &str, referral: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|message| {
                message.organisation == organisation
                    && message.kind == kind
                    && message.referral == referral
            })
            .cloned()
            .collect()
    }

    /// Everything that arrived about one of `referrals`, oldest first.
    pub fn about(&self, referrals: &[String]) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|message| referrals.contains(&message.referral))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Option<&'static str> {
        let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let (Some(id), Some(timestamp), Some(signatures)) = (
            text("webhook-id"),
            text("webhook-timestamp"),
            text("webhook-signature"),
        ) else {
            return Some("missing webhook-id, webhook-timestamp or webhook-signature");
        };
        let Ok(timestamp) = timestamp.parse::<i64>() else {
            return Some("webhook-timestamp is not a number of seconds");
        };
        if (chrono::Utc::now().timestamp() - timestamp).abs() > TOLERANCE_SECONDS {
            return Some("webhook-timestamp is more than 5 minutes away");
        }
        let expected = signature(&self.secret, id, timestamp, body);
        if signatures.split(' ').any(|candidate| candidate == expected) {
            None
        } else {
            Some("no webhook-signature matches the secret")
        }
    }
}

async fn receive(
    State(capture): State<Capture>,
    Path(organisation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature_problem = capture.verify(&headers, &body);
    let webhook_id = header("webhook-id");
    let referral = header(REFERRAL_HEADER);
    let mut inner = capture.lock();
    let status = if signature_problem.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        let attempt = {
            let seen = inner.attempts.entry(webhook_id.clone()).or_insert(0);
            *seen += 1;
            *seen
        };
        match inner.failing.get(&referral) {
            Some(&(attempts, status)) if attempt <= attempts => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            _ => StatusCode::NO_CONTENT,
        }
    };
    inner.received.push(Received {
        organisation,
        webhook_id,
        kind: header(KIND_HEADER),
        referral,
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        signature_problem,
        status: status.as_u16(),
    });
    status
}
