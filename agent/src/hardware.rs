//! Access to the machine's hardware: inventory and disks.
//!
//! [`Hardware`] is the seam between the agent's commands and the machine. On a real machine
//! [`SysfsHardware`] reads `/sys`, `/proc` and `/dev`; the virtual lab supplies its own
//! implementation backed by sparse files.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::inventory::{
    Bios, Cpu, DiskType, Firmware, HardwareDetails, Nic, Storage, SystemVendor,
};

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file describing the hardware could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A disk could not be opened for writing.
    #[error("cannot open disk {disk} for writing")]
    OpenDisk {
        /// The disk's name.
        disk: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the agent needs from the machine it runs on.
pub trait Hardware: Send + Sync {
    /// Collects the hardware inventory.
    fn inventory(&self) -> Result<HardwareDetails, Error>;

    /// Opens a disk from the inventory for reading and writing.
    fn open_disk(&self, disk: &Storage) -> Result<File, Error> {
        let path = disk.device_name();
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::OpenDisk {
                disk: path.to_owned(),
                source,
            })
    }
}

/// Hardware of the machine the agent runs on, read from the kernel's pseudo filesystems.
#[derive(Debug, Clone)]
pub struct SysfsHardware {
    root: PathBuf,
}

impl Default for SysfsHardware {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }
}

impl SysfsHardware {
    /// Reads `sys/`, `proc/` and `dev/` below `root` instead of `/` (used by tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn cpu(&self) -> Result<Cpu, Error> {
        let cpuinfo = read_required(&self.path("proc/cpuinfo"))?;
        let field = |name: &str| {
            cpuinfo
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_default()
        };
        let count = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();

        Ok(Cpu {
            arch: std::env::consts::ARCH.to_owned(),
            model: field("model name"),
            clock_megahertz: field("cpu MHz").parse().unwrap_or_default(),
            flags: field("flags")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
        })
    }

    fn ram_mebibytes(&self) -> Result<u64, Error> {
        let meminfo = read_required(&self.path("proc/meminfo"))?;
        let kib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_default();
        Ok(kib / 1024)
    }

    fn dmi(&self, name: &str) -> String {
        read_optional(&self.path("sys/class/dmi/id").join(name))
    }

    fn nics(&self) -> Vec<Nic> {
        let mut nics: Vec<Nic> = list_dir(&self.path("sys/class/net"))
            .into_iter()
            .filter_map(|dir| {
                let device = dir.join("device");
                // Interfaces without a backing device are virtual (bridges, veth, loopback).
                if !device.exists() {
                    return None;
                }
                let speed_mbps: u64 = read_optional(&dir.join("speed"))
                    .parse()
                    .unwrap_or_default();
                let model = format!(
                    "{} {}",
                    read_optional(&device.join("vendor")),
                    read_optional(&device.join("device"))
                );
                Some(Nic {
                    name: file_name(&dir),
                    model: model.trim().to_owned(),
                    mac: read_optional(&dir.join("address")).to_lowercase(),
                    speed_gbps: speed_mbps / 1000,
                    pxe: true,
                    pci_address: link_name(&device),
                    ..Nic::default()
                })
            })
            .collect();
        nics.sort_by(|a, b| a.name.cmp(&b.name));
        nics
    }

    fn disks(&self) -> Vec<Storage> {
        let by_path = self.links_by_target("dev/disk/by-path");
        let by_id = self.links_by_target("dev/disk/by-id");
        let mut disks: Vec<Storage> = list_dir(&self.path("sys/block"))
            .into_iter()
            .filter(|dir| is_disk(&file_name(dir)))
            .map(|dir| self.disk(&dir, &by_path, &by_id))
            .collect();
        disks.sort_by(|a, b| a.name.cmp(&b.name));
        disks
    }

    fn disk(
        &self,
        dir: &Path,
        by_path: &[(String, String)],
        by_id: &[(String, String)],
    ) -> Storage {
        let kernel_name = file_name(dir);
        let device = dir.join("device");
        let sectors: u64 = read_optional(&dir.join("size")).parse().unwrap_or_default();
        let rotational = read_optional(&dir.join("queue/rotational")) == "1";
        let links_for = |links: &[(String, String)]| -> Vec<String> {
            links
                .iter()
                .filter(|(_, target)| *target == kernel_name)
                .map(|(link, _)| link.clone())
                .collect()
        };
        let paths = links_for(by_path);
        let device_name = format!("/dev/{kernel_name}");
        let mut alternate_names = vec![device_name.clone()];
        alternate_names.extend(links_for(by_id));

        let wwid = read_optional(&device.join("wwid"));
        let wwn = read_optional(&dir.join("wwid"));
        let hctl = link_name(&device);
        Storage {
            name: paths.first().cloned().unwrap_or(device_name),
            alternate_names,
            rotational,
            disk_type: disk_type(&kernel_name, rotational),
            size_bytes: sectors * 512,
            vendor: read_optional(&device.join("vendor")),
            model: read_optional(&device.join("model")),
            serial_number: read_optional(&device.join("serial")),
            wwn: if wwn.is_empty() { wwid } else { wwn },
            hctl: if is_hctl(&hctl) { hctl } else { String::new() },
            ..Storage::default()
        }
    }

    /// Symlinks in a `/dev/disk/by-*` directory as `(link path, target kernel name)`.
    fn links_by_target(&self, dir: &str) -> Vec<(String, String)> {
        list_dir(&self.path(dir))
            .into_iter()
            .filter_map(|link| {
                let target = std::fs::read_link(&link).ok()?;
                Some((format!("/{dir}/{}", file_name(&link)), file_name(&target)))
            })
            .collect()
    }
}

