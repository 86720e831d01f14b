//! Status conditions set without churn: a condition whose status did not
//! change keeps its transition time, so a status computed twice from the
//! same facts is equal and is not written again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `Ready`: a version of the plugin serves calls (for a `HostPolicy`: every
/// plugin it names does).
pub const READY: &str = "Ready";

/// `Loaded`: the current spec of a `WasmPlugin` loaded.
pub const LOADED: &str = "Loaded";

/// `Degraded`: a plugin's failure guard is open.
pub const DEGRADED: &str = "Degraded";

/// The state one condition should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Condition type.
    pub kind: &'static str,
    /// Whether it holds.
    pub holds: bool,
    /// Machine-readable reason, CamelCase.
    pub reason: &'static str,
    /// What a person needs to know, and to do when it is False.
    pub message: String,
}

impl Wanted {
    /// A condition that holds.
    pub fn holds(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            holds: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn fails(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            holds: false,
            reason,
            message: message.into(),
        }
    }

    fn status(&self) -> &'static str {
        if self.holds { "True" } else { "False" }
    }
}

/// The conditions `wanted` describes, in that order, keeping the transition
/// time of every existing condition whose status is unchanged.
pub fn merge(existing: &[Condition], wanted: &[Wanted], generation: Option<i64>) -> Vec<Condition> {
    let now = Time(Timestamp::now());

    wanted
        .iter()
        .map(|wanted| {
            let previous = existing
                .iter()
                .find(|condition| condition.type_ == wanted.kind);
            let last_transition_time = previous
                .filter(|previous| previous.status == wanted.status())
                .map_or_else(
                    || now.clone(),
                    |previous| previous.last_transition_time.clone(),
                );

            Condition {
                type_: wanted.kind.to_owned(),
                status: wanted.status().to_owned(),
                reason: wanted.reason.to_owned(),
                message: wanted.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of type `kind`, if present.
pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time() {
        let before = merge(&[], &[Wanted::holds(READY, "Serving", "v1")], Some(1));
        let mut aged = before.clone();
        aged[0].last_transition_time = at(1_000);

        let again = merge(&aged, &[Wanted::holds(READY, "Serving", "v2")], Some(2));

        assert_eq!(again[0].last_transition_time, at(1_000));
        assert_eq!(again[0].message, "v2");
        assert_eq!(again[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flipped_status_gets_a_new_transition_time() {
        let mut aged = merge(&[], &[Wanted::holds(READY, "Serving", "")], None);
        aged[0].last_transition_time = at(1_000);

        let flipped = merge(&aged, &[Wanted::fails(READY, "NotLoaded", "why")], None);

        assert_ne!(flipped[0].last_transition_time, at(1_000));
        assert_eq!(flipped[0].status, "False");
        assert_eq!(
            find(&flipped, READY).map(|c| c.reason.as_str()),
            Some("NotLoaded")
        );
    }
}
