//! What a plugin call costs, next to the same logic called natively.
//!
//! Run with `cargo bench -p ingot-plugin-host --bench call_cycle` after
//! `make plugins`. Prints medians of:
//!
//! - native: the default selector's `select` called directly (baseline);
//! - full cycle: new store, instantiate from the pre-instantiated component,
//!   call `select`, drop — exactly what every production call does;
//! - load: turning a precompiled component from the disk cache into a
//!   pre-instantiated plugin (read, verify digest, deserialize, type-check).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingot_default_selector::DefaultSelector;
use ingot_plugin_host::bindings::selection as host;
use ingot_plugin_host::bindings::types as host_types;
use ingot_plugin_host::calls::PluginCall;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::state::CallScope;
use ingot_plugin_sdk::mock::MockHost;
use ingot_plugin_sdk::selector::{self as sdk, HostSelector};
use ingot_plugin_sdk::types as sdk_types;

const CYCLES: usize = 3_000;
const LOADS: usize = 100;

/// `cargo bench` passes `--bench`; under `cargo test --all-targets` the same
/// binary runs a few iterations only, to prove it still works.
fn iterations() -> (usize, usize) {
    if std::env::args().any(|arg| arg == "--bench") {
        (CYCLES, LOADS)
    } else {
        (20, 3)
    }
}

fn main() {
    let (cycles, loads) = iterations();
    let wasm = std::fs::read(wasm_path()).expect("default selector built by `make plugins`");
    let cache = std::env::temp_dir().join(format!("ingot-bench-cache-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let plugin = runtime
        .prepare("bench", &wasm, Vec::new(), Limits::for_selection())
        .expect("plugin compiles");

    let native = median(cycles, || {
        let started = Instant::now();
        let choice = DefaultSelector::select(&MockHost::new(), sdk_claim(), sdk_candidates())
            .expect("native select");
        std::hint::black_box(choice);
        started.elapsed()
    });

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let cycle = median(cycles, || {
        let call = PluginCall::Select {
            claim: host_claim(),
            candidates: host_candidates(),
        };
        let started = Instant::now();
        let reply = tokio
            .block_on(runtime.call(&plugin, call, CallScope::default()))
            .expect("wasm select");
        let elapsed = started.elapsed();
        std::hint::black_box(reply);
        elapsed
    });

    let load = median(loads, || {
        let started = Instant::now();
        let loaded = runtime
            .prepare("bench", &wasm, Vec::new(), Limits::for_selection())
            .expect("cache hit");
        let elapsed = started.elapsed();
        assert_eq!(loaded.cache, ingot_plugin_host::cache::CacheOutcome::Hit);
        elapsed
    });

    let _ = std::fs::remove_dir_all(cache);

    println!(
        "plugin call cost, medians ({cycles} calls, {loads} loads; component {} bytes)",
        wasm.len()
    );
    println!(
        "  native select (baseline)                 {:>10.2} us",
        micros(native)
    );
    println!(
        "  full cycle: store+instantiate+call+drop  {:>10.2} us  ({:.1}x native; goal <= 50 us)",
        micros(cycle),
        ratio(cycle, native)
    );
    println!(
        "  load precompiled from the disk cache     {:>10.3} ms  (goal <= 1 ms)",
        micros(load) / 1000.0
    );
}

fn wasm_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("wasm32-wasip2/plugin/ingot_default_selector.wasm")
}

fn median(runs: usize, mut sample: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..runs).map(|_| sample()).collect();
    samples.sort();
    samples[runs / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// The same small input, once as host bindings and once as SDK bindings.
const HOSTS: [(&str, u32, u64); 3] = [("big", 64, 512), ("small", 8, 32), ("tiny", 2, 4)];

fn host_claim() -> host::Claim {
    host::Claim {
        identity: "lab/m1".into(),
        labels: Vec::new(),
        selector: host::LabelSelector {
            match_labels: vec![("role".into(), "worker".into())],
            match_expressions: Vec::new(),
        },
        requirements: host::Requirements {
            cpu_arch: None,
            min_cpus: Some(4),
            min_ram_mebibytes: None,
            min_disk_bytes: None,
            min_nics: None,
            extra: Vec::new(),
        },
        failure_domain: None,
        domain_usage: Vec::new(),
    }
}

fn host_candidates() -> Vec<host::Candidate> {
    HOSTS
        .iter()
        .map(|(name, cpus, ram_gib)| host::Candidate {
            host: host_types::HostRef {
                namespace: "lab".into(),
                name: (*name).into(),
                uid: format!("uid-{name}"),
            },
            labels: vec![("role".into(), "worker".into())],
            failure_domain: Some("rack-a".into()),
            hardware: Some(host_types::HardwareDetails {
                system_vendor: None,
                bios: None,
                ram_mebibytes: ram_gib * 1024,
                nics: Vec::new(),
                storage: Vec::new(),
                cpu: Some(host_types::Cpu {
                    arch: "x86_64".into(),
                    model: "lab".into(),
                    clock_megahertz: 2000.0,
                    flags: Vec::new(),
                    count: *cpus,
                }),
                hostname: None,
            }),
        })
        .collect()
}

fn sdk_claim() -> sdk::Claim {
    sdk::Claim {
        identity: "lab/m1".into(),
        labels: Vec::new(),
        selector: sdk::LabelSelector {
            match_labels: vec![("role".into(), "worker".into())],
            match_expressions: Vec::new(),
        },
        requirements: sdk::Requirements {
            cpu_arch: None,
            min_cpus: Some(4),
            min_ram_mebibytes: None,
            min_disk_bytes: None,
            min_nics: None,
            extra: Vec::new(),
        },
        failure_domain: None,
        domain_usage: Vec::new(),
    }
}

fn sdk_candidates() -> Vec<sdk::Candidate> {
    HOSTS
        .iter()
        .map(|(name, cpus, ram_gib)| sdk::Candidate {
            host: sdk_types::HostRef {
                namespace: "lab".into(),
                name: (*name).into(),
                uid: format!("uid-{name}"),
            },
            labels: vec![("role".into(), "worker".into())],
            failure_domain: Some("rack-a".into()),
            hardware: Some(sdk_types::HardwareDetails {
                system_vendor: None,
                bios: None,
                ram_mebibytes: ram_gib * 1024,
                nics: Vec::new(),
                storage: Vec::new(),
                cpu: Some(sdk_types::Cpu {
                    arch: "x86_64".into(),
                    model: "lab".into(),
                    clock_megahertz: 2000.0,
                    flags: Vec::new(),
                    count: *cpus,
                }),
                hostname: None,
            }),
        })
        .collect()
}
