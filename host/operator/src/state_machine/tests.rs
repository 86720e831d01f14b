//! Table-driven tests of the state machine: every provisioning state against each kind of
//! input (no change, spec change, annotation, BMC result, deletion), plus focused tests of the
//! rules that cut across states.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::annotations::{DETACHED, INSPECT, REBOOT, RebootMode};
use crate::backoff::FixedJitter;
use crate::conditions::{self, HardwareReport};
use crate::events::HostEvent;
use crate::fake::{Call, FakeBackend, FakeProvisioner, Method, Scripted, sample_hardware};
use crate::model::{
    AutomatedCleaningMode, BareMetalHostSpec, BmcDetails, Image, InspectionMode, OperationalStatus,
    RootDeviceHints,
};
use crate::provisioner::HostData;

const NAMESPACE: &str = "test";
const NAME: &str = "host-0";
const IMAGE: &str = "http://images.example/os.qcow2";

/// The Secret reference the tests treat as the host's current credentials.
fn credentials() -> CredentialsStatus {
    CredentialsStatus {
        credentials: Some(SecretReference {
            name: Some("bmc-secret".into()),
            namespace: Some(NAMESPACE.into()),
        }),
        credentials_version: Some("1".into()),
    }
}

fn image(url: &str) -> Image {
    Image {
        url: url.into(),
        checksum: Some("abc123".into()),
        ..Default::default()
    }
}

/// Builds hosts fluently, starting from a registered host in a given state.
#[derive(Clone)]
struct HostBuilder {
    host: BareMetalHost,
}

impl HostBuilder {
    /// A host in `state` with everything a host normally has by then.
    fn in_state(state: ProvisioningState) -> Self {
        let mut host = BareMetalHost::new(
            NAME,
            BareMetalHostSpec {
                bmc: Some(BmcDetails {
                    address: "redfish+http://127.0.0.1:8000/redfish/v1/Systems/1".into(),
                    credentials_name: "bmc-secret".into(),
                    disable_certificate_verification: None,
                }),
                online: true,
                ..Default::default()
            },
        );
        host.metadata.namespace = Some(NAMESPACE.into());
        host.metadata.generation = Some(1);
        let status = host.status.get_or_insert_default();
        status.provisioning.state = state;
        status.operational_status = OperationalStatus::Ok;
        if state != ProvisioningState::None {
            status.last_updated = Some(Time(Timestamp::UNIX_EPOCH));
        }
        if !matches!(
            state,
            ProvisioningState::None | ProvisioningState::Unmanaged
        ) {
            status.tried_credentials = Some(credentials());
            status.good_credentials = Some(credentials());
            status.hardware_profile = Some("unknown".into());
            status.provisioning.id = format!("fake-{NAME}");
        }
        let builder = HostBuilder { host };
        match state {
            ProvisioningState::Preparing | ProvisioningState::MatchProfile => builder.inspected(),
            ProvisioningState::Available | ProvisioningState::Ready => {
                builder.inspected().prepared().powered(true)
            }
            ProvisioningState::Provisioning => {
                builder.inspected().prepared().image(IMAGE).attempted(IMAGE)
            }
            ProvisioningState::Provisioned => builder
                .inspected()
                .prepared()
                .image(IMAGE)
                .applied(IMAGE)
                .powered(true),
            ProvisioningState::ExternallyProvisioned => {
                builder.externally_provisioned(true).powered(true)
            }
            ProvisioningState::Deprovisioning => builder.inspected().prepared().applied(IMAGE),
            ProvisioningState::PoweringOffBeforeDelete => {
                builder.inspected().prepared().powered(true).deleting()
            }
            ProvisioningState::Deleting => builder.deleting(),
            ProvisioningState::None
            | ProvisioningState::Unmanaged
            | ProvisioningState::Registering
            | ProvisioningState::Inspecting => builder,
        }
    }

    fn status(&mut self) -> &mut BareMetalHostStatus {
        self.host.status.get_or_insert_default()
    }

    fn inspected(mut self) -> Self {
        self.status().hardware = Some(sample_hardware());
        self
    }

    fn prepared(mut self) -> Self {
        self.status().provisioning.root_device_hints = Some(RootDeviceHints {
            device_name: Some("/dev/sda".into()),
            ..Default::default()
        });
        self
    }

    fn powered(mut self, on: bool) -> Self {
        self.status().powered_on = on;
        self
    }

    fn image(mut self, url: &str) -> Self {
        self.host.spec.image = Some(image(url));
        self
    }

    fn no_image(mut self) -> Self {
        self.host.spec.image = None;
        self
    }

    fn checksum(mut self, checksum: &str) -> Self {
        if let Some(image) = self.host.spec.image.as_mut() {
            image.checksum = Some(checksum.into());
        }
        self
    }

    fn attempted(mut self, url: &str) -> Self {
        self.status().last_attempted_image = Some(image(url));
        self
    }

    fn applied(mut self, url: &str) -> Self {
        self.status().provisioning.image = Some(image(url));
        self
    }

    fn online(mut self, online: bool) -> Self {
        self.host.spec.online = online;
        self
    }

    fn no_bmc(mut self) -> Self {
        self.host.spec.bmc = None;
        self
    }

    fn externally_provisioned(mut self, on: bool) -> Self {
        self.host.spec.externally_provisioned = Some(on);
        self
    }

    fn inspection_mode(mut self, mode: InspectionMode) -> Self {
        self.host.spec.inspection_mode = Some(mode);
        self
    }

    fn root_disk(mut self, device: &str) -> Self {
        self.host.spec.root_device_hints = Some(RootDeviceHints {
            device_name: Some(device.into()),
            ..Default::default()
        });
        self
    }

    fn cleaning(mut self, mode: AutomatedCleaningMode) -> Self {
        self.host.spec.automated_cleaning_mode = Some(mode);
        self
    }

    fn disable_power_off(mut self) -> Self {
        self.host.spec.disable_power_off = Some(true);
        self
    }

