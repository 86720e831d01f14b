//! Where plugin bytes come from, and checking them before use.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::sha256_hex;

/// Largest plugin accepted from any source.
pub const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// The source of a plugin's component bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PluginSource {
    /// A file on the operator's filesystem.
    File {
        /// Path of the `.wasm` file.
        path: PathBuf,
        /// Expected SHA-256 (hex), checked when given.
        sha256: Option<String>,
    },
    /// Bytes the caller already holds, e.g. a ConfigMap's `binaryData` key.
    Bytes {
        /// Where they came from, for messages (e.g. `configmap plugins/sel key sel.wasm`).
        origin: String,
        /// The component.
        bytes: Vec<u8>,
        /// Expected SHA-256 (hex), checked when given.
        sha256: Option<String>,
    },
    /// An HTTPS URL; the digest is required because the content can change.
    Https {
        /// The URL.
        url: String,
        /// Expected SHA-256 (hex).
        sha256: String,
    },
}

impl PluginSource {
    /// A short description for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => format!("file {}", path.display()),
            Self::Bytes { origin, .. } => origin.clone(),
            Self::Https { url, .. } => url.clone(),
        }
    }

    fn expected_digest(&self) -> Option<&str> {
        match self {
            Self::File { sha256, .. } | Self::Bytes { sha256, .. } => sha256.as_deref(),
            Self::Https { sha256, .. } => Some(sha256),
        }
    }
}

/// Why the bytes could not be obtained or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file could not be read.
    #[error("could not read plugin file {path}")]
    ReadFile {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The URL is not HTTPS.
    #[error("plugin URL {url} must use https")]
    NotHttps {
        /// The URL.
        url: String,
    },

    /// The download failed.
    #[error("could not download plugin from {url}")]
    Download {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with an error status.
    #[error("downloading plugin from {url} returned HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },

    /// The plugin is larger than the host accepts.
    #[error("plugin from {origin} exceeds {MAX_PLUGIN_BYTES} bytes")]
    TooLarge {
        /// The source.
        origin: String,
    },

    /// The content does not match the expected digest.
    #[error("plugin from {origin} has sha256 {actual}, but {expected} was expected")]
    DigestMismatch {
        /// The source.
        origin: String,
        /// The expected digest.
        expected: String,
        /// The actual digest.
        actual: String,
    },
}

/// Fetches and verifies plugin bytes.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A fetcher using `client` for HTTPS sources.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The bytes of `source`, checked against its digest when it has one.
    pub async fn fetch(&self, source: &PluginSource) -> Result<Vec<u8>, FetchError> {
        let bytes = match source {
            PluginSource::File { path, .. } => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| FetchError::ReadFile {
                        path: path.clone(),
                        source,
                    })?
            }
            PluginSource::Bytes { bytes, .. } => bytes.clone(),
            PluginSource::Https { url, .. } => self.download(url).await?,
        };

        if bytes.len() > MAX_PLUGIN_BYTES {
            return Err(FetchError::TooLarge {
                origin: source.describe(),
            });
        }

        verify_digest(source, &bytes)?;
        Ok(bytes)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if !url.starts_with("https://") {
            return Err(FetchError::NotHttps {
                url: url.to_owned(),
            });
        }

        let download = |source| FetchError::Download {
            url: url.to_owned(),
            source,
        };
        let mut response = self.client.get(url).send().await.map_err(download)?;

        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }

        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(download)? {
            if bytes.len() + chunk.len() > MAX_PLUGIN_BYTES {
                return Err(FetchError::TooLarge {
                    origin: url.to_owned(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }

        Ok(bytes)
    }
}

fn verify_digest(source: &PluginSource, bytes: &[u8]) -> Result<(), FetchError> {
    let Some(expected) = source.expected_digest() else {
        return Ok(());
    };

    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(expected.trim()) {
        return Err(FetchError::DigestMismatch {
            origin: source.describe(),
            expected: expected.to_owned(),
            actual,
        });
    }

    Ok(())
}
