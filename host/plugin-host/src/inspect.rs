//! What a component is: its world, version, imports and exports, and
//! whether this host may load it.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::world::{GRANTED_WASI, HOST_VERSION, InterfaceName, PACKAGE, Version, World};

/// A component's identity as seen by the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentInfo {
    /// The plugin world it implements.
    pub world: World,
    /// The package version its export was built against.
    pub version: Version,
    /// Every import name.
    pub imports: Vec<String>,
    /// Every export name.
    pub exports: Vec<String>,
}

/// Why a component cannot be used as a plugin on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// It exports none of the plugin interfaces.
    #[error(
        "the component exports no {PACKAGE} plugin interface (found: {found}); \
         export one of driver, selection or steps"
    )]
    NoPluginExport {
        /// Its exports.
        found: String,
    },

    /// It exports more than one plugin interface.
    #[error(
        "the component exports several plugin interfaces ({found}); a plugin implements one world"
    )]
    SeveralWorlds {
        /// The plugin exports found.
        found: String,
    },

    /// It was built against an incompatible package version.
    #[error(
        "the component's {export} is version {version}, which this host (package version {host}) \
         cannot run; rebuild it against {PACKAGE}@{host}"
    )]
    IncompatibleVersion {
        /// The export.
        export: String,
        /// Its version.
        version: Version,
        /// The host's version.
        host: Version,
    },

    /// It imports something the world does not grant.
    #[error(
        "the component imports {}, which the {world} world does not grant; \
         allowed are {PACKAGE}/{{{allowed}}} and WASI io, cli, clocks and random \
         (no filesystem, sockets or HTTP)",
        quoted(imports)
    )]
    DeniedImport {
        /// Every import outside the allow-list.
        imports: Vec<String>,
        /// The world.
        world: World,
        /// The `ingot:plugin` interfaces the world grants.
        allowed: String,
    },

    /// The host expected another world.
    #[error("the component implements {found}, but {expected} was expected")]
    UnexpectedWorld {
        /// The expected world.
        expected: World,
        /// What the component implements.
        found: World,
    },
}

/// Reads a compiled component's world, version, imports and exports.
pub fn inspect(engine: &Engine, component: &Component) -> Result<ComponentInfo, InspectError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();

    let plugin_exports: Vec<(World, Version, &String)> = exports
        .iter()
        .filter_map(|export| {
            let name = InterfaceName::parse(export)?;
            let world = World::exporting(name.interface).filter(|_| name.package == PACKAGE)?;
            Some((world, name.version?, export))
        })
        .collect();

    let (world, version) = match plugin_exports.as_slice() {
        [] => {
            return Err(InspectError::NoPluginExport {
                found: exports.join(", "),
            });
        }
        [(world, version, _)] => (*world, *version),
        several => {
            let found = several
                .iter()
                .map(|(_, _, name)| name.as_str())
                .collect::<Vec<_>>();
            return Err(InspectError::SeveralWorlds {
                found: found.join(", "),
            });
        }
    };

    if !version.compatible_with(HOST_VERSION) {
        return Err(InspectError::IncompatibleVersion {
            export: format!("{PACKAGE}/{}", world.export()),
            version,
            host: HOST_VERSION,
        });
    }

    Ok(ComponentInfo {
        world,
        version,
        imports,
        exports,
    })
}

/// Checks every import against the world's allow-list.
pub fn check_imports(info: &ComponentInfo) -> Result<(), InspectError> {
    let granted = info.world.imports();

    let denied: Vec<String> = info
        .imports
        .iter()
        .filter(|import| !import_granted(import, &granted))
        .cloned()
        .collect();

    if denied.is_empty() {
        return Ok(());
    }

    Err(InspectError::DeniedImport {
        imports: denied,
        world: info.world,
        allowed: granted.join(", "),
    })
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn import_granted(import: &str, granted: &[&str]) -> bool {
    let Some(name) = InterfaceName::parse(import) else {
        return false;
    };

    if name.package == PACKAGE {
        return granted.contains(&name.interface)
            && name
                .version
                .is_some_and(|version| version.compatible_with(HOST_VERSION));
    }

    let wasi_02 = name
        .version
        .is_some_and(|version| version.major == 0 && version.minor == 2);
    wasi_02 && GRANTED_WASI.contains(&name.unversioned().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(world: World, imports: &[&str]) -> ComponentInfo {
        ComponentInfo {
            world,
            version: HOST_VERSION,
            imports: imports.iter().map(|import| (*import).to_owned()).collect(),
            exports: Vec::new(),
        }
    }

    #[test]
    fn grants_world_imports_and_basic_wasi() {
        let selector = info(
            World::HostSelector,
            &[
                "ingot:plugin/log@0.1.0",
                "wasi:io/streams@0.2.6",
                "wasi:cli/environment@0.2.3",
            ],
        );
        assert_eq!(check_imports(&selector), Ok(()));
    }

    #[test]
    fn refuses_transports_outside_the_driver_world() {
        let selector = info(World::HostSelector, &["ingot:plugin/bmc-http@0.1.0"]);
        let error = check_imports(&selector).expect_err("selectors have no BMC");

        assert!(
            error.to_string().contains("`ingot:plugin/bmc-http@0.1.0`"),
            "{error}"
        );
        assert_eq!(
            check_imports(&info(World::BmcDriver, &["ingot:plugin/bmc-http@0.1.3"])),
            Ok(())
        );
    }

    #[test]
    fn refuses_filesystem_sockets_and_foreign_imports() {
        for import in [
            "wasi:filesystem/preopens@0.2.6",
            "wasi:sockets/tcp@0.2.0",
            "env:host/anything",
            "wasi:io/error@0.3.0",
        ] {
            let error = check_imports(&info(World::BmcDriver, &[import])).expect_err(import);
            assert!(
                matches!(error, InspectError::DeniedImport { ref imports, .. } if imports == &[import])
            );
        }
    }

    #[test]
    fn refuses_an_incompatible_package_version() {
        let import = "ingot:plugin/log@0.2.0";
        assert!(check_imports(&info(World::HostSelector, &[import])).is_err());
    }
}