    fn annotation(mut self, key: &str, value: &str) -> Self {
        self.host
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    fn deleting(mut self) -> Self {
        self.host.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        self
    }

    fn error(mut self, error_type: ErrorType, count: i64) -> Self {
        let status = self.status();
        status.operational_status = OperationalStatus::Error;
        status.error_type = Some(error_type);
        status.error_message = "earlier failure".into();
        status.error_count = count;
        self
    }

    fn operational(mut self, operational: OperationalStatus) -> Self {
        self.status().operational_status = operational;
        self
    }

    fn fail_count(mut self, count: i64) -> Self {
        self.status().provisioning_fail_count = count;
        self
    }

    fn tried_version(mut self, version: &str) -> Self {
        if let Some(tried) = self.status().tried_credentials.as_mut() {
            tried.credentials_version = Some(version.into());
        }
        self
    }

    fn build(self) -> BareMetalHost {
        self.host
    }
}

/// Runs steps against a fake backend whose machine mirrors the host's recorded state.
struct Harness {
    backend: FakeBackend,
    settings: Settings,
    credentials: Option<CredentialsStatus>,
}

/// The result of one step, with what the fake saw.
struct StepResult {
    outcome: Outcome,
    effects: Effects,
    events: Vec<HostEvent>,
    calls: Vec<Call>,
}

impl StepResult {
    fn called(&self, method: Method) -> bool {
        self.calls.iter().any(|call| call.method() == Some(method))
    }

    fn event_reasons(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|event| event.reason.as_str())
            .collect()
    }
}

impl Harness {
    fn new() -> Self {
        Harness {
            backend: FakeBackend::new(),
            settings: Settings {
                max_provisioning_retries: 3,
                jitter: Arc::new(FixedJitter(0.0)),
            },
            credentials: Some(credentials()),
        }
    }

    /// Makes the fake machine look like the host says it is.
    fn mirror(&self, host: &BareMetalHost) {
        let status = host.status.clone().unwrap_or_default();
        let registered = !matches!(
            status.provisioning.state,
            ProvisioningState::None | ProvisioningState::Unmanaged
        );
        self.backend.with_machine(NAMESPACE, NAME, |machine| {
            machine.registered = registered;
            machine.powered_on = status.powered_on;
            machine.image = status
                .provisioning
                .image
                .as_ref()
                .map(|image| image.url.clone());
        });
    }

    fn script(&self, method: Method, answers: impl IntoIterator<Item = Scripted>) {
        self.backend.script(NAMESPACE, NAME, method, answers);
    }

    async fn step(&self, host: &mut BareMetalHost) -> StepResult {
        let events = EventSink::default();
        let provisioner = FakeProvisioner::new(
            self.backend.clone(),
            HostData {
                namespace: NAMESPACE.into(),
                name: NAME.into(),
                ..Default::default()
            },
            events.clone(),
        );
        let calls_before = self.backend.machine(NAMESPACE, NAME).calls.len();
        let input = ReconcileInput {
            credentials: self.credentials.clone(),
            host_config: HostConfig::default(),
            now: Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH),
        };
        let reconciled =
            HostStateMachine::new(host, &provisioner, &self.settings, input, events.clone())
                .reconcile()
                .await;
        let calls = self
            .backend
            .machine(NAMESPACE, NAME)
            .calls
            .split_off(calls_before);
        StepResult {
            outcome: reconciled.outcome,
            effects: reconciled.effects,
            events: events.drain(),
            calls,
        }
    }

    /// Runs steps until the host reaches `state` or `limit` steps were taken.
    async fn run_until(
        &self,
        host: &mut BareMetalHost,
        state: ProvisioningState,
        limit: usize,
    ) -> Vec<StepResult> {
        let mut steps = Vec::new();
        for _ in 0..limit {
            let step = self.step(host).await;
            apply_effects(host, &step.effects);
            steps.push(step);
            if host.state() == state {
                break;
            }
        }
        steps
    }
}

/// Does what the controller would do with the effects: remove annotations.
fn apply_effects(host: &mut BareMetalHost, effects: &Effects) {
    if let Some(annotations) = host.metadata.annotations.as_mut() {
        annotations.retain(|key, _| !effects.remove_annotations.contains(key));
    }
}

fn status(host: &BareMetalHost) -> &BareMetalHostStatus {
    host.status
        .as_ref()
        .expect("the state machine always leaves a status")
}

/// One row of the state table.
struct Case {
    name: &'static str,
    host: HostBuilder,
    script: Vec<(Method, Scripted)>,
    capacity: bool,
    credentials: bool,
    expect_state: ProvisioningState,
    expect_outcome: &'static str,
    check: fn(&BareMetalHost, &StepResult),
}

impl Case {
    fn new(
        name: &'static str,
        host: HostBuilder,
        expect_state: ProvisioningState,
        expect_outcome: &'static str,
    ) -> Self {
        Case {
            name,
            host,
            script: Vec::new(),
            capacity: true,
            credentials: true,
            expect_state,
            expect_outcome,
            check: |_, _| {},
        }
    }

    fn scripted(mut self, method: Method, answer: Scripted) -> Self {
        self.script.push((method, answer));
        self
    }

    fn no_capacity(mut self) -> Self {
        self.capacity = false;
        self
    }

    fn no_credentials(mut self) -> Self {
        self.credentials = false;
        self
    }

    fn check(mut self, check: fn(&BareMetalHost, &StepResult)) -> Self {
        self.check = check;
        self
    }

    async fn run(self) {
        let harness = Harness::new();
        let mut host = self.host.build();
        harness.mirror(&host);
        harness.backend.set_capacity(self.capacity);
        if !self.credentials {
            harness
                .backend
                .with_machine(NAMESPACE, NAME, |machine| machine.registered = false);
        }
        for (method, answer) in self.script {
            harness.script(method, [answer]);
        }
        let harness = Harness {
            credentials: self.credentials.then(credentials),
            ..harness
        };

        let result = harness.step(&mut host).await;

        assert_eq!(host.state(), self.expect_state, "{}: state", self.name);
        assert_eq!(
            result.outcome.label(),
            self.expect_outcome,
            "{}: outcome {:?}",
            self.name,
            result.outcome
        );
        (self.check)(&host, &result);
    }
}

