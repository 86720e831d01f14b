//! `ingot`: the command-line entry point. Each subcommand lives in its own module; adding one
//! means one variant in [`Command`], one match arm in [`main`] and one module file.

mod apiserver;
mod crds;
mod dev;
mod images;
mod lab;
mod operator;
mod plugin;
mod validate;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Provision bare-metal machines the Metal3 way, extended with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "ingot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions of every ingot kind as YAML files.
    Crds(crds::Args),
    /// Check manifests offline against the schemas and admission rules; exit 0 only if valid.
    Validate(validate::Args),
    /// Run the embedded development Kubernetes API server (not a production control plane).
    Apiserver(apiserver::Args),
    /// Run simulated bare-metal machines behind a Redfish service, with an image server.
    Lab(lab::Args),
    /// Generate small raw and qcow2 operating system images for tests and the lab.
    Images(images::Args),
    /// Run the BareMetalHost controller against a Kubernetes API server.
    Operator(operator::Args),
    /// Run the whole flow here: API server, virtual lab, operator, examples and a fleet view.
    Dev(dev::Args),
    /// Inspect, check and call WebAssembly plugins.
    Plugin(plugin::Args),
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => crds::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Apiserver(args) => apiserver::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Images(args) => images::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Plugin(args) => plugin::run(args),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`). Reconciles are counted by
/// trigger for the operator's metrics whatever the filter.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(logs)
        .with(ingot_operator::triggers::layer())
        .init();
}
