//! The phase parameters the operator hands every plan and run, and the
//! image of the phase.

use ingot_plugin_sdk::steps::{Image, Phase, PhaseContext, StepError};
use ingot_plugin_sdk::types::BootMode;

use crate::outcome::Halt;

/// URL of the host's deploy media: an image that boots the deploy agent.
pub const DEPLOY_MEDIA_URL: &str = "deploy-media-url";

/// Firmware boot mode, as in `BareMetalHost.spec.bootMode`.
pub const BOOT_MODE: &str = "boot-mode";

/// Cleaning on deprovision, as in `BareMetalHost.spec.automatedCleaningMode`.
pub const AUTOMATED_CLEANING_MODE: &str = "automated-cleaning-mode";

/// What to do with the disks when a host is deprovisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleaning {
    /// Wipe partition tables and filesystem signatures.
    Metadata,
    /// Leave the disks as they are.
    Disabled,
}

/// A phase context that cannot be worked with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// The phase boots the deploy agent but has no media to boot it from.
    #[error(
        "the {phase} phase boots the deploy agent, but parameter {DEPLOY_MEDIA_URL} is not set"
    )]
    MissingDeployMedia {
        /// The phase.
        phase: &'static str,
    },
    /// The phase writes or boots an image but was given none.
    #[error("the {phase} phase needs an image with a URL (spec.image.url of the BareMetalHost)")]
    MissingImage {
        /// The phase.
        phase: &'static str,
    },
    /// The deploy agent cannot write an image in this format.
    #[error(
        "image format {0:?} cannot be written by the deploy agent: use raw or qcow2 (a live-iso image is booted with the live-iso phase)"
    )]
    ImageFormat(String),
    /// The boot mode is not one the host's spec allows.
    #[error("parameter {BOOT_MODE} is {0:?}: expected UEFI, UEFISecureBoot or legacy")]
    BootMode(String),
    /// The cleaning mode is not one the host's spec allows.
    #[error("parameter {AUTOMATED_CLEANING_MODE} is {0:?}: expected metadata or disabled")]
    CleaningMode(String),
    /// A step argument has a value this plugin never plans.
    #[error("step {step} has argument {key}={value:?}, which this plugin does not plan")]
    StepArgument {
        /// The step.
        step: String,
        /// The argument.
        key: String,
        /// Its value.
        value: String,
    },
}

impl From<ParameterError> for StepError {
    fn from(error: ParameterError) -> Self {
        Self::InvalidInput(error.to_string())
    }
}

impl From<ParameterError> for Halt {
    fn from(error: ParameterError) -> Self {
        Self::Error(error.into())
    }
}

/// The value of parameter `key`. A host policy may repeat a key the
/// operator sets; the last occurrence wins, as when merging maps in order.
pub fn parameter<'a>(ctx: &'a PhaseContext, key: &str) -> Option<&'a str> {
    ctx.parameters
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// The firmware boot mode. Secure boot is a UEFI boot as far as the boot
/// device is concerned; without the parameter the host boots in UEFI mode,
/// the BareMetalHost default.
pub fn boot_mode(ctx: &PhaseContext) -> Result<BootMode, ParameterError> {
    let Some(value) = parameter(ctx, BOOT_MODE) else {
        return Ok(BootMode::Uefi);
    };

    if value.eq_ignore_ascii_case("UEFI") || value.eq_ignore_ascii_case("UEFISecureBoot") {
        Ok(BootMode::Uefi)
    } else if value.eq_ignore_ascii_case("legacy") {
        Ok(BootMode::Legacy)
    } else {
        Err(ParameterError::BootMode(value.to_owned()))
    }
}

/// The cleaning mode; without the parameter, `metadata`, the
/// BareMetalHost default.
pub fn cleaning(ctx: &PhaseContext) -> Result<Cleaning, ParameterError> {
    match parameter(ctx, AUTOMATED_CLEANING_MODE) {
        None => Ok(Cleaning::Metadata),
        Some(value) if value.eq_ignore_ascii_case("metadata") => Ok(Cleaning::Metadata),
        Some(value) if value.eq_ignore_ascii_case("disabled") => Ok(Cleaning::Disabled),
        Some(value) => Err(ParameterError::CleaningMode(value.to_owned())),
    }
}

/// The URL of the deploy media.
pub fn deploy_media_url(ctx: &PhaseContext) -> Result<&str, ParameterError> {
    parameter(ctx, DEPLOY_MEDIA_URL)
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .ok_or(ParameterError::MissingDeployMedia {
            phase: phase_name(ctx.phase),
        })
}

