//! Boot source override.
//!
//! Values are checked against what the system advertises, the write goes to
//! the `@Redfish.Settings` object where the BMC requires it, and the result
//! is read back because some BMCs answer 200 and silently drop fields.

use serde_json::{Map, Value, json};

use crate::driver::Session;
use crate::error::RedfishError;
use crate::json;
use crate::model::{BootDevice, BootMode, BootPersistence, BootTarget, Progress};
use crate::profile::Vendor;
use crate::transport::{BmcHttp, Environment};

const TASK_KEY: &str = "redfish/boot-task";

/// The fields of one boot override write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Override {
    target: String,
    enabled: String,
    mode: Option<String>,
}

impl<H: BmcHttp, E: Environment> Session<'_, '_, H, E> {
    /// Sets the boot override and verifies it.
    ///
    /// # Errors
    /// Values the system does not offer, failed writes, or a write the BMC
    /// accepted but did not apply.
    pub fn set_boot_device(&mut self, device: BootDevice) -> Result<Progress, RedfishError> {
        if let Some(progress) = self.continue_task(TASK_KEY)? {
            return Ok(progress);
        }
        let wanted = self.boot_override(device)?;
        let write_path = self.boot_write_path();

        let accepted = self.write_boot(&write_path, &wanted)?;
        let progress = self.track_task(TASK_KEY, accepted);
        if progress == Progress::Done {
            self.verify_boot(&write_path, &wanted)?;
        }
        Ok(progress)
    }

    fn boot_override(&self, device: BootDevice) -> Result<Override, RedfishError> {
        let boot = self.system.body.get("Boot").cloned().unwrap_or(Value::Null);
        let allowed_targets =
            json::strings(&boot, &["BootSourceOverrideTarget@Redfish.AllowableValues"]);
        let target = target_name(device.target, self.client.vendor, &allowed_targets);
        check_allowed("BootSourceOverrideTarget", &target, &allowed_targets)?;

        let enabled = match device.persistence {
            BootPersistence::Once => "Once",
            BootPersistence::Persistent => "Continuous",
        };
        let allowed_enabled = json::strings(
            &boot,
            &["BootSourceOverrideEnabled@Redfish.AllowableValues"],
        );
        check_allowed("BootSourceOverrideEnabled", enabled, &allowed_enabled)?;

        // Some BMCs (Supermicro X10) have no boot mode property at all.
        let mode = boot
            .get("BootSourceOverrideMode")
            .map(|_| match device.mode {
                BootMode::Uefi => "UEFI".to_owned(),
                BootMode::Legacy => "Legacy".to_owned(),
            });
        if let Some(mode) = &mode {
            let allowed_modes =
                json::strings(&boot, &["BootSourceOverrideMode@Redfish.AllowableValues"]);
            check_allowed("BootSourceOverrideMode", mode, &allowed_modes)?;
        }
        Ok(Override {
            target,
            enabled: enabled.to_owned(),
            mode,
        })
    }

    /// iDRAC 10 and AMI MegaRAC take boot changes only on the settings object.
    fn boot_write_path(&self) -> String {
        let settings = json::link(&self.system.body, &["@Redfish.Settings", "SettingsObject"]);
        match settings {
            Some(path) if matches!(self.client.vendor, Vendor::Dell | Vendor::Ami) => {
                self.resolve(&path)
            }
            _ => self.system_path(),
        }
    }

    fn write_boot(
        &mut self,
        path: &str,
        wanted: &Override,
    ) -> Result<crate::client::Accepted, RedfishError> {
        let etag = self.etag_for(path)?;
        let split_mode = self.client.vendor == Vendor::Hpe;

        // HPE rejects a boot PATCH carrying Mode with the target; everyone
        // else may reset Mode unless it is sent in the same PATCH.
        let first = boot_body(wanted, !split_mode);
        let accepted = self.client.patch(path, &first, etag.as_deref())?;

        let current_mode = json::str_at(&self.system.body, &["Boot", "BootSourceOverrideMode"]);
        match &wanted.mode {
            Some(mode) if split_mode && current_mode != Some(mode.as_str()) => {
                let etag = self.etag_for(path)?;
                let body = json!({"Boot": {"BootSourceOverrideMode": mode}});
                self.client.patch(path, &body, etag.as_deref())
            }
            _ => Ok(accepted),
        }
    }

