//! The detached annotation: removing a host from the provisioner without deprovisioning it.
//!
//! Detaching changes only the operational status, never the provisioning state, so removing the
//! annotation re-registers the host exactly where it was.

use crate::annotations::DetachRequest;
use crate::host::HostFacts;
use crate::model::{ErrorType, OperationalStatus, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{Progress, Provisioner};

use super::{DETACH_ERROR_PREFIX, HostStateMachine, SLOW_POLL};

impl<P: Provisioner> HostStateMachine<'_, P> {
    /// Detaches or re-attaches the host as its annotation says. Returns `None` when the host is
    /// attached and stays attached, so the normal flow continues.
    pub(super) async fn check_detached_host(&mut self) -> Option<Outcome> {
        let state = self.host.state();
        if let Some(request) = DetachRequest::from_annotations(self.host.annotation_map()) {
            let allowed = matches!(
                state,
                ProvisioningState::Provisioned
                    | ProvisioningState::ExternallyProvisioned
                    | ProvisioningState::Available
            );
            if state != ProvisioningState::Deleting && (allowed || request.force) {
                return Some(self.detach(request.force).await);
            }
        }

        if self.has_detach_error() {
            self.clear_error();
            self.status_mut().error_count = 0;
            return Some(Outcome::update());
        }
        if self.status().operational_status == OperationalStatus::Detached {
            let status = self.status_mut();
            status.operational_status = if status.error_type.is_some() {
                OperationalStatus::Error
            } else {
                OperationalStatus::Ok
            };
            tracing::info!("host re-attached to the provisioner");
            return Some(Outcome::update());
        }
        None
    }

    async fn detach(&mut self, force: bool) -> Outcome {
        match self.provisioner.detach(force).await {
            Err(error) => Outcome::Error(error),
            Ok(Progress::Failed { message }) => self.record_detach_failure(message),
            Ok(Progress::Working { requeue_after }) => {
                if self.has_detach_error() && self.clear_error() {
                    return Outcome::Update { requeue_after };
                }
                Outcome::Continue { requeue_after }
            }
            Ok(Progress::Done) => self.mark_detached(),
        }
    }

    fn mark_detached(&mut self) -> Outcome {
        if self.has_detach_error() {
            self.clear_error();
            self.status_mut().error_count = 0;
        }
        if self.status().operational_status == OperationalStatus::Detached {
            return Outcome::Continue {
                requeue_after: SLOW_POLL,
            };
        }
        self.status_mut().operational_status = OperationalStatus::Detached;
        tracing::info!("host detached from the provisioner");
        Outcome::Update {
            requeue_after: SLOW_POLL,
        }
    }

    /// Detach failures have no error type of their own in the API's enum; they are recorded
    /// as a registration error (the host's link to the provisioner is what failed) whose
    /// message carries a fixed prefix, so they can be told apart and cleared on re-attach.
    fn record_detach_failure(&mut self, message: String) -> Outcome {
        self.record_failure_as(
            ErrorType::Registration,
            "DetachError",
            format!("{DETACH_ERROR_PREFIX}{message}"),
        )
    }

    fn has_detach_error(&self) -> bool {
        self.host.status.as_ref().is_some_and(|status| {
            status.error_type == Some(ErrorType::Registration)
                && status.error_message.starts_with(DETACH_ERROR_PREFIX)
        })
    }
}
