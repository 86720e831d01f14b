//! The data of one call's store, and the host side of every import.
//!
//! A fresh [`CallState`] is built for each call and dropped with its store,
//! so nothing a plugin does survives except what it writes to the
//! key-value store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::imports::ingot::plugin::{
    bmc_account, bmc_datagram, bmc_http, bmc_secret, clock, config, deploy_agent, host_control, kv,
    log, transport_types, types,
};
use crate::bindings::types::{
    BootDevice, HostRef, PowerAction, PowerState, Progress, VirtualMedia,
};
use crate::bmc::{BmcAccess, HttpTarget, datagram_endpoint};
use crate::kv::{KvScope, KvStore, KvWriteError};
use crate::limits::Limits;
use crate::pool;
use crate::secret::{self, SessionKeys};
use crate::transport::{DatagramChannel, Denied, HttpCall, Transports};

use bmc_secret::{MacAlgorithm, SecretError};
use deploy_agent::{AgentError, Command, CommandStatus};
use host_control::ControlError;
use transport_types::TransportError;

/// The host's BMC driver, as seen by provisioning-steps plugins.
pub trait HostControl: Send + Sync {
    /// Current power state.
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, ControlError>>;
    /// Requests a power change.
    fn set_power(&self, action: PowerAction) -> BoxFuture<'_, Result<Progress, ControlError>>;
    /// Sets the boot device.
    fn set_boot_device(&self, device: BootDevice) -> BoxFuture<'_, Result<Progress, ControlError>>;
    /// Inserts virtual media.
    fn insert_media(&self, media: VirtualMedia) -> BoxFuture<'_, Result<Progress, ControlError>>;
    /// Ejects all virtual media.
    fn eject_media(&self) -> BoxFuture<'_, Result<Progress, ControlError>>;
}

/// The deploy agent on the host, as seen by provisioning-steps plugins.
pub trait DeployAgent: Send + Sync {
    /// Whether the agent is reachable.
    fn connected(&self) -> BoxFuture<'_, bool>;
    /// Starts a command.
    fn send(&self, command: Command) -> BoxFuture<'_, Result<String, AgentError>>;
    /// Reads a command's state.
    fn status(&self, command_id: String) -> BoxFuture<'_, Result<CommandStatus, AgentError>>;
}

/// What the call is about: which host, and which host services it may use.
#[derive(Clone, Default)]
pub struct CallScope {
    /// The host the call is for, when there is one.
    pub host: Option<HostRef>,
    /// BMC access, for driver calls.
    pub bmc: Option<BmcAccess>,
    /// The host's driver, for step plugins.
    pub control: Option<Arc<dyn HostControl>>,
    /// The deploy agent, for step plugins.
    pub agent: Option<Arc<dyn DeployAgent>>,
    /// Configuration for this call merged over the plugin's own: a key
    /// listed here replaces the plugin's value, other keys keep it (a
    /// `HostPolicy` binding's `config`).
    pub config_overrides: Vec<(String, String)>,
}

/// Share of the call budget kept free after the last BMC exchange, and its
/// bounds.
const IO_MARGIN_SHARE: u32 = 10;
const IO_MARGIN_MIN: Duration = Duration::from_millis(50);
const IO_MARGIN_MAX: Duration = Duration::from_secs(2);

/// When BMC exchanges must end: a margin before the call deadline, so a
/// stalled BMC gives the plugin a typed transport timeout with time left
/// to turn it into a driver error, instead of the runtime ending the whole
/// call as a plugin timeout.
fn io_deadline(deadline: Instant, budget: Duration) -> Instant {
    let margin = (budget / IO_MARGIN_SHARE).clamp(IO_MARGIN_MIN, IO_MARGIN_MAX);
    deadline.checked_sub(margin).unwrap_or(deadline)
}

/// A capability the plugin tried to use without a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The capability.
    pub capability: String,
    /// What was attempted.
    pub detail: String,
}

/// Host services shared by all calls.
pub(crate) struct Shared {
    pub kv: Arc<KvStore>,
    pub transports: Arc<Transports>,
}

/// Store data of one call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    plugin: Arc<str>,
    digest: Arc<str>,
    config: Arc<Vec<(String, String)>>,
    limits: Limits,
    deadline: Instant,
    io_deadline: Instant,
    scope: CallScope,
    shared: Arc<Shared>,
    datagram: Option<DatagramChannel>,
    logged: usize,
    pub(crate) denials: Vec<Denial>,
}