use ProvisioningState as S;

fn state_table() -> Vec<Case> {
    vec![
        // none
        Case::new("none: with BMC details starts registering", HostBuilder::in_state(S::None), S::Registering, "complete"),
        Case::new("none: without BMC details is unmanaged", HostBuilder::in_state(S::None).no_bmc(), S::Unmanaged, "complete")
            .check(|host, step| {
                assert_eq!(status(host).operational_status, OperationalStatus::Discovered);
                assert_eq!(step.event_reasons(), vec!["Discovered"]);
            }),
        Case::new(
            "none: detached annotation is not applied to a new host",
            HostBuilder::in_state(S::None).annotation(DETACHED, ""),
            S::Registering,
            "complete",
        )
        .check(|_, step| assert!(!step.called(Method::Detach))),
        Case::new(
            "none: a failing BMC is not contacted yet",
            HostBuilder::in_state(S::None),
            S::Registering,
            "complete",
        )
        .scripted(Method::Register, Scripted::failed("unreachable"))
        .check(|_, step| assert!(!step.called(Method::Register))),
        Case::new("none: deletion goes straight to deleting", HostBuilder::in_state(S::None).deleting(), S::Deleting, "complete"),
        // unmanaged
        Case::new("unmanaged: waits for BMC details", HostBuilder::in_state(S::Unmanaged).no_bmc(), S::Unmanaged, "continue")
            .check(|_, step| assert_eq!(step.outcome.requeue_after(), Some(SLOW_POLL))),
        Case::new("unmanaged: BMC details added start registering", HostBuilder::in_state(S::Unmanaged), S::Registering, "complete"),
        Case::new(
            "unmanaged: inspect annotation does nothing",
            HostBuilder::in_state(S::Unmanaged).no_bmc().annotation(INSPECT, ""),
            S::Unmanaged,
            "continue",
        ),
        Case::new(
            "unmanaged: no BMC is contacted",
            HostBuilder::in_state(S::Unmanaged).no_bmc(),
            S::Unmanaged,
            "continue",
        )
        .scripted(Method::Register, Scripted::failed("unreachable"))
        .check(|_, step| assert!(step.calls.is_empty())),
        Case::new("unmanaged: deletion goes straight to deleting", HostBuilder::in_state(S::Unmanaged).deleting(), S::Deleting, "complete"),
        // registering
        Case::new("registering: registered host starts inspecting", HostBuilder::in_state(S::Registering), S::Inspecting, "complete")
            .check(|host, _| {
                let history = status(host).operation_history.clone().unwrap_or_default();
                assert!(history.register.and_then(|m| m.end).is_some());
                assert!(history.inspect.and_then(|m| m.start).is_some());
                assert_eq!(status(host).provisioning.boot_mode, Some(crate::model::BootMode::Uefi));
            }),
        Case::new(
            "registering: externally provisioned skips inspection",
            HostBuilder::in_state(S::Registering).externally_provisioned(true),
            S::ExternallyProvisioned,
            "complete",
        ),
        Case::new(
            "registering: disabled inspection goes to preparing",
            HostBuilder::in_state(S::Registering).inspection_mode(InspectionMode::Disabled),
            S::Preparing,
            "complete",
        ),
        Case::new(
            "registering: inspect=disabled annotation goes to preparing",
            HostBuilder::in_state(S::Registering).annotation(INSPECT, "disabled"),
            S::Preparing,
            "complete",
        ),
        Case::new("registering: BMC rejects registration", HostBuilder::in_state(S::Registering), S::Registering, "failed")
            .scripted(Method::Register, Scripted::failed("authentication failed"))
            .check(|host, step| {
                assert_eq!(status(host).error_type, Some(ErrorType::Registration));
                assert_eq!(status(host).error_count, 1);
                assert_eq!(step.event_reasons(), vec!["RegistrationError"]);
            }),
        Case::new("registering: BMC check still running", HostBuilder::in_state(S::Registering), S::Registering, "continue")
            .scripted(Method::Register, Scripted::working()),
        Case::new(
            "registering: changed credentials are tried, accepted and the host moves on in the same step",
            HostBuilder::in_state(S::Registering).tried_version("0"),
            S::Inspecting,
            "complete",
        )
        .check(|host, step| {
            assert_eq!(status(host).tried_credentials, Some(credentials()));
            assert!(matches!(&step.calls[0], Call::Register(request) if request.credentials_changed));
        }),
        Case::new("registering: deletion goes straight to deleting", HostBuilder::in_state(S::Registering).deleting(), S::Deleting, "complete"),
        Case::new("registering: no capacity delays inspection", HostBuilder::in_state(S::Registering), S::Registering, "delayed")
            .no_capacity()
            .check(|host, _| assert_eq!(status(host).operational_status, OperationalStatus::Delayed)),
        Case::new("registering: missing credentials wait", HostBuilder::in_state(S::Registering), S::Inspecting, "complete")
            .no_credentials()
            .check(|_, step| assert!(!step.called(Method::Register))),
        // match profile
        Case::new("match profile: moves to preparing", HostBuilder::in_state(S::MatchProfile), S::Preparing, "complete"),
        Case::new(
            "match profile: deletion powers off first",
            HostBuilder::in_state(S::MatchProfile).deleting(),
            S::PoweringOffBeforeDelete,
            "complete",
        ),
        // inspecting
        Case::new("inspecting: details stored, preparing next", HostBuilder::in_state(S::Inspecting), S::Preparing, "complete")
            .check(|host, step| {
                assert_eq!(status(host).hardware, Some(sample_hardware()));
                assert_eq!(step.effects.hardware_data, Some(sample_hardware()));
            }),
        Case::new(
            "inspecting: disabled inspection is skipped",
            HostBuilder::in_state(S::Inspecting).inspection_mode(InspectionMode::Disabled),
            S::Preparing,
            "complete",
        )
        .check(|_, step| {
            assert!(!step.called(Method::Inspect));
            assert_eq!(step.event_reasons(), vec!["InspectionSkipped"]);
        }),
        Case::new(
            "inspecting: inspect annotation is removed once started",
            HostBuilder::in_state(S::Inspecting).annotation(INSPECT, "").annotation(REBOOT, ""),
            S::Preparing,
            "complete",
        )
        .check(|_, step| {
            assert!(step.effects.remove_annotations.contains(INSPECT));
            assert!(step.effects.remove_annotations.contains(REBOOT));
            assert!(matches!(&step.calls[..], [.., Call::Inspect(request)] if request.refresh));
        }),
        Case::new("inspecting: inspection fails", HostBuilder::in_state(S::Inspecting), S::Inspecting, "failed")
            .scripted(Method::Inspect, Scripted::failed("agent did not boot"))
            .check(|host, _| assert_eq!(status(host).error_type, Some(ErrorType::Inspection))),
        Case::new(
            "inspecting: a retry restarts the inspection",
            HostBuilder::in_state(S::Inspecting).error(ErrorType::Inspection, 1),
            S::Preparing,
            "complete",
        )
        .check(|host, step| {
            assert!(step.calls.iter().any(|call| matches!(call, Call::Inspect(request) if request.restart_on_failure)));
            assert_eq!(status(host).error_count, 0);
            assert_eq!(status(host).error_type, None);
        }),
        Case::new("inspecting: still running", HostBuilder::in_state(S::Inspecting), S::Inspecting, "continue")
            .scripted(Method::Inspect, Scripted::working()),
        Case::new(
            "inspecting: deletion powers off first",
            HostBuilder::in_state(S::Inspecting).deleting(),
            S::PoweringOffBeforeDelete,
            "complete",
        ),
        Case::new("inspecting: no capacity delays", HostBuilder::in_state(S::Inspecting), S::Inspecting, "delayed").no_capacity(),
        // preparing
        Case::new("preparing: settings applied, host available", HostBuilder::in_state(S::Preparing), S::Available, "complete")
            .check(|host, _| {
                let hints = status(host).provisioning.root_device_hints.clone();
                assert_eq!(hints.and_then(|h| h.device_name), Some("/dev/sda".into()));
            }),
        Case::new(
            "preparing: changed root disk is applied",
            HostBuilder::in_state(S::Preparing).root_disk("/dev/nvme0n1"),
            S::Available,
            "complete",
        )
        .check(|host, step| {
            assert!(step.calls.iter().any(|call| matches!(call, Call::Prepare(request) if request.unprepared)));
            let hints = status(host).provisioning.root_device_hints.clone();
            assert_eq!(hints.and_then(|h| h.device_name), Some("/dev/nvme0n1".into()));
        }),
        Case::new(
            "preparing: failure forgets the applied settings",
            HostBuilder::in_state(S::Preparing).root_disk("/dev/nvme0n1"),
            S::Preparing,
            "failed",
        )
        .scripted(Method::Prepare, Scripted::failed("RAID controller busy"))
        .check(|host, _| {
            assert_eq!(status(host).error_type, Some(ErrorType::Preparation));
            assert_eq!(status(host).provisioning.root_device_hints, None);
        }),
        Case::new(
            "preparing: deletion powers off first",
            HostBuilder::in_state(S::Preparing).deleting(),
            S::PoweringOffBeforeDelete,
            "complete",
        ),
        // available
        Case::new("available: idle host polls power", HostBuilder::in_state(S::Available), S::Available, "continue")
            .check(|_, step| assert_eq!(step.outcome.requeue_after(), Some(POWER_POLL))),
        Case::new("available: an image starts provisioning", HostBuilder::in_state(S::Available).image(IMAGE), S::Provisioning, "complete")
            .check(|host, _| {
                assert_eq!(status(host).last_attempted_image.as_ref().map(|i| i.url.as_str()), Some(IMAGE));
                let history = status(host).operation_history.clone().unwrap_or_default();
                assert!(history.provision.and_then(|m| m.start).is_some());
            }),
        Case::new(
            "available: online false blocks provisioning and powers off",
            HostBuilder::in_state(S::Available).image(IMAGE).online(false),
            S::Available,
            "update",
        )
        .check(|host, step| {
            assert!(!status(host).powered_on);
            assert!(step.calls.iter().any(|call| matches!(call, Call::PowerOff(request) if request.mode == RebootMode::Soft)));
        }),
        Case::new(
            "available: externally provisioned flag set",
            HostBuilder::in_state(S::Available).externally_provisioned(true),
            S::ExternallyProvisioned,
            "complete",
        ),
        Case::new(
            "available: changed root disk prepares again",
            HostBuilder::in_state(S::Available).root_disk("/dev/sdb"),
            S::Preparing,
            "complete",
        ),
        Case::new("available: inspect annotation re-inspects", HostBuilder::in_state(S::Available).annotation(INSPECT, ""), S::Inspecting, "complete"),
        Case::new(
            "available: a plain reboot annotation is not honoured",
            HostBuilder::in_state(S::Available).annotation(REBOOT, ""),
            S::Available,
            "continue",
        ),
        Case::new(
            "available: a forced reboot annotation powers off",
            HostBuilder::in_state(S::Available).annotation(REBOOT, r#"{"force":true}"#),
            S::Available,
            "update",
        )
        .check(|host, _| assert!(!status(host).powered_on)),
        Case::new("available: detached annotation detaches", HostBuilder::in_state(S::Available).annotation(DETACHED, ""), S::Available, "update")
            .check(|host, step| {
                assert_eq!(status(host).operational_status, OperationalStatus::Detached);
                assert_eq!(step.outcome.requeue_after(), Some(SLOW_POLL));
            }),
        Case::new("available: power-on failure", HostBuilder::in_state(S::Available).powered(false), S::Available, "failed")
            .scripted(Method::PowerOn, Scripted::failed("BMC returned 500"))
            .check(|host, step| {
                assert_eq!(status(host).error_type, Some(ErrorType::PowerManagement));
                assert_eq!(step.event_reasons(), vec!["PowerManagementError"]);
            }),
        Case::new(
            "available: retry limit stops provisioning",
            HostBuilder::in_state(S::Available).image(IMAGE).attempted(IMAGE).fail_count(3),
            S::Available,
            "failed",
        )
        .check(|host, _| {
            assert_eq!(status(host).error_type, Some(ErrorType::Provisioning));
            assert!(status(host).error_message.contains("retry limit (3)"), "{}", status(host).error_message);
        }),
        Case::new(
            "available: a fixed checksum after the retry limit provisions again",
            HostBuilder::in_state(S::Available).image(IMAGE).checksum("fixed").attempted(IMAGE).fail_count(3),
            S::Provisioning,
            "complete",
        )
        .check(|host, _| assert_eq!(status(host).provisioning_fail_count, 0)),
        Case::new(
            "available: deletion powers off first",
            HostBuilder::in_state(S::Available).deleting(),
            S::PoweringOffBeforeDelete,
            "complete",
        ),
        Case::new("available: no capacity delays provisioning", HostBuilder::in_state(S::Available).image(IMAGE), S::Available, "delayed")
            .no_capacity(),
        Case::new("ready: read as available and rewritten", HostBuilder::in_state(S::Ready), S::Available, "update")
            .check(|host, _| assert_eq!(status(host).provisioning.state, S::Available)),
        // provisioning
        Case::new("provisioning: image written, provisioned", HostBuilder::in_state(S::Provisioning), S::Provisioned, "complete")
            .check(|host, step| {
                assert_eq!(status(host).provisioning.image.as_ref().map(|i| i.url.as_str()), Some(IMAGE));
                assert_eq!(step.event_reasons(), vec!["ProvisioningComplete"]);
            }),
        Case::new("provisioning: image removed cancels", HostBuilder::in_state(S::Provisioning).no_image(), S::Deprovisioning, "complete"),
        Case::new(
            "provisioning: image URL changed cancels",
            HostBuilder::in_state(S::Provisioning).image("http://images.example/other.qcow2"),
            S::Deprovisioning,
            "complete",
        ),
        Case::new(
            "provisioning: a checksum-only edit does not cancel",
            HostBuilder::in_state(S::Provisioning).checksum("def456"),
            S::Provisioned,
            "complete",
        ),
        Case::new(
            "provisioning: a forced reboot restarts the deploy",
            HostBuilder::in_state(S::Provisioning).annotation(REBOOT, r#"{"force":true}"#),
            S::Provisioned,
            "complete",
        )
        .check(|_, step| {
            assert!(step.effects.remove_annotations.contains(REBOOT));
            assert!(step.calls.iter().any(|call| matches!(call, Call::Provision(request) if request.force_reboot)));
        }),
        Case::new("provisioning: write fails", HostBuilder::in_state(S::Provisioning), S::Provisioning, "failed")
            .scripted(Method::Provision, Scripted::failed("checksum mismatch"))
            .check(|host, _| assert_eq!(status(host).error_type, Some(ErrorType::Provisioning))),
        Case::new(
            "provisioning: after a failure the host is deprovisioned",
            HostBuilder::in_state(S::Provisioning).error(ErrorType::Provisioning, 1),
            S::Deprovisioning,
            "complete",
        )
        .check(|host, _| {
            assert_eq!(status(host).provisioning_fail_count, 1);
            assert_eq!(status(host).error_type, Some(ErrorType::Provisioning));
        }),
        Case::new("provisioning: deletion deprovisions", HostBuilder::in_state(S::Provisioning).deleting(), S::Deprovisioning, "complete"),
        Case::new("provisioning: no capacity delays", HostBuilder::in_state(S::Provisioning), S::Provisioning, "delayed").no_capacity(),
        // provisioned
        Case::new("provisioned: steady host is adopted and polled", HostBuilder::in_state(S::Provisioned), S::Provisioned, "continue")
            .check(|_, step| assert!(step.called(Method::Adopt))),
        Case::new(
            "provisioned: image URL change deprovisions",
            HostBuilder::in_state(S::Provisioned).image("http://images.example/other.qcow2"),
            S::Deprovisioning,
            "complete",
        ),
        Case::new(
            "provisioned: a checksum-only edit keeps the host",
            HostBuilder::in_state(S::Provisioned).checksum("def456"),
            S::Provisioned,
            "continue",
        ),
        Case::new("provisioned: online false powers off softly", HostBuilder::in_state(S::Provisioned).online(false), S::Provisioned, "update")
            .check(|host, step| {
                assert!(!status(host).powered_on);
                assert!(step.calls.iter().any(|call| matches!(call, Call::PowerOff(request) if request.mode == RebootMode::Soft)));
            }),
        Case::new(
            "provisioned: a suffixed hard reboot powers off hard and keeps the annotation",
            HostBuilder::in_state(S::Provisioned).annotation("reboot.metal3.io/upgrade", r#"{"mode":"hard"}"#),
            S::Provisioned,
            "update",
        )
        .check(|_, step| {
            assert!(step.calls.iter().any(|call| matches!(call, Call::PowerOff(request) if request.mode == RebootMode::Hard)));
            assert!(step.effects.remove_annotations.is_empty());
        }),
        Case::new(
            "provisioned: a served plain reboot annotation is removed",
            HostBuilder::in_state(S::Provisioned).powered(false).annotation(REBOOT, ""),
            S::Provisioned,
            "continue",
        )
        .check(|_, step| assert!(step.effects.remove_annotations.contains(REBOOT))),
        Case::new("provisioned: detached annotation detaches", HostBuilder::in_state(S::Provisioned).annotation(DETACHED, ""), S::Provisioned, "update")
            .check(|host, step| {
                assert_eq!(status(host).operational_status, OperationalStatus::Detached);
                assert!(matches!(&step.calls[..], [Call::Detach(false)]));
            }),
        Case::new("provisioned: adoption fails", HostBuilder::in_state(S::Provisioned), S::Provisioned, "failed")
            .scripted(Method::Adopt, Scripted::failed("node lost"))
            .check(|host, _| assert_eq!(status(host).error_type, Some(ErrorType::ProvisionedRegistration))),
        Case::new("provisioned: soft power-off fails", HostBuilder::in_state(S::Provisioned).online(false), S::Provisioned, "failed")
            .scripted(Method::PowerOff, Scripted::failed("OS ignored ACPI"))
            .check(|host, _| {
                assert!(status(host).error_message.starts_with("Continuing with hard poweroff"));
            }),
        Case::new(
            "provisioned: power-off retry is hard and forced",
            HostBuilder::in_state(S::Provisioned).online(false).error(ErrorType::PowerManagement, 1),
            S::Provisioned,
            "update",
        )
        .check(|host, step| {
            assert!(step.calls.iter().any(
                |call| matches!(call, Call::PowerOff(request) if request.mode == RebootMode::Hard && request.force)
            ));
            assert_eq!(status(host).error_count, 0);
            assert_eq!(status(host).error_type, None);
        }),
        Case::new("provisioned: deletion deprovisions", HostBuilder::in_state(S::Provisioned).deleting(), S::Deprovisioning, "complete"),
        Case::new(
            "provisioned: deletion of a detached host skips deprovisioning",
            HostBuilder::in_state(S::Provisioned).deleting().annotation(DETACHED, ""),
            S::Deleting,
            "complete",
        ),
        Case::new(
            "provisioned: deletion held by deleteAction delay",
            HostBuilder::in_state(S::Provisioned)
                .deleting()
                .annotation(DETACHED, r#"{"deleteAction":"delay"}"#)
                .operational(OperationalStatus::Detached),
            S::Provisioned,
            "continue",
        ),
        Case::new(
            "provisioned: deletion held while a detached host is re-attached",
            HostBuilder::in_state(S::Provisioned).deleting().operational(OperationalStatus::Detached),
            S::Provisioned,
            "update",
        )
        .check(|host, _| assert_eq!(status(host).operational_status, OperationalStatus::Ok)),
        // externally provisioned
        Case::new(
            "externally provisioned: adopted and polled",
            HostBuilder::in_state(S::ExternallyProvisioned),
            S::ExternallyProvisioned,
            "continue",
        ),
        Case::new(
            "externally provisioned: flag cleared with an image becomes provisioned",
            HostBuilder::in_state(S::ExternallyProvisioned).externally_provisioned(false).image(IMAGE),
            S::Provisioned,
            "complete",
        )
        .check(|host, _| assert_eq!(status(host).provisioning.image.as_ref().map(|i| i.url.as_str()), Some(IMAGE))),
        Case::new(
            "externally provisioned: a reboot annotation powers off",
            HostBuilder::in_state(S::ExternallyProvisioned).annotation(REBOOT, ""),
            S::ExternallyProvisioned,
            "update",
        ),
        Case::new(
            "externally provisioned: adoption fails",
            HostBuilder::in_state(S::ExternallyProvisioned),
            S::ExternallyProvisioned,
            "failed",
        )
        .scripted(Method::Adopt, Scripted::failed("node lost")),
        Case::new(
            "externally provisioned: deletion powers off, never deprovisions",
            HostBuilder::in_state(S::ExternallyProvisioned).deleting(),
            S::PoweringOffBeforeDelete,
            "complete",
        ),
        // deprovisioning
        Case::new("deprovisioning: cleaned, host available", HostBuilder::in_state(S::Deprovisioning), S::Available, "complete")
            .check(|host, step| {
                assert_eq!(status(host).provisioning.image, None);
                assert!(step.calls.iter().any(|call| matches!(
                    call,
                    Call::Deprovision(request) if request.automated_cleaning_mode == AutomatedCleaningMode::Metadata
                )));
            }),
        Case::new(
            "deprovisioning: cleaning mode disabled is passed on",
            HostBuilder::in_state(S::Deprovisioning).cleaning(AutomatedCleaningMode::Disabled),
            S::Available,
            "complete",
        )
        .check(|_, step| {
            assert!(step.calls.iter().any(|call| matches!(
                call,
                Call::Deprovision(request) if request.automated_cleaning_mode == AutomatedCleaningMode::Disabled
            )));
        }),
        Case::new("deprovisioning: cleaning fails and is retried", HostBuilder::in_state(S::Deprovisioning), S::Deprovisioning, "failed")
            .scripted(Method::Deprovision, Scripted::failed("erase failed")),
        Case::new(
            "deprovisioning: deleting gives up after repeated failures",
            HostBuilder::in_state(S::Deprovisioning).deleting().error(ErrorType::Provisioning, 3),
            S::PoweringOffBeforeDelete,
            "complete",
        )
        .scripted(Method::Deprovision, Scripted::failed("erase failed")),
        Case::new(
            "deprovisioning: deleting with a lasting registration error skips ahead",
            HostBuilder::in_state(S::Deprovisioning).deleting().error(ErrorType::Registration, 4),
            S::Deleting,
            "complete",
        ),
        Case::new(
            "deprovisioning: deleting an unregistered host without credentials",
            HostBuilder::in_state(S::Deprovisioning).deleting(),
            S::Deleting,
            "complete",
        )
        .no_credentials(),
        Case::new("deprovisioning: deletion finishes cleaning then powers off", HostBuilder::in_state(S::Deprovisioning).deleting(), S::PoweringOffBeforeDelete, "complete"),
        // powering off before delete
        Case::new(
            "powering off: powered off, deleting next",
            HostBuilder::in_state(S::PoweringOffBeforeDelete),
            S::Deleting,
            "complete",
        )
        .check(|_, step| {
            assert!(step.calls.iter().any(|call| matches!(call, Call::PowerOff(request) if request.mode == RebootMode::Hard)));
        }),
        Case::new(
            "powering off: disabled power-off skips it",
            HostBuilder::in_state(S::PoweringOffBeforeDelete).disable_power_off(),
            S::Deleting,
            "complete",
        )
        .check(|_, step| assert!(!step.called(Method::PowerOff))),
        Case::new(
            "powering off: failure is retried",
            HostBuilder::in_state(S::PoweringOffBeforeDelete),
            S::PoweringOffBeforeDelete,
            "failed",
        )
        .scripted(Method::PowerOff, Scripted::failed("BMC timeout")),
        Case::new(
            "powering off: gives up after repeated failures",
            HostBuilder::in_state(S::PoweringOffBeforeDelete).error(ErrorType::PowerManagement, 3),
            S::Deleting,
            "complete",
        )
        .scripted(Method::PowerOff, Scripted::failed("BMC timeout")),
        Case::new(
            "powering off: a lasting registration error skips ahead",
            HostBuilder::in_state(S::PoweringOffBeforeDelete).error(ErrorType::Registration, 4),
            S::Deleting,
            "complete",
        ),
        // deleting
        Case::new("deleting: removed from the provisioner", HostBuilder::in_state(S::Deleting), S::Deleting, "delete-complete")
            .check(|_, step| assert!(step.called(Method::Delete))),
        Case::new("deleting: removal in progress", HostBuilder::in_state(S::Deleting), S::Deleting, "continue")
            .scripted(Method::Delete, Scripted::working()),
        Case::new(
            "deleting: detached annotation is ignored",
            HostBuilder::in_state(S::Deleting).annotation(DETACHED, ""),
            S::Deleting,
            "delete-complete",
        )
        .check(|_, step| assert!(!step.called(Method::Detach))),
        Case::new("deleting: backend failure is retried", HostBuilder::in_state(S::Deleting), S::Deleting, "error")
            .scripted(Method::Delete, Scripted::Transient("connection reset".into())),
    ]
}

#[tokio::test]
async fn every_state_reacts_to_every_kind_of_input() {
    let cases = state_table();
    let covered: std::collections::BTreeSet<String> = cases
        .iter()
        .map(|case| format!("{:?}", case.host.host.state()))
        .collect();
    assert_eq!(
        covered.len(),
        13,
        "every provisioning state (ready folds into available) has rows: {covered:?}"
    );

    let mut failures = Vec::new();
    for case in cases {
        let name = case.name;
        // Each row runs in its own task so one failing row does not hide the others.
        if tokio::spawn(case.run()).await.is_err() {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "failing rows: {failures:#?}");
}

#[tokio::test]
async fn failure_backoff_uses_the_error_count_and_injected_jitter() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Inspecting)
        .error(ErrorType::Inspection, 2)
        .build();
    harness.mirror(&host);
    harness.script(Method::Inspect, [Scripted::failed("again")]);

    let step = harness.step(&mut host).await;

    assert_eq!(status(&host).error_count, 3);
    assert_eq!(
        step.outcome.requeue_after(),
        Some(Duration::from_secs(8 * 60))
    );
}

#[tokio::test]
async fn error_count_survives_progress_but_not_a_transition() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Inspecting)
        .error(ErrorType::Inspection, 2)
        .build();
    harness.mirror(&host);
    harness.script(Method::Inspect, [Scripted::working()]);

    harness.step(&mut host).await;
    assert_eq!(status(&host).error_type, None);
    assert_eq!(status(&host).error_count, 2);

    harness.step(&mut host).await;
    assert_eq!(host.state(), S::Preparing);
    assert_eq!(status(&host).error_count, 0);
}

#[tokio::test]
async fn delayed_host_resumes_when_capacity_returns() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Available).image(IMAGE).build();
    harness.mirror(&host);
    harness.backend.set_capacity(false);

    let first = harness.step(&mut host).await;
    let second = harness.step(&mut host).await;
    harness.backend.set_capacity(true);
    let third = harness.step(&mut host).await;

    assert_eq!(first.outcome.label(), "delayed");
    assert_eq!(second.outcome.label(), "continue");
    assert_eq!(third.outcome.label(), "complete");
    assert_eq!(status(&host).operational_status, OperationalStatus::Ok);
    assert_eq!(
        host.state(),
        S::Provisioning,
        "the freed host goes on in the same step"
    );
}

