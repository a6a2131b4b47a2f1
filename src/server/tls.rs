//! TLS with rustls (ring): the server certificate, ALPN for HTTP/2 and
//! HTTP/1.1 on the same port, and optional client certificates (mTLS) checked
//! against the configured CA; clients without a certificate may still use an
//! API key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::auth::PeerIdentity;
use crate::config::{TlsConfig, normalise_subject};
use crate::error::Error;

/// The rustls server configuration for the gateway.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = certificates(&tls.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|error| {
        pem_error(
            &tls.private_key,
            &format!("no usable private key ({error})"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Internal(format!("TLS: {error}")))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates_of(ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| pem_error(ca, &format!("not a CA certificate ({error})")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|error| pem_error(ca, &format!("unusable client CA ({error})")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certificates, key)
        .map_err(|error| {
            pem_error(
                &tls.certificate,
                &format!("the certificate and key do not make a usable pair ({error})"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let list = certificates_of(path)?;
    if list.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(list)
}

fn certificates_of(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| pem_error(path, &format!("cannot read PEM certificates ({error})")))
}

fn pem_error(path: &Path, detail: &str) -> Error {
    Error::config(&path.display().to_string(), "(PEM)", detail)
}

/// The identity of a verified client certificate.
pub fn peer_identity(certificate: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(PeerIdentity {
        subject: normalise_subject(&parsed.subject().to_string()),
        spki_sha256: hex::encode(Sha256::digest(parsed.public_key().raw)),
    })
}
