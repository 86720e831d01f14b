//! The bundled provisioning steps of ingot.
//!
//! Provisions a host the way Metal3 does with virtual media: the host boots a
//! deploy agent from the deploy media, the agent reports the hardware, wipes
//! or writes the disks, and the host then boots the written image. The
//! steps of each phase are listed in [`plan`]; the host's BMC is reached
//! only through its driver (`host-control`), the disks only through the
//! deploy agent (`deploy-agent`).
//!
//! Every step is idempotent and never blocks: a run starts or checks work
//! and returns. Between runs the step keeps a small JSON state (its stage,
//! when it started, the agent command it waits for). A run given the last
//! state continues; a run given no state, after an operator restart lost
//! it, starts over without redoing finished work where the host can tell
//! (an agent already connected, a command the agent already ran, media
//! already ejected, power already off).
//!
//! Phase parameters (set by the operator, see [`params`]): `deploy-media-url`,
//! `boot-mode`, `automated-cleaning-mode`. Configuration (see [`settings`]):
//! the timeouts of the waits.

pub mod agent;
pub mod boot;
pub mod media;
pub mod outcome;
pub mod params;
pub mod plan;
pub mod power;
pub mod settings;
#[cfg(test)]
mod testing;

use ingot_plugin_sdk::host::StepHost;
use ingot_plugin_sdk::steps::{PhaseContext, ProvisioningSteps, Step, StepError, StepOutcome};

use crate::outcome::{Halt, finish};
use crate::plan::StepKind;
use crate::settings::Settings;

/// The standard provisioning steps.
pub struct StandardSteps;

impl ProvisioningSteps for StandardSteps {
    fn plan(host: &impl StepHost, ctx: &PhaseContext) -> Result<Vec<Step>, StepError> {
        Settings::load(host)?;
        Ok(plan::plan(ctx)?)
    }

    fn run(
        host: &impl StepHost,
        ctx: &PhaseContext,
        step: &Step,
        state: Option<Vec<u8>>,
    ) -> Result<StepOutcome, StepError> {
        let Some(kind) = StepKind::from_name(&step.name) else {
            return Err(StepError::InvalidInput(format!(
                "unknown step {:?}: this plugin runs {}",
                step.name,
                StepKind::known_names()
            )));
        };
        let settings = Settings::load(host)?;

        finish(run_step(host, ctx, &settings, kind, step, state))
    }
}

/// Runs one step of kind `kind` once.
fn run_step(
    host: &impl StepHost,
    ctx: &PhaseContext,
    settings: &Settings,
    kind: StepKind,
    step: &Step,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    match kind {
        StepKind::BootDeployMedia => boot::boot_deploy_media(host, ctx, settings, state),
        StepKind::CollectInventory | StepKind::EraseMetadata | StepKind::WriteImage => {
            agent::run(host, ctx, settings, kind, state)
        }
        StepKind::EjectMedia
        | StepKind::BootFromDisk
        | StepKind::BootFromCd
        | StepKind::InsertIso => media::run(host, ctx, settings, kind, state),
        StepKind::Reboot => power::reboot(host, settings, state),
        StepKind::PowerOff => power::power_off(host, settings, step, state),
    }
}

ingot_plugin_sdk::export_provisioning_steps!(StandardSteps);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::AGENT_BOOT_TIMEOUT;
    use crate::testing::{context, host};
    use ingot_plugin_sdk::mock::MockHost;
    use ingot_plugin_sdk::steps::Phase;

    #[test]
    fn an_unknown_step_is_invalid_input_naming_the_known_ones() {
        let step = Step {
            name: "format-disks".into(),
            args: Vec::new(),
        };

        let error = StandardSteps::run(&host(), &context(Phase::Deploy), &step, None);

        assert_eq!(
            error,
            Err(StepError::InvalidInput(
                "unknown step \"format-disks\": this plugin runs boot-deploy-media, \
                 collect-inventory, erase-metadata, write-image, eject-media, boot-from-disk, \
                 reboot, power-off, insert-iso, boot-from-cd"
                    .into()
            ))
        );
    }

    #[test]
    fn bad_configuration_fails_planning_and_running() {
        let host = MockHost::new().with_config(AGENT_BOOT_TIMEOUT, "soon");
        let step = Step {
            name: "reboot".into(),
            args: Vec::new(),
        };

        let planned = StandardSteps::plan(&host, &context(Phase::Inspect));
        let ran = StandardSteps::run(&host, &context(Phase::Deploy), &step, None);

        assert!(
            matches!(planned, Err(StepError::InvalidInput(ref message)) if message.contains("agent-boot-timeout-seconds"))
        );
        assert_eq!(planned.err(), ran.err());
        assert!(host.calls().is_empty(), "nothing touched the machine");
    }

    #[test]
    fn a_deploy_plan_without_an_image_is_invalid_input() {
        let mut ctx = context(Phase::Deploy);
        ctx.image = None;

        let error = StandardSteps::plan(&host(), &ctx);

        assert_eq!(
            error,
            Err(StepError::InvalidInput(
                "the deploy phase needs an image with a URL (spec.image.url of the BareMetalHost)"
                    .into()
            ))
        );
    }
}
