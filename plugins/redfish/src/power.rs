//! Power state and `ComputerSystem.Reset`.
//!
//! Resets are asynchronous on real BMCs. A request is issued once and
//! remembered in the key-value store; later calls only watch the state, so
//! repeating a call never repeats the reset. A graceful shutdown that has not
//! finished after the soft timeout is escalated to `ForceOff`; a request the
//! BMC accepted but never carried out fails after the power timeout instead
//! of waiting forever.

use serde_json::{Value, json};

use crate::client::Accepted;
use crate::driver::{REQUEUE_AFTER_MS, Session};
use crate::error::RedfishError;
use crate::json;
use crate::model::{Pending, PowerAction, PowerState, Progress};
use crate::transport::{BmcHttp, Environment};

const PENDING_KEY: &str = "redfish/power-pending";
const SOFT_TIMEOUT_KEY: &str = "soft-power-off-timeout-ms";
const POWER_TIMEOUT_KEY: &str = "power-timeout-ms";
const DEFAULT_SOFT_TIMEOUT_MS: u64 = 180_000;
const DEFAULT_POWER_TIMEOUT_MS: u64 = 300_000;

/// ResetType values every Redfish service understands, assumed when the
/// system lists none.
const DMTF_RESET_TYPES: [&str; 7] = [
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "ForceOn",
    "PushPowerButton",
];

/// A reset request remembered between calls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingReset {
    reset_type: String,
    issued_ms: u64,
}

impl PendingReset {
    fn encode(&self) -> Vec<u8> {
        format!("{}:{}", self.reset_type, self.issued_ms).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (reset_type, issued) = text.split_once(':')?;
        Some(Self {
            reset_type: reset_type.to_owned(),
            issued_ms: issued.parse().ok()?,
        })
    }
}

/// Maps the Redfish `PowerState` text.
pub fn parse_power_state(text: Option<&str>) -> PowerState {
    match text {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        Some("PoweringOn") => PowerState::PoweringOn,
        Some("PoweringOff") => PowerState::PoweringOff,
        _ => PowerState::Unknown,
    }
}

impl<H: BmcHttp, E: Environment> Session<'_, '_, H, E> {
    /// The power state in the system resource read at session start.
    pub fn power_state(&self) -> PowerState {
        parse_power_state(json::str_at(&self.system.body, &["PowerState"]))
    }

    /// The reset action target and the ResetType values the system accepts,
    /// listed inline or through `@Redfish.ActionInfo`.
    ///
    /// # Errors
    /// [`RedfishError::Unsupported`] when the system has no reset action.
    pub fn reset_action(&mut self) -> Result<(String, Vec<String>), RedfishError> {
        let action = json::at(&self.system.body, &["Actions", "#ComputerSystem.Reset"])
            .cloned()
            .unwrap_or(Value::Null);
        let Some(target) = json::str_at(&action, &["target"]) else {
            return Err(RedfishError::Unsupported(
                "the system has no ComputerSystem.Reset action".to_owned(),
            ));
        };
        let target = self.resolve(target);

        let mut allowed = json::strings(&action, &["ResetType@Redfish.AllowableValues"]);
        if allowed.is_empty()
            && let Some(info) = json::str_at(&action, &["@Redfish.ActionInfo"])
        {
            let info = self.resolve(info);
            if let Some(info) = self.client.get_optional(&info)? {
                allowed = action_info_values(&info.body, "ResetType");
            }
        }
        if allowed.is_empty() {
            allowed = DMTF_RESET_TYPES.iter().map(|v| (*v).to_owned()).collect();
        }
        Ok((target, allowed))
    }

