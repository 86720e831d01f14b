//! `ingot lab`: runs simulated bare-metal machines behind one Redfish service, with an image
//! server and a control API for fault injection, until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};

/// Options of `ingot lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of machines.
    #[arg(long, default_value_t = 3)]
    machines: u32,
    /// Hardware profile (YAML or JSON); a small two-disk server when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Address of the lab's HTTP listener (Redfish, images, control API).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Directory for the machines' sparse disk files and the image store.
    #[arg(long, default_value = ".ingot-lab")]
    dir: PathBuf,
    /// BMC user name.
    #[arg(long, env = "INGOT_LAB_USERNAME", default_value = "admin")]
    username: String,
    /// BMC password.
    #[arg(
        long,
        env = "INGOT_LAB_PASSWORD",
        default_value = "password",
        hide_env_values = true
    )]
    password: String,
    /// Also serve IPMI (RMCP+, lanplus) for every machine, each on its own UDP port.
    #[arg(long)]
    ipmi: bool,
    /// PEM file of a CA the machines' firmware trusts for HTTPS virtual media and network boot,
    /// e.g. the operator's deploy agent API CA; the public roots are trusted either way.
    #[arg(long)]
    trusted_ca: Option<PathBuf>,
    /// Base URL of a network boot server the firmware asks for `<url>/<mac>` when booting from
    /// the network, e.g. the operator's `https://127.0.0.1:6385/v1/network-boot`.
    #[arg(long)]
    network_boot_url: Option<String>,
    /// Size in MiB of the sample OS images generated into the image store (0 skips them).
    #[arg(long, default_value_t = 256)]
    sample_image_mib: u64,
}

/// Runs the lab until Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let profile = match &args.profile {
        Some(path) => Profile::from_file(path)?,
        None => Profile::default(),
    };
    let trusted_ca_pem = args
        .trusted_ca
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the trusted CA {}", path.display()))
        })
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args, profile, trusted_ca_pem))
}

async fn serve(
    args: Args,
    profile: Profile,
    trusted_ca_pem: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = LabConfig {
        machines: args.machines,
        profile,
        dir: args.dir.clone(),
        listen: args.listen,
        credentials: Credentials {
            username: args.username.clone(),
            password: args.password,
        },
        ipmi: args.ipmi,
        trusted_ca_pem,
        network_boot_url: args.network_boot_url.clone(),
    };
    let lab = Lab::start(config).await.context("starting the lab")?;
    if args.sample_image_mib > 0 {
        let images =
            ingot_lab::images::generate(lab.image_dir(), "lab-os", args.sample_image_mib << 20)?;
        tracing::info!(raw = %images.raw.display(), qcow2 = %images.qcow2.display(), "sample images ready");
    }

    println!(
        "lab listening on {} (BMC user {:?})",
        lab.url(),
        args.username
    );
    for machine in lab.machines() {
        let boot_mac = machine
            .details()
            .nics
            .first()
            .map(|n| n.mac.as_str())
            .unwrap_or_default();
        let ipmi = lab
            .ipmi_address(&machine.id)
            .map(|a| format!("  ipmi {a}"))
            .unwrap_or_default();
        println!(
            "  {}  bmc {}{ipmi}  boot MAC {boot_mac}",
            machine.id,
            lab.bmc_address(&machine.id)
        );
    }
    println!(
        "images: {}/images/<name> (checksums at <name>.sha256sum); faults: PUT {}/lab/v1/machines/<id>/faults",
        lab.url(),
        lab.url()
    );

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}
