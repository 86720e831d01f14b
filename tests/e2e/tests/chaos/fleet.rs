//! The objects of a run: the plugins with short timeouts, one BareMetalHost with its BMC
//! Secret per lab machine, and a Cluster with one Machine and Metal3Machine per host, as
//! Cluster API core and a MachineSet would create them.

use std::time::Duration;

use futures::StreamExt as _;
use ingot_api::capi::v1beta1::{Cluster, Machine};
use ingot_api::capm3::v1beta1::{Metal3Cluster, Metal3Machine};
use ingot_api::metal3::BareMetalHost;
use ingot_api::plugins::WasmPlugin;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::site::{BMC_PASSWORD, BMC_USER, Site, plugin_file};

const NAMESPACE: &str = "default";
const CLUSTER: &str = "chaos";
/// Requests the test keeps in flight while creating objects.
const PARALLEL_REQUESTS: usize = 16;

/// Deadlines that let a host recover from a crashed agent or a hung BMC within the test's
/// bound, instead of the production defaults of minutes to hours: a plugin call gives up
/// after 5 s, an agent that has not checked in after 30 s is booted again, and an agent
/// command (the image write included) taking more than 60 s fails the phase.
pub const DRIVER_CALL_TIMEOUT_MS: u64 = 5_000;
const STEPS_CONFIG: [(&str, &str); 3] = [
    ("agent-boot-timeout-seconds", "30"),
    ("agent-command-timeout-seconds", "60"),
    ("driver-timeout-seconds", "60"),
];

const PLUGINS: [&str; 2] = ["ingot-plugin-redfish", "ingot-standard-steps"];

/// Replaces the bundled Redfish driver and standard steps with the same components under
/// the short deadlines above; created before the operator starts, so that no host is ever
/// driven under the production deadlines.
pub async fn install_plugins_before_start(client: &Client) {
    let steps_config: serde_json::Map<String, Value> = STEPS_CONFIG
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect();
    let plugins = [
        json!({
            "metadata": {"name": PLUGINS[0]},
            "spec": {
                "world": "bmc-driver",
                "source": {"file": {"path": plugin_file("ingot_plugin_redfish.wasm")}},
                "limits": {"timeoutMilliseconds": DRIVER_CALL_TIMEOUT_MS},
            },
        }),
        json!({
            "metadata": {"name": PLUGINS[1]},
            "spec": {
                "world": "provisioning-steps",
                "source": {"file": {"path": plugin_file("ingot_standard_steps.wasm")}},
                "config": steps_config,
            },
        }),
    ];
    let api: Api<WasmPlugin> = Api::all(client.clone());
    for plugin in plugins {
        api.create(&PostParams::default(), &object(plugin))
            .await
            .unwrap_or_else(|e| panic!("WasmPlugin: {e}"));
    }
}

/// Waits until the operator serves both plugins.
pub async fn wait_for_plugins(client: &Client) {
    let api: Api<WasmPlugin> = Api::all(client.clone());
    for name in PLUGINS {
        wait_for(&api, name, "WasmPlugin ready", |plugin| {
            let json = serde_json::to_value(plugin).unwrap_or_default();
            conditions_true(&json, "Ready")
        })
        .await;
    }
}

fn conditions_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// The name of the host on lab machine `index`.
pub fn host_name(index: usize) -> String {
    format!("host-{index}")
}

/// The lab machine of host `name`.
pub fn machine_of(name: &str) -> String {
    name.replacen("host-", "lab-", 1)
}

/// The Metal3Machine (and Machine) of replica `index`.
pub fn replica_name(index: usize) -> String {
    format!("worker-{index}")
}

/// A BMC Secret and a BareMetalHost per lab machine, many at a time.
pub async fn create_hosts(site: &Site, count: usize) {
    futures::stream::iter(0..count)
        .map(|index| create_host(site, index))
        .buffer_unordered(PARALLEL_REQUESTS)
        .collect::<()>()
        .await;
}

