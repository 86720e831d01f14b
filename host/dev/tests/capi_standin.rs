//! The Cluster API stand-in against the embedded API server: scaling a MachineSet creates
//! Machines with cloned Metal3Machines and bootstrap data, a provisioned Metal3Machine's
//! providerID reaches its Machine, and scaling down deletes infrastructure first.

use std::time::Duration;

use ingot_api::capi::v1beta2::{Machine, MachineSet};
use ingot_dev::capi;
use ingot_dev::cluster::{self, Manifest};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NAMESPACE: &str = "default";

struct Session {
    _dir: tempfile::TempDir,
    _server: ingot_apiserver::RunningApiServer,
    client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = cluster::api_server(dir.path())
            .start()
            .await
            .expect("apiserver starts");
        let client = server.client().await.expect("client");
        cluster::install_crds(&client)
            .await
            .expect("crds installed");
        cluster::apply(&client, &manifests())
            .await
            .expect("manifests applied");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(capi::run(client.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            _server: server,
            client,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("stand-in stops on shutdown")
            .expect("stand-in task ends cleanly");
    }

    fn machines(&self) -> Api<Machine> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn metal3_machines(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            NAMESPACE,
            &capi::metal3_machine_resource(),
        )
    }

    async fn scale(&self, replicas: i32) {
        let sets: Api<MachineSet> = Api::namespaced(self.client.clone(), NAMESPACE);
        sets.patch_scale(
            "workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scaled");
    }
}

fn manifests() -> Vec<Manifest> {
    let objects = [
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
            "metadata": {"name": "workers", "namespace": NAMESPACE},
            "spec": {"clusterName": "dev", "replicas": 0,
                "selector": {"matchLabels": {"pool": "workers"}},
                "template": {"metadata": {"labels": {"pool": "workers"}},
                    "spec": {"clusterName": "dev", "bootstrap": {},
                        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                            "kind": "Metal3MachineTemplate", "name": "workers"}}}}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "Metal3MachineTemplate",
            "metadata": {"name": "workers", "namespace": NAMESPACE},
            "spec": {"template": {"spec": {
                "image": {"url": "http://127.0.0.1:8700/images/dev.raw",
                    "checksum": "http://127.0.0.1:8700/images/dev.raw.sha256sum",
                    "checksumType": "sha256", "format": "raw"},
                "hostSelector": {"matchLabels": {"pool": "workers"}}}}}}),
    ];
    objects
        .into_iter()
        .map(|object| Manifest {
            path: "test".into(),
            object,
        })
        .collect()
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn absent<K>(api: Api<K>, name: &str) -> Option<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .expect("read")
        .is_none()
        .then_some(())
}

async fn machine_list(session: &Session) -> Vec<Machine> {
    session
        .machines()
        .list(&ListParams::default())
        .await
        .expect("machines listed")
        .items
}

#[tokio::test]
async fn scale_up_provision_and_scale_down() {
    let session = Session::start().await;

    session.scale(1).await;
    let machine = eventually("a machine with bootstrap data", || async {
        machine_list(&session)
            .await
            .into_iter()
            .find(|m| m.spec.bootstrap.data_secret_name.is_some())
    })
    .await;
    let name = machine.name_any();
    assert!(name.starts_with("workers-"), "{name}");
    assert_eq!(
        machine.labels().get("pool").map(String::as_str),
        Some("workers")
    );
    assert!(
        machine
            .finalizers()
            .iter()
            .any(|f| f == capi::MACHINE_FINALIZER)
    );

    let secrets: Api<Secret> = Api::namespaced(session.client.clone(), NAMESPACE);
    let secret = secrets
        .get(&format!("{name}-bootstrap"))
        .await
        .expect("bootstrap secret");
    let user_data = secret.data.expect("data")["value"].0.clone();
    assert!(String::from_utf8_lossy(&user_data).starts_with("#cloud-config"));

    let metal3_machine = session
        .metal3_machines()
        .get(&name)
        .await
        .expect("metal3machine cloned");
    assert_eq!(
        metal3_machine.data["spec"]["image"]["diskFormat"], "raw",
        "spec cloned from the v1beta1 template, converted to v1beta2"
    );
    assert_eq!(metal3_machine.owner_references()[0].name, name);

    let sets: Api<MachineSet> = Api::namespaced(session.client.clone(), NAMESPACE);
    let scale = eventually("status replicas 1", || async {
        let scale = sets.get_scale("workers").await.expect("scale");
        scale
            .status
            .as_ref()
            .is_some_and(|s| s.replicas == 1)
            .then_some(scale)
    })
    .await;
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("pool=workers")
    );

    let provider_id = format!("metal3://{NAMESPACE}/host-0/{name}");
    session
        .metal3_machines()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"providerID": provider_id}})),
        )
        .await
        .expect("provider id set");
    session
        .metal3_machines()
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true},
                "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}})),
        )
        .await
        .expect("provisioned");
    let status = eventually("the providerID and a Provisioned phase", || async {
        let machine = session.machines().get(&name).await.expect("machine");
        let status = serde_json::to_value(&machine.status).expect("status");
        (machine.spec.provider_id.as_deref() == Some(provider_id.as_str())
            && status["phase"] == "Provisioned")
            .then_some(status)
    })
    .await;
    assert_eq!(status["addresses"][0]["address"], "192.0.2.10");
    assert_eq!(status["initialization"]["infrastructureProvisioned"], true);

    // The provider holds its own finalizer until the host is deprovisioned: the Machine must
    // wait for the Metal3Machine to be gone.
    session
        .metal3_machines()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["metal3machine.infrastructure.cluster.x-k8s.io"]}})),
        )
        .await
        .expect("provider finalizer");
    session.scale(0).await;
    eventually("the metal3machine marked for deletion", || async {
        let object = session
            .metal3_machines()
            .get(&name)
            .await
            .expect("still there");
        object.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = session
        .machines()
        .get(&name)
        .await
        .expect("machine waits for its infrastructure");
    assert!(waiting.metadata.deletion_timestamp.is_some());

    session
        .metal3_machines()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("provider releases");
    eventually("the machine gone", || absent(session.machines(), &name)).await;
    assert!(
        secrets
            .get_opt(&format!("{name}-bootstrap"))
            .await
            .expect("read")
            .is_none()
    );
    let scale = eventually("status replicas 0", || async {
        let scale = sets.get_scale("workers").await.expect("scale");
        scale
            .status
            .as_ref()
            .is_some_and(|s| s.replicas == 0)
            .then_some(scale)
    })
    .await;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(0));
    session.stop().await;
}

#[tokio::test]
async fn scale_down_removes_annotated_machines_first() {
    let session = Session::start().await;
    session.scale(3).await;
    let machines = eventually("three machines", || async {
        let list = machine_list(&session).await;
        (list.len() == 3).then_some(list)
    })
    .await;
    let chosen = machines
        .iter()
        .map(ResourceExt::name_any)
        .max()
        .expect("a machine");
    session
        .machines()
        .patch(
            &chosen,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {capi::DELETE_MACHINE_ANNOTATION: "yes"}}}),
            ),
        )
        .await
        .expect("annotated");

    session.scale(2).await;
    eventually("the annotated machine gone", || async {
        let names: Vec<String> = machine_list(&session)
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        (names.len() == 2 && !names.contains(&chosen)).then_some(())
    })
    .await;
    eventually("its metal3machine gone", || {
        absent(session.metal3_machines(), &chosen)
    })
    .await;
    session.stop().await;
}
