//! `ingot crds`: writes one YAML file per CRD into a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Options of `ingot crds`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory the CRD files are written to.
    #[arg(long, default_value = "crds")]
    out: PathBuf,
}

/// Generates the CRDs and writes them under `args.out`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let written = ingot_api::crds::write_all(&args.out)
        .with_context(|| format!("generating CRDs into {}", args.out.display()))?;
    for path in &written {
        tracing::info!(path = %path.display(), "wrote CRD");
    }
    Ok(ExitCode::SUCCESS)
}
