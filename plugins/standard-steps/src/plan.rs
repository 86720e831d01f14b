//! The steps of each phase.
//!
//! | phase         | steps                                                                   |
//! |---------------|-------------------------------------------------------------------------|
//! | inspect       | boot-deploy-media, collect-inventory, power-off (hard)                  |
//! | prepare       | none                                                                    |
//! | deploy        | boot-deploy-media, write-image, eject-media, boot-from-disk, reboot     |
//! | deprovision   | cleaning `metadata`: boot-deploy-media, erase-metadata, power-off (hard) |
//! |               | cleaning `disabled`: power-off (soft, then hard)                        |
//! | live-iso      | insert-iso, boot-from-cd, reboot                                        |

use ingot_plugin_sdk::steps::{Phase, PhaseContext, Step};

use crate::params::{self, Cleaning, ParameterError};

/// Step argument choosing how `power-off` cuts power.
pub const POWER_OFF_METHOD: &str = "method";

/// Every step this plugin plans and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Boot the deploy agent from virtual media and wait until it checks in.
    BootDeployMedia,
    /// Have the agent report the hardware.
    CollectInventory,
    /// Have the agent wipe partition tables and filesystem signatures.
    EraseMetadata,
    /// Have the agent write the image, then flush the disks.
    WriteImage,
    /// Eject all virtual media.
    EjectMedia,
    /// Boot from the disk on every boot.
    BootFromDisk,
    /// Power the host into a fresh boot and wait until it is on.
    Reboot,
    /// Power the host off, then eject all virtual media.
    PowerOff,
    /// Insert the phase's ISO as virtual CD.
    InsertIso,
    /// Boot from the virtual CD on every boot.
    BootFromCd,
}

impl StepKind {
    /// Every step, for lookups by name.
    const ALL: [Self; 10] = [
        Self::BootDeployMedia,
        Self::CollectInventory,
        Self::EraseMetadata,
        Self::WriteImage,
        Self::EjectMedia,
        Self::BootFromDisk,
        Self::Reboot,
        Self::PowerOff,
        Self::InsertIso,
        Self::BootFromCd,
    ];

    /// The step's name in plans.
    pub fn name(self) -> &'static str {
        match self {
            Self::BootDeployMedia => "boot-deploy-media",
            Self::CollectInventory => "collect-inventory",
            Self::EraseMetadata => "erase-metadata",
            Self::WriteImage => "write-image",
            Self::EjectMedia => "eject-media",
            Self::BootFromDisk => "boot-from-disk",
            Self::Reboot => "reboot",
            Self::PowerOff => "power-off",
            Self::InsertIso => "insert-iso",
            Self::BootFromCd => "boot-from-cd",
        }
    }

    /// The step called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Every step name, for error messages.
    pub fn known_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

/// How `power-off` cuts power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOffMethod {
    /// Cut power at once: the deploy agent holds nothing worth a shutdown.
    Hard,
    /// Ask the operating system to shut down, cutting power after the soft
    /// power-off timeout.
    Soft,
}

impl PowerOffMethod {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        }
    }

    /// The method a planned `power-off` step carries; hard when absent.
    pub fn of(step: &Step) -> Result<Self, ParameterError> {
        let value = step
            .args
            .iter()
            .rev()
            .find(|(key, _)| key == POWER_OFF_METHOD)
            .map(|(_, value)| value.as_str());

        match value {
            None | Some("hard") => Ok(Self::Hard),
            Some("soft") => Ok(Self::Soft),
            Some(other) => Err(ParameterError::StepArgument {
                step: step.name.clone(),
                key: POWER_OFF_METHOD.into(),
                value: other.into(),
            }),
        }
    }
}

/// The steps of the phase in `ctx`, in order. Fails when the context lacks
/// what the phase needs, so a bad spec is reported before the machine is
/// touched.
pub fn plan(ctx: &PhaseContext) -> Result<Vec<Step>, ParameterError> {
    params::boot_mode(ctx)?;

    match ctx.phase {
        Phase::Inspect => {
            params::deploy_media_url(ctx)?;
            Ok(vec![
                step(StepKind::BootDeployMedia),
                step(StepKind::CollectInventory),
                power_off(PowerOffMethod::Hard),
            ])
        }
        Phase::Prepare => Ok(Vec::new()),
        Phase::Deploy => {
            params::deploy_media_url(ctx)?;
            params::deployable_image(ctx)?;
            Ok(vec![
                step(StepKind::BootDeployMedia),
                step(StepKind::WriteImage),
                step(StepKind::EjectMedia),
                step(StepKind::BootFromDisk),
                step(StepKind::Reboot),
            ])
        }
        Phase::Deprovision => plan_deprovision(ctx),
        Phase::LiveIso => {
            params::image(ctx)?;
            Ok(vec![
                step(StepKind::InsertIso),
                step(StepKind::BootFromCd),
                step(StepKind::Reboot),
            ])
        }
    }
}

