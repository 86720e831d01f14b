//! The seam between the host state machine and whatever drives the hardware.
//!
//! A provisioner is created afresh for every reconcile and keeps no state of its own: progress
//! lives in the backend (the BMC, the plugin key-value store) and in the host's status. Every
//! call returns promptly with a [`Progress`]: finished, still working (call again later), or a
//! failure message to record on the host. A Rust `Err` is reserved for transient or internal
//! problems, which the controller retries without touching the status.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::annotations::RebootMode;
use crate::model::{
    AutomatedCleaningMode, BootMode, CustomDeploy, HardwareDetails, Image, InspectionMode,
    ProvisioningState, RaidConfig, RootDeviceHints,
};

/// How far an operation got in this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The operation is complete.
    Done,
    /// The operation is under way; call again after the delay.
    Working {
        /// When to call again.
        requeue_after: Duration,
    },
    /// The operation failed; the message is recorded on the host as its error.
    Failed {
        /// A human-readable description of the failure, free of secrets.
        message: String,
    },
}

impl Progress {
    /// Still working, call again after `seconds`.
    pub fn working_for(seconds: u64) -> Self {
        Progress::Working {
            requeue_after: Duration::from_secs(seconds),
        }
    }

    /// A failure with the given message.
    pub fn failed(message: impl Into<String>) -> Self {
        Progress::Failed {
            message: message.into(),
        }
    }
}

/// Transient or internal provisioner failures. These never change the host's status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    /// The backend does not know this host; it must be registered first.
    #[error("the host is not registered with the provisioner")]
    NeedsRegistration,
    /// The provisioner cannot serve requests yet (for example plugins still loading).
    #[error("the provisioner is not ready yet")]
    NotReady,
    /// The backend refused an operation that has no error state of its own on the host.
    #[error("provisioner call {call} was refused: {message}")]
    Rejected {
        /// The provisioner method that was refused.
        call: &'static str,
        /// Why, as reported by the backend.
        message: String,
    },
    /// A call to the backend failed in a way that may succeed on retry.
    #[error("provisioner call {call} failed")]
    Call {
        /// The provisioner method that failed.
        call: &'static str,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// BMC user name and password, trimmed and validated. The password never appears in `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The BMC user name.
    pub username: String,
    /// The BMC password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a provisioner is told about the host it acts on.
#[derive(Debug, Clone, Default)]
pub struct HostData {
    /// Namespace of the host.
    pub namespace: String,
    /// Name of the host.
    pub name: String,
    /// UID of the host object.
    pub uid: String,
    /// The BMC address as written in the spec.
    pub bmc_address: String,
    /// The credentials, empty while none are known.
    pub credentials: Credentials,
    /// Skip TLS verification when talking to the BMC.
    pub disable_certificate_verification: bool,
    /// The MAC address of the NIC the host boots from, if given.
    pub boot_mac_address: Option<String>,
    /// The provisioner's id for the host, once registered.
    pub provisioner_id: Option<String>,
    /// The host's labels, which decide the policy (and so the plugins) that govern it.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The hardware found by the last inspection, if any.
    pub hardware: Option<HardwareDetails>,
}

/// Everything the provisioner needs to register (or re-check) a host.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    /// The host's current provisioning state.
    pub state: ProvisioningState,
    /// The effective boot mode.
    pub boot_mode: BootMode,
    /// The cleaning mode.
    pub automated_cleaning_mode: AutomatedCleaningMode,
    /// The image currently on the host, if any.
    pub current_image: Option<Image>,
    /// Whether inspection is disabled for this host.
    pub inspection_disabled: bool,
    /// Whether power-off must be turned into a reboot.
    pub disable_power_off: bool,
    /// The credentials differ from the ones last sent to the provisioner.
    pub credentials_changed: bool,
    /// The previous attempt failed with a registration error: start over instead of reporting it.
    pub restart_on_failure: bool,
}

/// The result of a registration call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// How far registration got.
    pub progress: Progress,
    /// The backend id, when the backend assigned one.
    pub provisioner_id: Option<String>,
}

/// A request to inspect the hardware.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectRequest {
    /// The effective boot mode.
    pub boot_mode: BootMode,
    /// How to inspect (through the deploy agent, or out of band through the BMC).
    pub mode: InspectionMode,
    /// The previous attempt failed: start over.
    pub restart_on_failure: bool,
    /// The user asked for a new inspection of an already inspected host.
    pub refresh: bool,
    /// A forced reboot annotation asks to abort the running inspection and reboot.
    pub force_reboot: bool,
}

/// The result of an inspection call.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// How far inspection got.
    pub progress: Progress,
    /// Inspection has actually started (the request annotations may be removed).
    pub started: bool,
    /// The hardware found, once inspection is complete.
    pub details: Option<HardwareDetails>,
}

/// The observed hardware state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardwareState {
    /// Whether the host is powered on, when known.
    pub powered_on: Option<bool>,
}

/// A request to make the backend treat the host as deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptRequest {
    /// The state the host is in.
    pub state: ProvisioningState,
    /// The previous attempt failed: start over.
    pub restart_on_failure: bool,
}

/// A request to apply RAID and disk settings before the host becomes available.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareRequest {
    /// The RAID layout wanted, if any.
    pub target_raid: Option<RaidConfig>,
    /// The root device hints that will be used.
    pub root_device_hints: Option<RootDeviceHints>,
    /// The settings changed since they were last applied.
    pub unprepared: bool,
    /// The previous attempt failed: start over.
    pub restart_on_failure: bool,
}

/// The result of a preparation call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preparation {
    /// How far preparation got.
    pub progress: Progress,
    /// Preparation work was actually started.
    pub started: bool,
}

