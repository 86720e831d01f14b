//! `ingot images`: small operating system images for tests and the lab.

use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `ingot images`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImagesCommand {
    /// Write `<name>.raw` (GPT with an EFI and a root partition) and `<name>.qcow2`, with
    /// `.sha256sum` files, into a directory.
    Generate {
        /// Output directory (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Base file name.
        #[arg(long, default_value = "lab-os")]
        name: String,
        /// Virtual size in MiB (at least 64).
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
    },
}

/// Runs `ingot images`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ImagesCommand::Generate {
        out,
        name,
        size_mib,
    } = args.command;
    std::fs::create_dir_all(&out)?;
    let images = ingot_lab::images::generate(&out, &name, size_mib << 20)?;
    for path in [&images.raw, &images.qcow2] {
        let digest = ingot_lab::images::file_digest(path, "sha256")?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(
            out.join(format!("{file_name}.sha256sum")),
            format!("{digest}  {file_name}\n"),
        )?;
        println!("{}  sha256:{digest}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
