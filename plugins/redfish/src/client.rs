//! A Redfish session: discovery, authentication, and requests with the
//! retry ladders real BMCs need.
//!
//! Authentication follows the session-or-basic strategy: create a session;
//! if the BMC has no usable SessionService, fall back to HTTP Basic. A 401
//! in the middle of a session (the session timed out) triggers one new login
//! and a replay. [`Client::close`] always deletes the session, because BMCs
//! cap concurrent sessions.

use serde_json::Value;

use crate::error::RedfishError;
use crate::json;
use crate::profile::{Profile, Vendor};
use crate::transport::{
    BmcHttp, Credentials, PASSWORD_PLACEHOLDER, Request, Response, TransportError,
    USERNAME_PLACEHOLDER,
};

/// Path of the Redfish service root.
pub const SERVICE_ROOT: &str = "/redfish/v1/";

const DEFAULT_SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
const TOKEN_HEADER: &str = "X-Auth-Token";

/// Redfish message ids that mean "busy, try again later" (iDRAC SYS518,
/// iLO InvalidOperationForSystemState).
const BUSY_MESSAGE_IDS: [&str; 2] = ["SYS518", "InvalidOperationForSystemState"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    Session { location: Option<String> },
    Basic,
}

/// What discovery learned about a BMC, kept between calls so that a call
/// needs neither the service root nor the systems collection again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Session collection path.
    pub sessions_path: String,
    /// Whether the BMC gave a session (else HTTP Basic is used).
    pub uses_sessions: bool,
    /// Vendor quirks in force.
    pub vendor: Vendor,
    /// The chosen system.
    pub system_path: String,
}

impl Discovery {
    /// Serialises the record, bound to the address it was learned for.
    pub fn encode(&self, address_key: &str) -> Vec<u8> {
        serde_json::json!({
            "address": address_key,
            "sessions": self.sessions_path,
            "usesSessions": self.uses_sessions,
            "vendor": self.vendor.name(),
            "system": self.system_path,
        })
        .to_string()
        .into_bytes()
    }

    /// Reads a record, or `None` when it is unreadable or was learned for
    /// another address.
    pub fn decode(bytes: &[u8], address_key: &str) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        if json::str_at(&value, &["address"]) != Some(address_key) {
            return None;
        }
        Some(Self {
            sessions_path: json::str_at(&value, &["sessions"])?.to_owned(),
            uses_sessions: value.get("usesSessions")?.as_bool()?,
            vendor: Vendor::from_name(json::str_at(&value, &["vendor"])?),
            system_path: json::str_at(&value, &["system"])?.to_owned(),
        })
    }
}

/// A JSON resource with the ETag that came with it.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Path it was read from.
    pub path: String,
    /// Parsed body.
    pub body: Value,
    /// ETag from the header, else from `@odata.etag`.
    pub etag: Option<String>,
}

/// The outcome of a write the BMC may finish asynchronously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Done (2xx other than 202).
    Done,
    /// Running; poll this task monitor or task URI.
    Task(String),
}

/// A logged-in connection to one BMC.
pub struct Client<'h, H: BmcHttp> {
    http: &'h mut H,
    auth: Auth,
    sessions_path: String,
    send_identity_encoding: bool,
    /// Service root, as read at discovery.
    pub root: Value,
    /// Vendor quirks in force.
    pub vendor: Vendor,
    /// Profile from the address scheme.
    pub profile: Profile,
}

impl<'h, H: BmcHttp> Client<'h, H> {
    /// Reads the service root anonymously, then logs in.
    ///
    /// # Errors
    /// Transport failures, an unreadable service root, or rejected
    /// credentials.
    pub fn connect(http: &'h mut H, profile: Profile) -> Result<Self, RedfishError> {
        let mut client = Self {
            http,
            auth: Auth::Basic,
            sessions_path: DEFAULT_SESSIONS.to_owned(),
            send_identity_encoding: true,
            root: Value::Null,
            vendor: profile.vendor,
            profile,
        };

        let root = client.get_with(SERVICE_ROOT, Credentials::None)?;
        client.discover(root.body);

        client.login()?;
        Ok(client)
    }

