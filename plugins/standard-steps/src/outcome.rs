//! What every step shares: how a run ends, how its state survives until the
//! next run, how driver progress maps to waiting, and the call budget.

use ingot_plugin_sdk::host::{ControlError, Host, Level};
use ingot_plugin_sdk::steps::{Requeue, StepError, StepOutcome};
use ingot_plugin_sdk::types::Progress;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::settings::DRIVER_TIMEOUT;

/// Shortest wait the plugin asks for, so a driver answering "call again
/// after 0 ms" cannot make the operator spin.
const MIN_WAIT_MS: u64 = 500;

/// Longest wait taken over from a driver's progress report.
const MAX_WAIT_MS: u64 = 60_000;

/// Call budget a further host-control request needs within the same run: a
/// driver may make several round-trips to a slow BMC for one request. Below
/// it the step requeues instead of risking being interrupted halfway.
const NEXT_ACTION_BUDGET_MS: u64 = 10_000;

/// Wait before continuing a step whose run ran out of call budget.
pub const CONTINUE_MS: u64 = MIN_WAIT_MS;

/// Why a step stops before reaching its goal.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// The phase fails with this message: the machine, its driver or the
    /// deploy agent refused, or a wait timed out.
    Failed(String),
    /// The operator handles it: retries a transient problem, reports
    /// invalid input.
    Error(StepError),
}

impl From<StepError> for Halt {
    fn from(error: StepError) -> Self {
        Self::Error(error)
    }
}

/// Turns a step's result into what `run` returns over the WIT interface.
pub fn finish(result: Result<StepOutcome, Halt>) -> Result<StepOutcome, StepError> {
    match result {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Failed(message)) => Ok(StepOutcome::Failed(message)),
        Err(Halt::Error(error)) => Err(error),
    }
}

/// A pause before the next run of the same step: how long, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// Milliseconds until the next run.
    pub after_ms: u64,
    /// Progress note for the operator's logs and the host's status.
    pub detail: String,
}

impl Wait {
    /// A wait of `after_ms` explained by `detail`.
    pub fn new(after_ms: u64, detail: impl Into<String>) -> Self {
        Self {
            after_ms,
            detail: detail.into(),
        }
    }

    /// A short wait that lets the next run continue where this one stopped
    /// for lack of call budget.
    pub fn to_continue() -> Self {
        Self::new(CONTINUE_MS, "continuing in the next run")
    }

    /// Requeues the step, handing `state` to its next run.
    pub fn requeue<S: Serialize>(self, state: &S) -> Result<StepOutcome, Halt> {
        let state = serde_json::to_vec(state).map_err(|error| {
            Halt::Error(StepError::Other(format!(
                "encoding the step state: {error}"
            )))
        })?;

        Ok(StepOutcome::RequeueAfter(Requeue {
            after_ms: self.after_ms,
            state,
            detail: self.detail,
        }))
    }
}

/// What a host-control request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driven {
    /// The requested state holds.
    Done,
    /// The driver is still working; ask again after the wait.
    Pending(Wait),
}

/// Maps the driver's answer to a request described by `what` (a verb
/// phrase such as "insert the deploy media").
pub fn driven(what: &str, answer: Result<Progress, ControlError>) -> Result<Driven, Halt> {
    match answer {
        Ok(Progress::Done) => Ok(Driven::Done),
        Ok(Progress::InProgress(pending)) => Ok(Driven::Pending(Wait::new(
            pending.requeue_after_ms.clamp(MIN_WAIT_MS, MAX_WAIT_MS),
            format!("{what}: {}", pending.detail),
        ))),
        Err(error) => Err(control_failure(what, error)),
    }
}

/// Maps a failed host-control request. An unsupported operation fails the
/// phase, since retrying cannot help; a driver failure (often an
/// unreachable BMC) is left to the operator's retries.
pub fn control_failure(what: &str, error: ControlError) -> Halt {
    match error {
        ControlError::NotSupported(detail) => Halt::Failed(format!(
            "cannot {what}: the host's BMC driver does not support it ({detail})"
        )),
        ControlError::Driver(detail) => {
            Halt::Error(StepError::Transient(format!("could not {what}: {detail}")))
        }
        ControlError::Other(detail) => {
            Halt::Error(StepError::Other(format!("could not {what}: {detail}")))
        }
    }
}

