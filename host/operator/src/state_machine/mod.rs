//! The host state machine: one reconcile step for one BareMetalHost.
//!
//! # Flow
//!
//! A step runs these checks in order and stops at the first that decides the outcome:
//!
//! 1. capacity: a `delayed` host waits for a free slot;
//! 2. deletion: a host being deleted is routed towards `deleting` ([`deletion`]);
//! 3. detachment: the detached annotation removes the host from the provisioner ([`detach`]);
//! 4. registration: every step in a managed state re-checks registration and credentials;
//! 5. the handler of the current provisioning state ([`handlers`]), chosen in one exhaustive
//!    `match`.
//!
//! Handlers only decide: they return an [`Outcome`] and may name the next state. One function,
//! [`HostStateMachine::apply_transition`], then applies the state change, checks capacity for
//! the busy states and records the operation history.
//!
//! # Guarantees
//!
//! The machine mutates only the host's status. Everything else it wants done (annotations
//! removed, HardwareData written, events published) is returned as [`Effects`] for the
//! controller to apply, so the machine itself needs no API client and is tested in memory.

mod deletion;
mod detach;
mod handlers;
mod power;
mod registration;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::backoff::{Jitter, RandomJitter, backoff};
use crate::events::EventSink;
use crate::host::HostFacts;
use crate::model::{
    BareMetalHost, BareMetalHostStatus, CredentialsStatus, ErrorType, HardwareDetails,
    OperationMetric, OperationalStatus, ProvisioningState,
};
use crate::outcome::Outcome;
use crate::provisioner::{HostConfig, Provisioner};

/// How often a host without BMC details, or a detached host, is looked at again.
pub const SLOW_POLL: Duration = Duration::from_secs(600);

/// How soon a delayed host is looked at again when the provisioner wakes it once there is
/// capacity for it: only a wake that got lost waits this long.
pub const WOKEN_DELAY_FALLBACK: Duration = Duration::from_secs(600);

/// How often the power state of a host in a steady state is checked.
pub const POWER_POLL: Duration = Duration::from_secs(60);

/// Consecutive failures after which deletion stops trying to clean up or power off.
pub const DELETE_RETRY_LIMIT: i64 = 3;

/// The default limit of consecutive failed provisionings of one image.
pub const DEFAULT_MAX_PROVISIONING_RETRIES: u32 = 5;

/// The prefix recorded in front of a detach failure, so that removing the detached annotation
/// clears exactly that error and no other.
pub(crate) const DETACH_ERROR_PREFIX: &str = "detach failed: ";

/// Operator-wide settings that shape the state machine.
#[derive(Clone)]
pub struct Settings {
    /// Stop re-provisioning an image after this many consecutive failures (0: never stop).
    pub max_provisioning_retries: u32,
    /// Jitter applied to retry delays.
    pub jitter: Arc<dyn Jitter>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_provisioning_retries: DEFAULT_MAX_PROVISIONING_RETRIES,
            jitter: Arc::new(RandomJitter),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Settings")
            .field("max_provisioning_retries", &self.max_provisioning_retries)
            .finish()
    }
}

/// What the controller found out before running the state machine.
#[derive(Debug, Clone)]
pub struct ReconcileInput {
    /// The BMC Secret the credentials came from, by name and resource version; `None` when no
    /// valid credentials are available.
    pub credentials: Option<CredentialsStatus>,
    /// Config drive contents, loaded when the host is provisioning.
    pub host_config: HostConfig,
    /// The time the step runs at, recorded in the operation history.
    pub now: Timestamp,
}

/// Work the controller must carry out after a step, besides saving the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Annotations to remove from the host.
    pub remove_annotations: BTreeSet<String>,
    /// Inspection finished: (re)create the host's HardwareData with these details.
    pub hardware_data: Option<HardwareDetails>,
}

