//! The driver entry points: every operation opens a session, chooses the
//! system, does its work and closes the session, whatever the outcome.

use crate::client::{Accepted, Client, Discovery, Resource, TaskPoll};
use crate::error::RedfishError;
use crate::json;
use crate::model::{Pending, Progress};
use crate::profile::{Profile, system_path_from_address};
use crate::transport::{BmcHttp, Environment};

/// Key of the discovery record in the key-value store.
const DISCOVERY_KEY: &str = "redfish/discovery";

/// Delay the host waits before calling again while the BMC works.
pub const REQUEUE_AFTER_MS: u64 = 2_000;

/// The Redfish driver for one BMC.
pub struct Driver<'h, H: BmcHttp, E: Environment> {
    http: &'h mut H,
    env: &'h mut E,
    profile: Profile,
    system_hint: Option<String>,
    address_key: String,
}

/// One open session with the system chosen.
pub struct Session<'c, 'h, H: BmcHttp, E: Environment> {
    /// The logged-in client.
    pub client: &'c mut Client<'h, H>,
    /// State between calls and time.
    pub env: &'c mut E,
    /// The system resource as read when the session opened.
    pub system: Resource,
}

impl<'h, H: BmcHttp, E: Environment> Driver<'h, H, E> {
    /// A driver for the BMC at an address with this scheme and path.
    ///
    /// `address_key` identifies the whole address (scheme, host, port,
    /// path): what was discovered about it is reused by later calls only
    /// while the address stays the same.
    ///
    /// # Errors
    /// [`RedfishError::Address`] when the scheme is not a Redfish one.
    pub fn new(
        http: &'h mut H,
        env: &'h mut E,
        scheme: &str,
        address_path: &str,
        address_key: &str,
    ) -> Result<Self, RedfishError> {
        Ok(Self {
            http,
            env,
            profile: Profile::for_scheme(scheme)?,
            system_hint: system_path_from_address(address_path),
            address_key: address_key.to_owned(),
        })
    }

    /// Runs one operation in a fresh session, and closes the session.
    ///
    /// Discovery (service root, session support, vendor, system) is done
    /// once and remembered; any failure forgets it, so a changed BMC is
    /// discovered again on the next call.
    ///
    /// # Errors
    /// Whatever connecting, choosing the system or the operation failed with.
    pub fn run<T>(
        &mut self,
        operation: impl FnOnce(&mut Session<'_, '_, H, E>) -> Result<T, RedfishError>,
    ) -> Result<T, RedfishError> {
        let cached = self
            .env
            .get(DISCOVERY_KEY)
            .and_then(|bytes| Discovery::decode(&bytes, &self.address_key));
        let result = self.run_with(cached.as_ref(), operation);
        match &result {
            Ok((_, discovery)) if cached.as_ref() != Some(discovery) => {
                // Losing the record only costs a rediscovery.
                let _ = self
                    .env
                    .set(DISCOVERY_KEY, &discovery.encode(&self.address_key));
            }
            Ok(_) => {}
            Err(_) => self.env.delete(DISCOVERY_KEY),
        }
        result.map(|(value, _)| value)
    }

    fn run_with<T>(
        &mut self,
        cached: Option<&Discovery>,
        operation: impl FnOnce(&mut Session<'_, '_, H, E>) -> Result<T, RedfishError>,
    ) -> Result<(T, Discovery), RedfishError> {
        let mut client = match cached {
            Some(discovery) => Client::resume(&mut *self.http, self.profile, discovery)?,
            None => Client::connect(&mut *self.http, self.profile)?,
        };
        let system = match cached {
            Some(discovery) => client.get(&discovery.system_path),
            None => select_system(&mut client, self.system_hint.as_deref()),
        };
        let result = system.and_then(|system| {
            let discovery = client.discovery(&system.path);
            let mut session = Session {
                client: &mut client,
                env: &mut *self.env,
                system,
            };
            operation(&mut session).map(|value| (value, discovery))
        });
        client.close();
        result
    }
}

fn select_system<H: BmcHttp>(
    client: &mut Client<'_, H>,
    hint: Option<&str>,
) -> Result<Resource, RedfishError> {
    if let Some(path) = hint {
        return client.get(path).map_err(|error| match error {
            RedfishError::Status { status: 404, .. } => RedfishError::SystemSelection(format!(
                "the address names {path}, which this BMC does not have"
            )),
            other => other,
        });
    }

    let collection_path =
        json::link(&client.root, &["Systems"]).unwrap_or_else(|| "/redfish/v1/Systems".to_owned());
    let collection = client.get(&collection_path)?;
    match json::members(&collection.body).as_slice() {
        [only] => {
            let path = client.resolve(only, &collection_path);
            client.get(&path)
        }
        [] => Err(RedfishError::SystemSelection(
            "the BMC lists no systems".to_owned(),
        )),
        many => Err(RedfishError::SystemSelection(format!(
            "the BMC lists {} systems ({}); put the one to manage in the address path",
            many.len(),
            many.join(", ")
        ))),
    }
}

impl<H: BmcHttp, E: Environment> Session<'_, '_, H, E> {
    /// Path of the chosen system.
    pub fn system_path(&self) -> String {
        self.system.path.clone()
    }

    /// Reads the chosen system again.
    ///
    /// # Errors
    /// A failed read.
    pub fn reload_system(&mut self) -> Result<(), RedfishError> {
        let path = self.system_path();
        self.system = self.client.get(&path)?;
        Ok(())
    }

    /// Resolves a link found under the system.
    pub fn resolve(&self, link: &str) -> String {
        self.client.resolve(link, &self.system.path)
    }

    /// Remembers an asynchronous task under `key` and reports progress.
    pub fn track_task(&mut self, key: &str, accepted: Accepted) -> Progress {
        match accepted {
            Accepted::Done => {
                self.env.delete(key);
                Progress::Done
            }
            Accepted::Task(uri) => {
                // Losing the record only means the next call starts over.
                let _ = self.env.set(key, uri.as_bytes());
                Progress::InProgress(Pending {
                    requeue_after_ms: REQUEUE_AFTER_MS,
                    detail: format!("waiting for BMC task {uri}"),
                })
            }
        }
    }

    /// Polls the task remembered under `key`, if any: `Some(progress)` while
    /// it runs, `None` when there is none or it has finished.
    ///
    /// # Errors
    /// A task that failed, or a failed poll.
    pub fn continue_task(&mut self, key: &str) -> Result<Option<Progress>, RedfishError> {
        let Some(uri) = self.env.get(key) else {
            return Ok(None);
        };
        let uri = String::from_utf8_lossy(&uri).into_owned();
        let poll = self.client.poll_task(&uri);
        if !matches!(poll, Ok(TaskPoll::Running(_))) {
            self.env.delete(key);
        }
        match poll? {
            TaskPoll::Running(detail) => Ok(Some(Progress::InProgress(Pending {
                requeue_after_ms: REQUEUE_AFTER_MS,
                detail: format!("BMC task {uri}: {detail}"),
            }))),
            TaskPoll::Finished => Ok(None),
        }
    }
}
