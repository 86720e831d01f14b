//! The bundled standard-steps component provisioning a Redfish machine for
//! real: every host-control request goes through the Redfish driver
//! component to sushy-emulator, and a stand-in deploy agent checks in only
//! once the emulated system is on with the deploy media in its virtual CD
//! and a boot from CD requested. After each phase a plain HTTP client reads
//! the machine back from the emulator.
//!
//! Needs `make setup` (venv) and `make plugins` (components).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingot_bmc_tests::http_stub::{Reply, StubServer};
use ingot_bmc_tests::peers::{self, BMC_PASSWORD, BMC_USER, FAKE_SYSTEM_UUID, SushyFakeOptions};
use ingot_bmc_tests::plugin::{DriverUnderTest, address, component_path};
use ingot_plugin_host::CallError;
use ingot_plugin_host::bindings::driver::DriverError;
use ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::{
    AgentError, Command, CommandStatus,
};
use ingot_plugin_host::bindings::imports::ingot::plugin::host_control::ControlError;
use ingot_plugin_host::bindings::steps::{Image, Phase, PhaseContext, StepOutcome};
use ingot_plugin_host::bindings::types::{
    BootDevice, HostRef, PowerAction, PowerState, Progress, VirtualMedia,
};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::DomainError;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::runtime::{LoadedPlugin, Runtime, RuntimeConfig};
use ingot_plugin_host::state::{CallScope, DeployAgent, HostControl};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The future type of the host-control and deploy-agent seams.
type Seam<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");
const STEPS: &str = "ingot-standard-steps";
const DEPLOY_MEDIA_PATH: &str = "/node-0/deploy.iso";
const LIVE_ISO_PATH: &str = "/rescue.iso";

/// Longest a single step may take against the emulator.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Longest pause between two runs of a step, whatever the step asked for.
const MAX_PAUSE: Duration = Duration::from_millis(300);

/// Host control through the Redfish driver component, as the operator
/// provides it to step plugins.
struct RedfishControl {
    driver: DriverUnderTest,
}

impl RedfishControl {
    fn progress(&self, call: PluginCall) -> Seam<'_, Result<Progress, ControlError>> {
        Box::pin(async move {
            match self.driver.call(call).await {
                Ok(PluginReply::Progress(progress)) => Ok(progress),
                other => Err(control_error(other)),
            }
        })
    }
}

fn control_error(reply: Result<PluginReply, CallError>) -> ControlError {
    match reply {
        Err(CallError::Domain {
            error: DomainError::Driver(DriverError::NotSupported(what)),
            ..
        }) => ControlError::NotSupported(what),
        Err(error) => ControlError::Driver(error.to_string()),
        Ok(reply) => ControlError::Other(format!("the driver answered {reply:?}")),
    }
}

impl HostControl for RedfishControl {
    fn power_state(&self) -> Seam<'_, Result<PowerState, ControlError>> {
        Box::pin(async move {
            match self.driver.call(PluginCall::GetPowerState).await {
                Ok(PluginReply::PowerState(state)) => Ok(state),
                other => Err(control_error(other)),
            }
        })
    }

    fn set_power(&self, action: PowerAction) -> Seam<'_, Result<Progress, ControlError>> {
        self.progress(PluginCall::SetPower(action))
    }

    fn set_boot_device(&self, device: BootDevice) -> Seam<'_, Result<Progress, ControlError>> {
        self.progress(PluginCall::SetBootDevice(device))
    }

    fn insert_media(&self, media: VirtualMedia) -> Seam<'_, Result<Progress, ControlError>> {
        self.progress(PluginCall::InsertMedia(media))
    }

    fn eject_media(&self) -> Seam<'_, Result<Progress, ControlError>> {
        self.progress(PluginCall::EjectMedia)
    }
}

/// Reads the emulated machine the way an administrator would.
#[derive(Clone)]
struct Emulator {
    origin: String,
    client: reqwest::Client,
}

impl Emulator {
    async fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.origin))
            .basic_auth(BMC_USER, Some(BMC_PASSWORD))
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let body = response.bytes().await.map_err(|error| error.to_string())?;
        serde_json::from_slice(&body).map_err(|error| error.to_string())
    }

    async fn system(&self) -> Result<Value, String> {
        self.get(&format!("/redfish/v1/Systems/{FAKE_SYSTEM_UUID}"))
            .await
    }

    async fn cd(&self) -> Result<Value, String> {
        self.get(&format!(
            "/redfish/v1/Systems/{FAKE_SYSTEM_UUID}/VirtualMedia/Cd"
        ))
        .await
    }

    /// Power state, boot override target and mode, and the CD's image.
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let (system, cd) = (self.system().await?, self.cd().await?);
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let inserted = cd["Inserted"].as_bool().unwrap_or(false);

        Ok(Snapshot {
            power: text(&system["PowerState"]),
            boot_target: text(&system["Boot"]["BootSourceOverrideTarget"]),
            boot_enabled: text(&system["Boot"]["BootSourceOverrideEnabled"]),
            cd_image: inserted.then(|| text(&cd["Image"])),
        })
    }
}

