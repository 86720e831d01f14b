//! Shared set-up for the machine loop tests: the embedded API server with every ingot CRD,
//! the machine controllers, a stand-in for Cluster API core (it creates and deletes Machine
//! and Metal3Machine pairs as a MachineSet would) and a test double for the host controller.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ingot_api::capi::v1beta1::{Bootstrap, Cluster, ClusterSpec, Machine, MachineSpec};
use ingot_api::capm3::ApiEndpoint;
use ingot_api::capm3::v1beta1::{
    Image, Metal3Cluster, Metal3ClusterSpec, Metal3Machine, Metal3MachineSpec,
};
use ingot_api::metal3::{
    BareMetalHost, BareMetalHostSpec, BmcDetails, HardwareDetails, HostClaim, HostClaimSpec, Nic,
    ProvisioningState,
};
use ingot_api::selector::{HostSelector, HostSelectorRequirement};
use ingot_apiserver::{ApiServerBuilder, ConversionError, ConversionHook, RunningApiServer};
use ingot_machines::{Selectors, Settings};
use k8s_openapi::api::core::v1::{ObjectReference, SecretReference};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Namespace every test works in.
pub const NAMESPACE: &str = "default";
/// Name of the workload cluster.
pub const CLUSTER: &str = "lab";
/// Image the machines ask for.
pub const IMAGE: &str = "http://images.lab.test/node.qcow2";
/// Longest wait for any expected state: generous, because the race test shares two cores with
/// the rest of the suite.
pub const WAIT: Duration = Duration::from_secs(300);

/// Longest one step of the host controller double may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Converts between the served versions, as the ingot webhook does on a real cluster.
struct Converter;

impl ConversionHook for Converter {
    fn convert(&self, object: Value, desired: &str) -> Result<Value, ConversionError> {
        ingot_api::conversion::convert(object, desired)
            .map_err(|error| ConversionError(error.to_string()))
    }
}

/// Settings short enough for tests: waiting machines look again within a fraction of a second.
pub fn quick_settings() -> Settings {
    Settings {
        wait_for_host: Duration::from_millis(300),
        poll_host: Duration::from_millis(100),
        retry: Duration::from_millis(100),
        fast_track: false,
        workers: 8,
        reconcile_timeout: Duration::from_secs(10),
    }
}

/// The API server with the CRDs installed.
pub struct Lab {
    pub client: Client,
    pub server: RunningApiServer,
    _dir: tempfile::TempDir,
    tasks: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Lab {
    pub async fn start() -> Lab {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = ApiServerBuilder::new(dir.path())
            .conversion_hook(ingot_api::CAPM3_GROUP, Arc::new(Converter))
            .conversion_hook(ingot_api::CAPI_GROUP, Arc::new(Converter))
            .start()
            .await
            .expect("API server starts");
        let client = server.client().await.expect("client");
        install_crds(&client).await;

        Lab {
            client,
            server,
            _dir: dir,
            tasks: Vec::new(),
        }
    }

    /// Starts one instance of the machine controllers (several instances race like several
    /// operator processes without leader election).
    pub async fn start_controllers(&mut self, selectors: Selectors, settings: Settings) {
        let client = self.server.client().await.expect("client");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingot_machines::run(
            client,
            selectors,
            settings,
            async move {
                let _ = stopped.await;
            },
        ));
        self.tasks.push((stop, task));
    }

