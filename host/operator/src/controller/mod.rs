//! The BareMetalHost controller: watches hosts (and the Secrets they use), and for each host runs
//! the upstream reconcile order around one state-machine step.
//!
//! # Reconcile order
//!
//! 1. Read the latest host; stop if it is gone.
//! 2. Paused hosts are left completely alone: no finalizer, no status write, no requeue.
//! 3. Host data: restore a status from its annotation, drop the HardwareData finalizer on
//!    deletion, fill `spec.architecture` from HardwareData ([`host_data`]).
//! 4. Hardware details supplied by HardwareData or the hardwaredetails annotation.
//! 5. Add the host finalizer.
//! 6. Credentials from the BMC Secret, which is labelled, owned and finalized so that edits
//!    to it wake the host ([`credentials`]).
//! 7. Create the provisioner, its calls measured ([`metered`]), and run one state-machine step.
//! 8. Recompute conditions; write the status only when it changed (timestamps aside).
//! 9. Apply side effects (HardwareData, annotation removals, finalizer release) and publish
//!    the events.

mod credentials;
mod host_data;
mod metered;
mod recorder;

pub use recorder::{EventRecorder, Occurrence, Reporter};
mod writes;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::annotations::PAUSED;
use crate::conditions::{HardwareReport, update_conditions};
use crate::events::{EventKind, EventSink, HostEvent};
use crate::host::HostFacts;
use crate::metrics::Metrics;
use crate::model::{BareMetalHost, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{HostData, Provisioner, ProvisionerError, ProvisionerFactory};
use crate::state_machine::{HostStateMachine, ReconcileInput, Settings};
use crate::turns::Turns;
use metered::Metered;

pub use credentials::{CredentialsError, SECRET_FINALIZER, SECRET_LABEL, SECRET_LABEL_VALUE};
pub use writes::{HARDWARE_DATA_FINALIZER, HOST_FINALIZER};

/// The controller name used as the event source and field manager.
pub const CONTROLLER_NAME: &str = "metal3-baremetal-controller";

/// How long to wait when the provisioner cannot serve requests yet.
const PROVISIONER_NOT_READY_DELAY: Duration = Duration::from_secs(30);

/// How long to wait after a write lost a race with another writer.
const CONFLICT_DELAY: Duration = Duration::from_millis(200);

/// How long one reconcile may take by default. Every provisioner call returns promptly by
/// contract, so only a hung call can get near this.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait after a transient failure.
const ERROR_DELAY: Duration = Duration::from_secs(5);

/// Failures of one reconcile. None of them changes the host's status; the error policy
/// retries after a short delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing an object failed.
    #[error("API call {action} failed")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The provisioner failed transiently.
    #[error("provisioner call failed")]
    Provisioner(#[source] ProvisionerError),
    /// The host object has no namespace.
    #[error("the host has no namespace")]
    MissingNamespace,
    /// The reconcile did not finish in time (a hung BMC, plugin or API call); it is abandoned
    /// so that it does not hold a worker, and retried.
    #[error("the reconcile took longer than {0:?}")]
    Timeout(Duration),
    /// An object could not be encoded.
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The serializer error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    fn api(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Api { action, source }
    }

    /// Whether the failure was a lost optimistic-concurrency race.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

/// What every reconcile shares.
pub struct Context<F: ProvisionerFactory> {
    /// The API client.
    pub client: Client,
    /// Builds a provisioner per reconcile.
    pub factory: F,
    /// State-machine settings.
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes events.
    pub recorder: EventRecorder,
    /// How long one reconcile may take before it is abandoned and retried.
    pub reconcile_timeout: Duration,
    /// The longest a host waits before it is looked at again, whatever its step asked for.
    /// Used by the lab and tests to compress minutes of polling and backoff into moments.
    pub max_requeue: Option<Duration>,
}

impl<F: ProvisionerFactory> Context<F> {
    /// A context with the given provisioner factory.
    pub fn new(
        client: Client,
        factory: F,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: instance.to_string(),
        };
        let recorder = EventRecorder::new(client.clone(), reporter);
        Context {
            client,
            factory,
            settings,
            metrics,
            recorder,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            max_requeue: None,
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run<F: ProvisionerFactory>(
    context: Arc<Context<F>>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let hosts: Api<BareMetalHost> = Api::all(context.client.clone());
    let secrets: Api<Secret> = Api::all(context.client.clone());
    let (reader, writer) = reflector::store();

    // Status-only writes (our own, every step) must not trigger another reconcile: only spec,
    // annotation, finalizer and deletion changes do.
    let trigger = watcher(hosts, watcher::Config::default())
        .default_backoff()
        .modify(forget_managed_fields)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(host_change_hash, Default::default());
    let secret_config =
        watcher::Config::default().labels(&format!("{SECRET_LABEL}={SECRET_LABEL_VALUE}"));

    // kube's own concurrency bound starves hosts when saturated; see [`Turns`].
    let mut controller = Controller::for_stream(trigger, reader)
        .watches(secrets, secret_config, owning_hosts)
        .with_config(kube::runtime::Config::default().concurrency(0));
    if let Some(wakes) = context.factory.wakes() {
        controller = controller
            .reconcile_on(wakes.map(|wake| ObjectRef::new(&wake.name).within(&wake.namespace)));
    }
    let turns = Turns::new(concurrency);
    controller
        .graceful_shutdown_on(turns.close_on(shutdown))
        .run(
            move |host, context| reconcile_in_turn(host, context, turns.clone()),
            error_policy::<F>,
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error, "controller event");
            }
        })
        .await;
}

/// Drops a host's managedFields before it is cached: the controller never reads them, and with
/// a status as large as a host's they were two thirds of each cached host (heap profile of 3,000
/// hosts: 20.5 of 31.9 MB).
fn forget_managed_fields(host: &mut BareMetalHost) {
    host.managed_fields_mut().clear();
}

/// A hash of what should wake a host: generation, annotations, finalizers and deletion.
fn host_change_hash(host: &BareMetalHost) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    host.metadata.generation.hash(&mut hasher);
    host.metadata.annotations.hash(&mut hasher);
    host.metadata.finalizers.hash(&mut hasher);
    host.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Every BareMetalHost that owns a Secret (the ownership is deliberately not a controller
/// reference, so it must be matched on every owner).
fn owning_hosts(secret: Secret) -> Vec<ObjectRef<BareMetalHost>> {
    let namespace = secret.namespace().unwrap_or_default();
    secret
        .owner_references()
        .iter()
        .filter(|owner| {
            owner.kind == "BareMetalHost" && owner.api_version.starts_with("metal3.io/")
        })
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect()
}

fn error_policy<F: ProvisionerFactory>(
    host: Arc<BareMetalHost>,
    error: &Error,
    context: Arc<Context<F>>,
) -> Action {
    context.metrics.reconcile_failed();
    if error.is_conflict() {
        tracing::debug!(host = %host_key(&host), "write conflict; retrying");
        return Action::requeue(CONFLICT_DELAY);
    }
    tracing::warn!(host = %host_key(&host), error = %error_chain(error), "reconcile failed");
    Action::requeue(ERROR_DELAY)
}

/// An error and its causes on one line, each as people read it (never a debug form).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// `namespace/name`, the host field of every log line.
pub fn host_key(host: &BareMetalHost) -> String {
    format!(
        "{}/{}",
        host.namespace().unwrap_or_default(),
        host.name_any()
    )
}

/// Waits for a turn, then reconciles. The big reconcile future is only allocated once the
/// turn is there, so each host waiting costs little.
async fn reconcile_in_turn<F: ProvisionerFactory>(
    host: Arc<BareMetalHost>,
    context: Arc<Context<F>>,
    turns: Turns,
) -> Result<Action, Error> {
    let due = Instant::now();
    let Some(_turn) = turns.take().await else {
        return Ok(Action::await_change());
    };
    context.metrics.observe_queue_wait(due.elapsed());
    Box::pin(reconcile(host, context)).await
}

async fn reconcile<F: ProvisionerFactory>(
    host: Arc<BareMetalHost>,
    context: Arc<Context<F>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = host_key(&host);
    let span = tracing::info_span!("reconcile", host = %key);
    let timeout = context.reconcile_timeout;
    let result =
        match tokio::time::timeout(timeout, reconcile_host(&host, &context).instrument(span)).await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        };
    context.metrics.observe_reconcile(started.elapsed());
    result.map(|next| context.action(next))
}

/// When to look at a host again: after a delay, or (`None`) only when it changes.
pub type Next = Option<Duration>;

impl<F: ProvisionerFactory> Context<F> {
    /// Turns the next look into the controller's action, applying [`Context::max_requeue`].
    fn action(&self, next: Next) -> Action {
        match (next, self.max_requeue) {
            (Some(delay), Some(limit)) => Action::requeue(delay.min(limit)),
            // A capped setup never waits only for a change: a missed event must not stall it.
            (None, Some(limit)) => Action::requeue(limit),
            (Some(delay), None) => Action::requeue(delay),
            (None, None) => Action::await_change(),
        }
    }
}

async fn reconcile_host<F: ProvisionerFactory>(
    cached: &BareMetalHost,
    context: &Context<F>,
) -> Result<Next, Error> {
    let namespace = cached.namespace().ok_or(Error::MissingNamespace)?;
    let hosts: Api<BareMetalHost> = Api::namespaced(context.client.clone(), &namespace);
    let Some(mut host) = hosts
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::api("get host"))?
    else {
        return Ok(None);
    };

    if host.annotation_map().contains_key(PAUSED) {
        tracing::debug!("host is paused");
        return Ok(None);
    }

    let events = EventSink::default();
    let result = reconcile_unpaused(&mut host, &hosts, context, &events).await;
    publish_events(context, &host, events.drain()).await;
    result
}

