//! `ingot-agent`: the deploy agent binary booted from the deploy ramdisk.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use ingot_agent::bootconfig::BootConfig;
use ingot_agent::client::Agent;
use ingot_agent::hardware::SysfsHardware;

/// Deploy agent: connects to the ingot operator and provisions this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Boot configuration file; by default the path named by `ingot.agent_config=` on the
    /// kernel command line, else /etc/ingot/agent.json.
    #[arg(long, env = "INGOT_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for temporary files (qcow2 images whose layout cannot be streamed).
    #[arg(long, env = "INGOT_AGENT_TMPDIR", default_value = "/var/tmp")]
    tmpdir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let config = match &args.config {
        Some(path) => BootConfig::from_file(path),
        None => BootConfig::discover(),
    }
    .context("loading the boot configuration")?;
    let agent = Agent::new(config, Arc::new(SysfsHardware::default()), args.tmpdir)
        .context("starting the agent")?;
    agent.run().await.context("the agent stopped")?;
    Ok(())
}
