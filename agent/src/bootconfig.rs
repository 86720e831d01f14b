//! How the agent finds the operator: the boot configuration.
//!
//! The deploy image carries a small JSON document naming the agent API URL, the CA that signs
//! the API's certificate, the host's name and its token. On a real machine the document is a
//! file in the ramdisk (default `/etc/ingot/agent.json`, or the path given on the kernel
//! command line as `ingot.agent_config=<path>`); in the virtual lab the virtual media URL
//! serves it directly.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default location of the boot configuration inside the deploy ramdisk.
pub const DEFAULT_PATH: &str = "/etc/ingot/agent.json";

/// Kernel command line parameter overriding [`DEFAULT_PATH`].
pub const CMDLINE_PARAMETER: &str = "ingot.agent_config";

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read the agent boot configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid JSON of the expected shape.
    #[error("the agent boot configuration is invalid")]
    Parse(#[source] serde_json::Error),
}

/// Everything the agent needs to reach the operator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootConfig {
    /// Base URL of the agent API, e.g. `https://10.0.0.1:6385`.
    pub api_url: String,
    /// PEM of the CA that signs the agent API's certificate; the only CA the agent trusts for it.
    pub ca_pem: String,
    /// Name of the host this deploy image was made for.
    pub host: String,
    /// The host's secret token.
    pub token: String,
}

impl fmt::Debug for BootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootConfig")
            .field("api_url", &self.api_url)
            .field("host", &self.host)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl BootConfig {
    /// Parses a configuration document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(Error::Parse)
    }

    /// Reads the configuration from `path`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&bytes)
    }

    /// Finds the configuration as a deploy ramdisk provides it: the path named on the kernel
    /// command line, else [`DEFAULT_PATH`].
    pub fn discover() -> Result<Self, Error> {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        Self::from_file(&config_path(&cmdline))
    }
}

fn config_path(cmdline: &str) -> PathBuf {
    let prefix = format!("{CMDLINE_PARAMETER}=");
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_can_point_elsewhere() {
        assert_eq!(
            config_path("quiet ingot.agent_config=/run/a.json console=ttyS0"),
            PathBuf::from("/run/a.json")
        );
        assert_eq!(config_path("quiet"), PathBuf::from(DEFAULT_PATH));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = BootConfig {
            api_url: "https://127.0.0.1:1".into(),
            ca_pem: String::new(),
            host: "node-0".into(),
            token: "s3cr3t-token".into(),
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