async fn create_host(site: &Site, index: usize) {
    let name = host_name(index);
    let secret = json!({
        "metadata": {"name": format!("{name}-bmc")},
        "stringData": {"username": BMC_USER, "password": BMC_PASSWORD},
    });
    create::<Secret>(&site.client, secret).await;
    let host = json!({
        "metadata": {"name": name},
        "spec": {
            "online": false,
            "bootMACAddress": site.boot_mac(index),
            "bmc": {
                "address": site.bmc_address(&machine_of(&name)),
                "credentialsName": format!("{name}-bmc"),
            },
            "rootDeviceHints": {"deviceName": "/dev/sda"},
        },
    });
    create::<BareMetalHost>(&site.client, host).await;
}

/// The Cluster, its Metal3Cluster, and its infrastructure marked ready as Cluster API core
/// would once the operator reports the Metal3Cluster ready.
pub async fn create_cluster(client: &Client) {
    let endpoint = json!({"host": "192.0.2.10", "port": 6443});
    create::<Metal3Cluster>(
        client,
        json!({"metadata": {"name": CLUSTER}, "spec": {"controlPlaneEndpoint": endpoint}}),
    )
    .await;
    let infrastructure = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "Metal3Cluster", "name": CLUSTER, "namespace": NAMESPACE,
    });
    create::<Cluster>(
        client,
        json!({"metadata": {"name": CLUSTER}, "spec": {"infrastructureRef": infrastructure}}),
    )
    .await;

    let metal3_clusters: Api<Metal3Cluster> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        &metal3_clusters,
        CLUSTER,
        "Metal3Cluster ready",
        |cluster| cluster.status.as_ref().and_then(|status| status.ready) == Some(true),
    )
    .await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NAMESPACE);
    let ready = json!({"status": {"infrastructureReady": true}});
    clusters
        .patch_status(CLUSTER, &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap_or_else(|e| panic!("Cluster status: {e}"));
}

/// `count` replicas, each a Machine with bootstrap data and its Metal3Machine asking for the
/// lab's image, many at a time.
pub async fn create_replicas(site: &Site, count: usize) {
    futures::stream::iter(0..count)
        .map(|index| create_replica(site, index))
        .buffer_unordered(PARALLEL_REQUESTS)
        .collect::<()>()
        .await;
}

async fn create_replica(site: &Site, index: usize) {
    let name = replica_name(index);
    let client = &site.client;
    let bootstrap = json!({
        "metadata": {"name": format!("{name}-bootstrap")},
        "type": "cluster.x-k8s.io/secret",
        "stringData": {"value": format!("#cloud-config\nhostname: {name}\n"), "format": "cloud-config"},
    });
    create::<Secret>(client, bootstrap).await;
    let machine = create::<Machine>(
        client,
        json!({
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER}},
            "spec": {
                "clusterName": CLUSTER,
                "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                "infrastructureRef": {
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                    "kind": "Metal3Machine", "name": name, "namespace": NAMESPACE,
                },
            },
        }),
    )
    .await;
    let image = site.image_url();
    create::<Metal3Machine>(
        client,
        json!({
            "metadata": {
                "name": name,
                "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER},
                "ownerReferences": [{
                    "apiVersion": Machine::api_version(&()),
                    "kind": "Machine", "name": name, "uid": machine.uid(),
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "automatedCleaningMode": "metadata",
                "image": {
                    "url": image,
                    "checksum": format!("{image}.sha256sum"),
                    "checksumType": "sha256",
                    "format": "raw",
                },
            },
        }),
    )
    .await;
}

/// Every Metal3Machine.
pub async fn metal3_machines(client: &Client) -> Vec<Metal3Machine> {
    let api: Api<Metal3Machine> = Api::namespaced(client.clone(), NAMESPACE);
    api.list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("listing Metal3Machines: {e}"))
        .items
}

/// Every BareMetalHost.
pub async fn hosts(client: &Client) -> Vec<BareMetalHost> {
    hosts_api(client)
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("listing hosts: {e}"))
        .items
}

/// The BareMetalHosts of the run's namespace.
pub fn hosts_api(client: &Client) -> Api<BareMetalHost> {
    Api::namespaced(client.clone(), NAMESPACE)
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test object: {e}"))
}

async fn create<K>(client: &Client, value: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), NAMESPACE);
    let object: K = object(value);
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", object.name_any()))
}

async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(object) = api.get(name).await
            && check(&object)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no {what} within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
