//! The Metal3Machine controller: the Cluster API infrastructure provider contract (v1beta1)
//! on top of the claim engine.
//!
//! # Reconcile order
//!
//! 1. A Metal3Machine being deleted releases its host ([`crate::hostspec`]) and only then
//!    drops its finalizer, so its Machine stays in deletion until the host is clean.
//! 2. Nothing happens until Cluster API has set the owner Machine.
//! 3. The Cluster (from the Machine) must exist. While it is paused (a `clusterctl move`) the
//!    held host is paused too, with its status saved in an annotation, and nothing else runs.
//! 4. Add the finalizer; copy the Machine's failure domain.
//! 5. Check the spec (image or custom deploy, selector, same-namespace Secrets): a broken spec
//!    is the one terminal failure (`failureReason: InvalidConfiguration`).
//! 6. Wait for the Cluster's infrastructure, its Metal3Cluster and the bootstrap data.
//! 7. Hold a host: the one whose `consumerRef` names this machine, or a newly claimed one.
//!    "No host" is a waiting condition, never a failure.
//! 8. Write image, checksum, user data (the bootstrap Secret), meta and network data and power
//!    on the host.
//! 9. Report addresses from the host's HardwareData; once the host is provisioned set
//!    `providerID` (`metal3://<namespace>/<host>/<metal3machine>`) and `ready`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ingot_api::capi::v1beta1::{Cluster, Machine};
use ingot_api::capm3::v1beta1::{
    Metal3Cluster, Metal3Machine, Metal3MachineStatus, Metal3MachineTemplate,
};
use ingot_api::capm3::{MachineAddress, V1Beta1Condition};
use ingot_api::metal3::{
    BareMetalHost, CustomDeploy, HardwareData, HardwareDetails, Image, ProvisioningState,
};
use ingot_api::{CAPI_GROUP, CAPM3_GROUP};
use ingot_operator::turns::Turns;
use k8s_openapi::api::core::v1::{ObjectReference, SecretReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::claim::{
    Claim, ClaimEngine, ClaimError, ClaimRequest, Releasing, consumers_to_wake, patch_params,
};
use crate::conditions::{self, Desired, Severity};
use crate::eligibility::{Consumer, PAUSED_ANNOTATION, Wanted, state};
use crate::hostspec::{
    CLUSTER_NAME_LABEL, Deployment, PAUSED_BY_MACHINE_LOOP, ReleaseOptions, Reservation,
    deployment_patch,
};
use crate::labels::{LabelQuery, SelectorError};
use crate::objects::{add_finalizer, remove_finalizer, write_status};

/// Finalizer on every Metal3Machine, released once its host is clean.
pub const FINALIZER: &str = "metal3machine.infrastructure.cluster.x-k8s.io";
/// Annotation naming the held host as `<namespace>/<name>`; a cache of the host's
/// `consumerRef`, which stays the authority.
pub const HOST_ANNOTATION: &str = "metal3.io/BareMetalHost";
/// Annotation pausing one Cluster API object.
pub const CAPI_PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// Annotation holding a paused host's status, so the host can be moved with it.
pub const HOST_STATUS_ANNOTATION: &str = "baremetalhost.metal3.io/status";
/// Annotation naming the template a Metal3Machine was cloned from.
pub const CLONED_FROM_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-name";
/// Machine label naming its control plane.
pub const CONTROL_PLANE_NAME_LABEL: &str = "cluster.x-k8s.io/control-plane-name";
/// Machine label naming its MachineDeployment.
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";

/// Condition: a host is held.
pub const ASSOCIATE_BMH: &str = "AssociateBMH";
/// Condition: the held host is provisioned.
pub const HOST_PROVISIONED: &str = "BareMetalHostProvisioned";
/// Condition: summary.
pub const READY: &str = "Ready";
/// Standard condition: reconciliation is paused.
pub const PAUSED: &str = "Paused";

/// Reason: the Cluster's infrastructure is not ready yet.
pub const WAITING_FOR_CLUSTER_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructure";
/// Reason: the Metal3Cluster does not exist yet.
pub const WAITING_FOR_METAL3_CLUSTER: &str = "WaitingForMetal3Cluster";
/// Reason: the Machine has no bootstrap data yet.
pub const WAITING_FOR_BOOTSTRAP_DATA: &str = "WaitingForBootstrapData";
/// Reason: no host can be claimed now.
pub const WAITING_FOR_AVAILABLE_HOST: &str = "WaitingForAvailableHost";
/// Reason: the held host is not provisioned yet.
pub const WAITING_FOR_HOST_PROVISIONING: &str = "WaitingForHostProvisioning";
/// Reason: the spec can never be satisfied.
pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
/// Reason: the host is being deprovisioned for deletion.
pub const DELETING: &str = "Deleting";
/// Reason: the host the machine was running on is gone.
pub const HOST_LOST: &str = "HostLost";

/// Tunables of the machine controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a machine waiting for a free host sleeps before looking again (hosts freed
    /// in its namespace also wake it).
    pub wait_for_host: Duration,
    /// How often a machine checks on a host that is provisioning or deprovisioning.
    pub poll_host: Duration,
    /// Retry delay after a failure or a lost write race.
    pub retry: Duration,
    /// Keep released hosts powered on (see [`ReleaseOptions::fast_track`]).
    pub fast_track: bool,
    /// Reconciles running at once per controller.
    pub workers: u16,
    /// Longest one reconcile may take before it is abandoned and retried, so that a request
    /// the API server never answers cannot wedge an object.
    pub reconcile_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            wait_for_host: Duration::from_secs(30),
            poll_host: Duration::from_secs(10),
            retry: Duration::from_secs(5),
            fast_track: false,
            workers: 8,
            reconcile_timeout: Duration::from_secs(60),
        }
    }
}