/// The image of the phase.
pub fn image(ctx: &PhaseContext) -> Result<&Image, ParameterError> {
    ctx.image
        .as_ref()
        .filter(|image| !image.url.trim().is_empty())
        .ok_or(ParameterError::MissingImage {
            phase: phase_name(ctx.phase),
        })
}

/// The image of a deployment, in a format the deploy agent writes: raw or
/// qcow2, or none given (the agent then detects it).
pub fn deployable_image(ctx: &PhaseContext) -> Result<&Image, ParameterError> {
    let image = image(ctx)?;

    match image.format.as_deref() {
        None | Some("" | "raw" | "qcow2") => Ok(image),
        Some(other) => Err(ParameterError::ImageFormat(other.to_owned())),
    }
}

/// The phase as the WIT spells it.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Inspect => "inspect",
        Phase::Prepare => "prepare",
        Phase::Deploy => "deploy",
        Phase::Deprovision => "deprovision",
        Phase::LiveIso => "live-iso",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context;

    fn with(phase: Phase, pairs: &[(&str, &str)]) -> PhaseContext {
        let mut ctx = context(phase);
        ctx.parameters = pairs
            .iter()
            .map(|(key, value)| ((*key).into(), (*value).into()))
            .collect();
        ctx
    }

    #[test]
    fn boot_modes_follow_the_host_spec_values() {
        let mode = |value: &str| boot_mode(&with(Phase::Deploy, &[(BOOT_MODE, value)]));

        assert_eq!(mode("UEFI"), Ok(BootMode::Uefi));
        assert_eq!(mode("UEFISecureBoot"), Ok(BootMode::Uefi));
        assert_eq!(mode("legacy"), Ok(BootMode::Legacy));
        assert_eq!(boot_mode(&with(Phase::Deploy, &[])), Ok(BootMode::Uefi));
        let error = mode("bios").expect_err("not a boot mode");
        assert_eq!(
            error.to_string(),
            "parameter boot-mode is \"bios\": expected UEFI, UEFISecureBoot or legacy"
        );
    }

    #[test]
    fn cleaning_defaults_to_metadata_and_rejects_unknown_modes() {
        let mode = |value: &str| {
            cleaning(&with(
                Phase::Deprovision,
                &[(AUTOMATED_CLEANING_MODE, value)],
            ))
        };

        assert_eq!(mode("metadata"), Ok(Cleaning::Metadata));
        assert_eq!(mode("disabled"), Ok(Cleaning::Disabled));
        assert_eq!(
            cleaning(&with(Phase::Deprovision, &[])),
            Ok(Cleaning::Metadata)
        );
        assert_eq!(
            mode("full"),
            Err(ParameterError::CleaningMode("full".into()))
        );
    }

    #[test]
    fn the_last_occurrence_of_a_parameter_wins() {
        let ctx = with(
            Phase::Deploy,
            &[(BOOT_MODE, "legacy"), ("other", "x"), (BOOT_MODE, "UEFI")],
        );

        assert_eq!(boot_mode(&ctx), Ok(BootMode::Uefi));
    }

    #[test]
    fn only_formats_the_agent_writes_can_be_deployed() {
        let with_format = |format: Option<&str>| {
            let mut ctx = context(Phase::Deploy);
            if let Some(image) = ctx.image.as_mut() {
                image.format = format.map(Into::into);
            }
            deployable_image(&ctx).map(|_| ())
        };

        assert_eq!(with_format(Some("raw")), Ok(()));
        assert_eq!(with_format(Some("qcow2")), Ok(()));
        assert_eq!(with_format(None), Ok(()));
        assert_eq!(
            with_format(Some("vmdk")),
            Err(ParameterError::ImageFormat("vmdk".into()))
        );
        assert_eq!(
            with_format(Some("live-iso")).map_err(|error| error.to_string()),
            Err(
                "image format \"live-iso\" cannot be written by the deploy agent: use raw or \
                 qcow2 (a live-iso image is booted with the live-iso phase)"
                    .into()
            )
        );
    }

    #[test]
    fn missing_media_and_images_name_the_phase() {
        let blank = with(Phase::Inspect, &[(DEPLOY_MEDIA_URL, "  ")]);
        let mut no_url = context(Phase::LiveIso);
        if let Some(image) = no_url.image.as_mut() {
            image.url = String::new();
        }

        assert_eq!(
            deploy_media_url(&blank),
            Err(ParameterError::MissingDeployMedia { phase: "inspect" })
        );
        assert_eq!(
            image(&no_url).map(|image| image.url.clone()),
            Err(ParameterError::MissingImage { phase: "live-iso" })
        );
    }
}
