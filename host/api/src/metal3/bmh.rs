//! `BareMetalHost` (metal3.io/v1alpha1): the desired and observed state of one physical machine.
//!
//! Field names, enums, patterns, required fields and defaults follow the upstream Metal3 CRD so
//! that manifests written for Metal3 load unchanged.

use k8s_openapi::api::core::v1::{ObjectReference, SecretReference, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::hardware::HardwareDetails;

/// Desired state of a bare-metal host.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metal3.io",
    version = "v1alpha1",
    kind = "BareMetalHost",
    doc = "A physical machine managed through its BMC: power, inspection, RAID, firmware and provisioning of an image.",
    plural = "baremetalhosts",
    namespaced,
    status = "BareMetalHostStatus",
    shortname = "bmh",
    shortname = "bmhost",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.operationalStatus","description":"Operational status","priority":1}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.provisioning.state","description":"Provisioning status"}"#,
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerRef.name","description":"Consumer using this host"}"#,
    printcolumn = r#"{"name":"BMC","type":"string","jsonPath":".spec.bmc.address","description":"Address of management controller","priority":1}"#,
    printcolumn = r#"{"name":"Online","type":"string","jsonPath":".spec.online","description":"Whether the host is online or not"}"#,
    printcolumn = r#"{"name":"Error","type":"string","jsonPath":".status.errorType","description":"Type of the most recent error"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of BareMetalHost"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalHostSpec {
    /// Taints applied to the host. Deprecated upstream and never acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,

    /// How to reach the host's baseboard management controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<BmcDetails>,

    /// Deprecated hardware profile name used to pick default root device hints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<String>,

    /// Which disk the image is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,

    /// Firmware boot mode; `UEFI` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,

    /// MAC address of the NIC the host boots from (never the BMC's).
    #[serde(
        rename = "bootMACAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"))]
    pub boot_mac_address: Option<String>,

    /// Desired power state.
    pub online: bool,

    /// The object (usually a Metal3Machine) that claimed this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_ref: Option<ObjectReference>,

    /// The image to provision; setting it with `online: true` starts provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,

    /// Secret holding the user data handed to the provisioned OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<SecretReference>,

    /// Secret (key `networkData`) for the ramdisk used before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprovisioning_network_data_name: Option<String>,

    /// Secret holding the network data handed to the provisioned OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<SecretReference>,

    /// Secret holding the meta data handed to the provisioned OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<SecretReference>,

    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The host already runs an OS that must be left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub externally_provisioned: Option<bool>,

    /// Whether disks are cleaned before provisioning and after deprovisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "metadata"))]
    pub automated_cleaning_mode: Option<AutomatedCleaningMode>,

    /// A custom deploy step used instead of writing an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,

    /// Deprecated BIOS settings; refused by admission in favour of HostFirmwareSettings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareConfig>,

    /// RAID layout; absent means "leave RAID as it is".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidConfig>,

    /// CPU architecture; filled in from inspection when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,

    /// Replace power-off with reboot (for hosts that must never be off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_power_off: Option<bool>,

    /// How hardware inspection runs; empty means `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_mode: Option<InspectionMode>,

    /// Switch-port attachments of the host's NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

/// Connection details of a baseboard management controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BmcDetails {
    /// URL whose scheme selects the driver, e.g. `redfish+https://10.0.0.1/redfish/v1/Systems/1`.
    pub address: String,

    /// Secret in the host's namespace with keys `username` and `password`.
    pub credentials_name: String,

    /// Skip TLS certificate verification when talking to the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_certificate_verification: Option<bool>,
}

/// Firmware boot mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BootMode {
    /// UEFI boot (the default).
    #[serde(rename = "UEFI")]
    Uefi,
    /// UEFI boot with secure boot enabled.
    #[serde(rename = "UEFISecureBoot")]
    UefiSecureBoot,
    /// BIOS boot.
    #[serde(rename = "legacy")]
    Legacy,
}

/// Whether disks are cleaned automatically.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutomatedCleaningMode {
    /// Erase disk metadata on every deprovision (the default).
    #[default]
    Metadata,
    /// Never clean automatically.
    Disabled,
}

/// How hardware inspection runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InspectionMode {
    /// No inspection.
    Disabled,
    /// In-band inspection by the deploy agent (the default).
    Agent,
    /// Out-of-band inspection through the BMC.
    Fast,
}

/// Hints that select the disk an image is written to. All given hints must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootDeviceHints {
    /// `/dev/X` or `/dev/disk/by-path/X`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// SCSI address, e.g. `0:0:0:0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// Vendor-specific model name (substring match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vendor name (substring match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Disk serial number (exact match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Smallest acceptable size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_size_gigabytes: Option<i64>,
    /// World Wide Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// World Wide Name with the vendor extension appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
    /// Vendor extension of the World Wide Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    /// `true` selects spinning disks, `false` solid-state ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