/// Pipes capturing the guest's stdout and stderr.
#[derive(Clone)]
pub(crate) struct Output {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

/// Everything needed to build a [`CallState`].
pub(crate) struct CallSetup {
    pub plugin: Arc<str>,
    pub digest: Arc<str>,
    pub config: Arc<Vec<(String, String)>>,
    pub limits: Limits,
    pub scope: CallScope,
    pub shared: Arc<Shared>,
}

impl CallState {
    /// A state with a closed WASI context: no files, no environment, no
    /// arguments, no network; output captured into capped pipes.
    pub(crate) fn new(setup: CallSetup, deadline: Instant) -> (Self, Output) {
        let output = Output {
            stdout: MemoryOutputPipe::new(setup.limits.output_bytes),
            stderr: MemoryOutputPipe::new(setup.limits.output_bytes),
        };
        let wasi = WasiCtx::builder()
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            .build();
        let datagram = setup
            .scope
            .bmc
            .as_ref()
            .map(|bmc| DatagramChannel::new(datagram_endpoint(&bmc.address)));

        let state = Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(&setup.limits),
            plugin: setup.plugin,
            digest: setup.digest,
            config: setup.config,
            io_deadline: io_deadline(deadline, setup.limits.timeout()),
            limits: setup.limits,
            deadline,
            scope: setup.scope,
            shared: setup.shared,
            datagram,
            logged: 0,
            denials: Vec::new(),
        };

        (state, output)
    }

    pub(crate) fn scope(&self) -> &CallScope {
        &self.scope
    }

    fn deny(&mut self, capability: &str, detail: String) {
        tracing::warn!(plugin = %self.plugin, capability, detail = %detail, "plugin denied a capability");
        self.denials.push(Denial {
            capability: capability.to_owned(),
            detail,
        });
    }

    fn host_label(&self) -> String {
        self.scope
            .host
            .as_ref()
            .map(|host| format!("{}/{}", host.namespace, host.name))
            .unwrap_or_default()
    }

    fn kv_scope(&self) -> KvScope {
        KvScope {
            plugin: self.plugin.to_string(),
            host: self.host_label(),
        }
    }

    fn bmc(&mut self, capability: &str) -> Result<BmcAccess> {
        match self.scope.bmc.clone() {
            Some(bmc) => Ok(bmc),
            None => {
                self.deny(capability, "the call is not bound to a BMC".into());
                Err(wasmtime::format_err!(
                    "{capability} used outside a driver call"
                ))
            }
        }
    }

    fn http_call<'a>(
        &'a self,
        bmc: &'a BmcAccess,
        target: &'a HttpTarget,
        host: &'a str,
    ) -> HttpCall<'a> {
        HttpCall {
            transports: &self.shared.transports,
            plugin: &self.plugin,
            host,
            target,
            credentials: bmc.credentials.as_deref(),
            deadline: self.io_deadline,
            response_cap: self.limits.response_bytes,
        }
    }

    fn record_http(
        &mut self,
        outcome: Result<Result<bmc_http::Response, TransportError>, Denied>,
    ) -> Result<bmc_http::Response, TransportError> {
        match outcome {
            Ok(answer) => answer,
            Err(Denied(detail)) => {
                self.deny("bmc-http", detail.clone());
                Err(TransportError::Denied(detail))
            }
        }
    }

    fn control(&mut self) -> Result<Arc<dyn HostControl>> {
        match self.scope.control.clone() {
            Some(control) => Ok(control),
            None => {
                self.deny("host-control", "the call has no host driver".into());
                Err(wasmtime::format_err!(
                    "host-control used outside a step call"
                ))
            }
        }
    }

    fn agent(&mut self) -> Result<Arc<dyn DeployAgent>> {
        match self.scope.agent.clone() {
            Some(agent) => Ok(agent),
            None => {
                self.deny("deploy-agent", "the call has no deploy agent".into());
                Err(wasmtime::format_err!(
                    "deploy-agent used outside a step call"
                ))
            }
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses the process environment: a plugin gets its settings from
/// `config`, and reading the environment is recorded as a denied capability.
impl wasmtime_wasi::p2::bindings::cli::environment::Host for CallState {
    fn get_environment(&mut self) -> Result<Vec<(String, String)>> {
        self.deny("environment", "read the process environment".into());
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> Result<Option<String>> {
        self.deny("environment", "asked for the working directory".into());
        Ok(None)
    }
}

impl types::Host for CallState {}

impl transport_types::Host for CallState {}

impl log::Host for CallState {
    async fn emit(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> Result<()> {
        self.logged += 1;
        if self.logged > self.limits.log_records {
            return Ok(());
        }

        let fields = fields
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        let host = self.host_label();
        let (plugin, digest) = (&*self.plugin, &self.digest[..12.min(self.digest.len())]);

        match level {
            log::Level::Trace => tracing::trace!(plugin, digest, host, fields, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, digest, host, fields, "{message}"),
            log::Level::Info => tracing::info!(plugin, digest, host, fields, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, digest, host, fields, "{message}"),
            log::Level::Error => tracing::error!(plugin, digest, host, fields, "{message}"),
        }

        Ok(())
    }
}

impl clock::Host for CallState {
    async fn now_unix_ms(&mut self) -> Result<u64> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    async fn deadline_remaining_ms(&mut self) -> Result<u64> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        Ok(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX))
    }
}

impl config::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<String>> {
        Ok(self
            .config
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.clone()))
    }

    async fn entries(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self.config.as_ref().clone())
    }
}

