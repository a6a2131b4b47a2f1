//! Webhooks: each message is POSTed to its destination's URL, signed as
//! Standard Webhooks specifies (<https://www.standardwebhooks.com>).
//!
//! - `webhook-id`: the message id, the same on every attempt, so that the
//!   receiver deduplicates;
//! - `webhook-timestamp`: the attempt's time, in Unix seconds;
//! - `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 under the
//!   destination's secret of `{webhook-id}.{webhook-timestamp}.{body}`.
//!
//! The secret is read from its reference (`env:NAME`, `file:PATH`) once, when
//! the sender is built. It is written `whsec_` followed by the base64 of the
//! key (the form Standard Webhooks libraries take), or is the raw key itself,
//! at least 24 bytes long.
//!
//! TLS uses rustls with the ring provider, trusting the destination's `ca`
//! when its configuration gives one, the Mozilla roots (webpki-roots)
//! otherwise. The receiver's answer body is never read: only its status code
//! counts.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Sha256;

use super::{Attempt, Outbound};
use crate::config::PushTarget;
use crate::error::Error;
use crate::policy::KeyReference;

/// The shortest signing key Standard Webhooks allows, in bytes.
pub const MIN_SECRET_BYTES: usize = 24;

/// The prefix of a secret written in the Standard Webhooks form.
pub const SECRET_PREFIX: &str = "whsec_";

/// The kind of message (`referral`, `status_event`).
pub const KIND_HEADER: &str = "passerelle-message-kind";
/// The referral the message belongs to.
pub const REFERRAL_HEADER: &str = "passerelle-referral-id";
/// The attempt number, 1 for the first.
pub const ATTEMPT_HEADER: &str = "passerelle-attempt";

/// The Standard Webhooks signature of a message: `v1,` then the base64 of
/// HMAC-SHA256 under `secret` of `{message_id}.{timestamp}.{body}`.
///
/// `message_id` must not contain a full stop: the signed content would then
/// be ambiguous (the spec's rule; the gateway's ids are UUIDs).
pub fn signature(secret: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The signing key from a secret as its reference gives it: `whsec_` and
/// base64 (surrounding white space ignored), or the raw bytes. Errors
/// describe the form, never the secret.
pub fn parse_secret(written: &[u8]) -> Result<Vec<u8>, String> {
    let trimmed = written.trim_ascii();
    let key = match trimmed.strip_prefix(SECRET_PREFIX.as_bytes()) {
        Some(encoded) => BASE64.decode(encoded).map_err(|_| {
            format!("the secret starts with {SECRET_PREFIX} but what follows is not base64")
        })?,
        None => written.to_vec(),
    };
    if key.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret is {} bytes long; Standard Webhooks asks for at least {MIN_SECRET_BYTES} \
             random bytes (write them as {SECRET_PREFIX} followed by their base64)",
            key.len()
        ));
    }
    Ok(key)
}

/// Sends a destination's messages as signed POSTs to its URL.
pub struct WebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
}

impl fmt::Debug for WebhookSender {
    // The secret stays out of every log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender for `target`: reads its secret, its CA and its client
    /// identity; each attempt may take `timeout`, connection included.
    pub fn new(target: &PushTarget, timeout: Duration) -> Result<Self, Error> {
        let url = reqwest::Url::parse(&target.url)
            .map_err(|error| Error::config("delivery", "url", format!("not a URL ({error})")))?;
        let reference = target.secret.as_ref().ok_or_else(|| {
            Error::config(
                "delivery",
                "secret",
                "missing: webhooks are signed (Standard Webhooks); give env:NAME or file:PATH",
            )
        })?;
        let secret = read_secret(reference)?;
        let tls = tls_config(target)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            // Standard Webhooks: a redirect means the URL should be updated,
            // not followed (and following it would re-send personal data).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Error::Internal(format!("webhook client: {error}")))?;
        Ok(Self {
            client,
            url,
            secret,
        })
    }

    /// One attempt to deliver `message`, signed at `now`. Neither the payload
    /// nor the receiver's answer body is logged or read.
    pub async fn send(&self, message: &Outbound, now: DateTime<Utc>) -> Attempt {
        let timestamp = now.timestamp();
        let headers = match headers(message, timestamp, &self.secret) {
            Ok(headers) => headers,
            Err(reason) => return Attempt::Refused(reason.to_owned()),
        };
        let answer = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(message.body.clone())
            .send()
            .await;
        match answer {
            Ok(response) => classify_status(response.status()),
            Err(error) => Attempt::Retry(classify_error(&error).to_owned()),
        }
    }
}