async fn reconcile_unpaused<F: ProvisionerFactory>(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
    context: &Context<F>,
    events: &EventSink,
) -> Result<Next, Error> {
    if let Some(action) =
        host_data::reconcile_host_data(host, hosts, &context.client, events).await?
    {
        return Ok(action);
    }
    if let Some(action) = writes::ensure_finalizer(host, hosts).await? {
        return Ok(action);
    }

    let credentials = match credentials::acquire(host, &context.client).await {
        Ok(credentials) => credentials,
        Err(problem) => return credentials::record_problem(host, hosts, problem, events).await,
    };
    let host_config = if host.state() == ProvisioningState::Provisioning {
        credentials::load_host_config(host, &context.client).await?
    } else {
        Default::default()
    };

    let host_data = provisioner_host_data(host, &credentials);
    let provisioner = match context.factory.provisioner_for(host_data, events.clone()) {
        Ok(provisioner) => Metered::new(provisioner, &context.metrics),
        Err(ProvisionerError::NotReady) => return Ok(Some(PROVISIONER_NOT_READY_DELAY)),
        Err(error) => return Err(Error::Provisioner(error)),
    };

    let original = host.clone();
    let input = ReconcileInput {
        credentials: credentials.as_ref().map(|found| found.reference.clone()),
        host_config,
        now: Timestamp::now(),
    };
    let reconciled =
        HostStateMachine::new(host, &provisioner, &context.settings, input, events.clone())
            .reconcile()
            .await;
    let report = HardwareReport {
        power_failure: provisioner.has_power_failure().await,
        health: provisioner.health().await,
    };
    update_conditions(host, report, Timestamp::now());

    finish_step(host, &original, hosts, context, reconciled).await
}

