//! Chassis and application commands: power, boot flags, device ID.

use crate::error::IpmiError;
use crate::session::Session;

const NET_FN_CHASSIS: u8 = 0x00;
const NET_FN_APP: u8 = 0x06;
const CMD_GET_DEVICE_ID: u8 = 0x01;
const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
const CMD_CHASSIS_CONTROL: u8 = 0x02;
const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
const CMD_GET_BOOT_OPTIONS: u8 = 0x09;

const PARAM_SET_IN_PROGRESS: u8 = 0x00;
const PARAM_BOOT_FLAGS: u8 = 0x05;
const SET_IN_PROGRESS: u8 = 0x01;
const SET_COMPLETE: u8 = 0x00;

const FLAG_VALID: u8 = 0x80;
const FLAG_PERSISTENT: u8 = 0x40;
const FLAG_EFI: u8 = 0x20;

/// Chassis Control directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    /// Hard power off.
    PowerDown = 0x00,
    /// Power on.
    PowerUp = 0x01,
    /// Off, then on.
    PowerCycle = 0x02,
    /// Hard reset.
    HardReset = 0x03,
    /// ACPI soft shutdown.
    SoftShutdown = 0x05,
}

/// Boot device selector of the boot flags (byte 2, bits 5:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDeviceSelector {
    /// No override.
    NoOverride = 0x00,
    /// PXE.
    Pxe = 0x04,
    /// Default hard disk.
    Disk = 0x08,
    /// CD/DVD.
    Cd = 0x14,
    /// BIOS setup.
    BiosSetup = 0x18,
}

/// The boot flags parameter (number 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// Device to boot.
    pub device: BootDeviceSelector,
    /// Every boot rather than the next one only.
    pub persistent: bool,
    /// UEFI rather than legacy boot.
    pub efi: bool,
}

impl BootFlags {
    /// The five data bytes, built bit by bit: some tools built byte 1
    /// wrong when combining options.
    pub fn encode(&self) -> [u8; 5] {
        let mut first = FLAG_VALID;
        if self.persistent {
            first |= FLAG_PERSISTENT;
        }
        if self.efi {
            first |= FLAG_EFI;
        }
        [first, self.device as u8, 0, 0, 0]
    }

    /// Human-readable form for errors.
    pub fn describe(&self) -> String {
        format!(
            "{:?}, {}, {}",
            self.device,
            if self.persistent {
                "persistent"
            } else {
                "next boot only"
            },
            if self.efi { "EFI" } else { "legacy" }
        )
    }
}

/// The answer to Get Device ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// Device ID.
    pub device_id: u8,
    /// Firmware revision, `major.minor`.
    pub firmware_revision: String,
    /// IPMI version, e.g. `2.0`.
    pub ipmi_version: String,
    /// IANA manufacturer ID.
    pub manufacturer_id: u32,
    /// Product ID.
    pub product_id: u16,
}

impl Session<'_> {
    /// Whether the chassis power is on.
    ///
    /// # Errors
    /// A failed command or a short answer.
    pub fn power_is_on(&mut self) -> Result<bool, IpmiError> {
        let data = self.command(
            "Get Chassis Status",
            NET_FN_CHASSIS,
            CMD_GET_CHASSIS_STATUS,
            &[],
        )?;
        let first = data.first().ok_or_else(|| short("Get Chassis Status"))?;
        Ok(first & 0x01 != 0)
    }

    /// Sends a Chassis Control directive.
    ///
    /// # Errors
    /// A failed command.
    pub fn chassis_control(&mut self, directive: ChassisControl) -> Result<(), IpmiError> {
        self.command(
            "Chassis Control",
            NET_FN_CHASSIS,
            CMD_CHASSIS_CONTROL,
            &[directive as u8],
        )?;
        Ok(())
    }

    /// Writes the boot flags inside a set-in-progress bracket and reads them
    /// back.
    ///
    /// # Errors
    /// A failed command, or flags the BMC did not keep.
    pub fn set_boot_flags(&mut self, flags: BootFlags) -> Result<(), IpmiError> {
        self.set_boot_option(PARAM_SET_IN_PROGRESS, &[SET_IN_PROGRESS])?;
        let mut data = vec![PARAM_BOOT_FLAGS];
        data.extend_from_slice(&flags.encode());
        let written = self.command(
            "Set System Boot Options",
            NET_FN_CHASSIS,
            CMD_SET_BOOT_OPTIONS,
            &data,
        );
        let completed = self.set_boot_option(PARAM_SET_IN_PROGRESS, &[SET_COMPLETE]);
        written?;
        completed?;

        let found = self.boot_flags_raw()?;
        let expected = flags.encode();
        // Only the valid/persistent/EFI bits and the device selector matter.
        let same = found[0] & (FLAG_VALID | FLAG_PERSISTENT | FLAG_EFI) == expected[0]
            && found[1] & 0x3C == expected[1];
        if same {
            Ok(())
        } else {
            Err(IpmiError::NotApplied {
                what: "boot flags",
                expected: format!("{} ({:02x?})", flags.describe(), &expected[..2]),
                found: format!("{:02x?}", &found[..2]),
            })
        }
    }

    fn set_boot_option(&mut self, parameter: u8, value: &[u8]) -> Result<(), IpmiError> {
        let mut data = vec![parameter];
        data.extend_from_slice(value);
        self.command(
            "Set System Boot Options",
            NET_FN_CHASSIS,
            CMD_SET_BOOT_OPTIONS,
            &data,
        )?;
        Ok(())
    }

    /// Reads the first two bytes of the boot flags parameter.
    ///
    /// # Errors
    /// A failed command or a short answer.
    pub fn boot_flags_raw(&mut self) -> Result<[u8; 2], IpmiError> {
        let data = self.command(
            "Get System Boot Options",
            NET_FN_CHASSIS,
            CMD_GET_BOOT_OPTIONS,
            &[PARAM_BOOT_FLAGS, 0, 0],
        )?;
        // Parameter version, parameter selector, then the five data bytes.
        match data.get(2..4) {
            Some([first, second]) => Ok([*first, *second]),
            _ => Err(short("Get System Boot Options")),
        }
    }

    /// Reads the BMC's device ID.
    ///
    /// # Errors
    /// A failed command or a short answer.
    pub fn device_id(&mut self) -> Result<DeviceId, IpmiError> {
        let data = self.command("Get Device ID", NET_FN_APP, CMD_GET_DEVICE_ID, &[])?;
        if data.len() < 11 {
            return Err(short("Get Device ID"));
        }
        Ok(DeviceId {
            device_id: data[0],
            firmware_revision: format!("{}.{:02x}", data[2] & 0x7F, data[3]),
            ipmi_version: format!("{}.{}", data[4] & 0x0F, data[4] >> 4),
            manufacturer_id: u32::from(data[6])
                | u32::from(data[7]) << 8
                | u32::from(data[8] & 0x0F) << 16,
            product_id: u16::from_le_bytes([data[9], data[10]]),
        })
    }
}

fn short(command: &'static str) -> IpmiError {
    IpmiError::Malformed {
        step: command,
        reason: "answer shorter than the command defines".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flag_bits_combine() {
        let flags = BootFlags {
            device: BootDeviceSelector::Pxe,
            persistent: true,
            efi: true,
        };
        assert_eq!(flags.encode(), [0xE0, 0x04, 0, 0, 0]);
        let once = BootFlags {
            device: BootDeviceSelector::Cd,
            persistent: false,
            efi: false,
        };
        assert_eq!(once.encode()[..2], [0x80, 0x14]);
    }
}
