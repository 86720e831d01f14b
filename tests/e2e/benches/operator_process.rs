//! What the `ingot operator` process alone takes to manage a fleet: its resident memory and CPU
//! time once N hosts created at once are all available, with the API server and the lab (whose
//! machines run the real deploy agent) in processes of their own, so that the figures are the
//! operator's and nobody else's. The operator runs as in production: plugin backend, no bound
//! on requeue delays, 20 hosts busy at once. For each N it also prints the same figures per host,
//! the number of host reconciles, what triggered them, and how long hosts due waited for a
//! worker (from the operator's metrics), and the growth from the smallest fleet to the largest.
//!
//! ```text
//! make plugins && cargo bench -p ingot-e2e --bench operator_process            # 1,000 and 10,000
//! make plugins && cargo bench -p ingot-e2e --bench operator_process -- 200    # other sizes
//! make plugins && cargo bench -p ingot-e2e --bench operator_process -- 3000 --no-machines
//! ```
//!
//! `--no-machines` runs the operator without its machine loop, which watches every
//! BareMetalHost too: the difference is what that loop costs.

#[path = "../tests/chaos"]
#[allow(
    dead_code,
    reason = "shared with the chaos test, which uses what this benchmark does not"
)]
mod chaos {
    pub mod fleet;
    pub mod processes;
    pub mod site;
}

use std::time::{Duration, Instant};

use chaos::fleet;
use chaos::site::Site;
use ingot_api::metal3::ProvisioningState;
use kube::api::ListParams;

/// Fleet sizes when none are given after `--`.
const DEFAULT_FLEETS: [usize; 2] = [1_000, 10_000];
/// The goal for 10,000 hosts.
const GOAL_RSS_MIB: f64 = 512.0;
/// How often the benchmark counts available hosts (a list of every host, so not too often).
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// The operator's figures for one fleet.
struct Measured {
    hosts: usize,
    without_machines: bool,
    to_available: Duration,
    peak_rss_mib: f64,
    rss_mib: f64,
    cpu: Duration,
    reconciles: f64,
    failed_reconciles: f64,
    triggers: Vec<(String, f64)>,
    queue_wait: QueueWait,
}

/// How long hosts due for a reconcile waited for a worker, from the operator's histogram.
struct QueueWait {
    mean_ms: f64,
    /// Upper bounds of the histogram buckets holding the median and the 99th percentile.
    median_at_most_ms: f64,
    p99_at_most_ms: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let fleets = fleet_sizes();
    let without_machines = std::env::args().any(|arg| arg == "--no-machines");
    let mut measured = Vec::new();
    for hosts in fleets {
        let run = measure(hosts, without_machines).await;
        print_run(&run);
        measured.push(run);
    }
    print_growth(&measured);
}

fn fleet_sizes() -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .filter(|&hosts| hosts > 0)
        .collect();
    if sizes.is_empty() {
        DEFAULT_FLEETS.to_vec()
    } else {
        sizes
    }
}

async fn measure(hosts: usize, without_machines: bool) -> Measured {
    eprintln!("starting the API server and a lab of {hosts} machines");
    let mut site = Site::start(hosts).await;
    fleet::install_plugins_before_start(&site.client).await;
    site.lift_requeue_bound();
    if without_machines {
        site.add_operator_arg("--no-machines");
    }
    site.start_operator();
    fleet::wait_for_plugins(&site.client).await;
    let pid = site
        .operator_pid()
        .unwrap_or_else(|| panic!("the operator is not running"));

    let started = Instant::now();
    fleet::create_hosts(&site, hosts).await;
    wait_until_available(&mut site, hosts, timeout_for(hosts)).await;
    let to_available = started.elapsed();

    let status = proc_status(pid);
    let metrics = site.operator_metrics().await;
    Measured {
        hosts,
        without_machines,
        to_available,
        peak_rss_mib: status_kib(&status, "VmHWM:") / 1024.0,
        rss_mib: status_kib(&status, "VmRSS:") / 1024.0,
        cpu: cpu_time(pid),
        reconciles: metric(&metrics, "ingot_reconcile_duration_seconds_count"),
        failed_reconciles: metric(&metrics, "ingot_reconcile_failures_total"),
        triggers: host_triggers(&metrics),
        queue_wait: queue_wait(&metrics),
    }
}

/// The host reconciles by trigger, most frequent first.
fn host_triggers(metrics: &str) -> Vec<(String, f64)> {
    let prefix = "ingot_reconcile_triggers_total{kind=\"BareMetalHost\",trigger=\"";
    let mut triggers: Vec<(String, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let (trigger, count) = line.strip_prefix(prefix)?.split_once("\"} ")?;
            Some((trigger.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    triggers.sort_by(|a, b| b.1.total_cmp(&a.1));
    triggers
}

const QUEUE_WAIT: &str = "ingot_reconcile_queue_wait_seconds";

fn queue_wait(metrics: &str) -> QueueWait {
    let count = metric(metrics, &format!("{QUEUE_WAIT}_count"));
    let sum = metric(metrics, &format!("{QUEUE_WAIT}_sum"));
    QueueWait {
        mean_ms: sum * 1e3 / count,
        median_at_most_ms: bucket_bound(metrics, 0.5 * count) * 1e3,
        p99_at_most_ms: bucket_bound(metrics, 0.99 * count) * 1e3,
    }
}

/// The upper bound of the first queue-wait bucket holding at least `rank` observations.
fn bucket_bound(metrics: &str, rank: f64) -> f64 {
    let prefix = format!("{QUEUE_WAIT}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let (bound, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((
                bound.parse::<f64>().ok()?,
                count.trim().parse::<f64>().ok()?,
            ))
        })
        .find(|(_, cumulative)| *cumulative >= rank)
        .map_or(f64::NAN, |(bound, _)| bound)
}

