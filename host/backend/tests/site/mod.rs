//! A site for lab tests: the embedded API server with the Metal3 CRDs, the virtual lab (two
//! machines with Redfish and IPMI BMCs, an image server), a plugin registry holding the real
//! Redfish, IPMI and standard-steps components, and operators that tests start, stop and kill.
//! Each test binary uses part of it.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ingot_agent_api::{AgentApiConfig, CertificateAuthority};
use ingot_api::metal3::{BareMetalHost, HardwareData, ProvisioningState};
use ingot_apiserver::{ApiServerBuilder, RunningApiServer};
use ingot_backend::{BackendConfig, PluginBackend};
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};
use ingot_operator::admission::Metal3Admission;
use ingot_operator::backoff::FixedJitter;
use ingot_operator::controller::{self, Context};
use ingot_operator::metrics::Metrics;
use ingot_operator::state_machine::Settings;
use ingot_plugin_host::drivers::{IPMI_DRIVER, REDFISH_DRIVER};
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry};
use ingot_plugin_host::routing::{BuiltinRouting, STANDARD_STEPS};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::world::World;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

pub const NAMESPACE: &str = "default";
pub const USER: &str = "admin";
pub const PASSWORD: &str = "lab-password";
pub const IMAGE: &str = "lab-os";
pub const IMAGE_BYTES: u64 = 64 << 20;
pub const WAIT: Duration = Duration::from_secs(240);

/// The `.wasm` of plugin crate `crate_name`, as built by `make plugins`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir.join("wasm32-wasip2").join("plugin").join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` (with the same CARGO_TARGET_DIR) before the tests",
        path.display()
    );
    path
}

pub async fn registry() -> Arc<Registry> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ingot-plugin-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap_or_else(|e| panic!("runtime: {e}"));
    let registry = Registry::new(
        Arc::new(runtime),
        Fetcher::new(reqwest::Client::new()),
        GuardSettings::default(),
    );
    for (name, crate_name, world) in [
        (REDFISH_DRIVER, "ingot-plugin-redfish", World::BmcDriver),
        (IPMI_DRIVER, "ingot-plugin-ipmi", World::BmcDriver),
        (
            STANDARD_STEPS,
            "ingot-standard-steps",
            World::ProvisioningSteps,
        ),
    ] {
        let spec = plugin_spec(crate_name, world, &[("agent-boot-timeout-seconds", "120")]);
        registry
            .load(name, spec)
            .await
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    }
    Arc::new(registry)
}

/// The plugin crate `crate_name` built for `world`, with `config`, under production limits.
pub fn plugin_spec(crate_name: &str, world: World, config: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        source: PluginSource::File {
            path: wasm_path(crate_name),
            sha256: None,
        },
        world: Some(world),
        config: config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        limits: Limits::default(),
        failure_policy: FailurePolicy::Fail,
    }
}

/// Everything but the operator, which tests start, kill and restart.
pub struct Site {
    pub client: Client,
    pub lab: Lab,
    pub registry: Arc<Registry>,
    pub agent_ca: CertificateAuthority,
    pub agent_listen: SocketAddr,
    /// The agent API's silence limit for operators started from now on.
    pub agent_silence_limit: Duration,
    pub dir: tempfile::TempDir,
    _server: RunningApiServer,
}

/// A running operator: the plugin backend and the host controller.
pub struct Operator {
    pub backend: PluginBackend,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    pub async fn start() -> Site {
        Self::start_with_machines(2).await
    }

    /// A site whose lab has `machines` machines, for tests that run many hosts side by side.
    pub async fn start_with_machines(machines: u32) -> Site {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let server = Metal3Admission::register(ApiServerBuilder::new(dir.path().join("apiserver")))
            .start()
            .await
            .unwrap_or_else(|e| panic!("API server: {e}"));
        let client = server.client().await.unwrap_or_else(|e| panic!("{e}"));
        install_crds(&client).await;

        let agent_ca = CertificateAuthority::generate().unwrap_or_else(|e| panic!("{e}"));
        let agent_listen = free_port();
        let lab = start_lab(dir.path(), &agent_ca.cert_pem, agent_listen, machines).await;
        ingot_lab::images::generate(lab.image_dir(), IMAGE, IMAGE_BYTES)
            .unwrap_or_else(|e| panic!("image: {e}"));

        Site {
            client,
            lab,
            registry: registry().await,
            agent_ca,
            agent_listen,
            agent_silence_limit: ingot_agent_api::DEFAULT_SILENCE_LIMIT,
            dir,
            _server: server,
        }
    }

    /// Loads the standard-steps plugin again with `config` in place of the site's, as editing
    /// its `WasmPlugin` would.
    pub async fn load_steps_plugin(&self, config: &[(&str, &str)]) {
        let spec = plugin_spec("ingot-standard-steps", World::ProvisioningSteps, config);
        self.registry
            .load(STANDARD_STEPS, spec)
            .await
            .unwrap_or_else(|e| panic!("loading {STANDARD_STEPS}: {e}"));
    }

