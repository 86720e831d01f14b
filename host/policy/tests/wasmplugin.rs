//! The `WasmPlugin` controller against the embedded API server, with real
//! components built from `plugins/` by `make plugins`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ingot_api::plugins::{ConfigMapSource, PluginWorld, WasmPlugin};
use ingot_plugin_host::cache::sha256_hex;
use ingot_plugin_host::calls::PluginReply;
use ingot_plugin_host::guard::GuardState;
use ingot_plugin_host::limits::GuardSettings;
use ingot_plugin_host::state::CallScope;
use ingot_policy::wasmplugin::FINALIZER;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Lab, has, plugin_condition, select, status, wait_for, wait_gone, wasm};

const SELECTOR: &str = "ingot-default-selector";
const EXAMPLE: &str = "ingot-example-host-selection";
const HOSTILE: &str = "ingot-fixture-hostile";

async fn lab() -> Lab {
    let empty = tempfile::tempdir().expect("temporary directory");
    Lab::start(empty.path(), GuardSettings::default()).await
}

/// Creates a host-selector `WasmPlugin` from plugin crate `crate_name` and
/// waits until it serves.
async fn serving(lab: &Lab, name: &str, crate_name: &str) -> WasmPlugin {
    lab.create_plugin(name, crate_name, PluginWorld::HostSelector)
        .await;

    wait_for(&lab.plugins(), name, "Ready", |p| {
        has(p, "Ready", "True", "Serving")
    })
    .await
}

/// Asserts that the plugin `name` answers a selection.
async fn answers(lab: &Lab, name: &str) -> PluginReply {
    let reply = lab
        .registry
        .call(name, select("lab/m1"), CallScope::default())
        .await;
    reply.unwrap_or_else(|error| panic!("{name} answers: {error}"))
}

async fn patch_spec(lab: &Lab, name: &str, spec: serde_json::Value) {
    lab.plugins()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .expect("patch WasmPlugin");
}

/// Waits until the spec of generation `generation` has been judged.
async fn judged(lab: &Lab, name: &str, generation: i64) -> WasmPlugin {
    wait_for(&lab.plugins(), name, "status for the new generation", |p| {
        status(p).observed_generation == Some(generation)
            && plugin_condition(p, "Loaded")
                .is_some_and(|c| c.observed_generation == Some(generation))
    })
    .await
}

/// The `Loaded` condition as (status, reason, message).
fn loaded_condition(plugin: &WasmPlugin) -> Loaded {
    plugin_condition(plugin, "Loaded").map_or_else(Loaded::default, |condition| Loaded {
        status: condition.status.clone(),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
    })
}

#[derive(Debug, Default)]
struct Loaded {
    status: String,
    reason: String,
    message: String,
}

fn serving_digest(lab: &Lab, name: &str) -> Option<String> {
    lab.registry
        .current(name)
        .map(|plugin| plugin.digest.to_string())
}

async fn config_map(lab: &Lab, name: &str, key: &str, bytes: Vec<u8>) {
    let api: Api<ConfigMap> = Api::namespaced(lab.client.clone(), "default");
    let map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(key.to_owned(), ByteString(bytes))])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &map)
        .await
        .expect("create ConfigMap");
}