/// An image to write to the host's root disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Where the image is downloaded from (http, https, ftp, gopher or oci).
    pub url: String,
    /// The checksum value, or a URL to a checksum file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Algorithm of `checksum`; empty or `auto` lets the provisioner infer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<ChecksumType>,
    /// Disk format of the image.
    #[serde(rename = "format", default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<DiskFormat>,
    /// Pull secret for `oci://` images, in the host's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_auth_secret_name: Option<String>,
}

/// Checksum algorithm of an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumType {
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// Let the provisioner infer the algorithm.
    Auto,
}

/// Disk format of an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiskFormat {
    /// Raw disk image, written byte for byte.
    #[serde(rename = "raw")]
    Raw,
    /// QEMU copy-on-write image.
    #[serde(rename = "qcow2")]
    Qcow2,
    /// VirtualBox disk image.
    #[serde(rename = "vdi")]
    Vdi,
    /// VMware disk image.
    #[serde(rename = "vmdk")]
    Vmdk,
    /// An ISO booted over virtual media and never written to disk.
    #[serde(rename = "live-iso")]
    LiveIso,
}

/// A custom deploy step replacing the image write.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CustomDeploy {
    /// Name of the deploy step.
    pub method: String,
}

/// Deprecated BIOS switches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareConfig {
    /// Enable CPU virtualization extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualization_enabled: Option<bool>,
    /// Enable simultaneous multithreading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simultaneous_multithreading_enabled: Option<bool>,
    /// Enable SR-IOV.
    #[serde(
        rename = "sriovEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sriov_enabled: Option<bool>,
}

/// RAID layout. Hardware and software volumes are mutually exclusive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaidConfig {
    /// Hardware RAID volumes; an empty list removes existing hardware RAID.
    #[serde(
        rename = "hardwareRAIDVolumes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hardware_raid_volumes: Option<Vec<HardwareRaidVolume>>,
    /// Software RAID volumes (at most two).
    #[serde(
        rename = "softwareRAIDVolumes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 2))]
    pub software_raid_volumes: Option<Vec<SoftwareRaidVolume>>,
}

/// One hardware RAID volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardwareRaidVolume {
    /// Size in GiB; 0 or absent means the maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size_gibibytes: Option<i64>,
    /// RAID level.
    #[schemars(extend("enum" = ["0", "1", "2", "5", "6", "1+0", "5+0", "6+0"]))]
    pub level: String,
    /// Volume name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub name: Option<String>,
    /// Prefer spinning (`true`) or solid-state (`false`) disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Number of disks to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub number_of_physical_disks: Option<i64>,
    /// RAID controller to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Controller-specific disk names; needs `controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_disks: Option<Vec<String>>,
}

/// One software RAID volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareRaidVolume {
    /// Size in GiB; 0 or absent means the maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size_gibibytes: Option<i64>,
    /// RAID level.
    #[schemars(extend("enum" = ["0", "1", "1+0"]))]
    pub level: String,
    /// Disks making up the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2))]
    pub physical_disks: Option<Vec<RootDeviceHints>>,
    /// This volume holds the root filesystem (at most one volume, RAID-1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<bool>,
}

/// A NIC's attachment to a switch port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// Interface name (exclusive with `macAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Interface MAC address (exclusive with `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"))]
    pub mac_address: Option<String>,
    /// The HostNetworkAttachment describing the port configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network_attachment: Option<NamespacedName>,
    /// The switch port the NIC is cabled to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_port: Option<SwitchPort>,
}

/// A reference by name and optional namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NamespacedName {
    /// Object name.
    pub name: String,
    /// Object namespace; the referrer's when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A port on a top-of-rack switch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SwitchPort {
    /// Switch chassis MAC address.
    #[serde(rename = "switchID")]
    pub switch_id: String,
    /// Port identifier on the switch.
    #[serde(rename = "portID")]
    pub port_id: String,
}