    /// Starts the plugin backend; after a killed operator, its agent API port may take a moment
    /// to be released.
    pub async fn start_backend(&self) -> PluginBackend {
        let mut last_error = None;
        for _ in 0..50 {
            match PluginBackend::start(self.backend_config()).await {
                Ok(backend) => return backend,
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("backend: {last_error:?}");
    }

    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig {
            registry: self.registry.clone(),
            routing: Arc::new(BuiltinRouting),
            agent_api: AgentApiConfig {
                listen: self.agent_listen,
                server_names: vec!["127.0.0.1".into()],
                advertised_url: None,
                ca: self.agent_ca.clone(),
                silence_limit: self.agent_silence_limit,
            },
            state_dir: Some(self.dir.path().join("operator")),
            max_busy_hosts: 4,
        }
    }

    /// Starts an operator; its state directory survives restarts, as a volume would.
    pub async fn start_operator(&self) -> Operator {
        self.start_operator_with(Some(Duration::from_millis(500)))
            .await
    }

    /// Starts an operator that looks at a host again after at most `max_requeue`; `None` keeps
    /// the production delays (minutes of backoff after an error).
    pub async fn start_operator_with(&self, max_requeue: Option<Duration>) -> Operator {
        let backend = self.start_backend().await;

        let settings = Settings {
            max_provisioning_retries: 2,
            jitter: Arc::new(FixedJitter(0.0)),
        };
        let mut context = Context::new(
            self.client.clone(),
            backend.clone(),
            settings,
            Arc::new(Metrics::new()),
            "lab-test",
        );
        context.max_requeue = max_requeue;
        context.reconcile_timeout = Duration::from_secs(60);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(Arc::new(context), 4, async move {
            let _ = stopped.await;
        }));
        Operator {
            backend,
            stop: Some(stop),
            task,
        }
    }

    pub fn hosts(&self) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub async fn create_host(&self, name: &str, machine: &str) {
        self.create_host_at(name, machine, &self.virtual_media_bmc(machine))
            .await;
    }

    /// Creates host `name` for lab machine `machine`, whose BMC is at `bmc`.
    pub async fn create_host_at(&self, name: &str, machine: &str, bmc: &str) {
        self.create_host_custom(name, machine, bmc, PASSWORD, json!({}))
            .await;
    }

