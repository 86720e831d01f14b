//! Errors of loading and calling plugins.

use crate::bindings::driver::{BmcFault, DriverError};
use crate::bindings::{selection::SelectionError, steps::StepError};
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
    #[error("plugin {plugin}: {error}")]
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

/// The plugin's own text, without the error's type: the variant only adds what the text may
/// not say already, so people read each fact once.
impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Driver(error) => f.write_str(&driver_message(error)),
            Self::Selection(SelectionError::InvalidClaim(detail)) => {
                write!(f, "invalid claim: {detail}")
            }
            Self::Selection(SelectionError::Other(detail)) => f.write_str(detail),
            Self::Steps(
                StepError::InvalidInput(detail)
                | StepError::Transient(detail)
                | StepError::Other(detail),
            ) => f.write_str(detail),
        }
    }
}

fn driver_message(error: &DriverError) -> String {
    match error {
        DriverError::Unreachable(detail) => format!("cannot reach the BMC: {detail}"),
        DriverError::Bmc(fault) => bmc_fault_message(fault),
        DriverError::NotSupported(detail)
        | DriverError::InvalidRequest(detail)
        | DriverError::AuthenticationFailed(detail)
        | DriverError::Other(detail) => detail.clone(),
    }
}

/// The BMC's answer: the driver's detail, then the HTTP status and message id unless the
/// detail already names them.
fn bmc_fault_message(fault: &BmcFault) -> String {
    let mut facts = Vec::new();
    if let Some(status) = fault.http_status
        && !fault.detail.contains(&status.to_string())
    {
        facts.push(format!("HTTP {status}"));
    }
    if let Some(id) = &fault.message_id
        && !fault.detail.contains(id.as_str())
    {
        facts.push(format!("message {id}"));
    }

    match (fault.detail.is_empty(), facts.is_empty()) {
        (true, true) => "the BMC answered with an error".to_owned(),
        (true, false) => format!("the BMC answered with an error ({})", facts.join(", ")),
        (false, true) => fault.detail.clone(),
        (false, false) => format!("{} ({})", fault.detail, facts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(http_status: Option<u16>, message_id: Option<&str>, detail: &str) -> DomainError {
        DomainError::Driver(DriverError::Bmc(BmcFault {
            http_status,
            message_id: message_id.map(str::to_owned),
            detail: detail.to_owned(),
            retryable: true,
        }))
    }

    #[test]
    fn a_bmc_answer_reads_as_the_drivers_detail_with_no_type_names() {
        let error = CallError::Domain {
            plugin: "redfish".into(),
            error: fault(
                Some(503),
                Some("Base.1.0.GeneralError"),
                "GET /redfish/v1/Systems/1 answered HTTP 503: BMC unreachable",
            ),
        };

        assert_eq!(
            error.to_string(),
            "plugin redfish: GET /redfish/v1/Systems/1 answered HTTP 503: BMC unreachable \
             (message Base.1.0.GeneralError)"
        );
    }

    #[test]
    fn status_and_message_id_are_added_only_when_the_detail_lacks_them() {
        let cases = [
            (
                fault(Some(500), None, "reset failed"),
                "reset failed (HTTP 500)",
            ),
            (
                fault(
                    Some(400),
                    Some("IDRAC.2.8.SYS518"),
                    "busy: IDRAC.2.8.SYS518",
                ),
                "busy: IDRAC.2.8.SYS518 (HTTP 400)",
            ),
            (
                fault(None, Some("Base.1.0.Busy"), ""),
                "the BMC answered with an error (message Base.1.0.Busy)",
            ),
            (fault(None, None, ""), "the BMC answered with an error"),
        ];

        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn plain_errors_show_their_text_and_only_meaningful_prefixes() {
        let cases = [
            (
                DomainError::Driver(DriverError::Unreachable("connection refused".into())),
                "cannot reach the BMC: connection refused",
            ),
            (
                DomainError::Driver(DriverError::AuthenticationFailed("HTTP 401".into())),
                "HTTP 401",
            ),
            (
                DomainError::Steps(StepError::Transient("cannot power on: timeout".into())),
                "cannot power on: timeout",
            ),
            (
                DomainError::Selection(SelectionError::InvalidClaim("empty selector".into())),
                "invalid claim: empty selector",
            ),
        ];

        for (error, expected) in cases {
            let text = error.to_string();
            assert_eq!(text, expected);
            assert!(!text.contains("Error"), "a type name leaked: {text}");
        }
    }
}