    fn etag_for(&mut self, path: &str) -> Result<Option<String>, RedfishError> {
        if path == self.system.path {
            return Ok(self.system.etag.clone());
        }
        Ok(self
            .client
            .get_optional(path)?
            .and_then(|resource| resource.etag))
    }

    fn verify_boot(&mut self, path: &str, wanted: &Override) -> Result<(), RedfishError> {
        let written = self.client.get(path)?;
        let boot = written.body.get("Boot").cloned().unwrap_or(Value::Null);
        let found_target = json::str_at(&boot, &["BootSourceOverrideTarget"]).unwrap_or_default();
        if found_target != wanted.target {
            return Err(not_applied("boot target", &wanted.target, found_target));
        }
        let found_enabled = json::str_at(&boot, &["BootSourceOverrideEnabled"]).unwrap_or_default();
        if found_enabled == "Disabled" {
            return Err(not_applied("boot override", &wanted.enabled, found_enabled));
        }
        if let Some(mode) = &wanted.mode {
            let found_mode = json::str_at(&boot, &["BootSourceOverrideMode"]).unwrap_or_default();
            if found_mode != mode {
                return Err(not_applied("boot mode", mode, found_mode));
            }
        }
        Ok(())
    }
}

fn not_applied(what: &'static str, expected: &str, found: &str) -> RedfishError {
    RedfishError::NotApplied {
        what,
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

fn boot_body(wanted: &Override, with_mode: bool) -> Value {
    let mut boot = Map::new();
    boot.insert("BootSourceOverrideTarget".to_owned(), json!(wanted.target));
    boot.insert(
        "BootSourceOverrideEnabled".to_owned(),
        json!(wanted.enabled),
    );
    if let (true, Some(mode)) = (with_mode, &wanted.mode) {
        boot.insert("BootSourceOverrideMode".to_owned(), json!(mode));
    }
    json!({ "Boot": boot })
}

/// The Redfish target name, using the vendor's own name for a virtual CD
/// (Supermicro X11/X12 boot virtual media only as `UsbCd`).
fn target_name(target: BootTarget, vendor: Vendor, allowed: &[String]) -> String {
    let name = match target {
        BootTarget::Pxe => "Pxe",
        BootTarget::Disk => "Hdd",
        BootTarget::Cd => {
            let usb_cd = allowed.iter().any(|value| value == "UsbCd");
            if vendor == Vendor::Supermicro && usb_cd {
                "UsbCd"
            } else {
                "Cd"
            }
        }
        BootTarget::UefiHttp => "UefiHttp",
    };
    name.to_owned()
}

fn check_allowed(property: &str, value: &str, allowed: &[String]) -> Result<(), RedfishError> {
    if allowed.is_empty() || allowed.iter().any(|a| a == value) {
        Ok(())
    } else {
        Err(RedfishError::Unsupported(format!(
            "{property} {value} (the system offers {})",
            allowed.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supermicro_boots_virtual_cd_as_usb_cd() {
        let allowed = vec!["Pxe".to_owned(), "UsbCd".to_owned(), "Hdd".to_owned()];
        assert_eq!(
            target_name(BootTarget::Cd, Vendor::Supermicro, &allowed),
            "UsbCd"
        );
        assert_eq!(target_name(BootTarget::Cd, Vendor::Generic, &allowed), "Cd");
    }

    #[test]
    fn unadvertised_values_are_unsupported() {
        let allowed = vec!["Once".to_owned(), "Disabled".to_owned()];
        let error = check_allowed("BootSourceOverrideEnabled", "Continuous", &allowed);
        assert!(matches!(error, Err(RedfishError::Unsupported(_))));
        assert!(check_allowed("BootSourceOverrideEnabled", "Once", &allowed).is_ok());
        assert!(check_allowed("X", "anything", &[]).is_ok());
    }

    #[test]
    fn hpe_body_leaves_mode_out() {
        let wanted = Override {
            target: "Cd".to_owned(),
            enabled: "Once".to_owned(),
            mode: Some("UEFI".to_owned()),
        };
        assert!(
            boot_body(&wanted, false)["Boot"]
                .get("BootSourceOverrideMode")
                .is_none()
        );
        assert_eq!(
            boot_body(&wanted, true)["Boot"]["BootSourceOverrideMode"],
            "UEFI"
        );
    }
}
