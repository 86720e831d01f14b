//! Loading, replacing and removing plugins by name, and the failure guard.

mod support;

use std::time::Duration;

use ingot_plugin_host::cache::sha256_hex;
use ingot_plugin_host::calls::PluginReply;
use ingot_plugin_host::error::CallError;
use ingot_plugin_host::guard::GuardState;
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{LoadError, Registry};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{FetchError, PluginSource};
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use support::{registry, registry_with, select, spec, wasm};

const DEFAULT: &str = "ingot-default-selector";
const HOSTILE: &str = "ingot-fixture-hostile";

fn first_host(reply: &PluginReply) -> String {
    let PluginReply::Choice(choice) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    choice.ranked[0].host.name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_load_keeps_the_old_version_and_says_why() {
    let registry = registry();
    let first = registry
        .load(
            "sel",
            spec(DEFAULT, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("loads");

    let error = registry
        .load(
            "sel",
            spec(
                "ingot-fixture-file-reader",
                World::HostSelector,
                Limits::for_selection(),
            ),
        )
        .await
        .expect_err("refused");

    let status = registry.status("sel").expect("status");
    assert_eq!(
        status.loaded.as_ref().map(|loaded| loaded.digest.as_str()),
        Some(first.digest.as_str())
    );
    let reason = status.last_error.expect("reason recorded");
    assert!(reason.contains("wasi:filesystem/preopens"), "{reason}");
    assert_eq!(reason, ingot_plugin_host::registry::error_chain(&error));

    registry
        .call("sel", select("lab/m1"), CallScope::default())
        .await
        .expect("old version still serves");

    registry
        .load(
            "sel",
            spec(DEFAULT, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("reloads");
    assert_eq!(
        registry.status("sel").and_then(|status| status.last_error),
        None,
        "success clears the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_verified() {
    let registry = registry();
    let bytes = wasm(DEFAULT);
    let mut spec = spec(DEFAULT, World::HostSelector, Limits::for_selection());

    spec.source = PluginSource::Bytes {
        origin: "configmap lab/plugins key sel.wasm".into(),
        bytes: bytes.clone(),
        sha256: Some("00".repeat(32)),
    };
    let error = registry
        .load("sel", spec.clone())
        .await
        .expect_err("mismatch");
    assert!(
        matches!(error, LoadError::Fetch(FetchError::DigestMismatch { .. })),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("configmap lab/plugins"),
        "{error}"
    );

    spec.source = PluginSource::Bytes {
        origin: "configmap".into(),
        bytes: bytes.clone(),
        sha256: Some(sha256_hex(&bytes).to_uppercase()),
    };
    let summary = registry
        .load("sel", spec)
        .await
        .expect("matching digest loads");
    assert_eq!(summary.digest, sha256_hex(&bytes));
    assert_eq!(summary.world, World::HostSelector);
    assert_eq!(summary.world_version.to_string(), "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sources_must_be_https() {
    let registry = registry();
    let mut spec = spec(DEFAULT, World::HostSelector, Limits::for_selection());
    spec.source = PluginSource::Https {
        url: "http://127.0.0.1:9/sel.wasm".into(),
        sha256: "00".repeat(32),
    };

    let error = registry
        .load("sel", spec)
        .await
        .expect_err("plain http refused");

    assert!(
        matches!(error, LoadError::Fetch(FetchError::NotHttps { .. })),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_and_name_are_checked() {
    let registry = registry();

    let error = registry
        .load("sel", spec(DEFAULT, World::BmcDriver, Limits::default()))
        .await
        .expect_err("wrong world");
    assert!(matches!(
        error,
        LoadError::UnexpectedWorld {
            expected: World::BmcDriver,
            found: World::HostSelector,
            ..
        }
    ));

    let error = registry
        .load(
            "../etc",
            spec(DEFAULT, World::HostSelector, Limits::default()),
        )
        .await
        .expect_err("bad name");
    assert!(matches!(error, LoadError::InvalidName { .. }));

    let error = registry
        .call("missing", select("x"), CallScope::default())
        .await
        .expect_err("not loaded");
    assert!(matches!(error, CallError::NotLoaded { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_must_match_the_world() {
    let registry = registry();
    registry
        .load(
            "sel",
            spec(DEFAULT, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("loads");

    let error = registry
        .call(
            "sel",
            ingot_plugin_host::calls::PluginCall::GetPowerState,
            CallScope::default(),
        )
        .await
        .expect_err("selectors have no power state");

    assert!(matches!(error, CallError::WrongWorld { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_plugins_stop_serving() {
    let registry = registry();
    registry
        .load(
            "sel",
            spec(DEFAULT, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("loads");

    assert!(registry.remove("sel"));
    assert!(!registry.remove("sel"));
    let error = registry
        .call("sel", select("lab/m1"), CallScope::default())
        .await
        .expect_err("removed");
    assert!(matches!(error, CallError::NotLoaded { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_come_from_the_disk_cache() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bytes = wasm(DEFAULT);
    let runtime = |dir: &std::path::Path| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.to_owned()),
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    };

    let first = runtime(dir.path())
        .prepare("sel", &bytes, Vec::new(), Limits::default())
        .expect("compiles");
    let second = runtime(dir.path())
        .prepare("sel", &bytes, Vec::new(), Limits::default())
        .expect("loads");

    assert_eq!(
        first.cache,
        ingot_plugin_host::cache::CacheOutcome::Compiled
    );
    assert_eq!(second.cache, ingot_plugin_host::cache::CacheOutcome::Hit);

    let entry = std::fs::read_dir(dir.path())
        .expect("cache directory")
        .filter_map(Result::ok)
        .find(|entry| {
            entry
                .path()
                .extension()
                .is_some_and(|extension| extension == "cwasm")
        })
        .expect("a cache entry");
    let mut tampered = std::fs::read(entry.path()).expect("entry");
    tampered[100] ^= 0xff;
    std::fs::write(entry.path(), tampered).expect("tamper");

    let third = runtime(dir.path())
        .prepare("sel", &bytes, Vec::new(), Limits::default())
        .expect("recompiles");
    assert_eq!(
        third.cache,
        ingot_plugin_host::cache::CacheOutcome::Compiled,
        "a tampered entry is not loaded"
    );
}

fn guard() -> GuardSettings {
    GuardSettings {
        max_failures: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_millis(300),
    }
}

async fn trip(registry: &Registry, policy: FailurePolicy) {
    let mut hostile = spec(HOSTILE, World::HostSelector, Limits::for_selection());
    hostile.failure_policy = policy;
    registry.load("hostile", hostile).await.expect("loads");

    for _ in 0..3 {
        let error = registry
            .call("hostile", select("panic"), CallScope::default())
            .await
            .expect_err("crashes");
        assert!(matches!(error, CallError::Crashed { .. }), "{error:?}");
    }

    assert_eq!(
        registry.status("hostile").map(|status| status.guard),
        Some(GuardState::Open)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_trip_the_guard_and_fail_calls() {
    let registry = registry_with(guard());
    trip(&registry, FailurePolicy::Fail).await;

    let error = registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect_err("guard open");
    assert!(
        matches!(
            error,
            CallError::GuardOpen {
                policy: FailurePolicy::Fail,
                ..
            }
        ),
        "{error:?}"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect("trial call after the cooldown");
    assert_eq!(
        registry.status("hostile").map(|status| status.guard),
        Some(GuardState::Closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_call_given_up_by_its_caller_leaves_the_trial_to_the_next_one() {
    let registry = registry_with(guard());
    trip(&registry, FailurePolicy::Fail).await;
    tokio::time::sleep(Duration::from_millis(350)).await;

    let trial = registry.call("hostile", select("loop"), CallScope::default());
    let gave_up = tokio::time::timeout(Duration::from_millis(100), trial).await;
    assert!(gave_up.is_err(), "the looping trial call is still running");

    registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect("the next call is the trial");
    assert_eq!(
        registry.status("hostile").map(|status| status.guard),
        Some(GuardState::Closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_policy_tells_callers_to_proceed_without_the_plugin() {
    let registry = registry_with(guard());
    trip(&registry, FailurePolicy::Ignore).await;

    let error = registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect_err("ignored");
    assert!(matches!(error, CallError::Ignored { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_builtin_policy_routes_to_the_builtin() {
    let registry = registry_with(guard());
    registry
        .load(
            "builtin-selector",
            spec(DEFAULT, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("loads");
    registry.set_builtin(World::HostSelector, "builtin-selector");
    trip(&registry, FailurePolicy::UseBuiltin).await;

    let reply = registry
        .call("hostile", select("lab/m1"), CallScope::default())
        .await
        .expect("answered by the builtin");
    let direct = registry
        .call("builtin-selector", select("lab/m1"), CallScope::default())
        .await
        .expect("builtin");
    assert_eq!(first_host(&reply), first_host(&direct));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_resets_the_guard() {
    let registry = registry_with(guard());
    trip(&registry, FailurePolicy::Fail).await;

    registry
        .load(
            "hostile",
            spec(HOSTILE, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("reloads");

    assert_eq!(
        registry.status("hostile").map(|status| status.guard),
        Some(GuardState::Closed)
    );
    registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect("serves again");
}
