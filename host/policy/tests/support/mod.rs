//! Shared set-up for the controller tests: the embedded API server with the
//! plugin CRDs, a registry over real components built by `make plugins`, and
//! the controllers started through `ingot_policy::start`.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ingot_api::plugins::{
    FileSource, PluginSource, PluginWorld, WasmPlugin, WasmPluginSpec, WasmPluginStatus,
};
use ingot_apiserver::{ApiServerBuilder, RunningApiServer};
use ingot_plugin_host::bindings::selection::{Candidate, Claim, LabelSelector, Requirements};
use ingot_plugin_host::bindings::types::{Cpu, HardwareDetails, HostRef};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::limits::GuardSettings;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::routing::Routing;
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::Fetcher;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, ResourceExt};
use tokio::sync::oneshot;

/// Longest wait for an expected state: the suite shares two busy cores,
/// and a debug build compiles a component in seconds.
pub const WAIT: Duration = Duration::from_secs(120);

/// The directory `make plugins` writes components to, for this target dir.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("wasm32-wasip2")
        .join("plugin")
}

/// The component of plugin crate `crate_name`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));

    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` (with the same CARGO_TARGET_DIR) before the tests",
        path.display()
    );
    path
}

/// The bytes of plugin crate `crate_name`.
pub fn wasm(crate_name: &str) -> Vec<u8> {
    std::fs::read(wasm_path(crate_name))
        .unwrap_or_else(|error| panic!("reading {crate_name}: {error}"))
}

/// A registry whose runtime shares a compile cache between test binaries.
pub fn registry(guard: GuardSettings) -> Arc<Registry> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ingot-policy-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");

    Arc::new(Registry::new(
        Arc::new(runtime),
        Fetcher::new(reqwest::Client::new()),
        guard,
    ))
}

/// The API server, the controllers and their routing.
pub struct Lab {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub routing: Arc<dyn Routing>,
    server: RunningApiServer,
    stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Starts everything, with the bundled plugins taken from `bundled_dir`.
    pub async fn start(bundled_dir: &Path, guard: GuardSettings) -> Lab {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();

        let dir = tempfile::tempdir().expect("temporary directory");
        let server = ApiServerBuilder::new(dir.path())
            .start()
            .await
            .expect("API server starts");
        let client = server.client().await.expect("client");
        install_plugin_crds(&client).await;

        let registry = registry(guard);
        let (stop, stopped) = oneshot::channel::<()>();
        let routing = ingot_policy::start(client.clone(), registry.clone(), bundled_dir, async {
            let _ = stopped.await;
        })
        .await;

        Lab {
            client,
            registry,
            routing,
            server,
            stop,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.shutdown().await;
    }

    pub fn plugins(&self) -> Api<WasmPlugin> {
        Api::all(self.client.clone())
    }

    /// Creates the `WasmPlugin` `name` loading plugin crate `crate_name`.
    pub async fn create_plugin(&self, name: &str, crate_name: &str, world: PluginWorld) {
        self.plugins()
            .create(
                &PostParams::default(),
                &file_plugin(name, crate_name, world),
            )
            .await
            .expect("create WasmPlugin");
    }
}

async fn install_plugin_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let plugin_crds = ingot_api::crds::all()
        .expect("CRDs build")
        .into_iter()
        .filter(|crd| crd.spec.group == ingot_api::plugins::PLUGIN_GROUP);

    for crd in plugin_crds {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("CRD condition watch");
    }
}

/// A `WasmPlugin` loading the file of plugin crate `crate_name`.
pub fn file_plugin(name: &str, crate_name: &str, world: PluginWorld) -> WasmPlugin {
    WasmPlugin::new(
        name,
        WasmPluginSpec {
            source: PluginSource {
                file: Some(FileSource {
                    path: wasm_path(crate_name).display().to_string(),
                    sha256: None,
                }),
                ..PluginSource::default()
            },
            world,
            config: Default::default(),
            limits: None,
            failure_policy: Default::default(),
        },
    )
}

/// Waits until `name` exists and satisfies `check`; panics naming `what`
/// with the last state seen.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;

    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(object)) = api.get_opt(name).await {
            if check(&object) {
                return object;
            }
            last = Some(object);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    panic!("timed out waiting for {name}: {what}; last seen {last:#?}");
}

/// Waits until `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;

    while tokio::time::Instant::now() < deadline {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    panic!("timed out waiting for {name} to be deleted");
}

/// The condition `kind` of a status's conditions.
pub fn condition<'a>(conditions: Option<&'a Vec<Condition>>, kind: &str) -> Option<&'a Condition> {
    conditions?.iter().find(|condition| condition.type_ == kind)
}

/// The condition `kind` of a `WasmPlugin`.
pub fn plugin_condition<'a>(plugin: &'a WasmPlugin, kind: &str) -> Option<&'a Condition> {
    condition(plugin.status.as_ref()?.conditions.as_ref(), kind)
}

/// Whether the condition `kind` has `status` ("True"/"False") and `reason`.
pub fn has(plugin: &WasmPlugin, kind: &str, status: &str, reason: &str) -> bool {
    plugin_condition(plugin, kind)
        .is_some_and(|condition| condition.status == status && condition.reason == reason)
}

/// The status, for assertions.
pub fn status(plugin: &WasmPlugin) -> WasmPluginStatus {
    plugin.status.clone().unwrap_or_default()
}

fn host(name: &str, domain: &str, cpus: u32, ram_gib: u64) -> Candidate {
    Candidate {
        host: HostRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        labels: Vec::new(),
        failure_domain: Some(domain.into()),
        hardware: Some(HardwareDetails {
            system_vendor: None,
            bios: None,
            ram_mebibytes: ram_gib * 1024,
            nics: Vec::new(),
            storage: Vec::new(),
            cpu: Some(Cpu {
                arch: "x86_64".into(),
                model: "lab".into(),
                clock_megahertz: 2000.0,
                flags: Vec::new(),
                count: cpus,
            }),
            hostname: None,
        }),
    }
}

/// A claim named `identity` for two hosts: a small one in rack A, which
/// already holds one host of the group, and a big one in rack B.
pub fn select(identity: &str) -> PluginCall {
    PluginCall::Select {
        claim: Claim {
            identity: identity.into(),
            labels: Vec::new(),
            selector: LabelSelector {
                match_labels: Vec::new(),
                match_expressions: Vec::new(),
            },
            requirements: Requirements {
                cpu_arch: None,
                min_cpus: Some(4),
                min_ram_mebibytes: None,
                min_disk_bytes: None,
                min_nics: None,
                extra: Vec::new(),
            },
            failure_domain: None,
            domain_usage: vec![("rack-a".into(), 1)],
        },
        candidates: vec![
            host("fits-in-a", "rack-a", 8, 32),
            host("big-in-b", "rack-b", 64, 512),
        ],
    }
}

/// The first ranked host of a selection reply.
pub fn first_ranked(reply: &PluginReply) -> String {
    match reply {
        PluginReply::Choice(choice) => choice
            .ranked
            .first()
            .map(|ranked| ranked.host.name.clone())
            .unwrap_or_default(),
        other => panic!("expected a choice, got {other:?}"),
    }
}
