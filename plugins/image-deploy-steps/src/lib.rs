//! Deploys an image with the deploy agent and boots it from disk.
//!
//! The `deploy` phase has three steps, each resumable:
//!
//! 1. `write-image`: asks the agent to write the image (URL and checksum) to
//!    the root disk; the command id is kept in the step state and polled on
//!    later runs until the agent reports success or failure.
//! 2. `boot-from-disk`: sets the persistent boot device to the disk, in the
//!    boot mode from the `boot-mode` parameter (`uefi` unless `legacy`).
//! 3. `reboot`: hard-reboots into the written image.
//!
//! Other phases have no steps from this plugin.

use ingot_plugin_sdk::host::{AgentCommand, CommandStatus, ControlError, Level, StepHost};
use ingot_plugin_sdk::steps::{
    Phase, PhaseContext, ProvisioningSteps, Requeue, Step, StepError, StepOutcome,
};
use ingot_plugin_sdk::types::{
    BootDevice, BootMode, BootPersistence, BootTarget, PowerAction, Progress,
};

/// How long to wait before asking the agent again.
const POLL_MS: u64 = 5_000;

/// The image deployment steps.
pub struct ImageDeploySteps;

impl ProvisioningSteps for ImageDeploySteps {
    fn plan(_host: &impl StepHost, ctx: &PhaseContext) -> Result<Vec<Step>, StepError> {
        if ctx.phase != Phase::Deploy {
            return Ok(Vec::new());
        }

        if ctx.image.is_none() {
            return Err(StepError::InvalidInput(
                "the deploy phase needs an image".into(),
            ));
        }

        Ok(["write-image", "boot-from-disk", "reboot"]
            .into_iter()
            .map(|name| Step {
                name: name.into(),
                args: Vec::new(),
            })
            .collect())
    }

    fn run(
        host: &impl StepHost,
        ctx: &PhaseContext,
        step: &Step,
        state: Option<Vec<u8>>,
    ) -> Result<StepOutcome, StepError> {
        match step.name.as_str() {
            "write-image" => write_image(host, ctx, state),
            "boot-from-disk" => progress(host.set_boot_device(&disk_boot(ctx))),
            "reboot" => progress(host.set_power(PowerAction::RebootHard)),
            other => Err(StepError::InvalidInput(format!("unknown step {other:?}"))),
        }
    }
}

