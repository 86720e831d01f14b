//! Writing a `provisioning-steps` plugin.
//!
//! Implement [`ProvisioningSteps`] and export it with
//! [`export_provisioning_steps!`](crate::export_provisioning_steps).

pub use crate::bindings::provisioning_steps::exports::ingot::plugin::steps::{
    Image, Phase, PhaseContext, Requeue, Step, StepError, StepOutcome,
};

use crate::host::StepHost;

/// A provisioning-steps plugin: plans a phase, then runs one step at a time
/// without blocking.
pub trait ProvisioningSteps {
    /// Lists the steps of a phase, in order.
    fn plan(host: &impl StepHost, ctx: &PhaseContext) -> Result<Vec<Step>, StepError>;

    /// Runs one step once; `state` is what the last `requeue-after` returned.
    fn run(
        host: &impl StepHost,
        ctx: &PhaseContext,
        step: &Step,
        state: Option<Vec<u8>>,
    ) -> Result<StepOutcome, StepError>;
}

/// Exports a [`ProvisioningSteps`] implementation as the component's `steps`
/// interface.
#[macro_export]
macro_rules! export_provisioning_steps {
    ($steps:ty) => {
        const _: () = {
            use $crate::host::ComponentHost;
            use $crate::steps::{PhaseContext, ProvisioningSteps, Step, StepError, StepOutcome};

            struct IngotStepsExport;

            impl $crate::bindings::provisioning_steps::exports::ingot::plugin::steps::Guest
                for IngotStepsExport
            {
                fn plan(ctx: PhaseContext) -> Result<Vec<Step>, StepError> {
                    <$steps as ProvisioningSteps>::plan(&ComponentHost, &ctx)
                }

                fn run(
                    ctx: PhaseContext,
                    step: Step,
                    state: Option<Vec<u8>>,
                ) -> Result<StepOutcome, StepError> {
                    <$steps as ProvisioningSteps>::run(&ComponentHost, &ctx, &step, state)
                }
            }

            // Native builds (unit tests, clippy) skip the export glue: its symbol
            // names are only valid in a WebAssembly module.
            #[cfg(target_family = "wasm")]
            $crate::bindings::provisioning_steps::__export_provisioning_steps_world!(
                IngotStepsExport
            );
        };
    };
}
