//! Hardware inventory and BIOS attributes.
//!
//! Sub-resources a BMC does not implement (404, 405, 501) are reported as
//! empty rather than failing the whole inventory: an emulator or an old BMC
//! without `Processors` still has NICs worth reporting.

use serde_json::Value;

use crate::driver::Session;
use crate::error::RedfishError;
use crate::json;
use crate::model::{Bios, Cpu, Disk, DiskKind, HardwareDetails, Nic, SystemVendor};
use crate::transport::{BmcHttp, Environment};

impl<H: BmcHttp, E: Environment> Session<'_, '_, H, E> {
    /// Reads the hardware inventory of the system.
    ///
    /// # Errors
    /// A failed read other than "not implemented".
    pub fn inventory(&mut self) -> Result<HardwareDetails, RedfishError> {
        let system = self.system.body.clone();
        let manufacturer = text(&system, "Manufacturer");
        Ok(HardwareDetails {
            system_vendor: Some(SystemVendor {
                manufacturer: manufacturer.clone(),
                product_name: text(&system, "Model"),
                serial_number: text(&system, "SerialNumber"),
            }),
            bios: json::str_at(&system, &["BiosVersion"]).map(|version| Bios {
                date: String::new(),
                vendor: manufacturer,
                version: version.to_owned(),
            }),
            ram_mebibytes: self.memory_mebibytes(&system)?,
            nics: self.nics(&system)?,
            storage: self.disks(&system)?,
            cpu: self.cpu(&system)?,
            hostname: json::str_at(&system, &["HostName"])
                .filter(|name| !name.is_empty())
                .map(str::to_owned),
        })
    }

    /// Reads the current BIOS attributes with their JSON values.
    ///
    /// # Errors
    /// [`RedfishError::Unsupported`] when the system has no Bios resource.
    pub fn bios_attributes(&mut self) -> Result<Vec<(String, Value)>, RedfishError> {
        let link = json::link(&self.system.body, &["Bios"]).ok_or_else(|| {
            RedfishError::Unsupported("the system has no Bios resource".to_owned())
        })?;
        let path = self.resolve(&link);
        let bios = self
            .client
            .get_optional(&path)?
            .ok_or_else(|| RedfishError::Unsupported(format!("{path} is not implemented")))?;
        let attributes = bios
            .body
            .get("Attributes")
            .and_then(Value::as_object)
            .ok_or_else(|| RedfishError::Malformed {
                path: path.clone(),
                reason: "no Attributes object".to_owned(),
            })?;
        Ok(attributes
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect())
    }

    /// Reads every member of the collection linked at `key`.
    fn collection_members(
        &mut self,
        system: &Value,
        key: &str,
    ) -> Result<Vec<Value>, RedfishError> {
        let Some(link) = json::link(system, &[key]) else {
            return Ok(Vec::new());
        };
        self.members_of(&link)
    }

    fn members_of(&mut self, link: &str) -> Result<Vec<Value>, RedfishError> {
        let path = self.resolve(link);
        let Some(collection) = self.client.get_optional(&path)? else {
            return Ok(Vec::new());
        };
        let mut members = Vec::new();
        for member in json::members(&collection.body) {
            let member = self.client.resolve(&member, &path);
            if let Some(resource) = self.client.get_optional(&member)? {
                members.push(resource.body);
            }
        }
        Ok(members)
    }

    fn memory_mebibytes(&mut self, system: &Value) -> Result<u64, RedfishError> {
        let summary =
            json::at(system, &["MemorySummary", "TotalSystemMemoryGiB"]).and_then(Value::as_f64);
        if let Some(gib) = summary.filter(|gib| *gib > 0.0) {
            return Ok(gib_to_mib(gib));
        }
        let modules = self.collection_members(system, "Memory")?;
        Ok(modules
            .iter()
            .filter_map(|module| module.get("CapacityMiB").and_then(Value::as_u64))
            .sum())
    }

