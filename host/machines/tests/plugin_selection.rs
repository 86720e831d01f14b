//! Host selection through real `host-selector` WebAssembly components, built from `plugins/`
//! and `examples/` by `make plugins`, run by the plugin registry and driven by the claim
//! engine and the controllers against the embedded API server.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::{Lab, NAMESPACE, machine_spec, quick_settings, wait_for};
use ingot_api::metal3::{BareMetalHost, HardwareDetails};
use ingot_machines::ClaimEngine;
use ingot_machines::claim::{Claim, ClaimRequest};
use ingot_machines::eligibility::{Consumer, Wanted};
use ingot_machines::plugin_selector::PluginSelector;
use ingot_machines::selection::{
    Candidate, DefaultSelector, HostSelector, SelectionError, SelectionRequest, Selectors,
};
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry};
use ingot_plugin_host::routing::{
    BuiltinRouting, DEFAULT_SELECTOR, HostFacts, HostPlugins, PluginBinding, Routing, RoutingError,
};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::world::World;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// The example site selector: the smallest host that fits wins.
const EXAMPLE: &str = "ingot-example-host-selection";

/// Label routing a host to the example selector in [`SiteRouting`].
const POOL_LABEL: &str = "pool";

/// Routes hosts labelled `pool=site` to `site_selector`, every other host to the bundled
/// default selector, as a `HostPolicy` selecting on that label would.
struct SiteRouting {
    site_selector: String,
    config: Vec<(String, String)>,
}

impl Routing for SiteRouting {
    fn plugins_for(&self, facts: &HostFacts<'_>) -> Result<HostPlugins, RoutingError> {
        let mut plugins = BuiltinRouting.plugins_for(facts)?;
        if facts.labels.get(POOL_LABEL).map(String::as_str) == Some("site") {
            plugins.selector = PluginBinding {
                config: self.config.clone(),
                ..PluginBinding::named(&self.site_selector)
            };
        }
        Ok(plugins)
    }
}

fn site_routing() -> Arc<dyn Routing> {
    Arc::new(SiteRouting {
        site_selector: EXAMPLE.to_owned(),
        config: Vec::new(),
    })
}

/// The component of plugin crate `crate_name`, as `make plugins` builds it.
fn wasm_path(crate_name: &str) -> PathBuf {
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

/// A registry whose compiled components are cached across test runs.
fn registry() -> Arc<Registry> {
    let config = RuntimeConfig {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ingot-plugin-cache")),
        ..RuntimeConfig::default()
    };
    let runtime = Arc::new(Runtime::new(config).expect("plugin runtime starts"));
    let fetcher = Fetcher::new(reqwest::Client::new());
    Arc::new(Registry::new(runtime, fetcher, GuardSettings::default()))
}

async fn load(registry: &Registry, crate_name: &str, config: &[(&str, &str)]) {
    let spec = PluginSpec {
        source: PluginSource::File {
            path: wasm_path(crate_name),
            sha256: None,
        },
        world: Some(World::HostSelector),
        config: config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        limits: Limits::default(),
        failure_policy: FailurePolicy::Fail,
    };
    registry
        .load(crate_name, spec)
        .await
        .unwrap_or_else(|error| panic!("loading {crate_name}: {error}"));
}

/// `(cpus, GiB)` of host `host-0N`: the smallest is host-02.
const SIZES: [(i64, i64); 4] = [(64, 512), (32, 256), (4, 16), (16, 64)];
const SMALLEST: &str = "host-02";

async fn sized_lab(labels: impl Fn(usize) -> BTreeMap<String, String>) -> Lab {
    let lab = Lab::start().await;
    lab.hosts_available(SIZES.len(), labels).await;
    for (index, (cpus, ram_gib)) in SIZES.iter().enumerate() {
        lab.host_size(&format!("host-{index:02}"), *cpus, *ram_gib)
            .await;
    }
    lab
}

/// Hosts of the site pool that HostClaims for workers select.
fn site_pool(_: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POOL_LABEL.to_owned(), "site".to_owned()),
        ("role".to_owned(), "worker".to_owned()),
    ])
}

async fn hosts(lab: &Lab) -> Vec<BareMetalHost> {
    lab.hosts()
        .list(&ListParams::default())
        .await
        .expect("list hosts")
        .items
}

