//! Hostile plugins are contained: each misbehaviour ends in a typed error,
//! and the host and other plugins keep working.

mod support;

use std::time::{Duration, Instant};

use ingot_plugin_host::calls::PluginReply;
use ingot_plugin_host::error::CallError;
use ingot_plugin_host::inspect::InspectError;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::registry::{LoadError, Registry};
use ingot_plugin_host::runtime::PrepareError;
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use support::{registry, select, spec};

const HOSTILE: &str = "ingot-fixture-hostile";

fn tight_limits() -> Limits {
    Limits {
        timeout_ms: 200,
        memory_bytes: 16 << 20,
        ..Limits::default()
    }
}

async fn registry_with_hostile() -> Registry {
    let registry = registry();
    registry
        .load(
            "hostile",
            spec(HOSTILE, World::HostSelector, tight_limits()),
        )
        .await
        .expect("hostile fixture loads");
    registry
        .load(
            "default",
            spec(
                "ingot-default-selector",
                World::HostSelector,
                Limits::for_selection(),
            ),
        )
        .await
        .expect("default selector loads");
    registry
}

/// After any failure, the same plugin (in a fresh instance) and another
/// plugin still answer normally.
async fn assert_everything_still_works(registry: &Registry) {
    let echo = registry
        .call("hostile", select("echo"), CallScope::default())
        .await
        .expect("hostile plugin recovers");
    let PluginReply::Choice(choice) = echo else {
        panic!("unexpected reply {echo:?}")
    };
    assert_eq!(choice.ranked[0].reasons, ["hostile fixture answered echo"]);

    let reply = registry
        .call("default", select("lab/m1"), CallScope::default())
        .await
        .expect("other plugins keep working");
    assert!(matches!(reply, PluginReply::Choice(choice) if choice.ranked.len() == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_times_out() {
    let registry = registry_with_hostile().await;
    let started = Instant::now();

    let error = registry
        .call("hostile", select("loop"), CallScope::default())
        .await
        .expect_err("loop is interrupted");

    assert!(
        matches!(error, CallError::Timeout { budget_ms: 200, .. }),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "interrupted promptly: {:?}",
        started.elapsed()
    );
    assert_everything_still_works(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_exhausts_its_cap() {
    let registry = registry_with_hostile().await;

    let error = registry
        .call("hostile", select("memory-bomb"), CallScope::default())
        .await
        .expect_err("bomb is stopped");

    let CallError::ResourceExhausted { detail, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(
        detail.contains("exceeds the cap of 16777216 bytes"),
        "{detail}"
    );
    assert_everything_still_works(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_crash_with_the_panic_message() {
    let registry = registry_with_hostile().await;

    let error = registry
        .call("hostile", select("panic"), CallScope::default())
        .await
        .expect_err("panic traps");

    let CallError::Crashed { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("unreachable"), "{reason}");
    assert!(
        reason.contains("hostile fixture panics on purpose"),
        "{reason}"
    );
    assert_everything_still_works(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_is_a_crash() {
    let registry = registry_with_hostile().await;

    let error = registry
        .call("hostile", select("deep-recursion"), CallScope::default())
        .await
        .expect_err("overflow traps");

    // The Rust shadow stack lives in linear memory: overflowing it is an
    // out-of-bounds access rather than a native stack overflow.
    assert!(
        matches!(&error, CallError::Crashed { reason, .. } if reason.contains("wasm trap")),
        "{error:?}"
    );
    assert_everything_still_works(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_environment_is_denied() {
    let registry = registry_with_hostile().await;

    let error = registry
        .call("hostile", select("read-env"), CallScope::default())
        .await
        .expect_err("environment is denied");

    assert!(
        matches!(&error, CallError::DeniedCapability { capability, .. } if capability == "environment"),
        "{error:?}"
    );
    assert_everything_still_works(&registry).await;
}

async fn load_refusal(crate_name: &str) -> (Vec<String>, World) {
    let registry = registry();
    let error = registry
        .load(
            "probe",
            spec(crate_name, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect_err("refused at load");

    let LoadError::Prepare(PrepareError::Inspect(InspectError::DeniedImport {
        imports,
        world,
        ..
    })) = &error
    else {
        panic!("unexpected error {error:?}")
    };
    for import in imports {
        assert!(
            error.to_string().contains(import.as_str()),
            "the message names {import}: {error}"
        );
    }
    assert!(registry.current("probe").is_none(), "nothing was loaded");
    (imports.clone(), *world)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_files_is_refused_at_load() {
    let (imports, world) = load_refusal("ingot-fixture-file-reader").await;

    assert!(
        imports
            .iter()
            .any(|import| import.starts_with("wasi:filesystem/preopens")),
        "{imports:?}"
    );
    assert_eq!(world, World::HostSelector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_sockets_is_refused_at_load() {
    let (imports, _) = load_refusal("ingot-fixture-socket-dialer").await;

    assert!(
        imports
            .iter()
            .any(|import| import.starts_with("wasi:sockets/tcp")),
        "{imports:?}"
    );
}