/// Failures of one reconcile; all transient (the error policy retries).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} failed")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Client error.
        #[source]
        source: kube::Error,
    },
    /// The claim engine failed.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The reconcile took longer than [`Settings::reconcile_timeout`].
    #[error("the reconcile did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Waits for a turn (kube's own concurrency bound starves objects when saturated; see
/// [`Turns`]), then runs `reconcile` on `object` within [`bounded`]. The reconcile future is
/// only allocated once the turn is there, so each object waiting costs little.
pub async fn in_turn<K, R, F>(
    turns: Turns,
    ctx: Arc<Context>,
    object: Arc<K>,
    reconcile: R,
) -> Result<Action, Error>
where
    R: FnOnce(Arc<K>, Arc<Context>) -> F,
    F: Future<Output = Result<Action, Error>>,
{
    let Some(_turn) = turns.take().await else {
        return Ok(Action::await_change());
    };
    bounded(&ctx.clone(), Box::pin(reconcile(object, ctx))).await
}

/// Runs `reconcile` under the context's reconcile timeout.
pub async fn bounded(
    ctx: &Context,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let limit = ctx.settings.reconcile_timeout;
    tokio::time::timeout(limit, reconcile)
        .await
        .unwrap_or(Err(Error::TimedOut(limit)))
}

impl Error {
    /// Whether the failure was a lost write race (another writer changed the object first):
    /// normal contention, retried quickly and logged quietly.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if crate::claim::lost_race(source))
    }
}

fn api_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api { action, source }
}

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Claims hosts.
    pub engine: ClaimEngine,
    /// Tunables.
    pub settings: Settings,
}

/// Everything a reconcile learned, and the status it is building.
struct Pass {
    machine: Arc<Metal3Machine>,
    api: Api<Metal3Machine>,
    namespace: String,
    consumer: Consumer,
    status: Metal3MachineStatus,
}

