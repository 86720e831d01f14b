//! BMC addresses and the driver table.
//!
//! `spec.bmc.address` is a URL whose scheme picks the driver: `ipmi://10.0.0.5:623`,
//! `redfish+https://bmc.example/redfish/v1/Systems/1`, `idrac-virtualmedia://...`. Bare hosts,
//! `host:port` and `scheme:host` default to IPMI, as in Metal3. [`parse`] turns an address into
//! a [`BmcAddress`] naming the [`Driver`], its [`Capabilities`], the transport and the parts of
//! the URL a driver needs; BMC driver plugins and the operator both start from it.

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use crate::url::{self, GoUrl, UrlError};

/// The drivers ingot knows, one per scheme family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// IPMI over LAN (the default when there is no scheme).
    Ipmi,
    /// IPMI against a VirtualBMC in front of a libvirt VM.
    Libvirt,
    /// Redfish with network (iPXE) boot; `ilo5-redfish` is an alias.
    Redfish,
    /// Redfish with virtual-media boot; `ilo5-virtualmedia` is an alias.
    RedfishVirtualMedia,
    /// Redfish with UEFI HTTP boot.
    RedfishUefiHttp,
    /// Dell iDRAC Redfish with network boot.
    IdracRedfish,
    /// Dell iDRAC Redfish with virtual-media boot.
    IdracVirtualMedia,
}

/// What a driver can do; admission rules and the operator decide from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Name of the driver family in the provisioning backend (`ipmi`, `redfish`, `idrac`).
    pub backend_driver: &'static str,
    /// How the deploy ramdisk is booted (`ipxe`, `redfish-virtual-media`, ...).
    pub boot_interface: &'static str,
    /// Hardware RAID can be configured.
    pub raid: bool,
    /// Firmware settings and updates can be applied.
    pub firmware: bool,
    /// Out-of-band ("fast") inspection is available.
    pub fast_inspection: bool,
    /// A `bootMACAddress` is required even with inspection enabled.
    pub needs_mac: bool,
    /// UEFI secure boot can be enabled.
    pub secure_boot: bool,
    /// The ramdisk is booted over virtual media (an ISO).
    pub virtual_media: bool,
    /// A provisioning network (DHCP/PXE) is needed.
    pub needs_provisioning_network: bool,
}

const IPMI_CAPABILITIES: Capabilities = Capabilities {
    backend_driver: "ipmi",
    boot_interface: "ipxe",
    raid: false,
    firmware: false,
    fast_inspection: false,
    needs_mac: false,
    secure_boot: false,
    virtual_media: false,
    needs_provisioning_network: true,
};

const REDFISH_CAPABILITIES: Capabilities = Capabilities {
    backend_driver: "redfish",
    boot_interface: "ipxe",
    raid: true,
    firmware: true,
    fast_inspection: true,
    needs_mac: false,
    secure_boot: true,
    virtual_media: false,
    needs_provisioning_network: true,
};

impl Driver {
    /// Every driver, in table order.
    pub const ALL: [Driver; 7] = [
        Driver::Ipmi,
        Driver::Libvirt,
        Driver::Redfish,
        Driver::RedfishVirtualMedia,
        Driver::RedfishUefiHttp,
        Driver::IdracRedfish,
        Driver::IdracVirtualMedia,
    ];