    fn cpu(&mut self, system: &Value) -> Result<Option<Cpu>, RedfishError> {
        let processors = self.collection_members(system, "Processors")?;
        let Some(first) = processors.first() else {
            return Ok(summary_cpu(system));
        };
        let count = processors
            .iter()
            .filter_map(|p| p.get("TotalThreads").and_then(Value::as_u64))
            .sum::<u64>();
        Ok(Some(Cpu {
            arch: architecture(first),
            model: text(first, "Model").trim().to_owned(),
            clock_megahertz: first
                .get("MaxSpeedMHz")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            flags: Vec::new(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
        }))
    }

    fn nics(&mut self, system: &Value) -> Result<Vec<Nic>, RedfishError> {
        let interfaces = self.collection_members(system, "EthernetInterfaces")?;
        Ok(interfaces
            .iter()
            .filter_map(|interface| {
                let mac = json::str_at(interface, &["MACAddress"])
                    .or_else(|| json::str_at(interface, &["PermanentMACAddress"]))
                    .filter(|mac| !mac.is_empty())?;
                let speed_mbps = interface
                    .get("SpeedMbps")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                Some(Nic {
                    name: json::str_at(interface, &["Id"])
                        .or_else(|| json::str_at(interface, &["Name"]))
                        .unwrap_or_default()
                        .to_owned(),
                    model: String::new(),
                    mac: mac.to_ascii_lowercase().replace('-', ":"),
                    ip: None,
                    speed_gbps: u32::try_from(speed_mbps / 1000).unwrap_or(u32::MAX),
                    vlans: Vec::new(),
                    vlan_id: None,
                    pxe: false,
                    lldp: None,
                    pci_address: None,
                })
            })
            .collect())
    }

    fn disks(&mut self, system: &Value) -> Result<Vec<Disk>, RedfishError> {
        let mut disks = Vec::new();
        for storage in self.collection_members(system, "Storage")? {
            let drive_links: Vec<String> = storage
                .get("Drives")
                .and_then(Value::as_array)
                .map(|drives| {
                    drives
                        .iter()
                        .filter_map(|d| d.get("@odata.id").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            for link in drive_links {
                let path = self.resolve(&link);
                if let Some(drive) = self.client.get_optional(&path)? {
                    disks.push(drive_disk(&drive.body));
                }
            }
        }
        if !disks.is_empty() {
            return Ok(disks);
        }

        for simple in self.collection_members(system, "SimpleStorage")? {
            let devices = simple
                .get("Devices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            disks.extend(devices.iter().map(simple_disk));
        }
        Ok(disks)
    }
}

fn text(value: &Value, key: &str) -> String {
    json::str_at(value, &[key]).unwrap_or_default().to_owned()
}

fn gib_to_mib(gib: f64) -> u64 {
    let mib = (gib * 1024.0).round();
    if mib.is_finite() && mib > 0.0 {
        // Finite, positive and far below 2^53 for any real machine.
        format!("{mib:.0}").parse().unwrap_or(0)
    } else {
        0
    }
}

fn summary_cpu(system: &Value) -> Option<Cpu> {
    let summary = system.get("ProcessorSummary")?;
    let count = summary
        .get("LogicalProcessorCount")
        .or_else(|| summary.get("Count"))
        .and_then(Value::as_u64)?;
    Some(Cpu {
        arch: String::new(),
        model: text(summary, "Model"),
        clock_megahertz: 0.0,
        flags: Vec::new(),
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

/// Linux-style architecture name from Redfish's `InstructionSet` or
/// `ProcessorArchitecture`.
fn architecture(processor: &Value) -> String {
    let instruction_set = json::str_at(processor, &["InstructionSet"]).unwrap_or_default();
    match instruction_set {
        "x86-64" => "x86_64".to_owned(),
        "ARM-A64" => "aarch64".to_owned(),
        "PowerISA" => "ppc64le".to_owned(),
        "" => json::str_at(processor, &["ProcessorArchitecture"])
            .unwrap_or_default()
            .to_owned(),
        other => other.to_owned(),
    }
}

fn drive_disk(drive: &Value) -> Disk {
    let protocol = json::str_at(drive, &["Protocol"]).unwrap_or_default();
    let kind = match (protocol, json::str_at(drive, &["MediaType"])) {
        ("NVMe", _) => Some(DiskKind::Nvme),
        (_, Some("SSD")) => Some(DiskKind::Ssd),
        (_, Some("HDD")) => Some(DiskKind::Hdd),
        _ => None,
    };
    let name = json::str_at(drive, &["Name"])
        .or_else(|| json::str_at(drive, &["Id"]))
        .unwrap_or_default()
        .to_owned();
    disk(DiskFields {
        name,
        kind,
        size_bytes: capacity(drive),
        vendor: text(drive, "Manufacturer"),
        model: text(drive, "Model"),
        serial_number: text(drive, "SerialNumber"),
    })
}

fn simple_disk(device: &Value) -> Disk {
    disk(DiskFields {
        name: text(device, "Name"),
        kind: None,
        size_bytes: capacity(device),
        vendor: text(device, "Manufacturer"),
        model: text(device, "Model"),
        serial_number: String::new(),
    })
}

fn capacity(device: &Value) -> u64 {
    device
        .get("CapacityBytes")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// What Redfish tells about a disk; the rest of the record needs the OS.
struct DiskFields {
    name: String,
    kind: Option<DiskKind>,
    size_bytes: u64,
    vendor: String,
    model: String,
    serial_number: String,
}

fn disk(fields: DiskFields) -> Disk {
    Disk {
        name: fields.name,
        alternate_names: Vec::new(),
        rotational: fields.kind == Some(DiskKind::Hdd),
        kind: fields.kind,
        size_bytes: fields.size_bytes,
        vendor: fields.vendor,
        model: fields.model,
        serial_number: fields.serial_number,
        wwn: String::new(),
        wwn_vendor_extension: String::new(),
        wwn_with_extension: String::new(),
        hctl: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drives_map_kind_from_protocol_and_media() {
        let nvme = drive_disk(
            &json!({"Name": "n", "Protocol": "NVMe", "MediaType": "SSD", "CapacityBytes": 5}),
        );
        assert_eq!(nvme.kind, Some(DiskKind::Nvme));
        assert_eq!(nvme.size_bytes, 5);
        assert_eq!(
            drive_disk(&json!({"MediaType": "HDD"})).kind,
            Some(DiskKind::Hdd)
        );
    }

    #[test]
    fn architectures_use_linux_names() {
        assert_eq!(architecture(&json!({"InstructionSet": "x86-64"})), "x86_64");
        assert_eq!(
            architecture(&json!({"ProcessorArchitecture": "ARM"})),
            "ARM"
        );
        assert_eq!(gib_to_mib(64.0), 65_536);
    }
}