impl Pass {
    /// Merge-patches the Metal3Machine itself (spec or metadata, never status).
    async fn patch(&self, patch: &serde_json::Value, action: &'static str) -> Result<(), Error> {
        self.api
            .patch(
                &self.machine.name_any(),
                &patch_params(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(api_error(action))
            .map(drop)
    }

    fn condition(&mut self, desired: Desired) {
        conditions::set_v1beta1(&mut self.status.conditions, &desired);
    }

    /// Sets the summary from the other conditions and writes the status if it changed.
    async fn finish(mut self, action: Action) -> Result<Action, Error> {
        let blocking = self
            .status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.condition_type != READY && condition.status != "True")
            .cloned();
        let summary = match blocking {
            Some(condition) => summary_from(&condition),
            None => Desired::ok(READY),
        };
        self.condition(summary);
        self.status.last_updated = Some(Time(jiff::Timestamp::now()));

        let old = self.machine.status.as_ref();
        write_status(&self.api, &self.machine.name_any(), old, &self.status)
            .await
            .map_err(api_error("writing Metal3Machine status"))?;
        Ok(action)
    }
}

fn summary_from(condition: &V1Beta1Condition) -> Desired {
    let severity = match condition.severity.as_deref() {
        Some("Error") => Severity::Error,
        Some("Warning") => Severity::Warning,
        _ => Severity::Info,
    };
    let reason = condition.reason.as_deref().unwrap_or("NotReady");
    Desired::not(
        READY,
        reason,
        severity,
        condition.message.clone().unwrap_or_default(),
    )
}

/// The consumer identity of a Metal3Machine.
pub fn consumer(machine: &Metal3Machine) -> Consumer {
    Consumer {
        group: CAPM3_GROUP.to_owned(),
        api_version: Metal3Machine::api_version(&()).into_owned(),
        kind: Metal3Machine::kind(&()).into_owned(),
        namespace: machine.namespace().unwrap_or_default(),
        name: machine.name_any(),
        uid: machine.uid(),
    }
}

/// Reconciles one Metal3Machine.
pub async fn reconcile(machine: Arc<Metal3Machine>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let mut pass = Pass {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        consumer: consumer(&machine),
        status: machine.status.clone().unwrap_or_default(),
        machine,
        namespace,
    };

    if pass.machine.meta().deletion_timestamp.is_some() {
        return delete(pass, &ctx).await;
    }

    let Some(owner) = owner_machine(&pass, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let Some(cluster) = cluster_of(&pass, &owner, &ctx).await? else {
        pass.condition(Desired::not(
            ASSOCIATE_BMH,
            WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            Severity::Info,
            "the Cluster does not exist yet",
        ));
        return pass
            .finish(Action::requeue(ctx.settings.wait_for_host))
            .await;
    };

    if is_paused(&pass.machine, &cluster) {
        return pause(pass, &cluster, &ctx).await;
    }
    conditions::set_standard(
        &mut pass
            .status
            .v1beta2
            .get_or_insert_with(Default::default)
            .conditions,
        &Desired::not(PAUSED, "NotPaused", Severity::Info, ""),
        pass.machine.metadata.generation,
    );

    add_finalizer(&pass.api, pass.machine.as_ref(), FINALIZER)
        .await
        .map_err(api_error("adding the Metal3Machine finalizer"))?;
    copy_failure_domain(&pass, &owner).await?;

    normal(pass, &owner, &cluster, &ctx).await
}

async fn normal(
    mut pass: Pass,
    owner: &Machine,
    cluster: &Cluster,
    ctx: &Context,
) -> Result<Action, Error> {
    let query = match check_spec(&pass.machine) {
        Ok(query) => query,
        Err(problem) => return invalid(pass, problem).await,
    };

    if let Some(wait) = prerequisites(&pass, owner, cluster, ctx).await? {
        pass.condition(wait);
        return pass
            .finish(Action::requeue(ctx.settings.wait_for_host))
            .await;
    }
    resolve_user_data(&mut pass, owner);

    let request = claim_request(&pass, owner, cluster, query);
    let host = match ctx.engine.claim(&request).await? {
        Claim::Held(host) => *host,
        Claim::Waiting(reason) => return wait_for_host(pass, reason, ctx).await,
    };
    pass.condition(Desired::ok(ASSOCIATE_BMH));
    record_host(&pass, &host).await?;
    let Some(host) = unpause_host(host, cluster, ctx).await? else {
        return pass.finish(Action::requeue(ctx.settings.retry)).await;
    };

    let Some(host) = deploy(&pass, host, ctx).await? else {
        return pass.finish(Action::requeue(ctx.settings.retry)).await;
    };
    report(pass, &host, ctx).await
}

/// A machine with no host: either still waiting for one, or it lost the host it ran on.
async fn wait_for_host(mut pass: Pass, reason: String, ctx: &Context) -> Result<Action, Error> {
    if pass.status.ready == Some(true) {
        let message =
            format!("the host this machine was provisioned on no longer names it: {reason}");
        pass.status.failure_reason = Some("UpdateError".to_owned());
        pass.status.failure_message = Some(message.clone());
        pass.condition(Desired::not(
            ASSOCIATE_BMH,
            HOST_LOST,
            Severity::Error,
            message,
        ));
        return pass.finish(Action::await_change()).await;
    }

    tracing::debug!(machine = %pass.consumer, %reason, "waiting for a host");
    pass.condition(Desired::not(
        ASSOCIATE_BMH,
        WAITING_FOR_AVAILABLE_HOST,
        Severity::Info,
        reason,
    ));
    pass.finish(Action::requeue(ctx.settings.wait_for_host))
        .await
}

async fn owner_machine(pass: &Pass, ctx: &Context) -> Result<Option<Machine>, Error> {
    let owner = pass.machine.owner_references().iter().find(|owner| {
        owner.kind == "Machine" && owner.api_version.split('/').next() == Some(CAPI_GROUP)
    });
    let Some(owner) = owner else {
        return Ok(None);
    };

    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), &pass.namespace);
    machines
        .get_opt(&owner.name)
        .await
        .map_err(api_error("reading the owner Machine"))
}