impl Hardware for SysfsHardware {
    fn inventory(&self) -> Result<HardwareDetails, Error> {
        Ok(HardwareDetails {
            system_vendor: SystemVendor {
                manufacturer: self.dmi("sys_vendor"),
                product_name: self.dmi("product_name"),
                serial_number: self.dmi("product_serial"),
            },
            firmware: Firmware {
                bios: Bios {
                    date: self.dmi("bios_date"),
                    vendor: self.dmi("bios_vendor"),
                    version: self.dmi("bios_version"),
                },
            },
            ram_mebibytes: self.ram_mebibytes()?,
            nics: self.nics(),
            storage: self.disks(),
            cpu: self.cpu()?,
            hostname: read_optional(&self.path("proc/sys/kernel/hostname")),
        })
    }
}

/// Hardware described by an inventory, with each disk backed by a file (sparse or not).
///
/// Used by the virtual lab and by tests: the inventory is what the machine claims to have,
/// and [`Hardware::open_disk`] opens the file registered for the disk's name.
#[derive(Debug, Clone)]
pub struct SimulatedHardware {
    /// The inventory reported.
    pub details: HardwareDetails,
    /// Disk name (as in `details.storage[].name`) to backing file.
    pub disk_files: std::collections::BTreeMap<String, PathBuf>,
}

impl Hardware for SimulatedHardware {
    fn inventory(&self) -> Result<HardwareDetails, Error> {
        Ok(self.details.clone())
    }

    fn open_disk(&self, disk: &Storage) -> Result<File, Error> {
        let missing = || {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no backing file for this disk",
            )
        };
        let path = self
            .disk_files
            .get(&disk.name)
            .ok_or_else(|| Error::OpenDisk {
                disk: disk.name.clone(),
                source: missing(),
            })?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::OpenDisk {
                disk: disk.name.clone(),
                source,
            })
    }
}

fn disk_type(kernel_name: &str, rotational: bool) -> DiskType {
    if kernel_name.starts_with("nvme") {
        DiskType::Nvme
    } else if rotational {
        DiskType::Hdd
    } else {
        DiskType::Ssd
    }
}

/// Whole disks worth inventorying: not loop, RAM, optical, device-mapper or zram devices.
fn is_disk(kernel_name: &str) -> bool {
    const SKIPPED: [&str; 7] = ["loop", "ram", "zram", "sr", "dm-", "md", "fd"];
    !SKIPPED.iter().any(|prefix| kernel_name.starts_with(prefix))
}

