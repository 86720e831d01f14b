//! `HostPolicy` routing and its `Ready` condition against the embedded API
//! server, calling real components through the bindings routing returns.

mod support;

use std::collections::BTreeMap;

use ingot_api::plugins::{HostPolicy, HostPolicySpec, PluginRef, PluginWorld};
use ingot_plugin_host::drivers::IPMI_DRIVER;
use ingot_plugin_host::limits::GuardSettings;
use ingot_plugin_host::routing::{DEFAULT_SELECTOR, HostFacts, RoutingError};
use ingot_plugin_host::state::CallScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Lab, condition, first_ranked, has, select, wait_for};

const EXAMPLE: &str = "ingot-example-host-selection";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn plugin_ref(name: &str, config: &[(&str, &str)]) -> PluginRef {
    PluginRef {
        name: name.into(),
        config: labels(config),
    }
}

/// Hosts labelled `pool: spread` are ranked by the site selector with a
/// spread weight of zero, and driven by `driver` when given.
fn spread_policy(driver: Option<PluginRef>) -> HostPolicy {
    let mut policy = HostPolicy::new(
        "spread",
        HostPolicySpec {
            host_selector: LabelSelector {
                match_labels: Some(labels(&[("pool", "spread")])),
                ..LabelSelector::default()
            },
            priority: 5,
            driver,
            host_selection: Some(plugin_ref("site", &[("spread-weight", "0")])),
            steps: Vec::new(),
        },
    );
    policy.metadata.namespace = Some("default".into());
    policy
}

async fn create_policy(policies: &Api<HostPolicy>, policy: &HostPolicy) {
    policies
        .create(&PostParams::default(), policy)
        .await
        .expect("create HostPolicy");
}

fn ready(policy: &HostPolicy) -> Option<(String, String)> {
    let found = condition(policy.status.as_ref()?.conditions.as_ref(), "Ready")?;
    Some((found.status.clone(), found.message.clone()))
}

fn facts<'a>(host_labels: &'a BTreeMap<String, String>, scheme: &'a str) -> HostFacts<'a> {
    HostFacts {
        namespace: "default",
        labels: host_labels,
        bmc_scheme: scheme,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_routes_its_hosts_once_its_plugins_are_ready() {
    let bundled = support::plugin_dir();
    let lab = Lab::start(&bundled, GuardSettings::default()).await;
    let policies: Api<HostPolicy> = Api::namespaced(lab.client.clone(), "default");
    let (labelled, plain) = (labels(&[("pool", "spread")]), labels(&[("pool", "other")]));

    create_policy(&policies, &spread_policy(Some(plugin_ref("dell-oem", &[])))).await;
    let waiting = wait_for(&policies, "spread", "Ready False", |p| {
        ready(p).is_some_and(|(status, _)| status == "False")
    })
    .await;
    let message = ready(&waiting)
        .map(|(_, message)| message)
        .unwrap_or_default();
    assert!(
        message.contains("driver: WasmPlugin dell-oem does not exist"),
        "{message}"
    );
    assert!(
        message.contains("hostSelection: WasmPlugin site does not exist"),
        "{message}"
    );

    let refused = lab.routing.plugins_for(&facts(&labelled, "redfish"));
    let Err(RoutingError::Policy { policy, reason }) = refused else {
        panic!("a policy naming missing plugins refuses to route: {refused:?}");
    };
    assert_eq!(policy, "default/spread");
    assert!(reason.contains("dell-oem"), "{reason}");

    lab.create_plugin("site", EXAMPLE, PluginWorld::HostSelector)
        .await;
    policies
        .patch(
            "spread",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "driver": { "name": IPMI_DRIVER } } })),
        )
        .await
        .expect("point the driver at the bundled IPMI driver");
    wait_for(&policies, "spread", "Ready True", |p| {
        ready(p).is_some_and(|(status, _)| status == "True")
    })
    .await;

    let routed = lab
        .routing
        .plugins_for(&facts(&labelled, "redfish"))
        .expect("routes");
    assert_eq!(
        routed.driver.plugin, IPMI_DRIVER,
        "the policy's driver wins over the scheme"
    );
    assert_eq!(routed.selector.plugin, "site");
    assert_eq!(
        routed.selector.config,
        [("spread-weight".to_owned(), "0".to_owned())]
    );

    let builtin = lab
        .routing
        .plugins_for(&facts(&plain, "redfish"))
        .expect("routes");
    assert_eq!(
        builtin.selector.plugin, DEFAULT_SELECTOR,
        "no policy: built-in"
    );
    assert_eq!(builtin.driver.plugin, "ingot-plugin-redfish");

    let scope = CallScope {
        config_overrides: routed.selector.config.clone(),
        ..CallScope::default()
    };
    let with_policy = lab
        .registry
        .call(&routed.selector.plugin, select("lab/m1"), scope)
        .await;
    let without = lab
        .registry
        .call(
            &routed.selector.plugin,
            select("lab/m1"),
            CallScope::default(),
        )
        .await;
    assert_eq!(
        first_ranked(&with_policy.expect("selects")),
        "fits-in-a",
        "policy config reached the plugin"
    );
    assert_eq!(first_ranked(&without.expect("selects")), "big-in-b");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_wrong_world_is_named() {
    let empty = tempfile::tempdir().expect("temporary directory");
    let lab = Lab::start(empty.path(), GuardSettings::default()).await;
    let policies: Api<HostPolicy> = Api::namespaced(lab.client.clone(), "default");

    lab.create_plugin("site", EXAMPLE, PluginWorld::HostSelector)
        .await;
    create_policy(&policies, &spread_policy(Some(plugin_ref("site", &[])))).await;

    let refused = wait_for(&policies, "spread", "Ready False for the world", |p| {
        ready(p).is_some_and(|(status, message)| {
            status == "False"
                && message.contains("not bmc-driver")
                && !message.contains("hostSelection")
        })
    })
    .await;

    let message = ready(&refused)
        .map(|(_, message)| message)
        .unwrap_or_default();
    assert!(
        message.starts_with("driver: plugin site implements host-selector"),
        "{message}"
    );
    let plugin = wait_for(&lab.plugins(), "site", "Ready", |p| {
        has(p, "Ready", "True", "Serving")
    })
    .await;
    assert!(plugin.status.is_some());
    lab.stop().await;
}