impl kv::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>> {
        Ok(self.shared.kv.get(&self.kv_scope(), &key))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<Result<(), kv::KvError>> {
        let written = self.shared.kv.set(&self.kv_scope(), &key, value);

        Ok(written.map_err(|error| match error {
            KvWriteError::ValueTooLarge { cap, .. } | KvWriteError::ScopeFull { cap, .. } => {
                kv::KvError::TooLarge(cap as u64)
            }
        }))
    }

    async fn delete(&mut self, key: String) -> Result<()> {
        self.shared.kv.delete(&self.kv_scope(), &key);
        Ok(())
    }
}

impl bmc_http::Host for CallState {
    async fn send(
        &mut self,
        request: bmc_http::Request,
    ) -> Result<Result<bmc_http::Response, TransportError>> {
        let bmc = self.bmc("bmc-http")?;
        let target = HttpTarget::from_address(&bmc.address);
        let host = self.host_label();
        let outcome = self.http_call(&bmc, &target, &host).send(request).await;
        Ok(self.record_http(outcome))
    }

    async fn login(
        &mut self,
        request: bmc_http::Request,
        token_header: String,
    ) -> Result<Result<bmc_http::Response, TransportError>> {
        let bmc = self.bmc("bmc-http")?;
        let target = HttpTarget::from_address(&bmc.address);
        let host = self.host_label();
        let outcome = self
            .http_call(&bmc, &target, &host)
            .login(request, &token_header)
            .await;
        Ok(self.record_http(outcome))
    }

    async fn forget_session(&mut self) -> Result<()> {
        let bmc = self.bmc("bmc-http")?;
        let target = HttpTarget::from_address(&bmc.address);
        let host = self.host_label();
        self.shared
            .transports
            .forget_session(&self.plugin, &target, &host);
        Ok(())
    }
}

impl bmc_datagram::Host for CallState {
    async fn send(&mut self, payload: Vec<u8>) -> Result<Result<(), TransportError>> {
        self.bmc("bmc-datagram")?;
        let Some(channel) = self.datagram.as_mut() else {
            return Ok(Err(TransportError::Other("no datagram channel".into())));
        };
        Ok(channel.send(&payload).await)
    }

    async fn receive(
        &mut self,
        timeout_ms: u32,
    ) -> Result<Result<Option<Vec<u8>>, TransportError>> {
        self.bmc("bmc-datagram")?;
        let deadline = self.io_deadline;
        let Some(channel) = self.datagram.as_mut() else {
            return Ok(Err(TransportError::Other("no datagram channel".into())));
        };
        Ok(channel
            .receive(Duration::from_millis(u64::from(timeout_ms)), deadline)
            .await)
    }
}

impl CallState {
    fn session_seed(&mut self) -> Result<Result<Vec<u8>, SecretError>> {
        let bmc = self.bmc("bmc-secret")?;
        Ok(bmc
            .credentials
            .map(|credentials| credentials.session_key_seed().to_vec())
            .ok_or(SecretError::NoCredentials))
    }

    fn keys(&self, handle: &Resource<SessionKeys>) -> Result<&SessionKeys> {
        Ok(self.table.get(handle)?)
    }
}

impl bmc_account::Host for CallState {
    async fn username(&mut self) -> Result<Option<String>> {
        let bmc = self.bmc("bmc-account")?;
        Ok(bmc
            .credentials
            .map(|credentials| credentials.username().to_owned()))
    }
}

impl bmc_secret::Host for CallState {
    async fn password_mac(
        &mut self,
        algorithm: MacAlgorithm,
        message: Vec<u8>,
    ) -> Result<Result<Vec<u8>, SecretError>> {
        let bmc = self.bmc("bmc-secret")?;
        let Some(credentials) = bmc.credentials else {
            return Ok(Err(SecretError::NoCredentials));
        };
        Ok(Ok(secret::hmac(
            algorithm,
            credentials.password().as_bytes(),
            &message,
        )))
    }
}

