//! Conditions in the Cluster API v1beta1 shape (with severity) and the standard shape, set
//! without churn: a condition whose status, reason and message did not change keeps its
//! transition time, so an unchanged object is never rewritten.

use ingot_api::capm3::V1Beta1Condition;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Severity of a False v1beta1 condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Normal progress, e.g. waiting for a host.
    Info,
    /// Something needs attention but may resolve by itself.
    Warning,
    /// Needs a person.
    Error,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "Info",
            Self::Warning => "Warning",
            Self::Error => "Error",
        }
    }
}

/// The state one condition should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub kind: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// Machine-readable reason (empty for a plain True).
    pub reason: String,
    /// Severity when False.
    pub severity: Severity,
    /// Human-readable detail.
    pub message: String,
}

impl Desired {
    /// A True condition.
    pub fn ok(kind: &'static str) -> Self {
        Self {
            kind,
            ok: true,
            reason: String::new(),
            severity: Severity::Info,
            message: String::new(),
        }
    }

    /// A False condition.
    pub fn not(
        kind: &'static str,
        reason: &str,
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            ok: false,
            reason: reason.to_owned(),
            severity,
            message: message.into(),
        }
    }

    fn status(&self) -> String {
        if self.ok { "True" } else { "False" }.to_owned()
    }

    fn optional(text: &str) -> Option<String> {
        (!text.is_empty()).then(|| text.to_owned())
    }
}

/// Sets `wanted` in a v1beta1 condition list.
pub fn set_v1beta1(conditions: &mut Option<Vec<V1Beta1Condition>>, wanted: &Desired) {
    let list = conditions.get_or_insert_with(Vec::new);
    let condition = V1Beta1Condition {
        condition_type: wanted.kind.to_owned(),
        status: wanted.status(),
        severity: (!wanted.ok).then(|| wanted.severity.as_str().to_owned()),
        last_transition_time: Time(Timestamp::now()),
        reason: Desired::optional(&wanted.reason),
        message: Desired::optional(&wanted.message),
    };

    match list
        .iter_mut()
        .find(|existing| existing.condition_type == wanted.kind)
    {
        Some(existing) if existing.status == condition.status => {
            existing.severity = condition.severity;
            existing.reason = condition.reason;
            existing.message = condition.message;
        }
        Some(existing) => *existing = condition,
        None => {
            list.push(condition);
            list.sort_by(|a, b| a.condition_type.cmp(&b.condition_type));
        }
    }
}

/// Sets `wanted` in a standard condition list.
pub fn set_standard(
    conditions: &mut Option<Vec<Condition>>,
    wanted: &Desired,
    generation: Option<i64>,
) {
    let list = conditions.get_or_insert_with(Vec::new);
    let reason = if wanted.reason.is_empty() {
        wanted.kind
    } else {
        wanted.reason.as_str()
    };
    let condition = Condition {
        type_: wanted.kind.to_owned(),
        status: wanted.status(),
        last_transition_time: Time(Timestamp::now()),
        reason: reason.to_owned(),
        message: wanted.message.clone(),
        observed_generation: generation,
    };

    match list
        .iter_mut()
        .find(|existing| existing.type_ == wanted.kind)
    {
        Some(existing) if existing.status == condition.status => {
            existing.reason = condition.reason;
            existing.message = condition.message;
            existing.observed_generation = condition.observed_generation;
        }
        Some(existing) => *existing = condition,
        None => {
            list.push(condition);
            list.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
    }
}

/// The v1beta1 condition of `kind`, if set.
pub fn find<'a>(
    conditions: &'a Option<Vec<V1Beta1Condition>>,
    kind: &str,
) -> Option<&'a V1Beta1Condition> {
    conditions
        .iter()
        .flatten()
        .find(|condition| condition.condition_type == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let mut conditions = None;
        set_v1beta1(
            &mut conditions,
            &Desired::not("AssociateBMH", "Waiting", Severity::Info, "one"),
        );
        let first = find(&conditions, "AssociateBMH").map(|c| c.last_transition_time.clone());

        set_v1beta1(
            &mut conditions,
            &Desired::not("AssociateBMH", "Waiting", Severity::Info, "two"),
        );
        let second = find(&conditions, "AssociateBMH").cloned();

        assert_eq!(
            second.as_ref().map(|c| c.last_transition_time.clone()),
            first
        );
        assert_eq!(second.and_then(|c| c.message).as_deref(), Some("two"));

        set_v1beta1(&mut conditions, &Desired::ok("AssociateBMH"));
        let third = find(&conditions, "AssociateBMH").cloned();
        assert_eq!(third.as_ref().map(|c| c.status.as_str()), Some("True"));
        assert_eq!(third.and_then(|c| c.severity), None);
    }

    #[test]
    fn standard_conditions_carry_a_reason_and_generation() {
        let mut conditions = None;
        set_standard(&mut conditions, &Desired::ok("Paused"), Some(3));

        let paused = conditions
            .iter()
            .flatten()
            .next()
            .cloned()
            .expect("condition set");
        assert_eq!(
            (paused.reason.as_str(), paused.observed_generation),
            ("Paused", Some(3))
        );
    }
}
