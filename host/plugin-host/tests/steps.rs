//! The bundled `standard-steps` component, run through the registry against
//! a simulated machine: its BMC (the host-control seam) and the deploy agent
//! it boots (the deploy-agent seam). Each phase is driven from plan to done
//! the way the operator does it, one non-blocking step run at a time.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::{
    AgentError, Command, CommandStatus,
};
use ingot_plugin_host::bindings::imports::ingot::plugin::host_control::ControlError;
use ingot_plugin_host::bindings::steps::{
    Image, Phase, PhaseContext, Step, StepError, StepOutcome,
};
use ingot_plugin_host::bindings::types::{
    BootDevice, BootMode, BootPersistence, BootTarget, Pending, PowerAction, PowerState, Progress,
    VirtualMedia,
};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::{CallError, DomainError};
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::state::{CallScope, DeployAgent, HostControl};
use ingot_plugin_host::world::World;
use support::{host_ref, registry, spec};

const PLUGIN: &str = "ingot-standard-steps";
const DEPLOY_MEDIA: &str = "http://media.lab/node-0/deploy.iso";
const OS_IMAGE: &str = "http://images.lab/os.qcow2";
const LIVE_ISO: &str = "http://images.lab/rescue.iso";

/// Most runs a step may take before the test calls it stuck.
const MAX_RUNS_PER_STEP: usize = 40;

/// What the simulated machine is running.
#[derive(Debug, Clone, PartialEq)]
enum Running {
    Nothing,
    DeployAgent,
    Disk(String),
    LiveIso(String),
    NoBootableDevice,
}

/// An agent command the machine received.
#[derive(Debug, Clone)]
struct AgentJob {
    command: Command,
    polls_left: u32,
    finished: bool,
}

/// A bare-metal machine with a BMC and, when booted from the deploy media,
/// a deploy agent. Requests behave like a real BMC: powering on and
/// inserting media complete by the next request, a reset boots the machine
/// again at once.
#[derive(Debug, Clone)]
struct Machine {
    power: PowerState,
    media: Option<String>,
    boot_once: Option<BootDevice>,
    boot_persistent: Option<BootDevice>,
    running: Running,
    /// The image written to the disk, if any.
    disk: Option<String>,
    /// Queries of `connected` until a freshly booted agent checks in.
    agent_checkin_polls: u32,
    /// Whether the BMC honours virtual media at all.
    boots_virtual_media: bool,
    /// Commands the agent fails, with the message.
    failing_commands: BTreeMap<String, String>,
    jobs: BTreeMap<String, AgentJob>,
    boots: Vec<Running>,
    journal: Vec<String>,
}

impl Machine {
    fn new(power: PowerState) -> Self {
        Self {
            power,
            media: None,
            boot_once: None,
            boot_persistent: None,
            running: Running::Nothing,
            disk: None,
            agent_checkin_polls: 0,
            boots_virtual_media: true,
            failing_commands: BTreeMap::new(),
            jobs: BTreeMap::new(),
            boots: Vec::new(),
            journal: Vec::new(),
        }
    }

    /// A machine with `image` on its disk, booted from it.
    fn deployed(image: &str) -> Self {
        let mut machine = Self::new(PowerState::On);
        machine.disk = Some(image.into());
        machine.running = Running::Disk(image.into());
        machine.boot_persistent = Some(device(BootTarget::Disk, BootPersistence::Persistent));
        machine
    }

    /// Power comes on, or the machine resets: firmware picks the boot device.
    fn boot(&mut self) {
        self.power = PowerState::On;
        self.jobs.clear();
        let device = self.boot_once.take().or(self.boot_persistent);

        self.running = match (device.map(|device| device.target), &self.media, &self.disk) {
            (Some(BootTarget::Cd), Some(media), _) if self.boots_virtual_media => {
                if media == DEPLOY_MEDIA {
                    self.agent_checkin_polls = 2;
                    Running::DeployAgent
                } else {
                    Running::LiveIso(media.clone())
                }
            }
            (Some(BootTarget::Disk), _, Some(image)) => Running::Disk(image.clone()),
            _ => Running::NoBootableDevice,
        };
        self.boots.push(self.running.clone());
        self.journal.push(format!("boot {:?}", self.running));
    }

