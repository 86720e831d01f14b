//! The annotations users and other controllers put on a BareMetalHost, and how the operator reads
//! them.
//!
//! Values are parsed leniently here: the admission webhook rejects malformed values up front, so
//! anything odd that still reaches the controller (for example from an object created before the
//! webhook existed) degrades to the safest meaning instead of blocking the host.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Present with any value: the host is not reconciled at all.
pub const PAUSED: &str = "baremetalhost.metal3.io/paused";

/// Present with any value: the host is detached from the provisioner.
pub const DETACHED: &str = "baremetalhost.metal3.io/detached";

/// A JSON copy of a host's status, restored when the host has never had a status written.
pub const STATUS: &str = "baremetalhost.metal3.io/status";

/// Request a new inspection (any value other than `disabled`), or disable inspection.
pub const INSPECT: &str = "inspect.metal3.io";

/// The value of [`INSPECT`] that disables inspection.
pub const INSPECT_DISABLED: &str = "disabled";

/// JSON hardware details supplied by the user instead of inspecting.
pub const HARDWARE_DETAILS: &str = "inspect.metal3.io/hardwaredetails";

/// The controller-owned one-shot reboot request. Suffixed forms (`reboot.metal3.io/<key>`) belong
/// to their clients, which remove them themselves.
pub const REBOOT: &str = "reboot.metal3.io";

/// How a power-off is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RebootMode {
    /// Ask the operating system to shut down, falling back to a hard power-off on failure.
    #[default]
    Soft,
    /// Cut the power at once.
    Hard,
}

/// The parsed value of one reboot annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
struct RebootValue {
    #[serde(default)]
    mode: Option<RebootMode>,
    #[serde(default)]
    force: bool,
}

/// What all the reboot annotations on a host ask for, taken together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebootRequests {
    /// Every reboot annotation key present (plain and suffixed).
    pub keys: Vec<String>,
    /// Keys among them whose value is `"force": true`.
    pub forced_keys: Vec<String>,
    /// Whether any annotation asks for a hard power-off.
    pub hard: bool,
    /// Whether the controller-owned plain annotation is present.
    pub has_plain: bool,
    /// Keys whose values could not be parsed and were taken as a soft reboot.
    pub invalid_keys: Vec<String>,
}

impl RebootRequests {
    /// Collects the reboot annotations of a host.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let mut requests = RebootRequests::default();
        for (key, value) in annotations.iter().filter(|(key, _)| is_reboot_key(key)) {
            let parsed = parse_reboot_value(value);
            if parsed.is_none() {
                requests.invalid_keys.push(key.clone());
            }
            let parsed = parsed.unwrap_or_default();

            requests.hard |= parsed.mode == Some(RebootMode::Hard);
            if parsed.force {
                requests.forced_keys.push(key.clone());
            }
            requests.has_plain |= key == REBOOT;
            requests.keys.push(key.clone());
        }
        requests
    }

    /// Whether any reboot is requested that counts in the current state: in `available` only
    /// forced requests count, in the provisioned states every request does.
    pub fn wants_power_off(&self, only_forced: bool) -> bool {
        if only_forced {
            !self.forced_keys.is_empty()
        } else {
            !self.keys.is_empty()
        }
    }
}

/// Whether a key is the plain reboot annotation or one of its suffixed forms.
pub fn is_reboot_key(key: &str) -> bool {
    key == REBOOT
        || key
            .strip_prefix(REBOOT)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// An empty value is a plain soft reboot; otherwise it must be JSON.
fn parse_reboot_value(value: &str) -> Option<RebootValue> {
    if value.trim().is_empty() {
        return Some(RebootValue::default());
    }
    serde_json::from_str(value).ok()
}

/// What should happen to a detached host when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteAction {
    /// Delete it straight away, without deprovisioning.
    #[default]
    Delete,
    /// Hold the deletion until the annotation is removed or changed.
    Delay,
}

/// The parsed value of the detached annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachRequest {
    /// What deleting the host while detached does.
    #[serde(default)]
    pub delete_action: DeleteAction,
    /// Detach even from a state where an operation is running, aborting it.
    #[serde(default)]
    pub force: bool,
}

impl DetachRequest {
    /// Reads the detached annotation, if present. The value is free-form: anything that is not
    /// the JSON object form means "detach, delete normally, no force".
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Self> {
        let value = annotations.get(DETACHED)?;
        Some(serde_json::from_str(value).unwrap_or_default())
    }
}

/// Whether the inspect annotation asks for a new inspection.
pub fn inspection_requested(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(INSPECT)
        .is_some_and(|value| value != INSPECT_DISABLED)
}

/// Whether the inspect annotation disables inspection.
pub fn inspection_disabled(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(INSPECT)
        .is_some_and(|value| value == INSPECT_DISABLED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn plain_and_suffixed_reboot_annotations_are_collected() {
        let requests = RebootRequests::from_annotations(&annotations(&[
            (REBOOT, ""),
            ("reboot.metal3.io/phase-1", r#"{"mode":"soft"}"#),
            ("reboot.metal3.iox", ""),
            (INSPECT, ""),
        ]));

        assert_eq!(
            requests.keys,
            vec![REBOOT.to_string(), "reboot.metal3.io/phase-1".to_string()]
        );
        assert!(requests.has_plain);
        assert!(!requests.hard);
    }

    #[test]
    fn hard_wins_over_soft() {
        let requests = RebootRequests::from_annotations(&annotations(&[
            (REBOOT, r#"{"mode":"soft"}"#),
            ("reboot.metal3.io/other", r#"{"mode":"hard"}"#),
        ]));

        assert!(requests.hard);
    }

    #[test]
    fn invalid_reboot_value_means_soft() {
        let requests = RebootRequests::from_annotations(&annotations(&[(REBOOT, "{not json")]));

        assert!(!requests.hard);
        assert_eq!(requests.invalid_keys, vec![REBOOT.to_string()]);
        assert!(requests.wants_power_off(false));
    }

    #[test]
    fn only_forced_requests_count_when_asked() {
        let plain = RebootRequests::from_annotations(&annotations(&[(REBOOT, "")]));
        let forced =
            RebootRequests::from_annotations(&annotations(&[(REBOOT, r#"{"force":true}"#)]));

        assert!(!plain.wants_power_off(true));
        assert!(forced.wants_power_off(true));
    }

    #[test]
    fn detach_value_is_free_form() {
        let free = DetachRequest::from_annotations(&annotations(&[(DETACHED, "by-admin")]));
        let delay = DetachRequest::from_annotations(&annotations(&[(
            DETACHED,
            r#"{"deleteAction":"delay"}"#,
        )]));
        let force =
            DetachRequest::from_annotations(&annotations(&[(DETACHED, r#"{"force":true}"#)]));

        assert_eq!(free, Some(DetachRequest::default()));
        assert_eq!(
            delay.map(|request| request.delete_action),
            Some(DeleteAction::Delay)
        );
        assert_eq!(force.map(|request| request.force), Some(true));
        assert_eq!(DetachRequest::from_annotations(&BTreeMap::new()), None);
    }

    #[test]
    fn inspect_annotation_either_requests_or_disables() {
        assert!(inspection_requested(&annotations(&[(INSPECT, "")])));
        assert!(!inspection_requested(&annotations(&[(
            INSPECT,
            INSPECT_DISABLED
        )])));
        assert!(inspection_disabled(&annotations(&[(
            INSPECT,
            INSPECT_DISABLED
        )])));
    }
}