async fn cluster_of(pass: &Pass, owner: &Machine, ctx: &Context) -> Result<Option<Cluster>, Error> {
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &pass.namespace);

    clusters
        .get_opt(&owner.spec.cluster_name)
        .await
        .map_err(api_error("reading the Cluster"))
}

fn is_paused(machine: &Metal3Machine, cluster: &Cluster) -> bool {
    cluster.spec.paused == Some(true) || machine.annotations().contains_key(CAPI_PAUSED_ANNOTATION)
}

/// Pauses the held host while the cluster is paused, saving its status in an annotation so
/// that a move to another management cluster can restore it.
async fn pause(mut pass: Pass, cluster: &Cluster, ctx: &Context) -> Result<Action, Error> {
    let cluster_paused = cluster.spec.paused == Some(true);
    if cluster_paused && let Some(host) = ctx.engine.held(&pass.consumer).await? {
        pause_host(&host, ctx).await?;
    }

    conditions::set_standard(
        &mut pass
            .status
            .v1beta2
            .get_or_insert_with(Default::default)
            .conditions,
        &Desired::ok(PAUSED),
        pass.machine.metadata.generation,
    );
    pass.finish(Action::requeue(ctx.settings.wait_for_host))
        .await
}

async fn pause_host(host: &BareMetalHost, ctx: &Context) -> Result<(), Error> {
    if host.annotations().contains_key(PAUSED_ANNOTATION) {
        return Ok(());
    }

    let mut saved = serde_json::to_value(&host.status).unwrap_or_default();
    if let Some(saved) = saved.as_object_mut() {
        saved.remove("hardware");
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": host.resource_version(),
            "annotations": {
                PAUSED_ANNOTATION: PAUSED_BY_MACHINE_LOOP,
                HOST_STATUS_ANNOTATION: saved.to_string(),
            }
        }
    });
    ctx.engine
        .write(host, &patch)
        .await
        .map_err(api_error("pausing the host"))
        .map(drop)
}

/// Lifts a pause this loop set on the held host, when the host still serves this cluster;
/// `None` when the host changed meanwhile.
async fn unpause_host(
    host: BareMetalHost,
    cluster: &Cluster,
    ctx: &Context,
) -> Result<Option<BareMetalHost>, Error> {
    let paused_by_us = host
        .annotations()
        .get(PAUSED_ANNOTATION)
        .map(String::as_str)
        == Some(PAUSED_BY_MACHINE_LOOP);
    let same_cluster = host.labels().get(CLUSTER_NAME_LABEL) == Some(&cluster.name_any());
    if !(paused_by_us && same_cluster) {
        return Ok(Some(host));
    }

    let patch = json!({
        "metadata": {
            "resourceVersion": host.resource_version(),
            "annotations": { PAUSED_ANNOTATION: null }
        }
    });
    ctx.engine
        .write(&host, &patch)
        .await
        .map_err(api_error("unpausing the host"))
}

async fn copy_failure_domain(pass: &Pass, owner: &Machine) -> Result<(), Error> {
    if owner.spec.failure_domain.is_none()
        || owner.spec.failure_domain == pass.machine.spec.failure_domain
    {
        return Ok(());
    }

    let patch = json!({ "spec": { "failureDomain": owner.spec.failure_domain } });
    pass.patch(&patch, "copying the failure domain").await
}

/// Checks what no amount of waiting can fix.
fn check_spec(machine: &Metal3Machine) -> Result<LabelQuery, String> {
    let spec = &machine.spec;
    let namespace = machine.namespace().unwrap_or_default();

    let has_image = spec
        .image
        .as_ref()
        .is_some_and(|image| !image.url.is_empty());
    if !has_image && spec.custom_deploy.is_none() {
        return Err("spec.image.url or spec.customDeploy must be set".to_owned());
    }

    for (field, secret) in [
        ("spec.userData", &spec.user_data),
        ("spec.metaData", &spec.meta_data),
        ("spec.networkData", &spec.network_data),
    ] {
        let elsewhere = secret
            .as_ref()
            .and_then(|secret| secret.namespace.as_ref())
            .is_some_and(|ns| *ns != namespace);
        if elsewhere {
            return Err(format!(
                "{field} must name a Secret in the machine's namespace {namespace}"
            ));
        }
    }

    LabelQuery::compile(spec.host_selector.as_ref())
        .map_err(|error: SelectorError| error.to_string())
}

