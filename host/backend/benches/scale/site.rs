//! One process holding a whole site: the embedded API server, the virtual lab with its
//! simulated machines and deploy agents, and the operator with the plugin backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ingot_agent_api::{AgentApiConfig, CertificateAuthority};
use ingot_api::metal3::{BareMetalHost, HardwareData, ProvisioningState};
use ingot_apiserver::{ApiServerBuilder, RunningApiServer};
use ingot_backend::{BackendConfig, DEFAULT_MAX_BUSY_HOSTS, PluginBackend};
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};
use ingot_operator::admission::Metal3Admission;
use ingot_operator::backoff::FixedJitter;
use ingot_operator::controller::{self, Context};
use ingot_operator::metrics::Metrics;
use ingot_operator::state_machine::Settings;
use ingot_plugin_host::drivers::REDFISH_DRIVER;
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry};
use ingot_plugin_host::routing::{BuiltinRouting, STANDARD_STEPS};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::world::World;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

use crate::measure::{CountTraffic, Traffic};

const NAMESPACE: &str = "default";
const USER: &str = "admin";
const PASSWORD: &str = "lab-password";
const IMAGE: &str = "scale-os";
/// The smallest image the lab generates; every provisioned machine gets a copy on its disk.
const IMAGE_BYTES: u64 = 64 << 20;
/// Requests the benchmark itself keeps in flight while creating hosts or setting images.
const DRIVER_PARALLELISM: usize = 32;

/// Knobs of one run, printed with its table.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Hosts created at once.
    pub hosts: usize,
    /// Hosts then given an image.
    pub machines: usize,
    /// Hosts the controller reconciles at the same time (the operator's default is 4).
    pub concurrency: u16,
    /// Hosts with a phase under way at the same time in the backend.
    pub max_busy_hosts: usize,
    /// Upper bound on every requeue delay, as `ingot dev` sets one; none by default, as in
    /// `ingot operator`.
    pub max_requeue: Option<Duration>,
}

impl Shape {
    /// The operator's defaults for `hosts` hosts and `machines` machines.
    pub fn new(hosts: usize, machines: usize) -> Self {
        Shape {
            hosts,
            machines,
            concurrency: 4,
            max_busy_hosts: DEFAULT_MAX_BUSY_HOSTS,
            max_requeue: None,
        }
    }
}

/// A running site; dropping it stops everything and removes its files.
pub struct Site {
    client: Client,
    lab: Lab,
    agent_ca: CertificateAuthority,
    server: RunningApiServer,
    dir: tempfile::TempDir,
}

/// The operator of a site, its request counter and metrics.
pub struct Operator {
    /// Requests its client sent.
    pub traffic: Arc<Traffic>,
    /// Its Prometheus metrics.
    pub metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Stops the controller and waits for it to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

impl Site {
    /// Starts the API server and a lab of `machines` machines that power on and off at once.
    pub async fn start(machines: usize) -> Site {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let server = Metal3Admission::register(ApiServerBuilder::new(dir.path().join("apiserver")))
            .start()
            .await
            .unwrap_or_else(|e| panic!("API server: {e}"));
        let client = server.client().await.unwrap_or_else(|e| panic!("{e}"));
        install_crds(&client).await;
        let agent_ca = CertificateAuthority::generate().unwrap_or_else(|e| panic!("{e}"));
        let lab = start_lab(dir.path(), machines, &agent_ca.cert_pem).await;
        ingot_lab::images::generate(lab.image_dir(), IMAGE, IMAGE_BYTES)
            .unwrap_or_else(|e| panic!("image: {e}"));
        Site {
            client,
            lab,
            agent_ca,
            server,
            dir,
        }
    }

