//! HostClaim, the front door without Cluster API, through the same claim engine: selection
//! with `DoesNotExist`, provisioning, a claim waiting for a host, and release on deletion.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    ConsumerWatch, IMAGE, Lab, NAMESPACE, bound_host, eventually, host_claim_spec, quick_settings,
    state_of, wait_for,
};
use ingot_api::metal3::{HostClaim, ProvisioningState};
use ingot_machines::Selectors;
use ingot_machines::hostclaim::{ASSOCIATED, READY};
use ingot_machines::metal3machine::WAITING_FOR_AVAILABLE_HOST;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};

fn condition(claim: &HostClaim, kind: &str) -> Option<(String, String, String)> {
    let conditions = claim.status.as_ref()?.conditions.as_ref()?;
    let found = conditions
        .iter()
        .find(|condition| condition.type_ == kind)?;
    Some((
        found.status.clone(),
        found.reason.clone(),
        found.message.clone(),
    ))
}

async fn delete_claim(claims: &Api<HostClaim>, name: &str) {
    let uid = claims
        .get(name)
        .await
        .expect("claim")
        .uid()
        .unwrap_or_default();
    claims
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete claim");
    let gone = await_condition(claims.clone(), name, conditions::is_deleted(&uid));
    tokio::time::timeout(common::WAIT, gone)
        .await
        .expect("claim deleted in time")
        .expect("watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_claims_select_provision_wait_and_release() {
    let mut lab = Lab::start().await;
    lab.hosts_available(4, |index| {
        let mut labels = BTreeMap::from([("role".to_owned(), "worker".to_owned())]);
        if index == 3 {
            labels.insert("retired".to_owned(), "2026".to_owned());
        }
        labels
    })
    .await;
    lab.start_controllers(Selectors::default(), quick_settings())
        .await;
    let double = lab.start_host_double();
    let watch = ConsumerWatch::start(&lab.client).await;
    let claims: Api<HostClaim> = Api::namespaced(lab.client.clone(), NAMESPACE);

    for name in ["site-a", "site-b", "site-c"] {
        claims
            .create(
                &PostParams::default(),
                &HostClaim::new(name, host_claim_spec()),
            )
            .await
            .expect("create claim");
    }
    let mut bound = BTreeMap::new();
    for name in ["site-a", "site-b", "site-c"] {
        let ready = wait_for(&claims, name, "claim ready", |claim| {
            condition(claim, READY).is_some_and(|(status, _, _)| status == "True")
        })
        .await;
        let host_name = bound_host(&ready).expect("bound host");
        let host = lab.hosts().get(&host_name).await.expect("host");
        assert_eq!(state_of(&host), ProvisioningState::Provisioned);
        assert_eq!(
            host.spec.image.as_ref().map(|image| image.url.as_str()),
            Some(IMAGE)
        );
        assert_eq!(
            host.spec
                .user_data
                .as_ref()
                .and_then(|secret| secret.namespace.as_deref()),
            Some(NAMESPACE)
        );
        assert_eq!(
            ready.status.as_ref().and_then(|status| status.powered_on),
            Some(true)
        );
        bound.insert(name, host_name);
    }
    let used: BTreeSet<&String> = bound.values().collect();
    assert_eq!(used.len(), 3, "{bound:?}");
    assert!(
        !used.contains(&"host-03".to_owned()),
        "a retired host is never chosen: {bound:?}"
    );

    claims
        .create(
            &PostParams::default(),
            &HostClaim::new("site-d", host_claim_spec()),
        )
        .await
        .expect("create claim");
    let waiting = wait_for(&claims, "site-d", "claim waiting", |claim| {
        condition(claim, ASSOCIATED)
            .is_some_and(|(_, reason, _)| reason == WAITING_FOR_AVAILABLE_HOST)
    })
    .await;
    let (_, _, message) = condition(&waiting, ASSOCIATED).unwrap_or_default();
    assert_eq!(
        message,
        "no available host among 4: 1 not matching the host selector, 3 claimed by other consumers"
    );

    delete_claim(&claims, "site-b").await;
    let taken_over = wait_for(&claims, "site-d", "waiting claim served", |claim| {
        condition(claim, READY).is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    assert_eq!(bound_host(&taken_over).as_ref(), Some(&bound["site-b"]));

    for name in ["site-a", "site-c", "site-d"] {
        delete_claim(&claims, name).await;
    }
    eventually("every host free again", || async {
        let hosts = lab
            .hosts()
            .list(&ListParams::default())
            .await
            .expect("hosts")
            .items;
        hosts.iter().all(|host| {
            host.spec.consumer_ref.is_none() && state_of(host) == ProvisioningState::Available
        })
    })
    .await;

    assert_eq!(
        double.provisionings().len(),
        4,
        "{:?}",
        double.provisionings()
    );
    let history = watch.finish();
    let consumers = |host: &str| history.get(host).cloned().unwrap_or_default();
    assert_eq!(
        consumers(&bound["site-b"]),
        [
            None,
            Some("HostClaim/site-b".to_owned()),
            None,
            Some("HostClaim/site-d".to_owned()),
            None
        ],
        "the freed host was cleaned and unclaimed before the waiting claim took it"
    );
    lab.stop().await;
}