    fn power_off(&mut self) {
        self.power = PowerState::Off;
        self.running = Running::Nothing;
        self.jobs.clear();
        self.journal.push("power off".into());
    }

    fn agent_commands(&self) -> Vec<String> {
        self.journal
            .iter()
            .filter_map(|entry| entry.strip_prefix("agent ran "))
            .map(str::to_owned)
            .collect()
    }

    /// Carries out a finished agent command.
    fn complete(&mut self, command: &Command) {
        match command.name.as_str() {
            "write-image" => {
                let args: serde_json::Value =
                    serde_json::from_str(&command.args_json).expect("write-image args are JSON");
                self.disk = args["url"].as_str().map(str::to_owned);
            }
            "erase-metadata" => self.disk = None,
            _ => {}
        }
        self.journal
            .push(format!("agent ran {} {}", command.name, command.args_json));
    }
}

fn device(target: BootTarget, persistence: BootPersistence) -> BootDevice {
    BootDevice {
        target,
        persistence,
        mode: BootMode::Uefi,
    }
}

fn pending(detail: &str) -> Progress {
    Progress::InProgress(Pending {
        requeue_after_ms: 10,
        detail: detail.into(),
    })
}

/// The machine, shared by its BMC and its agent.
#[derive(Clone)]
struct Lab(Arc<Mutex<Machine>>);

impl Lab {
    fn new(machine: Machine) -> Self {
        Self(Arc::new(Mutex::new(machine)))
    }

    fn machine(&self) -> MutexGuard<'_, Machine> {
        self.0.lock().expect("machine lock")
    }

    fn scope(&self) -> CallScope {
        CallScope {
            host: Some(host_ref("node-0")),
            control: Some(Arc::new(self.clone())),
            agent: Some(Arc::new(self.clone())),
            ..CallScope::default()
        }
    }

    fn control(
        &self,
        answer: Result<Progress, ControlError>,
    ) -> BoxFuture<'_, Result<Progress, ControlError>> {
        Box::pin(async move { answer })
    }

    /// The machine as the BMC sees it now: a power-on requested earlier has
    /// completed by the next request.
    fn bmc(&self) -> MutexGuard<'_, Machine> {
        let mut machine = self.machine();
        if machine.power == PowerState::PoweringOn {
            machine.boot();
        }
        machine
    }
}

impl HostControl for Lab {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, ControlError>> {
        let state = self.bmc().power;
        Box::pin(async move { Ok(state) })
    }

    fn set_power(&self, action: PowerAction) -> BoxFuture<'_, Result<Progress, ControlError>> {
        let mut machine = self.bmc();
        let answer = match (action, machine.power) {
            (PowerAction::On | PowerAction::RebootHard, PowerState::Off) => {
                machine.power = PowerState::PoweringOn;
                machine.journal.push("power on requested".into());
                Ok(pending("powering on"))
            }
            (PowerAction::On, _) => Ok(Progress::Done),
            (PowerAction::RebootHard, _) => {
                machine.journal.push("reset".into());
                machine.boot();
                Ok(Progress::Done)
            }
            (PowerAction::OffHard | PowerAction::OffSoft, PowerState::Off) => Ok(Progress::Done),
            (PowerAction::OffHard | PowerAction::OffSoft, _) => {
                machine.power_off();
                Ok(Progress::Done)
            }
            (PowerAction::RebootSoft, _) => {
                Err(ControlError::NotSupported("a graceful restart".into()))
            }
        };
        drop(machine);
        self.control(answer)
    }

    fn set_boot_device(&self, device: BootDevice) -> BoxFuture<'_, Result<Progress, ControlError>> {
        let mut machine = self.bmc();
        match device.persistence {
            BootPersistence::Once => machine.boot_once = Some(device),
            BootPersistence::Persistent => machine.boot_persistent = Some(device),
        }
        machine.journal.push(format!(
            "boot device {:?} {:?}",
            device.target, device.persistence
        ));
        drop(machine);
        self.control(Ok(Progress::Done))
    }

    fn insert_media(&self, media: VirtualMedia) -> BoxFuture<'_, Result<Progress, ControlError>> {
        let mut machine = self.bmc();
        let progress = if machine.media.as_deref() != Some(media.image_url.as_str()) {
            machine.journal.push(format!("insert {}", media.image_url));
            machine.media = Some(media.image_url);
            pending("downloading the image")
        } else {
            Progress::Done
        };
        drop(machine);
        self.control(Ok(progress))
    }

    fn eject_media(&self) -> BoxFuture<'_, Result<Progress, ControlError>> {
        let mut machine = self.bmc();
        if machine.media.take().is_some() {
            machine.journal.push("eject".into());
        }
        drop(machine);
        self.control(Ok(Progress::Done))
    }
}

