//! `ingot operator` runs the machine loop next to the host controller: with `ingot apiserver`
//! and the operator as separate processes, a BareMetalHost becomes available and a
//! Metal3Machine with its Machine gets that host, becomes ready and reports its providerID.
//! With `--no-machines` the same Metal3Machine is left alone. The operator's metrics count the
//! reconciles of both loops by trigger, although its log filter is `warn`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ingot_api::capi::v1beta1::{Cluster, Machine};
use ingot_api::capm3::v1beta1::{Metal3Cluster, Metal3Machine};
use ingot_api::metal3::{BareMetalHost, ProvisioningState};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "default";
/// Longest wait for any expected state; the suite shares two cores.
const WAIT: Duration = Duration::from_secs(180);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn ingot(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingot starts")
}

fn start_apiserver(data: &Path) -> Child {
    let listen = format!("127.0.0.1:{}", free_port());
    let data = data.to_str().expect("UTF-8 temporary path");
    ingot(&["apiserver", "--data", data, "--listen", &listen])
}

/// Starts the operator, with its health and metrics endpoints on `endpoints`.
fn start_operator(data: &Path, endpoints: &str, extra: &[&str]) -> Child {
    let kubeconfig = data.join("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("UTF-8 temporary path");
    let mut args = vec![
        "operator",
        "--kubeconfig",
        kubeconfig,
        "--provisioner",
        "fixture",
        "--endpoints",
        endpoints,
        "--identity",
        "operator-under-test",
        "--max-requeue-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    ingot(&args)
}

async fn client(data: &Path) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(kubeconfig) = kube::config::Kubeconfig::read_from(data.join("kubeconfig"))
            && let Ok(config) =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
            && let Ok(client) = Client::try_from(config)
            && client.apiserver_version().await.is_ok()
        {
            return client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apiserver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ingot_api::crds::all().expect("CRDs build") {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(WAIT, established)
            .await
            .expect("CRD established in time")
            .expect("CRD watch");
    }
}

async fn create<K>(client: &Client, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("well-formed object");
    Api::<K>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &object)
        .await
        .expect("create object")
}

/// The BMC credentials and one host the fixture provisioner registers and inspects.
async fn host(client: &Client) {
    create::<Secret>(
        client,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "node-0-bmc", "namespace": NAMESPACE },
            "stringData": { "username": "admin", "password": "password" },
        }),
    )
    .await;
    create::<BareMetalHost>(
        client,
        json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": { "name": "node-0", "namespace": NAMESPACE },
            "spec": {
                "online": false,
                "bootMACAddress": "52:54:00:00:00:10",
                "bmc": {
                    "address": "redfish+http://127.0.0.1:9/redfish/v1/Systems/node-0",
                    "credentialsName": "node-0-bmc",
                },
            },
        }),
    )
    .await;
}

/// A Cluster on a Metal3Cluster, and one replica (its bootstrap data, the Machine and its
/// Metal3Machine), as Cluster API core and a MachineSet would create them.
async fn cluster_and_replica(client: &Client) {
    create::<Metal3Cluster>(
        client,
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "Metal3Cluster",
            "metadata": { "name": "lab", "namespace": NAMESPACE },
            "spec": { "controlPlaneEndpoint": { "host": "192.0.2.100", "port": 6443 } },
        }),
    )
    .await;
    create::<Cluster>(
        client,
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": { "name": "lab", "namespace": NAMESPACE },
            "spec": { "infrastructureRef": {
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "Metal3Cluster", "name": "lab", "namespace": NAMESPACE,
            }},
        }),
    )
    .await;
    create::<Secret>(
        client,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "worker-0-bootstrap", "namespace": NAMESPACE },
            "stringData": { "value": "#cloud-config\n", "format": "cloud-config" },
        }),
    )
    .await;
    let machine: Machine = create(
        client,
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
            "metadata": { "name": "worker-0", "namespace": NAMESPACE },
            "spec": {
                "clusterName": "lab",
                "bootstrap": { "dataSecretName": "worker-0-bootstrap" },
                "infrastructureRef": {
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                    "kind": "Metal3Machine", "name": "worker-0", "namespace": NAMESPACE,
                },
            },
        }),
    )
    .await;
    create::<Metal3Machine>(
        client,
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "Metal3Machine",
            "metadata": {
                "name": "worker-0", "namespace": NAMESPACE,
                "labels": { "cluster.x-k8s.io/cluster-name": "lab" },
                "ownerReferences": [{
                    "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
                    "name": "worker-0", "uid": machine.uid(),
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": { "image": {
                "url": "http://images.lab.test/node.qcow2",
                "checksum": "http://images.lab.test/node.qcow2.sha256sum",
            }},
        }),
    )
    .await;
}