/// What an HTTP status means for a message: 2xx delivered; 409 delivered (the
/// receiver already holds this `webhook-id`); 410 gone; 408, 425, 429 and 5xx
/// retried; 3xx and the other 4xx refused (a redirect means the configured URL
/// is out of date).
pub fn classify_status(status: StatusCode) -> Attempt {
    let reason = format!("http-{}", status.as_u16());
    match status.as_u16() {
        200..=299 | 409 => Attempt::Delivered,
        410 => Attempt::Gone(reason),
        408 | 425 | 429 | 500..=599 => Attempt::Retry(reason),
        _ => Attempt::Refused(reason),
    }
}

/// The reason of a failure without an answer: `timeout`, `tls` (a
/// certificate or handshake refused), `connect` (no connection), or
/// `transport` (the connection failed or closed before an answer).
fn classify_error(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if caused_by_tls(error) {
        "tls"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// Whether a rustls error is among the causes. I/O errors hide the error
/// they wrap from `source()`, so each is opened with `get_ref`.
fn caused_by_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && caused_by_tls(inner)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

fn headers(message: &Outbound, timestamp: i64, secret: &[u8]) -> Result<HeaderMap, &'static str> {
    // A full stop in the id would make the signed content ambiguous.
    if message.message_id.contains('.') {
        return Err("invalid-message-id");
    }
    let value = |text: &str, reason: &'static str| HeaderValue::from_str(text).map_err(|_| reason);
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("webhook-id"),
        value(&message.message_id, "invalid-message-id")?,
    );
    headers.insert(
        HeaderName::from_static("webhook-timestamp"),
        timestamp.into(),
    );
    headers.insert(
        HeaderName::from_static("webhook-signature"),
        value(
            &signature(secret, &message.message_id, timestamp, &message.body),
            "invalid-signature",
        )?,
    );
    headers.insert(
        CONTENT_TYPE,
        value(message.content_type, "invalid-content-type")?,
    );
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("passerelle/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(
        HeaderName::from_static(KIND_HEADER),
        HeaderValue::from_static(message.kind.as_str()),
    );
    headers.insert(
        HeaderName::from_static(REFERRAL_HEADER),
        value(&message.referral_id, "invalid-referral-id")?,
    );
    headers.insert(
        HeaderName::from_static(ATTEMPT_HEADER),
        message.attempt.into(),
    );
    Ok(headers)
}

fn read_secret(reference: &KeyReference) -> Result<Vec<u8>, Error> {
    reference
        .read()
        .and_then(|written| parse_secret(&written))
        .map_err(|detail| Error::config("delivery", &format!("secret {reference}"), detail))
}

