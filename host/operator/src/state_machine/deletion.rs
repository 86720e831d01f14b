//! Routing a host that is being deleted, and the deletion-time states.
//!
//! Deletion must never leave a host stuck: clean-up and power-off give up after a bounded number
//! of failures, a host that lost its registration and has no credentials skips straight to
//! removal, and a detached host (by annotation or status) is removed without touching the
//! hardware unless its annotation asks to hold the deletion.

use crate::annotations::{DeleteAction, DetachRequest};
use crate::host::HostFacts;
use crate::model::{ErrorType, OperationalStatus, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{PowerOffRequest, Progress, Provisioner, ProvisionerError};

use super::{DELETE_RETRY_LIMIT, HostStateMachine};
use crate::annotations::RebootMode;

impl<P: Provisioner> HostStateMachine<'_, P> {
    /// Picks the first deletion state for a host whose deletion just started. Returns whether a
    /// transition was chosen (the step then ends and saves).
    pub(super) fn check_initiate_delete(&mut self) -> bool {
        if !self.host.is_deleting() {
            return false;
        }
        let state = self.host.state();
        if state == ProvisioningState::Deleting {
            return false;
        }

        if self.is_detached() {
            if self.delete_is_held() {
                return false;
            }
            self.transition(ProvisioningState::Deleting);
            return true;
        }

        let next = match state {
            ProvisioningState::None
            | ProvisioningState::Unmanaged
            | ProvisioningState::Registering => ProvisioningState::Deleting,
            ProvisioningState::Provisioning | ProvisioningState::Provisioned => {
                ProvisioningState::Deprovisioning
            }
            ProvisioningState::Deprovisioning | ProvisioningState::PoweringOffBeforeDelete => {
                if !self.registration_keeps_failing() {
                    return false;
                }
                ProvisioningState::Deleting
            }
            ProvisioningState::MatchProfile
            | ProvisioningState::Inspecting
            | ProvisioningState::Preparing
            | ProvisioningState::Ready
            | ProvisioningState::Available
            | ProvisioningState::ExternallyProvisioned => {
                ProvisioningState::PoweringOffBeforeDelete
            }
            ProvisioningState::Deleting => return false,
        };
        tracing::info!(next = ?next, "host deletion started");
        self.transition(next);
        true
    }

    /// Detached by status, or by annotation (deleting right after annotating must not
    /// deprovision the host).
    fn is_detached(&self) -> bool {
        let detached_status = self
            .host
            .status
            .as_ref()
            .is_some_and(|status| status.operational_status == OperationalStatus::Detached);
        detached_status || DetachRequest::from_annotations(self.host.annotation_map()).is_some()
    }

    /// A detached host's deletion waits when its annotation says `deleteAction: delay`, or when
    /// the annotation is gone but the host is still detached (it is about to be re-attached).
    pub(super) fn delete_is_held(&self) -> bool {
        match DetachRequest::from_annotations(self.host.annotation_map()) {
            Some(request) => request.delete_action == DeleteAction::Delay,
            None => true,
        }
    }

    fn registration_keeps_failing(&self) -> bool {
        self.failed_with(ErrorType::Registration) && self.error_count() > DELETE_RETRY_LIMIT
    }

    /// Whether a provisioner error means the host can no longer be reached at all during
    /// deletion, so waiting for it would never end.
    pub(super) fn unreachable_while_deleting(&self, error: &ProvisionerError) -> bool {
        self.host.is_deleting()
            && self.input.credentials.is_none()
            && matches!(error, ProvisionerError::NeedsRegistration)
    }

    /// Powers the host off before it is removed; never deprovisions.
    pub(super) async fn handle_powering_off_before_delete(&mut self) -> Outcome {
        if self.host.disable_power_off() {
            self.transition(ProvisioningState::Deleting);
            return Outcome::Complete;
        }

        let request = PowerOffRequest {
            mode: RebootMode::Hard,
            force: self.failed_with(ErrorType::PowerManagement),
            automated_cleaning_mode: self.host.cleaning_mode(),
            reboot_instead: false,
        };
        match self.provisioner.power_off(&request).await {
            Err(error) if self.unreachable_while_deleting(&error) => {
                self.give_up_deleting("the host is not registered")
            }
            Err(error) => Outcome::Error(error),
            Ok(Progress::Working { requeue_after }) => self.in_progress(requeue_after),
            Ok(Progress::Failed { message }) => {
                let outcome = self.record_failure(ErrorType::PowerManagement, message);
                if self.error_count() > DELETE_RETRY_LIMIT {
                    return self.give_up_deleting("power-off kept failing");
                }
                outcome
            }
            Ok(Progress::Done) => {
                self.status_mut().powered_on = false;
                self.transition(ProvisioningState::Deleting);
                Outcome::Complete
            }
        }
    }

    /// Moves on to removal after clean-up or power-off could not be completed.
    pub(super) fn give_up_deleting(&mut self, why: &str) -> Outcome {
        tracing::warn!(reason = why, "giving up on host clean-up during deletion");
        self.transition(ProvisioningState::Deleting);
        Outcome::Complete
    }

    /// Removes the host from the provisioner; the controller then releases the finalizers.
    pub(super) async fn handle_deleting(&mut self) -> Outcome {
        match self.provisioner.delete().await {
            Err(ProvisionerError::NeedsRegistration) | Ok(Progress::Done) => {
                Outcome::DeleteComplete
            }
            Err(error) => Outcome::Error(error),
            Ok(Progress::Working { requeue_after }) => Outcome::Continue { requeue_after },
            Ok(Progress::Failed { message }) => Outcome::Error(ProvisionerError::Rejected {
                call: "delete",
                message,
            }),
        }
    }
}
