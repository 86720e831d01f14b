//! The Metal3Machine controller against the embedded API server, with the tests playing
//! Cluster API core (Machines and Metal3Machines per replica) and a host controller double.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    CLUSTER, ConsumerWatch, IMAGE, Lab, NAMESPACE, consumer_of, machine_spec, quick_settings,
    state_of, wait_for,
};
use ingot_api::capi::v1beta1::Cluster;
use ingot_api::metal3::ProvisioningState;
use ingot_machines::Selectors;
use ingot_machines::metal3machine::HOST_ANNOTATION;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

async fn lab_with_hosts(hosts: usize) -> (Lab, common::HostDouble) {
    let mut lab = Lab::start().await;
    lab.hosts_available(hosts, |_| BTreeMap::new()).await;
    lab.cluster().await;
    lab.start_controllers(Selectors::default(), quick_settings())
        .await;
    let double = lab.start_host_double();
    lab.cluster_infrastructure_ready().await;
    (lab, double)
}

async fn free_hosts(lab: &Lab) -> usize {
    let hosts = lab
        .hosts()
        .list(&ListParams::default())
        .await
        .expect("list hosts")
        .items;
    hosts
        .iter()
        .filter(|host| {
            host.spec.consumer_ref.is_none()
                && host.spec.image.is_none()
                && state_of(host) == ProvisioningState::Available
                && host.labels().get("cluster.x-k8s.io/cluster-name").is_none()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_and_down_provisions_then_cleans_hosts() {
    let (lab, double) = lab_with_hosts(4).await;
    let watch = ConsumerWatch::start(&lab.client).await;

    for replica in ["worker-a", "worker-b", "worker-c"] {
        lab.add_replica(replica, machine_spec()).await;
    }
    let mut provider_ids = BTreeMap::new();
    for replica in ["worker-a", "worker-b", "worker-c"] {
        provider_ids.insert(replica, lab.copy_provider_id(replica).await);
    }

    let used: BTreeSet<String> = provider_ids
        .values()
        .map(|id| id.split('/').nth(3).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(used.len(), 3, "three distinct hosts: {provider_ids:?}");
    for (replica, id) in &provider_ids {
        let host_name = id.split('/').nth(3).unwrap_or_default();
        assert_eq!(*id, format!("metal3://{NAMESPACE}/{host_name}/{replica}"));
        let host = lab.hosts().get(host_name).await.expect("host");
        assert_eq!(
            host.spec.image.as_ref().map(|image| image.url.as_str()),
            Some(IMAGE)
        );
        assert_eq!(
            host.spec
                .user_data
                .as_ref()
                .and_then(|secret| secret.name.clone()),
            Some(format!("{replica}-bootstrap"))
        );
        assert!(host.spec.online);
        assert_eq!(
            host.labels()
                .get("cluster.x-k8s.io/cluster-name")
                .map(String::as_str),
            Some(CLUSTER)
        );

        let machine = lab
            .metal3machines()
            .get(replica)
            .await
            .expect("Metal3Machine");
        assert_eq!(
            machine.annotations().get(HOST_ANNOTATION),
            Some(&format!("{NAMESPACE}/{host_name}"))
        );
        let addresses = machine
            .status
            .and_then(|status| status.addresses)
            .unwrap_or_default();
        assert!(
            addresses
                .iter()
                .any(|a| a.address_type == "InternalIP" && a.address.starts_with("192.0.2.")),
            "{addresses:?}"
        );
        assert!(
            addresses.iter().any(|a| a.address_type == "Hostname"),
            "{addresses:?}"
        );
        let owner = lab.machines().get(replica).await.expect("Machine");
        assert_eq!(owner.spec.provider_id.as_deref(), Some(id.as_str()));
    }
    assert_eq!(free_hosts(&lab).await, 1);

    for replica in ["worker-b", "worker-c"] {
        let host_name = provider_ids[replica]
            .split('/')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        let deleting = lab.delete_replica_observing(replica, &host_name);
        let saw_deprovisioning_while_machine_existed = deleting.await;
        assert!(
            saw_deprovisioning_while_machine_existed,
            "{replica} stayed until {host_name} was clean"
        );

        let host = lab.hosts().get(&host_name).await.expect("host");
        assert_eq!(
            state_of(&host),
            ProvisioningState::Available,
            "{host_name} back to available"
        );
        assert_eq!(
            (
                host.spec.consumer_ref.clone(),
                host.spec.image.clone(),
                host.spec.online
            ),
            (None, None, false)
        );
    }
    assert_eq!(free_hosts(&lab).await, 3);

    lab.delete_replica("worker-a").await;
    let hosts = lab
        .hosts()
        .list(&ListParams::default())
        .await
        .expect("hosts")
        .items;
    let summary: Vec<_> = hosts
        .iter()
        .map(|h| {
            (
                h.name_any(),
                state_of(h),
                consumer_of(h),
                h.spec.image.is_some(),
                h.labels().clone(),
            )
        })
        .collect();
    assert_eq!(free_hosts(&lab).await, 4, "{summary:?}");

    let provisionings = double.provisionings();
    assert_eq!(
        provisionings.len(),
        3,
        "three hosts imaged, once each: {provisionings:?}"
    );
    let history = watch.finish();
    for host in used {
        assert_eq!(
            history
                .get(&host)
                .and_then(|changes| changes.last().cloned()),
            Some(None),
            "{host} released"
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_finished_claim_is_completed_on_the_same_host() {
    let (lab, _double) = lab_with_hosts(3).await;
    let patch = json!({ "spec": { "consumerRef": {
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "Metal3Machine",
        "name": "resumed",
        "namespace": NAMESPACE,
    }}});
    lab.hosts()
        .patch("host-02", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("pre-claim");

    lab.add_replica("resumed", machine_spec()).await;
    let id = lab.copy_provider_id("resumed").await;

    assert_eq!(id, format!("metal3://{NAMESPACE}/host-02/resumed"));
    assert_eq!(free_hosts(&lab).await, 2);
    lab.stop().await;
}

/// Two controller instances claiming for one machine at once, with a third deploying to each
/// host before its claimant could hand it back, leave the machine named by two deployed hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_left_holding_two_hosts_keeps_one_and_cleans_the_other() {
    let mut lab = Lab::start().await;
    lab.hosts_available(3, |_| BTreeMap::new()).await;
    lab.cluster().await;
    let claimed_and_deployed = json!({ "spec": {
        "consumerRef": {
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "Metal3Machine",
            "name": "doubled",
            "namespace": NAMESPACE,
        },
        "image": { "url": IMAGE },
        "online": true,
    }});
    for host in ["host-02", "host-01"] {
        lab.hosts()
            .patch(
                host,
                &PatchParams::default(),
                &Patch::Merge(&claimed_and_deployed),
            )
            .await
            .expect("doubled claim");
    }
    let provisioned = json!({ "status": { "provisioning": { "state": "provisioned" } } });
    lab.hosts()
        .patch_status(
            "host-02",
            &PatchParams::default(),
            &Patch::Merge(&provisioned),
        )
        .await
        .expect("host-02 provisioned");
    lab.start_controllers(Selectors::default(), quick_settings())
        .await;
    let double = lab.start_host_double();
    lab.cluster_infrastructure_ready().await;

    lab.add_replica("doubled", machine_spec()).await;
    let id = lab.copy_provider_id("doubled").await;

    assert_eq!(id, format!("metal3://{NAMESPACE}/host-01/doubled"));
    wait_for(
        &lab.hosts(),
        "host-02",
        "the extra host cleaned and freed",
        |host| {
            host.spec.consumer_ref.is_none()
                && host.spec.image.is_none()
                && state_of(host) == ProvisioningState::Available
        },
    )
    .await;
    assert_eq!(free_hosts(&lab).await, 2);
    assert_eq!(
        double.provisionings(),
        [("host-01".to_owned(), "Metal3Machine/doubled".to_owned())]
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_the_cluster_pauses_the_host_and_resuming_lifts_only_our_pause() {
    let (lab, _double) = lab_with_hosts(1).await;
    lab.add_replica("paused", machine_spec()).await;
    lab.copy_provider_id("paused").await;

    let clusters: Api<Cluster> = Api::namespaced(lab.client.clone(), NAMESPACE);
    let pause = |paused: bool| json!({ "spec": { "paused": paused } });
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(&pause(true)),
        )
        .await
        .expect("pause");

    let host = wait_for(&lab.hosts(), "host-00", "host paused", |host| {
        host.annotations()
            .get("baremetalhost.metal3.io/paused")
            .map(String::as_str)
            == Some("metal3.io/capm3")
    })
    .await;
    let saved = host
        .annotations()
        .get("baremetalhost.metal3.io/status")
        .cloned()
        .unwrap_or_default();
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("status annotation is JSON");
    assert_eq!(saved["provisioning"]["state"], "provisioned");
    assert!(
        saved.get("hardware").is_none(),
        "hardware is left to HardwareData"
    );
    wait_for(
        &lab.metal3machines(),
        "paused",
        "Paused condition",
        |machine| {
            let conditions = machine
                .status
                .as_ref()
                .and_then(|s| s.v1beta2.as_ref())
                .and_then(|v| v.conditions.clone())
                .unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Paused" && c.status == "True")
        },
    )
    .await;

    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(&pause(false)),
        )
        .await
        .expect("resume");
    wait_for(&lab.hosts(), "host-00", "host resumed", |host| {
        !host
            .annotations()
            .contains_key("baremetalhost.metal3.io/paused")
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_a_terminal_failure_without_claiming() {
    let (lab, _double) = lab_with_hosts(1).await;
    let mut spec = machine_spec();
    spec.host_selector = Some(ingot_api::selector::HostSelector {
        match_labels: None,
        match_expressions: Some(vec![ingot_api::selector::HostSelectorRequirement {
            key: "rack".into(),
            operator: "Near".into(),
            values: Some(vec!["a".into()]),
        }]),
    });
    lab.add_replica("broken", spec).await;

    let machine = wait_for(
        &lab.metal3machines(),
        "broken",
        "failure reported",
        |machine| {
            machine
                .status
                .as_ref()
                .and_then(|status| status.failure_reason.clone())
                .is_some()
        },
    )
    .await;
    let status = machine.status.unwrap_or_default();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("InvalidConfiguration")
    );
    assert!(
        status
            .failure_message
            .unwrap_or_default()
            .contains("unknown operator \"Near\"")
    );
    assert_eq!(free_hosts(&lab).await, 1);
    lab.stop().await;
}
