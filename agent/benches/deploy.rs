//! Deploy benchmark: the agent's image write path against the standard tools, in one run on
//! the same filesystem.
//!
//! - raw: `ingot-agent write-image` (HTTP download + SHA-256 + write + fsync) against
//!   `dd bs=4M conv=fsync` of the same image file; goal ≥ 0.9× dd's throughput;
//! - qcow2: the agent's streaming conversion against downloading the file and running
//!   `qemu-img convert` (plus fsync); goal ≤ 1.0× of that time;
//! - the agent's peak resident memory (VmHWM of the agent process); goal ≤ 64 MiB.
//!
//! The image size defaults to 2 GiB (`INGOT_BENCH_IMAGE_MIB`), runs to 3
//! (`INGOT_BENCH_RUNS`); files go to `INGOT_BENCH_DIR` or the system temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A raw image of `size` bytes: three quarters pseudo-random data, one quarter zeros.
fn make_raw_image(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}")),
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; MIB as usize];
    for index in 0..size / MIB {
        if index % 4 == 3 {
            block.fill(0);
        } else {
            for chunk in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
        }
        file.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
    }
    file.flush().unwrap_or_else(|e| panic!("{e}"));
}

fn fresh_target(path: &Path, size: u64) {
    let _ = std::fs::remove_file(path);
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    file.set_len(size).unwrap_or_else(|e| panic!("{e}"));
}

fn serve(dir: PathBuf) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/{name}",
                axum::routing::get(
                    move |axum::extract::Path(name): axum::extract::Path<String>| {
                        let path = dir.join(name);
                        async move {
                            let file = tokio::fs::File::open(path)
                                .await
                                .map_err(|_| axum::http::StatusCode::NOT_FOUND)?;
                            let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
                            let body = axum::body::Body::from_stream(
                                tokio_util::io::ReaderStream::with_capacity(file, 1 << 20),
                            );
                            Ok::<_, axum::http::StatusCode>((
                                [(axum::http::header::CONTENT_LENGTH, len.to_string())],
                                body,
                            ))
                        }
                    },
                ),
            );
            let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                return;
            };
            let _ = sender.send(
                listener
                    .local_addr()
                    .map(|a| format!("http://{a}"))
                    .unwrap_or_default(),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    receiver
        .recv()
        .unwrap_or_else(|e| panic!("image server did not start: {e}"))
}

/// Runs the agent binary; returns (elapsed, peak RSS in KiB).
fn agent_write(url: &str, target: &Path, checksum: &str, tmpdir: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args([
            "--tmpdir",
            &tmpdir.to_string_lossy(),
            "write-image",
            "--url",
            url,
            "--disk",
            &target.to_string_lossy(),
            "--checksum",
            checksum,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    (elapsed, report["peakRssKib"].as_u64().unwrap_or_default())
}

/// Downloads to a file, as a deploy that converts afterwards must.
fn download(url: &str, to: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let mut response = reqwest::get(url).await.unwrap_or_else(|e| panic!("{e}"));
        let mut file = tokio::fs::File::create(to)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        while let Some(chunk) = response.chunk().await.unwrap_or_else(|e| panic!("{e}")) {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "deploy benchmark skipped: run it with `cargo bench -p ingot-agent --bench deploy`"
        );
        return;
    }
    let size = env_u64("INGOT_BENCH_IMAGE_MIB", 2048) * MIB;
    let runs = env_u64("INGOT_BENCH_RUNS", 3).max(1);
    let base = std::env::var_os("INGOT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let work = tempfile::tempdir_in(&base).unwrap_or_else(|e| panic!("{e}"));
    let dir = work.path();
    let raw = dir.join("disk.raw");
    let qcow2 = dir.join("disk.qcow2");
    let target = dir.join("target.img");
    let downloaded = dir.join("downloaded.qcow2");
    println!(
        "deploy benchmark: {} MiB image, {runs} runs, in {}",
        size / MIB,
        base.display()
    );

    make_raw_image(&raw, size);
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &raw.to_string_lossy(),
            &qcow2.to_string_lossy(),
        ],
    );
    let raw_sum = tool("sha256sum", &[&raw.to_string_lossy()])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let qcow2_sum = tool("sha256sum", &[&qcow2.to_string_lossy()])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let url = serve(dir.to_owned());
    let target_size = size + 64 * MIB;

    let (mut dd, mut agent_raw, mut baseline_qcow2, mut agent_qcow2, mut peak) =
        (vec![], vec![], vec![], vec![], 0u64);
    for _ in 0..runs {
        fresh_target(&target, target_size);
        let started = Instant::now();
        tool(
            "dd",
            &[
                &format!("if={}", raw.display()),
                &format!("of={}", target.display()),
                "bs=4M",
                "conv=fsync,notrunc",
                "status=none",
            ],
        );
        dd.push(size as f64 / MIB as f64 / started.elapsed().as_secs_f64());

        fresh_target(&target, target_size);
        let (elapsed, rss) = agent_write(
            &format!("{url}/disk.raw"),
            &target,
            &format!("sha256:{raw_sum}"),
            dir,
        );
        agent_raw.push(size as f64 / MIB as f64 / elapsed.as_secs_f64());
        peak = peak.max(rss);

        fresh_target(&target, target_size);
        let started = Instant::now();
        download(&format!("{url}/disk.qcow2"), &downloaded);
        tool(
            "qemu-img",
            &[
                "convert",
                "-n",
                "-f",
                "qcow2",
                "-O",
                "raw",
                &downloaded.to_string_lossy(),
                &target.to_string_lossy(),
            ],
        );
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .unwrap_or_else(|e| panic!("{e}"));
        baseline_qcow2.push(started.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&downloaded);

        fresh_target(&target, target_size);
        let (elapsed, rss) = agent_write(
            &format!("{url}/disk.qcow2"),
            &target,
            &format!("sha256:{qcow2_sum}"),
            dir,
        );
        agent_qcow2.push(elapsed.as_secs_f64());
        peak = peak.max(rss);
    }

    let (dd, agent_raw) = (median(dd), median(agent_raw));
    let (baseline_qcow2, agent_qcow2) = (median(baseline_qcow2), median(agent_qcow2));
    println!(
        "raw write:    agent {agent_raw:.0} MiB/s (HTTP + sha256 + fsync), dd {dd:.0} MiB/s -> {:.2}x dd (goal >= 0.90)",
        agent_raw / dd
    );
    println!(
        "qcow2 deploy: agent {agent_qcow2:.2} s, download + qemu-img convert {baseline_qcow2:.2} s -> {:.2}x (goal <= 1.00)",
        agent_qcow2 / baseline_qcow2
    );
    println!(
        "agent peak memory: {:.1} MiB for a {} MiB image (goal <= 64)",
        peak as f64 / 1024.0,
        size / MIB
    );
}