    /// The canonical scheme of the driver.
    pub fn scheme(self) -> &'static str {
        match self {
            Driver::Ipmi => "ipmi",
            Driver::Libvirt => "libvirt",
            Driver::Redfish => "redfish",
            Driver::RedfishVirtualMedia => "redfish-virtualmedia",
            Driver::RedfishUefiHttp => "redfish-uefihttp",
            Driver::IdracRedfish => "idrac-redfish",
            Driver::IdracVirtualMedia => "idrac-virtualmedia",
        }
    }

    /// What the driver supports.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Driver::Ipmi => IPMI_CAPABILITIES,
            Driver::Libvirt => Capabilities {
                needs_mac: true,
                ..IPMI_CAPABILITIES
            },
            Driver::Redfish => REDFISH_CAPABILITIES,
            Driver::RedfishVirtualMedia => Capabilities {
                boot_interface: "redfish-virtual-media",
                virtual_media: true,
                needs_provisioning_network: false,
                ..REDFISH_CAPABILITIES
            },
            Driver::RedfishUefiHttp => Capabilities {
                boot_interface: "redfish-https",
                virtual_media: true,
                needs_provisioning_network: false,
                ..REDFISH_CAPABILITIES
            },
            Driver::IdracRedfish => Capabilities {
                backend_driver: "idrac",
                ..REDFISH_CAPABILITIES
            },
            Driver::IdracVirtualMedia => Capabilities {
                backend_driver: "idrac",
                boot_interface: "idrac-redfish-virtual-media",
                virtual_media: true,
                needs_provisioning_network: false,
                ..REDFISH_CAPABILITIES
            },
        }
    }

    /// Whether `+http`/`+https` variants of the scheme exist (the Redfish family).
    pub fn has_transport_variants(self) -> bool {
        !matches!(self, Driver::Ipmi | Driver::Libvirt)
    }

    /// The driver for a scheme name without transport suffix, aliases included.
    fn from_base_scheme(base: &str) -> Option<Driver> {
        match base {
            "ilo5-redfish" => Some(Driver::Redfish),
            "ilo5-virtualmedia" => Some(Driver::RedfishVirtualMedia),
            _ => Driver::ALL
                .into_iter()
                .find(|driver| driver.scheme() == base),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// HTTP transport selected by a `+http`/`+https` scheme suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS (the default for the Redfish family).
    Https,
}

/// A parsed BMC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcAddress {
    /// The scheme as written (lower-cased), e.g. `redfish+http`; `ipmi` when none was written.
    pub scheme: String,
    /// The driver the scheme selects.
    pub driver: Driver,
    /// Transport chosen by a scheme suffix; `None` means the driver's default.
    pub transport: Option<Transport>,
    /// Host name or IP address, without brackets.
    pub host: String,
    /// Port, when one was written.
    pub port: Option<u16>,
    /// URL path (for Redfish, the system id), possibly empty.
    pub path: String,
    /// Query string without `?` (e.g. `privilegelevel=OPERATOR` for IPMI).
    pub query: Option<String>,
}

impl BmcAddress {
    /// What the selected driver supports.
    pub fn capabilities(&self) -> Capabilities {
        self.driver.capabilities()
    }

    /// Whether the ramdisk is booted over virtual media.
    pub fn supports_virtual_media(&self) -> bool {
        self.capabilities().virtual_media
    }

    /// The port to connect to: the written one, or 623 for IPMI and 443/80 for Redfish.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(
            match (self.driver.has_transport_variants(), self.transport) {
                (false, _) => 623,
                (true, Some(Transport::Http)) => 80,
                (true, _) => 443,
            },
        )
    }

    /// Base URL of a Redfish service, e.g. `http://h:8000` for `redfish+http://h:8000/...`.
    pub fn redfish_base_url(&self) -> String {
        let scheme = match self.transport {
            Some(Transport::Http) => "http",
            _ => "https",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }
    }

    /// The Redfish system path, or `None` when the address names the service root only.
    pub fn redfish_system_id(&self) -> Option<&str> {
        let trimmed = self.path.trim_matches('/');
        (!trimmed.is_empty() && trimmed != "redfish/v1").then_some(self.path.as_str())
    }
}

/// Why a BMC address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcAddressError {
    /// The address is empty.
    #[error("BMC address is empty")]
    Empty,
    /// The address is not a URL, `host` or `host:port`.
    #[error("failed to parse BMC address information: {0}")]
    Unparsable(#[source] UrlError),
    /// The host is neither an IP address nor a valid DNS name.
    #[error("BMC address hostname/IP : [{0}] is invalid")]
    InvalidHost(String),
    /// The port is not a number between 0 and 65535.
    #[error("BMC address port {0:?} is invalid")]
    InvalidPort(String),
    /// The scheme names no known driver.
    #[error("Unknown BMC type '{scheme}' for address {address}")]
    UnknownType {
        /// The scheme.
        scheme: String,
        /// The whole address.
        address: String,
    },
    /// The scheme names a driver that was removed; objects using it load but cannot be managed.
    #[error(
        "Unknown BMC type '{scheme}' for address {address}: the {scheme} driver was removed ({replacement})"
    )]
    RemovedDriver {
        /// The scheme.
        scheme: String,
        /// The whole address.
        address: String,
        /// What to use instead.
        replacement: &'static str,
    },
}

/// Schemes of drivers that Metal3 removed, with what to use instead.
const REMOVED_DRIVERS: &[(&str, &str)] = &[
    ("idrac", "use idrac-redfish or idrac-virtualmedia"),
    ("ibmc", "use redfish"),
    ("ilo4", "iLO 4 is no longer supported; use ipmi"),
    (
        "ilo4-virtualmedia",
        "iLO 4 is no longer supported; use ipmi",
    ),
    ("ilo5", "use redfish or ilo5-redfish"),
    ("irmc", "use redfish or ipmi"),
];

static DNS_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]{0,61}[A-Za-z0-9])$")
        .unwrap_or_else(|_| unreachable!("the DNS name pattern is a valid regex"))
});