fn as_candidate(host: &BareMetalHost) -> Candidate {
    Candidate {
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
        labels: host.labels().clone(),
        failure_domain: None,
        hardware: host.status.as_ref().and_then(|s| s.hardware.clone()),
        bmc_scheme: Some("redfish+http".into()),
    }
}

fn request(identity: &str) -> SelectionRequest {
    SelectionRequest {
        namespace: NAMESPACE.into(),
        identity: identity.into(),
        ..SelectionRequest::default()
    }
}

/// The first Metal3Machine name whose built-in pick over `hosts` is not the smallest host, so
/// that landing on the smallest host can only be the plugin's doing.
fn name_the_default_places_elsewhere(hosts: &[BareMetalHost]) -> (String, String) {
    let candidates: Vec<Candidate> = hosts.iter().map(as_candidate).collect();

    (0..100)
        .map(|index| format!("worker-{index}"))
        .find_map(|name| {
            let ranking =
                DefaultSelector::rank(&request(&format!("{NAMESPACE}/{name}")), &candidates);
            let first = ranking.ranked.first()?.name.clone();
            (first != SMALLEST).then_some((name, first))
        })
        .expect("some name is placed elsewhere by the default selector")
}

fn metal3machine(name: &str) -> Consumer {
    Consumer {
        group: "infrastructure.cluster.x-k8s.io".into(),
        api_version: "infrastructure.cluster.x-k8s.io/v1beta1".into(),
        kind: "Metal3Machine".into(),
        namespace: NAMESPACE.into(),
        name: name.into(),
        uid: None,
    }
}

fn claim_request(consumer: Consumer) -> ClaimRequest {
    ClaimRequest {
        consumer,
        wanted: Wanted::default(),
        labels: BTreeMap::new(),
        failure_domain: None,
        host_labels: BTreeMap::new(),
    }
}

async fn claimed_host(engine: &ClaimEngine, request: &ClaimRequest) -> String {
    match engine.claim(request).await.expect("claim") {
        Claim::Held(host) => host.name_any(),
        Claim::Waiting(reason) => panic!("claim waits: {reason}"),
    }
}