/// The user data, network data and metadata to put in the config drive.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Cloud-init user data.
    pub user_data: Option<String>,
    /// Network configuration.
    pub network_data: Option<String>,
    /// Instance metadata.
    pub meta_data: Option<String>,
}

impl fmt::Debug for HostConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User data routinely carries passwords and keys: show only what is present.
        formatter
            .debug_struct("HostConfig")
            .field("user_data", &self.user_data.as_ref().map(|_| "<set>"))
            .field("network_data", &self.network_data.as_ref().map(|_| "<set>"))
            .field("meta_data", &self.meta_data.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A request to write an image (or run a custom deploy) and boot it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionRequest {
    /// The image to deploy.
    pub image: Option<Image>,
    /// The custom deploy method, instead of an image.
    pub custom_deploy: Option<CustomDeploy>,
    /// The effective boot mode.
    pub boot_mode: BootMode,
    /// Which disk to write to.
    pub root_device_hints: Option<RootDeviceHints>,
    /// The config drive contents.
    pub host_config: HostConfig,
    /// A forced reboot annotation asks to abort the running deployment and reboot.
    pub force_reboot: bool,
}

/// A request to remove the deployed image and clean the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprovisionRequest {
    /// The previous attempt failed: start over.
    pub restart_on_failure: bool,
    /// Whether to erase disk metadata.
    pub automated_cleaning_mode: AutomatedCleaningMode,
}

/// A request to power the host on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerOnRequest {
    /// The previous attempt failed: start over.
    pub force: bool,
}

/// A request to power the host off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerOffRequest {
    /// Soft (ask the OS) or hard (cut the power).
    pub mode: RebootMode,
    /// The previous attempt failed: start over.
    pub force: bool,
    /// The host's cleaning mode, so a power-off may abort cleaning only when it is disabled.
    pub automated_cleaning_mode: AutomatedCleaningMode,
    /// Turn the power-off into a reboot: the host must never stay off.
    pub reboot_instead: bool,
}

/// Hardware health as reported by the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Not reported.
    #[default]
    Unknown,
    /// Healthy.
    Ok,
    /// Degraded.
    Warning,
    /// Failing.
    Critical,
}

/// The operations the state machine needs from the hardware side.
///
/// Every method must be idempotent: the state machine calls them again and again until they
/// report [`Progress::Done`], and `register` on nearly every reconcile.
pub trait Provisioner: Send + Sync {
    /// Creates or finds the host in the backend and checks the BMC credentials.
    fn register(
        &self,
        request: &RegisterRequest,
    ) -> impl Future<Output = Result<Registration, ProvisionerError>> + Send;

    /// Inspects the hardware.
    fn inspect(
        &self,
        request: &InspectRequest,
    ) -> impl Future<Output = Result<Inspection, ProvisionerError>> + Send;

    /// Reads the current power state; cheap.
    fn hardware_state(
        &self,
    ) -> impl Future<Output = Result<HardwareState, ProvisionerError>> + Send;

    /// Makes the backend treat the host as deployed.
    fn adopt(
        &self,
        request: &AdoptRequest,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Applies RAID and disk settings.
    fn prepare(
        &self,
        request: &PrepareRequest,
    ) -> impl Future<Output = Result<Preparation, ProvisionerError>> + Send;

    /// Writes the image and boots it.
    fn provision(
        &self,
        request: &ProvisionRequest,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Removes the deployed image and cleans the host.
    fn deprovision(
        &self,
        request: &DeprovisionRequest,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Removes the host from the backend.
    fn delete(&self) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Removes the host from the backend without deprovisioning; `force` aborts running work.
    fn detach(
        &self,
        force: bool,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Powers the host on.
    fn power_on(
        &self,
        request: &PowerOnRequest,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Powers the host off (or reboots it when power-off is disabled).
    fn power_off(
        &self,
        request: &PowerOffRequest,
    ) -> impl Future<Output = Result<Progress, ProvisionerError>> + Send;

    /// Whether the backend can take on one more inspection, provisioning or deprovisioning.
    fn has_capacity(&self) -> impl Future<Output = Result<bool, ProvisionerError>> + Send;

    /// Whether a host refused capacity is woken as soon as there is capacity for it. Its
    /// requeue is then only a fallback for a lost wake, and can be long: a host waiting in a
    /// long line is not looked at again and again for nothing.
    fn wakes_hosts_given_capacity(&self) -> bool {
        false
    }

    /// Whether the last power change failed at the BMC.
    fn has_power_failure(&self) -> impl Future<Output = bool> + Send;

    /// The health the BMC reports.
    fn health(&self) -> impl Future<Output = Health> + Send;
}

/// A host the backend asks the controller to look at now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wake {
    /// Namespace of the host.
    pub namespace: String,
    /// Name of the host.
    pub name: String,
}

/// Builds a provisioner for one host, per reconcile.
pub trait ProvisionerFactory: Send + Sync + 'static {
    /// The provisioner type produced.
    type Provisioner: Provisioner;

    /// Hosts to look at now because what they wait for has happened (their deploy agent
    /// checked in or finished a command, a busy slot came free), so that they move on at once
    /// instead of at their next requeue. Asked once each time the controller starts. The
    /// default, for backends that only ever ask through requeue delays, is none.
    fn wakes(&self) -> Option<futures::stream::BoxStream<'static, Wake>> {
        None
    }

    /// Creates the provisioner for `host`. Fails with [`ProvisionerError::NotReady`] while the
    /// backend cannot serve requests yet.
    fn provisioner_for(
        &self,
        host: HostData,
        events: crate::events::EventSink,
    ) -> Result<Self::Provisioner, ProvisionerError>;
}