/// Parses a BMC address.
///
/// # Errors
/// [`BmcAddressError`] naming what is wrong: unparsable URL, bad host or port, unknown or
/// removed driver.
pub fn parse(address: &str) -> Result<BmcAddress, BmcAddressError> {
    if address.is_empty() {
        return Err(BmcAddressError::Empty);
    }
    let url = parse_url(address)?;
    let host = url.hostname().to_string();
    if host.parse::<IpAddr>().is_err() && !DNS_NAME.is_match(&host) {
        return Err(BmcAddressError::InvalidHost(host));
    }
    let port = match url.port() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<u16>()
                .map_err(|_| BmcAddressError::InvalidPort(text.to_string()))?,
        ),
    };
    let (driver, transport) = lookup_scheme(&url.scheme, address)?;
    Ok(BmcAddress {
        scheme: url.scheme.clone(),
        driver,
        transport,
        host,
        port,
        path: url.path.clone(),
        query: url.raw_query.clone(),
    })
}

/// Metal3's reading of an address: a URL, else `host:port`, else a bare host, all defaulting
/// to IPMI; `scheme:host` is read as `scheme://host`.
fn parse_url(address: &str) -> Result<GoUrl, BmcAddressError> {
    let parsed = match url::parse(address) {
        Ok(parsed) => parsed,
        Err(error) if address.contains(':') => {
            url::split_host_port_strict(address).ok_or(BmcAddressError::Unparsable(error))?;
            return Ok(GoUrl {
                scheme: "ipmi".into(),
                host: address.to_string(),
                ..GoUrl::default()
            });
        }
        Err(error) => return Err(BmcAddressError::Unparsable(error)),
    };
    if !parsed.opaque.is_empty() {
        return url::parse(&address.replacen(':', "://", 1)).map_err(BmcAddressError::Unparsable);
    }
    if parsed.scheme.is_empty() && parsed.hostname().is_empty() {
        return url::parse(&format!("ipmi://{address}")).map_err(BmcAddressError::Unparsable);
    }
    Ok(parsed)
}