#[tokio::test]
async fn a_delayed_host_waits_long_when_the_provisioner_wakes_it_once_there_is_room() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Available).image(IMAGE).build();
    harness.mirror(&host);
    harness.backend.set_capacity(false);

    let polling = harness.step(&mut host).await;
    harness.backend.set_wakes_hosts_given_capacity(true);
    let waiting_for_a_wake = harness.step(&mut host).await;

    assert!(
        polling.outcome.requeue_after() <= Some(Duration::from_secs(120)),
        "without wakes, a delayed host looks again within the first backoff"
    );
    assert_eq!(
        waiting_for_a_wake.outcome.requeue_after(),
        Some(WOKEN_DELAY_FALLBACK)
    );
}

#[tokio::test]
async fn a_failing_image_stops_at_the_retry_limit_and_an_image_change_resets_it() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Available).image(IMAGE).build();
    harness.mirror(&host);
    harness.script(
        Method::Provision,
        (0..3).map(|_| Scripted::failed("bad checksum")),
    );

    let steps = harness.run_until(&mut host, S::Provisioned, 40).await;
    let attempts = steps
        .iter()
        .filter(|step| step.called(Method::Provision))
        .count();
    assert_eq!(attempts, 3);
    assert_eq!(host.state(), S::Available);
    assert_eq!(status(&host).provisioning_fail_count, 3);
    assert!(status(&host).error_message.contains("retry limit"));

    host.spec.image = Some(image("http://images.example/fixed.qcow2"));
    harness.run_until(&mut host, S::Provisioned, 10).await;
    assert_eq!(host.state(), S::Provisioned);
    assert_eq!(status(&host).provisioning_fail_count, 0);
}

