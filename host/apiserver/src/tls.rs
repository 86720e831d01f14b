//! TLS material: a CA kept in the data directory (so kubeconfigs stay valid
//! across restarts), a fresh serving certificate per start, and a client token.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Failures preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file in the data directory could not be read or written.
    #[error("cannot access {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate the {what}")]
    Generate {
        /// Which item.
        what: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// rustls rejected the generated material.
    #[error("cannot build the TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// The material a server start needs.
pub struct TlsMaterial {
    /// CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// Bearer token clients present.
    pub token: String,
    /// rustls configuration for the listener.
    pub server_config: Arc<rustls::ServerConfig>,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::File {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error(path))?;
    file.write_all(contents.as_bytes())
        .map_err(file_error(path))?;
    file.sync_all().map_err(file_error(path))
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| TlsError::Generate {
            what: "CA parameters",
            source,
        })?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ingot development apiserver CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Loads (or creates) the CA and token in `dir`, and issues a serving certificate for `ip`.
pub fn prepare(dir: &Path, ip: IpAddr) -> Result<TlsMaterial, TlsError> {
    let key_path = dir.join("ca.key");
    let cert_path = dir.join("ca.crt");
    let token_path = dir.join("token");

    let (ca_key, ca_pem) = if key_path.exists() && cert_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path).map_err(file_error(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::Generate {
            what: "CA key from ca.key",
            source,
        })?;
        (
            key,
            std::fs::read_to_string(&cert_path).map_err(file_error(&cert_path))?,
        )
    } else {
        let key = KeyPair::generate().map_err(|source| TlsError::Generate {
            what: "CA key",
            source,
        })?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|source| TlsError::Generate {
                what: "CA certificate",
                source,
            })?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        (key, cert.pem())
    };

    let token = if token_path.exists() {
        std::fs::read_to_string(&token_path)
            .map_err(file_error(&token_path))?
            .trim()
            .to_string()
    } else {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_private(&token_path, &token)?;
        token
    };

    let issuer = Issuer::new(ca_params()?, ca_key);
    let server_key = KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "serving key",
        source,
    })?;
    let mut names = vec!["localhost".to_string(), ip.to_string()];
    if ip.to_string() != "127.0.0.1" {
        names.push("127.0.0.1".to_string());
    }
    let mut params = CertificateParams::new(names).map_err(|source| TlsError::Generate {
        what: "serving parameters",
        source,
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ingot-apiserver");
    let server_cert =
        params
            .signed_by(&server_key, &issuer)
            .map_err(|source| TlsError::Generate {
                what: "serving certificate",
                source,
            })?;

    let key_der = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key_der)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        token,
        server_config: Arc::new(config),
    })
}
