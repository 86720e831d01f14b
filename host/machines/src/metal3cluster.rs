//! The Metal3Cluster controller: the infrastructure of a workload cluster is ready once its
//! control-plane endpoint is valid; a Metal3Cluster being deleted waits until none of its
//! Metal3Machines is left.

use std::sync::Arc;

use futures::StreamExt;
use ingot_api::capm3::v1beta1::{Metal3Cluster, Metal3ClusterStatus, Metal3Machine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};

use crate::conditions::{self, Desired, Severity};
use crate::hostspec::CLUSTER_NAME_LABEL;
use crate::metal3machine::{Context, Error, bounded};
use crate::objects::{add_finalizer, remove_finalizer, write_status};

/// Finalizer on every Metal3Cluster, released once its machines are gone.
pub const FINALIZER: &str = "metal3cluster.infrastructure.cluster.x-k8s.io";
/// Condition: the infrastructure is ready.
pub const INFRASTRUCTURE_READY: &str = "BaremetalInfrastructureReady";
/// Reason: the control-plane endpoint is missing or invalid.
pub const INVALID_ENDPOINT: &str = "InvalidControlPlaneEndpoint";

fn api_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api { action, source }
}

/// Why the endpoint cannot be used, if it cannot.
fn endpoint_problem(cluster: &Metal3Cluster) -> Option<String> {
    let Some(endpoint) = &cluster.spec.control_plane_endpoint else {
        return Some("spec.controlPlaneEndpoint is not set".to_owned());
    };

    if endpoint.host.as_deref().is_none_or(str::is_empty) {
        Some("spec.controlPlaneEndpoint.host is empty".to_owned())
    } else if !endpoint
        .port
        .is_some_and(|port| (1..=65535).contains(&port))
    {
        Some(format!(
            "spec.controlPlaneEndpoint.port {:?} is not between 1 and 65535",
            endpoint.port
        ))
    } else {
        None
    }
}

/// Reconciles one Metal3Cluster.
pub async fn reconcile(cluster: Arc<Metal3Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<Metal3Cluster> = Api::namespaced(ctx.client.clone(), &namespace);

    if cluster.metadata.deletion_timestamp.is_some() {
        return delete(&api, &cluster, &ctx).await;
    }
    add_finalizer(&api, cluster.as_ref(), FINALIZER)
        .await
        .map_err(api_error("adding the Metal3Cluster finalizer"))?;

    let mut status = cluster.status.clone().unwrap_or_default();
    let desired = match endpoint_problem(&cluster) {
        None => Desired::ok(INFRASTRUCTURE_READY),
        Some(problem) => Desired::not(
            INFRASTRUCTURE_READY,
            INVALID_ENDPOINT,
            Severity::Error,
            problem,
        ),
    };
    status.ready = Some(desired.ok);
    conditions::set_v1beta1(&mut status.conditions, &desired);
    conditions::set_v1beta1(&mut status.conditions, &ready_summary(&desired));
    status.last_updated = Some(Time(jiff::Timestamp::now()));

    write(&api, &cluster, &status).await?;
    Ok(Action::await_change())
}

fn ready_summary(infrastructure: &Desired) -> Desired {
    Desired {
        kind: "Ready",
        ..infrastructure.clone()
    }
}

async fn write(
    api: &Api<Metal3Cluster>,
    cluster: &Metal3Cluster,
    status: &Metal3ClusterStatus,
) -> Result<(), Error> {
    write_status(api, &cluster.name_any(), cluster.status.as_ref(), status)
        .await
        .map_err(api_error("writing Metal3Cluster status"))
        .map(drop)
}

async fn delete(
    api: &Api<Metal3Cluster>,
    cluster: &Metal3Cluster,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let machines: Api<Metal3Machine> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{CLUSTER_NAME_LABEL}={}", cluster.name_any());
    let left = machines
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error("listing the cluster's Metal3Machines"))?
        .items
        .len();

    if left > 0 {
        tracing::info!(cluster = %cluster.name_any(), left, "waiting for Metal3Machines to go");
        return Ok(Action::requeue(ctx.settings.poll_host));
    }
    remove_finalizer(api, cluster, FINALIZER)
        .await
        .map_err(api_error("removing the Metal3Cluster finalizer"))?;
    Ok(Action::await_change())
}

fn error_policy(cluster: Arc<Metal3Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        return Action::requeue(ctx.settings.retry);
    }
    tracing::warn!(cluster = %cluster.name_any(), error = %error, "Metal3Cluster reconcile failed");
    Action::requeue(ctx.settings.retry)
}

/// Runs the Metal3Cluster controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let clusters: Api<Metal3Cluster> = Api::all(ctx.client.clone());
    let machines: Api<Metal3Machine> = Api::all(ctx.client.clone());

    Controller::new(clusters, watcher::Config::default())
        .watches(machines, watcher::Config::default(), |machine| {
            let name = machine.labels().get(CLUSTER_NAME_LABEL)?.clone();
            Some(
                kube::runtime::reflector::ObjectRef::new(&name)
                    .within(&machine.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(shutdown)
        .run(
            |object, ctx| async move { bounded(&ctx.clone(), reconcile(object, ctx)).await },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_api::capm3::ApiEndpoint;
    use ingot_api::capm3::v1beta1::Metal3ClusterSpec;

    fn cluster(host: Option<&str>, port: Option<i32>) -> Metal3Cluster {
        Metal3Cluster::new(
            "c",
            Metal3ClusterSpec {
                control_plane_endpoint: Some(ApiEndpoint {
                    host: host.map(Into::into),
                    port,
                }),
                ..Metal3ClusterSpec::default()
            },
        )
    }

    #[test]
    fn endpoint_needs_a_host_and_a_port() {
        assert_eq!(
            endpoint_problem(&cluster(Some("192.0.2.1"), Some(6443))),
            None
        );
        assert!(endpoint_problem(&cluster(None, Some(6443))).is_some_and(|p| p.contains("host")));
        assert!(
            endpoint_problem(&cluster(Some("api"), Some(0))).is_some_and(|p| p.contains("port"))
        );
        assert!(endpoint_problem(&Metal3Cluster::new("c", Metal3ClusterSpec::default())).is_some());
    }
}
