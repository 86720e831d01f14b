//! The benchmark's tables: one per fleet size, then per-host figures across fleet sizes with
//! the goals they are held to.

use std::time::Duration;

use crate::measure::Cost;
use crate::site::Shape;

/// Fleet size the first goal is stated for.
const GOAL_FLEET: usize = 1000;
/// Longest creation -> available of [`GOAL_FLEET`] hosts.
const GOAL_TO_AVAILABLE: Duration = Duration::from_secs(60);
/// Most API writes per host from creation to available.
const GOAL_WRITES_PER_HOST: f64 = 12.0;
/// Fleet size the memory goal is stated for.
const GOAL_LARGE_FLEET: usize = 10_000;
/// Most resident memory with [`GOAL_LARGE_FLEET`] hosts.
const GOAL_RSS_MIB: f64 = 512.0;
/// The largest growth of a per-host cost from [`GOAL_FLEET`] to [`GOAL_LARGE_FLEET`] hosts that
/// still counts as flat.
const FLAT_RATIO: f64 = 1.25;

/// Everything measured for one fleet size.
pub struct Run {
    /// The fleet and operator settings.
    pub shape: Shape,
    /// Median round trip of one status write, measured before the operator started.
    pub baseline: Duration,
    /// Creating every host until all are available.
    pub to_available: Cost,
    /// Setting an image on the machines until all are provisioned.
    pub to_provisioned: Cost,
    /// Peak resident memory of the process until every host was available, in KiB: what
    /// managing the fleet takes, before any image is written.
    pub available_rss_kib: Option<u64>,
    /// Peak resident memory of the process over the whole run, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Whether the peak was restarted before this run (else it may be an earlier run's).
    pub peak_rss_is_own: bool,
    /// Downloads of the image from the lab, one per provisioning when nothing is repeated.
    pub image_downloads: u64,
}

impl Run {
    fn rss_mib(&self) -> Option<f64> {
        self.peak_rss_kib.map(|kib| kib as f64 / 1024.0)
    }

    fn available_rss_mib(&self) -> Option<f64> {
        self.available_rss_kib.map(|kib| kib as f64 / 1024.0)
    }

    fn rss_kib_per_host(&self) -> Option<f64> {
        self.peak_rss_kib
            .map(|kib| kib as f64 / self.shape.hosts as f64)
    }
}

/// Per-host figures of one phase.
struct PerHost {
    millis: f64,
    requests: f64,
    writes: f64,
    reconciles: f64,
    cpu_millis: f64,
}

impl PerHost {
    fn of(cost: &Cost, hosts: usize) -> Self {
        let hosts = hosts.max(1) as f64;
        PerHost {
            millis: cost.wall.as_secs_f64() * 1e3 / hosts,
            requests: cost.requests as f64 / hosts,
            writes: cost.writes as f64 / hosts,
            reconciles: cost.reconciles / hosts,
            cpu_millis: cost.cpu.as_secs_f64() * 1e3 / hosts,
        }
    }
}

/// Prints the table of one fleet size.
pub fn print_run(run: &Run) {
    let shape = &run.shape;
    println!();
    println!(
        "== {} hosts, {} provisioned (reconcile concurrency {}, max busy hosts {}, requeue bound {}) ==",
        shape.hosts,
        shape.machines,
        shape.concurrency,
        shape.max_busy_hosts,
        shape.max_requeue.map_or_else(
            || "none".to_owned(),
            |bound| format!("{} ms", bound.as_millis())
        )
    );
    println!(
        "baseline: one status write round trip to the same API server, median {:.2} ms",
        run.baseline.as_secs_f64() * 1e3
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>10} {:>9} {:>11} {:>10} {:>12} {:>7} {:>11}",
        "phase",
        "hosts",
        "wall s",
        "ms/host",
        "x baseline",
        "req/host",
        "writes/host",
        "reconciles",
        "ms/reconcile",
        "CPU s",
        "CPU ms/host"
    );
    print_phase(
        "creation -> available",
        &run.to_available,
        shape.hosts,
        run.baseline,
    );
    print_phase(
        "available -> provisioned",
        &run.to_provisioned,
        shape.machines,
        run.baseline,
    );
    print_writes("creation -> available", &run.to_available, shape.hosts);
    print_writes(
        "available -> provisioned",
        &run.to_provisioned,
        shape.machines,
    );
    print_memory(run);
    println!(
        "image downloads: {} for {} provisioned machines",
        run.image_downloads, shape.machines
    );
}

fn print_phase(name: &str, cost: &Cost, hosts: usize, baseline: Duration) {
    let per_host = PerHost::of(cost, hosts);
    let baseline_millis = (baseline.as_secs_f64() * 1e3).max(f64::EPSILON);
    let per_reconcile = cost.reconcile_seconds * 1e3 / cost.reconciles.max(1.0);
    println!(
        "{:<26} {:>6} {:>8.1} {:>8.1} {:>10.1} {:>9.1} {:>11.1} {:>10.1} {:>12.1} {:>7.1} {:>11.1}",
        name,
        hosts,
        cost.wall.as_secs_f64(),
        per_host.millis,
        per_host.millis / baseline_millis,
        per_host.requests,
        per_host.writes,
        per_host.reconciles,
        per_reconcile,
        cost.cpu.as_secs_f64(),
        per_host.cpu_millis
    );
}

fn print_writes(phase: &str, cost: &Cost, hosts: usize) {
    let kinds: Vec<String> = cost
        .writes_by_kind
        .iter()
        .map(|(kind, count)| format!("{kind} {:.2}", *count as f64 / hosts.max(1) as f64))
        .collect();
    println!("writes per host, {phase}: {}", kinds.join(", "));
}

