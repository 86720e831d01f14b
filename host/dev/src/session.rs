//! One dev session: everything `ingot dev` starts, in order, and stops again.
//!
//! Order: API server → CRDs → lab (BMCs, image server, OS image) → example manifests →
//! operator, Metal3Machine controllers, Cluster API stand-in and the fleet view, all stopped
//! by the same shutdown signal.
//!
//! The state directory holds the API server's store and kubeconfig (`apiserver/`), the lab's
//! disks and images (`lab/`) and the operator's provisioning progress, deploy agent API state
//! and compiled plugins (`operator/`). Starting again on the same directory resumes: objects
//! already in the store are kept as they are (the example manifests only create what is
//! missing), the lab's disks keep their contents, the image is generated only once and every
//! host continues at the provisioning step it was on.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use ingot_agent_api::AgentApiConfig;
use ingot_backend::{BackendConfig, PluginBackend};
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};
use ingot_machines::selection::Selectors;
use ingot_operator::runner::{self, RunConfig};
use ingot_operator::state_machine::Settings;
use serde_json::Value;

use crate::cluster::{self, Manifest};
use crate::{capi, fleet};

/// Where the example BareMetalHosts and images expect the lab.
pub const EXAMPLE_LAB_ADDRESS: &str = "127.0.0.1:8700";
/// Where the example IPMI host expects its BMC.
pub const EXAMPLE_IPMI_ADDRESS: &str = "127.0.0.1:8623";
/// The lab machine the example IPMI host is (the fourth).
pub const EXAMPLE_IPMI_MACHINE: &str = "lab-3";
/// Where the example WasmPlugins expect the plugin components (an operator image's layout).
pub const EXAMPLE_PLUGIN_DIR: &str = "/var/lib/ingot/plugins";
/// BMC user name of the lab's machines, matching `examples/dev/00-bmc-credentials.yaml`.
pub const LAB_USERNAME: &str = "admin";
/// BMC password of the lab's machines, matching `examples/dev/00-bmc-credentials.yaml`.
pub const LAB_PASSWORD: &str = "password";
/// Namespace of the examples and of the operator's leader Lease.
pub const DEV_NAMESPACE: &str = "default";
/// Base name of the OS image the lab serves (`<name>.raw`, `<name>.qcow2`).
pub const IMAGE_NAME: &str = "lab-os";

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The state directory (created if missing; reused to resume).
    pub state_dir: PathBuf,
    /// The manifests applied on first start (`examples/dev`).
    pub manifests: PathBuf,
    /// Directory of the built plugin components (`<target>/wasm32-wasip2/plugin`).
    pub plugin_dir: PathBuf,
    /// Address of the API server.
    pub api_listen: SocketAddr,
    /// Address of the lab (Redfish BMCs, image server, control API).
    pub lab_listen: SocketAddr,
    /// Number of simulated machines.
    pub machines: u32,
    /// Size of the generated OS image, in MiB.
    pub image_mib: u64,
    /// Upper bound on the operator's retry and poll delays, so that the lab moves briskly.
    pub max_requeue: Duration,
    /// Address of the operator's health and metrics endpoints.
    pub operator_endpoints: SocketAddr,
    /// Address of the deploy agent API the lab's machines reach the operator at.
    pub agent_listen: SocketAddr,
}