fn plan_deprovision(ctx: &PhaseContext) -> Result<Vec<Step>, ParameterError> {
    match params::cleaning(ctx)? {
        Cleaning::Metadata => {
            params::deploy_media_url(ctx)?;
            Ok(vec![
                step(StepKind::BootDeployMedia),
                step(StepKind::EraseMetadata),
                power_off(PowerOffMethod::Hard),
            ])
        }
        // The host still runs the deployed operating system: let it shut
        // down cleanly.
        Cleaning::Disabled => Ok(vec![power_off(PowerOffMethod::Soft)]),
    }
}

fn step(kind: StepKind) -> Step {
    Step {
        name: kind.name().into(),
        args: Vec::new(),
    }
}

fn power_off(method: PowerOffMethod) -> Step {
    Step {
        name: StepKind::PowerOff.name().into(),
        args: vec![(POWER_OFF_METHOD.into(), method.as_arg().into())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AUTOMATED_CLEANING_MODE, BOOT_MODE, DEPLOY_MEDIA_URL};
    use crate::testing::{context, set_parameter};

    fn names(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(|step| step.name.as_str()).collect()
    }

    #[test]
    fn every_phase_has_its_steps() {
        let plan_of = |phase| plan(&context(phase)).expect("plans");

        assert_eq!(
            names(&plan_of(Phase::Inspect)),
            ["boot-deploy-media", "collect-inventory", "power-off"]
        );
        assert!(plan_of(Phase::Prepare).is_empty());
        assert_eq!(
            names(&plan_of(Phase::Deploy)),
            [
                "boot-deploy-media",
                "write-image",
                "eject-media",
                "boot-from-disk",
                "reboot"
            ]
        );
        assert_eq!(
            names(&plan_of(Phase::Deprovision)),
            ["boot-deploy-media", "erase-metadata", "power-off"]
        );
        assert_eq!(
            names(&plan_of(Phase::LiveIso)),
            ["insert-iso", "boot-from-cd", "reboot"]
        );
    }

    #[test]
    fn deprovision_without_cleaning_only_shuts_the_host_down() {
        let mut ctx = context(Phase::Deprovision);
        set_parameter(&mut ctx, AUTOMATED_CLEANING_MODE, "disabled");

        let steps = plan(&ctx).expect("plans");

        assert_eq!(names(&steps), ["power-off"]);
        assert_eq!(PowerOffMethod::of(&steps[0]), Ok(PowerOffMethod::Soft));
        let cleaned = plan(&context(Phase::Deprovision)).expect("plans");
        assert_eq!(PowerOffMethod::of(&cleaned[2]), Ok(PowerOffMethod::Hard));
    }

    #[test]
    fn phases_writing_or_booting_an_image_need_one() {
        for phase in [Phase::Deploy, Phase::LiveIso] {
            let mut ctx = context(phase);
            ctx.image = None;

            let error = plan(&ctx).expect_err("no image");

            assert!(
                matches!(error, ParameterError::MissingImage { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn phases_booting_the_agent_need_deploy_media() {
        for phase in [Phase::Inspect, Phase::Deploy, Phase::Deprovision] {
            let mut ctx = context(phase);
            ctx.parameters.retain(|(key, _)| key != DEPLOY_MEDIA_URL);

            assert!(
                matches!(plan(&ctx), Err(ParameterError::MissingDeployMedia { .. })),
                "{phase:?}"
            );
        }
        let mut live = context(Phase::LiveIso);
        live.parameters.clear();
        assert!(plan(&live).is_ok(), "a live ISO needs no deploy media");
    }

    #[test]
    fn bad_parameters_fail_the_plan() {
        let mut boot = context(Phase::Prepare);
        set_parameter(&mut boot, BOOT_MODE, "bios");
        let mut cleaning = context(Phase::Deprovision);
        set_parameter(&mut cleaning, AUTOMATED_CLEANING_MODE, "everything");

        assert!(matches!(plan(&boot), Err(ParameterError::BootMode(_))));
        assert!(matches!(
            plan(&cleaning),
            Err(ParameterError::CleaningMode(_))
        ));
    }

    #[test]
    fn step_names_round_trip_and_unknown_methods_are_refused() {
        for kind in StepKind::ALL {
            assert_eq!(StepKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(StepKind::from_name("format-disks"), None);

        let odd = Step {
            name: "power-off".into(),
            args: vec![(POWER_OFF_METHOD.into(), "gentle".into())],
        };
        assert!(matches!(
            PowerOffMethod::of(&odd),
            Err(ParameterError::StepArgument { .. })
        ));
        let bare = step(StepKind::PowerOff);
        assert_eq!(PowerOffMethod::of(&bare), Ok(PowerOffMethod::Hard));
    }
}