async fn invalid(mut pass: Pass, problem: String) -> Result<Action, Error> {
    tracing::warn!(machine = %pass.consumer, %problem, "invalid Metal3Machine");
    pass.status.failure_reason = Some(INVALID_CONFIGURATION.to_owned());
    pass.status.failure_message = Some(problem.clone());
    pass.condition(Desired::not(
        ASSOCIATE_BMH,
        INVALID_CONFIGURATION,
        Severity::Error,
        problem,
    ));
    pass.finish(Action::await_change()).await
}

/// The first unmet prerequisite for claiming, as the condition to show.
async fn prerequisites(
    pass: &Pass,
    owner: &Machine,
    cluster: &Cluster,
    ctx: &Context,
) -> Result<Option<Desired>, Error> {
    let waiting =
        |reason, message: &str| Some(Desired::not(ASSOCIATE_BMH, reason, Severity::Info, message));

    let infrastructure_ready = cluster
        .status
        .as_ref()
        .and_then(|status| status.infrastructure_ready)
        == Some(true);
    if !infrastructure_ready {
        return Ok(waiting(
            WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            "the Cluster's infrastructure is not ready",
        ));
    }

    let metal3_cluster = cluster
        .spec
        .infrastructure_ref
        .as_ref()
        .filter(|reference| reference.kind.as_deref() == Some("Metal3Cluster"))
        .and_then(|reference| reference.name.clone());
    let Some(metal3_cluster) = metal3_cluster else {
        return Ok(waiting(
            WAITING_FOR_METAL3_CLUSTER,
            "the Cluster names no Metal3Cluster",
        ));
    };
    let metal3_clusters: Api<Metal3Cluster> = Api::namespaced(ctx.client.clone(), &pass.namespace);
    let found = metal3_clusters
        .get_opt(&metal3_cluster)
        .await
        .map_err(api_error("reading the Metal3Cluster"))?;
    if found.is_none() {
        return Ok(waiting(
            WAITING_FOR_METAL3_CLUSTER,
            &format!("Metal3Cluster {metal3_cluster} does not exist"),
        ));
    }

    if bootstrap_secret(owner).is_none() {
        return Ok(waiting(
            WAITING_FOR_BOOTSTRAP_DATA,
            "the Machine's bootstrap data is not ready",
        ));
    }
    Ok(None)
}

/// The bootstrap data Secret, once the bootstrap provider is done: the Machine's
/// `dataSecretName`, or the Secret named like its config once that reports ready.
fn bootstrap_secret(owner: &Machine) -> Option<String> {
    let bootstrap = &owner.spec.bootstrap;
    if let Some(name) = &bootstrap.data_secret_name {
        return Some(name.clone());
    }

    let ready = owner
        .status
        .as_ref()
        .and_then(|status| status.bootstrap_ready)
        == Some(true);
    bootstrap
        .config_ref
        .as_ref()
        .filter(|_| ready)
        .and_then(|config| config.name.clone())
}

/// Settles which user data the host gets, once: the Machine's bootstrap data wins over
/// `spec.userData`.
fn resolve_user_data(pass: &mut Pass, owner: &Machine) {
    if pass.status.user_data.is_some() {
        return;
    }

    let name = bootstrap_secret(owner).or_else(|| {
        pass.machine
            .spec
            .user_data
            .as_ref()
            .and_then(|secret| secret.name.clone())
    });
    pass.status.user_data = name.map(|name| SecretReference {
        name: Some(name),
        namespace: Some(pass.namespace.clone()),
    });
    pass.status.meta_data = pass.machine.spec.meta_data.clone();
    pass.status.network_data = pass.machine.spec.network_data.clone();
}

fn claim_request(
    pass: &Pass,
    owner: &Machine,
    cluster: &Cluster,
    query: LabelQuery,
) -> ClaimRequest {
    ClaimRequest {
        consumer: pass.consumer.clone(),
        wanted: Wanted {
            query,
            reuse_group: reuse_group(owner),
        },
        labels: pass.machine.labels().clone(),
        failure_domain: pass
            .machine
            .spec
            .failure_domain
            .clone()
            .or_else(|| owner.spec.failure_domain.clone()),
        host_labels: BTreeMap::from([(CLUSTER_NAME_LABEL.to_owned(), cluster.name_any())]),
    }
}