    /// Starts the host controller test double.
    pub fn start_host_double(&mut self) -> HostDouble {
        let double = HostDouble::default();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let client = self.client.clone();
        let worker = double.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(40)) => {
                        // Like the real host controller's reconcile timeout: a request the API
                        // server never answers is abandoned and the next step starts afresh.
                        let step = tokio::time::timeout(STEP_TIMEOUT, worker.step(&client));
                        if step.await.is_err() {
                            tracing::warn!("host double: a step got no answer in time; retrying");
                        }
                    }
                }
            }
        });
        self.tasks.push((stop, task));
        double
    }

    pub async fn stop(mut self) {
        for (stop, task) in self.tasks.drain(..) {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub fn hosts(&self) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub fn metal3machines(&self) -> Api<Metal3Machine> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub fn machines(&self) -> Api<Machine> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Gives host `name` inspected hardware of `cpus` CPUs and `ram_gib` GiB of memory.
    pub async fn host_size(&self, name: &str, cpus: i64, ram_gib: i64) {
        let status = json!({ "status": { "hardware": {
            "cpu": { "arch": "x86_64", "model": "lab", "count": cpus },
            "ramMebibytes": ram_gib * 1024,
        }}});
        self.hosts()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("host size");
    }

    /// Creates `count` available hosts `host-00`, `host-01`, ... with inspected hardware;
    /// `labels` gives extra labels per host index.
    pub async fn hosts_available(
        &self,
        count: usize,
        labels: impl Fn(usize) -> BTreeMap<String, String>,
    ) {
        for index in 0..count {
            let name = format!("host-{index:02}");
            let mut host = BareMetalHost::new(
                &name,
                BareMetalHostSpec {
                    bmc: Some(BmcDetails {
                        address: format!("redfish+http://127.0.0.1:9/redfish/v1/Systems/{index}"),
                        credentials_name: format!("{name}-bmc"),
                        disable_certificate_verification: None,
                    }),
                    online: false,
                    ..BareMetalHostSpec::default()
                },
            );
            host.metadata.labels = Some(labels(index));
            self.hosts()
                .create(&PostParams::default(), &host)
                .await
                .expect("create host");

            let status = json!({ "status": {
                "operationalStatus": "OK",
                "errorMessage": "",
                "poweredOn": false,
                "provisioning": { "state": "available", "ID": format!("node-{index}") },
                "hardware": hardware(index),
            }});
            self.hosts()
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("host status");
        }
    }

    /// The Cluster, ready, with its Metal3Cluster.
    pub async fn cluster(&self) {
        let metal3_clusters: Api<Metal3Cluster> = Api::namespaced(self.client.clone(), NAMESPACE);
        let metal3_cluster = Metal3Cluster::new(
            CLUSTER,
            Metal3ClusterSpec {
                control_plane_endpoint: Some(ApiEndpoint {
                    host: Some("192.0.2.100".into()),
                    port: Some(6443),
                }),
                ..Metal3ClusterSpec::default()
            },
        );
        metal3_clusters
            .create(&PostParams::default(), &metal3_cluster)
            .await
            .expect("create Metal3Cluster");

        let clusters: Api<Cluster> = Api::namespaced(self.client.clone(), NAMESPACE);
        let cluster = Cluster::new(
            CLUSTER,
            ClusterSpec {
                infrastructure_ref: Some(ObjectReference {
                    api_version: Some("infrastructure.cluster.x-k8s.io/v1beta1".into()),
                    kind: Some("Metal3Cluster".into()),
                    name: Some(CLUSTER.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..ObjectReference::default()
                }),
                ..ClusterSpec::default()
            },
        );
        clusters
            .create(&PostParams::default(), &cluster)
            .await
            .expect("create Cluster");
    }

    /// Plays Cluster API core's cluster controller: the Cluster's infrastructure is ready once
    /// its Metal3Cluster is.
    pub async fn cluster_infrastructure_ready(&self) {
        let metal3_clusters: Api<Metal3Cluster> = Api::namespaced(self.client.clone(), NAMESPACE);
        wait_for(
            &metal3_clusters,
            CLUSTER,
            "Metal3Cluster ready",
            |cluster| cluster.status.as_ref().and_then(|status| status.ready) == Some(true),
        )
        .await;

        let clusters: Api<Cluster> = Api::namespaced(self.client.clone(), NAMESPACE);
        let status = json!({ "status": { "infrastructureReady": true } });
        clusters
            .patch_status(CLUSTER, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("cluster status");
    }

    /// Plays the MachineSet controller creating one replica: a Machine with bootstrap data and
    /// the Metal3Machine cloned for it, owned by the Machine.
    pub async fn add_replica(&self, name: &str, spec: Metal3MachineSpec) {
        let machine = Machine::new(
            name,
            MachineSpec {
                cluster_name: CLUSTER.into(),
                bootstrap: Bootstrap {
                    config_ref: None,
                    data_secret_name: Some(format!("{name}-bootstrap")),
                },
                infrastructure_ref: ObjectReference {
                    api_version: Some("infrastructure.cluster.x-k8s.io/v1beta1".into()),
                    kind: Some("Metal3Machine".into()),
                    name: Some(name.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..ObjectReference::default()
                },
                ..MachineSpec::default()
            },
        );
        let machine = self
            .machines()
            .create(&PostParams::default(), &machine)
            .await
            .expect("create Machine");

        let mut metal3_machine = Metal3Machine::new(name, spec);
        metal3_machine
            .labels_mut()
            .insert("cluster.x-k8s.io/cluster-name".into(), CLUSTER.into());
        metal3_machine.metadata.owner_references = Some(vec![OwnerReference {
            api_version: Machine::api_version(&()).into_owned(),
            kind: "Machine".into(),
            name: name.into(),
            uid: machine.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        self.metal3machines()
            .create(&PostParams::default(), &metal3_machine)
            .await
            .expect("create Metal3Machine");
    }

    /// Plays Machine deletion: delete the Metal3Machine and wait until it is gone (the
    /// provider releases the host meanwhile), then delete the Machine.
    pub async fn delete_replica(&self, name: &str) {
        let uid = self
            .metal3machines()
            .get(name)
            .await
            .expect("read Metal3Machine")
            .uid()
            .unwrap_or_default();
        self.metal3machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Metal3Machine");
        let gone = await_condition(self.metal3machines(), name, conditions::is_deleted(&uid));
        tokio::time::timeout(WAIT, gone)
            .await
            .expect("Metal3Machine deleted in time")
            .expect("watch");
        self.machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Machine");
    }

    /// Like [`Lab::delete_replica`], watching the held host meanwhile: returns whether the
    /// host was seen deprovisioning while the Metal3Machine still existed.
    pub async fn delete_replica_observing(&self, name: &str, host: &str) -> bool {
        self.metal3machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Metal3Machine");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut saw_deprovisioning = false;

        while self
            .metal3machines()
            .get_opt(name)
            .await
            .expect("read Metal3Machine")
            .is_some()
        {
            let held = self.hosts().get(host).await.expect("read host");
            saw_deprovisioning |= state_of(&held) == ProvisioningState::Deprovisioning;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not deleted in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        self.machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Machine");
        saw_deprovisioning
    }

    /// Plays Cluster API core copying the provider ID back to the Machine once ready.
    pub async fn copy_provider_id(&self, name: &str) -> String {
        let ready = wait_for(
            &self.metal3machines(),
            name,
            "Metal3Machine ready",
            |machine| machine.status.as_ref().and_then(|status| status.ready) == Some(true),
        )
        .await;
        let id = ready
            .spec
            .provider_id
            .clone()
            .expect("ready machine has a provider ID");
        let patch = json!({ "spec": { "providerID": id } });
        self.machines()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("Machine providerID");
        id
    }
}

/// A HostClaim for a worker host that is not retired (`DoesNotExist`), powered on, with the
/// test image and user data.
pub fn host_claim_spec() -> HostClaimSpec {
    HostClaimSpec {
        host_selector: Some(HostSelector {
            match_labels: Some(BTreeMap::from([("role".to_owned(), "worker".to_owned())])),
            match_expressions: Some(vec![HostSelectorRequirement {
                key: "retired".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        }),
        powered_on: true,
        image: Some(ingot_api::metal3::Image {
            url: IMAGE.into(),
            checksum: Some("0123abcd".into()),
            ..ingot_api::metal3::Image::default()
        }),
        user_data: Some(SecretReference {
            name: Some("site-user-data".into()),
            namespace: None,
        }),
        ..HostClaimSpec::default()
    }
}

/// The host a HostClaim's status names.
pub fn bound_host(claim: &HostClaim) -> Option<String> {
    claim
        .status
        .as_ref()?
        .bare_metal_host
        .as_ref()
        .map(|host| host.name.clone())
}

/// The machine spec every replica is cloned with.
pub fn machine_spec() -> Metal3MachineSpec {
    Metal3MachineSpec {
        image: Some(Image {
            url: IMAGE.into(),
            checksum: Some("http://images.lab.test/node.qcow2.sha256sum".into()),
            checksum_type: None,
            format: None,
        }),
        ..Metal3MachineSpec::default()
    }
}

fn hardware(index: usize) -> HardwareDetails {
    HardwareDetails {
        nics: Some(vec![Nic {
            name: Some("eth0".into()),
            ip: Some(format!("192.0.2.{}", 10 + index)),
            mac: Some(format!("52:54:00:00:00:{index:02x}")),
            ..Nic::default()
        }]),
        hostname: Some(format!("node-{index:02}")),
        ..HardwareDetails::default()
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ingot_api::crds::all().expect("CRDs build") {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("CRD condition watch");
    }
}

/// Waits until `object` satisfies `check`, failing with `what` after [`WAIT`].
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(object)) = api.get_opt(name).await
            && check(&object)
        {
            return object;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({name})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds, failing with `what` after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_showing(what, check, || async { String::new() }).await;
}

/// [`eventually`], with what `show` describes then added to the failure.
pub async fn eventually_showing<F, Fut, S, ShowFut>(what: &str, check: F, show: S)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
    S: FnOnce() -> ShowFut,
    ShowFut: Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", show().await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each host with the consumer it names and its state, one per line.
pub async fn describe_hosts(hosts: Api<BareMetalHost>) -> String {
    let Ok(list) = hosts.list(&Default::default()).await else {
        return "(the hosts could not be listed)".to_owned();
    };
    list.items
        .iter()
        .map(|host| {
            let consumer = consumer_of(host).unwrap_or_else(|| "no consumer".to_owned());
            format!("{}: {consumer}, {:?}", host.name_any(), state_of(host))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The host's provisioning state.
pub fn state_of(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

/// The consumer named by a host, as `Kind/name`.
pub fn consumer_of(host: &BareMetalHost) -> Option<String> {
    let reference = host.spec.consumer_ref.as_ref()?;
    Some(format!(
        "{}/{}",
        reference.kind.clone().unwrap_or_default(),
        reference.name.clone().unwrap_or_default()
    ))
}

/// A test double for the host controller (the real one is tested with the operator): it
/// moves a claimed host with an image and power on through provisioning to provisioned, and
/// a host whose image was removed through deprovisioning back to available. Every start of
/// provisioning is recorded with the consumer it was for.
#[derive(Clone, Default)]
pub struct HostDouble {
    provisioned: Arc<Mutex<Vec<(String, String)>>>,
}

impl HostDouble {
    /// Every `(host, consumer)` provisioning started, in order.
    pub fn provisionings(&self) -> Vec<(String, String)> {
        self.provisioned
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    async fn step(&self, client: &Client) {
        let hosts: Api<BareMetalHost> = Api::namespaced(client.clone(), NAMESPACE);
        let Ok(list) = hosts.list(&Default::default()).await else {
            return;
        };
        for host in list.items {
            if let Some(status) = self.next_status(&host) {
                let patch = json!({ "metadata": { "resourceVersion": host.resource_version() }, "status": status });
                let _ = hosts
                    .patch_status(
                        &host.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
    }

    fn next_status(&self, host: &BareMetalHost) -> Option<Value> {
        let has_image = host.spec.image.is_some();
        let image = serde_json::to_value(&host.spec.image).unwrap_or_default();

        match state_of(host) {
            ProvisioningState::Available if has_image && host.spec.online => {
                let consumer = consumer_of(host).unwrap_or_default();
                if let Ok(mut list) = self.provisioned.lock() {
                    list.push((host.name_any(), consumer));
                }
                Some(json!({ "provisioning": { "state": "provisioning" } }))
            }
            ProvisioningState::Provisioning if has_image => Some(
                json!({ "provisioning": { "state": "provisioned", "image": image }, "poweredOn": true }),
            ),
            ProvisioningState::Provisioning | ProvisioningState::Provisioned if !has_image => {
                Some(json!({ "provisioning": { "state": "deprovisioning" } }))
            }
            ProvisioningState::Deprovisioning => Some(json!({
                "provisioning": { "state": "available", "image": null },
                "poweredOn": host.spec.online,
            })),
            _ => None,
        }
    }
}

/// Records, over a whole run, every consumer change of every host, and every change from one
/// consumer straight to another (a double booking).
pub struct ConsumerWatch {
    history: Arc<Mutex<BTreeMap<String, Vec<Option<String>>>>>,
    double_bookings: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl ConsumerWatch {
    pub async fn start(client: &Client) -> ConsumerWatch {
        let hosts: Api<BareMetalHost> = Api::namespaced(client.clone(), NAMESPACE);
        let history: Arc<Mutex<BTreeMap<String, Vec<Option<String>>>>> = Arc::default();
        let double_bookings: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready, started) = oneshot::channel::<()>();

        let (seen, problems) = (history.clone(), double_bookings.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(hosts, watcher::Config::default())
                .applied_objects()
                .boxed();
            let mut ready = Some(ready);
            while let Ok(Some(host)) = events.try_next().await {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                let consumer = consumer_of(&host);
                let (Ok(mut seen), Ok(mut problems)) = (seen.lock(), problems.lock()) else {
                    return;
                };
                let changes = seen.entry(host.name_any()).or_default();
                if changes.last() == Some(&consumer) {
                    continue;
                }
                if let (Some(Some(previous)), Some(next)) = (changes.last(), &consumer) {
                    problems.push(format!(
                        "host {} went from {previous} straight to {next}",
                        host.name_any()
                    ));
                }
                changes.push(consumer);
            }
        });
        let _ = tokio::time::timeout(WAIT, started).await;
        ConsumerWatch {
            history,
            double_bookings,
            task,
        }
    }

    /// Stops watching; returns each host's consumer history after asserting that no host
    /// ever changed from one consumer to another.
    pub fn finish(self) -> BTreeMap<String, Vec<Option<String>>> {
        self.task.abort();
        let problems = self
            .double_bookings
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default();
        assert!(problems.is_empty(), "double bookings: {problems:?}");
        self.history
            .lock()
            .map(|history| history.clone())
            .unwrap_or_default()
    }
}