/// The result of one step.
#[derive(Debug)]
pub struct Reconciled {
    /// What to do with the status and when to look again.
    pub outcome: Outcome,
    /// Side effects to apply.
    pub effects: Effects,
}

/// Whether a transition clears the error of the state being left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorOnTransition {
    /// The state was left because its work succeeded: clear the error and its count.
    Reset,
    /// The state was left because of its error, which the next state needs to see.
    Keep,
}

/// One reconcile step over one host.
pub struct HostStateMachine<'a, P: Provisioner> {
    host: &'a mut BareMetalHost,
    provisioner: &'a P,
    settings: &'a Settings,
    input: ReconcileInput,
    events: EventSink,
    effects: Effects,
    next_state: ProvisioningState,
    error_on_transition: ErrorOnTransition,
}

impl<'a, P: Provisioner> HostStateMachine<'a, P> {
    /// Prepares a step over `host`, which must be the latest copy read from the API.
    pub fn new(
        host: &'a mut BareMetalHost,
        provisioner: &'a P,
        settings: &'a Settings,
        input: ReconcileInput,
        events: EventSink,
    ) -> Self {
        let next_state = host.state();
        HostStateMachine {
            host,
            provisioner,
            settings,
            input,
            events,
            effects: Effects::default(),
            next_state,
            error_on_transition: ErrorOnTransition::Reset,
        }
    }

    /// Runs the step and returns its outcome and side effects.
    pub async fn reconcile(mut self) -> Reconciled {
        let initial = self.host.state();
        let outcome = self.decide().await;
        let outcome = self.apply_transition(initial, outcome).await;

        Reconciled {
            outcome,
            effects: self.effects,
        }
    }

    async fn decide(&mut self) -> Outcome {
        if let Some(outcome) = self.check_delayed_host().await {
            return outcome;
        }
        if self.check_initiate_delete() {
            return Outcome::Complete;
        }
        if let Some(outcome) = self.check_detached_host().await {
            return outcome;
        }
        if let Some(outcome) = self.ensure_registered().await {
            return outcome;
        }
        self.handle_state().await
    }

    /// The single place that picks the handler for a state.
    async fn handle_state(&mut self) -> Outcome {
        match self
            .host
            .status
            .as_ref()
            .map(|status| status.provisioning.state)
            .unwrap_or_default()
        {
            ProvisioningState::None => self.handle_none(),
            ProvisioningState::Unmanaged => self.handle_unmanaged(),
            ProvisioningState::Registering => self.handle_registering(),
            ProvisioningState::MatchProfile => self.handle_match_profile(),
            ProvisioningState::Inspecting => self.handle_inspecting().await,
            ProvisioningState::Preparing => self.handle_preparing().await,
            ProvisioningState::Ready => {
                // Accepted from older objects, but only the current name is ever written.
                self.status_mut().provisioning.state = ProvisioningState::Available;
                let outcome = self.handle_available().await;
                handlers::with_pending_save(true, outcome)
            }
            ProvisioningState::Available => self.handle_available().await,
            ProvisioningState::Provisioning => self.handle_provisioning().await,
            ProvisioningState::Provisioned => self.handle_provisioned().await,
            ProvisioningState::ExternallyProvisioned => self.handle_externally_provisioned().await,
            ProvisioningState::Deprovisioning => self.handle_deprovisioning().await,
            ProvisioningState::PoweringOffBeforeDelete => {
                self.handle_powering_off_before_delete().await
            }
            ProvisioningState::Deleting => self.handle_deleting().await,
        }
    }

