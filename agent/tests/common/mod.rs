//! Shared set-up for the agent's integration tests: an HTTP file server on 127.0.0.1,
//! simulated machines with file-backed disks, and wrappers around the system tools used as
//! independent references (qemu-img, sfdisk, blkid, wipefs, mtools).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ingot_agent::hardware::SimulatedHardware;
use ingot_agent::image::{ImageWriter, ProgressFn};
use ingot_agent::inventory::{HardwareDetails, Storage};

/// Serves the files of `dir` over HTTP on an ephemeral 127.0.0.1 port; returns the base URL.
pub async fn serve_dir(dir: &Path) -> String {
    let dir = dir.to_owned();
    let app = axum::Router::new().route(
        "/{name}",
        axum::routing::get(
            move |axum::extract::Path(name): axum::extract::Path<String>| {
                let path = dir.join(name);
                async move {
                    match tokio::fs::read(path).await {
                        Ok(bytes) => Ok(bytes),
                        Err(_) => Err(axum::http::StatusCode::NOT_FOUND),
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Runs a tool and returns its stdout; panics with the tool's stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is required (install it with `make setup-packages`): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a tool and returns (exit code, stdout) without judging the exit code.
pub fn run_status(program: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is required (install it with `make setup-packages`): {e}")
        });
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Makes a sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    file.set_len(size).unwrap_or_else(|e| panic!("{e}"));
}

/// A machine with one file-backed disk per `(serial, size, rotational)`, named sda, sdb, ...
pub fn machine(dir: &Path, disks: &[(&str, u64, bool)]) -> SimulatedHardware {
    let mut storage = Vec::new();
    let mut disk_files = BTreeMap::new();
    for (index, (serial, size, rotational)) in disks.iter().enumerate() {
        let kernel = format!("sd{}", (b'a' + index as u8) as char);
        let name = format!("/dev/disk/by-path/pci-0000:00:17.0-ata-{}", index + 1);
        let path = dir.join(format!("{kernel}.img"));
        sparse_file(&path, *size);
        disk_files.insert(name.clone(), path);
        storage.push(Storage {
            name,
            alternate_names: vec![format!("/dev/{kernel}")],
            rotational: *rotational,
            size_bytes: *size,
            vendor: "ATA".into(),
            model: format!("Model-{serial}"),
            serial_number: (*serial).into(),
            wwn: format!("0x5000c5000000000{index}"),
            hctl: format!("{index}:0:0:0"),
            ..Storage::default()
        });
    }
    SimulatedHardware {
        details: HardwareDetails {
            storage,
            ..HardwareDetails::default()
        },
        disk_files,
    }
}

/// An image writer with a plain HTTP client and spill files in `dir`.
pub fn writer(dir: &Path) -> ImageWriter {
    ImageWriter {
        client: reqwest::Client::new(),
        spill_dir: dir.to_owned(),
    }
}

/// A progress callback that ignores progress.
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// Path of the file behind the disk at `index` of a machine.
pub fn disk_path(machine: &SimulatedHardware, index: usize) -> PathBuf {
    let name = &machine.details.storage[index].name;
    machine.disk_files[name].clone()
}

/// Writes `data` at `offset` of a file without truncating it.
pub fn poke(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_all_at(data, offset)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Reads `len` bytes at `offset` of a file.
pub fn peek(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("{e}"));
    buf
}

/// A deterministic, incompressible-looking byte pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// A 48 MiB raw image with a GPT (two partitions), data scattered with holes and zero runs,
/// and an odd tail, built with sfdisk so that the partition table is independently made.
pub fn raw_image_with_gpt(path: &Path) {
    sparse_file(path, 48 << 20);
    let script =
        "label: gpt\nstart=2048, size=20480, name=boot\nstart=22528, size=40960, name=root\n";
    let mut child = Command::new("sfdisk")
        .args(["--quiet", &path.to_string_lossy()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("sfdisk is required (install it with `make setup-packages`): {e}")
        });
    if let Some(stdin) = child.stdin.as_mut() {
        use std::io::Write;
        stdin
            .write_all(script.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "sfdisk failed");
    poke(path, 1 << 20, &pattern(3 << 20, 1));
    poke(path, 12 << 20, &pattern(70_000, 2));
    poke(path, (30 << 20) + 4097, &pattern(5 << 20, 3));
}