    /// Median round trip of one status write to this API server: the unit per-host times are
    /// compared with. Runs before the operator starts, on a host it never sees.
    pub async fn baseline_status_write(&self) -> Duration {
        let hosts = self.hosts();
        let host: BareMetalHost = serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": "baseline"}, "spec": {"online": false},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        hosts
            .create(&PostParams::default(), &host)
            .await
            .unwrap_or_else(|e| panic!("baseline host: {e}"));
        let mut samples = Vec::new();
        for round in 0..50 {
            let patch = Patch::Merge(json!({"status": {"errorCount": round}}));
            let started = std::time::Instant::now();
            hosts
                .patch_status("baseline", &PatchParams::default(), &patch)
                .await
                .unwrap_or_else(|e| panic!("status write: {e}"));
            samples.push(started.elapsed());
        }
        hosts
            .delete("baseline", &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting the baseline host: {e}"));
        samples.sort();
        samples[samples.len() / 2]
    }

    /// Starts the plugin backend and the host controller, with a client that counts requests.
    pub async fn start_operator(&self, shape: &Shape) -> Operator {
        let backend = PluginBackend::start(BackendConfig {
            registry: registry().await,
            routing: Arc::new(BuiltinRouting),
            agent_api: AgentApiConfig {
                listen: free_port(),
                server_names: vec!["127.0.0.1".into()],
                advertised_url: None,
                ca: self.agent_ca.clone(),
                silence_limit: ingot_agent_api::DEFAULT_SILENCE_LIMIT,
            },
            state_dir: Some(self.dir.path().join("operator")),
            max_busy_hosts: shape.max_busy_hosts,
        })
        .await
        .unwrap_or_else(|e| panic!("backend: {e}"));

        let traffic = Arc::new(Traffic::default());
        let metrics = Arc::new(Metrics::new());
        let mut context = Context::new(
            self.counted_client(&traffic).await,
            backend,
            Settings {
                max_provisioning_retries: 2,
                jitter: Arc::new(FixedJitter(0.0)),
            },
            metrics.clone(),
            "scale-bench",
        );
        context.max_requeue = shape.max_requeue;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(
            Arc::new(context),
            shape.concurrency,
            async move {
                let _ = stopped.await;
            },
        ));
        Operator {
            traffic,
            metrics,
            stop,
            task,
        }
    }

    async fn counted_client(&self, traffic: &Arc<Traffic>) -> Client {
        let config = self
            .server
            .kube_config()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ClientBuilder::try_from(config)
            .unwrap_or_else(|e| panic!("client: {e}"))
            .with_layer(&CountTraffic(traffic.clone()))
            .build()
    }

    /// The names of the hosts, `host-0` on, one per lab machine.
    pub fn host_names(&self, count: usize) -> Vec<String> {
        (0..count).map(|index| format!("host-{index}")).collect()
    }

    /// Creates a BMC secret and a host for each lab machine, many at a time.
    pub async fn create_hosts(&self, names: &[String]) {
        let machines = self.lab.machines();
        futures::stream::iter(names.iter().zip(machines))
            .map(|(name, machine)| self.create_host(name, machine))
            .buffer_unordered(DRIVER_PARALLELISM)
            .collect::<()>()
            .await;
    }

    async fn create_host(&self, name: &str, machine: &ingot_lab::machine::Machine) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-bmc")},
            "stringData": {"username": USER, "password": PASSWORD},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("secret of {name}: {e}"));

