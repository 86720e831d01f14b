//! `ingot dev`: the whole provisioning flow on this machine: the embedded API server, the
//! virtual lab, the operator and the example manifests, with a live view of the fleet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ingot_dev::session::{self, Options};

/// Options of `ingot dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// State directory: the API server's store and kubeconfig, the lab's disks and images.
    /// Running again with the same directory resumes where the last run stopped.
    #[arg(long, default_value = ".ingot-dev")]
    state: PathBuf,
    /// Manifests created on first start (objects that already exist are left alone).
    #[arg(long, default_value = "examples/dev")]
    manifests: PathBuf,
    /// Directory of the built plugin components (`make plugins`); the example WasmPlugins'
    /// `/var/lib/ingot/plugins` is mapped to it.
    #[arg(long, env = "INGOT_PLUGIN_DIR")]
    plugins: Option<PathBuf>,
    /// Address of the API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address of the lab (BMCs, image server); the examples' 127.0.0.1:8700 is mapped to it.
    #[arg(long, default_value = session::EXAMPLE_LAB_ADDRESS)]
    lab_listen: SocketAddr,
    /// Number of simulated machines (the examples describe four).
    #[arg(long, default_value_t = 4)]
    machines: u32,
    /// Size of the generated OS image in MiB (at least 64).
    #[arg(long, default_value_t = 128)]
    image_mib: u64,
    /// Address of the operator's health and metrics endpoints.
    #[arg(long, default_value = "127.0.0.1:9440")]
    operator_endpoints: SocketAddr,
    /// Address of the deploy agent API the lab's machines reach the operator at.
    #[arg(long, default_value = "127.0.0.1:8701")]
    agent_listen: SocketAddr,
}

/// Runs a dev session until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = options(args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = wait_for_stop_signal().context("cannot listen for Ctrl-C and SIGTERM")?;
        session::run(options, stop)
            .await
            .context("the dev session failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn options(args: Args) -> anyhow::Result<Options> {
    let plugin_dir = match args.plugins {
        Some(dir) => dir,
        None => default_plugin_dir(),
    };
    let plugin_dir = std::path::absolute(&plugin_dir).with_context(|| {
        format!(
            "cannot resolve the plugin directory {}",
            plugin_dir.display()
        )
    })?;
    Ok(Options {
        state_dir: args.state,
        manifests: args.manifests,
        plugin_dir,
        api_listen: args.listen,
        lab_listen: args.lab_listen,
        machines: args.machines,
        image_mib: args.image_mib.max(64),
        max_requeue: Duration::from_secs(2),
        operator_endpoints: args.operator_endpoints,
        agent_listen: args.agent_listen,
    })
}

/// Where `make plugins` puts the components: `$CARGO_TARGET_DIR` or `target`.
fn default_plugin_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("wasm32-wasip2").join("plugin")
}

/// A future that completes on the first Ctrl-C or SIGTERM.
fn wait_for_stop_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("stopping the dev session");
    })
}
