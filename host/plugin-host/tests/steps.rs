//! A provisioning-steps plugin drives the host through its driver and the
//! deploy agent, one non-blocking step at a time.

mod support;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::{
    AgentError, Command, CommandStatus,
};
use ingot_plugin_host::bindings::imports::ingot::plugin::host_control::ControlError;
use ingot_plugin_host::bindings::steps::{Image, Phase, PhaseContext, Step, StepOutcome};
use ingot_plugin_host::bindings::types::{
    BootDevice, PowerAction, PowerState, Progress, VirtualMedia,
};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::CallError;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::state::{CallScope, DeployAgent, HostControl};
use ingot_plugin_host::world::World;
use support::{host_ref, registry, spec};

/// Records what the plugin asked the host's driver to do.
#[derive(Default)]
struct FakeDriver {
    actions: Mutex<Vec<String>>,
}

impl FakeDriver {
    fn record(&self, action: String) -> BoxFuture<'_, Result<Progress, ControlError>> {
        self.actions.lock().expect("actions").push(action);
        Box::pin(async { Ok(Progress::Done) })
    }
}

impl HostControl for FakeDriver {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, ControlError>> {
        Box::pin(async { Ok(PowerState::On) })
    }

    fn set_power(&self, action: PowerAction) -> BoxFuture<'_, Result<Progress, ControlError>> {
        self.record(format!("power {action:?}"))
    }

    fn set_boot_device(&self, device: BootDevice) -> BoxFuture<'_, Result<Progress, ControlError>> {
        self.record(format!(
            "boot {:?} {:?} {:?}",
            device.target, device.persistence, device.mode
        ))
    }

    fn insert_media(&self, media: VirtualMedia) -> BoxFuture<'_, Result<Progress, ControlError>> {
        self.record(format!("insert {}", media.image_url))
    }

    fn eject_media(&self) -> BoxFuture<'_, Result<Progress, ControlError>> {
        self.record("eject".into())
    }
}

/// An agent whose `write-image` runs for one poll, then succeeds.
#[derive(Default)]
struct FakeAgent {
    commands: Mutex<Vec<Command>>,
    polls: Mutex<u32>,
}

impl DeployAgent for FakeAgent {
    fn connected(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn send(&self, command: Command) -> BoxFuture<'_, Result<String, AgentError>> {
        self.commands.lock().expect("commands").push(command);
        Box::pin(async { Ok("cmd-1".to_owned()) })
    }

    fn status(&self, command_id: String) -> BoxFuture<'_, Result<CommandStatus, AgentError>> {
        let mut polls = self.polls.lock().expect("polls");
        *polls += 1;
        let status = match (command_id.as_str(), *polls) {
            ("cmd-1", 1) => Ok(CommandStatus::Running("writing".into())),
            ("cmd-1", _) => Ok(CommandStatus::Succeeded("{}".into())),
            (other, _) => Err(AgentError::Unknown(other.to_owned())),
        };
        Box::pin(async move { status })
    }
}

fn deploy() -> PhaseContext {
    PhaseContext {
        host: host_ref("node-0"),
        phase: Phase::Deploy,
        hardware: None,
        image: Some(Image {
            url: "http://images.lab/os.raw".into(),
            checksum: Some("ab".repeat(32)),
            checksum_type: Some("sha256".into()),
            format: Some("raw".into()),
        }),
        parameters: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_phase_runs_to_completion_step_by_step() {
    let registry = registry();
    registry
        .load(
            "deploy",
            spec(
                "ingot-image-deploy-steps",
                World::ProvisioningSteps,
                Limits::default(),
            ),
        )
        .await
        .expect("loads");
    let (driver, agent) = (
        Arc::new(FakeDriver::default()),
        Arc::new(FakeAgent::default()),
    );
    let scope = CallScope {
        host: Some(host_ref("node-0")),
        control: Some(driver.clone()),
        agent: Some(agent.clone()),
        ..CallScope::default()
    };

    let plan = registry
        .call("deploy", PluginCall::Plan(deploy()), scope.clone())
        .await
        .expect("plan");
    let PluginReply::Steps(steps) = plan else {
        panic!("{plan:?}")
    };
    assert_eq!(steps.len(), 3);

    let mut runs = 0;
    for step in steps {
        let mut state = None;
        loop {
            runs += 1;
            let call = PluginCall::Run {
                ctx: deploy(),
                step: step.clone(),
                state: state.take(),
            };
            let reply = registry
                .call("deploy", call, scope.clone())
                .await
                .expect("run");
            match reply {
                PluginReply::Outcome(StepOutcome::Done) => break,
                PluginReply::Outcome(StepOutcome::RequeueAfter(requeue)) => {
                    state = Some(requeue.state)
                }
                other => panic!("step {} ended with {other:?}", step.name),
            }
        }
    }

    assert_eq!(
        runs, 5,
        "write-image started, polled twice; the other steps finished at once"
    );
    assert_eq!(
        agent.commands.lock().expect("commands")[0].name,
        "write-image"
    );
    assert_eq!(
        *driver.actions.lock().expect("actions"),
        [
            "boot BootTarget::Disk BootPersistence::Persistent BootMode::Uefi",
            "power PowerAction::RebootHard"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_services_are_only_available_when_granted() {
    let registry = registry();
    registry
        .load(
            "deploy",
            spec(
                "ingot-image-deploy-steps",
                World::ProvisioningSteps,
                Limits::default(),
            ),
        )
        .await
        .expect("loads");

    let call = PluginCall::Run {
        ctx: deploy(),
        step: Step {
            name: "reboot".into(),
            args: Vec::new(),
        },
        state: None,
    };
    let error = registry
        .call("deploy", call, CallScope::default())
        .await
        .expect_err("no driver in scope");

    assert!(
        matches!(&error, CallError::DeniedCapability { capability, .. } if capability == "host-control"),
        "{error:?}"
    );
}
