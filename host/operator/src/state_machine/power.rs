//! Steady-state care: keeping the provisioner's view of a deployed host current, and keeping
//! the power as the spec and the reboot annotations ask.

use crate::annotations::{self, RebootMode, RebootRequests};
use crate::host::HostFacts;
use crate::model::{ErrorType, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{AdoptRequest, PowerOffRequest, PowerOnRequest, Progress, Provisioner};

use super::{HostStateMachine, POWER_POLL};

/// Recorded in front of a failed soft power-off, whose retry is always hard.
const SOFT_POWER_OFF_FAILED: &str =
    "Continuing with hard poweroff after soft poweroff fails. More details: ";

impl<P: Provisioner> HostStateMachine<'_, P> {
    /// Provisioned and externally provisioned hosts: adopt, then manage power.
    pub(super) async fn manage_steady_state(&mut self) -> Outcome {
        match self.adopt().await {
            Ok(()) => self.manage_host_power().await,
            Err(outcome) => outcome,
        }
    }

    /// Makes the provisioner treat the host as deployed. `Err` carries the outcome to return
    /// when adoption is not (yet) complete.
    pub(super) async fn adopt(&mut self) -> Result<(), Outcome> {
        let request = AdoptRequest {
            state: self.host.state(),
            restart_on_failure: self.failed_with(ErrorType::ProvisionedRegistration),
        };
        match self.provisioner.adopt(&request).await {
            Err(error) => Err(Outcome::Error(error)),
            Ok(Progress::Failed { message }) => {
                Err(self.record_failure(ErrorType::ProvisionedRegistration, message))
            }
            Ok(Progress::Working { requeue_after }) => Err(self.in_progress(requeue_after)),
            Ok(Progress::Done) => {
                if self.failed_with(ErrorType::ProvisionedRegistration) {
                    self.clear_error();
                    return Err(Outcome::update());
                }
                Ok(())
            }
        }
    }

    /// Brings the power in line with `spec.online` and the reboot annotations.
    pub(super) async fn manage_host_power(&mut self) -> Outcome {
        let observed = match self.provisioner.hardware_state().await {
            Ok(state) => state.powered_on,
            Err(error) => return Outcome::Error(error),
        };
        if let Some(powered_on) = observed.filter(|on| *on != self.status().powered_on) {
            tracing::info!(powered_on, "observed a power state change");
            self.status_mut().powered_on = powered_on;
            if self.failed_with(ErrorType::PowerManagement) {
                self.clear_error();
            }
            return Outcome::update();
        }

        let reboots = RebootRequests::from_annotations(self.host.annotation_map());
        for key in &reboots.invalid_keys {
            self.events.warning(
                "InvalidAnnotationValue",
                format!("annotation {key} is not valid JSON; rebooting softly"),
            );
        }
        let powered_on = self.status().powered_on;
        if !powered_on && reboots.has_plain {
            // The one-shot reboot request has been served: the host was seen off.
            self.remove_annotation(annotations::REBOOT);
            return Outcome::proceed();
        }

        let only_forced = self.host.state() == ProvisioningState::Available;
        let desired = self.host.spec.online && !reboots.wants_power_off(only_forced);
        if powered_on == desired {
            return Outcome::Continue {
                requeue_after: POWER_POLL,
            };
        }
        self.change_power(desired, &reboots).await
    }

    async fn change_power(&mut self, power_on: bool, reboots: &RebootRequests) -> Outcome {
        let force = self.failed_with(ErrorType::PowerManagement);
        let mode = if reboots.hard || self.error_count() > 0 {
            RebootMode::Hard
        } else {
            RebootMode::Soft
        };
        let reboot_instead = !power_on && self.host.disable_power_off();
        if reboot_instead && !reboots.has_plain {
            // A host that must never be off cannot be held off for a phased reboot: only the
            // one-shot request, removed once served, can be honoured without a reboot loop.
            return Outcome::Continue {
                requeue_after: POWER_POLL,
            };
        }

        let result = if power_on {
            self.provisioner.power_on(&PowerOnRequest { force }).await
        } else {
            let request = PowerOffRequest {
                mode,
                force,
                automated_cleaning_mode: self.host.cleaning_mode(),
                reboot_instead,
            };
            self.provisioner.power_off(&request).await
        };

        match result {
            Err(error) => Outcome::Error(error),
            Ok(Progress::Working { requeue_after }) => self.in_progress(requeue_after),
            Ok(Progress::Failed { message }) => {
                let message = if !power_on && mode == RebootMode::Soft {
                    format!("{SOFT_POWER_OFF_FAILED}{message}")
                } else {
                    message
                };
                self.record_failure(ErrorType::PowerManagement, message)
            }
            Ok(Progress::Done) => {
                if reboot_instead {
                    // The host never stays off, so the one-shot request is served right away.
                    self.remove_annotation(annotations::REBOOT);
                }
                self.clear_error();
                let status = self.status_mut();
                status.powered_on = power_on || reboot_instead;
                status.error_count = 0;
                Outcome::Update {
                    requeue_after: POWER_POLL,
                }
            }
        }
    }
}