impl DeployAgent for Lab {
    fn connected(&self) -> BoxFuture<'_, bool> {
        let mut machine = self.machine();
        let connected = machine.running == Running::DeployAgent && {
            machine.agent_checkin_polls = machine.agent_checkin_polls.saturating_sub(1);
            machine.agent_checkin_polls == 0
        };
        Box::pin(async move { connected })
    }

    fn send(&self, command: Command) -> BoxFuture<'_, Result<String, AgentError>> {
        let mut machine = self.machine();
        let answer = if machine.running != Running::DeployAgent || machine.agent_checkin_polls > 0 {
            Err(AgentError::NotConnected)
        } else {
            // Like the operator: the id follows from the phase and the command,
            // so sending it again returns the job already started.
            let id = format!("node-0/{}", command.name);
            machine.jobs.entry(id.clone()).or_insert(AgentJob {
                command,
                polls_left: 1,
                finished: false,
            });
            Ok(id)
        };
        Box::pin(async move { answer })
    }

    fn status(&self, command_id: String) -> BoxFuture<'_, Result<CommandStatus, AgentError>> {
        let mut guard = self.machine();
        let machine = &mut *guard;
        let answer = match machine.jobs.get_mut(&command_id) {
            None => Err(AgentError::Unknown(command_id)),
            Some(job) if job.polls_left > 0 => {
                job.polls_left -= 1;
                Ok(CommandStatus::Running("working".into()))
            }
            Some(job) => {
                let command = job.command.clone();
                let first_look = !job.finished;
                job.finished = true;
                match machine.failing_commands.get(&command.name) {
                    Some(message) => Ok(CommandStatus::Failed(message.clone())),
                    None => {
                        if first_look {
                            machine.complete(&command);
                        }
                        Ok(CommandStatus::Succeeded("{}".into()))
                    }
                }
            }
        };
        Box::pin(async move { answer })
    }
}

fn context(phase: Phase, cleaning: &str) -> PhaseContext {
    let image = match phase {
        Phase::Deploy => Some(Image {
            url: OS_IMAGE.into(),
            checksum: Some("ab".repeat(32)),
            checksum_type: Some("sha256".into()),
            format: Some("qcow2".into()),
        }),
        Phase::LiveIso => Some(Image {
            url: LIVE_ISO.into(),
            checksum: None,
            checksum_type: None,
            format: Some("live-iso".into()),
        }),
        _ => None,
    };

    PhaseContext {
        host: host_ref("node-0"),
        phase,
        hardware: None,
        image,
        parameters: vec![
            ("deploy-media-url".into(), DEPLOY_MEDIA.into()),
            ("boot-mode".into(), "UEFI".into()),
            ("automated-cleaning-mode".into(), cleaning.into()),
        ],
    }
}

async fn loaded(config: &[(&str, &str)]) -> Registry {
    let registry = registry();
    let mut spec = spec(PLUGIN, World::ProvisioningSteps, Limits::default());
    spec.config = config
        .iter()
        .map(|(key, value)| ((*key).into(), (*value).into()))
        .collect();
    registry
        .load(PLUGIN, spec)
        .await
        .expect("the standard steps load");
    registry
}

