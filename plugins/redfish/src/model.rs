//! Driver-level requests and results, independent of Redfish and of Wasm.
//!
//! They mirror the `types` interface of the `ingot:plugin` WIT package.

/// Power state as seen by the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
    /// Turning on.
    PoweringOn,
    /// Turning off.
    PoweringOff,
    /// The BMC did not say.
    Unknown,
}

/// A power change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power on.
    On,
    /// Graceful shutdown, escalating to a forced one after a timeout.
    OffSoft,
    /// Cut power.
    OffHard,
    /// Graceful restart.
    RebootSoft,
    /// Immediate reset (power cycle).
    RebootHard,
}

/// What to boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// Network (PXE).
    Pxe,
    /// Local disk.
    Disk,
    /// (Virtual) CD.
    Cd,
    /// UEFI HTTP boot.
    UefiHttp,
}

/// Whether a boot setting lasts for one boot or until changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPersistence {
    /// Next boot only.
    Once,
    /// Every boot.
    Persistent,
}

/// Firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

/// A boot device request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDevice {
    /// Device.
    pub target: BootTarget,
    /// Once or persistent.
    pub persistence: BootPersistence,
    /// UEFI or legacy.
    pub mode: BootMode,
}

/// Kind of virtual media device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// CD/DVD.
    Cd,
    /// USB stick or floppy.
    RemovableDisk,
}

/// Progress of an operation the BMC may finish later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The requested state holds.
    Done,
    /// Still under way: call again after the delay.
    InProgress {
        /// Suggested delay before the next call, in milliseconds.
        requeue_after_ms: u64,
        /// Note for logs and status.
        detail: String,
    },
}

/// Vendor identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemVendor {
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub product_name: String,
    /// Serial number.
    pub serial_number: String,
}

/// Processor summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cpu {
    /// Architecture, e.g. `x86_64`.
    pub arch: String,
    /// Model name.
    pub model: String,
    /// Maximum speed in MHz.
    pub clock_megahertz: f64,
    /// Logical CPUs over all sockets.
    pub count: u32,
}

/// One NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// MAC address, lower case with colons.
    pub mac: String,
    /// Link speed in Gbit/s.
    pub speed_gbps: u32,
}

/// Whether a disk spins, is flash, or NVMe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// Spinning disk.
    Hdd,
    /// SATA/SAS flash.
    Ssd,
    /// NVMe.
    Nvme,
}

/// One disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// Name as the BMC gives it.
    pub name: String,
    /// Kind, when known.
    pub kind: Option<DiskKind>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Vendor.
    pub vendor: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial_number: String,
}

/// Firmware identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bios {
    /// Version string.
    pub version: String,
    /// Vendor.
    pub vendor: String,
}

/// Hardware of one machine as its BMC reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HardwareDetails {
    /// Vendor identity.
    pub system_vendor: Option<SystemVendor>,
    /// Firmware.
    pub bios: Option<Bios>,
    /// Installed memory in MiB.
    pub ram_mebibytes: u64,
    /// NICs.
    pub nics: Vec<Nic>,
    /// Disks.
    pub storage: Vec<Disk>,
    /// Processors.
    pub cpu: Option<Cpu>,
}