fn from_config_map(name: &str, key: &str) -> serde_json::Value {
    json!({ "source": {
        "file": null,
        "configMap": ConfigMapSource {
            namespace: "default".into(),
            name: name.into(),
            key: key.into(),
            sha256: None,
        },
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_loads_and_reports_its_digest() {
    let lab = lab().await;
    let plugin = serving(&lab, "site", SELECTOR).await;

    let status = status(&plugin);
    let digest = sha256_hex(&wasm(SELECTOR));
    assert_eq!(status.loaded_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(status.world_version.as_deref(), Some("0.1.0"));
    assert_eq!(status.observed_generation, plugin.metadata.generation);
    assert!(has(&plugin, "Loaded", "True", "Loaded"), "{status:#?}");
    assert!(has(&plugin, "Degraded", "False", "Healthy"), "{status:#?}");
    assert!(
        plugin
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    );

    answers(&lab, "site").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_specs_keep_the_old_version_serving_and_say_why() {
    let lab = lab().await;
    serving(&lab, "site", SELECTOR).await;
    let first = sha256_hex(&wasm(SELECTOR));

    let path = support::wasm_path(SELECTOR).display().to_string();
    patch_spec(
        &lab,
        "site",
        json!({ "source": { "file": { "path": path, "sha256": "0".repeat(64) } } }),
    )
    .await;
    let bad_digest = judged(&lab, "site", 2).await;
    let loaded = loaded_condition(&bad_digest);
    assert_eq!(
        (loaded.status.as_str(), loaded.reason.as_str()),
        ("False", "DigestMismatch")
    );
    assert!(
        loaded.message.contains(&first),
        "names the actual digest: {}",
        loaded.message
    );
    assert!(
        loaded.message.contains("keeps serving"),
        "{}",
        loaded.message
    );
    assert!(has(&bad_digest, "Ready", "True", "Serving"));
    assert_eq!(
        status(&bad_digest).loaded_digest.as_deref(),
        Some(first.as_str())
    );

    let driver = support::wasm_path("ingot-plugin-redfish")
        .display()
        .to_string();
    patch_spec(
        &lab,
        "site",
        json!({ "source": { "file": { "path": driver, "sha256": null } } }),
    )
    .await;
    let wrong_world = judged(&lab, "site", 3).await;
    let loaded = loaded_condition(&wrong_world);
    assert_eq!(
        (loaded.status.as_str(), loaded.reason.as_str()),
        ("False", "WrongWorld")
    );
    assert!(loaded.message.contains("bmc-driver"), "{}", loaded.message);
    assert!(
        loaded.message.contains("spec.world"),
        "says what to change: {}",
        loaded.message
    );

    config_map(
        &lab,
        "garbage",
        "plugin.wasm",
        b"\0asm but not really a component".to_vec(),
    )
    .await;
    patch_spec(&lab, "site", from_config_map("garbage", "plugin.wasm")).await;
    let garbage = judged(&lab, "site", 4).await;
    let loaded = loaded_condition(&garbage);
    assert_eq!(
        (loaded.status.as_str(), loaded.reason.as_str()),
        ("False", "InvalidComponent")
    );
    assert!(
        loaded.message.contains("ingot plugin check"),
        "{}",
        loaded.message
    );

    assert_eq!(
        serving_digest(&lab, "site"),
        Some(first.clone()),
        "v1 serves throughout"
    );
    answers(&lab, "site").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_swaps_the_plugin_and_a_deletion_removes_it() {
    let lab = lab().await;
    serving(&lab, "site", SELECTOR).await;

    config_map(&lab, "site-selector", "site.wasm", wasm(EXAMPLE)).await;
    patch_spec(&lab, "site", from_config_map("site-selector", "site.wasm")).await;
    let second = sha256_hex(&wasm(EXAMPLE));
    let updated = wait_for(&lab.plugins(), "site", "the new digest", |p| {
        status(p).loaded_digest.as_deref() == Some(second.as_str())
    })
    .await;

    assert!(
        has(&updated, "Loaded", "True", "Loaded"),
        "{:#?}",
        updated.status
    );
    assert_eq!(serving_digest(&lab, "site"), Some(second));
    let choice = answers(&lab, "site").await;
    assert_eq!(
        support::first_ranked(&choice),
        "big-in-b",
        "the example spreads across racks"
    );

    lab.plugins()
        .delete("site", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&lab.plugins(), "site").await;
    assert_eq!(serving_digest(&lab, "site"), None);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_report_degraded() {
    let empty = tempfile::tempdir().expect("temporary directory");
    let guard = GuardSettings {
        max_failures: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(600),
    };
    let lab = Lab::start(empty.path(), guard).await;
    serving(&lab, "hostile", HOSTILE).await;

    for _ in 0..3 {
        let crashed = lab
            .registry
            .call("hostile", select("panic"), CallScope::default())
            .await;
        assert!(crashed.is_err());
    }
    assert_eq!(
        lab.registry.status("hostile").map(|s| s.guard),
        Some(GuardState::Open)
    );

    let degraded = wait_for(&lab.plugins(), "hostile", "Degraded", |p| {
        has(p, "Degraded", "True", "GuardOpen")
    })
    .await;
    let message = plugin_condition(&degraded, "Degraded").map(|c| c.message.clone());
    assert!(
        message.is_some_and(|m| m.contains("Fail")),
        "names the failure policy"
    );
    assert!(
        has(&degraded, "Ready", "True", "Serving"),
        "a version is still loaded"
    );
    lab.stop().await;
}