/// Plays Cluster API core's cluster controller: the Cluster's infrastructure is ready once
/// its Metal3Cluster is.
async fn cluster_infrastructure_ready(client: &Client) {
    let metal3_clusters: Api<Metal3Cluster> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(&metal3_clusters, "lab", "Metal3Cluster ready", |cluster| {
        cluster.status.as_ref().and_then(|status| status.ready) == Some(true)
    })
    .await;

    let status = json!({ "status": { "infrastructureReady": true } });
    Api::<Cluster>::namespaced(client.clone(), NAMESPACE)
        .patch_status("lab", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("cluster status");
}

/// Watches `name` until `check` holds, failing with `what` after [`WAIT`].
async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    check: impl Fn(&K) -> bool + Send + 'static,
) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let condition = move |object: Option<&K>| object.is_some_and(&check);
    let seen = await_condition(api.clone(), name, condition);
    tokio::time::timeout(WAIT, seen)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what} ({name})"))
        .unwrap_or_else(|error| panic!("watching {name} for {what}: {error}"))
        .unwrap_or_else(|| panic!("{name} vanished while waiting for {what}"))
}

fn state(host: &BareMetalHost) -> Option<ProvisioningState> {
    host.status.as_ref().map(|status| status.provisioning.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_the_machine_loop_unless_told_not_to() {
    let data = tempfile::tempdir().expect("data dir");
    let _apiserver = start_apiserver(data.path());
    let client = client(data.path()).await;
    install_crds(&client).await;
    host(&client).await;
    cluster_and_replica(&client).await;

    let endpoints = format!("127.0.0.1:{}", free_port());
    let mut without_machines = start_operator(data.path(), &endpoints, &["--no-machines"]);
    let hosts: Api<BareMetalHost> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(&hosts, "node-0", "host available", |host| {
        state(host) == Some(ProvisioningState::Available)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metal3_machines: Api<Metal3Machine> = Api::namespaced(client.clone(), NAMESPACE);
    let untouched = metal3_machines
        .get("worker-0")
        .await
        .expect("Metal3Machine");
    assert!(
        untouched.finalizers().is_empty() && untouched.status.is_none(),
        "--no-machines leaves Metal3Machines alone: {untouched:?}"
    );
    without_machines.start_kill().expect("stop the operator");
    without_machines.wait().await.expect("operator reaped");

    let _operator = start_operator(data.path(), &endpoints, &[]);
    cluster_infrastructure_ready(&client).await;
    let ready = wait_for(&metal3_machines, "worker-0", "Metal3Machine ready", |m| {
        m.status.as_ref().and_then(|status| status.ready) == Some(true)
    })
    .await;

    assert_eq!(
        ready.spec.provider_id.as_deref(),
        Some("metal3://default/node-0/worker-0")
    );
    let host = hosts.get("node-0").await.expect("host");
    assert_eq!(state(&host), Some(ProvisioningState::Provisioned));
    assert_eq!(
        host.spec.consumer_ref.and_then(|r| r.name).as_deref(),
        Some("worker-0")
    );

    let metrics = get_metrics(&endpoints).await;
    for kind in ["BareMetalHost", "Metal3Machine"] {
        let changed =
            format!("ingot_reconcile_triggers_total{{kind=\"{kind}\",trigger=\"changed\"}}");
        assert!(metrics.contains(&changed), "no {changed} in:\n{metrics}");
    }
}

/// The operator's metrics, over plain HTTP/1.0 so the test needs no HTTP client.
async fn get_metrics(endpoints: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(endpoints)
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    response
}