fn write_image(
    host: &impl StepHost,
    ctx: &PhaseContext,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, StepError> {
    let Some(command_id) = state.and_then(|state| String::from_utf8(state).ok()) else {
        return start_write(host, ctx);
    };

    match host.agent_status(&command_id) {
        Ok(CommandStatus::Running(note)) => Ok(requeue(command_id, note)),
        Ok(CommandStatus::Succeeded(_)) => Ok(StepOutcome::Done),
        Ok(CommandStatus::Failed(message)) => Ok(StepOutcome::Failed(format!(
            "writing the image failed: {message}"
        ))),
        Err(error) => Err(StepError::Transient(format!("agent status: {error:?}"))),
    }
}

fn start_write(host: &impl StepHost, ctx: &PhaseContext) -> Result<StepOutcome, StepError> {
    if !host.agent_connected() {
        return Ok(StepOutcome::RequeueAfter(Requeue {
            after_ms: POLL_MS,
            state: Vec::new(),
            detail: "waiting for the deploy agent".into(),
        }));
    }

    let Some(image) = &ctx.image else {
        return Err(StepError::InvalidInput(
            "the deploy phase needs an image".into(),
        ));
    };
    let args = format!(
        "{{\"url\":{},\"checksum\":{},\"checksumType\":{}}}",
        json_string(&image.url),
        image.checksum.as_deref().map_or("null".into(), json_string),
        image
            .checksum_type
            .as_deref()
            .map_or("null".into(), json_string),
    );

    let command_id = host
        .agent_send(&AgentCommand {
            name: "write-image".into(),
            args_json: args,
        })
        .map_err(|error| StepError::Transient(format!("agent send: {error:?}")))?;
    host.log(
        Level::Info,
        "image write started",
        &[("command", &command_id), ("url", &image.url)],
    );

    Ok(requeue(command_id, "image write started".into()))
}

fn requeue(command_id: String, detail: String) -> StepOutcome {
    StepOutcome::RequeueAfter(Requeue {
        after_ms: POLL_MS,
        state: command_id.into_bytes(),
        detail,
    })
}

fn disk_boot(ctx: &PhaseContext) -> BootDevice {
    let legacy = ctx
        .parameters
        .iter()
        .any(|(key, value)| key == "boot-mode" && value == "legacy");

    BootDevice {
        target: BootTarget::Disk,
        persistence: BootPersistence::Persistent,
        mode: if legacy {
            BootMode::Legacy
        } else {
            BootMode::Uefi
        },
    }
}

/// Maps the driver's progress to a step outcome.
fn progress(answer: Result<Progress, ControlError>) -> Result<StepOutcome, StepError> {
    match answer {
        Ok(Progress::Done) => Ok(StepOutcome::Done),
        Ok(Progress::InProgress(pending)) => Ok(StepOutcome::RequeueAfter(Requeue {
            after_ms: pending.requeue_after_ms,
            state: Vec::new(),
            detail: pending.detail,
        })),
        Err(ControlError::NotSupported(what)) => Ok(StepOutcome::Failed(format!(
            "the host's driver cannot {what}"
        ))),
        Err(error) => Err(StepError::Transient(format!("{error:?}"))),
    }
}

/// A JSON string literal.
fn json_string(value: &str) -> String {
    let escaped: String = value
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

ingot_plugin_sdk::export_provisioning_steps!(ImageDeploySteps);

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_plugin_sdk::mock::{HostCall, MockHost, fixtures};
    use ingot_plugin_sdk::steps::Image;

    fn deploy() -> PhaseContext {
        PhaseContext {
            host: fixtures::host_ref("node-0"),
            phase: Phase::Deploy,
            hardware: None,
            image: Some(Image {
                url: "http://images/\"os\".raw".into(),
                checksum: Some("abc".into()),
                checksum_type: Some("sha256".into()),
                format: Some("raw".into()),
            }),
            parameters: Vec::new(),
        }
    }

    fn step(name: &str) -> Step {
        Step {
            name: name.into(),
            args: Vec::new(),
        }
    }

    #[test]
    fn plans_three_steps_for_deploy_only() {
        let host = MockHost::new();
        let steps = ImageDeploySteps::plan(&host, &deploy()).expect("plan");

        assert_eq!(
            steps
                .iter()
                .map(|step| step.name.as_str())
                .collect::<Vec<_>>(),
            ["write-image", "boot-from-disk", "reboot"]
        );
        let inspect = PhaseContext {
            phase: Phase::Inspect,
            ..deploy()
        };
        assert!(
            ImageDeploySteps::plan(&host, &inspect)
                .expect("plan")
                .is_empty()
        );
    }

    #[test]
    fn write_image_waits_for_the_agent_then_polls_it() {
        let host = MockHost::new();
        let waiting =
            ImageDeploySteps::run(&host, &deploy(), &step("write-image"), None).expect("run");
        assert!(
            matches!(waiting, StepOutcome::RequeueAfter(ref requeue) if requeue.state.is_empty())
        );

        let host = MockHost::new().with_agent_connected();
        let started =
            ImageDeploySteps::run(&host, &deploy(), &step("write-image"), None).expect("run");
        let StepOutcome::RequeueAfter(requeue) = started else {
            panic!("{started:?}")
        };
        let HostCall::AgentSend(command) = &host.calls()[0] else {
            panic!("no command sent")
        };
        assert!(
            command
                .args_json
                .contains(r#""url":"http://images/\"os\".raw""#),
            "{}",
            command.args_json
        );

        let id = String::from_utf8(requeue.state.clone()).expect("id");
        host.script_agent_command(
            &id,
            vec![
                CommandStatus::Running("40%".into()),
                CommandStatus::Succeeded("{}".into()),
            ],
        );
        let polled = ImageDeploySteps::run(
            &host,
            &deploy(),
            &step("write-image"),
            Some(requeue.state.clone()),
        )
        .expect("run");
        assert!(matches!(polled, StepOutcome::RequeueAfter(ref again) if again.detail == "40%"));
        let done =
            ImageDeploySteps::run(&host, &deploy(), &step("write-image"), Some(requeue.state))
                .expect("run");
        assert_eq!(done, StepOutcome::Done);
    }

    #[test]
    fn driver_progress_becomes_step_outcomes() {
        let host = MockHost::new();
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Err(ControlError::NotSupported("reboot".into())));

        assert_eq!(
            ImageDeploySteps::run(&host, &deploy(), &step("boot-from-disk"), None).expect("run"),
            StepOutcome::Done
        );
        let failed = ImageDeploySteps::run(&host, &deploy(), &step("reboot"), None).expect("run");
        assert_eq!(
            failed,
            StepOutcome::Failed("the host's driver cannot reboot".into())
        );
        host.assert_done();
    }
}