/// The value of an unlabelled metric in the operator's Prometheus text.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// A generous bound, so that a stuck fleet ends the run with a count instead of hanging.
fn timeout_for(hosts: usize) -> Duration {
    Duration::from_secs(300) + Duration::from_millis(200) * u32::try_from(hosts).unwrap_or(0)
}

async fn wait_until_available(site: &mut Site, hosts: usize, timeout: Duration) {
    let api = fleet::hosts_api(&site.client);
    let deadline = Instant::now() + timeout;
    loop {
        site.assert_running();
        let list = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing hosts: {e}"));
        let available = list
            .items
            .iter()
            .filter(|host| {
                host.status.as_ref().map(|status| status.provisioning.state)
                    == Some(ProvisioningState::Available)
            })
            .count();
        eprintln!("{available} of {hosts} hosts available");
        if available == hosts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {available} of {hosts} hosts available after {timeout:?}"
        );
        tokio::time::sleep(COUNT_EVERY).await;
    }
}

fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the operator's status: {e}"))
}

/// A `kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// User and system CPU time of the process so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading the operator's CPU time: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn print_run(run: &Measured) {
    let hosts = run.hosts as f64;
    println!();
    println!(
        "== the operator process with {} hosts{} ==",
        run.hosts,
        if run.without_machines {
            ", without the machine loop"
        } else {
            ""
        }
    );
    println!(
        "creation -> available: {:.1} s; operator CPU {:.1} s ({:.1} ms per host)",
        run.to_available.as_secs_f64(),
        run.cpu.as_secs_f64(),
        run.cpu.as_secs_f64() * 1e3 / hosts
    );
    println!(
        "operator resident memory: peak {:.1} MiB, now {:.1} MiB ({:.1} KiB per host at the peak)",
        run.peak_rss_mib,
        run.rss_mib,
        run.peak_rss_mib * 1024.0 / hosts
    );
    println!(
        "host reconciles: {:.0} ({:.1} per host; {:.2} ms of operator CPU per reconcile), \
         {:.0} of them failed and retried (write conflicts included)",
        run.reconciles,
        run.reconciles / hosts,
        run.cpu.as_secs_f64() * 1e3 / run.reconciles,
        run.failed_reconciles
    );
    let triggers: Vec<String> = run
        .triggers
        .iter()
        .map(|(trigger, count)| format!("{trigger} {:.2}", count / hosts))
        .collect();
    println!(
        "host reconciles per host by trigger: {}",
        triggers.join(", ")
    );
    println!(
        "reconcile queue wait: mean {:.1} ms, median at most {} ms, 99th percentile at most {} ms",
        run.queue_wait.mean_ms, run.queue_wait.median_at_most_ms, run.queue_wait.p99_at_most_ms
    );
}

/// Per-host cost of the largest fleet against the smallest, and the memory goal.
fn print_growth(runs: &[Measured]) {
    let smallest = runs.iter().min_by_key(|run| run.hosts);
    let largest = runs.iter().max_by_key(|run| run.hosts);
    if let (Some(small), Some(large)) = (smallest, largest)
        && large.hosts > small.hosts
    {
        let per_host = |run: &Measured| {
            (
                run.cpu.as_secs_f64() / run.hosts as f64,
                run.peak_rss_mib / run.hosts as f64,
                run.reconciles / run.hosts as f64,
            )
        };
        let (small_cpu, small_rss, small_reconciles) = per_host(small);
        let (large_cpu, large_rss, large_reconciles) = per_host(large);
        println!();
        println!(
            "from {} to {} hosts: CPU per host {:.2}x, peak memory per host {:.2}x, reconciles per host {:.2}x",
            small.hosts,
            large.hosts,
            large_cpu / small_cpu.max(f64::EPSILON),
            large_rss / small_rss.max(f64::EPSILON),
            large_reconciles / small_reconciles.max(f64::EPSILON)
        );
        print_trigger_growth(small, large);
    }
    if let Some(run) = runs.iter().find(|run| run.hosts == 10_000) {
        let verdict = if run.peak_rss_mib <= GOAL_RSS_MIB {
            "met"
        } else {
            "missed"
        };
        println!(
            "goal: 10,000 hosts within {GOAL_RSS_MIB} MiB resident: {verdict} ({:.1} MiB)",
            run.peak_rss_mib
        );
    }
}

/// Reconciles per host of each trigger, the largest fleet against the smallest.
fn print_trigger_growth(small: &Measured, large: &Measured) {
    let per_host = |run: &Measured, trigger: &str| {
        run.triggers
            .iter()
            .find(|(name, _)| name == trigger)
            .map_or(0.0, |(_, count)| count / run.hosts as f64)
    };
    let growth: Vec<String> = large
        .triggers
        .iter()
        .map(|(trigger, _)| {
            format!(
                "{trigger} {:.2} -> {:.2}",
                per_host(small, trigger),
                per_host(large, trigger)
            )
        })
        .collect();
    println!("reconciles per host by trigger: {}", growth.join(", "));
}
