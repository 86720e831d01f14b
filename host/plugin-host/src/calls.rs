//! The functions a plugin can be called with, as data.
//!
//! One enum covers every world so that the registry, the CLI (`ingot plugin
//! call`, JSON in and out) and the operator share a single call path.

use serde::{Deserialize, Serialize};

use crate::bindings::driver::{BiosAttribute, DriverCapabilities};
use crate::bindings::selection::{Candidate, Choice, Claim};
use crate::bindings::steps::{PhaseContext, Step, StepOutcome};
use crate::bindings::types::{
    BootDevice, HardwareDetails, PowerAction, PowerState, Progress, VirtualMedia,
};
use crate::world::World;

/// A call to one exported function, with its arguments.
///
/// Driver calls take no context argument: the host builds it from the BMC
/// the call is bound to, so the address a driver sees is the one its
/// transports reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "function", content = "input", rename_all = "kebab-case")]
pub enum PluginCall {
    /// `selection.select`.
    Select {
        /// The claim.
        claim: Claim,
        /// The candidates.
        candidates: Vec<Candidate>,
    },
    /// `driver.capabilities`.
    Capabilities,
    /// `driver.get-power-state`.
    GetPowerState,
    /// `driver.set-power`.
    SetPower(PowerAction),
    /// `driver.set-boot-device`.
    SetBootDevice(BootDevice),
    /// `driver.insert-media`.
    InsertMedia(VirtualMedia),
    /// `driver.eject-media`.
    EjectMedia,
    /// `driver.inventory`.
    Inventory,
    /// `driver.bios-attributes`.
    BiosAttributes,
    /// `steps.plan`.
    Plan(PhaseContext),
    /// `steps.run`.
    Run {
        /// The phase.
        ctx: PhaseContext,
        /// The step.
        step: Step,
        /// State from the last requeue.
        state: Option<Vec<u8>>,
    },
}

impl PluginCall {
    /// The world that exports this function.
    pub fn world(&self) -> World {
        match self {
            Self::Select { .. } => World::HostSelector,
            Self::Plan(_) | Self::Run { .. } => World::ProvisioningSteps,
            _ => World::BmcDriver,
        }
    }

    /// The WIT name of the function.
    pub fn function(&self) -> &'static str {
        match self {
            Self::Select { .. } => "select",
            Self::Capabilities => "capabilities",
            Self::GetPowerState => "get-power-state",
            Self::SetPower(_) => "set-power",
            Self::SetBootDevice(_) => "set-boot-device",
            Self::InsertMedia(_) => "insert-media",
            Self::EjectMedia => "eject-media",
            Self::Inventory => "inventory",
            Self::BiosAttributes => "bios-attributes",
            Self::Plan(_) => "plan",
            Self::Run { .. } => "run",
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginReply {
    /// From `select`.
    Choice(Choice),
    /// From `capabilities`.
    Capabilities(DriverCapabilities),
    /// From `get-power-state`.
    PowerState(PowerState),
    /// From the driver's long operations.
    Progress(Progress),
    /// From `inventory`.
    Inventory(Box<HardwareDetails>),
    /// From `bios-attributes`.
    BiosAttributes(Vec<BiosAttribute>),
    /// From `plan`.
    Steps(Vec<Step>),
    /// From `run`.
    Outcome(StepOutcome),
}
