//! `ingot operator`: runs the BareMetalHost controller and, under the same leadership, the
//! machine loop (Metal3Machine, Metal3Cluster and HostClaim) against a Kubernetes API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::BoxFuture;
use ingot_agent_api::AgentApiConfig;
use ingot_backend::{BackendConfig, PluginBackend};
use ingot_machines::Selectors;
use ingot_operator::backoff::RandomJitter;
use ingot_operator::fake::FakeBackend;
use ingot_operator::runner::{self, RunConfig};
use ingot_operator::state_machine::{DEFAULT_MAX_PROVISIONING_RETRIES, Settings};
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::routing::Routing;

/// Which provisioner drives the hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProvisionerKind {
    /// BMC driver and provisioning-steps plugins, and the deploy agent on the machines.
    Plugins,
    /// Simulated machines held in memory: every host registers, inspects and provisions at once.
    Fixture,
}

/// Options of `ingot operator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig to use; the in-cluster or default configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// What drives the hardware.
    #[arg(long, value_enum, default_value = "plugins")]
    provisioner: ProvisionerKind,
    /// Directory of the bundled plugin components (`make plugins` builds them).
    #[arg(
        long,
        env = "INGOT_PLUGIN_DIR",
        default_value = "/var/lib/ingot/plugins"
    )]
    plugin_dir: PathBuf,
    /// Where the operator keeps each host's provisioning progress, the deploy agent API's
    /// state and CA, and compiled plugins; keep it on a persistent volume.
    #[arg(long, env = "INGOT_STATE_DIR", default_value = "/var/lib/ingot/state")]
    state_dir: PathBuf,
    /// Address the deploy agent API listens on.
    #[arg(long, default_value = "0.0.0.0:6385")]
    agent_api_listen: SocketAddr,
    /// URL deploy agents reach the agent API at, e.g. `https://10.0.0.2:6385`; its host must be
    /// reachable from the provisioning network. Defaults to the listen address.
    #[arg(long)]
    agent_api_url: Option<String>,
    /// Seconds a deploy agent may go unheard before the command it runs is given up as lost
    /// and the step fails, e.g. after the agent crashed. A live agent reports every second
    /// while it works and keeps a poll open while idle, so this only needs to cover network
    /// hiccups.
    #[arg(
        long,
        default_value_t = ingot_agent_api::DEFAULT_SILENCE_LIMIT.as_secs(),
        value_parser = clap::value_parser!(u64).range(5..=86_400)
    )]
    agent_silence_timeout_seconds: u64,
    /// Hosts inspecting, provisioning or cleaning at the same time; the rest wait as `delayed`.
    #[arg(long, default_value_t = ingot_backend::DEFAULT_MAX_BUSY_HOSTS)]
    max_busy_hosts: usize,
    /// Address of the health, readiness and metrics endpoints.
    #[arg(long, default_value = "127.0.0.1:9440")]
    endpoints: SocketAddr,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Run without leader election (a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// This replica's identity (defaults to the host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Hosts reconciled at the same time.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Consecutive failed provisionings of one image before giving up (0: never).
    #[arg(long, default_value_t = DEFAULT_MAX_PROVISIONING_RETRIES)]
    max_provisioning_retries: u32,
    /// Upper bound in milliseconds on every retry and poll delay (for labs; unset in production).
    #[arg(long)]
    max_requeue_ms: Option<u64>,
    /// Do not run the machine loop (the Metal3Machine, Metal3Cluster and HostClaim
    /// controllers), e.g. when another Cluster API infrastructure provider claims the hosts.
    #[arg(long)]
    no_machines: bool,
}

/// Runs the operator until Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let config = RunConfig {
        identity,
        endpoints: args.endpoints,
        lease_namespace: (!args.no_leader_election).then(|| args.lease_namespace.clone()),
        lease_duration: Duration::from_secs(15),
        concurrency: args.concurrency.max(1),
        settings: Settings {
            max_provisioning_retries: args.max_provisioning_retries,
            jitter: Arc::new(RandomJitter),
        },
        max_requeue: args.max_requeue_ms.map(Duration::from_millis),
    };
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    .boxed()
    .shared();
    match args.provisioner {
        ProvisionerKind::Plugins => {
            let registry = ingot_backend::plugin_registry(Some(&args.state_dir))?;
            let routing = ingot_policy::start(
                client.clone(),
                registry.clone(),
                &args.plugin_dir,
                shutdown.clone(),
            )
            .await;
            let backend =
                PluginBackend::start(backend_config(&args, registry.clone(), routing.clone())?)
                    .await
                    .context("starting the plugin provisioner")?;
            let machines = machine_loop(&args, Selectors::through_plugins(registry, routing));
            runner::run_with(client, backend, config, machines, shutdown).await?
        }
        ProvisionerKind::Fixture => {
            let machines = machine_loop(&args, Selectors::default());
            runner::run_with(client, FakeBackend::new(), config, machines, shutdown).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The plugin provisioner's settings, with the agent API's certificate covering the host the
/// agents are told to reach.
fn backend_config(
    args: &Args,
    registry: Arc<Registry>,
    routing: Arc<dyn Routing>,
) -> anyhow::Result<BackendConfig> {
    let authority = ingot_backend::load_or_create_authority(&args.state_dir)?;
    let advertised = args.agent_api_url.clone();
    let server_name = match &advertised {
        Some(url) => url::Url::parse(url)
            .with_context(|| format!("--agent-api-url {url:?} is not a URL"))?
            .host_str()
            .map(|host| host.trim_matches(['[', ']']).to_owned())
            .with_context(|| format!("--agent-api-url {url:?} has no host"))?,
        None if args.agent_api_listen.ip().is_unspecified() => anyhow::bail!(
            "--agent-api-listen {} names no address the machines could reach; set --agent-api-url \
             to the URL deploy agents use, e.g. https://10.0.0.2:6385",
            args.agent_api_listen
        ),
        None => args.agent_api_listen.ip().to_string(),
    };

    Ok(BackendConfig {
        registry,
        routing,
        agent_api: AgentApiConfig {
            listen: args.agent_api_listen,
            server_names: vec![server_name],
            advertised_url: advertised,
            ca: authority,
            silence_limit: Duration::from_secs(args.agent_silence_timeout_seconds),
        },
        state_dir: Some(args.state_dir.clone()),
        max_busy_hosts: args.max_busy_hosts,
    })
}

/// The machine loop, run next to the host controller while this replica leads; nothing with
/// `--no-machines`. Its polls follow `--max-requeue-ms` like the host controller's.
fn machine_loop(
    args: &Args,
    selectors: Selectors,
) -> impl FnOnce(kube::Client, runner::Stop) -> BoxFuture<'static, ()> + use<> {
    let bound = args.max_requeue_ms.map(Duration::from_millis);
    let enabled = !args.no_machines;

    move |client, stop| {
        if !enabled {
            tracing::info!("machine loop disabled by --no-machines");
            return futures::future::ready(()).boxed();
        }
        let bounded = |delay: Duration| bound.map_or(delay, |bound| bound.min(delay));
        let defaults = ingot_machines::Settings::default();
        let settings = ingot_machines::Settings {
            wait_for_host: bounded(defaults.wait_for_host),
            poll_host: bounded(defaults.poll_host),
            retry: bounded(defaults.retry),
            ..defaults
        };
        ingot_machines::run(client, selectors, settings, stop).boxed()
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a Kubernetes configuration")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ingot".to_string());
    format!("{host}-{}", std::process::id())
}
