//! One handler per provisioning state. Handlers decide the next state and the outcome; the
//! transition itself is applied by the state machine afterwards.

use crate::annotations::{self, RebootRequests};
use crate::host::HostFacts;
use crate::model::{ErrorType, OperationalStatus, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{
    DeprovisionRequest, InspectRequest, PrepareRequest, Progress, ProvisionRequest, Provisioner,
};

use super::{DELETE_RETRY_LIMIT, HostStateMachine, SLOW_POLL};

impl<P: Provisioner> HostStateMachine<'_, P> {
    /// A new host: managed when it has BMC details, otherwise only discovered.
    pub(super) fn handle_none(&mut self) -> Outcome {
        if self.host.has_bmc_details() {
            self.status_mut().operational_status = OperationalStatus::Ok;
            self.transition(ProvisioningState::Registering);
        } else {
            self.transition(ProvisioningState::Unmanaged);
            self.status_mut().operational_status = OperationalStatus::Discovered;
            self.events
                .normal("Discovered", "Discovered host with unknown BMC details");
        }
        Outcome::Complete
    }

    /// A host without BMC details waits for them, looking again now and then.
    pub(super) fn handle_unmanaged(&mut self) -> Outcome {
        if !self.host.has_bmc_details() {
            return Outcome::Continue {
                requeue_after: SLOW_POLL,
            };
        }
        self.status_mut().operational_status = OperationalStatus::Ok;
        self.transition(ProvisioningState::Registering);
        Outcome::Complete
    }

    /// Registration succeeded (it ran just before): pick the first real state.
    pub(super) fn handle_registering(&mut self) -> Outcome {
        let next = if self.host.externally_provisioned() {
            ProvisioningState::ExternallyProvisioned
        } else if self.host.inspection_disabled() {
            ProvisioningState::Preparing
        } else {
            ProvisioningState::Inspecting
        };
        self.transition(next);
        Outcome::Complete
    }

    /// The legacy profile-matching state has nothing left to do.
    pub(super) fn handle_match_profile(&mut self) -> Outcome {
        self.transition(ProvisioningState::Preparing);
        Outcome::Complete
    }

    /// Inspects the hardware, then stores the details and moves on to preparing.
    pub(super) async fn handle_inspecting(&mut self) -> Outcome {
        if self.host.inspection_disabled() {
            self.events
                .normal("InspectionSkipped", "Hardware inspection disabled");
            self.transition(ProvisioningState::Preparing);
            return Outcome::Complete;
        }

        let reboots = RebootRequests::from_annotations(self.host.annotation_map());
        let request = InspectRequest {
            boot_mode: self.host.boot_mode(),
            mode: self.host.inspection_mode(),
            restart_on_failure: self.failed_with(ErrorType::Inspection),
            refresh: annotations::inspection_requested(self.host.annotation_map()),
            force_reboot: !reboots.forced_keys.is_empty(),
        };
        let inspection = match self.provisioner.inspect(&request).await {
            Ok(inspection) => inspection,
            Err(error) => return Outcome::Error(error),
        };
        if inspection.started {
            self.remove_annotation(annotations::INSPECT);
            self.remove_annotation(annotations::REBOOT);
        }

        match (inspection.progress, inspection.details) {
            (Progress::Failed { message }, _) => {
                self.record_failure(ErrorType::Inspection, message)
            }
            (Progress::Working { requeue_after }, _) => self.in_progress(requeue_after),
            (Progress::Done, None) => self.in_progress(super::POWER_POLL),
            (Progress::Done, Some(details)) => {
                self.status_mut().hardware = Some(details.clone());
                self.effects.hardware_data = Some(details);
                self.transition(ProvisioningState::Preparing);
                Outcome::Complete
            }
        }
    }

    /// Applies RAID and root-disk settings; the host becomes available once they are in place.
    pub(super) async fn handle_preparing(&mut self) -> Outcome {
        let unprepared = self.host.settings_changed();
        let root_device_hints = self.host.effective_root_device_hints();
        let request = PrepareRequest {
            target_raid: self.host.spec.raid.clone(),
            root_device_hints: root_device_hints.clone(),
            unprepared,
            restart_on_failure: self.failed_with(ErrorType::Preparation),
        };
        let preparation = match self.provisioner.prepare(&request).await {
            Ok(preparation) => preparation,
            Err(error) => return Outcome::Error(error),
        };

        match preparation.progress {
            Progress::Failed { message } => {
                if unprepared {
                    // Forget the applied settings so the retry applies them all again.
                    self.forget_applied_settings();
                }
                self.record_failure(ErrorType::Preparation, message)
            }
            Progress::Working { requeue_after } => self.in_progress(requeue_after),
            Progress::Done => {
                let raid = self.host.spec.raid.clone();
                let provisioning = &mut self.status_mut().provisioning;
                provisioning.raid = raid;
                provisioning.root_device_hints = root_device_hints;
                self.transition(ProvisioningState::Available);
                Outcome::Complete
            }
        }
    }

    /// Forgets the RAID and root-disk settings recorded as applied.
    fn forget_applied_settings(&mut self) {
        let provisioning = &mut self.status_mut().provisioning;
        provisioning.raid = None;
        provisioning.root_device_hints = None;
    }

    /// Waits for work: externally provisioned, a new inspection, new settings or an image.
    pub(super) async fn handle_available(&mut self) -> Outcome {
        if self.host.externally_provisioned() {
            self.forget_applied_settings();
            self.transition(ProvisioningState::ExternallyProvisioned);
            return Outcome::Complete;
        }
        if annotations::inspection_requested(self.host.annotation_map()) {
            self.transition(ProvisioningState::Inspecting);
            return Outcome::Complete;
        }
        if self.host.settings_changed() {
            self.transition(ProvisioningState::Preparing);
            return Outcome::Complete;
        }
        self.manage_available().await
    }

    async fn manage_available(&mut self) -> Outcome {
        let reset_failures = self.reset_provisioning_failures();
        if !self.host.needs_provisioning() {
            let outcome = self.manage_host_power().await;
            return with_pending_save(reset_failures, outcome);
        }

        let limit = i64::from(self.settings.max_provisioning_retries);
        let failures = self.status().provisioning_fail_count;
        if limit > 0 && failures >= limit {
            let message = format!(
                "provisioning failed {failures} times, retry limit ({limit}) reached; change or remove the image to try again"
            );
            if self.status().error_message == message {
                let outcome = self.manage_host_power().await;
                return with_pending_save(reset_failures, outcome);
            }
            return self.record_failure(ErrorType::Provisioning, message);
        }

        let image = self.host.spec.image.clone();
        self.status_mut().last_attempted_image = image;
        self.transition(ProvisioningState::Provisioning);
        Outcome::Complete
    }

    /// Forgets earlier provisioning failures when the image they were for is no longer wanted:
    /// removed, or changed in any field, since fixing a wrong checksum must allow a new attempt.
    fn reset_provisioning_failures(&mut self) -> bool {
        let wanted = self.host.spec.image.clone();
        let status = self.status_mut();
        if status.provisioning_fail_count == 0
            || (wanted.is_some() && wanted == status.last_attempted_image)
        {
            return false;
        }
        status.provisioning_fail_count = 0;
        if status.error_type == Some(ErrorType::Provisioning) {
            status.error_type = None;
            status.error_message.clear();
            status.operational_status = OperationalStatus::Ok;
        }
        true
    }

    /// Writes the image; a failure sends the host through deprovisioning before any retry.
    pub(super) async fn handle_provisioning(&mut self) -> Outcome {
        if self.host.provisioning_cancelled() {
            self.clear_error();
            self.transition(ProvisioningState::Deprovisioning);
            return Outcome::Complete;
        }
        if self.failed_with(ErrorType::Provisioning) {
            self.status_mut().provisioning_fail_count += 1;
            self.transition_keeping_error(ProvisioningState::Deprovisioning);
            return Outcome::Complete;
        }

        let reboots = RebootRequests::from_annotations(self.host.annotation_map());
        let request = ProvisionRequest {
            image: self.host.spec.image.clone(),
            custom_deploy: self.host.spec.custom_deploy.clone(),
            boot_mode: self.host.boot_mode(),
            root_device_hints: self.status().provisioning.root_device_hints.clone(),
            host_config: self.input.host_config.clone(),
            force_reboot: !reboots.forced_keys.is_empty(),
        };
        let progress = match self.provisioner.provision(&request).await {
            Ok(progress) => progress,
            Err(error) => return Outcome::Error(error),
        };
        if request.force_reboot {
            self.remove_annotation(annotations::REBOOT);
        }

        match progress {
            Progress::Failed { message } => self.record_failure(ErrorType::Provisioning, message),
            Progress::Working { requeue_after } => self.in_progress(requeue_after),
            Progress::Done => {
                let status = self.status_mut();
                status.provisioning.image = request.image;
                status.provisioning.custom_deploy = request.custom_deploy;
                status.provisioning_fail_count = 0;
                self.transition(ProvisioningState::Provisioned);
                Outcome::Complete
            }
        }
    }

    /// A provisioned host is kept adopted and powered as asked, until its image changes.
    pub(super) async fn handle_provisioned(&mut self) -> Outcome {
        if self.host.provisioning_cancelled() {
            self.clear_error();
            self.transition(ProvisioningState::Deprovisioning);
            return Outcome::Complete;
        }
        self.manage_steady_state().await
    }

    /// An externally provisioned host is only adopted and power-managed; clearing the flag
    /// makes it a normal provisioned host (deprovisioned next when it has no image).
    pub(super) async fn handle_externally_provisioned(&mut self) -> Outcome {
        if self.host.externally_provisioned() {
            return self.manage_steady_state().await;
        }
        let image = self
            .host
            .spec
            .image
            .clone()
            .filter(|image| !image.url.is_empty());
        let custom_deploy = self.host.spec.custom_deploy.clone();
        let provisioning = &mut self.status_mut().provisioning;
        provisioning.image = image;
        provisioning.custom_deploy = custom_deploy;
        self.transition(ProvisioningState::Provisioned);
        Outcome::Complete
    }

    /// Removes the image and cleans the disks; during deletion, gives up after repeated
    /// failures so the host can still be removed.
    pub(super) async fn handle_deprovisioning(&mut self) -> Outcome {
        if self.host.was_provisioned() {
            match self.adopt().await {
                Ok(()) => {}
                Err(Outcome::Error(error)) if self.unreachable_while_deleting(&error) => {
                    return self.give_up_deleting("the host is not registered");
                }
                Err(outcome) => return outcome,
            }
        }

        let request = DeprovisionRequest {
            restart_on_failure: self.failed_with(ErrorType::Provisioning),
            automated_cleaning_mode: self.host.cleaning_mode(),
        };
        match self.provisioner.deprovision(&request).await {
            Err(error) if self.unreachable_while_deleting(&error) => {
                self.give_up_deleting("the host is not registered")
            }
            Err(error) => Outcome::Error(error),
            Ok(Progress::Working { requeue_after }) => self.in_progress(requeue_after),
            Ok(Progress::Failed { message }) => {
                let outcome = self.record_failure(ErrorType::Provisioning, message);
                if self.host.is_deleting() && self.error_count() > DELETE_RETRY_LIMIT {
                    self.transition(ProvisioningState::PoweringOffBeforeDelete);
                    return Outcome::Complete;
                }
                outcome
            }
            Ok(Progress::Done) => {
                let provisioning = &mut self.status_mut().provisioning;
                provisioning.image = None;
                provisioning.custom_deploy = None;
                self.forget_applied_settings();
                let next = if self.host.is_deleting() {
                    ProvisioningState::PoweringOffBeforeDelete
                } else {
                    ProvisioningState::Available
                };
                self.transition(next);
                Outcome::Complete
            }
        }
    }
}

/// Turns a no-save outcome into a save when the step changed the status earlier.
pub(super) fn with_pending_save(pending: bool, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Continue { requeue_after } if pending => Outcome::Update { requeue_after },
        other => other,
    }
}
