//! A scripted in-memory provisioner: simulated machines whose power, registration, image and
//! failures are under the caller's control.
//!
//! It stands in for real hardware in the state-machine and controller tests and in the
//! benchmark, the way upstream's fixture provisioner does. Each machine behaves plausibly by
//! default (credentials are checked, power follows requests, an image is "written" once per
//! provisioning) and any call can be scripted to report progress, a failure or a transient
//! error instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::events::EventSink;
use crate::model::HardwareDetails;
use crate::provisioner::{
    AdoptRequest, DeprovisionRequest, HardwareState, Health, HostData, InspectRequest, Inspection,
    PowerOffRequest, PowerOnRequest, Preparation, PrepareRequest, Progress, ProvisionRequest,
    Provisioner, ProvisionerError, ProvisionerFactory, RegisterRequest, Registration,
};

/// The provisioner calls a script can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// `register`.
    Register,
    /// `inspect`.
    Inspect,
    /// `adopt`.
    Adopt,
    /// `prepare`.
    Prepare,
    /// `provision`.
    Provision,
    /// `deprovision`.
    Deprovision,
    /// `delete`.
    Delete,
    /// `detach`.
    Detach,
    /// `power_on`.
    PowerOn,
    /// `power_off`.
    PowerOff,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// Answer with this progress instead of doing the work.
    Progress(Progress),
    /// Report that the backend does not know the host.
    NeedsRegistration,
    /// Fail the call with a transient error carrying this text.
    Transient(String),
    /// Never answer, like a BMC or plugin that hangs.
    Hang,
}

impl Scripted {
    /// Still working; call again after [`WORKING_DELAY`].
    pub fn working() -> Self {
        Scripted::Progress(Progress::Working {
            requeue_after: WORKING_DELAY,
        })
    }

    /// A failure with the given message.
    pub fn failed(message: &str) -> Self {
        Scripted::Progress(Progress::failed(message))
    }
}

/// One call received, with its request.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `register`.
    Register(RegisterRequest),
    /// `inspect`.
    Inspect(InspectRequest),
    /// `hardware_state`.
    HardwareState,
    /// `adopt`.
    Adopt(AdoptRequest),
    /// `prepare`.
    Prepare(PrepareRequest),
    /// `provision`.
    Provision(ProvisionRequest),
    /// `deprovision`.
    Deprovision(DeprovisionRequest),
    /// `delete`.
    Delete,
    /// `detach` with its force flag.
    Detach(bool),
    /// `power_on`.
    PowerOn(PowerOnRequest),
    /// `power_off`.
    PowerOff(PowerOffRequest),
    /// `has_capacity`.
    HasCapacity,
}

impl Call {
    /// The method this call was made to, if it is one that can be scripted.
    pub fn method(&self) -> Option<Method> {
        match self {
            Call::Register(_) => Some(Method::Register),
            Call::Inspect(_) => Some(Method::Inspect),
            Call::Adopt(_) => Some(Method::Adopt),
            Call::Prepare(_) => Some(Method::Prepare),
            Call::Provision(_) => Some(Method::Provision),
            Call::Deprovision(_) => Some(Method::Deprovision),
            Call::Delete => Some(Method::Delete),
            Call::Detach(_) => Some(Method::Detach),
            Call::PowerOn(_) => Some(Method::PowerOn),
            Call::PowerOff(_) => Some(Method::PowerOff),
            Call::HardwareState | Call::HasCapacity => None,
        }
    }
}

/// The simulated state of one machine.
#[derive(Debug, Clone, Default)]
pub struct FakeMachine {
    /// The password the BMC accepts; `None` accepts any.
    pub password: Option<String>,
    /// Whether the machine is powered on.
    pub powered_on: bool,
    /// Whether the machine is known to the backend.
    pub registered: bool,
    /// The image URL on the disk.
    pub image: Option<String>,
    /// How many times an image was written.
    pub image_writes: u32,
    /// How many reboots were done instead of power-offs.
    pub reboots: u32,
    /// Whether the machine was removed from the backend by `delete`.
    pub deleted: bool,
    /// Whether the machine was removed from the backend by `detach`.
    pub detached: bool,
    /// Whether the last power change failed at the BMC.
    pub power_failure: bool,
    /// The health the BMC reports.
    pub health: Health,
    /// Scripted answers, consumed one per call before the default behaviour applies.
    pub script: BTreeMap<Method, VecDeque<Scripted>>,
    /// Every call received, in order.
    pub calls: Vec<Call>,
}

/// Simulated machines keyed by `namespace/name`, shared by every provisioner it creates.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    machines: Arc<Mutex<BTreeMap<String, FakeMachine>>>,
    no_capacity: Arc<Mutex<bool>>,
    wakes_hosts_given_capacity: Arc<AtomicBool>,
}

impl FakeBackend {
    /// An empty backend with capacity available.
    pub fn new() -> Self {
        FakeBackend::default()
    }