    pub fn machine(&self, id: &str) -> Arc<ingot_lab::machine::Machine> {
        self.lab
            .machines()
            .iter()
            .find(|machine| machine.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no lab machine {id}"))
    }

    pub fn boot_mac(&self, machine: &str) -> String {
        self.machine(machine)
            .details()
            .nics
            .iter()
            .find(|nic| nic.pxe)
            .map(|nic| nic.mac.clone())
            .unwrap_or_else(|| panic!("{machine} has no PXE NIC"))
    }

    pub fn image_url(&self) -> String {
        format!("{}/images/{IMAGE}.raw", self.lab.url())
    }

    /// The lab image with its published checksum file: Metal3 admission refuses an image
    /// without a checksum unless it is a live ISO.
    pub fn checksummed_image(&self) -> serde_json::Value {
        let url = self.image_url();
        json!({"url": url, "checksum": format!("{url}.sha256sum"), "checksumType": "sha256"})
    }

    pub async fn set_image(&self, name: &str, image: serde_json::Value) {
        self.hosts()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"image": image}})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch image: {e}"));
    }

    pub async fn wait_for(&self, name: &str, wanted: ProvisioningState) -> BareMetalHost {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let host = self.hosts().get(name).await.ok();
            let status = host.as_ref().and_then(|host| host.status.clone());
            if let Some(status) = &status
                && status.provisioning.state == wanted
            {
                return host.unwrap_or_else(|| panic!("host {name} vanished"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not reach {wanted:?}; last status: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the machine runs a phase step whose agent command has started.
    pub async fn wait_for_step(&self, operator: &Operator, name: &str, step: &str) {
        let uid = self
            .hosts()
            .get(name)
            .await
            .map(|host| host.uid().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let run = operator.backend.record(&uid).and_then(|record| record.run);
            let current = run
                .as_ref()
                .and_then(|run| run.current_step().map(|s| s.name.clone()));
            if current.as_deref() == Some(step) && run.is_some_and(|run| run.state.is_some()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never ran {step}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates host `name` for lab machine `machine` like [`Site::create_host`], with `spec`
    /// merged over the usual spec (for example `{"externallyProvisioned": true}`).
    pub async fn create_host_with_spec(&self, name: &str, machine: &str, spec: serde_json::Value) {
        let bmc = self.virtual_media_bmc(machine);
        self.create_host_custom(name, machine, &bmc, PASSWORD, spec)
            .await;
    }

    /// Creates host `name` for lab machine `machine`, whose BMC is at `bmc`, with a Secret
    /// holding `password` and `extra_spec` merged into the spec.
    pub async fn create_host_custom(
        &self,
        name: &str,
        machine: &str,
        bmc: &str,
        password: &str,
        extra_spec: serde_json::Value,
    ) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-bmc")},
            "stringData": {"username": USER, "password": password},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("secret: {e}"));

        let mut spec = json!({
            "online": true,
            "bootMACAddress": self.boot_mac(machine),
            "bmc": {
                "address": bmc,
                "credentialsName": format!("{name}-bmc"),
            },
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        let host: BareMetalHost = serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        self.hosts()
            .create(&PostParams::default(), &host)
            .await
            .unwrap_or_else(|e| panic!("host: {e}"));
    }

    /// The Redfish virtual-media BMC address of lab machine `machine`, as `create_host` uses.
    pub fn virtual_media_bmc(&self, machine: &str) -> String {
        self.lab
            .bmc_address(machine)
            .replacen("redfish+", "redfish-virtualmedia+", 1)
    }

    /// Merges `patch` into host `name`.
    pub async fn patch_host(&self, name: &str, patch: serde_json::Value) {
        self.hosts()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    /// Sets (`Some`) or removes (`None`) annotation `key` of host `name`.
    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        self.patch_host(name, json!({"metadata": {"annotations": {key: value}}}))
            .await;
    }

    /// Replaces the password in the BMC Secret of host `name`, keeping the Secret itself.
    pub async fn set_bmc_password(&self, name: &str, password: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let encoded = ByteString(password.as_bytes().to_vec());
        secrets
            .patch(
                &format!("{name}-bmc"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"password": encoded}})),
            )
            .await
            .unwrap_or_else(|e| panic!("secret of {name}: {e}"));
    }

    /// Waits until host `name` satisfies `done`, which `what` describes for the failure message.
    pub async fn wait_until(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&BareMetalHost) -> bool,
    ) -> BareMetalHost {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let host = self.hosts().get(name).await.ok();
            if let Some(host) = host.as_ref().filter(|host| done(host)) {
                return host.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {what} never happened; last seen: {}",
                host.map(|host| status_summary(&host)).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every event recorded in the namespace, as JSON text.
    pub async fn events_text(&self) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = events
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("events: {e}"));
        serde_json::to_string(&list.items).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a live ISO into the lab's image store and returns its URL.
    pub fn live_iso_url(&self) -> String {
        let name = "lab-live.iso";
        ingot_lab::images::write_live_iso(&self.lab.image_dir().join(name), "LAB LIVE")
            .unwrap_or_else(|e| panic!("live ISO: {e}"));
        format!("{}/images/{name}", self.lab.url())
    }
}

impl Operator {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Ends the operator at once, as SIGKILL would: nothing is flushed or handed over.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// The lab, its firmware trusting the agent API's CA and network-booting from its server.
pub async fn start_lab(
    dir: &Path,
    agent_ca_pem: &str,
    agent_listen: SocketAddr,
    machines: u32,
) -> Lab {
    let mut profile = Profile {
        power_delay_ms: 50,
        ..Profile::default()
    };
    profile.disks[0].size_gib = 1;
    let config = LabConfig {
        machines,
        profile,
        dir: dir.join("lab"),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        credentials: Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        ipmi: true,
        trusted_ca_pem: Some(agent_ca_pem.to_owned()),
        network_boot_url: Some(format!("https://{agent_listen}/v1/network-boot")),
    };
    Lab::start(config)
        .await
        .unwrap_or_else(|e| panic!("lab: {e}"))
}

pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [BareMetalHost::crd(), HardwareData::crd()] {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|e| panic!("CRD {name} not established: {e}"))
        .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
    }
}

/// The first bytes of the machine's root disk.
pub fn disk_head(machine: &ingot_lab::machine::Machine) -> Vec<u8> {
    head(root_disk(machine))
}

pub fn image_head(site: &Site) -> Vec<u8> {
    head(&site.lab.image_dir().join(format!("{IMAGE}.raw")))
}

/// The first 4 KiB of a file, without reading a large sparse disk whole.
pub fn head(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::with_capacity(4096);
    file.take(4096)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
}

/// The file behind the machine's root disk.
pub fn root_disk(machine: &ingot_lab::machine::Machine) -> &Path {
    machine
        .hardware
        .disk_files
        .values()
        .next()
        .unwrap_or_else(|| panic!("{} has no disk", machine.id))
}

/// The status fields that tell where a host is, first, then the whole status.
pub fn status_summary(host: &BareMetalHost) -> String {
    let Some(status) = &host.status else {
        return "no status".into();
    };
    format!(
        "state {:?}, powered on {}, {:?} {:?} {:?} (count {}); annotations {:?}; {status:?}",
        status.provisioning.state,
        status.powered_on,
        status.operational_status,
        status.error_type,
        status.error_message,
        status.error_count,
        host.metadata.annotations,
    )
}
