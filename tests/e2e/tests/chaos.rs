//! The chaos test: hosts provision through the machine loop while the operator is killed with
//! SIGKILL at random moments and restarted on the same state directory, and the lab makes
//! random BMCs unreachable, failing, forgetful of their sessions or slower than the driver's
//! deadline, and crashes random deploy agents, each for a few seconds.
//!
//! Real processes on 127.0.0.1: `ingot apiserver`, `ingot lab` and `ingot operator` with the
//! plugin backend (the components `make plugins` builds). Every BareMetalHost is watched from
//! before it exists. Once the chaos stops (faults cleared, the operator left running), every
//! host must be provisioned within a bound, with the image written to the end once per
//! provisioning attempt (the lab counts completed downloads per host) and present on its disk;
//! every Metal3Machine holds exactly one host and no host ever had two consumers; no host's
//! provisioning state went backwards; the BMC password is nowhere in the operator's log.
//!
//! ```text
//! make plugins && cargo test -p ingot-e2e --test chaos                        # 10 hosts (make test)
//! INGOT_CHAOS=long cargo test -p ingot-e2e --test chaos -- --nocapture        # 200 hosts
//! INGOT_CHAOS_SEED=1234 cargo test -p ingot-e2e --test chaos -- --nocapture   # replay
//! ```
//!
//! The seed is printed at the start and in every failure. A failed run keeps its directory
//! (process logs, operator state, lab disks) and prints where it is. The processes log at
//! `info`, or as `RUST_LOG` says (e.g. `RUST_LOG=info,ingot_backend=debug` for a replay).

#[allow(
    dead_code,
    reason = "the site is shared with the operator_process benchmark, which uses parts this test does not"
)]
mod chaos {
    pub mod faults;
    pub mod fleet;
    pub mod history;
    pub mod processes;
    pub mod site;
}

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::{Duration, Instant};

use chaos::faults::{Chaos, Fault, cleared};
use chaos::fleet;
use chaos::history::{HostWatch, Record, consumer_of, state_of};
use chaos::site::{BMC_PASSWORD, Site};
use ingot_api::metal3::ProvisioningState;
use kube::ResourceExt as _;

/// How big a run is and how hard it is shaken.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hosts: usize,
    /// Longest time the chaos goes on (it stops earlier once every host is provisioned).
    chaos_for: Duration,
    /// Time between two operator kills.
    kill_every: (Duration, Duration),
    /// How long the operator stays dead.
    down_for: (Duration, Duration),
    /// How long one fault lasts.
    fault_for: (Duration, Duration),
    /// Chance in percent, every half second, that a new fault starts.
    fault_chance: u64,
    /// Bound on the time from the end of the chaos until everything is done.
    settle_within: Duration,
}

fn shape() -> Shape {
    let long = std::env::var("INGOT_CHAOS").is_ok_and(|value| value == "long");
    let seconds = Duration::from_secs;
    if long {
        Shape {
            hosts: 200,
            chaos_for: seconds(600),
            kill_every: (seconds(10), seconds(40)),
            down_for: (Duration::ZERO, seconds(5)),
            fault_for: (seconds(1), seconds(8)),
            fault_chance: 30,
            settle_within: seconds(900),
        }
    } else {
        Shape {
            hosts: 10,
            chaos_for: seconds(60),
            kill_every: (seconds(6), seconds(18)),
            down_for: (Duration::ZERO, seconds(3)),
            fault_for: (seconds(1), seconds(6)),
            fault_chance: 15,
            settle_within: seconds(150),
        }
    }
}

