//! Which BMC driver plugin serves a host: the one its `HostPolicy` names,
//! else the built-in driver for its address scheme.
//!
//! | scheme (and `+http`/`+https` forms)                             | built-in driver          |
//! |-----------------------------------------------------------------|--------------------------|
//! | `redfish`, `redfish-virtualmedia`, `redfish-uefihttp`,          | [`REDFISH_DRIVER`]       |
//! | `idrac-redfish`, `idrac-virtualmedia`, `ilo5-redfish`,          |                          |
//! | `ilo5-virtualmedia`                                             |                          |
//! | `ipmi` (also bare `host[:port]` addresses), `libvirt`           | [`IPMI_DRIVER`]          |
//!
//! The IPMI schemes have no `+http`/`+https` forms, as upstream.

/// Name of the built-in Redfish driver plugin (crate `plugins/redfish`).
pub const REDFISH_DRIVER: &str = "ingot-plugin-redfish";

/// Name of the built-in IPMI driver plugin (crate `plugins/ipmi`).
pub const IPMI_DRIVER: &str = "ingot-plugin-ipmi";

const REDFISH_SCHEMES: [&str; 7] = [
    "redfish",
    "redfish-virtualmedia",
    "redfish-uefihttp",
    "idrac-redfish",
    "idrac-virtualmedia",
    "ilo5-redfish",
    "ilo5-virtualmedia",
];

const IPMI_SCHEMES: [&str; 2] = ["ipmi", "libvirt"];

/// No driver serves the address scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no built-in BMC driver serves the scheme {scheme:?}; name a driver plugin in the host's HostPolicy"
)]
pub struct UnknownScheme {
    /// The scheme as given.
    pub scheme: String,
}

/// The built-in driver plugin for an address scheme.
///
/// # Errors
/// [`UnknownScheme`] for a scheme no built-in driver serves.
pub fn default_driver(scheme: &str) -> Result<&'static str, UnknownScheme> {
    let base = scheme
        .strip_suffix("+https")
        .or_else(|| scheme.strip_suffix("+http"));
    let driver = match base {
        Some(base) if REDFISH_SCHEMES.contains(&base) => Some(REDFISH_DRIVER),
        Some(_) => None,
        None if REDFISH_SCHEMES.contains(&scheme) => Some(REDFISH_DRIVER),
        None if IPMI_SCHEMES.contains(&scheme) => Some(IPMI_DRIVER),
        None => None,
    };
    driver.ok_or_else(|| UnknownScheme {
        scheme: scheme.to_owned(),
    })
}

/// The driver plugin for a host: the policy's choice wins over the
/// scheme's built-in driver.
///
/// # Errors
/// [`UnknownScheme`] when the policy names none and no built-in driver
/// serves the scheme.
pub fn driver_plugin(scheme: &str, policy_driver: Option<&str>) -> Result<String, UnknownScheme> {
    match policy_driver {
        Some(name) => Ok(name.to_owned()),
        None => default_driver(scheme).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redfish_schemes_and_their_transport_forms_go_to_the_redfish_driver() {
        for scheme in REDFISH_SCHEMES {
            for form in [
                scheme.to_owned(),
                format!("{scheme}+http"),
                format!("{scheme}+https"),
            ] {
                assert_eq!(default_driver(&form), Ok(REDFISH_DRIVER), "{form}");
            }
        }
    }

    #[test]
    fn ipmi_schemes_have_no_transport_forms() {
        assert_eq!(default_driver("ipmi"), Ok(IPMI_DRIVER));
        assert_eq!(default_driver("libvirt"), Ok(IPMI_DRIVER));
        assert!(default_driver("ipmi+https").is_err());
        assert!(default_driver("ilo4").is_err());
    }

    #[test]
    fn a_policy_overrides_the_scheme() {
        assert_eq!(
            driver_plugin("idrac-virtualmedia", Some("dell-oem")),
            Ok("dell-oem".to_owned())
        );
        assert_eq!(
            driver_plugin("redfish", None),
            Ok(REDFISH_DRIVER.to_owned())
        );
        let error = driver_plugin("irmc", None).err().map(|e| e.to_string());
        assert!(error.is_some_and(|text| text.contains("HostPolicy")));
    }
}
