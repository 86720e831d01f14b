//! The BMC transports behind the `bmc-http` and `bmc-datagram` imports.
//!
//! Requests can only reach the BMC of the host the call is for: the scheme,
//! host and port come from the host's BMC address and the plugin supplies a
//! path. Credentials are added here, at most one HTTP request per host's BMC
//! is in flight, and responses are size-capped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::bindings::imports::ingot::plugin::bmc_http::{Credentials, Request, Response};
use crate::bindings::imports::ingot::plugin::transport_types::TransportError;
use crate::bmc::{BmcCredentials, HttpTarget};

/// Headers a plugin may not set: the host owns authentication and routing.
const FORBIDDEN_HEADERS: &[&str] = &["authorization", "proxy-authorization", "host", "cookie"];

/// Longest time one datagram receive may wait.
const MAX_DATAGRAM_WAIT: Duration = Duration::from_secs(10);

/// Shared HTTP clients, session tokens and per-BMC locks.
pub struct Transports {
    verifying: reqwest::Client,
    non_verifying: reqwest::Client,
    sessions: Mutex<HashMap<SessionKey, Session>>,
    locks: Mutex<HashMap<BmcKey, Arc<Semaphore>>>,
}

/// One host's BMC: its address and the host. A BMC board manages one host, so this is one
/// lock per board. Hosts behind one Redfish service (a chassis manager, sushy-tools, the lab)
/// share its address yet each has its own system there: one lock per address would queue
/// every host's calls behind one another, and one slow system would make the calls of all the
/// others miss their deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BmcKey {
    authority: String,
    host: String,
}

impl BmcKey {
    fn of(target: &HttpTarget, host: &str) -> Self {
        Self {
            authority: target.authority(),
            host: host.to_owned(),
        }
    }
}

/// Whose session a token is: one plugin's, with one BMC, for one host. Hosts behind one
/// Redfish service share the BMC's address, and their calls run side by side: keyed by
/// address alone, one call's login replaced another's token and its logout took the token
/// from under the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    plugin: String,
    bmc: BmcKey,
}

/// A session token held for one plugin, one BMC and one host.
struct Session {
    header: String,
    token: String,
}

/// Why the transports could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build the BMC HTTP client")]
pub struct TransportSetupError(#[source] reqwest::Error);

impl Transports {
    /// Clients trusting the platform's web PKI roots plus `extra_roots`
    /// (PEM), e.g. a site CA for BMC certificates.
    pub fn new(extra_roots: &[reqwest::Certificate]) -> Result<Self, TransportSetupError> {
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        };

        let verifying = extra_roots
            .iter()
            .fold(builder(), |builder, root| {
                builder.add_root_certificate(root.clone())
            })
            .build()
            .map_err(TransportSetupError)?;
        let non_verifying = builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(TransportSetupError)?;

        Ok(Self {
            verifying,
            non_verifying,
            sessions: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, target: &HttpTarget) -> &reqwest::Client {
        if target.verify_tls {
            &self.verifying
        } else {
            &self.non_verifying
        }
    }

    fn lock_for(&self, target: &HttpTarget, host: &str) -> Arc<Semaphore> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks
            .entry(BmcKey::of(target, host))
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }

    fn session_key(plugin: &str, target: &HttpTarget, host: &str) -> SessionKey {
        SessionKey {
            plugin: plugin.to_owned(),
            bmc: BmcKey::of(target, host),
        }
    }

    /// Forgets a plugin's session with a BMC for one host.
    pub fn forget_session(&self, plugin: &str, target: &HttpTarget, host: &str) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.remove(&Self::session_key(plugin, target, host));
    }

    fn session_header(
        &self,
        plugin: &str,
        target: &HttpTarget,
        host: &str,
    ) -> Option<(String, String)> {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions
            .get(&Self::session_key(plugin, target, host))
            .map(|session| (session.header.clone(), session.token.clone()))
    }

    fn store_session(&self, call: &HttpCall<'_>, header: &str, token: String) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.insert(
            Self::session_key(call.plugin, call.target, call.host),
            Session {
                header: header.to_ascii_lowercase(),
                token,
            },
        );
    }
}

/// One HTTP exchange a plugin asked for, with everything the host decides.
pub struct HttpCall<'a> {
    /// The transports.
    pub transports: &'a Transports,
    /// Plugin name, for session scoping.
    pub plugin: &'a str,
    /// The host the call is for (`namespace/name`), for session scoping.
    pub host: &'a str,
    /// The BMC.
    pub target: &'a HttpTarget,
    /// The BMC credentials, if the host has them.
    pub credentials: Option<&'a BmcCredentials>,
    /// When the exchange must have ended: ahead of the call's own deadline,
    /// so the plugin can still report a timeout as its own error.
    pub deadline: Instant,
    /// Response size cap.
    pub response_cap: usize,
}

