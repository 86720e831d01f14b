//! `ingot apiserver`: runs the embedded development API server until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `ingot apiserver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the store, the CA and the kubeconfig (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

/// Serves until Ctrl-C or SIGTERM; `DATA/kubeconfig` points clients at it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    // The same server `ingot dev` runs: ingot's multi-version kinds are converted in process,
    // so clients and the operator may read them in any served version.
    let server = ingot_dev::cluster::api_server(&args.data)
        .listen(args.listen)
        .start()
        .await
        .with_context(|| {
            format!(
                "cannot start the apiserver with data directory {}",
                args.data.display()
            )
        })?;
    println!(
        "serving {} (kubeconfig: {})",
        server.url(),
        server.kubeconfig_path().display()
    );
    wait_for_stop_signal().await?;
    tracing::info!("stopping the apiserver");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}