    /// Runs `change` on the machine of a host, creating the machine when it is new.
    pub fn with_machine<T>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut FakeMachine) -> T,
    ) -> T {
        let mut machines = self.lock();
        change(machines.entry(machine_key(namespace, name)).or_default())
    }

    /// Queues scripted answers for one method of one machine.
    pub fn script(
        &self,
        namespace: &str,
        name: &str,
        method: Method,
        answers: impl IntoIterator<Item = Scripted>,
    ) {
        self.with_machine(namespace, name, |machine| {
            machine.script.entry(method).or_default().extend(answers)
        });
    }

    /// A copy of a machine's state.
    pub fn machine(&self, namespace: &str, name: &str) -> FakeMachine {
        self.with_machine(namespace, name, |machine| machine.clone())
    }

    /// Makes every host report no capacity (or capacity again).
    pub fn set_capacity(&self, available: bool) {
        *self
            .no_capacity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = !available;
    }

    /// Makes every provisioner say (or stop saying) that it wakes delayed hosts once there is
    /// capacity for them. The fake itself wakes nobody: this is for the state machine's tests.
    pub fn set_wakes_hosts_given_capacity(&self, wakes: bool) {
        self.wakes_hosts_given_capacity
            .store(wakes, Ordering::Relaxed);
    }

    fn has_capacity(&self) -> bool {
        !*self
            .no_capacity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, FakeMachine>> {
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProvisionerFactory for FakeBackend {
    type Provisioner = FakeProvisioner;

    fn provisioner_for(
        &self,
        host: HostData,
        events: EventSink,
    ) -> Result<FakeProvisioner, ProvisionerError> {
        Ok(FakeProvisioner {
            backend: self.clone(),
            host,
            events,
        })
    }
}

/// A provisioner acting on one machine of a [`FakeBackend`].
#[derive(Debug, Clone)]
pub struct FakeProvisioner {
    backend: FakeBackend,
    host: HostData,
    events: EventSink,
}

impl FakeProvisioner {
    /// A provisioner for one host of `backend`.
    pub fn new(backend: FakeBackend, host: HostData, events: EventSink) -> Self {
        FakeProvisioner {
            backend,
            host,
            events,
        }
    }

    /// Records the call and takes the next scripted answer, if any.
    fn begin(&self, call: Call) -> Option<Scripted> {
        let method = call.method();
        self.machine(|machine| {
            machine.calls.push(call);
            method.and_then(|method| {
                machine
                    .script
                    .get_mut(&method)
                    .and_then(VecDeque::pop_front)
            })
        })
    }

    fn machine<T>(&self, change: impl FnOnce(&mut FakeMachine) -> T) -> T {
        self.backend
            .with_machine(&self.host.namespace, &self.host.name, change)
    }

    /// Runs a call: a scripted answer wins, otherwise `work` does the default behaviour.
    async fn run(
        &self,
        call: Call,
        work: impl FnOnce(&mut FakeMachine) -> Progress,
    ) -> Result<Progress, ProvisionerError> {
        let name = call_name(&call);
        match self.begin(call) {
            Some(Scripted::Hang) => std::future::pending().await,
            Some(scripted) => answer(name, scripted),
            None => Ok(self.machine(work)),
        }
    }

    /// Fails calls that need a registered machine when it is not registered.
    fn require_registered(&self) -> Result<(), ProvisionerError> {
        if self.machine(|machine| machine.registered) {
            Ok(())
        } else {
            Err(ProvisionerError::NeedsRegistration)
        }
    }
}

fn answer(call: &'static str, scripted: Scripted) -> Result<Progress, ProvisionerError> {
    match scripted {
        Scripted::Progress(progress) => Ok(progress),
        Scripted::NeedsRegistration => Err(ProvisionerError::NeedsRegistration),
        Scripted::Transient(text) => Err(ProvisionerError::Call {
            call,
            source: text.into(),
        }),
        Scripted::Hang => Err(ProvisionerError::Rejected {
            call,
            message: "scripted to hang".into(),
        }),
    }
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Register(_) => "register",
        Call::Inspect(_) => "inspect",
        Call::HardwareState => "hardware_state",
        Call::Adopt(_) => "adopt",
        Call::Prepare(_) => "prepare",
        Call::Provision(_) => "provision",
        Call::Deprovision(_) => "deprovision",
        Call::Delete => "delete",
        Call::Detach(_) => "detach",
        Call::PowerOn(_) => "power_on",
        Call::PowerOff(_) => "power_off",
        Call::HasCapacity => "has_capacity",
    }
}

fn machine_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The hardware every fake machine reports when inspected.
pub fn sample_hardware() -> HardwareDetails {
    serde_json::from_value(serde_json::json!({
        "systemVendor": {"manufacturer": "Ingot Lab", "productName": "Simulated Server", "serialNumber": "SIM-0001"},
        "ramMebibytes": 131072,
        "nics": [{"name": "eno1", "mac": "52:54:00:00:00:01", "pxe": true, "speedGbps": 10}],
        "storage": [{"name": "/dev/sda", "sizeBytes": 500107862016_i64, "rotational": false}],
        "cpu": {"arch": "x86_64", "model": "Simulated CPU", "count": 16, "clockMegahertz": 2400.0},
        "hostname": "simulated"
    }))
    .unwrap_or_default()
}

impl Provisioner for FakeProvisioner {
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ProvisionerError> {
        let password = self.host.credentials.password.clone();
        let progress = self
            .run(Call::Register(request.clone()), |machine| {
                if machine
                    .password
                    .as_ref()
                    .is_some_and(|expected| *expected != password)
                {
                    return Progress::failed("BMC rejected the credentials: authentication failed");
                }
                machine.registered = true;
                machine.deleted = false;
                machine.detached = false;
                Progress::Done
            })
            .await?;
        let provisioner_id =
            (progress == Progress::Done).then(|| format!("fake-{}", self.host.name));
        Ok(Registration {
            progress,
            provisioner_id,
        })
    }

    async fn inspect(&self, request: &InspectRequest) -> Result<Inspection, ProvisionerError> {
        self.require_registered()?;
        let progress = self
            .run(Call::Inspect(request.clone()), |machine| {
                machine.powered_on = false;
                Progress::Done
            })
            .await?;
        let details = (progress == Progress::Done).then(sample_hardware);
        Ok(Inspection {
            started: !matches!(progress, Progress::Failed { .. }),
            progress,
            details,
        })
    }

    async fn hardware_state(&self) -> Result<HardwareState, ProvisionerError> {
        let powered_on = self.machine(|machine| {
            machine.calls.push(Call::HardwareState);
            machine.registered.then_some(machine.powered_on)
        });
        Ok(HardwareState { powered_on })
    }

    async fn adopt(&self, request: &AdoptRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        self.run(Call::Adopt(request.clone()), |_| Progress::Done)
            .await
    }

    async fn prepare(&self, request: &PrepareRequest) -> Result<Preparation, ProvisionerError> {
        self.require_registered()?;
        let progress = self
            .run(Call::Prepare(request.clone()), |_| Progress::Done)
            .await?;
        Ok(Preparation {
            progress,
            started: request.unprepared,
        })
    }

    async fn provision(&self, request: &ProvisionRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let url = request.image.as_ref().map(|image| image.url.clone());
        let progress = self
            .run(Call::Provision(request.clone()), |machine| {
                if machine.image != url {
                    machine.image = url;
                    machine.image_writes += 1;
                }
                machine.powered_on = true;
                Progress::Done
            })
            .await?;
        if progress == Progress::Done {
            self.events
                .normal("ProvisioningComplete", "Image provisioning completed");
        }
        Ok(progress)
    }

    async fn deprovision(
        &self,
        request: &DeprovisionRequest,
    ) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        self.run(Call::Deprovision(request.clone()), |machine| {
            machine.image = None;
            machine.powered_on = false;
            Progress::Done
        })
        .await
    }

    async fn delete(&self) -> Result<Progress, ProvisionerError> {
        self.run(Call::Delete, |machine| {
            machine.registered = false;
            machine.deleted = true;
            Progress::Done
        })
        .await
    }

    async fn detach(&self, force: bool) -> Result<Progress, ProvisionerError> {
        self.run(Call::Detach(force), |machine| {
            machine.registered = false;
            machine.detached = true;
            Progress::Done
        })
        .await
    }

    async fn power_on(&self, request: &PowerOnRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let progress = self
            .run(Call::PowerOn(*request), |machine| {
                machine.powered_on = true;
                Progress::Done
            })
            .await?;
        if progress == Progress::Done {
            self.events.normal("PowerOn", "Host powered on");
        }
        Ok(progress)
    }

    async fn power_off(&self, request: &PowerOffRequest) -> Result<Progress, ProvisionerError> {
        self.require_registered()?;
        let reboot = request.reboot_instead;
        let progress = self
            .run(Call::PowerOff(*request), |machine| {
                if reboot {
                    machine.reboots += 1;
                } else {
                    machine.powered_on = false;
                }
                Progress::Done
            })
            .await?;
        if progress == Progress::Done {
            self.events.normal("PowerOff", "Host powered off");
        }
        Ok(progress)
    }

    async fn has_capacity(&self) -> Result<bool, ProvisionerError> {
        self.machine(|machine| machine.calls.push(Call::HasCapacity));
        Ok(self.backend.has_capacity())
    }

    fn wakes_hosts_given_capacity(&self) -> bool {
        self.backend
            .wakes_hosts_given_capacity
            .load(Ordering::Relaxed)
    }

    async fn has_power_failure(&self) -> bool {
        self.machine(|machine| machine.power_failure)
    }

    async fn health(&self) -> Health {
        self.machine(|machine| machine.health)
    }
}

/// How long the fake asks to wait when a call is scripted as still working.
pub const WORKING_DELAY: Duration = Duration::from_secs(1);