    /// A delayed host stays delayed until the provisioner has room again; a host in a busy
    /// state re-checks every time, because capacity may have been taken by others meanwhile.
    /// A delayed host that gets room goes on with its step at once, so that leaving `delayed`
    /// and the work it was waiting for are saved together.
    async fn check_delayed_host(&mut self) -> Option<Outcome> {
        let delayed = self.status().operational_status == OperationalStatus::Delayed;
        let busy = matches!(
            self.host.state(),
            ProvisioningState::Inspecting
                | ProvisioningState::Provisioning
                | ProvisioningState::Deprovisioning
        );
        if !delayed && !busy {
            return None;
        }

        match self.provisioner.has_capacity().await {
            Err(error) => Some(Outcome::Error(error)),
            Ok(false) => Some(self.delay()),
            Ok(true) => {
                if delayed {
                    self.clear_error();
                }
                None
            }
        }
    }

    /// Marks the host delayed for lack of capacity.
    fn delay(&mut self) -> Outcome {
        let changed = self.status().operational_status != OperationalStatus::Delayed;
        self.status_mut().operational_status = OperationalStatus::Delayed;
        let requeue_after = if self.provisioner.wakes_hosts_given_capacity() {
            WOKEN_DELAY_FALLBACK
        } else {
            backoff(1, self.settings.jitter.as_ref())
        };
        if changed {
            Outcome::Delayed { requeue_after }
        } else {
            Outcome::Continue { requeue_after }
        }
    }

    /// Applies the next state chosen by a handler, unless capacity is missing.
    async fn apply_transition(&mut self, initial: ProvisioningState, outcome: Outcome) -> Outcome {
        let next = self.next_state;
        if next == initial || matches!(outcome, Outcome::Error(_) | Outcome::DeleteComplete) {
            return outcome;
        }

        if matches!(
            next,
            ProvisioningState::Inspecting
                | ProvisioningState::Provisioning
                | ProvisioningState::Deprovisioning
        ) {
            match self.provisioner.has_capacity().await {
                Err(error) => return Outcome::Error(error),
                Ok(false) => return self.delay(),
                Ok(true) => {}
            }
        }

        if self.error_on_transition == ErrorOnTransition::Reset {
            self.reset_error();
        }
        self.record_operation_history(initial, next);
        let boot_mode = self.host.boot_mode();
        let status = self.status_mut();
        status.provisioning.state = next;
        if matches!(
            next,
            ProvisioningState::Registering
                | ProvisioningState::Inspecting
                | ProvisioningState::Provisioning
        ) {
            status.provisioning.boot_mode = Some(boot_mode);
        }
        tracing::info!(from = ?initial, to = ?next, "host changed provisioning state");

        if outcome.saves_status() {
            outcome
        } else {
            Outcome::Complete
        }
    }

    /// Ends the operation of the state being left and starts the one of the state entered.
    fn record_operation_history(&mut self, from: ProvisioningState, to: ProvisioningState) {
        let now = Time(self.input.now);
        let history = self.status_mut().operation_history.get_or_insert_default();

        if let Some(metric) = operation_of(history, from) {
            metric.get_or_insert_default().end = Some(now.clone());
        }
        if let Some(metric) = operation_of(history, to) {
            *metric = Some(OperationMetric {
                start: Some(now),
                end: None,
            });
        }
    }

    /// Chooses the next state; applied after the handler returns.
    fn transition(&mut self, next: ProvisioningState) {
        self.next_state = next;
        self.error_on_transition = ErrorOnTransition::Reset;
    }

    /// Chooses the next state but keeps the current error for it to see.
    fn transition_keeping_error(&mut self, next: ProvisioningState) {
        self.next_state = next;
        self.error_on_transition = ErrorOnTransition::Keep;
    }

    fn status(&mut self) -> &BareMetalHostStatus {
        self.host.status.get_or_insert_default()
    }

    fn status_mut(&mut self) -> &mut BareMetalHostStatus {
        self.host.status.get_or_insert_default()
    }

    fn error_type(&self) -> Option<ErrorType> {
        self.host
            .status
            .as_ref()
            .and_then(|status| status.error_type)
    }

    fn error_count(&self) -> i64 {
        self.host
            .status
            .as_ref()
            .map_or(0, |status| status.error_count)
    }