/// What the emulator reports about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    power: String,
    boot_target: String,
    boot_enabled: String,
    cd_image: Option<String>,
}

/// A deploy agent that is reachable exactly when the emulated machine has
/// booted the deploy media. Its commands succeed on their second look.
struct EmulatedAgent {
    emulator: Emulator,
    deploy_media: String,
    ran: Mutex<Vec<String>>,
    polls: Mutex<BTreeMap<String, u32>>,
}

impl EmulatedAgent {
    async fn booted(&self) -> bool {
        let Ok(machine) = self.emulator.snapshot().await else {
            return false;
        };
        machine.power == "On"
            && machine.boot_target == "Cd"
            && machine.cd_image.as_deref() == Some(self.deploy_media.as_str())
    }

    fn ran(&self) -> Vec<String> {
        self.ran.lock().expect("agent journal").clone()
    }

    /// Forgets the commands of the last phase: like the operator's, command
    /// ids are unique within one run of a phase.
    fn begin_phase(&self) {
        self.polls.lock().expect("agent commands").clear();
    }
}

impl DeployAgent for EmulatedAgent {
    fn connected(&self) -> Seam<'_, bool> {
        Box::pin(self.booted())
    }

    fn send(&self, command: Command) -> Seam<'_, Result<String, AgentError>> {
        Box::pin(async move {
            if !self.booted().await {
                return Err(AgentError::NotConnected);
            }
            let mut polls = self.polls.lock().expect("agent commands");
            if !polls.contains_key(&command.name) {
                polls.insert(command.name.clone(), 0);
                self.ran
                    .lock()
                    .expect("agent journal")
                    .push(command.name.clone());
            }
            Ok(command.name)
        })
    }

    fn status(&self, command_id: String) -> Seam<'_, Result<CommandStatus, AgentError>> {
        let mut polls = self.polls.lock().expect("agent commands");
        let answer = match polls.get_mut(&command_id) {
            None => Err(AgentError::Unknown(command_id)),
            Some(0) => {
                polls.insert(command_id, 1);
                Ok(CommandStatus::Running("working".into()))
            }
            Some(_) => Ok(CommandStatus::Succeeded("{}".into())),
        };
        Box::pin(async move { answer })
    }
}

/// The emulator, the image server, the two components and the seams.
struct Bench {
    _bmc: peers::Peer,
    images: StubServer,
    emulator: Emulator,
    runtime: Runtime,
    steps: LoadedPlugin,
    control: Arc<RedfishControl>,
    agent: Arc<EmulatedAgent>,
}

impl Bench {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let bmc = peers::start_sushy_fake(&SushyFakeOptions { basic_auth: true })?;
        let images = image_server()?;
        let emulator = Emulator {
            origin: format!("http://127.0.0.1:{}", bmc.port),
            client: reqwest::Client::new(),
        };
        let driver = DriverUnderTest::load(
            Path::new(TARGET_TMPDIR),
            "ingot-plugin-redfish",
            address("redfish-virtualmedia+http", bmc.port, ""),
            (BMC_USER, BMC_PASSWORD),
            Limits::default(),
        )?;
        let (runtime, steps) = load_steps()?;
        let agent = EmulatedAgent {
            emulator: emulator.clone(),
            deploy_media: format!("{}{DEPLOY_MEDIA_PATH}", images.origin()),
            ran: Mutex::new(Vec::new()),
            polls: Mutex::new(BTreeMap::new()),
        };

