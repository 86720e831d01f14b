//! Root device hints: how the operator tells the agent which disk receives the image.
//!
//! Semantics follow Metal3: `model` and `vendor` match as substrings, every other field
//! exactly, `minSizeGigabytes` is a lower bound in GiB. Without hints the smallest disk of at
//! least 4 GiB is chosen, as Ironic does, so that a large data disk is not overwritten by
//! accident.

use serde::{Deserialize, Serialize};

use crate::inventory::Storage;

/// Disks smaller than this are never chosen without an explicit hint.
const DEFAULT_MIN_ROOT_BYTES: u64 = 4 << 30;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No disk satisfies the hints.
    #[error("no disk matches the root device hints {hints}; disks seen: {seen}")]
    NoMatch {
        /// The hints, as JSON.
        hints: String,
        /// Names of the disks that were considered.
        seen: String,
    },
}

/// Criteria selecting the root disk (Metal3 `RootDeviceHints`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootDeviceHints {
    /// `/dev/sda` or `/dev/disk/by-path/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// SCSI host:channel:target:lun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// Substring of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Substring of the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Exact serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Minimum size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_gigabytes: Option<u64>,
    /// Exact WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Exact WWN with vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
    /// Exact WWN vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    /// Whether the disk must (or must not) be rotational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

impl RootDeviceHints {
    /// True when no criterion is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `disk` satisfies every criterion that is set.
    pub fn matches(&self, disk: &Storage) -> bool {
        let exact = |hint: &Option<String>, value: &str| hint.as_deref().is_none_or(|h| h == value);
        let contains = |hint: &Option<String>, value: &str| {
            hint.as_deref()
                .is_none_or(|h| value.to_lowercase().contains(&h.to_lowercase()))
        };

        self.matches_device_name(disk)
            && exact(&self.hctl, &disk.hctl)
            && contains(&self.model, &disk.model)
            && contains(&self.vendor, &disk.vendor)
            && exact(&self.serial_number, &disk.serial_number)
            && exact(&self.wwn, &disk.wwn)
            && exact(&self.wwn_with_extension, &disk.wwn_with_extension)
            && exact(&self.wwn_vendor_extension, &disk.wwn_vendor_extension)
            && self.rotational.is_none_or(|r| r == disk.rotational)
            && self
                .min_size_gigabytes
                .is_none_or(|gib| disk.size_bytes >= gib.saturating_mul(1 << 30))
    }

    fn matches_device_name(&self, disk: &Storage) -> bool {
        let Some(wanted) = self.device_name.as_deref() else {
            return true;
        };
        disk.name == wanted || disk.alternate_names.iter().any(|name| name == wanted)
    }
}

/// Picks the root disk: the first disk matching the hints, or without hints the smallest disk
/// of at least 4 GiB.
pub fn select_root_disk<'a>(
    disks: &'a [Storage],
    hints: &RootDeviceHints,
) -> Result<&'a Storage, Error> {
    let chosen = if hints.is_empty() {
        disks
            .iter()
            .filter(|disk| disk.size_bytes >= DEFAULT_MIN_ROOT_BYTES)
            .min_by_key(|disk| disk.size_bytes)
    } else {
        disks.iter().find(|disk| hints.matches(disk))
    };

    chosen.ok_or_else(|| Error::NoMatch {
        hints: serde_json::to_string(hints).unwrap_or_default(),
        seen: disks
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, serial: &str, size_gib: u64, rotational: bool) -> Storage {
        Storage {
            name: format!("/dev/disk/by-path/pci-0000:00:1f.2-ata-{name}"),
            alternate_names: vec![format!("/dev/{name}")],
            rotational,
            size_bytes: size_gib << 30,
            vendor: "ATA".into(),
            model: format!("Model {serial}"),
            serial_number: serial.into(),
            wwn: format!("0x5000{serial}"),
            hctl: format!("0:0:{}:0", name.len()),
            ..Storage::default()
        }
    }

    fn four_disks() -> Vec<Storage> {
        vec![
            disk("sda", "A1", 100, true),
            disk("sdb", "B2", 20, false),
            disk("sdc", "C3", 2, false),
            disk("sdd", "D4", 500, true),
        ]
    }

    #[test]
    fn without_hints_the_smallest_disk_of_at_least_four_gib_wins() {
        let disks = four_disks();
        let chosen =
            select_root_disk(&disks, &RootDeviceHints::default()).map(|d| d.serial_number.clone());
        assert_eq!(chosen.ok().as_deref(), Some("B2"));
    }

    #[test]
    fn each_kind_of_hint_selects_its_disk() {
        let disks = four_disks();
        let cases = [
            (
                RootDeviceHints {
                    serial_number: Some("D4".into()),
                    ..Default::default()
                },
                "D4",
            ),
            (
                RootDeviceHints {
                    device_name: Some("/dev/sdc".into()),
                    ..Default::default()
                },
                "C3",
            ),
            (
                RootDeviceHints {
                    model: Some("model a".into()),
                    ..Default::default()
                },
                "A1",
            ),
            (
                RootDeviceHints {
                    wwn: Some("0x5000B2".into()),
                    ..Default::default()
                },
                "B2",
            ),
            (
                RootDeviceHints {
                    min_size_gigabytes: Some(200),
                    ..Default::default()
                },
                "D4",
            ),
            (
                RootDeviceHints {
                    rotational: Some(false),
                    min_size_gigabytes: Some(10),
                    ..Default::default()
                },
                "B2",
            ),
        ];

        for (hints, expected) in cases {
            let chosen = select_root_disk(&disks, &hints).map(|d| d.serial_number.clone());
            assert_eq!(chosen.ok().as_deref(), Some(expected), "hints {hints:?}");
        }
    }

    #[test]
    fn unsatisfiable_hints_name_the_disks_seen() {
        let disks = four_disks();
        let hints = RootDeviceHints {
            serial_number: Some("nope".into()),
            ..Default::default()
        };

        let error = select_root_disk(&disks, &hints)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();

        assert!(error.contains("nope") && error.contains("sdd"), "{error}");
    }
}