    /// Posts the first of `candidates` the system accepts.
    ///
    /// # Errors
    /// [`RedfishError::Unsupported`] when none is accepted, or the failed POST.
    fn reset(&mut self, candidates: &[&str]) -> Result<String, RedfishError> {
        let (target, allowed) = self.reset_action()?;
        let Some(reset_type) = candidates
            .iter()
            .find(|candidate| allowed.iter().any(|a| a == *candidate))
        else {
            return Err(RedfishError::Unsupported(format!(
                "ResetType {} (the system offers {})",
                candidates.join(" or "),
                allowed.join(", ")
            )));
        };
        match self
            .client
            .post(&target, &json!({ "ResetType": reset_type }))
        {
            Ok(Accepted::Done | Accepted::Task(_)) => Ok((*reset_type).to_owned()),
            Err(error) => Err(error),
        }
    }

    /// Requests a power change and reports whether it holds yet.
    ///
    /// # Errors
    /// Unsupported reset types, failed requests, or a change the BMC did not
    /// carry out within the power timeout.
    pub fn set_power(&mut self, action: PowerAction) -> Result<Progress, RedfishError> {
        let state = self.power_state();
        match action {
            PowerAction::On => self.drive_towards(state, PowerState::On, &["On", "ForceOn"]),
            PowerAction::OffHard => self.drive_towards(state, PowerState::Off, &["ForceOff"]),
            PowerAction::OffSoft => self.soft_off(state),
            PowerAction::RebootHard => self.reboot(state, &["ForceRestart", "PowerCycle"]),
            PowerAction::RebootSoft => {
                self.reboot(state, &["GracefulRestart", "ForceRestart", "PowerCycle"])
            }
        }
    }

    fn drive_towards(
        &mut self,
        state: PowerState,
        wanted: PowerState,
        reset_types: &[&str],
    ) -> Result<Progress, RedfishError> {
        if state == wanted {
            self.env.delete(PENDING_KEY);
            return Ok(Progress::Done);
        }
        let now = self.env.now_ms();
        let pending = self
            .pending()
            .filter(|p| reset_types.contains(&p.reset_type.as_str()));
        match pending {
            Some(pending) => self.check_timeout(&pending, now, wanted),
            None => {
                let issued = self.reset_tolerating_state(reset_types, wanted)?;
                if issued.is_none() {
                    self.env.delete(PENDING_KEY);
                    return Ok(Progress::Done);
                }
                Ok(self.remember(issued, now, wanted))
            }
        }
    }

    fn soft_off(&mut self, state: PowerState) -> Result<Progress, RedfishError> {
        if state == PowerState::Off {
            self.env.delete(PENDING_KEY);
            return Ok(Progress::Done);
        }
        let now = self.env.now_ms();
        let soft_timeout = self.config_ms(SOFT_TIMEOUT_KEY, DEFAULT_SOFT_TIMEOUT_MS);
        match self.pending() {
            Some(pending) if pending.reset_type == "GracefulShutdown" => {
                if now.saturating_sub(pending.issued_ms) < soft_timeout {
                    return Ok(in_progress(PowerState::Off, "graceful shutdown"));
                }
                let issued = self.reset_tolerating_state(&["ForceOff"], PowerState::Off)?;
                Ok(self.remember(issued, now, PowerState::Off))
            }
            Some(pending) if pending.reset_type == "ForceOff" => {
                self.check_timeout(&pending, now, PowerState::Off)
            }
            _ => {
                let issued = match self.reset(&["GracefulShutdown"]) {
                    Ok(issued) => issued,
                    // No graceful shutdown offered: go straight to the forced one.
                    Err(RedfishError::Unsupported(_)) => self.reset(&["ForceOff"])?,
                    Err(error) => return Err(error),
                };
                Ok(self.remember(Some(issued), now, PowerState::Off))
            }
        }
    }

    fn reboot(
        &mut self,
        state: PowerState,
        reset_types: &[&str],
    ) -> Result<Progress, RedfishError> {
        if matches!(state, PowerState::Off | PowerState::PoweringOff) {
            return self.drive_towards(state, PowerState::On, &["On", "ForceOn"]);
        }
        self.reset(reset_types)?;
        self.env.delete(PENDING_KEY);
        Ok(Progress::Done)
    }