/// The node-reuse group of a machine: `cp-<control plane>` or `md-<machine deployment>`.
fn reuse_group(owner: &Machine) -> Option<String> {
    let labels = owner.labels();

    labels
        .get(CONTROL_PLANE_NAME_LABEL)
        .map(|name| format!("cp-{name}"))
        .or_else(|| {
            labels
                .get(DEPLOYMENT_NAME_LABEL)
                .map(|name| format!("md-{name}"))
        })
}

/// Records the held host on the machine (a cache; the host's `consumerRef` is the truth).
async fn record_host(pass: &Pass, host: &BareMetalHost) -> Result<(), Error> {
    let value = format!("{}/{}", pass.namespace, host.name_any());
    if pass.machine.annotations().get(HOST_ANNOTATION) == Some(&value) {
        return Ok(());
    }

    let patch = json!({ "metadata": { "annotations": { HOST_ANNOTATION: value } } });
    pass.patch(&patch, "recording the host on the Metal3Machine")
        .await
}

/// Brings the host's spec to what the machine wants; `None` when the host changed meanwhile.
async fn deploy(
    pass: &Pass,
    host: BareMetalHost,
    ctx: &Context,
) -> Result<Option<BareMetalHost>, Error> {
    let spec = &pass.machine.spec;
    let deployment = Deployment {
        image: spec.image.as_ref().map(host_image),
        custom_deploy: spec.custom_deploy.clone().map(|deploy| CustomDeploy {
            method: deploy.method,
        }),
        user_data: pass.status.user_data.clone(),
        meta_data: pass.status.meta_data.clone(),
        network_data: pass.status.network_data.clone(),
        automated_cleaning_mode: spec.automated_cleaning_mode,
        online: true,
    };

    let Some(patch) = deployment_patch(&host, &deployment) else {
        return Ok(Some(host));
    };
    ctx.engine
        .write(&host, &patch)
        .await
        .map_err(api_error("writing the host spec"))
}

fn host_image(image: &ingot_api::capm3::v1beta1::Image) -> Image {
    let checksum_type = image
        .checksum_type
        .and_then(|kind| serde_json::from_value(json!(kind)).ok());

    Image {
        url: image.url.clone(),
        checksum: image.checksum.clone(),
        checksum_type,
        disk_format: image.format,
        oci_auth_secret_name: None,
    }
}

/// Reports addresses, and provider ID and readiness once the host is provisioned.
async fn report(mut pass: Pass, host: &BareMetalHost, ctx: &Context) -> Result<Action, Error> {
    let hardware = hardware_of(host, ctx).await?;
    pass.status.addresses = Some(addresses(hardware.as_ref()));

    if let Some(error) = host
        .status
        .as_ref()
        .map(|status| status.error_message.clone())
        .filter(|message| !message.is_empty())
    {
        pass.condition(Desired::not(
            HOST_PROVISIONED,
            "HostError",
            Severity::Warning,
            format!("host {}: {error}", host.name_any()),
        ));
        return pass.finish(Action::requeue(ctx.settings.poll_host)).await;
    }

    let host_state = state(host);
    if host_state != ProvisioningState::Provisioned {
        let message = format!("host {} is {:?}", host.name_any(), host_state);
        pass.condition(Desired::not(
            HOST_PROVISIONED,
            WAITING_FOR_HOST_PROVISIONING,
            Severity::Info,
            message,
        ));
        pass.status.phase = Some("Provisioning".to_owned());
        return pass.finish(Action::requeue(ctx.settings.poll_host)).await;
    }

    set_provider_id(&pass, host).await?;
    pass.condition(Desired::ok(HOST_PROVISIONED));
    pass.status.ready = Some(true);
    pass.status.phase = Some("Provisioned".to_owned());
    pass.finish(Action::await_change()).await
}

/// `metal3://<namespace>/<host>/<metal3machine>`.
pub fn provider_id(namespace: &str, host: &str, machine: &str) -> String {
    format!("metal3://{namespace}/{host}/{machine}")
}

async fn set_provider_id(pass: &Pass, host: &BareMetalHost) -> Result<(), Error> {
    let id = provider_id(&pass.namespace, &host.name_any(), &pass.machine.name_any());
    if pass.machine.spec.provider_id.as_deref() == Some(id.as_str()) {
        return Ok(());
    }

    let patch = json!({ "spec": { "providerID": id } });
    pass.patch(&patch, "setting the provider ID").await
}