fn is_hctl(name: &str) -> bool {
    let parts: Vec<&str> = name.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn read_required(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a one-line attribute; absent or unreadable attributes are empty, as many are optional.
fn read_optional(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn link_name(path: &Path) -> String {
    std::fs::read_link(path)
        .map(|target| file_name(&target))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, relative: &str, contents: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap_or(root)).unwrap_or_default();
        std::fs::write(path, contents).unwrap_or_default();
    }

    fn fake_machine(root: &Path) {
        write(
            root,
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Xeon\ncpu MHz\t\t: 2400.5\nflags\t\t: fpu vmx\n\nprocessor\t: 1\nmodel name\t: Xeon\n",
        );
        write(
            root,
            "proc/meminfo",
            "MemTotal:       16777216 kB\nMemFree: 1 kB\n",
        );
        write(root, "sys/class/dmi/id/sys_vendor", "Dell Inc.\n");
        write(root, "sys/class/net/eno1/address", "AA:BB:CC:00:00:01\n");
        write(root, "sys/class/net/eno1/speed", "25000\n");
        write(root, "sys/class/net/eno1/device/vendor", "0x8086\n");
        write(root, "sys/class/net/eno1/device/device", "0x1572\n");
        write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        write(root, "sys/block/sda/size", "209715200\n");
        write(root, "sys/block/sda/queue/rotational", "1\n");
        write(root, "sys/block/sda/wwid", "naa.5000c500a1b2c3d4\n");
        write(root, "sys/devices/host0/0:0:0:0/model", "ST1000NM\n");
        write(root, "sys/devices/host0/0:0:0:0/vendor", "SEAGATE\n");
        write(root, "sys/devices/host0/0:0:0:0/serial", "ZA1\n");
        write(root, "sys/block/loop0/size", "8\n");
        std::fs::create_dir_all(root.join("dev/disk/by-path")).unwrap_or_default();
        symlink(
            root.join("sys/devices/host0/0:0:0:0"),
            root.join("sys/block/sda/device"),
        )
        .unwrap_or_default();
        symlink(
            "../../sda",
            root.join("dev/disk/by-path/pci-0000:00:1f.2-ata-1"),
        )
        .unwrap_or_default();
    }

    #[test]
    fn inventory_reads_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fake_machine(root.path());

        let details = SysfsHardware::with_root(root.path())
            .inventory()
            .unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(details.cpu.count, 2);
        assert_eq!(details.cpu.model, "Xeon");
        assert_eq!(details.cpu.flags, ["fpu", "vmx"]);
        assert_eq!(details.ram_mebibytes, 16384);
        assert_eq!(details.system_vendor.manufacturer, "Dell Inc.");
        assert_eq!(
            details.nics.len(),
            1,
            "loopback has no device and is skipped"
        );
        assert_eq!(details.nics[0].mac, "aa:bb:cc:00:00:01");
        assert_eq!(details.nics[0].speed_gbps, 25);
        assert_eq!(details.nics[0].model, "0x8086 0x1572");
        assert_eq!(details.storage.len(), 1, "loop devices are skipped");
        let disk = &details.storage[0];
        assert_eq!(disk.name, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1");
        assert_eq!(disk.device_name(), "/dev/sda");
        assert_eq!(disk.size_bytes, 100 << 30);
        assert_eq!(disk.hctl, "0:0:0:0");
        assert_eq!(disk.wwn, "naa.5000c500a1b2c3d4");
        assert_eq!(
            (
                disk.vendor.as_str(),
                disk.model.as_str(),
                disk.serial_number.as_str()
            ),
            ("SEAGATE", "ST1000NM", "ZA1")
        );
        assert_eq!(disk.disk_type, DiskType::Hdd);
    }

    #[test]
    fn inventory_of_this_machine_has_cpus_and_memory() {
        let details = SysfsHardware::default()
            .inventory()
            .unwrap_or_else(|e| panic!("{e}"));

        assert!(details.cpu.count >= 1);
        assert!(details.ram_mebibytes > 0);
        let json = serde_json::to_value(&details).unwrap_or_default();
        assert!(json.get("ramMebibytes").is_some() && json.get("systemVendor").is_some());
    }
}
