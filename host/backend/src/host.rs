//! The provisioner of one host: the operator's lifecycle operations mapped onto driver calls
//! and phase runs.

use std::sync::Arc;
use std::time::Duration;

use ingot_api::metal3::{AutomatedCleaningMode, BootMode, DiskFormat, HardwareDetails, Image};
use ingot_operator::annotations::RebootMode;
use ingot_operator::events::EventSink;
use ingot_operator::provisioner::{
    AdoptRequest, DeprovisionRequest, HardwareState, Health, HostConfig, HostData, InspectRequest,
    Inspection, PowerOffRequest, PowerOnRequest, Preparation, PrepareRequest, Progress,
    ProvisionRequest, Provisioner, ProvisionerError, RegisterRequest, Registration,
};
use ingot_plugin_host::bindings::steps;
use ingot_plugin_host::bindings::types::{BmcAddress, PowerAction, PowerState};
use ingot_plugin_host::bmc::{BmcAccess, BmcCredentials};
use ingot_plugin_host::routing::{HostPlugins, PluginBinding, RoutingError};
use ingot_plugin_host::state::CallScope;
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::links::{DeployExtras, Driver, DriverFailure};
use crate::phases::PhaseRequest;
use crate::records::PhaseName;

/// The provisioner for one host, built for one reconcile.
pub struct HostProvisioner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) host: HostData,
    pub(crate) plugins: Result<HostPlugins, RoutingError>,
    pub(crate) events: EventSink,
}

impl HostProvisioner {
    /// The host's driver plugin bound to its BMC.
    pub(crate) fn driver(&self) -> Result<Driver, ProvisionerError> {
        let plugins = self
            .plugins
            .as_ref()
            .map_err(|error| rejected("driver", error))?;
        let address = ingot_api::bmc::parse(&self.host.bmc_address)
            .map_err(|error| rejected("driver", &error))?;
        let credentials = &self.host.credentials;
        let bmc = BmcAccess {
            host: self.host_ref(),
            address: BmcAddress {
                scheme: address.scheme,
                host: address.host,
                port: address.port,
                path: address.path,
                disable_certificate_verification: self.host.disable_certificate_verification,
            },
            credentials: (!credentials.username.is_empty()).then(|| {
                Arc::new(BmcCredentials::new(
                    credentials.username.clone(),
                    credentials.password.clone(),
                ))
            }),
            boot_mac_address: self.host.boot_mac_address.clone(),
        };
        let scope = CallScope {
            host: Some(self.host_ref()),
            bmc: Some(bmc),
            config_overrides: plugins.driver.config.clone(),
            ..CallScope::default()
        };
        Ok(Driver::new(
            self.shared.registry.clone(),
            plugins.driver.plugin.clone(),
            scope,
        ))
    }

    pub(crate) fn steps_binding(
        &self,
        phase: PhaseName,
    ) -> Result<PluginBinding, ProvisionerError> {
        let plugins = self
            .plugins
            .as_ref()
            .map_err(|error| rejected("steps", error))?;
        plugins.steps_for(phase.into()).cloned().ok_or_else(|| {
            rejected(
                "steps",
                &format!(
                    "no provisioning-steps plugin plans the {} phase",
                    phase.as_str()
                ),
            )
        })
    }

    /// Registers the host with the agent API afresh and publishes deploy media for it.
    pub(crate) fn publish_media(&self) -> Result<String, ProvisionerError> {
        let macs: Vec<String> = self.host.boot_mac_address.iter().cloned().collect();
        self.shared
            .agent
            .publish_media(&self.host.uid, &macs)
            .map_err(|error| ProvisionerError::Call {
                call: "publish deploy media",
                source: Box::new(error),
            })
    }

    /// The hardware to show plugins: the host's status, else the last inspection.
    pub(crate) fn known_hardware(&self) -> Option<HardwareDetails> {
        self.host.hardware.clone().or_else(|| {
            self.shared
                .records
                .get(&self.host.uid)
                .and_then(|record| record.inspected)
        })
    }

