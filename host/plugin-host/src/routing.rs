//! Which plugins serve a host: its BMC driver, the selector ranking it for
//! claims, and the provisioning-steps plugin of each phase.
//!
//! The operator asks a [`Routing`] once per reconcile. [`BuiltinRouting`]
//! answers with the bundled plugins alone; a router backed by `HostPolicy`
//! objects lets a site pick other plugins and per-policy configuration.

use crate::bindings::steps::Phase;
use crate::drivers::{UnknownScheme, default_driver};

/// Name of the bundled host-selector plugin (crate `plugins/default-selector`).
pub const DEFAULT_SELECTOR: &str = "ingot-default-selector";

/// Name of the bundled provisioning-steps plugin (crate `plugins/standard-steps`).
pub const STANDARD_STEPS: &str = "ingot-standard-steps";

/// A plugin chosen for a host, with configuration merged over the plugin's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginBinding {
    /// Name the plugin is registered under.
    pub plugin: String,
    /// Keys that override the plugin's configuration for this host.
    pub config: Vec<(String, String)>,
    /// Parameters handed to provisioning-steps plugins in their phase context.
    pub parameters: Vec<(String, String)>,
}

impl PluginBinding {
    /// The plugin `name` with no overrides.
    pub fn named(name: &str) -> Self {
        Self {
            plugin: name.to_owned(),
            config: Vec::new(),
            parameters: Vec::new(),
        }
    }
}

/// What a router is told about a host.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// Namespace of the BareMetalHost.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a std::collections::BTreeMap<String, String>,
    /// The scheme of its BMC address, e.g. `redfish+https` or `ipmi`.
    pub bmc_scheme: &'a str,
}

/// The plugins serving one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlugins {
    /// The BMC driver.
    pub driver: PluginBinding,
    /// The host selector ranking this host for claims.
    pub selector: PluginBinding,
    /// The provisioning-steps plugin of every phase.
    pub steps: Vec<(Phase, PluginBinding)>,
}

impl HostPlugins {
    /// The steps plugin planning `phase`.
    pub fn steps_for(&self, phase: Phase) -> Option<&PluginBinding> {
        self.steps
            .iter()
            .find(|(planned, _)| *planned == phase)
            .map(|(_, binding)| binding)
    }
}

/// Why no plugins could be chosen for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// No driver serves the host's BMC address.
    #[error(transparent)]
    UnknownScheme(#[from] UnknownScheme),
    /// The governing policy names something unusable.
    #[error("host policy {policy}: {reason}")]
    Policy {
        /// `namespace/name` of the policy.
        policy: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Chooses the plugins of a host.
pub trait Routing: Send + Sync {
    /// The plugins serving the host described by `facts`.
    ///
    /// # Errors
    /// [`RoutingError`] when no driver serves the host or its policy is unusable.
    fn plugins_for(&self, facts: &HostFacts<'_>) -> Result<HostPlugins, RoutingError>;
}

/// The bundled plugins: the driver for the address scheme, the default
/// selector and the standard steps for every phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinRouting;

impl Routing for BuiltinRouting {
    fn plugins_for(&self, facts: &HostFacts<'_>) -> Result<HostPlugins, RoutingError> {
        let driver = default_driver(facts.bmc_scheme)?;

        Ok(HostPlugins {
            driver: PluginBinding::named(driver),
            selector: PluginBinding::named(DEFAULT_SELECTOR),
            steps: ALL_PHASES
                .iter()
                .map(|phase| (*phase, PluginBinding::named(STANDARD_STEPS)))
                .collect(),
        })
    }
}

/// Every provisioning phase, in lifecycle order.
pub const ALL_PHASES: [Phase; 5] = [
    Phase::Inspect,
    Phase::Prepare,
    Phase::Deploy,
    Phase::Deprovision,
    Phase::LiveIso,
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::drivers::{IPMI_DRIVER, REDFISH_DRIVER};

    fn facts<'a>(scheme: &'a str, labels: &'a BTreeMap<String, String>) -> HostFacts<'a> {
        HostFacts {
            namespace: "lab",
            labels,
            bmc_scheme: scheme,
        }
    }

    #[test]
    fn builtin_routing_follows_the_address_scheme() {
        let labels = BTreeMap::new();

        let redfish = BuiltinRouting.plugins_for(&facts("idrac-virtualmedia+https", &labels));
        let ipmi = BuiltinRouting.plugins_for(&facts("ipmi", &labels));

        assert_eq!(redfish.map(|p| p.driver.plugin), Ok(REDFISH_DRIVER.into()));
        assert_eq!(ipmi.map(|p| p.driver.plugin), Ok(IPMI_DRIVER.into()));
    }

    #[test]
    fn builtin_routing_plans_every_phase_with_the_standard_steps() {
        let labels = BTreeMap::new();
        let Ok(plugins) = BuiltinRouting.plugins_for(&facts("redfish", &labels)) else {
            panic!("redfish has a built-in driver");
        };

        for phase in ALL_PHASES {
            let steps = plugins.steps_for(phase).map(|b| b.plugin.as_str());
            assert_eq!(steps, Some(STANDARD_STEPS), "{phase:?}");
        }
    }

    #[test]
    fn an_unknown_scheme_names_the_way_out() {
        let labels = BTreeMap::new();

        let error = BuiltinRouting.plugins_for(&facts("irmc", &labels)).err();

        assert!(error.is_some_and(|e| e.to_string().contains("HostPolicy")));
    }
}
