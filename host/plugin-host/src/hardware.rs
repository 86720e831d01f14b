//! Hardware details between the Metal3 API shape and the plugin interface.
//!
//! `HardwareData` (and a host's `status.hardware`) makes every field optional, as upstream
//! does; the WIT record uses empty values instead. Converting to WIT fills the gaps with empty
//! values; converting back leaves out what a driver did not report, so an out-of-band
//! inventory never claims to know a field it does not.

use ingot_api::metal3::{
    Bios as ApiBios, Cpu as ApiCpu, DiskType, Firmware, HardwareDetails as ApiDetails,
    HardwareSystemVendor, Lldp as ApiLldp, Nic as ApiNic, Storage, Vlan as ApiVlan,
};

use crate::bindings::types::{
    Bios, Cpu, Disk, DiskKind, HardwareDetails, Lldp, Nic, SystemVendor, Vlan,
};

/// The plugin-interface form of API hardware details.
pub fn to_plugin(details: &ApiDetails) -> HardwareDetails {
    HardwareDetails {
        system_vendor: details.system_vendor.as_ref().map(|vendor| SystemVendor {
            manufacturer: text(&vendor.manufacturer),
            product_name: text(&vendor.product_name),
            serial_number: text(&vendor.serial_number),
        }),
        bios: details
            .firmware
            .as_ref()
            .and_then(|firmware| firmware.bios.as_ref())
            .map(|bios| Bios {
                date: text(&bios.date),
                vendor: text(&bios.vendor),
                version: text(&bios.version),
            }),
        ram_mebibytes: unsigned(details.ram_mebibytes),
        nics: list(&details.nics).iter().map(nic_to_plugin).collect(),
        storage: list(&details.storage).iter().map(disk_to_plugin).collect(),
        cpu: details.cpu.as_ref().map(|cpu| Cpu {
            arch: text(&cpu.arch),
            model: text(&cpu.model),
            clock_megahertz: cpu.clock_megahertz.unwrap_or_default(),
            flags: list(&cpu.flags).to_vec(),
            count: u32::try_from(cpu.count.unwrap_or_default()).unwrap_or_default(),
        }),
        hostname: details.hostname.clone(),
    }
}

/// The API form of hardware details a plugin reported.
pub fn from_plugin(details: &HardwareDetails) -> ApiDetails {
    ApiDetails {
        system_vendor: details
            .system_vendor
            .as_ref()
            .map(|vendor| HardwareSystemVendor {
                manufacturer: known(&vendor.manufacturer),
                product_name: known(&vendor.product_name),
                serial_number: known(&vendor.serial_number),
            }),
        firmware: details.bios.as_ref().map(|bios| Firmware {
            bios: Some(ApiBios {
                date: known(&bios.date),
                vendor: known(&bios.vendor),
                version: known(&bios.version),
            }),
        }),
        ram_mebibytes: (details.ram_mebibytes > 0).then(|| signed(details.ram_mebibytes)),
        nics: Some(details.nics.iter().map(nic_from_plugin).collect()),
        storage: Some(details.storage.iter().map(disk_from_plugin).collect()),
        cpu: details.cpu.as_ref().map(|cpu| ApiCpu {
            arch: known(&cpu.arch),
            model: known(&cpu.model),
            clock_megahertz: (cpu.clock_megahertz > 0.0).then_some(cpu.clock_megahertz),
            flags: (!cpu.flags.is_empty()).then(|| cpu.flags.clone()),
            count: Some(i64::from(cpu.count)),
        }),
        hostname: details.hostname.clone(),
    }
}

fn nic_to_plugin(nic: &ApiNic) -> Nic {
    Nic {
        name: text(&nic.name),
        model: text(&nic.model),
        // Selectors and the agent API compare MACs; BMCs report them in either case.
        mac: text(&nic.mac).to_ascii_lowercase(),
        ip: nic.ip.clone(),
        speed_gbps: u32::try_from(nic.speed_gbps.unwrap_or_default()).unwrap_or_default(),
        vlans: list(&nic.vlans)
            .iter()
            .map(|vlan| Vlan {
                id: vlan_id(vlan.id).unwrap_or_default(),
                name: text(&vlan.name),
            })
            .collect(),
        vlan_id: vlan_id(nic.vlan_id),
        pxe: nic.pxe.unwrap_or_default(),
        lldp: nic.lldp.as_ref().map(|lldp| Lldp {
            switch_id: text(&lldp.switch_id),
            port_id: text(&lldp.port_id),
            switch_system_name: text(&lldp.switch_system_name),
        }),
        pci_address: nic.pci_address.clone(),
    }
}

fn nic_from_plugin(nic: &Nic) -> ApiNic {
    ApiNic {
        name: known(&nic.name),
        model: known(&nic.model),
        mac: known(&nic.mac),
        ip: nic.ip.clone(),
        speed_gbps: (nic.speed_gbps > 0).then_some(i64::from(nic.speed_gbps)),
        vlans: (!nic.vlans.is_empty()).then(|| {
            nic.vlans
                .iter()
                .map(|vlan| ApiVlan {
                    id: Some(i64::from(vlan.id)),
                    name: known(&vlan.name),
                })
                .collect()
        }),
        vlan_id: nic.vlan_id.map(i64::from),
        pxe: Some(nic.pxe),
        lldp: nic.lldp.as_ref().map(|lldp| ApiLldp {
            switch_id: known(&lldp.switch_id),
            port_id: known(&lldp.port_id),
            switch_system_name: known(&lldp.switch_system_name),
        }),
        pci_address: nic.pci_address.clone(),
    }
}

