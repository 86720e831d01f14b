//! The plugin worlds this host implements, and what each may import.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The WIT package every plugin world belongs to.
pub const PACKAGE: &str = "ingot:plugin";

/// The package version this host implements.
pub const HOST_VERSION: Version = Version {
    major: 0,
    minor: 1,
    patch: 0,
};

/// One of the plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `bmc-driver`: exports `driver`.
    BmcDriver,
    /// `host-selector`: exports `selection`.
    HostSelector,
    /// `provisioning-steps`: exports `steps`.
    ProvisioningSteps,
}

/// Imports every world may use.
const COMMON_IMPORTS: &[&str] = &["types", "log", "clock", "config"];

/// WASI interfaces linked for every plugin. Filesystem, sockets and HTTP are
/// absent on purpose: a component importing them is refused at load.
/// `wasi:cli/environment` is linked but reading it is a denied capability.
pub const GRANTED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

impl World {
    /// Every world.
    pub const ALL: [World; 3] = [
        World::BmcDriver,
        World::HostSelector,
        World::ProvisioningSteps,
    ];

    /// The world's name in WIT.
    pub fn name(self) -> &'static str {
        match self {
            Self::BmcDriver => "bmc-driver",
            Self::HostSelector => "host-selector",
            Self::ProvisioningSteps => "provisioning-steps",
        }
    }

    /// The interface the world exports.
    pub fn export(self) -> &'static str {
        match self {
            Self::BmcDriver => "driver",
            Self::HostSelector => "selection",
            Self::ProvisioningSteps => "steps",
        }
    }

    /// The `ingot:plugin` interfaces the world may import.
    pub fn imports(self) -> Vec<&'static str> {
        let specific: &[&str] = match self {
            Self::BmcDriver => &[
                "kv",
                "transport-types",
                "bmc-http",
                "bmc-datagram",
                "bmc-secret",
                "bmc-account",
            ],
            Self::HostSelector => &[],
            Self::ProvisioningSteps => &["kv", "host-control", "deploy-agent"],
        };

        COMMON_IMPORTS.iter().chain(specific).copied().collect()
    }

    /// The world whose exported interface is `interface`.
    pub fn exporting(interface: &str) -> Option<World> {
        Self::ALL
            .into_iter()
            .find(|world| world.export() == interface)
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A semantic version of a WIT package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Parses `major.minor.patch`; pre-release suffixes are not used by this package.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|part| part.parse::<u64>().ok());
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(version)
    }

    /// Whether a component built against `self` runs on a host implementing
    /// `host`: for 0.x the minor must match, from 1.0 the major (the same
    /// rule wasmtime's linker applies to versioned names).
    pub fn compatible_with(self, host: Version) -> bool {
        if self.major == 0 || host.major == 0 {
            self.major == host.major && self.minor == host.minor
        } else {
            self.major == host.major
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A versioned interface name, e.g. `wasi:io/error@0.2.6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    /// `namespace:package`.
    pub package: &'a str,
    /// Interface name.
    pub interface: &'a str,
    /// Version, if the name carries one.
    pub version: Option<Version>,
}

impl<'a> InterfaceName<'a> {
    /// Splits `namespace:package/interface[@version]`.
    pub fn parse(name: &'a str) -> Option<Self> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(Version::parse(version)?)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        Some(Self {
            package,
            interface,
            version,
        })
    }

    /// `namespace:package/interface` without the version.
    pub fn unversioned(&self) -> String {
        format!("{}/{}", self.package, self.interface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_major_versions_match_on_minor() {
        let host = Version {
            major: 0,
            minor: 1,
            patch: 0,
        };

        assert!(
            Version {
                major: 0,
                minor: 1,
                patch: 7
            }
            .compatible_with(host)
        );
        assert!(
            !Version {
                major: 0,
                minor: 2,
                patch: 0
            }
            .compatible_with(host)
        );
        assert!(
            Version {
                major: 1,
                minor: 4,
                patch: 0
            }
            .compatible_with(Version {
                major: 1,
                minor: 0,
                patch: 0
            })
        );
        assert!(
            !Version {
                major: 2,
                minor: 0,
                patch: 0
            }
            .compatible_with(Version {
                major: 1,
                minor: 9,
                patch: 0
            })
        );
    }

    #[test]
    fn parses_interface_names() {
        let name = InterfaceName::parse("ingot:plugin/bmc-http@0.1.2").expect("parses");

        assert_eq!(name.package, "ingot:plugin");
        assert_eq!(name.interface, "bmc-http");
        assert_eq!(
            name.version,
            Some(Version {
                major: 0,
                minor: 1,
                patch: 2
            })
        );
        assert_eq!(InterfaceName::parse("plain"), None);
        assert_eq!(InterfaceName::parse("a:b/c@x.y"), None);
    }
}
