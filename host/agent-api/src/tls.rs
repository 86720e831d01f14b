//! The agent API's own certificate authority.
//!
//! The operator generates a CA once and keeps it (certificate and key) where its state lives.
//! Every deploy image carries the CA certificate, and the agent trusts nothing else for the
//! API; the server certificate is issued from the CA at each start for the configured names.

use std::fmt;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

const CA_COMMON_NAME: &str = "ingot agent API CA";

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration was rejected.
    #[error("invalid TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// A certificate authority: PEM certificate and PEM private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthority {
    /// The CA certificate, given to agents.
    pub cert_pem: String,
    /// The CA private key; keep it secret.
    pub key_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The CA's parameters; fixed so that a stored key re-creates the same issuer name.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl CertificateAuthority {
    /// Generates a new CA.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server configuration with a fresh certificate for `names` (DNS names or IP
    /// addresses), signed by this CA.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, Error> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(names.to_vec())?.signed_by(&leaf_key, &issuer)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)?;
        Ok(Arc::new(config))
    }
}