/// How the operator treats step state between runs.
#[derive(Debug, Clone, Copy)]
enum Recording {
    /// Every requeue's state is handed to the next run.
    Kept,
    /// The state of requeue `n` of the phase (counted from 0) is lost, as
    /// after an operator restart, when bit `n` is set.
    Lost(u64),
}

impl Recording {
    /// Every other requeue of the phase loses its state.
    const EVERY_OTHER: Self = Self::Lost(0xAAAA_AAAA_AAAA_AAAA);

    fn loses(self, requeue: usize) -> bool {
        match self {
            Self::Kept => false,
            Self::Lost(mask) => requeue < 64 && mask & (1 << requeue) != 0,
        }
    }
}

/// What driving a phase came to.
#[derive(Debug)]
struct PhaseRun {
    steps: Vec<String>,
    runs: usize,
    requeues: usize,
    lost_states: usize,
    failure: Option<String>,
}

/// Plays the operator: plans a phase and runs each step until it is done,
/// handing every run the state the last one returned (or not).
struct Operator<'a> {
    registry: &'a Registry,
    lab: &'a Lab,
    recording: Recording,
    /// Time between two runs of a step.
    pause: Duration,
}

impl<'a> Operator<'a> {
    fn new(registry: &'a Registry, lab: &'a Lab) -> Self {
        Self {
            registry,
            lab,
            recording: Recording::Kept,
            pause: Duration::ZERO,
        }
    }

    /// Plans `ctx`'s phase and runs every step until done or failed.
    async fn drive(&self, ctx: &PhaseContext) -> PhaseRun {
        let plan = self
            .registry
            .call(PLUGIN, PluginCall::Plan(ctx.clone()), self.lab.scope())
            .await
            .expect("plan");
        let PluginReply::Steps(steps) = plan else {
            panic!("plan answered {plan:?}")
        };
        let mut phase = PhaseRun {
            steps: steps.iter().map(|step| step.name.clone()).collect(),
            runs: 0,
            requeues: 0,
            lost_states: 0,
            failure: None,
        };

        for step in steps {
            if let Err(message) = self.run_to_done(ctx, &step, &mut phase).await {
                phase.failure = Some(message);
                break;
            }
        }
        phase
    }

    async fn run_to_done(
        &self,
        ctx: &PhaseContext,
        step: &Step,
        phase: &mut PhaseRun,
    ) -> Result<(), String> {
        let mut state = None;

        for _ in 0..MAX_RUNS_PER_STEP {
            phase.runs += 1;
            let call = PluginCall::Run {
                ctx: ctx.clone(),
                step: step.clone(),
                state: state.take(),
            };
            let reply = self.registry.call(PLUGIN, call, self.lab.scope()).await;
            match reply {
                Ok(PluginReply::Outcome(StepOutcome::Done)) => return Ok(()),
                Ok(PluginReply::Outcome(StepOutcome::RequeueAfter(requeue))) => {
                    let lost = self.recording.loses(phase.requeues);
                    phase.requeues += 1;
                    phase.lost_states += usize::from(lost);
                    state = (!lost).then_some(requeue.state);
                }
                Ok(PluginReply::Outcome(StepOutcome::Failed(message))) => return Err(message),
                other => panic!("step {} answered {other:?}", step.name),
            }
            tokio::time::sleep(self.pause).await;
        }
        panic!(
            "step {} did not finish in {MAX_RUNS_PER_STEP} runs: {:?}",
            step.name,
            self.lab.machine()
        );
    }
}

