//! Leader election over a Lease on the embedded API server.

use std::time::Duration;

use ingot_apiserver::ApiServerBuilder;
use ingot_operator::leader::LeaderElection;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_candidate_leads_and_the_lease_passes_on_release_or_expiry() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = ApiServerBuilder::new(dir.path())
        .start()
        .await
        .expect("start API server");
    let client = server.client().await.expect("client");
    let lease = Duration::from_secs(2);
    let first = LeaderElection::new(client.clone(), "default", "ingot-operator", "first", lease);
    let second = LeaderElection::new(client.clone(), "default", "ingot-operator", "second", lease);

    assert!(first.try_acquire().await.expect("first tries"));
    assert!(!second.try_acquire().await.expect("second tries"));
    assert!(first.try_acquire().await.expect("first renews"));

    first.release().await.expect("release");
    assert!(
        second
            .try_acquire()
            .await
            .expect("second takes the released lease")
    );
    assert!(!first.try_acquire().await.expect("first is now refused"));

    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    assert!(
        first
            .try_acquire()
            .await
            .expect("first takes the expired lease")
    );

    let leases: Api<Lease> = Api::namespaced(client, "default");
    let spec = leases
        .get("ingot-operator")
        .await
        .expect("lease")
        .spec
        .unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("first"));
    assert_eq!(spec.lease_transitions, Some(2));
}