/// The host's inspected hardware: its HardwareData, else the copy in its status.
async fn hardware_of(
    host: &BareMetalHost,
    ctx: &Context,
) -> Result<Option<HardwareDetails>, Error> {
    let namespace = host.namespace().unwrap_or_default();
    let data: Api<HardwareData> = Api::namespaced(ctx.client.clone(), &namespace);
    let found = data
        .get_opt(&host.name_any())
        .await
        .map_err(api_error("reading HardwareData"))?;

    let from_data = found.and_then(|data| data.spec.hardware);
    Ok(from_data.or_else(|| {
        host.status
            .as_ref()
            .and_then(|status| status.hardware.clone())
    }))
}

/// One `InternalIP` per NIC address, plus the host name as `Hostname` and `InternalDNS`.
pub fn addresses(hardware: Option<&HardwareDetails>) -> Vec<MachineAddress> {
    let Some(hardware) = hardware else {
        return Vec::new();
    };
    let address = |kind: &str, value: &str| MachineAddress {
        address_type: kind.to_owned(),
        address: value.to_owned(),
    };

    let mut addresses: Vec<MachineAddress> = hardware
        .nics
        .iter()
        .flatten()
        .filter_map(|nic| nic.ip.as_deref().filter(|ip| !ip.is_empty()))
        .map(|ip| address("InternalIP", ip))
        .collect();
    if let Some(hostname) = hardware.hostname.as_deref().filter(|name| !name.is_empty()) {
        addresses.push(address("Hostname", hostname));
        addresses.push(address("InternalDNS", hostname));
    }
    addresses
}

/// Releases the host, then the finalizer.
async fn delete(mut pass: Pass, ctx: &Context) -> Result<Action, Error> {
    if !pass
        .machine
        .finalizers()
        .iter()
        .any(|finalizer| finalizer == FINALIZER)
    {
        return Ok(Action::await_change());
    }
    // A paused cluster is being moved: deleting its objects here must not wipe the hosts.
    if cluster_paused_by_label(&pass, ctx).await? {
        return Ok(Action::requeue(ctx.settings.wait_for_host));
    }

    let options = release_options(&pass, ctx).await?;
    match ctx.engine.release(&pass.consumer, &options).await? {
        Releasing::Done => {}
        Releasing::Retry => return Ok(Action::requeue(ctx.settings.retry)),
        Releasing::Waiting(message) => {
            pass.condition(Desired::not(
                ASSOCIATE_BMH,
                DELETING,
                Severity::Info,
                message,
            ));
            pass.status.phase = Some("Deleting".to_owned());
            return pass.finish(Action::requeue(ctx.settings.poll_host)).await;
        }
    }

    remove_finalizer(&pass.api, pass.machine.as_ref(), FINALIZER)
        .await
        .map_err(api_error("removing the Metal3Machine finalizer"))?;
    Ok(Action::await_change())
}

async fn cluster_paused_by_label(pass: &Pass, ctx: &Context) -> Result<bool, Error> {
    let Some(name) = pass.machine.labels().get(CLUSTER_NAME_LABEL) else {
        return Ok(false);
    };

    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &pass.namespace);
    let cluster = clusters
        .get_opt(name)
        .await
        .map_err(api_error("reading the Cluster"))?;
    Ok(cluster.is_some_and(|cluster| cluster.spec.paused == Some(true)))
}

/// Node reuse applies when the machine's template asks for it and its cluster stays.
async fn release_options(pass: &Pass, ctx: &Context) -> Result<ReleaseOptions, Error> {
    let mut options = ReleaseOptions {
        fast_track: ctx.settings.fast_track,
        reuse: None,
    };
    let Some(template) = pass.machine.annotations().get(CLONED_FROM_ANNOTATION) else {
        return Ok(options);
    };

    let templates: Api<Metal3MachineTemplate> =
        Api::namespaced(ctx.client.clone(), &pass.namespace);
    let template = templates
        .get_opt(template)
        .await
        .map_err(api_error("reading the Metal3MachineTemplate"))?;
    if template.and_then(|template| template.spec.node_reuse) != Some(true) {
        return Ok(options);
    }

    let Some(owner) = owner_machine(pass, ctx).await? else {
        return Ok(options);
    };
    let Some(cluster) = cluster_of(pass, &owner, ctx)
        .await?
        .filter(|cluster| cluster.meta().deletion_timestamp.is_none())
    else {
        return Ok(options);
    };
    options.reuse = reuse_group(&owner).map(|group| Reservation {
        group,
        holder: ObjectReference {
            api_version: Some(Cluster::api_version(&()).into_owned()),
            kind: Some(Cluster::kind(&()).into_owned()),
            name: Some(cluster.name_any()),
            namespace: Some(pass.namespace.clone()),
            uid: cluster.uid(),
            ..ObjectReference::default()
        },
    });
    Ok(options)
}