    /// Issues a reset; an error answered because the system already reached
    /// the wanted state (409/400 for `On` on a running host) is not a
    /// failure and yields `None`.
    fn reset_tolerating_state(
        &mut self,
        reset_types: &[&str],
        wanted: PowerState,
    ) -> Result<Option<String>, RedfishError> {
        match self.reset(reset_types) {
            Ok(issued) => Ok(Some(issued)),
            Err(
                error @ RedfishError::Status {
                    status: 400 | 409, ..
                },
            ) => {
                self.reload_system()?;
                if self.power_state() == wanted {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Records the reset just issued, then looks at the system once more: a BMC that applies
    /// resets at once (virtual BMCs, many real ones) already shows the wanted state, and
    /// waiting for it would only hold the host up.
    fn remember(&mut self, issued: Option<String>, now: u64, wanted: PowerState) -> Progress {
        if let Some(reset_type) = issued {
            let pending = PendingReset {
                reset_type,
                issued_ms: now,
            };
            // Losing the record only means the next call re-issues the reset.
            let _ = self.env.set(PENDING_KEY, &pending.encode());
        }
        // A failed look is no failure of the reset: the next call looks again.
        if self.reload_system().is_ok() && self.power_state() == wanted {
            self.env.delete(PENDING_KEY);
            return Progress::Done;
        }
        in_progress(wanted, "reset requested")
    }

    fn check_timeout(
        &mut self,
        pending: &PendingReset,
        now: u64,
        wanted: PowerState,
    ) -> Result<Progress, RedfishError> {
        let timeout = self.config_ms(POWER_TIMEOUT_KEY, DEFAULT_POWER_TIMEOUT_MS);
        if now.saturating_sub(pending.issued_ms) < timeout {
            return Ok(in_progress(wanted, "waiting for the BMC"));
        }
        self.env.delete(PENDING_KEY);
        Err(RedfishError::NotApplied {
            what: "power state",
            expected: format!(
                "{wanted:?} within {timeout} ms of ResetType {}",
                pending.reset_type
            ),
            found: format!("{:?}", self.power_state()),
        })
    }

    fn pending(&mut self) -> Option<PendingReset> {
        self.env
            .get(PENDING_KEY)
            .and_then(|bytes| PendingReset::decode(&bytes))
    }

    fn config_ms(&mut self, key: &str, default: u64) -> u64 {
        self.env
            .config(key)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    }
}

fn in_progress(wanted: PowerState, detail: &str) -> Progress {
    Progress::InProgress(Pending {
        requeue_after_ms: REQUEUE_AFTER_MS,
        detail: format!("{detail}; waiting for power state {wanted:?}"),
    })
}

/// The AllowableValues of one parameter in an ActionInfo resource.
pub fn action_info_values(info: &Value, parameter: &str) -> Vec<String> {
    info.get("Parameters")
        .and_then(Value::as_array)
        .and_then(|parameters| {
            parameters
                .iter()
                .find(|p| p.get("Name").and_then(Value::as_str) == Some(parameter))
        })
        .map(|p| json::strings(p, &["AllowableValues"]))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips() {
        let pending = PendingReset {
            reset_type: "GracefulShutdown".to_owned(),
            issued_ms: 42,
        };
        assert_eq!(PendingReset::decode(&pending.encode()), Some(pending));
        assert_eq!(PendingReset::decode(b"garbage"), None);
    }

    #[test]
    fn action_info_lists_reset_types() {
        let info =
            json!({"Parameters": [{"Name": "ResetType", "AllowableValues": ["On", "ForceOff"]}]});
        assert_eq!(
            action_info_values(&info, "ResetType"),
            vec!["On", "ForceOff"]
        );
        assert!(action_info_values(&info, "Other").is_empty());
    }
}