/// The rustls client configuration: the destination's CA, or the Mozilla
/// roots; its client certificate if any; HTTP/2 or HTTP/1.1.
fn tls_config(target: &PushTarget) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if target.ca.is_none() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(ca) = &target.ca {
        let certificates = pem_certificates(ca)?;
        if certificates.is_empty() {
            return Err(pem_error(ca, "no certificate in the file"));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| pem_error(ca, &format!("not a CA certificate ({error})")))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Internal(format!("TLS: {error}")))?
        .with_root_certificates(roots);
    let mut config = match &target.client_identity {
        Some((certificate, key)) => {
            let chain = pem_certificates(certificate)?;
            if chain.is_empty() {
                return Err(pem_error(certificate, "no certificate in the file"));
            }
            let key = read_pem(key).and_then(|bytes| {
                PrivateKeyDer::from_pem_slice(&bytes)
                    .map_err(|error| pem_error(key, &format!("no usable private key ({error})")))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                pem_error(
                    certificate,
                    &format!("the client certificate and key do not make a usable pair ({error})"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read_pem(path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, &format!("cannot read PEM certificates ({error})")))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })
}

fn pem_error(path: &Path, detail: &str) -> Error {
    Error::config(&path.display().to_string(), "(PEM)", detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::MessageKind;

    /// The example of the Standard Webhooks reference libraries' tests.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signature_matches_the_reference_vector() {
        let key = parse_secret(SPEC_SECRET.as_bytes()).expect("the reference secret");
        assert_eq!(key.len(), 24);
        assert_eq!(
            signature(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn signature_covers_the_id_the_timestamp_and_every_byte_of_the_body() {
        let key = parse_secret(SPEC_SECRET.as_bytes()).expect("the reference secret");
        let reference = signature(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_ne!(
            signature(&key, "msg_other", SPEC_TIMESTAMP, SPEC_BODY),
            reference
        );
        assert_ne!(
            signature(&key, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY),
            reference
        );
        // Re-serialised JSON (no space after the colon) is another body.
        assert_ne!(
            signature(&key, SPEC_ID, SPEC_TIMESTAMP, br#"{"test":2432232314}"#),
            reference
        );
    }

    #[test]
    fn secrets_are_taken_in_the_standard_form_or_raw() {
        let raw = b"0123456789abcdefghijklmnopqrstuv";
        let written = format!("{SECRET_PREFIX}{}\n", BASE64.encode(raw));
        assert_eq!(
            parse_secret(written.as_bytes()).expect("whsec_ form"),
            raw.to_vec()
        );
        assert_eq!(parse_secret(raw).expect("raw form"), raw.to_vec());
        // 24 bytes is the least Standard Webhooks allows.
        assert!(parse_secret(&raw[..24]).is_ok());
        assert!(parse_secret(&raw[..23]).is_err());
    }

    #[test]
    fn secret_errors_describe_the_form_never_the_secret() {
        let short = "whsec_c2hvcnQtc2VjcmV0"; // base64 of "short-secret"
        let error = parse_secret(short.as_bytes()).expect_err("too short");
        assert!(error.contains("12 bytes"), "{error}");
        assert!(!error.contains("c2hvcnQtc2VjcmV0"), "{error}");
        let error = parse_secret(b"whsec_not base64 at all!!").expect_err("not base64");
        assert!(error.contains("not base64"), "{error}");
        assert!(!error.contains("at all"), "{error}");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let outcome = |code: u16| classify_status(StatusCode::from_u16(code).expect("status"));
        assert_eq!(outcome(200), Attempt::Delivered);
        assert_eq!(outcome(204), Attempt::Delivered);
        assert_eq!(outcome(409), Attempt::Delivered);
        assert_eq!(outcome(410), Attempt::Gone("http-410".to_owned()));
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(outcome(code), Attempt::Retry(format!("http-{code}")));
        }
        for code in [301, 308, 400, 401, 403, 404, 413, 422] {
            assert_eq!(outcome(code), Attempt::Refused(format!("http-{code}")));
        }
    }

    #[test]
    fn headers_carry_the_signature_of_the_exact_body() {
        let message = Outbound {
            message_id: "0b9d6a8e-5a43-4d4c-9d55-1f0c6b1f2a10".to_owned(),
            kind: MessageKind::StatusEvent,
            referral_id: "ref-2026-0001".to_owned(),
            format: "passerelle-v2".to_owned(),
            content_type: "application/json",
            body: br#"{"status":"accepted"}"#.to_vec(),
            attempt: 3,
        };
        let secret = vec![7_u8; 32];
        let headers = headers(&message, 1_780_000_000, &secret).expect("headers");
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .expect(name)
        };
        assert_eq!(text("webhook-id"), message.message_id);
        assert_eq!(text("webhook-timestamp"), "1780000000");
        assert_eq!(
            text("webhook-signature"),
            signature(&secret, &message.message_id, 1_780_000_000, &message.body)
        );
        assert_eq!(text("content-type"), "application/json");
        assert_eq!(text(KIND_HEADER), "status_event");
        assert_eq!(text(REFERRAL_HEADER), "ref-2026-0001");
        assert_eq!(text(ATTEMPT_HEADER), "3");
    }

    #[test]
    fn an_id_with_a_full_stop_is_refused_before_anything_is_signed() {
        let message = Outbound {
            message_id: "a.b".to_owned(),
            kind: MessageKind::Referral,
            referral_id: "ref".to_owned(),
            format: "passerelle-v2".to_owned(),
            content_type: "application/json",
            body: Vec::new(),
            attempt: 1,
        };
        assert_eq!(
            headers(&message, 0, &[0; 32]).err(),
            Some("invalid-message-id")
        );
    }
}