/// `INGOT_CHAOS_SEED`, or one taken from the clock.
fn seed() -> u64 {
    std::env::var("INGOT_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos() as u64)
                .unwrap_or_default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_provision_exactly_once_through_kills_and_faults() {
    let shape = shape();
    let seed = seed();
    eprintln!("chaos: seed {seed} (INGOT_CHAOS_SEED={seed} replays it), {shape:?}");
    let mut chaos = Chaos::new(seed);

    let setup = Instant::now();
    let mut site = Site::start(shape.hosts).await;
    fleet::install_plugins_before_start(&site.client).await;
    site.start_operator();
    fleet::wait_for_plugins(&site.client).await;
    eprintln!(
        "chaos: site up and plugins serving after {:?}",
        setup.elapsed()
    );
    let watch = HostWatch::start(fleet::hosts_api(&site.client)).await;
    fleet::create_cluster(&site.client).await;
    fleet::create_hosts(&site, shape.hosts).await;
    fleet::create_replicas(&site, shape.hosts).await;
    eprintln!("chaos: objects created after {:?}", setup.elapsed());

    let started = Instant::now();
    let injected = shake(&mut site, &watch, &shape, &mut chaos).await;
    eprintln!(
        "chaos: over after {:?}: {} operator kills, faults {injected:?}",
        started.elapsed(),
        site.operator_kills()
    );

    let settled = settle(&mut site, &watch, &shape).await;
    let mut problems = match settled {
        Ok(elapsed) => {
            eprintln!("chaos: every host provisioned {elapsed:?} after the chaos");
            Vec::new()
        }
        Err(stuck) => vec![stuck],
    };
    problems.extend(check(&site, &watch.record(), shape.hosts).await);
    if !problems.is_empty() {
        let tail = site.operator_log_tail();
        let kept = site.keep_files();
        panic!(
            "chaos run with seed {seed} failed ({} problems; files kept in {}):\n{}\n\
             operator log ends with:\n{tail}",
            problems.len(),
            kept.display(),
            problems.join("\n")
        );
    }
}

/// Kills the operator and injects faults until every host is provisioned or the chaos time
/// is over; then clears every fault and leaves the operator running. Returns how many faults
/// of each kind were injected.
async fn shake(
    site: &mut Site,
    watch: &HostWatch,
    shape: &Shape,
    chaos: &mut Chaos,
) -> BTreeMap<String, u32> {
    let started = Instant::now();
    let mut next_kill = started + chaos.duration(shape.kill_every.0, shape.kill_every.1);
    let mut faults = ActiveFaults::default();

    while started.elapsed() < shape.chaos_for && !all_provisioned(&watch.record(), shape.hosts) {
        site.assert_running();
        if Instant::now() >= next_kill {
            kill_and_restart(site, shape, chaos, started).await;
            next_kill = Instant::now() + chaos.duration(shape.kill_every.0, shape.kill_every.1);
        }
        faults.clear_expired(site).await;
        if chaos.chance(shape.fault_chance) {
            faults.inject(site, shape, chaos, started).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for machine in 0..shape.hosts {
        site.set_faults(&format!("lab-{machine}"), &cleared()).await;
    }
    site.start_operator();
    faults.injected
}

async fn kill_and_restart(site: &mut Site, shape: &Shape, chaos: &mut Chaos, since: Instant) {
    let down = chaos.duration(shape.down_for.0, shape.down_for.1);
    eprintln!(
        "chaos: {:?}: operator killed, down for {down:?}",
        since.elapsed()
    );
    site.kill_operator();
    tokio::time::sleep(down).await;
    site.start_operator();
}

/// The faults in force, by machine index, with when each ends; and how many of each kind
/// were injected so far.
#[derive(Default)]
struct ActiveFaults {
    until: BTreeMap<usize, Instant>,
    injected: BTreeMap<String, u32>,
}

impl ActiveFaults {
    async fn clear_expired(&mut self, site: &Site) {
        let now = Instant::now();
        let expired: Vec<usize> = self
            .until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(machine, _)| *machine)
            .collect();
        for machine in expired {
            site.set_faults(&format!("lab-{machine}"), &cleared()).await;
            self.until.remove(&machine);
        }
    }

    /// A random fault on a random machine that has none, for a random short time.
    async fn inject(&mut self, site: &Site, shape: &Shape, chaos: &mut Chaos, since: Instant) {
        let machine = chaos.index(shape.hosts);
        let fault = Fault::pick(chaos);
        let lasts = chaos.duration(shape.fault_for.0, shape.fault_for.1);
        let Entry::Vacant(slot) = self.until.entry(machine) else {
            return;
        };
        eprintln!(
            "chaos: {:?}: lab-{machine} {fault:?} for {lasts:?}",
            since.elapsed()
        );
        let deadline = Duration::from_millis(fleet::DRIVER_CALL_TIMEOUT_MS);
        site.set_faults(&format!("lab-{machine}"), &fault.document(deadline))
            .await;
        slot.insert(Instant::now() + lasts);
        *self.injected.entry(format!("{fault:?}")).or_default() += 1;
    }
}

fn all_provisioned(record: &Record, hosts: usize) -> bool {
    let provisioned = record
        .states
        .values()
        .filter(|states| states.last() == Some(&ProvisioningState::Provisioned))
        .count();
    provisioned == hosts
}

/// Waits until every host is provisioned and every Metal3Machine has its providerID; the
/// time it took, or what was left behind at the bound.
async fn settle(site: &mut Site, watch: &HostWatch, shape: &Shape) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        site.assert_running();
        let machines = fleet::metal3_machines(&site.client).await;
        let with_provider_id = machines
            .iter()
            .filter(|machine| machine.spec.provider_id.is_some())
            .count();
        let record = watch.record();
        if all_provisioned(&record, shape.hosts) && with_provider_id == shape.hosts {
            return Ok(started.elapsed());
        }
        if started.elapsed() > shape.settle_within {
            return Err(format!(
                "stuck: {:?} after the chaos, hosts per state {:?}, {with_provider_id} of {} \
                 Metal3Machines with a providerID",
                shape.settle_within,
                states_count(&record),
                shape.hosts
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn states_count(record: &Record) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for states in record.states.values() {
        let last = states.last().copied().unwrap_or_default();
        *counts.entry(format!("{last:?}")).or_default() += 1;
    }
    counts
}

/// Everything that must hold at the end; one line per broken rule.
async fn check(site: &Site, record: &Record, hosts: usize) -> Vec<String> {
    let mut problems = record.problems.clone();
    problems.extend(check_claims(site, hosts).await);
    problems.extend(check_image_writes(site, record).await);
    problems.extend(check_disks(site, hosts));
    let log = std::fs::read_to_string(site.operator_log()).unwrap_or_default();
    if log.contains(BMC_PASSWORD) {
        problems.push("the BMC password appears in the operator's log".into());
    }
    problems
}

/// Each Metal3Machine holds exactly one host, named in its providerID, and each host one
/// Metal3Machine.
async fn check_claims(site: &Site, hosts: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in fleet::hosts(&site.client).await {
        if state_of(&host) != ProvisioningState::Provisioned {
            problems.push(format!("{} ends {:?}", host.name_any(), state_of(&host)));
        }
        match consumer_of(&host) {
            Some(consumer) => holders.entry(consumer).or_default().push(host.name_any()),
            None => problems.push(format!("{} ends without a consumer", host.name_any())),
        }
    }
    for machine in fleet::metal3_machines(&site.client).await {
        let consumer = format!("Metal3Machine/default/{}", machine.name_any());
        let held = holders.remove(&consumer).unwrap_or_default();
        let [host] = held.as_slice() else {
            problems.push(format!("{consumer} holds the hosts {held:?}"));
            continue;
        };
        let expected = format!("metal3://default/{host}/{}", machine.name_any());
        if machine.spec.provider_id.as_deref() != Some(expected.as_str()) {
            problems.push(format!(
                "{consumer} has providerID {:?}, not {expected}",
                machine.spec.provider_id
            ));
        }
    }
    if !holders.is_empty() {
        problems.push(format!("hosts held by unknown consumers: {holders:?}"));
    }
    if problems.is_empty() {
        eprintln!("chaos: {hosts} hosts, each held by its own Metal3Machine");
    }
    problems
}

/// Every host's image was written to the end at least once, and at most once per time it
/// entered `provisioning`.
async fn check_image_writes(site: &Site, record: &Record) -> Vec<String> {
    let downloads = site.image_downloads().await;
    let completed = downloads["completedByHost"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut attempts_total = 0;
    for (uid, name) in &record.names {
        let writes = completed
            .get(uid)
            .and_then(|count| count.as_u64())
            .unwrap_or(0);
        let attempts = record.provisioning_attempts(name) as u64;
        attempts_total += attempts;
        if writes == 0 || writes > attempts {
            problems.push(format!(
                "{name}: image written to the end {writes} times in {attempts} provisioning attempts"
            ));
        }
    }
    eprintln!("chaos: image downloads {downloads}, {attempts_total} provisioning attempts");
    problems
}

/// Every machine's disk holds a partition table, which only a written image leaves.
fn check_disks(site: &Site, hosts: usize) -> Vec<String> {
    let mut problems = Vec::new();
    for index in 0..hosts {
        let id = format!("lab-{index}");
        let partitioned = site
            .disk_files(&id)
            .iter()
            .any(|disk| ingot_e2e::has_partition_table(disk));
        if !partitioned {
            problems.push(format!("no disk of {id} holds a partition table"));
        }
    }
    problems
}