#[tokio::test]
async fn plain_reboot_annotation_cycles_power_and_is_removed_once() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Provisioned)
        .annotation(REBOOT, "")
        .build();
    harness.mirror(&host);

    let off = harness.step(&mut host).await;
    apply_effects(&mut host, &off.effects);
    let served = harness.step(&mut host).await;
    apply_effects(&mut host, &served.effects);
    let on = harness.step(&mut host).await;

    assert!(off.called(Method::PowerOff));
    assert!(served.effects.remove_annotations.contains(REBOOT));
    assert!(on.called(Method::PowerOn));
    assert!(status(&host).powered_on);
}

#[tokio::test]
async fn suffixed_reboot_holds_the_host_off_until_its_owner_removes_it() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Provisioned)
        .annotation("reboot.metal3.io/phase", "")
        .build();
    harness.mirror(&host);

    for _ in 0..3 {
        let step = harness.step(&mut host).await;
        assert!(step.effects.remove_annotations.is_empty());
        assert!(!step.called(Method::PowerOn));
    }
    assert!(!status(&host).powered_on);

    host.metadata.annotations = Some(BTreeMap::new());
    let step = harness.step(&mut host).await;
    assert!(step.called(Method::PowerOn));
}

#[tokio::test]
async fn disabled_power_off_reboots_instead_and_serves_the_annotation_at_once() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Provisioned)
        .disable_power_off()
        .annotation(REBOOT, "")
        .build();
    harness.mirror(&host);

    let step = harness.step(&mut host).await;

    assert!(
        step.calls
            .iter()
            .any(|call| matches!(call, Call::PowerOff(request) if request.reboot_instead))
    );
    assert!(step.effects.remove_annotations.contains(REBOOT));
    assert!(status(&host).powered_on);
    assert_eq!(harness.backend.machine(NAMESPACE, NAME).reboots, 1);
}

