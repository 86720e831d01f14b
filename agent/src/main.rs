//! `ingot-agent`: the deploy agent binary booted from the deploy ramdisk.
//!
//! Without a subcommand it connects to the operator named by its boot configuration and
//! serves commands. `write-image` runs one image write locally, for rescue work and for
//! measuring the write path.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ingot_agent::bootconfig::BootConfig;
use ingot_agent::client::Agent;
use ingot_agent::hardware::{SimulatedHardware, SysfsHardware};
use ingot_agent::image::ImageWriter;
use ingot_agent::inventory::{HardwareDetails, Storage};
use ingot_agent::protocol::{Checksum, ChecksumAlgorithm, ChecksumSource, WriteImage};

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
    #[command(subcommand)]
    command: Option<Local>,
}

#[derive(Debug, Subcommand)]
enum Local {
    /// Write one image to a disk or file without an operator, then print the result as JSON.
    WriteImage {
        /// Image URL (http or https).
        #[arg(long)]
        url: String,
        /// Target block device or file.
        #[arg(long)]
        disk: PathBuf,
        /// Expected digest as `<hex>` or `<algorithm>:<hex>` (md5, sha256, sha512).
        #[arg(long)]
        checksum: Option<String>,
        /// Image format: auto, raw or qcow2.
        #[arg(long, default_value = "auto")]
        format: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    match args.command {
        Some(Local::WriteImage {
            url,
            disk,
            checksum,
            format,
        }) => write_image_locally(url, disk, checksum, &format, args.tmpdir).await,
        None => serve(args.config, args.tmpdir).await,
    }
}

async fn serve(config: Option<PathBuf>, tmpdir: PathBuf) -> anyhow::Result<()> {
    let config = match &config {
        Some(path) => BootConfig::from_file(path),
        None => BootConfig::discover(),
    }
    .context("loading the boot configuration")?;
    let agent = Agent::new(config, Arc::new(SysfsHardware::default()), tmpdir)
        .context("starting the agent")?;
    agent.run().await.context("the agent stopped")
}

async fn write_image_locally(
    url: String,
    disk: PathBuf,
    checksum: Option<String>,
    format: &str,
    tmpdir: PathBuf,
) -> anyhow::Result<()> {
    let name = disk.display().to_string();
    let size = std::fs::File::open(&disk)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .with_context(|| format!("opening {name}"))?;
    let storage = Storage {
        name: name.clone(),
        size_bytes: size,
        ..Storage::default()
    };
    let hardware = SimulatedHardware {
        details: HardwareDetails {
            storage: vec![storage],
            ..HardwareDetails::default()
        },
        disk_files: BTreeMap::from([(name.clone(), disk)]),
    };
    let request = WriteImage {
        url,
        format: serde_json::from_value(serde_json::Value::String(format.to_owned()))
            .context("format must be auto, raw or qcow2")?,
        checksum: checksum.map(|value| parse_checksum(&value)),
        root_device_hints: serde_json::from_value(serde_json::json!({ "deviceName": name }))?,
        config_drive: None,
    };
    let writer = ImageWriter {
        client: reqwest::Client::new(),
        spill_dir: tmpdir,
    };

    let written = writer.write(&hardware, &request, Arc::new(|_| {})).await?;

    let report = serde_json::json!({ "written": written, "peakRssKib": peak_rss_kib() });
    println!("{report}");
    Ok(())
}

fn parse_checksum(value: &str) -> Checksum {
    let (algorithm, digest) = match value.split_once(':') {
        Some(("md5", digest)) => (ChecksumAlgorithm::Md5, digest),
        Some(("sha256", digest)) => (ChecksumAlgorithm::Sha256, digest),
        Some(("sha512", digest)) => (ChecksumAlgorithm::Sha512, digest),
        _ => (ChecksumAlgorithm::Auto, value),
    };
    Checksum {
        algorithm,
        value: ChecksumSource::Digest(digest.to_owned()),
    }
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_arguments_accept_an_optional_algorithm_prefix() {
        assert_eq!(
            parse_checksum("sha512:ab").algorithm,
            ChecksumAlgorithm::Sha512
        );
        assert_eq!(parse_checksum("abcd").algorithm, ChecksumAlgorithm::Auto);
        assert_eq!(
            parse_checksum("abcd").value,
            ChecksumSource::Digest("abcd".into())
        );
        assert_eq!(
            ingot_agent::protocol::ImageFormat::default(),
            ingot_agent::protocol::ImageFormat::Auto
        );
    }
}