/// Observed state of a bare-metal host.
///
/// Fields that upstream marks required are listed in the schema's `required`, but decoding
/// tolerates their absence (status may come from an annotation or an older object).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("required" = ["errorCount", "errorMessage", "operationalStatus", "poweredOn", "provisioning", "provisioningFailCount"]))]
pub struct BareMetalHostStatus {
    /// Coarse health of the host.
    #[serde(default)]
    pub operational_status: OperationalStatus,
    /// Class of the most recent error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// Deprecated hardware profile chosen at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<String>,
    /// Inspected hardware; HardwareData is the durable copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareDetails>,
    /// Provisioning progress.
    #[serde(default)]
    pub provisioning: ProvisionStatus,
    /// Credentials that last worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good_credentials: Option<CredentialsStatus>,
    /// Credentials last sent to the provisioner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried_credentials: Option<CredentialsStatus>,
    /// Last provisioner error message.
    #[serde(default)]
    pub error_message: String,
    /// Last observed power state.
    #[serde(default)]
    pub powered_on: bool,
    /// Start and end times of the main operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_history: Option<OperationHistory>,
    /// Consecutive errors, driving the retry backoff.
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub error_count: i64,
    /// Consecutive failed provisionings of the current image.
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub provisioning_fail_count: i64,
    /// Image of the latest provisioning attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_image: Option<Image>,
    /// Standard conditions (Manageable, AvailableForProvisioning, Provisioned, Ready, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// Coarse health of a host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OperationalStatus {
    /// Not yet set.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// Healthy.
    #[serde(rename = "OK")]
    Ok,
    /// No BMC details; the host is unmanaged.
    #[serde(rename = "discovered")]
    Discovered,
    /// See `errorType` and `errorMessage`.
    #[serde(rename = "error")]
    Error,
    /// Waiting for provisioner capacity.
    #[serde(rename = "delayed")]
    Delayed,
    /// Removed from the provisioner on request.
    #[serde(rename = "detached")]
    Detached,
    /// Live firmware work on a provisioned host.
    #[serde(rename = "servicing")]
    Servicing,
}

/// Class of a host error.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ErrorType {
    /// Re-registering a provisioned host failed.
    #[serde(rename = "provisioned registration error")]
    ProvisionedRegistration,
    /// Registration with the provisioner failed.
    #[serde(rename = "registration error")]
    Registration,
    /// Hardware inspection failed.
    #[serde(rename = "inspection error")]
    Inspection,
    /// Preparation (RAID, firmware) failed.
    #[serde(rename = "preparation error")]
    Preparation,
    /// Provisioning or deprovisioning failed.
    #[serde(rename = "provisioning error")]
    Provisioning,
    /// A power change failed.
    #[serde(rename = "power management error")]
    PowerManagement,
    /// Live servicing failed.
    #[serde(rename = "servicing error")]
    Servicing,
}

/// Provisioning progress of a host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("required" = ["ID", "state"]))]
pub struct ProvisionStatus {
    /// Current provisioning state.
    #[serde(default)]
    pub state: ProvisioningState,
    /// Provisioner node identifier.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The image that was successfully provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Root device hints that were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
    /// Boot mode that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    /// RAID layout that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidConfig>,
    /// Deprecated; always empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareConfig>,
    /// Custom deploy step that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,
}

/// Provisioning states of a host. There is no error state: errors live in the
/// operational status and error type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub enum ProvisioningState {
    /// Not yet handled.
    #[default]
    #[serde(rename = "")]
    None,
    /// No BMC details.
    #[serde(rename = "unmanaged")]
    Unmanaged,
    /// Checking BMC access.
    #[serde(rename = "registering")]
    Registering,
    /// Legacy state that moves straight to preparing.
    #[serde(rename = "match profile")]
    MatchProfile,
    /// Applying RAID and firmware settings.
    #[serde(rename = "preparing")]
    Preparing,
    /// Deprecated name of `available`, still accepted on read.
    #[serde(rename = "ready")]
    Ready,
    /// Ready to be provisioned.
    #[serde(rename = "available")]
    Available,
    /// Writing the image.
    #[serde(rename = "provisioning")]
    Provisioning,
    /// Image written.
    #[serde(rename = "provisioned")]
    Provisioned,
    /// Running an OS installed by someone else.
    #[serde(rename = "externally provisioned")]
    ExternallyProvisioned,
    /// Removing the image and cleaning.
    #[serde(rename = "deprovisioning")]
    Deprovisioning,
    /// Inspecting hardware.
    #[serde(rename = "inspecting")]
    Inspecting,
    /// Powering off before the host object goes away.
    #[serde(rename = "powering off before delete")]
    PoweringOffBeforeDelete,
    /// Removing the host from the provisioner.
    #[serde(rename = "deleting")]
    Deleting,
}

impl ProvisioningState {
    /// The state with deprecated aliases resolved (`ready` becomes `available`).
    pub fn canonical(self) -> Self {
        match self {
            Self::Ready => Self::Available,
            other => other,
        }
    }
}

/// Credentials identified by Secret reference and resource version, never by value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// The Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretReference>,
    /// The Secret's resourceVersion at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
}

/// Timing of the main host operations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct OperationHistory {
    /// Registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<OperationMetric>,
    /// Inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect: Option<OperationMetric>,
    /// Provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<OperationMetric>,
    /// Deprovisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovision: Option<OperationMetric>,
}

/// Start and end of one operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct OperationMetric {
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    /// When the operation ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}