        let boot_mac = machine
            .details()
            .nics
            .iter()
            .find(|nic| nic.pxe)
            .map(|nic| nic.mac.clone())
            .unwrap_or_else(|| panic!("{} has no PXE NIC", machine.id));
        let address =
            self.lab
                .bmc_address(&machine.id)
                .replacen("redfish+", "redfish-virtualmedia+", 1);
        let host: BareMetalHost = serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "online": true,
                "bootMACAddress": boot_mac,
                "bmc": {"address": address, "credentialsName": format!("{name}-bmc")},
            },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        self.hosts()
            .create(&PostParams::default(), &host)
            .await
            .unwrap_or_else(|e| panic!("host {name}: {e}"));
    }

    /// Gives each named host the lab's image, many at a time.
    pub async fn set_images(&self, names: &[String]) {
        let url = format!("{}/images/{IMAGE}.raw", self.lab.url());
        let image =
            json!({"url": url, "checksum": format!("{url}.sha256sum"), "checksumType": "sha256"});
        let patch = Patch::Merge(json!({"spec": {"image": image}}));
        let hosts = self.hosts();
        futures::stream::iter(names)
            .map(|name| {
                let (hosts, patch) = (&hosts, &patch);
                async move {
                    hosts
                        .patch(name, &PatchParams::default(), patch)
                        .await
                        .unwrap_or_else(|e| panic!("image of {name}: {e}"));
                }
            })
            .buffer_unordered(DRIVER_PARALLELISM)
            .collect::<()>()
            .await;
    }

    /// Times the lab's image was downloaded.
    pub fn image_downloads(&self) -> u64 {
        self.lab.image_downloads(&format!("{IMAGE}.raw"))
    }

    /// Waits until every named host is in `wanted`, watching rather than polling so that the
    /// benchmark adds little load of its own. Panics with the hosts left behind at `timeout`.
    pub async fn wait_all(&self, names: &[String], wanted: ProvisioningState, timeout: Duration) {
        let mut states: HashMap<String, ProvisioningState> = HashMap::new();
        let watching = async {
            let mut events = watcher(self.hosts(), watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Ok(Some(host)) = events.try_next().await {
                states.insert(host.name_any(), state(&host));
                let done = names.iter().all(|name| states.get(name) == Some(&wanted));
                if done {
                    return;
                }
            }
        };
        if tokio::time::timeout(timeout, watching).await.is_err() {
            panic!("{}", left_behind(&states, names, wanted));
        }
    }

    fn hosts(&self) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }
}

fn state(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

/// How many hosts were in which state when a wait gave up.
fn left_behind(
    states: &HashMap<String, ProvisioningState>,
    names: &[String],
    wanted: ProvisioningState,
) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in names {
        let state = states
            .get(name)
            .map_or_else(|| "unseen".to_string(), |state| format!("{state:?}"));
        *counts.entry(state).or_default() += 1;
    }
    format!("not every host reached {wanted:?} in time; hosts per state: {counts:?}")
}

/// The `.wasm` of plugin crate `crate_name`, as built by `make plugins`.
fn wasm_path(crate_name: &str) -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir.join("wasm32-wasip2").join("plugin").join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` (with the same CARGO_TARGET_DIR) first",
        path.display()
    );
    path
}

/// The Redfish driver and standard-steps plugins, compiled once into the target directory's
/// cache so that later runs start quickly.
async fn registry() -> Arc<Registry> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("ingot-plugin-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap_or_else(|e| panic!("runtime: {e}"));
    let registry = Registry::new(
        Arc::new(runtime),
        Fetcher::new(reqwest::Client::new()),
        GuardSettings::default(),
    );
    let plugins = [
        (REDFISH_DRIVER, "ingot-plugin-redfish", World::BmcDriver),
        (
            STANDARD_STEPS,
            "ingot-standard-steps",
            World::ProvisioningSteps,
        ),
    ];
    for (name, crate_name, world) in plugins {
        let spec = PluginSpec {
            source: PluginSource::File {
                path: wasm_path(crate_name),
                sha256: None,
            },
            world: Some(world),
            config: Vec::new(),
            limits: Limits::default(),
            failure_policy: FailurePolicy::Fail,
        };
        registry
            .load(name, spec)
            .await
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    }
    Arc::new(registry)
}

/// A lab whose machines power on and off at once, with a 1 GiB sparse root disk each, whose
/// firmware trusts the agent API's CA.
async fn start_lab(dir: &Path, machines: usize, agent_ca_pem: &str) -> Lab {
    let mut profile = Profile {
        power_delay_ms: 0,
        ..Profile::default()
    };
    profile.disks.truncate(1);
    if let Some(disk) = profile.disks.first_mut() {
        disk.size_gib = 1;
    }
    let config = LabConfig {
        machines: u32::try_from(machines).unwrap_or(u32::MAX),
        profile,
        dir: dir.join("lab"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        credentials: Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        ipmi: false,
        trusted_ca_pem: Some(agent_ca_pem.to_owned()),
        network_boot_url: None,
    };
    Lab::start(config)
        .await
        .unwrap_or_else(|e| panic!("lab: {e}"))
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

async fn install_crds(client: &Client) {
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
