//! Hardware inventory in the shape of Metal3's `HardwareData.spec.hardware`.
//!
//! Field names follow the upstream JSON exactly (camelCase), and every field is optional on
//! the wire, so the operator can copy the agent's report into a `HardwareData` object.

use serde::{Deserialize, Serialize};

/// The whole inventory of one machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareDetails {
    /// Maker and model of the machine.
    #[serde(default)]
    pub system_vendor: SystemVendor,
    /// Firmware versions.
    #[serde(default)]
    pub firmware: Firmware,
    /// Installed memory in MiB.
    #[serde(default)]
    pub ram_mebibytes: u64,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Block devices.
    #[serde(default)]
    pub storage: Vec<Storage>,
    /// Processors.
    #[serde(default)]
    pub cpu: Cpu,
    /// Host name the machine reports.
    #[serde(default)]
    pub hostname: String,
}

/// Maker and model of the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemVendor {
    /// Manufacturer name.
    #[serde(default)]
    pub manufacturer: String,
    /// Product name.
    #[serde(default)]
    pub product_name: String,
    /// Chassis serial number.
    #[serde(default)]
    pub serial_number: String,
}

/// Firmware versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// System firmware.
    #[serde(default)]
    pub bios: Bios,
}

/// System firmware identification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bios {
    /// Release date as the firmware reports it.
    #[serde(default)]
    pub date: String,
    /// Firmware vendor.
    #[serde(default)]
    pub vendor: String,
    /// Firmware version.
    #[serde(default)]
    pub version: String,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    /// Kernel interface name.
    pub name: String,
    /// PCI vendor and device ids, e.g. `0x8086 0x1572`.
    #[serde(default)]
    pub model: String,
    /// MAC address, lower case.
    pub mac: String,
    /// IP address, when configured.
    #[serde(default)]
    pub ip: String,
    /// Link speed in Gbps.
    #[serde(default)]
    pub speed_gbps: u64,
    /// Whether the interface can network-boot.
    #[serde(default)]
    pub pxe: bool,
    /// PCI address, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pci_address: String,
}

/// Kind of disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskType {
    /// Spinning disk.
    #[default]
    #[serde(rename = "HDD")]
    Hdd,
    /// Solid state disk on SATA or SAS.
    #[serde(rename = "SSD")]
    Ssd,
    /// NVMe device.
    #[serde(rename = "NVME")]
    Nvme,
}

/// One block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Stable name: the `/dev/disk/by-path/...` link when available, otherwise `/dev/<kernel name>`.
    pub name: String,
    /// Other names of the device (`/dev/sda`, by-id links).
    #[serde(default)]
    pub alternate_names: Vec<String>,
    /// Whether the disk spins.
    #[serde(default)]
    pub rotational: bool,
    /// Disk kind.
    #[serde(default, rename = "type")]
    pub disk_type: DiskType,
    /// Capacity in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// Vendor string.
    #[serde(default)]
    pub vendor: String,
    /// Model string.
    #[serde(default)]
    pub model: String,
    /// Serial number.
    #[serde(default)]
    pub serial_number: String,
    /// World wide name.
    #[serde(default)]
    pub wwn: String,
    /// Vendor extension of the WWN.
    #[serde(default)]
    pub wwn_vendor_extension: String,
    /// WWN followed by its vendor extension.
    #[serde(default)]
    pub wwn_with_extension: String,
    /// SCSI host:channel:target:lun.
    #[serde(default)]
    pub hctl: String,
}

/// Processor summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// Architecture, e.g. `x86_64`.
    #[serde(default)]
    pub arch: String,
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// Clock speed in MHz.
    #[serde(default)]
    pub clock_megahertz: f64,
    /// CPU feature flags.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Number of logical CPUs.
    #[serde(default)]
    pub count: u32,
}

impl Storage {
    /// The kernel device name (`/dev/sda`), falling back to the stable name.
    pub fn device_name(&self) -> &str {
        self.alternate_names
            .iter()
            .find(|name| !name.starts_with("/dev/disk/"))
            .map_or(self.name.as_str(), String::as_str)
    }
}