    fn require_registered(&self) -> Result<(), ProvisionerError> {
        if self
            .shared
            .is_registered(&self.host.uid, &self.credentials_digest())
        {
            return Ok(());
        }
        Err(ProvisionerError::NeedsRegistration)
    }

    /// Identifies the address and credentials a registration was checked with, without
    /// keeping the password itself.
    fn credentials_digest(&self) -> String {
        let mut digest = Sha256::new();
        for part in [
            self.host.bmc_address.as_str(),
            self.host.credentials.username.as_str(),
            self.host.credentials.password.as_str(),
        ] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        hex::encode(digest.finalize())
    }

    async fn check_bmc(&self) -> Result<Progress, ProvisionerError> {
        let driver = match self.driver() {
            Ok(driver) => driver,
            Err(ProvisionerError::Rejected { message, .. }) => {
                return Ok(Progress::failed(message));
            }
            Err(error) => return Err(error),
        };

        match driver.power_state().await {
            Ok(_) => Ok(Progress::Done),
            Err(failure) if failure.is_authentication() => Ok(Progress::failed(format!(
                "the BMC rejected the credentials: {failure}"
            ))),
            Err(failure) if failure.is_driver_answer() => Ok(Progress::failed(format!(
                "the BMC could not be managed: {failure}"
            ))),
            Err(failure) => Err(call_failed("register", failure)),
        }
    }

    async fn power(&self, action: PowerAction) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let result = self.driver()?.set_power(action).await;
        let failed = matches!(&result, Err(failure) if failure.is_driver_answer());
        self.remember_power_failure(failed);

        match result {
            Ok(ingot_plugin_host::bindings::types::Progress::Done) => Ok(Progress::Done),
            Ok(ingot_plugin_host::bindings::types::Progress::InProgress(pending)) => {
                Ok(Progress::Working {
                    requeue_after: Duration::from_millis(pending.requeue_after_ms.max(100)),
                })
            }
            Err(failure) if failure.is_driver_answer() => Ok(Progress::failed(format!(
                "{} failed: {failure}",
                power_change(action)
            ))),
            Err(failure) => Err(call_failed("power", failure)),
        }
    }

    fn remember_power_failure(&self, failed: bool) {
        let saved = self
            .shared
            .records
            .update(&self.host.uid, |record| record.power_failed = failed);
        if let Err(error) = saved {
            tracing::warn!(host = %self.host.name, error = %error, "cannot save the power state");
        }
    }

    fn forget(&self) -> Result<Progress, ProvisionerError> {
        self.shared.forget(&self.host.uid);
        self.shared
            .records
            .remove(&self.host.uid)
            .map_err(|error| ProvisionerError::Call {
                call: "forget",
                source: Box::new(error),
            })?;
        Ok(Progress::Done)
    }

    fn boot_parameters(&self, boot_mode: BootMode) -> Vec<(String, String)> {
        let mode = match boot_mode {
            BootMode::Uefi => "UEFI",
            BootMode::UefiSecureBoot => "UEFISecureBoot",
            BootMode::Legacy => "legacy",
        };
        vec![("boot-mode".into(), mode.into())]
    }
}

impl Provisioner for HostProvisioner {
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ProvisionerError> {
        let digest = self.credentials_digest();
        let known = self.shared.is_registered(&self.host.uid, &digest);
        let progress = if known && !request.credentials_changed {
            Progress::Done
        } else {
            self.check_bmc().await?
        };

        if progress == Progress::Done {
            self.shared.mark_registered(&self.host.uid, digest);
        }
        Ok(Registration {
            progress,
            provisioner_id: Some(self.host.uid.clone()),
        })
    }

