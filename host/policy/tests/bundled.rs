//! Loading the bundled plugins from a directory, and their role as the
//! built-in plugin of their world.

mod support;

use std::time::Duration;

use ingot_plugin_host::calls::PluginReply;
use ingot_plugin_host::drivers::{IPMI_DRIVER, REDFISH_DRIVER};
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::PluginSpec;
use ingot_plugin_host::routing::{DEFAULT_SELECTOR, STANDARD_STEPS};
use ingot_plugin_host::source::PluginSource;
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use ingot_policy::load_bundled;
use support::{registry, select, wasm, wasm_path};

fn reasons(reply: &PluginReply) -> Vec<String> {
    match reply {
        PluginReply::Choice(choice) => choice
            .ranked
            .iter()
            .flat_map(|ranked| ranked.reasons.clone())
            .collect(),
        other => panic!("expected a choice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_files_load_and_missing_or_broken_ones_are_reported() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("ingot_default_selector.wasm"),
        wasm(DEFAULT_SELECTOR),
    )
    .expect("copy the selector");
    std::fs::write(
        dir.path().join("ingot_plugin_redfish.wasm"),
        b"not a component",
    )
    .expect("write a broken driver");
    let registry = registry(GuardSettings::default());

    let report = load_bundled(&registry, dir.path()).await;

    assert_eq!(report.loaded, [DEFAULT_SELECTOR]);
    assert_eq!(
        report.missing,
        [
            dir.path().join("ingot_plugin_ipmi.wasm"),
            dir.path().join("ingot_standard_steps.wasm"),
        ]
    );
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].0, REDFISH_DRIVER);
    assert!(registry.current(DEFAULT_SELECTOR).is_some());
    assert!(registry.current(REDFISH_DRIVER).is_none());
    assert!(registry.current(STANDARD_STEPS).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_selector_answers_for_a_disabled_plugin() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, file) in [
        ("ingot-default-selector", "ingot_default_selector.wasm"),
        (IPMI_DRIVER, "ingot_plugin_ipmi.wasm"),
    ] {
        std::fs::copy(wasm_path(name), dir.path().join(file)).expect("copy a bundled plugin");
    }
    let registry = registry(GuardSettings {
        max_failures: 2,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(600),
    });
    load_bundled(&registry, dir.path()).await;
    let hostile = PluginSpec {
        source: PluginSource::File {
            path: wasm_path("ingot-fixture-hostile"),
            sha256: None,
        },
        world: Some(World::HostSelector),
        config: Vec::new(),
        limits: Limits::for_selection(),
        failure_policy: FailurePolicy::UseBuiltin,
    };
    registry.load("hostile", hostile).await.expect("loads");

    for _ in 0..2 {
        let crashed = registry
            .call("hostile", select("panic"), CallScope::default())
            .await;
        assert!(crashed.is_err());
    }
    let fallback = registry
        .call("hostile", select("calm"), CallScope::default())
        .await
        .expect("the bundled selector answers");

    let reasons = reasons(&fallback);
    assert!(!reasons.is_empty());
    assert!(
        reasons
            .iter()
            .all(|reason| !reason.contains("hostile fixture")),
        "{reasons:?}"
    );
}
