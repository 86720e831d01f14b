//! Hardware profiles: what a simulated machine is made of.
//!
//! A profile is a YAML (or JSON) document describing one kind of machine. Per-machine
//! identities (MAC addresses, serial numbers, WWNs) are derived from the machine's index so
//! that a lab of N machines is reproducible from run to run, unless the profile pins them.

use serde::{Deserialize, Serialize};

use ingot_agent::inventory::{
    Bios, Cpu, DiskType, Firmware, HardwareDetails, Nic, Storage, SystemVendor,
};

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile file could not be read.
    #[error("cannot read the hardware profile {path}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not valid YAML of the expected shape.
    #[error("invalid hardware profile {path}")]
    Parse {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// The profile describes an impossible machine.
    #[error("invalid hardware profile: {0}")]
    Invalid(String),
}

/// One kind of machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Manufacturer, e.g. `Dell Inc.`.
    pub vendor: String,
    /// Product name.
    pub model: String,
    /// Processors.
    pub cpu: CpuProfile,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Network interfaces.
    pub nics: Vec<NicProfile>,
    /// Disks.
    pub disks: Vec<DiskProfile>,
    /// Milliseconds the machine takes to power on or off.
    #[serde(default = "default_power_delay_ms")]
    pub power_delay_ms: u64,
}

/// Processors of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuProfile {
    /// Model name.
    pub model: String,
    /// Sockets.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per socket.
    pub threads: u32,
    /// Clock in MHz.
    pub mhz: u32,
}

/// One NIC of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicProfile {
    /// Interface name.
    pub name: String,
    /// Link speed in Gbps.
    pub speed_gbps: u64,
    /// Whether it network-boots.
    #[serde(default = "yes")]
    pub pxe: bool,
    /// Fixed MAC; derived from the machine index when absent.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One disk of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskProfile {
    /// Kernel name, e.g. `sda` or `nvme0n1`.
    pub name: String,
    /// Vendor string.
    pub vendor: String,
    /// Model string.
    pub model: String,
    /// Capacity in GiB (backed by a sparse file).
    pub size_gib: u64,
    /// Whether it spins.
    #[serde(default)]
    pub rotational: bool,
    /// Fixed serial; derived from the machine index when absent.
    #[serde(default)]
    pub serial: Option<String>,
    /// Fixed WWN; derived from the machine index when absent.
    #[serde(default)]
    pub wwn: Option<String>,
}

fn default_power_delay_ms() -> u64 {
    500
}

fn yes() -> bool {
    true
}

impl Default for Profile {
    /// A modest two-disk server.
    fn default() -> Self {
        let disk = |name: &str, model: &str, size_gib, rotational| DiskProfile {
            name: name.into(),
            vendor: "ATA".into(),
            model: model.into(),
            size_gib,
            rotational,
            serial: None,
            wwn: None,
        };
        Self {
            vendor: "Ingot Lab".into(),
            model: "Virtual Server V1".into(),
            cpu: CpuProfile {
                model: "Virtual CPU @ 2.40GHz".into(),
                sockets: 1,
                cores: 4,
                threads: 8,
                mhz: 2400,
            },
            memory_mib: 16384,
            nics: vec![
                NicProfile {
                    name: "eno1".into(),
                    speed_gbps: 10,
                    pxe: true,
                    mac: None,
                },
                NicProfile {
                    name: "eno2".into(),
                    speed_gbps: 10,
                    pxe: false,
                    mac: None,
                },
            ],
            disks: vec![
                disk("sda", "Virtual SSD", 20, false),
                disk("sdb", "Virtual HDD", 100, true),
            ],
            power_delay_ms: default_power_delay_ms(),
        }
    }
}

