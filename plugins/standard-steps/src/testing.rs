//! Builders shared by the unit tests.

use ingot_plugin_sdk::mock::{MockHost, fixtures};
use ingot_plugin_sdk::steps::{
    Image, Phase, PhaseContext, ProvisioningSteps, Requeue, Step, StepError, StepOutcome,
};

use crate::StandardSteps;
use crate::params::{AUTOMATED_CLEANING_MODE, BOOT_MODE, DEPLOY_MEDIA_URL};

/// The deploy media URL of [`context`].
pub const MEDIA_URL: &str = "http://media.lab/deploy.iso?token=s3cr3t";

/// The image URL of [`context`].
pub const IMAGE_URL: &str = "http://images.lab/os.qcow2";

/// A context for `phase` with every parameter the operator sets and an image.
pub fn context(phase: Phase) -> PhaseContext {
    PhaseContext {
        host: fixtures::host_ref("node-0"),
        phase,
        hardware: None,
        image: Some(Image {
            url: IMAGE_URL.into(),
            checksum: Some("ab".repeat(32)),
            checksum_type: Some("sha256".into()),
            format: Some("qcow2".into()),
        }),
        parameters: vec![
            (DEPLOY_MEDIA_URL.into(), MEDIA_URL.into()),
            (BOOT_MODE.into(), "UEFI".into()),
            (AUTOMATED_CLEANING_MODE.into(), "metadata".into()),
        ],
    }
}

/// Sets parameter `key` of `ctx`, replacing any earlier value.
pub fn set_parameter(ctx: &mut PhaseContext, key: &str, value: &str) {
    ctx.parameters.retain(|(name, _)| name != key);
    ctx.parameters.push((key.into(), value.into()));
}

/// A mock host with a generous call budget, so steps chain their requests.
pub fn host() -> MockHost {
    let host = MockHost::new();
    host.set_deadline_remaining_ms(30_000);
    host
}

/// The step called `name`, as planned for `ctx`.
pub fn planned(ctx: &PhaseContext, name: &str) -> Step {
    let steps = StandardSteps::plan(&MockHost::new(), ctx).expect("the context plans");
    steps
        .into_iter()
        .find(|step| step.name == name)
        .unwrap_or_else(|| panic!("{name} is not planned for {:?}", ctx.phase))
}

/// Runs the step `name` of `ctx`'s plan once.
pub fn run(
    host: &MockHost,
    ctx: &PhaseContext,
    name: &str,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, StepError> {
    StandardSteps::run(host, ctx, &planned(ctx, name), state)
}

/// The requeue of an outcome that must be one.
pub fn requeued(outcome: Result<StepOutcome, StepError>) -> Requeue {
    match outcome {
        Ok(StepOutcome::RequeueAfter(requeue)) => requeue,
        other => panic!("expected a requeue, got {other:?}"),
    }
}

/// The message of an outcome that must be a failure.
pub fn failure(outcome: Result<StepOutcome, StepError>) -> String {
    match outcome {
        Ok(StepOutcome::Failed(message)) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}
