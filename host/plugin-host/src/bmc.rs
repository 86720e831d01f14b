//! What a driver call may reach: the current host's BMC, and the credentials
//! the host uses on the plugin's behalf.

use std::fmt;
use std::sync::Arc;

use crate::bindings::types::{BmcAddress, HostRef};

/// The BMC username and password (and optional IPMI BMC key `Kg`).
///
/// `Debug` prints only the username, so credentials never reach a log by
/// accident. The values never cross into a plugin.
#[derive(Clone)]
pub struct BmcCredentials {
    username: String,
    password: String,
    kg: Option<Vec<u8>>,
}

impl BmcCredentials {
    /// Credentials from the host's BMC secret.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            kg: None,
        }
    }

    /// Adds the IPMI BMC key used instead of the password to derive session keys.
    pub fn with_kg(mut self, kg: Vec<u8>) -> Self {
        self.kg = Some(kg);
        self
    }

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// The key for the session integrity key: `Kg` when set, else the password.
    pub(crate) fn session_key_seed(&self) -> &[u8] {
        self.kg.as_deref().unwrap_or(self.password.as_bytes())
    }
}

impl fmt::Debug for BmcCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The BMC a driver call is bound to.
#[derive(Debug, Clone)]
pub struct BmcAccess {
    /// The host the BMC belongs to.
    pub host: HostRef,
    /// The parsed BMC address.
    pub address: BmcAddress,
    /// Credentials from the host's BMC secret, if it has one.
    pub credentials: Option<Arc<BmcCredentials>>,
    /// The host's boot MAC address.
    pub boot_mac_address: Option<String>,
}

/// Where HTTP requests to a BMC go: scheme, host and port fixed by the
/// address, never by the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpTarget {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether to verify the TLS certificate.
    pub verify_tls: bool,
}

impl HttpTarget {
    /// The HTTP target for an address: `+http` in the scheme selects plain
    /// HTTP, anything else HTTPS (Metal3 defaults Redfish to HTTPS).
    pub fn from_address(address: &BmcAddress) -> Self {
        let plain = address.scheme.ends_with("+http") || address.scheme == "http";
        let scheme = if plain { "http" } else { "https" };
        let default_port = if plain { 80 } else { 443 };

        Self {
            scheme,
            host: address.host.clone(),
            port: address.port.unwrap_or(default_port),
            verify_tls: !address.disable_certificate_verification,
        }
    }

    /// `scheme://host:port`, with IPv6 hosts in brackets.
    pub fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }

    /// Key for per-BMC state (session tokens, concurrency).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The UDP endpoint of a BMC: its host and the address's port, else 623.
pub fn datagram_endpoint(address: &BmcAddress) -> (String, u16) {
    (address.host.clone(), address.port.unwrap_or(623))
}
