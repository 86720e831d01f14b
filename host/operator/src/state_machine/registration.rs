//! Registration: creating or finding the host in the provisioner and checking its credentials.
//!
//! Registration is re-checked on every step in every managed state, so that a BMC whose
//! credentials changed, or a provisioner that lost the host, is noticed wherever the host is.
//! The provisioner's `register` must therefore be idempotent and cheap.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::host::{HostFacts, is_known_profile};
use crate::model::{CredentialsStatus, ErrorType, OperationMetric, ProvisioningState};
use crate::outcome::Outcome;
use crate::provisioner::{Progress, Provisioner, RegisterRequest};

use super::HostStateMachine;

impl<P: Provisioner> HostStateMachine<'_, P> {
    /// Registers the host when it needs it. Returns `None` when the host is registered, so the
    /// state handler runs next; what registration recorded (credentials, provisioner id,
    /// profile) is saved with whatever the handler changes, in one write.
    pub(super) async fn ensure_registered(&mut self) -> Option<Outcome> {
        let credentials = self.input.credentials.clone()?;
        if matches!(
            self.next_state,
            ProvisioningState::None
                | ProvisioningState::Unmanaged
                | ProvisioningState::MatchProfile
                | ProvisioningState::Deleting
        ) {
            return None;
        }

        let credentials_changed = self.status().tried_credentials.as_ref() != Some(&credentials);
        let retrying = self.failed_with(ErrorType::Registration);
        if retrying || credentials_changed {
            self.restart_register_timer(self.input.now);
        }
        if credentials_changed {
            self.status_mut().tried_credentials = Some(credentials.clone());
        }

        self.register(credentials, credentials_changed, retrying)
            .await
    }

    async fn register(
        &mut self,
        credentials: CredentialsStatus,
        credentials_changed: bool,
        restart_on_failure: bool,
    ) -> Option<Outcome> {
        let request = RegisterRequest {
            state: self.host.state(),
            boot_mode: self.host.boot_mode(),
            automated_cleaning_mode: self.host.cleaning_mode(),
            current_image: self
                .host
                .status
                .as_ref()
                .and_then(|status| status.provisioning.image.clone()),
            inspection_disabled: self.host.inspection_disabled(),
            disable_power_off: self.host.disable_power_off(),
            credentials_changed,
            restart_on_failure,
        };
        let registration = match self.provisioner.register(&request).await {
            Ok(registration) => registration,
            Err(error) => return Some(Outcome::Error(error)),
        };

        let id_changed = self.store_provisioner_id(registration.provisioner_id);
        match registration.progress {
            Progress::Failed { message } => {
                return Some(self.record_failure(ErrorType::Registration, message));
            }
            Progress::Working { requeue_after } => {
                let changed = id_changed | self.clear_error();
                return Some(if changed {
                    Outcome::Update { requeue_after }
                } else {
                    Outcome::Continue { requeue_after }
                });
            }
            Progress::Done => {}
        }

        if let Err(outcome) = self.match_profile() {
            return Some(outcome);
        }
        self.accept_credentials(credentials);
        None
    }

    fn store_provisioner_id(&mut self, id: Option<String>) -> bool {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return false;
        };
        let status = self.status_mut();
        if status.provisioning.id == id {
            return false;
        }
        status.provisioning.id = id;
        true
    }

    /// Chooses the (deprecated) hardware profile; an unknown name is a registration error.
    fn match_profile(&mut self) -> Result<(), Outcome> {
        let profile = self.host.hardware_profile_name();
        if !is_known_profile(&profile) {
            let message = format!("invalid hardware profile {profile:?}");
            if self.status().error_message == message {
                return Err(Outcome::AwaitChange);
            }
            return Err(self.record_failure(ErrorType::Registration, message));
        }
        if self.status().hardware_profile.as_deref() == Some(profile.as_str()) {
            return Ok(());
        }
        self.status_mut().hardware_profile = Some(profile.clone());
        self.events
            .normal("ProfileSet", format!("Hardware profile set: {profile}"));
        Ok(())
    }

    /// Remembers the credentials as good after a successful registration.
    fn accept_credentials(&mut self, credentials: CredentialsStatus) {
        if self.status().good_credentials.as_ref() != Some(&credentials) {
            self.status_mut().good_credentials = Some(credentials);
            self.events
                .normal("BMCAccessValidated", "Verified access to BMC");
        }
        if self.failed_with(ErrorType::Registration) {
            self.clear_error();
        }
    }

    fn restart_register_timer(&mut self, now: Timestamp) {
        let history = self.status_mut().operation_history.get_or_insert_default();
        history.register = Some(OperationMetric {
            start: Some(Time(now)),
            end: None,
        });
    }
}