async fn unclaim(lab: &Lab, host: &str) {
    let patch = json!({ "spec": { "consumerRef": null } });
    lab.hosts()
        .patch(host, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("clear consumerRef");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_moves_the_same_claim_to_another_host() {
    let mut lab = sized_lab(site_pool).await;
    let (name, default_pick) = name_the_default_places_elsewhere(&hosts(&lab).await);
    let registry = registry();
    load(&registry, EXAMPLE, &[]).await;
    let request = claim_request(metal3machine(&name));

    let by_default = ClaimEngine::new(lab.client.clone(), Selectors::default());
    let default_host = claimed_host(&by_default, &request).await;
    assert_eq!(default_host, default_pick);
    unclaim(&lab, &default_host).await;

    let by_plugin = ClaimEngine::new(
        lab.client.clone(),
        Selectors::through_plugins(registry.clone(), site_routing()),
    );
    let plugin_host = claimed_host(&by_plugin, &request).await;
    assert_eq!(plugin_host, SMALLEST, "the example picks the smallest host");
    assert_ne!(plugin_host, default_host);
    unclaim(&lab, &plugin_host).await;

    lab.start_controllers(
        Selectors::through_plugins(registry, site_routing()),
        quick_settings(),
    )
    .await;
    lab.start_host_double();
    lab.cluster().await;
    lab.cluster_infrastructure_ready().await;
    lab.add_replica(&name, machine_spec()).await;
    let provider_id = lab.copy_provider_id(&name).await;
    assert_eq!(
        provider_id,
        format!("metal3://{NAMESPACE}/{SMALLEST}/{name}"),
        "the Metal3Machine controller selects through the plugin too"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_claims_are_placed_by_the_plugin_and_spread_by_size() {
    let mut lab = sized_lab(site_pool).await;
    let registry = registry();
    load(&registry, EXAMPLE, &[]).await;
    lab.start_controllers(
        Selectors::through_plugins(registry, site_routing()),
        quick_settings(),
    )
    .await;
    lab.start_host_double();
    let claims: kube::Api<ingot_api::metal3::HostClaim> =
        kube::Api::namespaced(lab.client.clone(), NAMESPACE);

    let mut placed = Vec::new();
    for name in ["site-a", "site-b"] {
        let claim = ingot_api::metal3::HostClaim::new(name, common::host_claim_spec());
        claims
            .create(&Default::default(), &claim)
            .await
            .expect("create claim");
        let bound = wait_for(&claims, name, "claim bound", |claim| {
            common::bound_host(claim).is_some()
        })
        .await;
        placed.push(common::bound_host(&bound).unwrap_or_default());
    }

    assert_eq!(
        placed,
        ["host-02", "host-03"],
        "smallest first, then the next smallest"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_plugin_falls_back_to_the_built_in_rules() {
    let lab = sized_lab(site_pool).await;
    let (name, default_pick) = name_the_default_places_elsewhere(&hosts(&lab).await);

    let engine = ClaimEngine::new(
        lab.client.clone(),
        Selectors::through_plugins(registry(), site_routing()),
    );
    let host = claimed_host(&engine, &claim_request(metal3machine(&name))).await;

    assert_eq!(host, default_pick);
    lab.stop().await;
}

fn candidate(name: &str, pool: &str, cpus: i64, ram_gib: i64) -> Candidate {
    let hardware: HardwareDetails = serde_json::from_value(json!({
        "cpu": { "arch": "x86_64", "count": cpus },
        "ramMebibytes": ram_gib * 1024,
    }))
    .expect("hardware");
    Candidate {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: BTreeMap::from([(POOL_LABEL.to_owned(), pool.to_owned())]),
        failure_domain: None,
        hardware: Some(hardware),
        bmc_scheme: Some("redfish".into()),
    }
}

fn names(ranking: &ingot_machines::selection::Ranking) -> Vec<&str> {
    ranking.ranked.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_routed_to_different_plugins_are_ranked_by_each_and_interleaved() {
    let registry = registry();
    load(&registry, EXAMPLE, &[]).await;
    load(&registry, DEFAULT_SELECTOR, &[]).await;
    let selector = PluginSelector::new(registry, site_routing());
    let candidates = [
        candidate("site-big", "site", 64, 512),
        candidate("general-1", "general", 8, 32),
        candidate("site-small", "site", 4, 16),
        candidate("general-2", "general", 8, 32),
    ];
    let request = request("default/worker-0");

    let ranking = selector
        .select(&request, &candidates)
        .await
        .expect("ranking");

    let built_in = DefaultSelector::rank(&request, &[candidates[1].clone(), candidates[3].clone()]);
    let general_order = names(&built_in);
    assert_eq!(
        names(&ranking),
        [general_order[0], "site-small", general_order[1], "site-big"],
        "the bundled default ranks its hosts as the built-in rules do; the example prefers small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_fails_the_ranking_with_its_reason() {
    let registry = registry();
    load(&registry, EXAMPLE, &[("spread-weight", "lots")]).await;
    let selector = PluginSelector::new(registry, site_routing());
    let candidates = [candidate("site-small", "site", 4, 16)];

    let error = selector
        .select(&request("default/worker-0"), &candidates)
        .await
        .expect_err("bad configuration fails the call");

    assert!(
        matches!(&error, SelectionError::Failed { selector, .. } if selector == EXAMPLE),
        "{error:?}"
    );
    let chain = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains("lots"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_configuration_of_a_binding_reaches_the_plugin() {
    let registry = registry();
    load(&registry, EXAMPLE, &[]).await;
    let routing = Arc::new(SiteRouting {
        site_selector: EXAMPLE.to_owned(),
        config: vec![("spread-weight".to_owned(), "plenty".to_owned())],
    });
    let selector = PluginSelector::new(registry, routing);

    let error = selector
        .select(
            &request("default/worker-0"),
            &[candidate("site-small", "site", 4, 16)],
        )
        .await
        .expect_err("the overridden configuration is invalid");

    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        source.is_some_and(|text| text.contains("plenty")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_without_a_usable_bmc_address_are_rejected_with_the_reason() {
    let selector = PluginSelector::new(registry(), site_routing());
    let mut unroutable = candidate("odd", "general", 8, 32);
    unroutable.bmc_scheme = Some("irmc".into());
    let mut missing = candidate("bare", "general", 8, 32);
    missing.bmc_scheme = None;

    let ranking = selector
        .select(&request("default/worker-0"), &[unroutable, missing])
        .await
        .expect("ranking");

    assert!(ranking.ranked.is_empty());
    let reasons: BTreeMap<_, _> = ranking.rejected.into_iter().collect();
    assert!(reasons["odd"].contains("HostPolicy"), "{reasons:?}");
    assert_eq!(reasons["bare"], "no usable BMC address");
}
