//! Errors of loading and calling plugins.

use crate::bindings::{driver::DriverError, selection::SelectionError, steps::StepError};
use crate::limits::FailurePolicy;

/// Why a call did not produce the plugin's answer.
///
/// `Timeout`, `ResourceExhausted`, `Crashed` and `DeniedCapability` are
/// failures of the plugin and count towards its failure guard; `Domain` is a
/// regular answer saying the operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} timed out after {budget_ms} ms")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The call budget.
        budget_ms: u64,
    },

    /// The plugin tried to use more memory or table space than allowed.
    #[error("plugin {plugin} exceeded its resource limit: {detail}")]
    ResourceExhausted {
        /// Plugin name.
        plugin: String,
        /// Which limit, and the size requested.
        detail: String,
    },

    /// The plugin trapped (panic, unreachable, stack overflow, bad host
    /// call). The guest backtrace is in the log.
    #[error("plugin {plugin} crashed: {reason}")]
    Crashed {
        /// Plugin name.
        plugin: String,
        /// The trap, and the guest's last stderr line when there was one.
        reason: String,
    },

    /// The plugin tried to use a capability it is not granted.
    #[error("plugin {plugin} was denied {capability}: {detail}")]
    DeniedCapability {
        /// Plugin name.
        plugin: String,
        /// The capability, e.g. `environment` or `bmc-http`.
        capability: String,
        /// What was attempted.
        detail: String,
    },

    /// The plugin answered with an error of its world.
    #[error("plugin {plugin} reported an error: {error}")]
    Domain {
        /// Plugin name.
        plugin: String,
        /// The error.
        error: DomainError,
    },

    /// No plugin is loaded under this name.
    #[error("no plugin named {plugin} is loaded")]
    NotLoaded {
        /// Plugin name.
        plugin: String,
    },

    /// The call does not belong to the plugin's world.
    #[error("plugin {plugin} implements {world}, which has no {function}")]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// The plugin's world.
        world: String,
        /// The function asked for.
        function: String,
    },

    /// A driver call came without the BMC it should act on.
    #[error("driver plugin {plugin} was called without a BMC to act on")]
    NoBmc {
        /// Plugin name.
        plugin: String,
    },

    /// The plugin's failure guard is open and its policy is `Fail`.
    #[error("plugin {plugin} is disabled after repeated failures (policy {policy:?})")]
    GuardOpen {
        /// Plugin name.
        plugin: String,
        /// Its failure policy.
        policy: FailurePolicy,
    },

    /// The plugin's failure guard is open and its policy is `Ignore`: the
    /// caller proceeds without the plugin's answer.
    #[error("plugin {plugin} is disabled after repeated failures; its answer is ignored")]
    Ignored {
        /// Plugin name.
        plugin: String,
    },

    /// The host could not set up the call (instantiation failed).
    #[error("could not start plugin {plugin}")]
    Instantiate {
        /// Plugin name.
        plugin: String,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
}

impl CallError {
    /// Whether this failure counts towards the plugin's failure guard.
    pub fn is_plugin_failure(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::ResourceExhausted { .. }
                | Self::Crashed { .. }
                | Self::DeniedCapability { .. }
                | Self::Instantiate { .. }
        )
    }
}

/// An error answer from a plugin, per world.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum DomainError {
    /// From a BMC driver.
    Driver(DriverError),
    /// From a host selector.
    Selection(SelectionError),
    /// From a provisioning-steps plugin.
    Steps(StepError),
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Driver(error) => write!(f, "{error:?}"),
            Self::Selection(error) => write!(f, "{error:?}"),
            Self::Steps(error) => write!(f, "{error:?}"),
        }
    }
}