/// The state the last run of `step` returned, or none when there is none or
/// it cannot be read (for example one written by another version of this
/// plugin). Every step starts over safely without its state.
pub fn decode_state<S: DeserializeOwned>(
    host: &impl Host,
    step: &str,
    state: Option<Vec<u8>>,
) -> Option<S> {
    let bytes = state.filter(|bytes| !bytes.is_empty())?;

    match serde_json::from_slice(&bytes) {
        Ok(state) => Some(state),
        Err(error) => {
            host.log(
                Level::Warn,
                "step state unreadable, starting the step over",
                &[("step", step), ("error", &error.to_string())],
            );
            None
        }
    }
}

/// Whether another host-control request fits in this run.
pub fn has_budget(host: &impl Host) -> bool {
    host.deadline_remaining_ms() >= NEXT_ACTION_BUDGET_MS
}

/// Milliseconds since `since_ms`; zero if the clock went backwards.
pub fn elapsed_ms(host: &impl Host, since_ms: u64) -> u64 {
    host.now_unix_ms().saturating_sub(since_ms)
}

/// The failure of a driver request still pending after `waited_ms`.
pub fn driver_timed_out(wait: &Wait, waited_ms: u64) -> Halt {
    Halt::Failed(format!(
        "the host's driver did not finish ({}) within {} s; raise {DRIVER_TIMEOUT} if its BMC is slow",
        wait.detail,
        seconds(waited_ms)
    ))
}

/// Whole seconds in `millis`, for messages.
pub fn seconds(millis: u64) -> u64 {
    millis / 1_000
}

/// `url` fit for logs and messages: its scheme, host and port only. User
/// information, query and fragment may carry credentials, and a path may
/// be the secret itself (deploy media are published under an unguessable
/// path that hands out the agent's token).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };

    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);

    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_plugin_sdk::mock::MockHost;
    use ingot_plugin_sdk::types::Pending;

    #[test]
    fn redacted_urls_keep_scheme_host_and_port_only() {
        assert_eq!(
            redact_url("https://user:secret@images.lab:8443/os.raw?token=abc#x"),
            "https://images.lab:8443"
        );
        assert_eq!(
            redact_url("https://10.0.0.1:6385/v1/media/0f3a9c"),
            "https://10.0.0.1:6385"
        );
        assert_eq!(redact_url("http://token@media.lab"), "http://media.lab");
        assert_eq!(redact_url("http://media.lab?token=x"), "http://media.lab");
        assert_eq!(redact_url("not a url?secret"), "(not a URL)");
    }

    #[test]
    fn driver_progress_is_clamped_and_errors_are_classified() {
        let instant = Ok(Progress::InProgress(Pending {
            requeue_after_ms: 0,
            detail: "task 1".into(),
        }));
        let slow = Ok(Progress::InProgress(Pending {
            requeue_after_ms: 3_600_000,
            detail: "task 2".into(),
        }));

        assert_eq!(
            driven("eject", instant),
            Ok(Driven::Pending(Wait::new(MIN_WAIT_MS, "eject: task 1")))
        );
        assert_eq!(
            driven("eject", slow),
            Ok(Driven::Pending(Wait::new(MAX_WAIT_MS, "eject: task 2")))
        );
        assert!(matches!(
            driven("eject", Err(ControlError::NotSupported("media".into()))),
            Err(Halt::Failed(message)) if message.contains("does not support")
        ));
        assert!(matches!(
            driven("eject", Err(ControlError::Driver("unreachable".into()))),
            Err(Halt::Error(StepError::Transient(message))) if message == "could not eject: unreachable"
        ));
        assert!(matches!(
            driven("eject", Err(ControlError::Other("odd".into()))),
            Err(Halt::Error(StepError::Other(_)))
        ));
    }

    #[test]
    fn unreadable_state_is_treated_as_lost_and_logged() {
        let host = MockHost::new();

        let lost: Option<u64> = decode_state(&host, "reboot", Some(b"{not json".to_vec()));
        let empty: Option<u64> = decode_state(&host, "reboot", Some(Vec::new()));
        let kept: Option<u64> = decode_state(&host, "reboot", Some(b"42".to_vec()));

        assert_eq!((lost, empty, kept), (None, None, Some(42)));
        assert_eq!(host.logs().len(), 1, "only the unreadable state is logged");
        assert_eq!(host.logs()[0].level, Level::Warn);
    }

    #[test]
    fn the_budget_follows_the_call_deadline() {
        let host = MockHost::new();

        host.set_deadline_remaining_ms(NEXT_ACTION_BUDGET_MS - 1);
        let short = has_budget(&host);
        host.set_deadline_remaining_ms(NEXT_ACTION_BUDGET_MS);
        let enough = has_budget(&host);

        assert_eq!((short, enough), (false, true));
    }
}
