//! How the operator scales with the number of hosts it manages.
//!
//! For each fleet size N, one process starts the embedded API server, a lab of N simulated
//! machines that power on and off at once (each with a Redfish BMC and the real deploy agent),
//! and the operator with the plugin backend (the Redfish driver and standard-steps Wasm
//! plugins, the deploy agent API). It then:
//! - creates N hosts at once and waits until every one is `available` (registration and agent
//!   inspection);
//! - gives M of them an image (M = min(N, 50) unless set) and waits until every one is
//!   `provisioned` (the agent downloads and writes a 64 MiB image).
//!
//! For each phase it prints the wall time, the operator's API requests and writes (counted at
//! its client, so the benchmark's own requests are left out), its reconciles, and the CPU time
//! and peak resident memory of the process, per host, with a table comparing fleet sizes.
//!
//! Run with `cargo bench -p ingot-backend --bench scale [-- N...]` after `make plugins` with the
//! same `CARGO_TARGET_DIR`. Fleet sizes default to 100 and 1000 (`INGOT_SCALE_HOSTS`, e.g.
//! `100,1000,10000`, or numbers after `--`); `INGOT_SCALE_MACHINES` sets M,
//! `INGOT_SCALE_CONCURRENCY` the reconciles at the same time (default 4, the operator's),
//! `INGOT_SCALE_MAX_BUSY_HOSTS` the backend's hosts under way at the same time (default 20, the
//! operator's), `INGOT_SCALE_MAX_REQUEUE_MS` a bound on requeue delays (none by default, as in the
//! operator).

mod measure;
mod report;
mod site;

use std::time::Duration;

use ingot_api::metal3::ProvisioningState;

use crate::measure::{Meter, peak_rss_kib, reset_peak_rss};
use crate::report::{Run, print_comparison, print_run};
use crate::site::{Shape, Site};

/// Fleet sizes when none are given.
const DEFAULT_FLEETS: [usize; 2] = [100, 1000];
/// Machines given an image when `INGOT_SCALE_MACHINES` is not set: at most this many.
const DEFAULT_MACHINES: usize = 50;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let fleets = fleet_sizes();
    let mut runs = Vec::new();
    for hosts in fleets {
        let shape = shape_for(hosts);
        let run = measure_fleet(&shape).await;
        print_run(&run);
        runs.push(run);
    }
    print_comparison(&runs);
}

/// Fleet sizes from the command line (numbers after `--`), else `INGOT_SCALE_HOSTS`.
fn fleet_sizes() -> Vec<usize> {
    let from_args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .filter(|&hosts| hosts > 0)
        .collect();
    if !from_args.is_empty() {
        return from_args;
    }
    let from_env: Vec<usize> = std::env::var("INGOT_SCALE_HOSTS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .filter(|&hosts| hosts > 0)
        .collect();
    if from_env.is_empty() {
        DEFAULT_FLEETS.to_vec()
    } else {
        from_env
    }
}

fn shape_for(hosts: usize) -> Shape {
    let number = |name: &str| -> Option<u64> { std::env::var(name).ok()?.trim().parse().ok() };
    let mut shape = Shape::new(hosts, hosts.min(DEFAULT_MACHINES));
    if let Some(machines) = number("INGOT_SCALE_MACHINES") {
        shape.machines = usize::try_from(machines).unwrap_or(hosts).min(hosts);
    }
    if let Some(concurrency) = number("INGOT_SCALE_CONCURRENCY") {
        shape.concurrency = u16::try_from(concurrency).unwrap_or(u16::MAX).max(1);
    }
    if let Some(busy) = number("INGOT_SCALE_MAX_BUSY_HOSTS") {
        shape.max_busy_hosts = usize::try_from(busy).unwrap_or(usize::MAX).max(1);
    }
    if let Some(millis) = number("INGOT_SCALE_MAX_REQUEUE_MS") {
        shape.max_requeue = Some(Duration::from_millis(millis));
    }
    shape
}

/// Generous bounds on each phase, so that a stuck host ends the run with a diagnosis.
fn phase_timeout(hosts: usize) -> Duration {
    Duration::from_secs(300) + Duration::from_millis(500) * u32::try_from(hosts).unwrap_or(0)
}

async fn measure_fleet(shape: &Shape) -> Run {
    eprintln!(
        "starting a site of {} hosts ({} to provision)",
        shape.hosts, shape.machines
    );
    let site = Site::start(shape.hosts).await;
    let baseline = site.baseline_status_write().await;
    let rss_reset = reset_peak_rss();
    let operator = site.start_operator(shape).await;
    let names = site.host_names(shape.hosts);

    let meter = Meter::start(&operator.traffic, &operator.metrics);
    site.create_hosts(&names).await;
    site.wait_all(
        &names,
        ProvisioningState::Available,
        phase_timeout(shape.hosts),
    )
    .await;
    let to_available = meter.finish(&operator.traffic, &operator.metrics);
    let available_rss_kib = peak_rss_kib();
    eprintln!(
        "{} hosts available in {:.1} s",
        shape.hosts,
        to_available.wall.as_secs_f64()
    );

    let machines = &names[..shape.machines];
    let meter = Meter::start(&operator.traffic, &operator.metrics);
    site.set_images(machines).await;
    site.wait_all(
        machines,
        ProvisioningState::Provisioned,
        phase_timeout(shape.machines),
    )
    .await;
    let to_provisioned = meter.finish(&operator.traffic, &operator.metrics);

    let peak_rss_kib = peak_rss_kib();
    let image_downloads = site.image_downloads();
    operator.stop().await;
    Run {
        shape: *shape,
        baseline,
        to_available,
        to_provisioned,
        available_rss_kib,
        peak_rss_kib,
        peak_rss_is_own: rss_reset,
        image_downloads,
    }
}
