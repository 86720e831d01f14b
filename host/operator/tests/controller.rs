//! The controller against the embedded API server, over HTTPS, with the scripted fake
//! provisioner standing in for hardware: full lifecycle, credentials, detach, pause and
//! deletion from every state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

use ingot_api::metal3::{BareMetalHost, HardwareData, OperationalStatus, ProvisioningState};
use ingot_apiserver::{ApiServerBuilder, RunningApiServer};
use ingot_operator::backoff::FixedJitter;
use ingot_operator::controller::{
    self, Context, HARDWARE_DATA_FINALIZER, HOST_FINALIZER, SECRET_FINALIZER, SECRET_LABEL,
};
use ingot_operator::fake::{FakeBackend, Method, Scripted};
use ingot_operator::metrics::Metrics;
use ingot_operator::state_machine::Settings;

const NAMESPACE: &str = "default";
const IMAGE: &str = "http://images.example/os.qcow2";
const WAIT: Duration = Duration::from_secs(30);

/// An API server, the CRDs, and a running controller over a fake backend.
struct Cluster {
    client: Client,
    backend: FakeBackend,
    workers: u16,
    max_requeue: Duration,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
    _server: RunningApiServer,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(8, Duration::from_millis(300)).await
    }

    /// A cluster whose controller has `workers` reconciles at once and looks at every host
    /// again at most `max_requeue` after the last time.
    async fn start_with(workers: u16, max_requeue: Duration) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = ApiServerBuilder::new(dir.path())
            .start()
            .await
            .expect("start API server");
        let client = server.client().await.expect("client");
        install_crds(&client).await;

        let backend = FakeBackend::new();
        let metrics = Arc::new(Metrics::new());
        let mut cluster = Cluster {
            client,
            backend,
            workers,
            max_requeue,
            metrics,
            stop: None,
            controller: None,
            _server: server,
            _dir: dir,
        };
        cluster.start_controller();
        cluster
    }

    /// Starts an operator process (its own context and caches) over the same cluster and
    /// hardware.
    fn start_controller(&mut self) {
        let settings = Settings {
            max_provisioning_retries: 2,
            jitter: Arc::new(FixedJitter(0.0)),
        };
        let mut context = Context::new(
            self.client.clone(),
            self.backend.clone(),
            settings,
            self.metrics.clone(),
            "test",
        );
        context.max_requeue = Some(self.max_requeue);
        context.reconcile_timeout = Duration::from_secs(2);
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.controller = Some(tokio::spawn(controller::run(
            Arc::new(context),
            self.workers,
            async move {
                let _ = stopped.await;
            },
        )));
    }

    /// Kills the operator abruptly, as a crash would: no graceful shutdown.
    fn kill_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
        self.stop = None;
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(controller) = self.controller.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
        }
    }

    fn hosts(&self) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn create_secret(&self, name: &str, username: &str, password: &str) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(
            "username".to_string(),
            ByteString(username.as_bytes().to_vec()),
        );
        data.insert(
            "password".to_string(),
            ByteString(password.as_bytes().to_vec()),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret")
    }

    async fn create_host(&self, name: &str, spec: serde_json::Value) -> BareMetalHost {
        let mut full = json!({
            "online": true,
            "bmc": {"address": format!("redfish+http://127.0.0.1:8000/redfish/v1/Systems/{name}"), "credentialsName": format!("{name}-bmc")},
        });
        merge(&mut full, spec);
        let host: BareMetalHost = serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": full,
        }))
        .expect("host object");
        self.hosts()
            .create(&PostParams::default(), &host)
            .await
            .expect("create host")
    }

    async fn host_with_secret(&self, name: &str, spec: serde_json::Value) {
        self.create_secret(&format!("{name}-bmc"), "admin", "password")
            .await;
        self.create_host(name, spec).await;
    }

    async fn patch_host(&self, name: &str, patch: serde_json::Value) {
        self.hosts()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch host");
    }

    /// Polls the host until `check` holds.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&BareMetalHost) -> bool,
    ) -> BareMetalHost {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let host = self.hosts().get_opt(name).await.expect("get host");
            if let Some(host) = host.filter(|host| check(host)) {
                return host;
            }
            if tokio::time::Instant::now() > deadline {
                let current = self
                    .hosts()
                    .get_opt(name)
                    .await
                    .expect("get host")
                    .and_then(|host| host.status);
                panic!("{name}: timed out waiting for {what}; status: {current:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_state(&self, name: &str, state: ProvisioningState) -> BareMetalHost {
        self.wait_for(name, &format!("{state:?}"), |host| state_of(host) == state)
            .await
    }

    async fn wait_gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self
            .hosts()
            .get_opt(name)
            .await
            .expect("get host")
            .is_some()
        {
            if tokio::time::Instant::now() > deadline {
                let status = self
                    .hosts()
                    .get_opt(name)
                    .await
                    .expect("get host")
                    .and_then(|host| host.status);
                panic!("{name}: not deleted in time; status: {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|event| event.involved_object.name.as_deref() == Some(name))
            .filter_map(|event| event.reason)
            .collect()
    }
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn state_of(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

fn image_spec() -> serde_json::Value {
    json!({"image": {"url": IMAGE, "checksum": "abc123", "checksumType": "sha256"}})
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [BareMetalHost::crd(), HardwareData::crd()] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_goes_from_registration_to_provisioned_and_back() {
    let cluster = Cluster::start().await;
    cluster.host_with_secret("lifecycle", json!({})).await;

    let available = cluster
        .wait_for_state("lifecycle", ProvisioningState::Available)
        .await;
    let status = available.status.clone().unwrap_or_default();
    assert_eq!(status.operational_status, OperationalStatus::Ok);
    assert!(status.good_credentials.is_some());
    assert!(status.hardware.is_some());
    assert!(available.finalizers().contains(&HOST_FINALIZER.to_string()));

    let data: Api<HardwareData> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let data = data.get("lifecycle").await.expect("hardware data created");
    assert!(
        data.finalizers()
            .contains(&HARDWARE_DATA_FINALIZER.to_string())
    );
    assert_eq!(
        data.owner_references()
            .first()
            .map(|owner| owner.name.as_str()),
        Some("lifecycle")
    );
    let architecture = cluster
        .wait_for("lifecycle", "architecture", |host| {
            host.spec.architecture.is_some()
        })
        .await;
    assert_eq!(architecture.spec.architecture.as_deref(), Some("x86_64"));

    let secret = cluster
        .secrets()
        .get("lifecycle-bmc")
        .await
        .expect("secret");
    assert_eq!(
        secret.labels().get(SECRET_LABEL).map(String::as_str),
        Some("baremetal")
    );
    assert!(secret.finalizers().contains(&SECRET_FINALIZER.to_string()));
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|owner| owner.name == "lifecycle" && owner.controller != Some(true))
    );

    cluster
        .patch_host("lifecycle", json!({"spec": image_spec()}))
        .await;
    let provisioned = cluster
        .wait_for_state("lifecycle", ProvisioningState::Provisioned)
        .await;
    let status = provisioned.status.unwrap_or_default();
    assert_eq!(
        status.provisioning.image.map(|image| image.url),
        Some(IMAGE.to_string())
    );
    assert!(status.powered_on);
    assert_eq!(
        cluster.backend.machine(NAMESPACE, "lifecycle").image_writes,
        1
    );

    cluster
        .patch_host("lifecycle", json!({"spec": {"image": null}}))
        .await;
    let deprovisioned = cluster
        .wait_for_state("lifecycle", ProvisioningState::Available)
        .await;
    assert_eq!(
        deprovisioned.status.unwrap_or_default().provisioning.image,
        None
    );
    assert!(
        cluster
            .backend
            .machine(NAMESPACE, "lifecycle")
            .calls
            .iter()
            .any(|call| call.method() == Some(Method::Deprovision))
    );

    let reasons = cluster.event_reasons("lifecycle").await;
    for reason in ["BMCAccessValidated", "ProfileSet", "ProvisioningComplete"] {
        assert!(
            reasons.iter().any(|seen| seen == reason),
            "missing event {reason} in {reasons:?}"
        );
    }
    // The gauge is updated right after the status write the test observed.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut metrics = cluster.metrics.render();
    while !metrics.contains("ingot_hosts{state=\"available\"} 1") {
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = cluster.metrics.render();
    }
    assert!(metrics.contains("ingot_reconcile_duration_seconds_count"));
    cluster.stop().await;
}

/// One worker, and every host asking to be looked at again a millisecond after each look:
/// far more hosts are due than the worker can take, yet every host gets its turns and becomes
/// available. Left to kube's own concurrency bound, the worker served the same two or three
/// hosts again and again, and the others were never reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_gets_its_turns_when_more_are_due_than_workers_can_take() {
    let cluster = Cluster::start_with(1, Duration::from_millis(1)).await;
    let names: Vec<String> = (0..24).map(|index| format!("due-{index}")).collect();
    for name in &names {
        cluster.host_with_secret(name, json!({})).await;
    }

    for name in &names {
        cluster
            .wait_for_state(name, ProvisioningState::Available)
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_recover_when_the_secret_is_fixed() {
    let cluster = Cluster::start().await;
    cluster.backend.with_machine(NAMESPACE, "creds", |machine| {
        machine.password = Some("right".into())
    });
    cluster.create_secret("creds-bmc", "admin", "wrong").await;
    cluster.create_host("creds", json!({})).await;

    let failed = cluster
        .wait_for("creds", "a registration error", |host| {
            host.status
                .as_ref()
                .is_some_and(|status| status.error_message.contains("authentication failed"))
        })
        .await;
    let status = failed.status.unwrap_or_default();
    assert_eq!(state_of_status(&status), ProvisioningState::Registering);
    assert!(status.good_credentials.is_none());
    assert!(status.tried_credentials.is_some());

    let mut secret = cluster.secrets().get("creds-bmc").await.expect("secret");
    secret
        .data
        .get_or_insert_default()
        .insert("password".into(), ByteString(b"right\n".to_vec()));
    let fixed = cluster
        .secrets()
        .replace("creds-bmc", &PostParams::default(), &secret)
        .await
        .expect("fix secret");

    let recovered = cluster
        .wait_for_state("creds", ProvisioningState::Available)
        .await;
    let good = recovered
        .status
        .unwrap_or_default()
        .good_credentials
        .unwrap_or_default();
    assert_eq!(good.credentials_version, fixed.resource_version());
    assert!(
        cluster
            .event_reasons("creds")
            .await
            .iter()
            .any(|reason| reason == "RegistrationError")
    );
    cluster.stop().await;
}

fn state_of_status(status: &ingot_api::metal3::BareMetalHostStatus) -> ProvisioningState {
    status.provisioning.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_blank_credentials_are_reported_and_recovered() {
    let cluster = Cluster::start().await;
    cluster.create_host("blank", json!({})).await;
    cluster
        .wait_for("blank", "missing secret error", |host| {
            host.status
                .as_ref()
                .is_some_and(|status| status.error_message.contains("doesn't exist"))
        })
        .await;

    cluster.create_secret("blank-bmc", "admin", "   \n").await;
    cluster
        .wait_for("blank", "invalid secret error", |host| {
            host.status.as_ref().is_some_and(|status| {
                status
                    .error_message
                    .contains("password is missing or empty")
            })
        })
        .await;

    let mut secret = cluster.secrets().get("blank-bmc").await.expect("secret");
    secret
        .data
        .get_or_insert_default()
        .insert("password".into(), ByteString(b"hunter2".to_vec()));
    cluster
        .secrets()
        .replace("blank-bmc", &PostParams::default(), &secret)
        .await
        .expect("fix secret");
    let available = cluster
        .wait_for_state("blank", ProvisioningState::Available)
        .await;
    assert!(!format!("{:?}", available.status).contains("hunter2"));
    assert!(
        cluster
            .event_reasons("blank")
            .await
            .iter()
            .any(|reason| reason == "BMCCredentialError")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_host_is_left_alone_and_reattaches_where_it_was() {
    let cluster = Cluster::start().await;
    let mut spec = image_spec();
    merge(&mut spec, json!({}));
    cluster.host_with_secret("detach", spec).await;
    cluster
        .wait_for_state("detach", ProvisioningState::Provisioned)
        .await;

    cluster
        .patch_host(
            "detach",
            json!({"metadata": {"annotations": {"baremetalhost.metal3.io/detached": ""}}}),
        )
        .await;
    let detached = cluster
        .wait_for("detach", "detached", |host| {
            host.status
                .as_ref()
                .is_some_and(|status| status.operational_status == OperationalStatus::Detached)
        })
        .await;
    assert_eq!(state_of(&detached), ProvisioningState::Provisioned);
    assert!(cluster.backend.machine(NAMESPACE, "detach").detached);

    cluster
        .patch_host(
            "detach",
            json!({"metadata": {"annotations": {"baremetalhost.metal3.io/detached": null}}}),
        )
        .await;
    let attached = cluster
        .wait_for("detach", "re-attached", |host| {
            host.status
                .as_ref()
                .is_some_and(|status| status.operational_status == OperationalStatus::Ok)
        })
        .await;
    assert_eq!(state_of(&attached), ProvisioningState::Provisioned);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cluster.backend.machine(NAMESPACE, "detach").registered {
        assert!(
            tokio::time::Instant::now() < deadline,
            "re-registered after re-attach"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let machine = cluster.backend.machine(NAMESPACE, "detach");
    assert_eq!(machine.image_writes, 1, "the image is not written again");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_host_is_not_touched_until_unpaused() {
    let cluster = Cluster::start().await;
    cluster
        .create_secret("paused-bmc", "admin", "password")
        .await;
    let host: BareMetalHost = serde_json::from_value(json!({
        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
        "metadata": {"name": "paused", "namespace": NAMESPACE, "annotations": {"baremetalhost.metal3.io/paused": "admin"}},
        "spec": {"online": true, "bmc": {"address": "redfish://127.0.0.1/redfish/v1/Systems/1", "credentialsName": "paused-bmc"}},
    }))
    .expect("host");
    cluster
        .hosts()
        .create(&PostParams::default(), &host)
        .await
        .expect("create host");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let untouched = cluster.hosts().get("paused").await.expect("host");
    assert!(untouched.status.is_none(), "no status written while paused");
    assert!(
        untouched.finalizers().is_empty(),
        "no finalizer added while paused"
    );
    assert!(
        cluster
            .backend
            .machine(NAMESPACE, "paused")
            .calls
            .is_empty()
    );

    cluster
        .patch_host(
            "paused",
            json!({"metadata": {"annotations": {"baremetalhost.metal3.io/paused": null}}}),
        )
        .await;
    cluster
        .wait_for_state("paused", ProvisioningState::Available)
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_can_be_deleted_from_every_state() {
    let cluster = Cluster::start().await;
    let stuck = || (0..100_000).map(|_| Scripted::working());
    let cases: Vec<(&str, ProvisioningState, serde_json::Value, Option<Method>)> = vec![
        (
            "del-unmanaged",
            ProvisioningState::Unmanaged,
            json!({"bmc": null}),
            None,
        ),
        (
            "del-registering",
            ProvisioningState::Registering,
            json!({}),
            Some(Method::Register),
        ),
        (
            "del-inspecting",
            ProvisioningState::Inspecting,
            json!({}),
            Some(Method::Inspect),
        ),
        (
            "del-preparing",
            ProvisioningState::Preparing,
            json!({}),
            Some(Method::Prepare),
        ),
        (
            "del-available",
            ProvisioningState::Available,
            json!({}),
            None,
        ),
        (
            "del-provisioning",
            ProvisioningState::Provisioning,
            image_spec(),
            Some(Method::Provision),
        ),
        (
            "del-provisioned",
            ProvisioningState::Provisioned,
            image_spec(),
            None,
        ),
        (
            "del-external",
            ProvisioningState::ExternallyProvisioned,
            json!({"externallyProvisioned": true}),
            None,
        ),
        (
            "del-detached",
            ProvisioningState::Provisioned,
            image_spec(),
            None,
        ),
    ];
    for (name, _, spec, method) in &cases {
        if let Some(method) = method {
            cluster.backend.script(NAMESPACE, name, *method, stuck());
        }
        cluster.host_with_secret(name, spec.clone()).await;
    }
    for (name, state, _, _) in &cases {
        cluster.wait_for_state(name, *state).await;
    }
    cluster.patch_host("del-detached", json!({"metadata": {"annotations": {"baremetalhost.metal3.io/detached": "{\"deleteAction\":\"delete\"}"}}})).await;
    cluster
        .wait_for("del-detached", "detached", |host| {
            host.status
                .as_ref()
                .is_some_and(|status| status.operational_status == OperationalStatus::Detached)
        })
        .await;

    for (name, _, _, _) in &cases {
        cluster
            .hosts()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete host");
    }
    for (name, _, _, _) in &cases {
        cluster.wait_gone(name).await;
        let machine = cluster.backend.machine(NAMESPACE, name);
        if *name != "del-unmanaged" {
            assert!(machine.deleted, "{name}: removed from the provisioner");
            // The Secret is owned by its host, so the garbage collector may already have
            // removed it; if not, it must no longer be held by the finalizer.
            let secret = cluster
                .secrets()
                .get_opt(&format!("{name}-bmc"))
                .await
                .expect("get secret");
            let held = secret
                .is_some_and(|secret| secret.finalizers().contains(&SECRET_FINALIZER.to_string()));
            assert!(!held, "{name}: secret released");
        }
        let deprovisioned = machine
            .calls
            .iter()
            .any(|call| call.method() == Some(Method::Deprovision));
        let expect_deprovision = matches!(*name, "del-provisioning" | "del-provisioned");
        assert_eq!(
            deprovisioned, expect_deprovision,
            "{name}: deprovisioned only when it carried an image"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovisioning_host_stuck_cleaning_can_still_be_deleted() {
    let cluster = Cluster::start().await;
    cluster.host_with_secret("del-cleaning", image_spec()).await;
    cluster
        .wait_for_state("del-cleaning", ProvisioningState::Provisioned)
        .await;
    cluster.backend.script(
        NAMESPACE,
        "del-cleaning",
        Method::Deprovision,
        (0..10).map(|_| Scripted::failed("erase failed")),
    );
    cluster
        .patch_host("del-cleaning", json!({"spec": {"image": null}}))
        .await;
    cluster
        .wait_for_state("del-cleaning", ProvisioningState::Deprovisioning)
        .await;

    cluster
        .hosts()
        .delete("del-cleaning", &DeleteParams::default())
        .await
        .expect("delete host");
    cluster.wait_gone("del-cleaning").await;
    assert!(cluster.backend.machine(NAMESPACE, "del-cleaning").deleted);
    cluster.stop().await;
}

fn has_error(host: &BareMetalHost, needle: &str) -> bool {
    host.status
        .as_ref()
        .is_some_and(|status| status.error_message.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bmc_failure_during_provisioning_is_reported_then_recovered() {
    let cluster = Cluster::start().await;
    cluster.host_with_secret("flaky", json!({})).await;
    cluster
        .wait_for_state("flaky", ProvisioningState::Available)
        .await;
    cluster.backend.script(
        NAMESPACE,
        "flaky",
        Method::Provision,
        [
            Scripted::working(),
            Scripted::failed("BMC stopped answering during deployment"),
        ],
    );

    cluster
        .patch_host("flaky", json!({"spec": image_spec()}))
        .await;
    cluster
        .wait_for("flaky", "the provisioning error", |host| {
            has_error(host, "BMC stopped answering")
        })
        .await;
    let provisioned = cluster
        .wait_for_state("flaky", ProvisioningState::Provisioned)
        .await;

    let status = provisioned.status.unwrap_or_default();
    assert_eq!(status.error_type, None);
    assert_eq!(status.provisioning_fail_count, 0);
    let machine = cluster.backend.machine(NAMESPACE, "flaky");
    assert!(
        machine
            .calls
            .iter()
            .any(|call| call.method() == Some(Method::Deprovision)),
        "cleaned before the retry"
    );
    assert_eq!(machine.image_writes, 1);
    assert!(
        cluster
            .event_reasons("flaky")
            .await
            .iter()
            .any(|reason| reason == "ProvisioningError")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioner_calls_are_timed_and_their_failures_counted_by_call() {
    let cluster = Cluster::start().await;
    cluster.backend.script(
        NAMESPACE,
        "measured",
        Method::Register,
        [Scripted::Transient("the BMC did not answer".into())],
    );

    cluster.host_with_secret("measured", json!({})).await;
    cluster
        .wait_for_state("measured", ProvisioningState::Available)
        .await;

    let metrics = cluster.metrics.render();
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(
        sample("ingot_provisioner_call_failures_total{call=\"register\"}"),
        1.0
    );
    assert!(sample("ingot_provisioner_call_duration_seconds_count{call=\"register\"}") >= 2.0);
    assert!(sample("ingot_provisioner_call_duration_seconds_count{call=\"inspect\"}") >= 1.0);
    assert!(!metrics.contains("ingot_provisioner_call_failures_total{call=\"inspect\"}"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_checksum_stops_at_the_retry_limit() {
    let cluster = Cluster::start().await;
    cluster.backend.script(
        NAMESPACE,
        "badsum",
        Method::Provision,
        (0..10).map(|_| Scripted::failed("image checksum mismatch")),
    );
    cluster.host_with_secret("badsum", image_spec()).await;

    let stopped = cluster
        .wait_for("badsum", "the retry limit", |host| {
            has_error(host, "retry limit (2) reached")
        })
        .await;
    assert_eq!(state_of(&stopped), ProvisioningState::Available);
    assert_eq!(
        stopped.status.unwrap_or_default().provisioning_fail_count,
        2
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = |cluster: &Cluster| {
        cluster
            .backend
            .machine(NAMESPACE, "badsum")
            .calls
            .iter()
            .filter(|c| c.method() == Some(Method::Provision))
            .count()
    };
    let settled = attempts(&cluster);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        attempts(&cluster),
        settled,
        "no more attempts after the limit"
    );

    cluster.patch_host("badsum", json!({"spec": {"image": {"url": "http://images.example/fixed.img", "checksum": "ok"}}})).await;
    cluster
        .backend
        .with_machine(NAMESPACE, "badsum", |machine| machine.script.clear());
    let provisioned = cluster
        .wait_for_state("badsum", ProvisioningState::Provisioned)
        .await;
    assert_eq!(
        provisioned
            .status
            .unwrap_or_default()
            .provisioning_fail_count,
        0
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_during_provisioning_resumes_and_writes_the_image_once() {
    let mut cluster = Cluster::start().await;
    cluster.backend.script(
        NAMESPACE,
        "restart",
        Method::Provision,
        (0..6).map(|_| Scripted::working()),
    );
    cluster.host_with_secret("restart", image_spec()).await;
    cluster
        .wait_for_state("restart", ProvisioningState::Provisioning)
        .await;

    cluster.kill_controller();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_controller();

    let provisioned = cluster
        .wait_for_state("restart", ProvisioningState::Provisioned)
        .await;
    let machine = cluster.backend.machine(NAMESPACE, "restart");
    assert_eq!(machine.image_writes, 1);
    let inspections = machine
        .calls
        .iter()
        .filter(|call| call.method() == Some(Method::Inspect))
        .count();
    assert_eq!(inspections, 1, "finished inspection is not redone");
    assert!(
        machine
            .calls
            .iter()
            .all(|call| call.method() != Some(Method::Deprovision))
    );
    assert_eq!(
        provisioned
            .status
            .unwrap_or_default()
            .provisioning
            .image
            .map(|image| image.url),
        Some(IMAGE.into())
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn externally_provisioned_host_is_adopted_never_inspected_and_can_be_handed_over() {
    let cluster = Cluster::start().await;
    cluster
        .host_with_secret("external", json!({"externallyProvisioned": true}))
        .await;
    cluster
        .wait_for_state("external", ProvisioningState::ExternallyProvisioned)
        .await;
    let machine = cluster.backend.machine(NAMESPACE, "external");
    assert!(
        machine
            .calls
            .iter()
            .all(|call| call.method() != Some(Method::Inspect))
    );
    cluster
        .wait_for("external", "powered on", |host| {
            host.status.as_ref().is_some_and(|s| s.powered_on)
        })
        .await;

    let mut spec = image_spec();
    merge(&mut spec, json!({"externallyProvisioned": false}));
    cluster.patch_host("external", json!({"spec": spec})).await;
    let provisioned = cluster
        .wait_for_state("external", ProvisioningState::Provisioned)
        .await;
    assert_eq!(
        provisioned
            .status
            .unwrap_or_default()
            .provisioning
            .image
            .map(|image| image.url),
        Some(IMAGE.into())
    );
    assert_eq!(
        cluster.backend.machine(NAMESPACE, "external").image_writes,
        0,
        "adopted, not rewritten"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_iso_is_booted_without_a_checksum() {
    let cluster = Cluster::start().await;
    cluster
        .host_with_secret(
            "live",
            json!({"image": {"url": "http://images.example/live.iso", "format": "live-iso"}}),
        )
        .await;
    let provisioned = cluster
        .wait_for_state("live", ProvisioningState::Provisioned)
        .await;
    let image = provisioned
        .status
        .unwrap_or_default()
        .provisioning
        .image
        .unwrap_or_default();
    assert_eq!(
        image.disk_format,
        Some(ingot_api::metal3::DiskFormat::LiveIso)
    );
    cluster.stop().await;
}

/// Waits until the fake machine's power is as expected.
async fn wait_power(cluster: &Cluster, name: &str, on: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.backend.machine(NAMESPACE, name).powered_on != on {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: power never became {on}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn annotate(key: &str, value: Option<&str>) -> serde_json::Value {
    json!({"metadata": {"annotations": {key: value}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reboot_annotation_cycles_power_as_upstream() {
    let cluster = Cluster::start().await;
    cluster.host_with_secret("reboot", image_spec()).await;
    cluster
        .wait_for_state("reboot", ProvisioningState::Provisioned)
        .await;
    wait_power(&cluster, "reboot", true).await;

    // Plain: off, annotation removed by the operator, on again.
    cluster
        .patch_host("reboot", annotate("reboot.metal3.io", Some("")))
        .await;
    cluster
        .wait_for("reboot", "plain annotation served", |host| {
            !host.annotations().contains_key("reboot.metal3.io")
        })
        .await;
    wait_power(&cluster, "reboot", true).await;
    let power_offs = |cluster: &Cluster| {
        cluster
            .backend
            .machine(NAMESPACE, "reboot")
            .calls
            .iter()
            .filter_map(|call| match call {
                ingot_operator::fake::Call::PowerOff(request) => Some(*request),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(power_offs(&cluster).len(), 1);
    assert_eq!(
        power_offs(&cluster)[0].mode,
        ingot_operator::annotations::RebootMode::Soft
    );

    // Suffixed and hard: off and kept off until its owner removes it.
    cluster
        .patch_host(
            "reboot",
            annotate("reboot.metal3.io/remediation", Some(r#"{"mode":"hard"}"#)),
        )
        .await;
    wait_power(&cluster, "reboot", false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = cluster.hosts().get("reboot").await.expect("host");
    assert!(
        held.annotations()
            .contains_key("reboot.metal3.io/remediation"),
        "the operator never removes it"
    );
    assert!(
        !cluster.backend.machine(NAMESPACE, "reboot").powered_on,
        "held off"
    );
    assert_eq!(
        power_offs(&cluster).last().map(|request| request.mode),
        Some(ingot_operator::annotations::RebootMode::Hard)
    );
    cluster
        .patch_host("reboot", annotate("reboot.metal3.io/remediation", None))
        .await;
    wait_power(&cluster, "reboot", true).await;

    // Soft power-off failing falls back to a hard, forced retry.
    cluster.backend.script(
        NAMESPACE,
        "reboot",
        Method::PowerOff,
        [Scripted::failed("ACPI ignored")],
    );
    cluster
        .patch_host(
            "reboot",
            annotate("reboot.metal3.io", Some(r#"{"mode":"soft"}"#)),
        )
        .await;
    cluster
        .wait_for("reboot", "served after the fallback", |host| {
            !host.annotations().contains_key("reboot.metal3.io")
        })
        .await;
    let last = power_offs(&cluster).last().copied().expect("a power-off");
    assert_eq!(last.mode, ingot_operator::annotations::RebootMode::Hard);
    assert!(last.force);
    wait_power(&cluster, "reboot", true).await;
    assert!(
        cluster
            .event_reasons("reboot")
            .await
            .iter()
            .any(|reason| reason == "PowerManagementError")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hardware_call_is_abandoned_and_retried() {
    let cluster = Cluster::start().await;
    cluster
        .backend
        .script(NAMESPACE, "hung", Method::Inspect, [Scripted::Hang]);
    cluster.host_with_secret("hung", json!({})).await;

    cluster
        .wait_for_state("hung", ProvisioningState::Available)
        .await;
    let inspections = cluster
        .backend
        .machine(NAMESPACE, "hung")
        .calls
        .iter()
        .filter(|call| call.method() == Some(Method::Inspect))
        .count();
    assert_eq!(inspections, 2, "the hung call was given up and made again");
    cluster.stop().await;
}