    async fn inspect(&self, request: &InspectRequest) -> Result<Inspection, ProvisionerError> {
        self.require_registered()?;
        if request.mode == ingot_api::metal3::InspectionMode::Fast {
            return self.inspect_out_of_band().await;
        }

        let progress = self
            .advance(PhaseRequest {
                phase: PhaseName::Inspect,
                fingerprint: "inspect".into(),
                restart: request.restart_on_failure || request.refresh,
                image: None,
                parameters: self.boot_parameters(request.boot_mode),
                extras: DeployExtras::default(),
            })
            .await?;
        let details = self
            .shared
            .records
            .get(&self.host.uid)
            .and_then(|record| record.inspected);

        let (progress, details) = match (progress, details) {
            (Progress::Done, None) => (
                Progress::failed("the inspection finished without a hardware inventory"),
                None,
            ),
            (Progress::Done, details) => (Progress::Done, details),
            (other, _) => (other, None),
        };
        Ok(Inspection {
            started: true,
            progress,
            details,
        })
    }

    async fn hardware_state(&self) -> Result<HardwareState, ProvisionerError> {
        if self.require_registered().is_err() {
            return Ok(HardwareState::default());
        }
        let state = self
            .driver()?
            .power_state()
            .await
            .map_err(|failure| call_failed("hardware state", failure))?;

        let powered_on = match state {
            PowerState::On | PowerState::PoweringOn => Some(true),
            PowerState::Off | PowerState::PoweringOff => Some(false),
            PowerState::Unknown => None,
        };
        Ok(HardwareState { powered_on })
    }

    async fn adopt(&self, _request: &AdoptRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        Ok(Progress::Done)
    }

    async fn prepare(&self, request: &PrepareRequest) -> Result<Preparation, ProvisionerError> {
        self.require_registered()?;
        let settings = serde_json::json!({
            "raid": request.target_raid,
            "rootDeviceHints": request.root_device_hints,
        });

        let progress = self
            .advance(PhaseRequest {
                phase: PhaseName::Prepare,
                fingerprint: fingerprint(&settings),
                restart: request.restart_on_failure,
                image: None,
                parameters: Vec::new(),
                extras: DeployExtras::default(),
            })
            .await?;
        Ok(Preparation {
            progress,
            started: true,
        })
    }

    async fn provision(&self, request: &ProvisionRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let live_iso = request
            .image
            .as_ref()
            .is_some_and(|image| image.disk_format == Some(DiskFormat::LiveIso));
        let phase = if live_iso {
            PhaseName::LiveIso
        } else {
            PhaseName::Deploy
        };
        let mut parameters = self.boot_parameters(request.boot_mode);
        if let Some(custom) = &request.custom_deploy {
            parameters.push(("custom-deploy-method".into(), custom.method.clone()));
        }

        let progress = self
            .advance(PhaseRequest {
                phase,
                fingerprint: fingerprint(&serde_json::json!({
                    "image": request.image,
                    "customDeploy": request.custom_deploy,
                })),
                restart: false,
                image: request.image.as_ref().map(step_image),
                parameters,
                extras: self.deploy_extras(request),
            })
            .await?;
        if progress == Progress::Done {
            self.events
                .normal("ProvisioningComplete", "Image provisioning completed");
        }
        Ok(progress)
    }

    async fn deprovision(
        &self,
        request: &DeprovisionRequest,
    ) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let mode = match request.automated_cleaning_mode {
            AutomatedCleaningMode::Metadata => "metadata",
            AutomatedCleaningMode::Disabled => "disabled",
        };

        self.advance(PhaseRequest {
            phase: PhaseName::Deprovision,
            fingerprint: mode.into(),
            restart: request.restart_on_failure,
            image: None,
            parameters: vec![("automated-cleaning-mode".into(), mode.into())],
            extras: DeployExtras::default(),
        })
        .await
    }

    async fn delete(&self) -> Result<Progress, ProvisionerError> {
        self.forget()
    }

    async fn detach(&self, _force: bool) -> Result<Progress, ProvisionerError> {
        self.forget()
    }

    async fn power_on(&self, _request: &PowerOnRequest) -> Result<Progress, ProvisionerError> {
        self.power(PowerAction::On).await
    }

    async fn power_off(&self, request: &PowerOffRequest) -> Result<Progress, ProvisionerError> {
        let action = match (request.reboot_instead, request.mode) {
            (true, RebootMode::Soft) => PowerAction::RebootSoft,
            (true, RebootMode::Hard) => PowerAction::RebootHard,
            (false, RebootMode::Soft) => PowerAction::OffSoft,
            (false, RebootMode::Hard) => PowerAction::OffHard,
        };
        self.power(action).await
    }

    async fn has_capacity(&self) -> Result<bool, ProvisionerError> {
        Ok(self
            .shared
            .capacity
            .admit(&self.host.uid, &self.shared.records))
    }

    fn wakes_hosts_given_capacity(&self) -> bool {
        true
    }

    async fn has_power_failure(&self) -> bool {
        self.shared
            .records
            .get(&self.host.uid)
            .is_some_and(|record| record.power_failed)
    }

    async fn health(&self) -> Health {
        Health::Unknown
    }
}