async fn drive_kept(registry: &Registry, lab: &Lab, ctx: &PhaseContext) -> PhaseRun {
    Operator::new(registry, lab).drive(ctx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_boots_the_agent_collects_the_inventory_and_powers_off() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));

    let phase = drive_kept(&registry, &lab, &context(Phase::Inspect, "metadata")).await;

    assert_eq!(phase.failure, None);
    assert_eq!(
        phase.steps,
        ["boot-deploy-media", "collect-inventory", "power-off"]
    );
    let machine = lab.machine();
    assert_eq!(machine.boots, [Running::DeployAgent]);
    assert_eq!(machine.agent_commands(), ["inventory {}"]);
    assert_eq!(
        (machine.power, machine.media.clone(), machine.boot_once),
        (PowerState::Off, None, None),
        "off, media ejected, one-time boot used up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_writes_the_image_and_boots_it_from_disk() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));

    let phase = drive_kept(&registry, &lab, &context(Phase::Deploy, "metadata")).await;

    assert_eq!(phase.failure, None);
    let machine = lab.machine();
    assert_eq!(
        machine.boots,
        [Running::DeployAgent, Running::Disk(OS_IMAGE.into())]
    );
    assert_eq!(
        machine.agent_commands(),
        [
            format!(
                r#"write-image {{"url":"{OS_IMAGE}","checksum":"{}","checksumType":"sha256","format":"qcow2"}}"#,
                "ab".repeat(32)
            ),
            "sync {}".into()
        ]
    );
    assert_eq!(machine.media, None);
    assert_eq!(
        machine.boot_persistent,
        Some(device(BootTarget::Disk, BootPersistence::Persistent))
    );
    assert_eq!(machine.power, PowerState::On);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_host_is_reset_into_the_deploy_agent_and_cleaned() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::deployed(OS_IMAGE));

    let phase = drive_kept(&registry, &lab, &context(Phase::Deprovision, "metadata")).await;

    assert_eq!(phase.failure, None);
    assert_eq!(
        phase.steps,
        ["boot-deploy-media", "erase-metadata", "power-off"]
    );
    let machine = lab.machine();
    assert_eq!(machine.boots, [Running::DeployAgent]);
    assert!(
        machine.journal.contains(&"reset".to_owned()),
        "{:?}",
        machine.journal
    );
    assert_eq!(machine.agent_commands(), ["erase-metadata {}", "sync {}"]);
    assert_eq!(
        (machine.disk.clone(), machine.power),
        (None, PowerState::Off)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovisioning_without_cleaning_only_powers_off() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::deployed(OS_IMAGE));

    let phase = drive_kept(&registry, &lab, &context(Phase::Deprovision, "disabled")).await;

    assert_eq!(phase.failure, None);
    assert_eq!(phase.steps, ["power-off"]);
    let machine = lab.machine();
    assert!(machine.boots.is_empty());
    assert_eq!(machine.disk.as_deref(), Some(OS_IMAGE), "the disk is kept");
    assert_eq!(machine.power, PowerState::Off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_iso_is_booted_from_virtual_cd() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));

    let phase = drive_kept(&registry, &lab, &context(Phase::LiveIso, "metadata")).await;

    assert_eq!(phase.failure, None);
    let machine = lab.machine();
    assert_eq!(machine.boots, [Running::LiveIso(LIVE_ISO.into())]);
    assert_eq!(
        machine.boot_persistent,
        Some(device(BootTarget::Cd, BootPersistence::Persistent))
    );
    assert!(machine.agent_commands().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparation_has_no_steps() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));

    let phase = drive_kept(&registry, &lab, &context(Phase::Prepare, "metadata")).await;

    assert!(phase.steps.is_empty());
    assert!(lab.machine().journal.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_step_state_converges_without_running_agent_commands_twice() {
    let registry = loaded(&[]).await;
    let phases = [
        (Phase::Inspect, "metadata", Machine::new(PowerState::Off)),
        (Phase::Deploy, "metadata", Machine::new(PowerState::Off)),
        (Phase::Deprovision, "metadata", Machine::deployed(OS_IMAGE)),
        (Phase::Deprovision, "disabled", Machine::deployed(OS_IMAGE)),
        (Phase::LiveIso, "metadata", Machine::new(PowerState::Off)),
    ];

    for (phase, cleaning, machine) in phases {
        let ctx = context(phase, cleaning);
        let kept = Lab::new(machine.clone());
        let reference = drive_kept(&registry, &kept, &ctx).await;
        let expected = kept.machine().clone();
        // Each single requeue whose state is lost, then every other one.
        let losses = (0..reference.requeues)
            .map(|requeue| Recording::Lost(1 << requeue))
            .chain([Recording::EVERY_OTHER]);

        for recording in losses {
            let lossy = Lab::new(machine.clone());
            let operator = Operator {
                recording,
                ..Operator::new(&registry, &lossy)
            };

            let run = operator.drive(&ctx).await;

            let context = format!("{phase:?} {cleaning} with {recording:?}");
            assert_eq!(run.failure, None, "{context}");
            assert!(run.lost_states > 0 || reference.requeues < 2, "{context}");
            let machine = lossy.machine();
            assert_eq!(
                machine.agent_commands(),
                expected.agent_commands(),
                "{context}: each agent command ran once"
            );
            assert_eq!(
                (
                    &machine.running,
                    machine.power,
                    &machine.media,
                    &machine.disk
                ),
                (
                    &expected.running,
                    expected.power,
                    &expected.media,
                    &expected.disk
                ),
                "{context}: ends where the phase ends with its state kept"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_agent_cannot_write_fails_the_deployment() {
    let registry = loaded(&[]).await;
    let mut machine = Machine::new(PowerState::Off);
    machine
        .failing_commands
        .insert("write-image".into(), "checksum mismatch".into());
    let lab = Lab::new(machine);

    let phase = drive_kept(&registry, &lab, &context(Phase::Deploy, "metadata")).await;

    assert_eq!(
        phase.failure.as_deref(),
        Some("the deploy agent could not write the image: checksum mismatch")
    );
    assert_eq!(
        lab.machine().boots,
        [Running::DeployAgent],
        "never booted the disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_boots_the_agent_times_out() {
    let registry = loaded(&[("agent-boot-timeout-seconds", "1")]).await;
    let mut machine = Machine::new(PowerState::Off);
    machine.boots_virtual_media = false;
    let lab = Lab::new(machine);

    let operator = Operator {
        pause: Duration::from_millis(200),
        ..Operator::new(&registry, &lab)
    };

    let phase = operator.drive(&context(Phase::Inspect, "metadata")).await;

    let failure = phase.failure.expect("the inspection fails");
    assert!(
        failure.starts_with(
            "the deploy agent did not check in within 1 s of booting the deploy media"
        ),
        "{failure}"
    );
    assert_eq!(lab.machine().boots, [Running::NoBootableDevice]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_services_are_only_available_when_granted() {
    let registry = loaded(&[]).await;

    let call = PluginCall::Run {
        ctx: context(Phase::Deploy, "metadata"),
        step: Step {
            name: "reboot".into(),
            args: Vec::new(),
        },
        state: None,
    };
    let error = registry
        .call(PLUGIN, call, CallScope::default())
        .await
        .expect_err("no driver in scope");

    assert!(
        matches!(&error, CallError::DeniedCapability { capability, .. } if capability == "host-control"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_without_an_image_is_refused_before_the_machine_is_touched() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));
    let mut ctx = context(Phase::Deploy, "metadata");
    ctx.image = None;

    let error = registry
        .call(PLUGIN, PluginCall::Plan(ctx), lab.scope())
        .await
        .expect_err("no image");

    assert!(
        matches!(
            &error,
            CallError::Domain { error: DomainError::Steps(StepError::InvalidInput(message)), .. }
                if message.contains("needs an image")
        ),
        "{error:?}"
    );
    assert!(
        !error.is_plugin_failure(),
        "bad input is not the plugin's fault"
    );
    assert!(lab.machine().journal.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gone_missing_is_a_transient_error() {
    let registry = loaded(&[]).await;
    let lab = Lab::new(Machine::new(PowerState::Off));

    let call = PluginCall::Run {
        ctx: context(Phase::Inspect, "metadata"),
        step: Step {
            name: "collect-inventory".into(),
            args: Vec::new(),
        },
        state: None,
    };
    let error = registry
        .call(PLUGIN, call, lab.scope())
        .await
        .expect_err("no agent is running");

    assert!(
        matches!(
            &error,
            CallError::Domain {
                error: DomainError::Steps(StepError::Transient(_)),
                ..
            }
        ),
        "{error:?}"
    );
}
