//! The standard conditions of a host, derived from its state and operational status.
//!
//! They are recomputed on every reconcile; a condition keeps its transition time while its
//! status is unchanged, so an unchanged host never causes a status write.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::host::HostFacts;
use crate::model::{BareMetalHost, OperationalStatus, ProvisioningState};
use crate::provisioner::Health;

/// The host can be managed by the provisioner.
pub const MANAGEABLE: &str = "Manageable";
/// The host can be claimed and provisioned.
pub const AVAILABLE_FOR_PROVISIONING: &str = "AvailableForProvisioning";
/// The host carries a deployed image.
pub const PROVISIONED: &str = "Provisioned";
/// The host is provisioned and healthy.
pub const READY: &str = "Ready";
/// The host is moving between states.
pub const PROGRESSING: &str = "Progressing";
/// The BMC reports the hardware healthy.
pub const HEALTHY: &str = "Healthy";

/// What the provisioner reports about the hardware, used by the conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardwareReport {
    /// The last power change failed at the BMC.
    pub power_failure: bool,
    /// The health the BMC reports.
    pub health: Health,
}

/// One computed condition, before timestamps are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Computed {
    kind: &'static str,
    status: bool,
    reason: &'static str,
}

impl Computed {
    fn new(kind: &'static str, status: bool, reason: &'static str) -> Self {
        Computed {
            kind,
            status,
            reason,
        }
    }
}

/// Recomputes the host's conditions in place. Returns whether any type, status, reason or
/// message changed (timestamps alone never count).
pub fn update_conditions(host: &mut BareMetalHost, report: HardwareReport, now: Timestamp) -> bool {
    let computed = compute(host, report);
    let generation = host.metadata.generation;
    let status = host.status.get_or_insert_default();
    let mut conditions = status.conditions.clone().unwrap_or_default();

    let mut changed = false;
    for wanted in computed {
        changed |= set_condition(&mut conditions, &wanted, generation, now);
    }
    if changed {
        status.conditions = Some(conditions);
    }
    changed
}

fn set_condition(
    conditions: &mut Vec<Condition>,
    wanted: &Computed,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if wanted.status { "True" } else { "False" };
    let status = if wanted.kind == HEALTHY && wanted.reason == "Unknown" {
        "Unknown"
    } else {
        status
    };
    let fresh = Condition {
        type_: wanted.kind.to_string(),
        status: status.to_string(),
        reason: wanted.reason.to_string(),
        message: String::new(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };

    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == wanted.kind)
    {
        None => {
            conditions.push(fresh);
            true
        }
        Some(existing) if existing.status != fresh.status => {
            *existing = fresh;
            true
        }
        Some(existing)
            if existing.reason != fresh.reason || existing.observed_generation != generation =>
        {
            existing.reason = fresh.reason;
            existing.observed_generation = generation;
            true
        }
        Some(_) => false,
    }
}

fn compute(host: &BareMetalHost, report: HardwareReport) -> Vec<Computed> {
    let state = host.state();
    let operational = host
        .status
        .as_ref()
        .map(|status| status.operational_status)
        .unwrap_or_default();
    let mut conditions = by_state(state, operational);

    match operational {
        OperationalStatus::Error => override_condition(&mut conditions, READY, false, "Error"),
        OperationalStatus::Servicing => {
            override_condition(&mut conditions, READY, false, "Servicing")
        }
        OperationalStatus::Detached => {
            override_condition(&mut conditions, READY, false, "Detached");
            override_condition(&mut conditions, PROGRESSING, false, "Detached");
        }
        OperationalStatus::Unset
        | OperationalStatus::Ok
        | OperationalStatus::Discovered
        | OperationalStatus::Delayed => {}
    }

    let power_relevant = !matches!(
        state,
        ProvisioningState::None
            | ProvisioningState::Unmanaged
            | ProvisioningState::Registering
            | ProvisioningState::Deleting
    ) && operational != OperationalStatus::Detached;
    if power_relevant && report.power_failure {
        override_condition(&mut conditions, MANAGEABLE, false, "PowerFailure");
    }

    let health = match report.health {
        Health::Ok => Computed::new(HEALTHY, true, "Healthy"),
        Health::Warning => Computed::new(HEALTHY, false, "Warning"),
        Health::Critical => Computed::new(HEALTHY, false, "CriticalError"),
        Health::Unknown => Computed::new(HEALTHY, false, "Unknown"),
    };
    let health_known = report.health != Health::Unknown;
    let health_absent = host
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_none_or(|conditions| {
            conditions
                .iter()
                .all(|condition| condition.type_ != HEALTHY)
        });
    if health_known || health_absent {
        conditions.push(health);
    }
    conditions
}

