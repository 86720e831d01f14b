//! Address schemes served by this driver and the vendor behaviour they imply.

use crate::error::RedfishError;

/// The vendor family whose quirks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// No known quirks.
    Generic,
    /// Dell iDRAC.
    Dell,
    /// HPE iLO.
    Hpe,
    /// Supermicro.
    Supermicro,
    /// Lenovo XCC.
    Lenovo,
    /// AMI MegaRAC (Gigabyte, ASRock Rack).
    Ami,
}

impl Vendor {
    /// Lower-case name, understood by [`Vendor::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Dell => "dell",
            Self::Hpe => "hpe",
            Self::Supermicro => "supermicro",
            Self::Lenovo => "lenovo",
            Self::Ami => "ami",
        }
    }

    /// Guesses the vendor from the service root's `Vendor` or a system's
    /// `Manufacturer`.
    pub fn from_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name.contains("dell") {
            Self::Dell
        } else if name.contains("hpe") || name.contains("hewlett") {
            Self::Hpe
        } else if name.contains("supermicro") {
            Self::Supermicro
        } else if name.contains("lenovo") {
            Self::Lenovo
        } else if name.contains("ami") || name.contains("gigabyte") || name.contains("asrock") {
            Self::Ami
        } else {
            Self::Generic
        }
    }
}

/// How the host is meant to boot, as implied by the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInterface {
    /// Network boot (iPXE/PXE).
    Network,
    /// Virtual media ISO.
    VirtualMedia,
    /// UEFI HTTP boot.
    UefiHttp,
}

/// What the address scheme says about the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Vendor named by the scheme; refined from the BMC when generic.
    pub vendor: Vendor,
    /// Boot interface named by the scheme.
    pub boot: BootInterface,
}

/// Schemes this driver serves, without their `+http`/`+https` suffix.
pub const SCHEMES: [&str; 7] = [
    "redfish",
    "redfish-virtualmedia",
    "redfish-uefihttp",
    "idrac-redfish",
    "idrac-virtualmedia",
    "ilo5-redfish",
    "ilo5-virtualmedia",
];

impl Profile {
    /// The profile for an address scheme such as `idrac-virtualmedia+https`.
    ///
    /// # Errors
    /// [`RedfishError::Address`] for a scheme this driver does not serve.
    pub fn for_scheme(scheme: &str) -> Result<Self, RedfishError> {
        let base = scheme
            .strip_suffix("+https")
            .or_else(|| scheme.strip_suffix("+http"))
            .unwrap_or(scheme);
        let (vendor, boot) = match base {
            "redfish" => (Vendor::Generic, BootInterface::Network),
            "redfish-virtualmedia" => (Vendor::Generic, BootInterface::VirtualMedia),
            "redfish-uefihttp" => (Vendor::Generic, BootInterface::UefiHttp),
            "idrac-redfish" => (Vendor::Dell, BootInterface::Network),
            "idrac-virtualmedia" => (Vendor::Dell, BootInterface::VirtualMedia),
            "ilo5-redfish" => (Vendor::Hpe, BootInterface::Network),
            "ilo5-virtualmedia" => (Vendor::Hpe, BootInterface::VirtualMedia),
            _ => {
                return Err(RedfishError::Address(format!(
                    "scheme {scheme:?} is not a Redfish scheme; expected one of {}",
                    SCHEMES.join(", ")
                )));
            }
        };
        Ok(Self { vendor, boot })
    }
}

/// The system resource named by an address path, or `None` when the path
/// does not name one and the only system must be chosen.
///
/// Accepts the Metal3 forms `/redfish/v1/Systems/<id>` and a bare `<id>`.
pub fn system_path_from_address(path: &str) -> Option<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("redfish/v1") {
        return None;
    }
    if trimmed.to_ascii_lowercase().starts_with("redfish/") {
        Some(format!("/{trimmed}"))
    } else {
        Some(format!("/redfish/v1/Systems/{trimmed}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_vendor_and_boot_interface() {
        let dell = Profile::for_scheme("idrac-virtualmedia+https").ok();
        assert_eq!(
            dell,
            Some(Profile {
                vendor: Vendor::Dell,
                boot: BootInterface::VirtualMedia
            })
        );
        let hpe = Profile::for_scheme("ilo5-redfish").ok();
        assert_eq!(hpe.map(|p| p.vendor), Some(Vendor::Hpe));
        let uefi = Profile::for_scheme("redfish-uefihttp+http").ok();
        assert_eq!(uefi.map(|p| p.boot), Some(BootInterface::UefiHttp));
    }

    #[test]
    fn unknown_scheme_names_the_accepted_ones() {
        let error = Profile::for_scheme("ipmi").err().map(|e| e.to_string());
        assert!(error.is_some_and(|text| text.contains("redfish-virtualmedia")));
    }

    #[test]
    fn address_paths_name_systems() {
        assert_eq!(system_path_from_address(""), None);
        assert_eq!(system_path_from_address("/redfish/v1/"), None);
        assert_eq!(
            system_path_from_address("/redfish/v1/Systems/System.Embedded.1"),
            Some("/redfish/v1/Systems/System.Embedded.1".to_owned())
        );
        assert_eq!(
            system_path_from_address("/Self"),
            Some("/redfish/v1/Systems/Self".to_owned())
        );
    }
}
