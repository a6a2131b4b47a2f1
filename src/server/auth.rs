//! Who is calling: an organisation authenticated by API key (`Authorization:
//! Bearer <key>`, stored as a SHA-256 hash in the configuration) or by client
//! certificate (mTLS: subject or SPKI fingerprint), then held to its rate.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Organisation, Organisations, ServerConfig};
use crate::error::Error;

/// The identity of a TLS client certificate, inserted in each request's
/// extensions by the connection layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's subject, RFC 4514 style (`CN=api, O=Example`), spaces after commas removed.
    pub subject: String,
    /// SHA-256 of its SubjectPublicKeyInfo (DER), lower-case hex.
    pub spki_sha256: String,
}

/// Authenticates callers and applies the per-organisation rate limit.
#[derive(Debug)]
pub struct Authenticator {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Authenticator {
    /// An authenticator with the server's rate.
    pub fn new(server: &ServerConfig) -> Self {
        let per_second = NonZeroU32::new(server.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(server.rate_burst).unwrap_or(per_second);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// The organisation behind a request's credentials. A certificate and a
    /// key must name the same organisation; either alone suffices. Past
    /// authentication, the organisation's rate is checked.
    pub fn authenticate(
        &self,
        organisations: &Organisations,
        authorization: Option<&str>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Organisation, Error> {
        let by_certificate = match peer {
            Some(peer) => Some(
                organisations
                    .by_certificate(&peer.subject, &peer.spki_sha256)
                    .ok_or_else(|| {
                        Error::Unauthenticated(
                            "the client certificate is not registered to any organisation"
                                .to_owned(),
                        )
                    })?,
            ),
            None => None,
        };
        let by_key =
            match authorization {
                Some(value) => {
                    let key = value
                        .strip_prefix("Bearer ")
                        .map(str::trim)
                        .filter(|key| !key.is_empty())
                        .ok_or_else(|| {
                            Error::Unauthenticated(
                                "the Authorization header must be `Bearer <api key>`".to_owned(),
                            )
                        })?;
                    Some(organisations.by_api_key(key).ok_or_else(|| {
                        Error::Unauthenticated("the API key is not valid".to_owned())
                    })?)
                }
                None => None,
            };
        let organisation = match (by_certificate, by_key) {
            (Some(certificate), Some(key)) if certificate.id != key.id => {
                return Err(Error::Unauthenticated(
                    "the client certificate and the API key belong to different organisations"
                        .to_owned(),
                ));
            }
            (Some(organisation), _) | (None, Some(organisation)) => organisation,
            (None, None) => {
                return Err(Error::Unauthenticated(
                    "authenticate with `Authorization: Bearer <api key>` or a client certificate"
                        .to_owned(),
                ));
            }
        };
        if let Err(not_until) = self.limiter.check_key(&organisation.id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Error::RateLimited {
                retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        Ok(organisation.clone())
    }
}