fn disk_to_plugin(disk: &Storage) -> Disk {
    Disk {
        name: text(&disk.name),
        alternate_names: list(&disk.alternate_names).to_vec(),
        rotational: disk.rotational.unwrap_or_default(),
        kind: disk.disk_type.map(|kind| match kind {
            DiskType::Hdd => DiskKind::Hdd,
            DiskType::Ssd => DiskKind::Ssd,
            DiskType::Nvme => DiskKind::Nvme,
        }),
        size_bytes: unsigned(disk.size_bytes),
        vendor: text(&disk.vendor),
        model: text(&disk.model),
        serial_number: text(&disk.serial_number),
        wwn: text(&disk.wwn),
        wwn_vendor_extension: text(&disk.wwn_vendor_extension),
        wwn_with_extension: text(&disk.wwn_with_extension),
        hctl: text(&disk.hctl),
    }
}

fn disk_from_plugin(disk: &Disk) -> Storage {
    Storage {
        name: known(&disk.name),
        alternate_names: (!disk.alternate_names.is_empty()).then(|| disk.alternate_names.clone()),
        rotational: Some(disk.rotational),
        disk_type: disk.kind.map(|kind| match kind {
            DiskKind::Hdd => DiskType::Hdd,
            DiskKind::Ssd => DiskType::Ssd,
            DiskKind::Nvme => DiskType::Nvme,
        }),
        size_bytes: Some(signed(disk.size_bytes)),
        vendor: known(&disk.vendor),
        model: known(&disk.model),
        serial_number: known(&disk.serial_number),
        wwn: known(&disk.wwn),
        wwn_vendor_extension: known(&disk.wwn_vendor_extension),
        wwn_with_extension: known(&disk.wwn_with_extension),
        hctl: known(&disk.hctl),
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn known(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn list<T>(values: &Option<Vec<T>>) -> &[T] {
    values.as_deref().unwrap_or_default()
}

fn unsigned(value: Option<i64>) -> u64 {
    u64::try_from(value.unwrap_or_default()).unwrap_or_default()
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn vlan_id(value: Option<i64>) -> Option<u16> {
    value.and_then(|id| u16::try_from(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspected() -> ApiDetails {
        ApiDetails {
            system_vendor: Some(HardwareSystemVendor {
                manufacturer: Some("Dell Inc.".into()),
                product_name: Some("PowerEdge R650".into()),
                serial_number: Some("ABC123".into()),
            }),
            firmware: Some(Firmware {
                bios: Some(ApiBios {
                    date: Some("2024-01-01".into()),
                    vendor: Some("Dell".into()),
                    version: Some("1.2.3".into()),
                }),
            }),
            ram_mebibytes: Some(65536),
            nics: Some(vec![ApiNic {
                name: Some("eno1".into()),
                mac: Some("52:54:00:aa:00:01".into()),
                speed_gbps: Some(25),
                pxe: Some(true),
                vlan_id: Some(100),
                vlans: Some(vec![ApiVlan {
                    id: Some(100),
                    name: Some("prov".into()),
                }]),
                ..ApiNic::default()
            }]),
            storage: Some(vec![Storage {
                name: Some("/dev/sda".into()),
                rotational: Some(false),
                disk_type: Some(DiskType::Ssd),
                size_bytes: Some(480_000_000_000),
                serial_number: Some("S1".into()),
                ..Storage::default()
            }]),
            cpu: Some(ApiCpu {
                arch: Some("x86_64".into()),
                model: Some("Xeon".into()),
                clock_megahertz: Some(2400.0),
                flags: Some(vec!["vmx".into()]),
                count: Some(32),
            }),
            hostname: Some("node-1".into()),
        }
    }

    #[test]
    fn inspected_details_survive_a_round_trip() {
        let details = inspected();

        let back = from_plugin(&to_plugin(&details));

        assert_eq!(back, details);
    }

    #[test]
    fn fields_a_driver_left_empty_stay_unknown() {
        let reported = to_plugin(&ApiDetails::default());

        let back = from_plugin(&reported);

        assert_eq!(back.system_vendor, None);
        assert_eq!(back.ram_mebibytes, None);
        assert_eq!(back.nics, Some(Vec::new()));
    }

    #[test]
    fn out_of_range_numbers_do_not_wrap() {
        let details = ApiDetails {
            ram_mebibytes: Some(-5),
            nics: Some(vec![ApiNic {
                vlan_id: Some(70_000),
                ..ApiNic::default()
            }]),
            ..ApiDetails::default()
        };

        let plugin = to_plugin(&details);

        assert_eq!(plugin.ram_mebibytes, 0);
        assert_eq!(plugin.nics[0].vlan_id, None);
    }
}
