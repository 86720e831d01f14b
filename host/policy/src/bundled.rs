//! The plugins shipped with ingot: the Redfish and IPMI drivers, the default
//! host selector and the standard provisioning steps.
//!
//! They are loaded from one directory (an operator image's plugin directory,
//! or `make plugins` output in development) under the names the built-in
//! routing uses, and become the built-in plugin of their world: the one a
//! `UseBuiltin` failure policy falls back to. A `WasmPlugin` with the same
//! name replaces a bundled plugin; deleting it brings the bundled one back.

use std::path::{Path, PathBuf};

use ingot_plugin_host::drivers::{IPMI_DRIVER, REDFISH_DRIVER};
use ingot_plugin_host::limits::{FailurePolicy, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry, error_chain};
use ingot_plugin_host::routing::{DEFAULT_SELECTOR, STANDARD_STEPS};
use ingot_plugin_host::source::PluginSource;
use ingot_plugin_host::world::World;

/// One bundled plugin: its registered name and world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bundled {
    /// Name it is registered under (its crate name).
    pub name: &'static str,
    /// Its world.
    pub world: World,
}

/// Every bundled plugin. The Redfish driver is listed before the IPMI
/// driver so it becomes the built-in of the driver world: site driver
/// plugins are in practice vendor variants of Redfish.
pub const BUNDLED: [Bundled; 4] = [
    Bundled {
        name: REDFISH_DRIVER,
        world: World::BmcDriver,
    },
    Bundled {
        name: IPMI_DRIVER,
        world: World::BmcDriver,
    },
    Bundled {
        name: DEFAULT_SELECTOR,
        world: World::HostSelector,
    },
    Bundled {
        name: STANDARD_STEPS,
        world: World::ProvisioningSteps,
    },
];

impl Bundled {
    /// The bundled plugin registered as `name`, if any.
    pub fn named(name: &str) -> Option<Bundled> {
        BUNDLED.into_iter().find(|bundled| bundled.name == name)
    }

    /// The component's file name: the crate name with `_`, as cargo writes it.
    pub fn file_name(&self) -> String {
        format!("{}.wasm", self.name.replace('-', "_"))
    }

    /// What the registry loads for it from `dir`.
    pub fn spec(&self, dir: &Path) -> PluginSpec {
        let limits = match self.world {
            World::HostSelector => Limits::for_selection(),
            World::BmcDriver | World::ProvisioningSteps => Limits::default(),
        };

        PluginSpec {
            source: PluginSource::File {
                path: dir.join(self.file_name()),
                sha256: None,
            },
            world: Some(self.world),
            config: Vec::new(),
            limits,
            failure_policy: FailurePolicy::Fail,
        }
    }
}

/// What [`load_bundled`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BundledReport {
    /// Names now serving.
    pub loaded: Vec<&'static str>,
    /// Files that were not there.
    pub missing: Vec<PathBuf>,
    /// Names whose file was there but did not load, with the reason.
    pub failed: Vec<(&'static str, String)>,
}

/// Loads every bundled plugin found in `dir` and marks each as the built-in
/// of its world (the first of a world that loads).
///
/// A missing or broken file is logged as a warning naming the file and how
/// to build it; the others still load and the operator keeps running, with
/// the hosts needing the missing plugin reporting it when they need it.
pub async fn load_bundled(registry: &Registry, dir: &Path) -> BundledReport {
    let mut report = BundledReport::default();

    for bundled in BUNDLED {
        let path = dir.join(bundled.file_name());
        if !path.is_file() {
            tracing::warn!(plugin = bundled.name, path = %path.display(), "bundled plugin not found; build the bundled plugins with `make plugins`");
            report.missing.push(path);
            continue;
        }

        match registry.load(bundled.name, bundled.spec(dir)).await {
            Ok(_) => report.loaded.push(bundled.name),
            Err(error) => {
                let reason = error_chain(&error);
                tracing::warn!(plugin = bundled.name, path = %path.display(), error = %reason, "bundled plugin did not load; rebuild it with `make plugins`");
                report.failed.push((bundled.name, reason));
            }
        }
    }

    mark_builtins(registry, &report.loaded);
    report
}

fn mark_builtins(registry: &Registry, loaded: &[&'static str]) {
    for world in World::ALL {
        let first = BUNDLED
            .iter()
            .find(|bundled| bundled.world == world && loaded.contains(&bundled.name));

        if let Some(bundled) = first {
            registry.set_builtin(world, bundled.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_crate_names_as_cargo_writes_them() {
        let files: Vec<String> = BUNDLED.iter().map(Bundled::file_name).collect();

        assert_eq!(
            files,
            [
                "ingot_plugin_redfish.wasm",
                "ingot_plugin_ipmi.wasm",
                "ingot_default_selector.wasm",
                "ingot_standard_steps.wasm",
            ]
        );
    }

    #[test]
    fn every_world_has_a_bundled_plugin() {
        for world in World::ALL {
            assert!(
                BUNDLED.iter().any(|bundled| bundled.world == world),
                "{world}"
            );
        }
    }
}
