//! Facts derived from a BareMetalHost's spec, status and annotations.
//!
//! These are the small predicates the state machine branches on. Their exact meaning matters
//! (for example `online: false` blocks provisioning), so each one is defined once, here.

use std::collections::BTreeMap;

use crate::annotations;
use crate::model::{
    AutomatedCleaningMode, BareMetalHost, BareMetalHostStatus, BootMode, InspectionMode,
    ProvisioningState, RootDeviceHints,
};

/// Hardware profile names and the root disk each one defaults to.
const PROFILES: [(&str, ProfileDisk); 6] = [
    ("unknown", ProfileDisk::DeviceName("/dev/sda")),
    ("libvirt", ProfileDisk::DeviceName("/dev/vda")),
    ("dell", ProfileDisk::Hctl("0:0:0:0")),
    ("dell-raid", ProfileDisk::Hctl("0:2:0:0")),
    ("openstack", ProfileDisk::DeviceName("/dev/vdb")),
    ("empty", ProfileDisk::None),
];

/// The root disk a hardware profile selects by default.
#[derive(Debug, Clone, Copy)]
enum ProfileDisk {
    DeviceName(&'static str),
    Hctl(&'static str),
    None,
}

/// Read-only facts about a host.
pub trait HostFacts {
    /// The host's annotations (empty when there are none).
    fn annotation_map(&self) -> &BTreeMap<String, String>;
    /// The provisioning state with `ready` read as `available`.
    fn state(&self) -> ProvisioningState;
    /// Whether a BMC address or credentials name is given.
    fn has_bmc_details(&self) -> bool;
    /// Whether the host is being deleted.
    fn is_deleting(&self) -> bool;
    /// Whether the host runs an OS installed by someone else.
    fn externally_provisioned(&self) -> bool;
    /// Whether power-off must be a reboot.
    fn disable_power_off(&self) -> bool;
    /// The cleaning mode, `metadata` by default.
    fn cleaning_mode(&self) -> AutomatedCleaningMode;
    /// The boot mode, UEFI by default.
    fn boot_mode(&self) -> BootMode;
    /// Whether inspection is disabled by the spec or the legacy annotation.
    fn inspection_disabled(&self) -> bool;
    /// The effective inspection mode (agent by default).
    fn inspection_mode(&self) -> InspectionMode;
    /// Whether the host should be provisioned now: online, with an image or custom deploy that
    /// is not provisioned yet.
    fn needs_provisioning(&self) -> bool;
    /// Whether this operator put an image (or custom deploy) on the host.
    fn was_provisioned(&self) -> bool;
    /// Whether the provisioning in progress, or the provisioned image, no longer matches the
    /// spec. Only the image URL and the custom deploy method count: a checksum edit alone must
    /// not wipe a host.
    fn provisioning_cancelled(&self) -> bool;
    /// The root device hints that will be used: the spec's, or the hardware profile's, or none
    /// when a software RAID root volume is requested.
    fn effective_root_device_hints(&self) -> Option<RootDeviceHints>;
    /// Whether the RAID or root-disk settings differ from those last applied.
    fn settings_changed(&self) -> bool;
    /// The hardware profile the host uses: already chosen, from the spec, or guessed from the
    /// BMC address.
    fn hardware_profile_name(&self) -> String;
}

impl HostFacts for BareMetalHost {
    fn annotation_map(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.annotations.as_ref().unwrap_or(&EMPTY)
    }

    fn state(&self) -> ProvisioningState {
        status_state(self.status.as_ref())
    }

    fn has_bmc_details(&self) -> bool {
        self.spec
            .bmc
            .as_ref()
            .is_some_and(|bmc| !bmc.address.is_empty() || !bmc.credentials_name.is_empty())
    }

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn externally_provisioned(&self) -> bool {
        self.spec.externally_provisioned.unwrap_or(false)
    }

    fn disable_power_off(&self) -> bool {
        self.spec.disable_power_off.unwrap_or(false)
    }

    fn cleaning_mode(&self) -> AutomatedCleaningMode {
        self.spec.automated_cleaning_mode.unwrap_or_default()
    }

    fn boot_mode(&self) -> BootMode {
        self.spec.boot_mode.unwrap_or(BootMode::Uefi)
    }

    fn inspection_disabled(&self) -> bool {
        self.spec.inspection_mode == Some(InspectionMode::Disabled)
            || annotations::inspection_disabled(self.annotation_map())
    }

    fn inspection_mode(&self) -> InspectionMode {
        self.spec.inspection_mode.unwrap_or(InspectionMode::Agent)
    }

    fn needs_provisioning(&self) -> bool {
        if !self.spec.online {
            return false;
        }
        let provisioned = self.status.as_ref().map(|status| &status.provisioning);
        let wants_image = self
            .spec
            .image
            .as_ref()
            .is_some_and(|image| !image.url.is_empty());
        let has_image = provisioned
            .and_then(|p| p.image.as_ref())
            .is_some_and(|image| !image.url.is_empty());
        let wanted_method = self
            .spec
            .custom_deploy
            .as_ref()
            .map(|deploy| deploy.method.as_str());
        let applied_method = provisioned
            .and_then(|p| p.custom_deploy.as_ref())
            .map(|deploy| deploy.method.as_str());

        (wants_image && !has_image)
            || (wanted_method.is_some_and(|method| !method.is_empty())
                && wanted_method != applied_method)
    }

    fn was_provisioned(&self) -> bool {
        let provisioned = self.status.as_ref().map(|status| &status.provisioning);
        let has_image = provisioned
            .and_then(|p| p.image.as_ref())
            .is_some_and(|image| !image.url.is_empty());
        let has_deploy = provisioned.is_some_and(|p| p.custom_deploy.is_some());

        !self.externally_provisioned() && (has_image || has_deploy)
    }

    fn provisioning_cancelled(&self) -> bool {
        let spec_url = self
            .spec
            .image
            .as_ref()
            .map(|image| image.url.as_str())
            .filter(|url| !url.is_empty());
        let spec_method = self
            .spec
            .custom_deploy
            .as_ref()
            .map(|deploy| deploy.method.as_str());
        if spec_url.is_none() && spec_method.is_none() {
            return true;
        }

        let status = self.status.as_ref();
        let applied_url = status
            .and_then(|s| s.provisioning.image.as_ref())
            .map(|image| image.url.as_str());
        let attempted_url = status
            .and_then(|s| s.last_attempted_image.as_ref())
            .map(|image| image.url.as_str());
        let applied_method = status
            .and_then(|s| s.provisioning.custom_deploy.as_ref())
            .map(|d| d.method.as_str());

        // While provisioning nothing is applied yet: compare with the image being written.
        let target_url = applied_url.filter(|url| !url.is_empty()).or(attempted_url);
        let url_changed = target_url.is_some() && spec_url.is_some() && target_url != spec_url;
        let url_removed = target_url.is_some_and(|url| !url.is_empty()) && spec_url.is_none();
        let method_changed = applied_method.is_some() && applied_method != spec_method;

        url_changed || url_removed || method_changed
    }

    fn effective_root_device_hints(&self) -> Option<RootDeviceHints> {
        let software_root = self
            .spec
            .raid
            .as_ref()
            .and_then(|raid| raid.software_raid_volumes.as_ref())
            .is_some_and(|volumes| {
                volumes
                    .iter()
                    .any(|volume| volume.root_volume == Some(true))
            });
        if software_root {
            return None;
        }
        self.spec
            .root_device_hints
            .clone()
            .or_else(|| profile_root_device_hints(&self.hardware_profile_name()))
    }

    fn settings_changed(&self) -> bool {
        let applied = self.status.as_ref().map(|status| &status.provisioning);
        let applied_hints = applied.and_then(|p| p.root_device_hints.clone());
        let applied_raid = applied.and_then(|p| p.raid.clone());

        applied_hints != self.effective_root_device_hints() || applied_raid != self.spec.raid
    }

    fn hardware_profile_name(&self) -> String {
        let chosen = self
            .status
            .as_ref()
            .and_then(|status| status.hardware_profile.clone());
        let requested = self
            .spec
            .hardware_profile
            .clone()
            .filter(|name| !name.is_empty());
        let libvirt = self
            .spec
            .bmc
            .as_ref()
            .is_some_and(|bmc| bmc.address.starts_with("libvirt"));

        chosen
            .filter(|name| !name.is_empty())
            .or(requested)
            .unwrap_or_else(|| {
                if libvirt {
                    "libvirt".to_string()
                } else {
                    "unknown".to_string()
                }
            })
    }
}

/// The provisioning state recorded in a status, with `ready` read as `available`.
pub fn status_state(status: Option<&BareMetalHostStatus>) -> ProvisioningState {
    status
        .map(|status| status.provisioning.state.canonical())
        .unwrap_or_default()
}

/// Whether a hardware profile name is one of the known profiles.
pub fn is_known_profile(name: &str) -> bool {
    PROFILES.iter().any(|(known, _)| *known == name)
}

/// The default root device hints of a hardware profile.
fn profile_root_device_hints(profile: &str) -> Option<RootDeviceHints> {
    let disk = PROFILES
        .iter()
        .find(|(name, _)| *name == profile)
        .map(|(_, disk)| *disk)?;
    match disk {
        ProfileDisk::DeviceName(name) => Some(RootDeviceHints {
            device_name: Some(name.to_string()),
            ..Default::default()
        }),
        ProfileDisk::Hctl(hctl) => Some(RootDeviceHints {
            hctl: Some(hctl.to_string()),
            ..Default::default()
        }),
        ProfileDisk::None => None,
    }
}