fn print_memory(run: &Run) {
    let (Some(mib), Some(per_host)) = (run.rss_mib(), run.rss_kib_per_host()) else {
        println!("peak resident memory: not reported by this kernel");
        return;
    };
    let scope = if run.peak_rss_is_own {
        "this run"
    } else {
        "the process so far (the peak could not be restarted)"
    };
    println!(
        "peak resident memory of {scope}: {mib:.1} MiB ({per_host:.1} KiB per host), {:.1} MiB \
         until every host was available; the one process holds the API server, the lab's \
         machines and agents, the operator and the benchmark's watcher",
        run.available_rss_mib().unwrap_or(f64::NAN)
    );
}

/// Prints per-host figures across fleet sizes, the growth between the smallest and the
/// largest, and how they compare with the goals.
pub fn print_comparison(runs: &[Run]) {
    println!();
    println!("== per-host cost by fleet size, creation -> available ==");
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>11} {:>11} {:>8} {:>9}",
        "hosts",
        "wall s",
        "ms/host",
        "req/host",
        "writes/host",
        "CPU ms/host",
        "RSS MiB",
        "KiB/host"
    );
    for run in runs {
        let per_host = PerHost::of(&run.to_available, run.shape.hosts);
        println!(
            "{:>6} {:>8.1} {:>8.1} {:>9.1} {:>11.1} {:>11.1} {:>8.1} {:>9.1}",
            run.shape.hosts,
            run.to_available.wall.as_secs_f64(),
            per_host.millis,
            per_host.requests,
            per_host.writes,
            per_host.cpu_millis,
            run.rss_mib().unwrap_or(f64::NAN),
            run.rss_kib_per_host().unwrap_or(f64::NAN)
        );
    }
    print_growth(runs);
    print_goals(runs);
}

fn print_growth(runs: &[Run]) {
    let smallest = runs.iter().min_by_key(|run| run.shape.hosts);
    let largest = runs.iter().max_by_key(|run| run.shape.hosts);
    let (Some(smallest), Some(largest)) = (smallest, largest) else {
        return;
    };
    if smallest.shape.hosts == largest.shape.hosts {
        return;
    }
    let (small, large) = (
        PerHost::of(&smallest.to_available, smallest.shape.hosts),
        PerHost::of(&largest.to_available, largest.shape.hosts),
    );
    let ratio = |large: f64, small: f64| large / small.max(f64::EPSILON);
    println!(
        "per-host cost at {} hosts / at {} hosts: wall {:.2}x, requests {:.2}x, writes {:.2}x, CPU {:.2}x, memory {:.2}x",
        largest.shape.hosts,
        smallest.shape.hosts,
        ratio(large.millis, small.millis),
        ratio(large.requests, small.requests),
        ratio(large.writes, small.writes),
        ratio(large.cpu_millis, small.cpu_millis),
        ratio(
            largest.rss_kib_per_host().unwrap_or(f64::NAN),
            smallest.rss_kib_per_host().unwrap_or(f64::NAN)
        ),
    );
}

fn print_goals(runs: &[Run]) {
    let fleet = |hosts: usize| runs.iter().find(|run| run.shape.hosts == hosts);
    println!("goals:");

    let verdict = fleet(GOAL_FLEET).map(|run| {
        let wall = run.to_available.wall;
        format!(
            "{} ({:.1} s)",
            met(wall <= GOAL_TO_AVAILABLE),
            wall.as_secs_f64()
        )
    });
    print_goal(
        "1,000 hosts creation -> available in <= 60 s",
        verdict,
        GOAL_FLEET,
    );

    let worst_writes = runs
        .iter()
        .map(|run| PerHost::of(&run.to_available, run.shape.hosts).writes)
        .fold(0.0, f64::max);
    println!(
        "- <= {GOAL_WRITES_PER_HOST} API writes per host creation -> available: {} (at most {worst_writes:.1})",
        met(worst_writes <= GOAL_WRITES_PER_HOST)
    );

    let verdict = fleet(GOAL_LARGE_FLEET)
        .and_then(Run::available_rss_mib)
        .map(|mib| format!("{} ({mib:.1} MiB)", met(mib <= GOAL_RSS_MIB)));
    print_goal(
        "10,000 hosts within 512 MiB resident (the whole process, until all are available)",
        verdict,
        GOAL_LARGE_FLEET,
    );

    let verdict = fleet(GOAL_FLEET)
        .zip(fleet(GOAL_LARGE_FLEET))
        .map(|(small, large)| flatness(small, large));
    print_goal(
        "per-host cost flat from 1,000 to 10,000 hosts",
        verdict,
        GOAL_LARGE_FLEET,
    );
}

fn print_goal(goal: &str, verdict: Option<String>, needs: usize) {
    let verdict = verdict.unwrap_or_else(|| format!("not measured (needs a run of {needs} hosts)"));
    println!("- {goal}: {verdict}");
}

/// Whether writes and CPU per host grow by at most [`FLAT_RATIO`] from `small` to `large`.
fn flatness(small: &Run, large: &Run) -> String {
    let (small, large) = (
        PerHost::of(&small.to_available, small.shape.hosts),
        PerHost::of(&large.to_available, large.shape.hosts),
    );
    let writes = large.writes / small.writes.max(f64::EPSILON);
    let cpu = large.cpu_millis / small.cpu_millis.max(f64::EPSILON);
    format!(
        "{} (writes per host {writes:.2}x, CPU per host {cpu:.2}x; flat means <= {FLAT_RATIO}x)",
        met(writes <= FLAT_RATIO && cpu <= FLAT_RATIO)
    )
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
