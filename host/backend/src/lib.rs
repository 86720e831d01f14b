//! The provisioner that drives real hosts: BMC driver plugins for power and boot, provisioning
//! steps plugins for each phase, and the deploy agent on the machine for inventory, cleaning
//! and image writes.
//!
//! ```text
//!   host state machine ──► HostProvisioner ──► driver plugin ──► BMC (Redfish, IPMI, ...)
//!                               │
//!                               └──► steps plugin ──► host-control ──► driver plugin
//!                                        │
//!                                        └──► deploy-agent ──► agent API ◄── deploy agent
//! ```
//!
//! Which plugins serve a host comes from a [`Routing`] (the bundled defaults, or the site's
//! `HostPolicy` objects). Registration checks the BMC credentials through the driver once per
//! set of credentials; the lifecycle's long operations (inspect, prepare, deploy, deprovision,
//! live ISO) are phase runs whose progress is recorded per host, in a state directory when one
//! is given, so that an operator restart resumes each host at the step it was on.

mod agent_state;
mod capacity;
mod files;
mod host;
mod links;
mod phases;
pub mod records;
mod wakes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::stream::BoxStream;
use ingot_agent_api::{AgentApi, AgentApiConfig, CertificateAuthority, Snapshot};
use ingot_operator::events::EventSink;
use ingot_operator::provisioner::{HostData, ProvisionerError, ProvisionerFactory, Wake};
use ingot_plugin_host::limits::GuardSettings;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::routing::{HostFacts, Routing};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::Fetcher;

use crate::capacity::Capacity;
use crate::wakes::{WakeTasks, Wakes};

pub use host::HostProvisioner;
pub use links::{AgentLink, DeployExtras, Driver, DriverFailure};
pub use records::{HostRecord, Records, RecordsError};

/// File in the state directory holding the agent API's certificate authority.
const AUTHORITY_FILE: &str = "agent-ca.json";

/// Directory in the state directory holding compiled plugins.
const PLUGIN_CACHE_DIR: &str = "plugin-cache";

/// Directory in the state directory holding one record per host.
const RECORDS_DIR: &str = "hosts";

