//! Driver-level requests and results: the shared types of the
//! `ingot:plugin` WIT package, as generated for the SDK.

pub use ingot_plugin_sdk::types::{
    Bios, BootDevice, BootMode, BootPersistence, BootTarget, Cpu, Disk, DiskKind, HardwareDetails,
    MediaKind, Nic, Pending, PowerAction, PowerState, Progress, SystemVendor, VirtualMedia,
};