impl bmc_secret::HostSessionKeys for CallState {
    async fn derive(
        &mut self,
        algorithm: MacAlgorithm,
        sik_input: Vec<u8>,
    ) -> Result<Result<Resource<SessionKeys>, SecretError>> {
        let seed = match self.session_seed()? {
            Ok(seed) => seed,
            Err(error) => return Ok(Err(error)),
        };
        let keys = SessionKeys::derive(algorithm, &seed, &sik_input);
        Ok(Ok(self.table.push(keys)?))
    }

    async fn sik_mac(
        &mut self,
        handle: Resource<SessionKeys>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>> {
        Ok(self.keys(&handle)?.sik_mac(&message))
    }

    async fn integrity_mac(
        &mut self,
        handle: Resource<SessionKeys>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>> {
        Ok(self.keys(&handle)?.integrity_mac(&message))
    }

    async fn encrypt(
        &mut self,
        handle: Resource<SessionKeys>,
        plaintext: Vec<u8>,
    ) -> Result<Vec<u8>> {
        Ok(self.keys(&handle)?.encrypt(&plaintext))
    }

    async fn decrypt(
        &mut self,
        handle: Resource<SessionKeys>,
        data: Vec<u8>,
    ) -> Result<Result<Vec<u8>, SecretError>> {
        Ok(self.keys(&handle)?.decrypt(&data))
    }

    async fn drop(&mut self, handle: Resource<SessionKeys>) -> Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl host_control::Host for CallState {
    async fn get_power_state(&mut self) -> Result<Result<PowerState, ControlError>> {
        Ok(self.control()?.power_state().await)
    }

    async fn set_power(&mut self, action: PowerAction) -> Result<Result<Progress, ControlError>> {
        Ok(self.control()?.set_power(action).await)
    }

    async fn set_boot_device(
        &mut self,
        device: BootDevice,
    ) -> Result<Result<Progress, ControlError>> {
        Ok(self.control()?.set_boot_device(device).await)
    }

    async fn insert_media(
        &mut self,
        media: VirtualMedia,
    ) -> Result<Result<Progress, ControlError>> {
        Ok(self.control()?.insert_media(media).await)
    }

    async fn eject_media(&mut self) -> Result<Result<Progress, ControlError>> {
        Ok(self.control()?.eject_media().await)
    }
}

impl deploy_agent::Host for CallState {
    async fn connected(&mut self) -> Result<bool> {
        Ok(self.agent()?.connected().await)
    }

    async fn send(&mut self, command: Command) -> Result<Result<String, AgentError>> {
        Ok(self.agent()?.send(command).await)
    }

    async fn status(&mut self, command_id: String) -> Result<Result<CommandStatus, AgentError>> {
        Ok(self.agent()?.status(command_id).await)
    }
}

/// Caps memory and tables of one call's instance and remembers when a cap
/// was hit, so the failure is reported as resource exhaustion rather than a
/// generic trap.
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    pub exhausted: Option<String>,
}

impl CallLimiter {
    fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: limits.table_elements,
            exhausted: None,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired <= self.memory_bytes {
            return Ok(true);
        }

        let detail = format!(
            "memory grow from {current} to {desired} bytes exceeds the cap of {} bytes",
            self.memory_bytes
        );
        self.exhausted = Some(detail.clone());
        Err(wasmtime::format_err!(detail))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired <= self.table_elements {
            return Ok(true);
        }

        let detail = format!(
            "table grow from {current} to {desired} elements exceeds the cap of {}",
            self.table_elements
        );
        self.exhausted = Some(detail.clone());
        Err(wasmtime::format_err!(detail))
    }

    fn instances(&self) -> usize {
        pool::CORE_INSTANCES_PER_CALL as usize
    }

    fn tables(&self) -> usize {
        pool::TABLES_PER_CALL as usize
    }

    fn memories(&self) -> usize {
        pool::MEMORIES_PER_CALL as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn margin(budget: Duration) -> Duration {
        let deadline = Instant::now() + budget;
        deadline - io_deadline(deadline, budget)
    }

    #[test]
    fn exchanges_end_a_tenth_of_the_budget_before_the_deadline() {
        assert_eq!(margin(Duration::from_secs(3)), Duration::from_millis(300));
    }

    #[test]
    fn the_margin_is_bounded() {
        assert_eq!(margin(Duration::from_millis(100)), IO_MARGIN_MIN);
        assert_eq!(margin(Duration::from_secs(300)), IO_MARGIN_MAX);
    }
}