/// Hosts with a phase under way at the same time, unless configured otherwise.
pub const DEFAULT_MAX_BUSY_HOSTS: usize = 20;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The host records could not be loaded.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The saved agent API state could not be read.
    #[error("cannot read the agent API state {path}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The agent API could not start.
    #[error("cannot start the deploy agent API")]
    AgentApi(#[from] ingot_agent_api::Error),
    /// The agent API's certificate authority could not be loaded or created.
    #[error("cannot use the agent API certificate authority {path}")]
    Authority {
        /// The file holding it.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The plugin runtime could not start.
    #[error("cannot start the plugin runtime")]
    Runtime(#[from] ingot_plugin_host::runtime::RuntimeError),
    /// The HTTP client fetching plugins could not be built.
    #[error("cannot build the HTTP client that fetches plugins")]
    PluginClient(#[source] reqwest::Error),
}

/// How to run the backend.
pub struct BackendConfig {
    /// The loaded plugins.
    pub registry: Arc<Registry>,
    /// Which plugins serve which host.
    pub routing: Arc<dyn Routing>,
    /// Where deploy agents reach the operator.
    pub agent_api: AgentApiConfig,
    /// Where host records and the agent API state are kept; memory only when `None`.
    pub state_dir: Option<PathBuf>,
    /// Hosts with a phase under way at the same time; more wait in their state as `delayed`.
    pub max_busy_hosts: usize,
}

/// State shared by every host's provisioner.
pub(crate) struct Shared {
    pub(crate) registry: Arc<Registry>,
    pub(crate) routing: Arc<dyn Routing>,
    pub(crate) agent: Arc<AgentApi>,
    pub(crate) records: Arc<Records>,
    pub(crate) capacity: Capacity,
    pub(crate) wakes: Wakes,
    /// Host UID -> digest of the address and credentials last checked at the BMC.
    registered: Mutex<HashMap<String, String>>,
    _wake_tasks: WakeTasks,
}

impl Shared {
    pub(crate) fn is_registered(&self, uid: &str, digest: &str) -> bool {
        self.registered()
            .get(uid)
            .is_some_and(|known| known == digest)
    }

    pub(crate) fn mark_registered(&self, uid: &str, digest: String) {
        self.registered().insert(uid.to_owned(), digest);
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.registered().remove(uid);
        self.capacity.release(uid);
        self.agent.remove_host(uid);
        self.wakes.forget(uid);
    }

    fn registered(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The plugin-driven provisioner factory the operator's host controller runs with.
#[derive(Clone)]
pub struct PluginBackend {
    shared: Arc<Shared>,
    ca_pem: String,
}

impl PluginBackend {
    /// Loads the saved state (when there is a state directory) and starts the agent API.
    ///
    /// # Errors
    /// [`BackendError`] when the saved state cannot be read or the agent API cannot listen.
    pub async fn start(config: BackendConfig) -> Result<Self, BackendError> {
        let records = match &config.state_dir {
            Some(dir) => Records::open(&dir.join(RECORDS_DIR))?,
            None => Records::in_memory(),
        };
        let snapshot = match &config.state_dir {
            Some(dir) => agent_state::load(dir)?,
            None => Snapshot::default(),
        };
        let ca_pem = config.agent_api.ca.cert_pem.clone();
        let agent = Arc::new(AgentApi::start(config.agent_api, snapshot).await?);
        if let Some(dir) = &config.state_dir {
            agent.acknowledge_reports_once_saved();
            tokio::spawn(agent_state::persist(Arc::downgrade(&agent), dir.clone()));
        }

        let records = Arc::new(records);
        let news = agent.news();
        let shared = Arc::new_cyclic(|shared| Shared {
            registry: config.registry,
            routing: config.routing,
            agent,
            records: records.clone(),
            capacity: Capacity::new(config.max_busy_hosts),
            wakes: Wakes::new(),
            registered: Mutex::new(HashMap::new()),
            _wake_tasks: WakeTasks::start(shared, news, records),
        });
        Ok(Self { shared, ca_pem })
    }

    /// The CA certificate (PEM) of the agent API, which machines must trust to fetch their
    /// deploy media over HTTPS.
    pub fn agent_ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The URL deploy agents reach the operator at.
    pub fn agent_api_url(&self) -> &str {
        self.shared.agent.url()
    }

    /// A copy of the record of the host with `uid`.
    pub fn record(&self, uid: &str) -> Option<HostRecord> {
        self.shared.records.get(uid)
    }
}

impl ProvisionerFactory for PluginBackend {
    type Provisioner = HostProvisioner;

    fn wakes(&self) -> Option<BoxStream<'static, Wake>> {
        Some(self.shared.wakes.subscribe())
    }

    fn provisioner_for(
        &self,
        host: HostData,
        events: EventSink,
    ) -> Result<HostProvisioner, ProvisionerError> {
        let scheme = ingot_api::bmc::parse(&host.bmc_address)
            .map(|address| address.scheme)
            .unwrap_or_default();
        self.shared
            .wakes
            .remember(&host.uid, &host.namespace, &host.name);
        let plugins = self.shared.routing.plugins_for(&HostFacts {
            namespace: &host.namespace,
            labels: &host.labels,
            bmc_scheme: &scheme,
        });

        Ok(HostProvisioner {
            shared: self.shared.clone(),
            host,
            plugins,
            events,
        })
    }
}

/// The certificate authority of the agent API, kept in `state_dir` so that agents booted before
/// a restart still trust the restarted API; created on first use.
///
/// # Errors
/// [`BackendError::Authority`] when the file cannot be read, parsed or written.
pub fn load_or_create_authority(state_dir: &Path) -> Result<CertificateAuthority, BackendError> {
    let path = state_dir.join(AUTHORITY_FILE);
    let error = |source: Box<dyn std::error::Error + Send + Sync>| BackendError::Authority {
        path: path.clone(),
        source,
    };

    match std::fs::read(&path) {
        Ok(bytes) => return serde_json::from_slice(&bytes).map_err(|e| error(e.into())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(error(e.into())),
        Err(_) => {}
    }
    let authority = CertificateAuthority::generate().map_err(|e| error(e.into()))?;
    let bytes = serde_json::to_vec(&authority).map_err(|e| error(e.into()))?;
    std::fs::create_dir_all(state_dir).map_err(|e| error(e.into()))?;
    write_private(&path, &bytes).map_err(|e| error(e.into()))?;
    Ok(authority)
}

/// A plugin registry over a fresh runtime, caching compiled plugins in `state_dir` when given.
///
/// # Errors
/// [`BackendError`] when the runtime or its HTTP client cannot be set up.
pub fn plugin_registry(state_dir: Option<&Path>) -> Result<Arc<Registry>, BackendError> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: state_dir.map(|dir| dir.join(PLUGIN_CACHE_DIR)),
        ..RuntimeConfig::default()
    })?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(BackendError::PluginClient)?;
    Ok(Arc::new(Registry::new(
        Arc::new(runtime),
        Fetcher::new(client),
        GuardSettings::default(),
    )))
}

/// Writes a file only its owner can read: it holds a private key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_authority_survives_a_restart_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

        let first = load_or_create_authority(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let again = load_or_create_authority(dir.path()).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(first, again);
        let mode = std::fs::metadata(dir.path().join(AUTHORITY_FILE))
            .map(|metadata| metadata.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_damaged_authority_file_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join(AUTHORITY_FILE), b"garbage")
            .unwrap_or_else(|e| panic!("{e}"));

        let error = load_or_create_authority(dir.path())
            .err()
            .map(|e| e.to_string());

        assert!(error.is_some_and(|text| text.contains(AUTHORITY_FILE)));
    }
}