/// Failures starting a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory could not be prepared.
    #[error("cannot prepare the state directory {path}")]
    StateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The API server did not start.
    #[error("cannot start the API server")]
    ApiServer(#[source] ingot_apiserver::StartError),
    /// No client for the API server.
    #[error("cannot connect to the API server")]
    Client(#[source] ingot_apiserver::ClientError),
    /// CRDs or manifests could not be applied.
    #[error("cannot set up the cluster")]
    Cluster(#[source] cluster::Error),
    /// The lab did not start.
    #[error("cannot start the lab")]
    Lab(#[source] ingot_lab::Error),
    /// The OS image could not be generated.
    #[error("cannot generate the OS image in {dir}")]
    Image {
        /// Image directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: ingot_lab::images::Error,
    },
    /// The operator stopped with an error.
    #[error("the operator stopped")]
    Operator(#[source] runner::RunError),
    /// The plugin provisioner could not start.
    #[error("cannot start the plugin provisioner")]
    Backend(#[source] ingot_backend::BackendError),
    /// The fleet view could not write.
    #[error("cannot write the fleet view")]
    View(#[source] std::io::Error),
}

/// The state directory's parts.
struct StateLayout {
    apiserver: PathBuf,
    lab: PathBuf,
    operator: PathBuf,
}

/// Prepares the state directory's layout. Paths are made absolute because the kubeconfig's
/// path is printed for pasting into another terminal, which may be elsewhere.
fn state_layout(state_dir: &Path) -> Result<StateLayout, Error> {
    let state_dir = std::path::absolute(state_dir).map_err(|source| Error::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let layout = StateLayout {
        apiserver: state_dir.join("apiserver"),
        lab: state_dir.join("lab"),
        operator: state_dir.join("operator"),
    };
    for dir in [&layout.apiserver, &layout.lab, &layout.operator] {
        std::fs::create_dir_all(dir).map_err(|source| Error::StateDir {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(layout)
}

/// Runs a session until `shutdown` resolves, then stops everything.
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let layout = state_layout(&options.state_dir)?;
    let server = cluster::api_server(&layout.apiserver)
        .listen(options.api_listen)
        .start()
        .await
        .map_err(Error::ApiServer)?;
    let client = server.client().await.map_err(Error::Client)?;
    cluster::install_crds(&client)
        .await
        .map_err(Error::Cluster)?;

    let authority =
        ingot_backend::load_or_create_authority(&layout.operator).map_err(Error::Backend)?;
    let lab = start_lab(&options, &layout.lab, &authority.cert_pem).await?;
    let endpoints = LabEndpoints {
        http: lab.url().trim_start_matches("http://").to_string(),
        ipmi: lab
            .ipmi_address(EXAMPLE_IPMI_MACHINE)
            .map(|a| a.to_string()),
    };
    let manifests = dev_manifests(&options, &endpoints)?;
    let created = cluster::create_missing(&client, &manifests)
        .await
        .map_err(Error::Cluster)?;
    tracing::info!(
        created,
        kept = manifests.len() - created,
        "example manifests applied"
    );
    println!("export KUBECONFIG={}", server.kubeconfig_path().display());

    let shutdown = shutdown.boxed().shared();
    let registry =
        ingot_backend::plugin_registry(Some(&layout.operator)).map_err(Error::Backend)?;
    let routing = ingot_policy::start(
        client.clone(),
        registry.clone(),
        &options.plugin_dir,
        shutdown.clone(),
    )
    .await;
    let backend = PluginBackend::start(BackendConfig {
        registry: registry.clone(),
        routing: routing.clone(),
        agent_api: AgentApiConfig {
            listen: options.agent_listen,
            server_names: vec![options.agent_listen.ip().to_string()],
            advertised_url: None,
            ca: authority,
            silence_limit: ingot_agent_api::DEFAULT_SILENCE_LIMIT,
        },
        state_dir: Some(layout.operator.clone()),
        max_busy_hosts: ingot_backend::DEFAULT_MAX_BUSY_HOSTS,
    })
    .await
    .map_err(Error::Backend)?;

    let operator = runner::run(
        client.clone(),
        backend,
        operator_config(&options),
        shutdown.clone(),
    );
    let stand_in = capi::run(client.clone(), shutdown.clone());
    let machine_loop = ingot_machines::run(
        client.clone(),
        Selectors::through_plugins(registry, routing),
        machine_settings(&options),
        shutdown.clone(),
    );
    let terminal = std::io::stdout().is_terminal();
    let view = fleet::run(
        client,
        fleet::View::new(std::io::stdout(), terminal),
        shutdown.clone(),
    );
    let (operator, (), (), view) = tokio::join!(operator, stand_in, machine_loop, view);

    drop(lab);
    server.shutdown().await;
    operator.map_err(Error::Operator)?;
    view.map_err(Error::View)
}

/// The lab, its machines' firmware trusting the deploy agent API's CA for virtual media and
/// booting from its network boot server.
async fn start_lab(options: &Options, lab_dir: &Path, agent_ca_pem: &str) -> Result<Lab, Error> {
    let config = LabConfig {
        machines: options.machines,
        profile: Profile::default(),
        dir: lab_dir.to_path_buf(),
        listen: options.lab_listen,
        credentials: Credentials {
            username: LAB_USERNAME.to_string(),
            password: LAB_PASSWORD.to_string(),
        },
        ipmi: true,
        trusted_ca_pem: Some(agent_ca_pem.to_owned()),
        network_boot_url: Some(format!("https://{}/v1/network-boot", options.agent_listen)),
    };
    let lab = Lab::start(config).await.map_err(Error::Lab)?;
    let image = lab.image_dir().join(format!("{IMAGE_NAME}.raw"));
    if !image.exists() {
        tracing::info!(size_mib = options.image_mib, "generating the OS image");
        ingot_lab::images::generate(lab.image_dir(), IMAGE_NAME, options.image_mib << 20).map_err(
            |source| Error::Image {
                dir: lab.image_dir().to_path_buf(),
                source,
            },
        )?;
    }
    Ok(lab)
}

/// The machine loop, polling hosts as briskly as the operator moves them.
fn machine_settings(options: &Options) -> ingot_machines::Settings {
    ingot_machines::Settings {
        wait_for_host: options.max_requeue,
        poll_host: options.max_requeue,
        retry: options.max_requeue,
        ..ingot_machines::Settings::default()
    }
}

fn operator_config(options: &Options) -> RunConfig {
    RunConfig {
        identity: "ingot-dev".to_string(),
        endpoints: options.operator_endpoints,
        lease_namespace: Some(DEV_NAMESPACE.to_string()),
        lease_duration: Duration::from_secs(15),
        concurrency: 4,
        settings: Settings::default(),
        max_requeue: Some(options.max_requeue),
    }
}

/// Where this session's lab listens.
#[derive(Debug, Clone)]
pub struct LabEndpoints {
    /// `host:port` of the Redfish service and image server.
    pub http: String,
    /// `host:port` of the IPMI machine's BMC, when it has one.
    pub ipmi: Option<String>,
}

/// The example manifests, pointed at this session's lab and plugin directory.
pub fn dev_manifests(options: &Options, lab: &LabEndpoints) -> Result<Vec<Manifest>, Error> {
    let mut manifests = cluster::load_manifests(&options.manifests).map_err(Error::Cluster)?;
    let plugin_dir = options.plugin_dir.display().to_string();
    let ipmi = lab
        .ipmi
        .clone()
        .unwrap_or_else(|| EXAMPLE_IPMI_ADDRESS.to_string());
    for manifest in &mut manifests {
        rewrite_strings(&mut manifest.object, &|text| {
            text.replace(EXAMPLE_LAB_ADDRESS, &lab.http)
                .replace(EXAMPLE_IPMI_ADDRESS, &ipmi)
                .replace(EXAMPLE_PLUGIN_DIR, &plugin_dir)
        });
    }
    Ok(manifests)
}

/// Applies `rewrite` to every string value in `value`.
fn rewrite_strings(value: &mut Value, rewrite: &dyn Fn(&str) -> String) {
    match value {
        Value::String(text) => *text = rewrite(text),
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_strings(v, rewrite)),
        Value::Object(map) => map.values_mut().for_each(|v| rewrite_strings(v, rewrite)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn example_addresses_follow_the_session() {
        let mut object = json!({"spec": {"bmc": {"address":
            "redfish-virtualmedia+http://127.0.0.1:8700/redfish/v1/Systems/lab-0"},
            "source": {"file": {"path": "/var/lib/ingot/plugins/ingot_plugin_redfish.wasm"}},
            "list": ["http://127.0.0.1:8700/images/lab-os.raw", 3]}});
        rewrite_strings(&mut object, &|text| {
            text.replace(EXAMPLE_LAB_ADDRESS, "127.0.0.1:41000")
                .replace(EXAMPLE_PLUGIN_DIR, "/repo/target/wasm32-wasip2/plugin")
        });
        assert_eq!(
            object["spec"]["bmc"]["address"],
            "redfish-virtualmedia+http://127.0.0.1:41000/redfish/v1/Systems/lab-0"
        );
        assert_eq!(
            object["spec"]["source"]["file"]["path"],
            "/repo/target/wasm32-wasip2/plugin/ingot_plugin_redfish.wasm"
        );
        assert_eq!(
            object["spec"]["list"][0],
            "http://127.0.0.1:41000/images/lab-os.raw"
        );
        assert_eq!(object["spec"]["list"][1], 3);
    }

    #[test]
    fn the_state_layout_is_absolute_so_the_printed_kubeconfig_works_from_anywhere() {
        let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let relative = relative_to_cwd(parent.path()).join("state");

        let layout = state_layout(&relative).unwrap_or_else(|e| panic!("{e}"));

        assert!(
            layout.apiserver.is_absolute(),
            "{}",
            layout.apiserver.display()
        );
        assert!(layout.apiserver.is_dir());
    }

    /// `target` as a path relative to the current directory.
    fn relative_to_cwd(target: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap_or_else(|e| panic!("{e}"));
        let ups = cwd.components().count() - 1;
        let mut relative: PathBuf = std::iter::repeat_n("..", ups).collect();
        relative.push(target.strip_prefix("/").unwrap_or(target));
        relative
    }
}
