//! `ingot validate FILE...`: checks manifests offline against ingot's schemas and admission
//! rules, printing one line per problem. Exits 0 only when there is no error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ingot_api::manifest::{self, Options, Severity};

/// Options of `ingot validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories (every *.yaml and *.yml below them); `-` reads stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,

    /// Namespace assumed for objects that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
}

/// Checks the manifests named in `args` and prints the findings.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    let mut unreadable = 0;
    for path in &args.paths {
        for file in expand(path) {
            match read(&file) {
                Ok(text) => files.push((file.display().to_string(), text)),
                Err(error) => {
                    unreadable += 1;
                    println!(
                        "{}: document 0: -: -: error: cannot read: {error}",
                        file.display()
                    );
                }
            }
        }
    }

    let options = Options {
        default_namespace: args.namespace,
    };
    let report = manifest::check_files(&files, &options);
    for finding in &report.findings {
        println!("{finding}");
    }
    eprintln!(
        "checked {} documents in {} files: {} errors, {} warnings",
        report.documents,
        files.len(),
        report.errors() + unreadable,
        report.warnings()
    );

    let failed = unreadable > 0
        || report
            .findings
            .iter()
            .any(|finding| finding.severity == Severity::Error);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin());
    }
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A directory stands for the YAML files below it, in name order.
fn expand(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            found.push(dir);
            continue;
        };
        for entry in entries.flatten() {
            let entry_path = entry.path();
            let is_yaml = entry_path
                .extension()
                .is_some_and(|extension| extension == "yaml" || extension == "yml");
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if is_yaml {
                found.push(entry_path);
            }
        }
    }
    found.sort();
    found
}