#[tokio::test]
async fn detach_failure_is_cleared_when_the_annotation_is_removed() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::Provisioned)
        .annotation(DETACHED, "")
        .build();
    harness.mirror(&host);
    harness.script(Method::Detach, [Scripted::failed("node locked")]);

    let failed = harness.step(&mut host).await;
    assert_eq!(failed.outcome.label(), "failed");
    assert_eq!(failed.event_reasons(), vec!["DetachError"]);

    host.metadata.annotations = Some(BTreeMap::new());
    let cleared = harness.step(&mut host).await;
    assert_eq!(cleared.outcome.label(), "update");
    assert_eq!(status(&host).error_type, None);
    assert_eq!(status(&host).error_count, 0);
}

#[tokio::test]
async fn forced_detach_works_in_a_busy_state_and_unforced_waits() {
    let harness = Harness::new();
    let mut waiting = HostBuilder::in_state(S::Inspecting)
        .annotation(DETACHED, "")
        .build();
    let mut forced = HostBuilder::in_state(S::Inspecting)
        .annotation(DETACHED, r#"{"force":true}"#)
        .build();
    harness.mirror(&waiting);

    let waited = harness.step(&mut waiting).await;
    let detached = harness.step(&mut forced).await;

    assert!(!waited.called(Method::Detach));
    assert!(detached.calls.contains(&Call::Detach(true)));
    assert_eq!(
        status(&forced).operational_status,
        OperationalStatus::Detached
    );
    assert_eq!(forced.state(), S::Inspecting);
}

#[tokio::test]
async fn externally_provisioned_cleared_without_image_deprovisions() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::ExternallyProvisioned)
        .externally_provisioned(false)
        .build();
    harness.mirror(&host);

    harness.step(&mut host).await;
    assert_eq!(host.state(), S::Provisioned);
    harness.step(&mut host).await;
    assert_eq!(host.state(), S::Deprovisioning);
}