/// A refusal that the host also records as a denied capability.
#[derive(Debug)]
pub struct Denied(pub String);

impl HttpCall<'_> {
    /// Sends `request` with the credentials it asks for.
    pub async fn send(&self, request: Request) -> Result<Result<Response, TransportError>, Denied> {
        let url = self.url_for(&request.path)?;
        self.check_headers(&request.headers)?;

        let mut extra = Vec::new();
        let mut hide = Vec::new();

        match request.credentials {
            Credentials::None => {}
            Credentials::Basic => {
                let Some(credentials) = self.credentials else {
                    return Ok(Err(no_credentials("the host has no BMC credentials")));
                };
                extra.push(basic_header(credentials));
            }
            Credentials::Session => {
                let Some((header, token)) =
                    self.transports
                        .session_header(self.plugin, self.target, self.host)
                else {
                    return Ok(Err(no_credentials("no session: call login first")));
                };
                hide.push(header.clone());
                extra.push((header, token));
            }
        }

        Ok(self
            .exchange(
                &request.method,
                url,
                &request.headers,
                extra,
                request.body,
                &hide,
            )
            .await)
    }

    /// Logs in with credentials substituted into the body and keeps the
    /// token from `token_header`.
    pub async fn login(
        &self,
        request: Request,
        token_header: &str,
    ) -> Result<Result<Response, TransportError>, Denied> {
        let url = self.url_for(&request.path)?;
        self.check_headers(&request.headers)?;

        let Some(credentials) = self.credentials else {
            return Ok(Err(no_credentials("the host has no BMC credentials")));
        };
        let Ok(template) = String::from_utf8(request.body) else {
            return Ok(Err(TransportError::Other(
                "login body must be UTF-8 text".into(),
            )));
        };
        let body = substitute_credentials(&template, credentials);
        let hide = [token_header.to_ascii_lowercase()];

        let response = self
            .exchange(
                &request.method,
                url,
                &request.headers,
                Vec::new(),
                body.into_bytes(),
                &[],
            )
            .await;
        let Ok(mut response) = response else {
            return Ok(response);
        };

        let token_at = response
            .headers
            .iter()
            .position(|(name, _)| hide.contains(&name.to_ascii_lowercase()));
        if let Some(index) = token_at {
            let (_, token) = response.headers.remove(index);
            if (200..300).contains(&response.status) {
                self.transports.store_session(self, token_header, token);
            }
        }

        Ok(Ok(response))
    }

    fn url_for(&self, path: &str) -> Result<reqwest::Url, Denied> {
        let plain_path = path.starts_with('/')
            && !path.starts_with("//")
            && !path.contains(['\\', '@', '#'])
            && !path.chars().any(|c| c.is_whitespace() || c.is_control());

        if !plain_path {
            return Err(Denied(format!(
                "request path {path:?} is not an absolute path on the BMC (URLs, `//host` and `@` are refused)"
            )));
        }

        let url =
            reqwest::Url::parse(&format!("{}{}", self.target.origin(), path)).map_err(|error| {
                Denied(format!(
                    "request path {path:?} does not form a URL: {error}"
                ))
            })?;

        let same_bmc = url.host_str().map(|host| host.trim_matches(['[', ']']))
            == Some(self.target.host.as_str())
            && url.port_or_known_default() == Some(self.target.port);

        if !same_bmc {
            return Err(Denied(format!(
                "request path {path:?} leaves the BMC {}",
                self.target.authority()
            )));
        }

        Ok(url)
    }

    fn check_headers(&self, headers: &[(String, String)]) -> Result<(), Denied> {
        let session_header = self
            .transports
            .session_header(self.plugin, self.target, self.host)
            .map(|(name, _)| name);

        for (name, _) in headers {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str())
                || session_header.as_deref() == Some(lower.as_str())
            {
                return Err(Denied(format!(
                    "header {name} is set by the host, not by plugins"
                )));
            }
        }

        Ok(())
    }

    async fn exchange(
        &self,
        method: &str,
        url: reqwest::Url,
        headers: &[(String, String)],
        credentials: Vec<(String, String)>,
        body: Vec<u8>,
        hide: &[String],
    ) -> Result<Response, TransportError> {
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return Err(TransportError::Other(format!(
                "{method:?} is not an HTTP method"
            )));
        };
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TransportError::Timeout);
        }

        let request = headers
            .iter()
            .chain(credentials.iter())
            .fold(
                self.transports.client(self.target).request(method, url),
                |request, (name, value)| request.header(name, value),
            )
            .timeout(remaining)
            .body(body);

        let lock = self.transports.lock_for(self.target, self.host);
        let _permit = tokio::time::timeout(remaining, lock.acquire_owned())
            .await
            .map_err(|_| TransportError::Timeout)?
            .map_err(|error| TransportError::Other(error.to_string()))?;

        let response = request.send().await.map_err(classify)?;
        self.read_response(response, hide).await
    }

    async fn read_response(
        &self,
        mut response: reqwest::Response,
        hide: &[String],
    ) -> Result<Response, TransportError> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| !hide.contains(&name.as_str().to_owned()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();

        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.response_cap {
                return Err(TransportError::TooLarge(self.response_cap as u64));
            }
            body.extend_from_slice(&chunk);
        }

        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn no_credentials(why: &str) -> TransportError {
    TransportError::NoCredentials(why.to_owned())
}

