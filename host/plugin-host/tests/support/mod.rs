//! Shared set-up for the plugin-host integration tests: locating the plugin
//! components built by `make plugins`, and building claims and registries.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::sync::Arc;

use ingot_plugin_host::bindings::selection::{Candidate, Claim, LabelSelector, Requirements};
use ingot_plugin_host::bindings::types::{Cpu, HardwareDetails, HostRef};
use ingot_plugin_host::calls::PluginCall;
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::world::World;

/// The `.wasm` of plugin crate `crate_name`, as built by `make plugins`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir.join("wasm32-wasip2").join("plugin").join(file);

    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` (with the same CARGO_TARGET_DIR) before the tests",
        path.display()
    );
    path
}

/// The bytes of plugin crate `crate_name`.
pub fn wasm(crate_name: &str) -> Vec<u8> {
    std::fs::read(wasm_path(crate_name))
        .unwrap_or_else(|error| panic!("reading {crate_name}: {error}"))
}

/// A compile cache shared by the test binaries: compiling in a debug build
/// takes seconds per plugin, loading from the cache milliseconds.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ingot-plugin-cache")
}

/// A runtime with the shared compile cache.
pub fn runtime() -> Arc<Runtime> {
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir()),
        ..RuntimeConfig::default()
    };
    Arc::new(Runtime::new(config).expect("runtime starts"))
}

/// A registry over a fresh runtime.
pub fn registry_with(guard: GuardSettings) -> Registry {
    Registry::new(runtime(), Fetcher::new(reqwest::Client::new()), guard)
}

/// A registry with default guard settings.
pub fn registry() -> Registry {
    registry_with(GuardSettings::default())
}

/// A spec loading `crate_name` from its file.
pub fn spec(crate_name: &str, world: World, limits: Limits) -> PluginSpec {
    PluginSpec {
        source: PluginSource::File {
            path: wasm_path(crate_name),
            sha256: None,
        },
        world: Some(world),
        config: Vec::new(),
        limits,
        failure_policy: FailurePolicy::Fail,
    }
}

/// A host reference.
pub fn host_ref(name: &str) -> HostRef {
    HostRef {
        namespace: "lab".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

/// A candidate with `cpus` CPUs and `ram_gib` GiB in failure domain `domain`.
pub fn candidate(name: &str, domain: &str, cpus: u32, ram_gib: u64) -> Candidate {
    Candidate {
        host: host_ref(name),
        labels: vec![("role".into(), "worker".into())],
        failure_domain: Some(domain.into()),
        hardware: Some(HardwareDetails {
            system_vendor: None,
            bios: None,
            ram_mebibytes: ram_gib * 1024,
            nics: Vec::new(),
            storage: Vec::new(),
            cpu: Some(Cpu {
                arch: "x86_64".into(),
                model: "lab".into(),
                clock_megahertz: 2000.0,
                flags: Vec::new(),
                count: cpus,
            }),
            hostname: None,
        }),
    }
}

/// A claim for a worker with at least `min_cpus` CPUs.
pub fn claim(identity: &str, min_cpus: u32) -> Claim {
    Claim {
        identity: identity.into(),
        labels: Vec::new(),
        selector: LabelSelector {
            match_labels: vec![("role".into(), "worker".into())],
            match_expressions: Vec::new(),
        },
        requirements: Requirements {
            cpu_arch: None,
            min_cpus: Some(min_cpus),
            min_ram_mebibytes: None,
            min_disk_bytes: None,
            min_nics: None,
            extra: Vec::new(),
        },
        failure_domain: None,
        domain_usage: Vec::new(),
    }
}

/// A `select` call for `identity` over three hosts of different sizes.
pub fn select(identity: &str) -> PluginCall {
    PluginCall::Select {
        claim: claim(identity, 4),
        candidates: vec![
            candidate("big", "rack-a", 64, 512),
            candidate("small", "rack-a", 8, 32),
            candidate("tiny", "rack-b", 2, 4),
        ],
    }
}