    /// Records a failure of the current action: error status, one more error, an event, and a
    /// retry after the backoff.
    fn record_failure(&mut self, error_type: ErrorType, message: String) -> Outcome {
        self.record_failure_as(error_type, event_reason(error_type), message)
    }

    /// Records a failure like [`Self::record_failure`], with an explicit event reason.
    fn record_failure_as(
        &mut self,
        error_type: ErrorType,
        reason: &str,
        message: String,
    ) -> Outcome {
        let status = self.status_mut();
        status.operational_status = OperationalStatus::Error;
        status.error_type = Some(error_type);
        status.error_message = message.clone();
        status.error_count += 1;
        let count = u32::try_from(status.error_count).unwrap_or(u32::MAX);

        tracing::warn!(error_type = ?error_type, error_count = count, message = %message, "host action failed");
        self.events.warning(reason, message);
        Outcome::Failed {
            requeue_after: backoff(count, self.settings.jitter.as_ref()),
        }
    }

    /// Clears the recorded error (but not the error count); returns whether anything changed.
    fn clear_error(&mut self) -> bool {
        let status = self.status_mut();
        let changed = status.operational_status != OperationalStatus::Ok
            || status.error_type.is_some()
            || !status.error_message.is_empty();
        status.operational_status = OperationalStatus::Ok;
        status.error_type = None;
        status.error_message.clear();
        changed
    }

    /// Forgets the error of a state that was left successfully, with its count. Other
    /// operational statuses (discovered, detached) are left alone.
    fn reset_error(&mut self) {
        let status = self.status_mut();
        if status.error_type.is_some() || status.operational_status == OperationalStatus::Error {
            self.clear_error();
        }
        self.status_mut().error_count = 0;
    }

    /// The outcome for an operation still in progress: clear any error left from an earlier
    /// attempt (saving if that changed anything) and look again later.
    fn in_progress(&mut self, requeue_after: Duration) -> Outcome {
        if self.clear_error() {
            Outcome::Update { requeue_after }
        } else {
            Outcome::Continue { requeue_after }
        }
    }

    /// Whether the error recorded on the host came from the given action, which therefore
    /// must restart rather than report the same failure again.
    fn failed_with(&self, error_type: ErrorType) -> bool {
        self.error_type() == Some(error_type)
    }

    fn remove_annotation(&mut self, key: &str) {
        if self.host.annotation_map().contains_key(key) {
            self.effects.remove_annotations.insert(key.to_string());
        }
    }
}

/// The operation-history slot of a state, if the state is one of the timed operations.
fn operation_of(
    history: &mut crate::model::OperationHistory,
    state: ProvisioningState,
) -> Option<&mut Option<OperationMetric>> {
    match state {
        ProvisioningState::Registering => Some(&mut history.register),
        ProvisioningState::Inspecting => Some(&mut history.inspect),
        ProvisioningState::Provisioning => Some(&mut history.provision),
        ProvisioningState::Deprovisioning => Some(&mut history.deprovision),
        ProvisioningState::None
        | ProvisioningState::Unmanaged
        | ProvisioningState::MatchProfile
        | ProvisioningState::Preparing
        | ProvisioningState::Ready
        | ProvisioningState::Available
        | ProvisioningState::Provisioned
        | ProvisioningState::ExternallyProvisioned
        | ProvisioningState::PoweringOffBeforeDelete
        | ProvisioningState::Deleting => None,
    }
}

/// The event reason for a recorded error type.
pub fn event_reason(error_type: ErrorType) -> &'static str {
    match error_type {
        ErrorType::ProvisionedRegistration => "ProvisionedRegistrationError",
        ErrorType::Registration => "RegistrationError",
        ErrorType::Inspection => "InspectionError",
        ErrorType::Preparation => "PreparationError",
        ErrorType::Provisioning => "ProvisioningError",
        ErrorType::PowerManagement => "PowerManagementError",
        ErrorType::Servicing => "ServicingError",
    }
}