fn basic_header(credentials: &BmcCredentials) -> (String, String) {
    use base64::Engine as _;

    let pair = format!("{}:{}", credentials.username(), credentials.password());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    ("authorization".to_owned(), format!("Basic {encoded}"))
}

/// Replaces `{{username}}` and `{{password}}` with JSON-escaped credentials.
fn substitute_credentials(template: &str, credentials: &BmcCredentials) -> String {
    template
        .replace("{{username}}", &json_escaped(credentials.username()))
        .replace("{{password}}", &json_escaped(credentials.password()))
}

fn json_escaped(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Maps a client error without its URL or body, which never hold secrets
/// but are noise to the plugin.
fn classify(error: reqwest::Error) -> TransportError {
    let detail =
        std::error::Error::source(&error).map_or_else(|| error.to_string(), ToString::to_string);

    if error.is_timeout() {
        TransportError::Timeout
    } else if detail.contains("certificate") || detail.contains("tls") || detail.contains("TLS") {
        TransportError::Tls(detail)
    } else if error.is_connect() {
        TransportError::Connect(detail)
    } else {
        TransportError::Other(detail)
    }
}

/// A UDP socket connected to the BMC, opened on first use within a call.
pub struct DatagramChannel {
    endpoint: (String, u16),
    socket: Option<tokio::net::UdpSocket>,
}

impl DatagramChannel {
    /// A channel to the BMC's host and port.
    pub fn new(endpoint: (String, u16)) -> Self {
        Self {
            endpoint,
            socket: None,
        }
    }

    async fn socket(&mut self) -> Result<&tokio::net::UdpSocket, TransportError> {
        if self.socket.is_none() {
            let address = tokio::net::lookup_host((self.endpoint.0.as_str(), self.endpoint.1))
                .await
                .map_err(|error| TransportError::Connect(error.to_string()))?
                .next()
                .ok_or_else(|| {
                    TransportError::Connect(format!("{} has no address", self.endpoint.0))
                })?;
            let local = if address.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = tokio::net::UdpSocket::bind(local)
                .await
                .map_err(|error| TransportError::Connect(error.to_string()))?;
            socket
                .connect(address)
                .await
                .map_err(|error| TransportError::Connect(error.to_string()))?;
            self.socket = Some(socket);
        }

        self.socket
            .as_ref()
            .ok_or_else(|| TransportError::Other("datagram socket vanished".into()))
    }

    /// Sends one datagram.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let socket = self.socket().await?;
        socket
            .send(payload)
            .await
            .map(|_| ())
            .map_err(|error| TransportError::Connect(error.to_string()))
    }

    /// Waits for one datagram, up to `wait` or the call deadline.
    pub async fn receive(
        &mut self,
        wait: Duration,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, TransportError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = wait.min(remaining).min(MAX_DATAGRAM_WAIT);
        let socket = self.socket().await?;
        let mut buffer = vec![0_u8; 65_536];

        match tokio::time::timeout(wait, socket.recv(&mut buffer)).await {
            Err(_) => Ok(None),
            Ok(Err(error)) => Err(TransportError::Connect(error.to_string())),
            Ok(Ok(len)) => {
                buffer.truncate(len);
                Ok(Some(buffer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_escapes_json() {
        let credentials = BmcCredentials::new("admin", "pa\"ss\\word");
        let body = substitute_credentials(
            r#"{"UserName":"{{username}}","Password":"{{password}}"}"#,
            &credentials,
        );

        let parsed: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(parsed["Password"], "pa\"ss\\word");
        assert_eq!(parsed["UserName"], "admin");
    }
}
