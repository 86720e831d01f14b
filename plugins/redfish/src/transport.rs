//! What the driver needs from its host: HTTP to the BMC, a small key-value
//! store and a clock.
//!
//! The shapes mirror the `bmc-http`, `kv` and `clock` imports of the
//! `ingot:plugin` WIT package, so the Wasm glue is a thin adapter and the
//! protocol logic runs unchanged against a native transport in tests.

use std::fmt;

/// Which credentials the host attaches to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// None: the service root and other anonymous resources.
    None,
    /// HTTP Basic built by the host from the BMC secret.
    Basic,
    /// The session token kept host-side after a successful login.
    Session,
}

/// One HTTP request to the BMC; the host fixes scheme, host and port.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method, e.g. `GET`.
    pub method: &'static str,
    /// Absolute path on the BMC, e.g. `/redfish/v1/Systems`.
    pub path: String,
    /// Extra headers (never credentials).
    pub headers: Vec<(String, String)>,
    /// Body bytes; empty for none.
    pub body: Vec<u8>,
    /// Credentials the host attaches.
    pub credentials: Credentials,
}

/// One HTTP response from the BMC.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why the host could not carry a request to the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused the request (e.g. a path outside the BMC).
    Denied(String),
    /// No answer within the time allowed.
    Timeout,
    /// No connection could be established, or it broke.
    Connect(String),
    /// TLS failed, e.g. the certificate did not verify.
    Tls(String),
    /// The response exceeded the host's size cap, in bytes.
    TooLarge(u64),
    /// The host has no credentials for this request.
    NoCredentials(String),
    /// Anything else; for humans only.
    Other(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(reason) => write!(f, "request denied by the host: {reason}"),
            Self::Timeout => f.write_str("no answer from the BMC in time"),
            Self::Connect(reason) => write!(f, "cannot connect to the BMC: {reason}"),
            Self::Tls(reason) => write!(f, "TLS with the BMC failed: {reason}"),
            Self::TooLarge(cap) => write!(f, "BMC response larger than {cap} bytes"),
            Self::NoCredentials(reason) => write!(f, "no BMC credentials: {reason}"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for TransportError {}

/// HTTP to this host's BMC, with credentials handled by the host.
pub trait BmcHttp {
    /// Sends one request.
    fn send(&mut self, request: &Request) -> Result<Response, TransportError>;

    /// Sends a session-creation request whose body carries the placeholders
    /// [`USERNAME_PLACEHOLDER`] and [`PASSWORD_PLACEHOLDER`]; the host fills
    /// them in and keeps the token from the `token_header` response header.
    fn login(&mut self, request: &Request, token_header: &str) -> Result<Response, TransportError>;

    /// Drops the session token the host keeps.
    fn forget_session(&mut self);
}

/// Placeholder the host replaces with the JSON-escaped BMC username.
pub const USERNAME_PLACEHOLDER: &str = "{{username}}";

/// Placeholder the host replaces with the JSON-escaped BMC password.
pub const PASSWORD_PLACEHOLDER: &str = "{{password}}";

/// State kept between calls, and time.
pub trait Environment {
    /// Reads a stored value.
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;

    /// Stores a value; a failure only costs idempotency, so it is reported
    /// as a message rather than a typed error.
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;

    /// Removes a value.
    fn delete(&mut self, key: &str);

    /// Milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> u64;

    /// Reads a configuration value of this plugin.
    fn config(&mut self, key: &str) -> Option<String>;
}