    /// Logs in using what an earlier call discovered, skipping the service
    /// root.
    ///
    /// # Errors
    /// Transport failures during login.
    pub fn resume(
        http: &'h mut H,
        profile: Profile,
        discovery: &Discovery,
    ) -> Result<Self, RedfishError> {
        let mut client = Self {
            http,
            auth: Auth::Basic,
            sessions_path: discovery.sessions_path.clone(),
            send_identity_encoding: true,
            root: Value::Null,
            vendor: discovery.vendor,
            profile,
        };
        if discovery.uses_sessions {
            client.login()?;
        }
        Ok(client)
    }

    /// What this client learned, to skip discovery next time.
    pub fn discovery(&self, system_path: &str) -> Discovery {
        Discovery {
            sessions_path: self.sessions_path.clone(),
            uses_sessions: matches!(self.auth, Auth::Session { .. }),
            vendor: self.vendor,
            system_path: system_path.to_owned(),
        }
    }

    fn discover(&mut self, root: Value) {
        if let Some(path) = json::link(&root, &["Links", "Sessions"]) {
            self.sessions_path = path;
        }
        if self.vendor == Vendor::Generic {
            let named = json::str_at(&root, &["Vendor"])
                .or_else(|| json::first_key(&root, &["Oem"]))
                .map(Vendor::from_name);
            self.vendor = named.unwrap_or(Vendor::Generic);
        }
        self.root = root;
    }

    fn login(&mut self) -> Result<(), RedfishError> {
        let body = format!(
            "{{\"UserName\":\"{USERNAME_PLACEHOLDER}\",\"Password\":\"{PASSWORD_PLACEHOLDER}\"}}"
        );
        let request = self.request("POST", &self.sessions_path.clone(), body.into_bytes(), None);
        let response = self
            .http
            .login(&request, TOKEN_HEADER)
            .map_err(|source| transport_error(&request, source))?;

        // Any other answer, 401 included, means no usable SessionService:
        // some BMCs guard every URI, the session collection too, with Basic
        // auth. Wrong credentials then show up as 401 on the next request.
        self.auth = match response.status {
            201 | 200 => Auth::Session {
                location: session_location(&response),
            },
            _ => Auth::Basic,
        };
        Ok(())
    }

    /// Deletes the session, if one was created. Failures are ignored: the
    /// BMC expires the session on its own, and the caller's result matters
    /// more than the logout's.
    pub fn close(mut self) {
        if let Auth::Session {
            location: Some(location),
        } = &self.auth
        {
            let request = self.request("DELETE", &location.clone(), Vec::new(), None);
            let _ = self.http.send(&request);
        }
        self.http.forget_session();
        self.auth = Auth::Basic;
    }

    fn credentials(&self) -> Credentials {
        match self.auth {
            Auth::Session { .. } => Credentials::Session,
            Auth::Basic => Credentials::Basic,
        }
    }

    fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Request {
        let mut headers = vec![
            ("OData-Version".to_owned(), "4.0".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
        ];
        if !body.is_empty() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        if self.send_identity_encoding {
            // Compression makes ETags weak on some BMCs.
            headers.push(("Accept-Encoding".to_owned(), "identity".to_owned()));
        }
        if let Some(etag) = if_match {
            headers.push(("If-Match".to_owned(), etag.to_owned()));
        }
        Request {
            method,
            path: path.to_owned(),
            headers,
            body,
            credentials: self.credentials(),
        }
    }

    /// Sends a request with the authentication retry ladders and returns
    /// the response whatever its status.
    ///
    /// # Errors
    /// Transport failures, or a failed re-login.
    pub fn send(
        &mut self,
        method: &'static str,
        path: &str,
        body: &[u8],
        if_match: Option<&str>,
    ) -> Result<Response, RedfishError> {
        let mut response = self.send_once(method, path, body, if_match)?;

        if response.status == 406 && self.send_identity_encoding {
            // HPE Gen10 Plus refuses `Accept-Encoding: identity`.
            self.send_identity_encoding = false;
            response = self.send_once(method, path, body, if_match)?;
        }

        if response.status == 401 && matches!(self.auth, Auth::Session { .. }) {
            // The session expired: log in again once and replay.
            self.http.forget_session();
            self.login()?;
            response = self.send_once(method, path, body, if_match)?;
        }

        if method == "GET" && is_retryable_server_error(response.status) {
            response = self.send_once(method, path, body, if_match)?;
        }
        Ok(response)
    }

    fn send_once(
        &mut self,
        method: &'static str,
        path: &str,
        body: &[u8],
        if_match: Option<&str>,
    ) -> Result<Response, RedfishError> {
        let request = self.request(method, path, body.to_vec(), if_match);
        self.http
            .send(&request)
            .map_err(|source| transport_error(&request, source))
    }

    /// Reads a JSON resource.
    ///
    /// # Errors
    /// An error status, a transport failure, or a body that is not JSON.
    pub fn get(&mut self, path: &str) -> Result<Resource, RedfishError> {
        let credentials = self.credentials();
        self.get_with(path, credentials)
    }

    /// Reads a JSON resource, or `None` when the BMC does not implement it
    /// (404, 405, 501).
    ///
    /// # Errors
    /// As [`Client::get`] for any other failure.
    pub fn get_optional(&mut self, path: &str) -> Result<Option<Resource>, RedfishError> {
        match self.get(path) {
            Ok(resource) => Ok(Some(resource)),
            Err(RedfishError::Status {
                status: 404 | 405 | 501,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn get_with(&mut self, path: &str, credentials: Credentials) -> Result<Resource, RedfishError> {
        let response = if credentials == Credentials::None {
            let mut request = self.request("GET", path, Vec::new(), None);
            request.credentials = Credentials::None;
            self.http
                .send(&request)
                .map_err(|source| transport_error(&request, source))?
        } else {
            self.send("GET", path, &[], None)?
        };
        let response = require_success("GET", path, response)?;
        resource_from(path, &response)
    }

    /// Writes with `PATCH`, echoing the ETag and walking the If-Match ladder
    /// on 412: the ETag as given, its strong form if it was weak, then no
    /// If-Match at all.
    ///
    /// # Errors
    /// An error status or a transport failure.
    pub fn patch(
        &mut self,
        path: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Accepted, RedfishError> {
        let bytes = body.to_string().into_bytes();
        let mut attempts: Vec<Option<String>> = Vec::new();
        if let Some(etag) = etag {
            attempts.push(Some(etag.to_owned()));
            if let Some(strong) = etag.strip_prefix("W/") {
                attempts.push(Some(strong.to_owned()));
            }
        }
        attempts.push(None);

        let mut last = None;
        for if_match in &attempts {
            let response = self.send("PATCH", path, &bytes, if_match.as_deref())?;
            if response.status != 412 {
                return accepted("PATCH", path, response);
            }
            last = Some(response);
        }
        match last {
            Some(response) => accepted("PATCH", path, response),
            None => Err(RedfishError::Unsupported(format!("PATCH {path}"))),
        }
    }

    /// Calls an action with `POST`.
    ///
    /// # Errors
    /// An error status (busy BMCs map to a transient error) or a transport
    /// failure.
    pub fn post(&mut self, path: &str, body: &Value) -> Result<Accepted, RedfishError> {
        let bytes = body.to_string().into_bytes();
        let response = self.send("POST", path, &bytes, None)?;
        accepted("POST", path, response)
    }

    /// Polls a task monitor or task resource once.
    ///
    /// # Errors
    /// A task that ended without success, or a failed request.
    pub fn poll_task(&mut self, uri: &str) -> Result<TaskPoll, RedfishError> {
        let response = self.send("GET", uri, &[], None)?;
        if response.status == 202 {
            return Ok(TaskPoll::Running(task_detail(&response.body)));
        }
        if response.status == 404 {
            // Some BMCs (Lenovo XCC) delete a finished task once read.
            return Ok(TaskPoll::Finished);
        }
        let response = require_success("GET", uri, response)?;
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        match json::str_at(&body, &["TaskState"]) {
            None | Some("Completed") => Ok(TaskPoll::Finished),
            Some("Exception" | "Killed" | "Cancelled" | "Interrupted") => {
                Err(RedfishError::TaskFailed {
                    uri: uri.to_owned(),
                    state: json::str_at(&body, &["TaskState"])
                        .unwrap_or_default()
                        .to_owned(),
                    message: json::messages(&body),
                })
            }
            Some(_) => Ok(TaskPoll::Running(task_detail(&response.body))),
        }
    }

    /// Resolves a link from the BMC for this service: trailing slashes are
    /// dropped and, because iLO hands out lower-case links to a
    /// case-insensitive server, a link that matches a known resource path
    /// up to case is rewritten to that path's spelling.
    pub fn resolve(&self, link: &str, known: &str) -> String {
        let link = link.trim_end_matches('/');
        let known = known.trim_end_matches('/');
        let matches_prefix = link.len() >= known.len()
            && link.is_char_boundary(known.len())
            && link[..known.len()].eq_ignore_ascii_case(known);
        if matches_prefix {
            format!("{known}{}", &link[known.len()..])
        } else {
            link.to_owned()
        }
    }
}

/// State of an asynchronous task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskPoll {
    /// Still running; carries a progress note.
    Running(String),
    /// Finished successfully.
    Finished,
}

fn task_detail(body: &[u8]) -> String {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match body.get("PercentComplete").and_then(Value::as_u64) {
        Some(percent) => format!("{percent}% complete"),
        None => "running".to_owned(),
    }
}

fn session_location(response: &Response) -> Option<String> {
    if let Some(location) = response.header("Location") {
        return Some(path_of(location));
    }
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    json::str_at(&body, &["@odata.id"]).map(str::to_owned)
}

/// The path of a Location header, which may be an absolute URL.
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(slash) => rest[slash..].to_owned(),
            None => "/".to_owned(),
        },
        None => location.to_owned(),
    }
}

fn is_retryable_server_error(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

fn transport_error(request: &Request, source: TransportError) -> RedfishError {
    RedfishError::Transport {
        method: request.method,
        path: request.path.clone(),
        source,
    }
}

fn require_success(
    method: &'static str,
    path: &str,
    response: Response,
) -> Result<Response, RedfishError> {
    if response.is_success() {
        Ok(response)
    } else {
        Err(status_error(method, path, &response))
    }
}

fn status_error(method: &'static str, path: &str, response: &Response) -> RedfishError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let mut message = json::messages(&body);
    if message.is_empty() && matches!(response.status, 401 | 403) {
        message = "the BMC rejected the credentials".to_owned();
    }
    let message_ids = json::message_ids(&body);
    let busy = BUSY_MESSAGE_IDS
        .iter()
        .any(|id| message_ids.iter().any(|found| found.contains(id)));
    RedfishError::Status {
        method,
        path: path.to_owned(),
        // A busy BMC is reported as 503 so that the error is transient.
        status: if busy { 503 } else { response.status },
        message,
        message_id: message_ids.into_iter().next(),
    }
}

fn accepted(
    method: &'static str,
    path: &str,
    response: Response,
) -> Result<Accepted, RedfishError> {
    if response.status == 202 {
        let task = response.header("Location").map(path_of).or_else(|| {
            let body: Value = serde_json::from_slice(&response.body).ok()?;
            json::str_at(&body, &["@odata.id"]).map(str::to_owned)
        });
        return Ok(task.map_or(Accepted::Done, Accepted::Task));
    }
    require_success(method, path, response).map(|_| Accepted::Done)
}

fn resource_from(path: &str, response: &Response) -> Result<Resource, RedfishError> {
    let body: Value =
        serde_json::from_slice(&response.body).map_err(|error| RedfishError::Malformed {
            path: path.to_owned(),
            reason: format!("not JSON ({error})"),
        })?;
    if !body.is_object() {
        return Err(RedfishError::Malformed {
            path: path.to_owned(),
            reason: "not a JSON object".to_owned(),
        });
    }
    let etag = response
        .header("ETag")
        .map(str::to_owned)
        .or_else(|| json::str_at(&body, &["@odata.etag"]).map(str::to_owned));
    Ok(Resource {
        path: path.to_owned(),
        body,
        etag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_urls_reduce_to_paths() {
        assert_eq!(
            path_of("https://10.0.0.1/redfish/v1/SessionService/Sessions/7"),
            "/redfish/v1/SessionService/Sessions/7"
        );
        assert_eq!(
            path_of("/redfish/v1/TaskService/Tasks/1"),
            "/redfish/v1/TaskService/Tasks/1"
        );
    }

    #[test]
    fn busy_message_ids_are_transient() {
        let response = Response {
            status: 400,
            headers: Vec::new(),
            body: br#"{"error":{"@Message.ExtendedInfo":[{"MessageId":"IDRAC.2.8.SYS518"}]}}"#
                .to_vec(),
        };
        let error = status_error("POST", "/x", &response);
        assert_eq!(error.kind(), crate::error::ErrorKind::Transient);
    }
}