        Ok(Self {
            _bmc: bmc,
            images,
            emulator,
            runtime,
            steps,
            control: Arc::new(RedfishControl { driver }),
            agent: Arc::new(agent),
        })
    }

    fn scope(&self) -> CallScope {
        CallScope {
            host: Some(host_ref()),
            control: Some(self.control.clone()),
            agent: Some(self.agent.clone()),
            ..CallScope::default()
        }
    }

    fn context(&self, phase: Phase, cleaning: &str) -> PhaseContext {
        let image = match phase {
            Phase::Deploy => Some(Image {
                url: format!("{}/os.qcow2", self.images.origin()),
                checksum: Some("ab".repeat(32)),
                checksum_type: Some("sha256".into()),
                format: Some("qcow2".into()),
            }),
            Phase::LiveIso => Some(Image {
                url: format!("{}{LIVE_ISO_PATH}", self.images.origin()),
                checksum: None,
                checksum_type: None,
                format: Some("live-iso".into()),
            }),
            _ => None,
        };

        PhaseContext {
            host: host_ref(),
            phase,
            hardware: None,
            image,
            parameters: vec![
                ("deploy-media-url".into(), self.agent.deploy_media.clone()),
                ("boot-mode".into(), "UEFI".into()),
                ("automated-cleaning-mode".into(), cleaning.into()),
            ],
        }
    }

    /// Plans the phase and runs each step until done, as the operator does.
    async fn provision(&self, phase: Phase, cleaning: &str) -> Result<Vec<String>, String> {
        let ctx = self.context(phase, cleaning);
        self.agent.begin_phase();
        let planned = self
            .runtime
            .call(&self.steps, PluginCall::Plan(ctx.clone()), self.scope())
            .await;
        let Ok(PluginReply::Steps(steps)) = planned else {
            return Err(format!("planning {phase:?} answered {planned:?}"));
        };

        for step in &steps {
            let started = Instant::now();
            let mut state = None;
            loop {
                let call = PluginCall::Run {
                    ctx: ctx.clone(),
                    step: step.clone(),
                    state: state.take(),
                };
                match self.runtime.call(&self.steps, call, self.scope()).await {
                    Ok(PluginReply::Outcome(StepOutcome::Done)) => break,
                    Ok(PluginReply::Outcome(StepOutcome::RequeueAfter(requeue))) => {
                        state = Some(requeue.state);
                        tokio::time::sleep(Duration::from_millis(requeue.after_ms).min(MAX_PAUSE))
                            .await;
                    }
                    other => return Err(format!("step {} answered {other:?}", step.name)),
                }
                if started.elapsed() > STEP_LIMIT {
                    return Err(format!(
                        "step {} did not finish in {STEP_LIMIT:?}",
                        step.name
                    ));
                }
            }
        }
        Ok(steps.into_iter().map(|step| step.name).collect())
    }
}

/// The host the driver is bound to.
fn host_ref() -> HostRef {
    HostRef {
        namespace: "lab".into(),
        name: "node-0".into(),
        uid: "5d2c0f7e-0000-4000-8000-000000000001".into(),
    }
}

fn load_steps() -> Result<(Runtime, LoadedPlugin), Box<dyn std::error::Error>> {
    let path = component_path(Path::new(TARGET_TMPDIR), STEPS);
    let wasm = std::fs::read(&path)
        .map_err(|error| format!("{}: {error}: run `make plugins` first", path.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(TARGET_TMPDIR).join("ingot-plugin-cache")),
        ..RuntimeConfig::default()
    })?;
    let steps = runtime.prepare(STEPS, &wasm, Vec::new(), Limits::default())?;
    Ok((runtime, steps))
}

fn image_server() -> std::io::Result<StubServer> {
    StubServer::start(None, |request| {
        let known = [DEPLOY_MEDIA_PATH, LIVE_ISO_PATH].contains(&request.path.as_str());
        Reply::Respond {
            status: if known { 200 } else { 404 },
            headers: vec![(
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned(),
            )],
            body: if known {
                vec![0u8; 64 * 1024]
            } else {
                Vec::new()
            },
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_inspected_deployed_cleaned_and_booted_live_through_redfish() -> TestResult {
    let bench = Bench::start()?;
    let live_iso = format!("{}{LIVE_ISO_PATH}", bench.images.origin());

    let inspected = bench.provision(Phase::Inspect, "metadata").await?;
    let after_inspection = bench.emulator.snapshot().await?;
    assert_eq!(
        inspected,
        ["boot-deploy-media", "collect-inventory", "power-off"]
    );
    assert_eq!(after_inspection.power, "Off");
    assert_eq!(after_inspection.cd_image, None, "deploy media ejected");

    bench.provision(Phase::Deploy, "metadata").await?;
    let deployed = bench.emulator.snapshot().await?;
    assert_eq!(
        (
            deployed.power.as_str(),
            deployed.boot_target.as_str(),
            deployed.boot_enabled.as_str()
        ),
        ("On", "Hdd", "Continuous"),
        "running from disk: {deployed:?}"
    );
    assert_eq!(deployed.cd_image, None);

    bench.provision(Phase::Deprovision, "metadata").await?;
    let cleaned = bench.emulator.snapshot().await?;
    assert_eq!(
        (cleaned.power.as_str(), cleaned.cd_image.clone()),
        ("Off", None)
    );

    bench.provision(Phase::LiveIso, "metadata").await?;
    let live = bench.emulator.snapshot().await?;
    assert_eq!(
        live,
        Snapshot {
            power: "On".into(),
            boot_target: "Cd".into(),
            boot_enabled: "Continuous".into(),
            cd_image: Some(live_iso),
        }
    );

    assert_eq!(
        bench.agent.ran(),
        ["inventory", "write-image", "sync", "erase-metadata", "sync"],
        "each command ran once"
    );
    Ok(())
}