fn error_policy(machine: Arc<Metal3Machine>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        tracing::debug!(machine = %machine.name_any(), error = %error, "Metal3Machine changed meanwhile; retrying");
        return Action::requeue(ctx.settings.retry);
    }
    tracing::warn!(machine = %machine.name_any(), namespace = ?machine.namespace(), error = %error, source = ?std::error::Error::source(error), "Metal3Machine reconcile failed");
    Action::requeue(ctx.settings.retry)
}

/// Runs the Metal3Machine controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let machines: Api<Metal3Machine> = Api::all(client.clone());
    let controller = Controller::new(machines, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(0));
    let turns = Turns::new(ctx.settings.workers);
    let store = controller.store();
    let waiting_store = store.clone();

    controller
        .watches(
            Api::<BareMetalHost>::all(client.clone()),
            watcher::Config::default(),
            move |host| {
                consumers_to_wake(&host, &waiting_store, |machine: &Metal3Machine| {
                    !machine.annotations().contains_key(HOST_ANNOTATION)
                })
            },
        )
        .watches(
            Api::<Machine>::all(client.clone()),
            watcher::Config::default(),
            |machine| infrastructure_of(&machine),
        )
        .watches(
            Api::<Cluster>::all(client),
            watcher::Config::default(),
            move |cluster| machines_of_cluster(&cluster, &store),
        )
        .graceful_shutdown_on(turns.close_on(shutdown))
        .run(
            move |machine, ctx| in_turn(turns.clone(), ctx, machine, reconcile),
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

type MachineStore = kube::runtime::reflector::Store<Metal3Machine>;

fn infrastructure_of(machine: &Machine) -> Option<ObjectRef<Metal3Machine>> {
    let reference = &machine.spec.infrastructure_ref;
    if reference.kind.as_deref() != Some("Metal3Machine") {
        return None;
    }
    let namespace = reference
        .namespace
        .clone()
        .or_else(|| machine.namespace())
        .unwrap_or_default();
    reference
        .name
        .as_ref()
        .map(|name| ObjectRef::new(name).within(&namespace))
}

fn machines_of_cluster(cluster: &Cluster, store: &MachineStore) -> Vec<ObjectRef<Metal3Machine>> {
    let name = cluster.name_any();
    let namespace = cluster.namespace();

    store
        .state()
        .iter()
        .filter(|machine| machine.namespace() == namespace)
        // A machine without the cluster label may still belong to this cluster (its Machine
        // says so); waking it costs one reconcile.
        .filter(|machine| {
            machine
                .labels()
                .get(CLUSTER_NAME_LABEL)
                .is_none_or(|label| *label == name)
        })
        .map(|machine| ObjectRef::from_obj(machine.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_api::metal3::Nic;

    #[test]
    fn addresses_come_from_nics_and_the_host_name() {
        let hardware = HardwareDetails {
            nics: Some(vec![
                Nic {
                    ip: Some("192.0.2.10".into()),
                    ..Nic::default()
                },
                Nic {
                    ip: Some(String::new()),
                    ..Nic::default()
                },
                Nic {
                    ip: Some("2001:db8::10".into()),
                    ..Nic::default()
                },
            ]),
            hostname: Some("node-1".into()),
            ..HardwareDetails::default()
        };

        let kinds: Vec<(String, String)> = addresses(Some(&hardware))
            .into_iter()
            .map(|a| (a.address_type, a.address))
            .collect();

        assert_eq!(
            kinds,
            [
                ("InternalIP", "192.0.2.10"),
                ("InternalIP", "2001:db8::10"),
                ("Hostname", "node-1"),
                ("InternalDNS", "node-1")
            ]
            .map(|(kind, address)| (kind.to_owned(), address.to_owned()))
        );
        assert!(addresses(None).is_empty());
    }

    #[test]
    fn provider_id_names_namespace_host_and_machine() {
        assert_eq!(
            provider_id("lab", "host-3", "worker-a"),
            "metal3://lab/host-3/worker-a"
        );
    }

    #[test]
    fn reuse_group_prefers_the_control_plane() {
        let mut owner = Machine::new("m", Default::default());
        owner
            .labels_mut()
            .insert(DEPLOYMENT_NAME_LABEL.into(), "workers".into());
        assert_eq!(reuse_group(&owner).as_deref(), Some("md-workers"));

        owner
            .labels_mut()
            .insert(CONTROL_PLANE_NAME_LABEL.into(), "control".into());
        assert_eq!(reuse_group(&owner).as_deref(), Some("cp-control"));
    }
}
