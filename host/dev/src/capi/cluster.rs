//! Cluster: marks the infrastructure provisioned once its Metal3Cluster says so, which is what
//! the Metal3Machine controller waits for before claiming hosts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ingot_api::capi::v1beta2::Cluster;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::Error;

fn metal3_cluster_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        ingot_api::CAPM3_GROUP,
        "v1beta2",
        "Metal3Cluster",
    ))
}

pub async fn run(
    client: Arc<Client>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let clusters: Api<Cluster> = Api::all((*client).clone());
    Controller::new(clusters, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, client)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error, "cluster stand-in event");
            }
        })
        .await;
}

fn error_policy(cluster: Arc<Cluster>, error: &Error, _client: Arc<Client>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), error = %error, "cluster reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(cluster: Arc<Cluster>, client: Arc<Client>) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let Some(reference) = cluster.spec.infrastructure_ref.as_ref() else {
        return Ok(Action::await_change());
    };
    let infrastructure: Api<DynamicObject> =
        Api::namespaced_with((*client).clone(), &namespace, &metal3_cluster_resource());
    let object = infrastructure
        .get_opt(&reference.name)
        .await
        .map_err(Error::api(
            "read",
            "Metal3Cluster",
            &namespace,
            &reference.name,
        ))?;
    let provisioned = object.is_some_and(|o| {
        let status = &o.data["status"];
        status["initialization"]["provisioned"] == json!(true) || status["ready"] == json!(true)
    });
    let recorded = cluster
        .status
        .as_ref()
        .and_then(|s| s.initialization.as_ref())
        .and_then(|i| i.infrastructure_provisioned)
        == Some(true);
    if provisioned && !recorded {
        let status = json!({"status": {
            "initialization": {"infrastructureProvisioned": true},
            "phase": "Provisioned",
        }});
        Api::<Cluster>::namespaced((*client).clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(Error::api(
                "write the status of",
                "Cluster",
                &namespace,
                &name,
            ))?;
        tracing::info!(cluster = %name, "cluster infrastructure provisioned");
    }
    Ok(Action::requeue(Duration::from_secs(2)))
}