#[tokio::test]
async fn full_lifecycle_records_operation_history() {
    let harness = Harness::new();
    let mut host = HostBuilder::in_state(S::None).build();
    host.status = None;
    harness.mirror(&host);

    harness.run_until(&mut host, S::Available, 20).await;
    assert_eq!(host.state(), S::Available);
    host.spec.image = Some(image(IMAGE));
    harness.run_until(&mut host, S::Provisioned, 20).await;
    assert_eq!(host.state(), S::Provisioned);
    host.spec.image = None;
    harness.run_until(&mut host, S::Available, 20).await;

    let history = status(&host).operation_history.clone().unwrap_or_default();
    for (name, metric) in [
        ("register", history.register),
        ("inspect", history.inspect),
        ("provision", history.provision),
        ("deprovision", history.deprovision),
    ] {
        let metric = metric.unwrap_or_default();
        assert!(
            metric.start.is_some() && metric.end.is_some(),
            "{name} timed"
        );
    }
    assert_eq!(harness.backend.machine(NAMESPACE, NAME).image_writes, 1);
}

#[test]
fn conditions_follow_the_state_table_and_ignore_timestamps() {
    let mut host = HostBuilder::in_state(S::Provisioned).build();
    let report = HardwareReport::default();

    assert!(conditions::update_conditions(
        &mut host,
        report,
        Timestamp::UNIX_EPOCH
    ));
    assert!(!conditions::update_conditions(
        &mut host,
        report,
        Timestamp::from_second(99).unwrap_or_default()
    ));

    let find = |host: &BareMetalHost, kind: &str| {
        status(host)
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status, c.reason))
    };
    assert_eq!(
        find(&host, conditions::READY),
        Some(("True".into(), "Provisioned".into()))
    );
    assert_eq!(
        find(&host, conditions::HEALTHY),
        Some(("Unknown".into(), "Unknown".into()))
    );

    host.status.get_or_insert_default().operational_status = OperationalStatus::Error;
    assert!(conditions::update_conditions(
        &mut host,
        report,
        Timestamp::UNIX_EPOCH
    ));
    assert_eq!(
        find(&host, conditions::READY),
        Some(("False".into(), "Error".into()))
    );

    let failing = HardwareReport {
        power_failure: true,
        health: crate::provisioner::Health::Critical,
    };
    assert!(conditions::update_conditions(
        &mut host,
        failing,
        Timestamp::UNIX_EPOCH
    ));
    assert_eq!(
        find(&host, conditions::MANAGEABLE),
        Some(("False".into(), "PowerFailure".into()))
    );
    assert_eq!(
        find(&host, conditions::HEALTHY),
        Some(("False".into(), "CriticalError".into()))
    );
}