impl HostProvisioner {
    async fn inspect_out_of_band(&self) -> Result<Inspection, ProvisionerError> {
        match self.driver()?.inventory().await {
            Ok(details) => Ok(Inspection {
                progress: Progress::Done,
                started: true,
                details: Some(ingot_plugin_host::hardware::from_plugin(&details)),
            }),
            Err(failure) if failure.is_driver_answer() => Ok(Inspection {
                progress: Progress::failed(format!("out-of-band inspection failed: {failure}")),
                started: true,
                details: None,
            }),
            Err(failure) => Err(call_failed("inspect", failure)),
        }
    }

    fn deploy_extras(&self, request: &ProvisionRequest) -> DeployExtras {
        let root_device_hints = request
            .root_device_hints
            .as_ref()
            .and_then(|hints| serde_json::to_value(hints).ok())
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default();
        DeployExtras {
            root_device_hints,
            config_drive: config_drive(&self.host, &request.host_config),
        }
    }
}

/// The config drive cloud-init reads: user data as given, the host's identity in the metadata
/// (overridden by the host's own metadata), and the network data.
fn config_drive(
    host: &HostData,
    config: &HostConfig,
) -> Option<ingot_agent::protocol::ConfigDrive> {
    if config.user_data.is_none() && config.network_data.is_none() && config.meta_data.is_none() {
        return None;
    }
    let mut meta_data = serde_json::json!({
        "uuid": host.uid,
        "name": host.name,
        "local-hostname": host.name,
        "metal3-namespace": host.namespace,
        "metal3-name": host.name,
    });
    if let (Some(own), Some(object)) = (
        config.meta_data.as_deref().and_then(parse_document),
        meta_data.as_object_mut(),
    ) && let Some(own) = own.as_object()
    {
        object.extend(own.clone());
    }

    Some(ingot_agent::protocol::ConfigDrive {
        user_data: config.user_data.clone(),
        meta_data,
        network_data: config.network_data.as_deref().and_then(parse_document),
    })
}

/// Metadata and network data Secrets hold YAML (of which JSON is a subset).
fn parse_document(text: &str) -> Option<serde_json::Value> {
    serde_yaml::from_str(text).ok()
}

fn step_image(image: &Image) -> steps::Image {
    steps::Image {
        url: image.url.clone(),
        checksum: image
            .checksum
            .clone()
            .filter(|checksum| !checksum.is_empty()),
        checksum_type: image
            .checksum_type
            .and_then(|kind| serde_json::to_value(kind).ok())
            .and_then(|value| value.as_str().map(str::to_owned)),
        format: image
            .disk_format
            .and_then(|format| serde_json::to_value(format).ok())
            .and_then(|value| value.as_str().map(str::to_owned)),
    }
}

/// A power action as the host's status names it.
fn power_change(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "powering on",
        PowerAction::OffSoft => "a soft power-off",
        PowerAction::OffHard => "a hard power-off",
        PowerAction::RebootSoft => "a soft reboot",
        PowerAction::RebootHard => "a hard reboot",
    }
}

fn fingerprint(value: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

fn rejected(call: &'static str, error: &dyn std::fmt::Display) -> ProvisionerError {
    ProvisionerError::Rejected {
        call,
        message: error.to_string(),
    }
}

fn call_failed(call: &'static str, failure: DriverFailure) -> ProvisionerError {
    ProvisionerError::Call {
        call,
        source: Box::new(failure),
    }
}