fn lookup_scheme(
    scheme: &str,
    address: &str,
) -> Result<(Driver, Option<Transport>), BmcAddressError> {
    let (base, transport) = match scheme.rsplit_once('+') {
        Some((base, "http")) => (base, Some(Transport::Http)),
        Some((base, "https")) => (base, Some(Transport::Https)),
        _ => (scheme, None),
    };
    let driver = Driver::from_base_scheme(base)
        .filter(|driver| transport.is_none() || driver.has_transport_variants());
    if let Some(driver) = driver {
        return Ok((driver, transport));
    }
    let removed = REMOVED_DRIVERS.iter().find(|(name, _)| *name == base);
    Err(match removed {
        Some((_, replacement)) => BmcAddressError::RemovedDriver {
            scheme: scheme.to_string(),
            address: address.to_string(),
            replacement,
        },
        None => BmcAddressError::UnknownType {
            scheme: scheme.to_string(),
            address: address.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(address: &str) -> BmcAddress {
        parse(address).unwrap_or_else(|error| panic!("{address} should parse: {error}"))
    }

    /// The upstream parser's own test vectors.
    #[test]
    fn upstream_vectors() {
        let plain = parsed("192.168.122.1");
        assert_eq!(
            (plain.driver, plain.host.as_str(), plain.port),
            (Driver::Ipmi, "192.168.122.1", None)
        );

        let with_port = parsed("192.168.122.1:6233");
        assert_eq!(
            (with_port.driver, with_port.port),
            (Driver::Ipmi, Some(6233))
        );

        let v6 = parsed("[fe80::fc33:62ff:fe83:8a76]:6233");
        assert_eq!(
            (v6.driver, v6.host.as_str(), v6.port),
            (Driver::Ipmi, "fe80::fc33:62ff:fe83:8a76", Some(6233))
        );

        assert!(matches!(
            parse("[fe80::fc33:62ff:fe83:8a76]"),
            Err(BmcAddressError::Unparsable(_))
        ));

        let opaque = parsed("ipmi:192.168.122.1:6233");
        assert_eq!(
            (opaque.driver, opaque.host.as_str(), opaque.port),
            (Driver::Ipmi, "192.168.122.1", Some(6233))
        );

        let redfish = parsed("redfish:192.168.122.1");
        assert_eq!(
            (redfish.driver, redfish.host.as_str()),
            (Driver::Redfish, "192.168.122.1")
        );

        assert_eq!(
            parse("my-.examplehost.com"),
            Err(BmcAddressError::InvalidHost("my-.examplehost.com".into()))
        );

        let libvirt = parsed("libvirt://192.168.122.1:6233/?abc=def");
        assert_eq!(
            (libvirt.driver, libvirt.port),
            (Driver::Libvirt, Some(6233))
        );
        assert_eq!(libvirt.query.as_deref(), Some("abc=def"));
    }

    #[test]
    fn every_scheme_of_the_table_resolves() {
        let cases = [
            ("ipmi://h", Driver::Ipmi, None),
            ("libvirt://h", Driver::Libvirt, None),
            ("redfish://h", Driver::Redfish, None),
            ("redfish+http://h", Driver::Redfish, Some(Transport::Http)),
            ("redfish+https://h", Driver::Redfish, Some(Transport::Https)),
            ("ilo5-redfish://h", Driver::Redfish, None),
            (
                "redfish-virtualmedia+https://h",
                Driver::RedfishVirtualMedia,
                Some(Transport::Https),
            ),
            (
                "ilo5-virtualmedia+http://h",
                Driver::RedfishVirtualMedia,
                Some(Transport::Http),
            ),
            ("redfish-uefihttp://h", Driver::RedfishUefiHttp, None),
            (
                "idrac-redfish+https://h",
                Driver::IdracRedfish,
                Some(Transport::Https),
            ),
            ("idrac-virtualmedia://h", Driver::IdracVirtualMedia, None),
        ];
        for (address, driver, transport) in cases {
            let parsed = parsed(address);
            assert_eq!(
                (parsed.driver, parsed.transport),
                (driver, transport),
                "{address}"
            );
        }
    }

    #[test]
    fn removed_and_unknown_drivers_are_refused_with_a_hint() {
        for scheme in [
            "idrac",
            "idrac+https",
            "ibmc",
            "ilo4",
            "ilo4-virtualmedia",
            "ilo5",
            "irmc",
        ] {
            let error = parse(&format!("{scheme}://10.0.0.1")).expect_err(scheme);
            assert!(
                matches!(error, BmcAddressError::RemovedDriver { .. }),
                "{scheme}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("Unknown BMC type '{scheme}'"))
            );
        }
        assert!(matches!(
            parse("ipmi+https://h"),
            Err(BmcAddressError::UnknownType { .. })
        ));
        assert!(matches!(
            parse("foo://h"),
            Err(BmcAddressError::UnknownType { .. })
        ));
    }

    #[test]
    fn templates_and_placeholders_are_refused() {
        assert!(parse("${BMC_ADDRESS}").is_err());
        assert!(parse("<protocol>://<bmc_url>").is_err());
        assert!(parse("libvirt://VBMC_IP:VBMC_PORT/").is_err());
        assert!(matches!(
            parse("redfish-virtualmedia+<address>/redfish/v1/Systems/System.Embedded.1"),
            Err(BmcAddressError::InvalidHost(_))
        ));
        assert!(matches!(
            parse("redfish-virtualmedia://[192.168.125.1]:9000/redfish/v1/Systems/x"),
            Err(BmcAddressError::Unparsable(UrlError::BracketedNonIpv6(_)))
        ));
        assert_eq!(parse(""), Err(BmcAddressError::Empty));
        assert!(matches!(
            parse("ipmi://h:70000"),
            Err(BmcAddressError::InvalidPort(_))
        ));
    }

    #[test]
    fn empty_port_falls_back_to_the_driver_default() {
        let address = parsed("ipmi://a.b.c.d:");
        assert_eq!((address.port, address.effective_port()), (None, 623));
        assert_eq!(parsed("redfish+http://h/x").effective_port(), 80);
        assert_eq!(parsed("redfish://h/x").effective_port(), 443);
    }

    #[test]
    fn redfish_address_and_system_id() {
        let address = parsed("redfish+http://h:8000/redfish/v1/Systems/1");
        assert_eq!(address.redfish_base_url(), "http://h:8000");
        assert_eq!(address.redfish_system_id(), Some("/redfish/v1/Systems/1"));
        assert_eq!(parsed("redfish://h/redfish/v1/").redfish_system_id(), None);
        assert_eq!(
            parsed("redfish://[fe80::1]:8000").redfish_base_url(),
            "https://[fe80::1]:8000"
        );
    }

    #[test]
    fn capabilities_follow_the_driver_table() {
        assert!(!Driver::Ipmi.capabilities().raid && !Driver::Ipmi.capabilities().secure_boot);
        assert!(Driver::Libvirt.capabilities().needs_mac);
        assert!(parsed("redfish-virtualmedia://h").supports_virtual_media());
        assert!(!parsed("redfish://h").supports_virtual_media());
        assert_eq!(
            Driver::IdracVirtualMedia.capabilities().backend_driver,
            "idrac"
        );
        assert!(Driver::RedfishUefiHttp.capabilities().fast_inspection);
    }
}