fn override_condition(conditions: &mut [Computed], kind: &str, status: bool, reason: &'static str) {
    if let Some(condition) = conditions
        .iter_mut()
        .find(|condition| condition.kind == kind)
    {
        condition.status = status;
        condition.reason = reason;
    }
}

/// The table of conditions per provisioning state.
fn by_state(state: ProvisioningState, operational: OperationalStatus) -> Vec<Computed> {
    let busy = |progress: &'static str| {
        vec![
            Computed::new(MANAGEABLE, true, "Manageable"),
            Computed::new(AVAILABLE_FOR_PROVISIONING, false, "NotAvailable"),
            Computed::new(PROVISIONED, false, "NotProvisioned"),
            Computed::new(READY, false, "NotProvisioned"),
            Computed::new(PROGRESSING, true, progress),
        ]
    };
    match state {
        ProvisioningState::None | ProvisioningState::Unmanaged => vec![
            Computed::new(MANAGEABLE, false, "NotManaged"),
            Computed::new(AVAILABLE_FOR_PROVISIONING, false, "NotAvailable"),
            Computed::new(PROVISIONED, false, "NotProvisioned"),
            Computed::new(READY, false, "NotProvisioned"),
            Computed::new(PROGRESSING, false, "NotProgressing"),
        ],
        ProvisioningState::Registering => {
            let reason = if operational == OperationalStatus::Error {
                "RegistrationFailed"
            } else {
                "Registering"
            };
            vec![
                Computed::new(MANAGEABLE, false, reason),
                Computed::new(AVAILABLE_FOR_PROVISIONING, false, "NotAvailable"),
                Computed::new(PROVISIONED, false, "NotProvisioned"),
                Computed::new(READY, false, "NotProvisioned"),
                Computed::new(PROGRESSING, true, "Registering"),
            ]
        }
        ProvisioningState::MatchProfile | ProvisioningState::Preparing => busy("Preparing"),
        ProvisioningState::Inspecting => busy("Inspecting"),
        ProvisioningState::Provisioning => busy("Provisioning"),
        ProvisioningState::Deprovisioning => busy("Deprovisioning"),
        ProvisioningState::PoweringOffBeforeDelete => busy("PoweringOffBeforeDelete"),
        ProvisioningState::Deleting => busy("Deleting"),
        ProvisioningState::Ready | ProvisioningState::Available => vec![
            Computed::new(MANAGEABLE, true, "Manageable"),
            Computed::new(AVAILABLE_FOR_PROVISIONING, true, "Available"),
            Computed::new(PROVISIONED, false, "NotProvisioned"),
            Computed::new(READY, false, "NotProvisioned"),
            Computed::new(PROGRESSING, false, "NotProgressing"),
        ],
        ProvisioningState::Provisioned | ProvisioningState::ExternallyProvisioned => vec![
            Computed::new(MANAGEABLE, true, "Manageable"),
            Computed::new(AVAILABLE_FOR_PROVISIONING, false, "NotAvailable"),
            Computed::new(PROVISIONED, true, "Provisioned"),
            Computed::new(READY, true, "Provisioned"),
            Computed::new(PROGRESSING, false, "NotProgressing"),
        ],
    }
}