/// Writes what the step changed and turns its outcome into the controller's next action.
async fn finish_step<F: ProvisionerFactory>(
    host: &mut BareMetalHost,
    original: &BareMetalHost,
    hosts: &Api<BareMetalHost>,
    context: &Context<F>,
    reconciled: crate::state_machine::Reconciled,
) -> Result<Next, Error> {
    let outcome = reconciled.outcome;
    if let Outcome::Error(error) = outcome {
        return Err(Error::Provisioner(error));
    }
    if let Some(details) = &reconciled.effects.hardware_data {
        writes::write_hardware_data(host, details, &context.client).await?;
    }
    if writes::status_changed(original, host) {
        writes::save_status(host, hosts).await?;
    }
    writes::remove_annotations(host, hosts, &reconciled.effects.remove_annotations).await?;
    context.metrics.observe_host(host);

    if matches!(outcome, Outcome::DeleteComplete) {
        credentials::release(host, &context.client).await?;
        writes::remove_finalizer(host, hosts).await?;
        context.metrics.forget_host(host);
        return Ok(None);
    }
    Ok(outcome.requeue_after())
}

fn provisioner_host_data(
    host: &BareMetalHost,
    credentials: &Option<credentials::Found>,
) -> HostData {
    let bmc = host.spec.bmc.clone().unwrap_or_default();
    HostData {
        namespace: host.namespace().unwrap_or_default(),
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
        bmc_address: bmc.address,
        credentials: credentials
            .as_ref()
            .map(|found| found.credentials.clone())
            .unwrap_or_default(),
        disable_certificate_verification: bmc.disable_certificate_verification.unwrap_or(false),
        boot_mac_address: host.spec.boot_mac_address.clone(),
        provisioner_id: host
            .status
            .as_ref()
            .map(|status| status.provisioning.id.clone())
            .filter(|id| !id.is_empty()),
        labels: host.labels().clone(),
        hardware: host
            .status
            .as_ref()
            .and_then(|status| status.hardware.clone()),
    }
}

async fn publish_events<F: ProvisionerFactory>(
    context: &Context<F>,
    host: &BareMetalHost,
    events: Vec<HostEvent>,
) {
    if events.is_empty() {
        return;
    }
    let reference = host.object_ref(&());
    for event in events {
        context.metrics.observe_event(&event);
        let occurrence = Occurrence {
            type_: match event.kind {
                EventKind::Normal => "Normal",
                EventKind::Warning => "Warning",
            },
            reason: event.reason.clone(),
            note: event.message.clone(),
            regarding: reference.clone(),
            related: host.spec.consumer_ref.clone(),
        };
        if let Err(error) = context.recorder.publish(&occurrence).await {
            tracing::warn!(reason = %event.reason, error = %error, "cannot publish event");
        }
    }
}

/// Metadata for an object the operator creates for a host: same name, the given finalizer,
/// and the host as its controlling owner so it is garbage-collected with the host.
fn owned_metadata(host: &BareMetalHost, finalizer: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(host.name_any()),
        namespace: host.namespace(),
        finalizers: Some(vec![finalizer.to_string()]),
        owner_references: host.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}