impl Profile {
    /// Reads a profile from a YAML or JSON file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        let profile: Self = serde_yaml::from_str(&text).map_err(|source| Error::Parse {
            path: shown,
            source,
        })?;
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.disks.is_empty() {
            return Err(Error::Invalid("a machine needs at least one disk".into()));
        }
        if self.nics.is_empty() {
            return Err(Error::Invalid("a machine needs at least one NIC".into()));
        }
        if let Some(disk) = self.disks.iter().find(|d| d.size_gib == 0) {
            return Err(Error::Invalid(format!("disk {} has no size", disk.name)));
        }
        Ok(())
    }

    /// The inventory of machine number `index`, with its disks' stable names.
    pub fn inventory(&self, index: u32, hostname: &str) -> HardwareDetails {
        let nics = self.nics.iter().enumerate().map(|(n, nic)| Nic {
            name: nic.name.clone(),
            model: "0x1af4 0x1041".into(),
            mac: nic
                .mac
                .clone()
                .unwrap_or_else(|| derived_mac(index, n))
                .to_lowercase(),
            speed_gbps: nic.speed_gbps,
            pxe: nic.pxe,
            ..Nic::default()
        });
        let storage = self.disks.iter().enumerate().map(|(n, disk)| Storage {
            name: format!("/dev/disk/by-path/pci-0000:00:1f.2-ata-{}", n + 1),
            alternate_names: vec![format!("/dev/{}", disk.name)],
            rotational: disk.rotational,
            disk_type: if disk.name.starts_with("nvme") {
                DiskType::Nvme
            } else if disk.rotational {
                DiskType::Hdd
            } else {
                DiskType::Ssd
            },
            size_bytes: disk.size_gib << 30,
            vendor: disk.vendor.clone(),
            model: disk.model.clone(),
            serial_number: disk
                .serial
                .clone()
                .unwrap_or_else(|| format!("LAB{index:04}D{n}")),
            wwn: disk
                .wwn
                .clone()
                .unwrap_or_else(|| format!("0x5000c500{index:04x}{n:04x}")),
            hctl: format!("{n}:0:0:0"),
            ..Storage::default()
        });
        HardwareDetails {
            system_vendor: SystemVendor {
                manufacturer: self.vendor.clone(),
                product_name: self.model.clone(),
                serial_number: format!("LABSN{index:06}"),
            },
            firmware: Firmware {
                bios: Bios {
                    date: "01/01/2026".into(),
                    vendor: self.vendor.clone(),
                    version: "1.0.0".into(),
                },
            },
            ram_mebibytes: self.memory_mib,
            nics: nics.collect(),
            storage: storage.collect(),
            cpu: Cpu {
                arch: "x86_64".into(),
                model: self.cpu.model.clone(),
                clock_megahertz: f64::from(self.cpu.mhz),
                flags: vec!["fpu".into(), "vmx".into(), "sse4_2".into(), "avx2".into()],
                count: self.cpu.sockets * self.cpu.threads,
            },
            hostname: hostname.to_owned(),
        }
    }
}

/// Locally administered MAC unique per machine and NIC.
fn derived_mac(index: u32, nic: usize) -> String {
    let [_, high, mid, low] = index.to_be_bytes();
    format!("52:54:{high:02x}:{mid:02x}:{low:02x}:{:02x}", nic as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_get_distinct_reproducible_identities() {
        let profile = Profile::default();
        let first = profile.inventory(0, "lab-0");
        let second = profile.inventory(1, "lab-1");

        assert_eq!(first.nics[0].mac, "52:54:00:00:00:00");
        assert_eq!(second.nics[1].mac, "52:54:00:00:01:01");
        assert_ne!(
            first.storage[0].serial_number,
            second.storage[0].serial_number
        );
        assert_eq!(first, profile.inventory(0, "lab-0"));
    }

    #[test]
    fn profiles_are_read_from_yaml_and_validated() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("p.yaml");
        let yaml = serde_yaml::to_string(&Profile::default()).unwrap_or_default();
        std::fs::write(&path, yaml.replace("sizeGib: 20", "sizeGib: 0")).unwrap_or_default();

        let error = Profile::from_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();

        assert!(error.contains("disk sda has no size"), "{error}");
    }

    #[test]
    fn the_shipped_example_profile_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/dell-r650.yaml");

        let profile = Profile::from_file(&path).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!((profile.cpu.sockets, profile.disks.len()), (2, 2));
        assert_eq!(profile.inventory(0, "x").cpu.count, 112);
    }
}
