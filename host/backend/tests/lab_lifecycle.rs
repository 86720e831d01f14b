//! The BareMetalHost lifecycle beyond the main path, through the real plugins, the real deploy
//! agent and the lab: a live ISO, an externally provisioned host handed back, wrong
//! credentials fixed in place, detaching, pausing and every form of the reboot annotation.
//! Each test checks what the lab machine went through (its power requests, media, boots and
//! disk) as well as what the host's status says.

mod site;

use std::time::Duration;

use ingot_api::metal3::{BareMetalHost, ErrorType, OperationalStatus, ProvisioningState};
use ingot_lab::machine::{Activity, Machine, MachineEvent, PowerState};
use ingot_operator::annotations::{DETACHED, PAUSED, REBOOT};
use ingot_operator::controller::{SECRET_FINALIZER, SECRET_LABEL, SECRET_LABEL_VALUE};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use serde_json::json;
use site::{IMAGE, PASSWORD, Site, WAIT, disk_head, image_head};

/// When a host whose registration failed once is looked at again, with the test's jitter of 0
/// (metal3-bmo.md §2.3: the first backoff is one to two minutes).
const RETRY_AFTER_FIRST_ERROR: Duration = Duration::from_secs(120);

/// Long enough for several reconciles of the test operator, whose requeues are capped at
/// half a second, to have happened.
const SEVERAL_RECONCILES: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_iso_is_booted_from_virtual_media_without_writing_the_disk() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    site.create_host("node-iso", "lab-0").await;
    site.wait_for("node-iso", ProvisioningState::Available)
        .await;
    let machine = site.machine("lab-0");
    let disk_before = disk_head(&machine);
    let iso = site.live_iso_url();
    let mark = machine.history().len();

    site.set_image("node-iso", json!({"url": iso, "format": "live-iso"}))
        .await;
    let provisioned = site
        .wait_for("node-iso", ProvisioningState::Provisioned)
        .await;
    wait_for_activity(&machine, &Activity::LiveIso { image: iso.clone() }).await;

    let since = machine.history().split_off(mark);
    assert!(!booted_agent(&since), "the deploy agent ran: {since:?}");
    assert_eq!(machine.status().media, Some(iso.clone()));
    assert_eq!(
        disk_head(&machine),
        disk_before,
        "a live ISO wrote to the disk"
    );
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 0);
    assert_eq!(provisioned_url(&provisioned), Some(iso.clone()));

    let mark = machine.history().len();
    site.set_image("node-iso", serde_json::Value::Null).await;
    site.wait_for("node-iso", ProvisioningState::Available)
        .await;
    let since = machine.history().split_off(mark);
    assert!(
        since.contains(&MachineEvent::MediaEjected),
        "the ISO was not ejected: {since:?}"
    );
    assert!(
        booted_agent(&since),
        "deprovisioning did not clean the host: {since:?}"
    );
    assert_ne!(machine.status().media, Some(iso));

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_externally_provisioned_host_is_adopted_without_inspection_and_can_be_handed_back() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let image = json!({"url": site.image_url(), "checksum": format!("{}.sha256sum", site.image_url()), "checksumType": "sha256"});
    let spec = json!({"externallyProvisioned": true, "image": image});
    site.create_host_custom(
        "node-ext",
        "lab-0",
        &site.virtual_media_bmc("lab-0"),
        PASSWORD,
        spec,
    )
    .await;

    let adopted = site
        .wait_until(
            "node-ext",
            "externally provisioned and powered on",
            |host| state(host) == ProvisioningState::ExternallyProvisioned && powered_on(host),
        )
        .await;
    let machine = site.machine("lab-0");
    let status = adopted.status.clone().unwrap_or_default();
    assert_eq!(status.hardware, None, "the host was inspected");
    assert_eq!(
        status.operation_history.and_then(|history| history.inspect),
        None
    );
    assert_eq!(machine.status().power, PowerState::On);
    assert_untouched(&site, &machine);

    // Upstream v0.14+ (metal3-bmo.md §2.10): clearing the flag makes the host provisioned
    // with its spec image, without deploying anything.
    hand_back(&site, "node-ext").await;
    let handed_back = site
        .wait_for("node-ext", ProvisioningState::Provisioned)
        .await;
    assert_eq!(provisioned_url(&handed_back), Some(site.image_url()));
    tokio::time::sleep(SEVERAL_RECONCILES).await;
    assert_eq!(
        state(&fetch(&site, "node-ext").await),
        ProvisioningState::Provisioned
    );
    assert_untouched(&site, &machine);

    site.set_image("node-ext", serde_json::Value::Null).await;
    site.wait_for("node-ext", ProvisioningState::Available)
        .await;
    assert!(
        booted_agent(&machine.history()),
        "removing the image did not deprovision the host"
    );
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 0);

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_externally_provisioned_host_without_an_image_is_deprovisioned_when_handed_back() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    site.create_host_custom(
        "node-bare",
        "lab-1",
        &site.virtual_media_bmc("lab-1"),
        PASSWORD,
        json!({"externallyProvisioned": true}),
    )
    .await;
    site.wait_for("node-bare", ProvisioningState::ExternallyProvisioned)
        .await;
    let machine = site.machine("lab-1");
    assert_untouched(&site, &machine);

    // Upstream v0.14+ (metal3-bmo.md §2.10): without an image, clearing the flag leads
    // through provisioned to deprovisioning, which cleans the disks.
    hand_back(&site, "node-bare").await;
    let available = site
        .wait_for("node-bare", ProvisioningState::Available)
        .await;
    let history = available
        .status
        .and_then(|status| status.operation_history)
        .unwrap_or_default();
    assert!(
        history.deprovision.and_then(|metric| metric.end).is_some(),
        "the host was not deprovisioned"
    );
    assert!(
        booted_agent(&machine.history()),
        "the disks were not cleaned"
    );

    operator.stop().await;
}

/// More hosts than the backend's busy slots (four in the site), with the production delays:
/// a host refused a slot waits for a wake when one frees up, with ten minutes as its own
/// fallback, so every host gets through in the time the inspections themselves take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_beyond_the_busy_slots_are_woken_in_turn_instead_of_polling() {
    const HOSTS: u32 = 7;
    let site = Site::start_with_machines(HOSTS).await;
    let operator = site.start_operator_with(None).await;
    let names: Vec<String> = (0..HOSTS).map(|index| format!("node-{index}")).collect();
    for (index, name) in names.iter().enumerate() {
        site.create_host(name, &format!("lab-{index}")).await;
    }

    let started = tokio::time::Instant::now();
    for name in &names {
        site.wait_for(name, ProvisioningState::Available).await;
    }

    assert!(
        started.elapsed() < RETRY_AFTER_FIRST_ERROR,
        "hosts waited for their own requeue, not for a wake: {:?}",
        started.elapsed()
    );
    operator.stop().await;
}

/// The operator keeps its production delays here: after the registration error the host is
/// not looked at again for two minutes, so only the Secret edit itself can wake it in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_fail_registration_and_editing_the_secret_recovers_the_host() {
    const WRONG: &str = "not-the-lab-password";
    let site = Site::start().await;
    let operator = site.start_operator_with(None).await;
    site.create_host_custom(
        "node-creds",
        "lab-0",
        &site.virtual_media_bmc("lab-0"),
        WRONG,
        json!({}),
    )
    .await;

    let failed = site
        .wait_until("node-creds", "a registration error", |host| {
            error_type(host) == Some(ErrorType::Registration)
        })
        .await;
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(status.operational_status, OperationalStatus::Error);
    assert_eq!(status.provisioning.state, ProvisioningState::Registering);
    assert!(!status.error_message.is_empty());
    let machine = site.machine("lab-0");
    assert!(machine.bmc_requests() > 0, "the BMC was never asked");
    assert_eq!(
        machine.history(),
        Vec::new(),
        "an unregistered host was driven"
    );
    let events = site.events_text().await;
    assert!(events.contains("RegistrationError"), "{events}");
    assert_no_password(&serde_json::to_string(&status).unwrap_or_default(), WRONG);
    assert_no_password(&events, WRONG);
    assert_secret_watched(&bmc_secret(&site, "node-creds").await);

    let fixed_at = tokio::time::Instant::now();
    site.set_bmc_password("node-creds", PASSWORD).await;
    let recovered = site
        .wait_for("node-creds", ProvisioningState::Available)
        .await;
    assert!(
        fixed_at.elapsed() < RETRY_AFTER_FIRST_ERROR,
        "the host recovered only after its backoff, not when the Secret changed"
    );
    assert_eq!(recovered.uid(), failed.uid(), "the host was re-created");
    let status = recovered.status.clone().unwrap_or_default();
    assert_eq!(status.operational_status, OperationalStatus::Ok);
    assert_eq!(status.error_type, None);
    assert!(
        status.hardware.is_some(),
        "the recovered host was not inspected"
    );
    assert_eq!(
        status
            .good_credentials
            .and_then(|good| good.credentials_version),
        bmc_secret(&site, "node-creds").await.resource_version(),
        "the good credentials are not the edited Secret"
    );
    let everything = format!(
        "{}{}",
        site.events_text().await,
        serde_json::to_string(&recovered).unwrap_or_default()
    );
    assert!(everything.contains("BMCAccessValidated"));
    assert_no_password(&everything, WRONG);
    assert_no_password(&everything, PASSWORD);

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_detached_host_is_left_alone_and_reattaches_still_provisioned() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let before = provisioned_host(&site, "node-det", "lab-0").await;
    let machine = site.machine("lab-0");

    site.annotate("node-det", DETACHED, Some("")).await;
    let detached = site
        .wait_until("node-det", "operational status detached", |host| {
            operational_status(host) == OperationalStatus::Detached
        })
        .await;
    assert_eq!(state(&detached), ProvisioningState::Provisioned);
    assert_eq!(
        condition(&detached, "Ready"),
        Some(("False".into(), "Detached".into()))
    );
    let requests = machine.bmc_requests();
    let mark = machine.history().len();
    tokio::time::sleep(SEVERAL_RECONCILES).await;
    assert_eq!(
        machine.bmc_requests(),
        requests,
        "the operator talked to a detached host's BMC"
    );
    assert_eq!(machine.history().len(), mark);

    site.annotate("node-det", DETACHED, None).await;
    let reattached = site
        .wait_until("node-det", "operational status OK", |host| {
            operational_status(host) == OperationalStatus::Ok
        })
        .await;
    tokio::time::sleep(SEVERAL_RECONCILES).await;
    assert_eq!(state(&reattached), ProvisioningState::Provisioned);
    assert_eq!(
        state(&fetch(&site, "node-det").await),
        ProvisioningState::Provisioned
    );
    assert!(
        machine.bmc_requests() > requests,
        "the re-attached host was not registered again"
    );
    assert_eq!(
        machine.history().split_off(mark),
        Vec::new(),
        "re-attaching drove the machine"
    );
    assert_eq!(disk_head(&machine), image_head(&site));
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 1);
    let (before, after) = (before.status, reattached.status);
    assert_eq!(
        after.as_ref().and_then(|status| status.hardware.clone()),
        before.as_ref().and_then(|status| status.hardware.clone())
    );
    assert_eq!(
        after.and_then(|status| status.operation_history),
        before.and_then(|status| status.operation_history),
        "re-attaching re-ran an operation"
    );

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_host_is_not_provisioned_until_unpaused() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    site.create_host("node-pause", "lab-0").await;
    site.wait_until("node-pause", "available and powered on", |host| {
        state(host) == ProvisioningState::Available && powered_on(host)
    })
    .await;
    let machine = site.machine("lab-0");

    site.annotate("node-pause", PAUSED, Some("lab-test")).await;
    // A reconcile already running when the annotation arrived may still finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused = fetch(&site, "node-pause").await;
    let requests = machine.bmc_requests();
    let mark = machine.history().len();
    site.set_image("node-pause", site.checksummed_image()).await;
    tokio::time::sleep(SEVERAL_RECONCILES).await;

    let still = fetch(&site, "node-pause").await;
    assert_eq!(
        still.status, paused.status,
        "a paused host's status changed"
    );
    assert_eq!(machine.bmc_requests(), requests, "a paused host was driven");
    assert_eq!(machine.history().len(), mark);
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 0);

    site.annotate("node-pause", PAUSED, None).await;
    site.wait_for("node-pause", ProvisioningState::Provisioned)
        .await;
    assert_eq!(disk_head(&machine), image_head(&site));

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plain_reboot_annotation_power_cycles_softly_or_hard_and_is_removed() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    provisioned_host(&site, "node-reboot", "lab-0").await;
    let machine = site.machine("lab-0");

    for (value, power_off) in [
        ("", "GracefulShutdown"),
        (r#"{"mode":"hard"}"#, "ForceOff"),
        (r#"{"mode":"soft"}"#, "GracefulShutdown"),
    ] {
        let mark = machine.history().len();
        site.annotate("node-reboot", REBOOT, Some(value)).await;
        site.wait_until("node-reboot", "the reboot served and removed", |host| {
            !host.annotations().contains_key(REBOOT) && powered_on(host)
        })
        .await;
        wait_for_boot_from_disk(&machine, mark).await;

        let since = machine.history().split_off(mark);
        assert_eq!(
            power_requests(&since),
            [power_off, "On"],
            "reboot {value:?}: {since:?}"
        );
    }

    operator.stop().await;
}

const PHASED: &str = "reboot.metal3.io/maintenance";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suffixed_reboot_annotation_keeps_the_host_off_until_its_owner_removes_it() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    provisioned_host(&site, "node-phased", "lab-0").await;
    let machine = site.machine("lab-0");

    held_off_until_released(&site, &machine, json!({PHASED: ""})).await;
    // With both forms (metal3-bmo.md §3, issue #3271), the plain one is served and removed
    // while the suffixed one goes on holding the host off.
    held_off_until_released(&site, &machine, json!({REBOOT: "", PHASED: ""})).await;

    operator.stop().await;
}

/// Puts `annotations` (which include [`PHASED`]) on `node-phased`, checks that the host is
/// held off with only [`PHASED`] left, then removes it and checks one soft power cycle in all.
async fn held_off_until_released(site: &Site, machine: &Machine, annotations: serde_json::Value) {
    let mark = machine.history().len();
    site.patch_host(
        "node-phased",
        json!({"metadata": {"annotations": annotations}}),
    )
    .await;
    site.wait_until("node-phased", "powered off", |host| !powered_on(host))
        .await;
    tokio::time::sleep(SEVERAL_RECONCILES).await;
    let held = fetch(site, "node-phased").await;
    assert!(
        held.annotations().contains_key(PHASED),
        "the operator removed a suffixed reboot annotation"
    );
    assert!(!held.annotations().contains_key(REBOOT));
    assert!(!powered_on(&held));
    assert_eq!(machine.status().power, PowerState::Off);

    site.annotate("node-phased", PHASED, None).await;
    site.wait_until("node-phased", "powered on again", powered_on)
        .await;
    wait_for_boot_from_disk(machine, mark).await;
    let since = machine.history().split_off(mark);
    assert_eq!(
        power_requests(&since),
        ["GracefulShutdown", "On"],
        "{since:?}"
    );
}

/// Creates host `name` on lab machine `machine`, provisions the lab image and waits until the
/// host is seen powered on and the machine runs the image.
async fn provisioned_host(site: &Site, name: &str, machine: &str) -> BareMetalHost {
    site.create_host(name, machine).await;
    site.wait_for(name, ProvisioningState::Available).await;
    site.set_image(name, site.checksummed_image()).await;
    let host = site
        .wait_until(name, "provisioned and powered on", |host| {
            state(host) == ProvisioningState::Provisioned && powered_on(host)
        })
        .await;
    wait_for_machine(&site.machine(machine), "a boot from disk", |machine| {
        matches!(machine.status().activity, Activity::BootedFromDisk { .. })
    })
    .await;
    host
}

/// Clears `externallyProvisioned`, handing the host over to the operator.
async fn hand_back(site: &Site, name: &str) {
    site.patch_host(name, json!({"spec": {"externallyProvisioned": false}}))
        .await;
}

async fn fetch(site: &Site, name: &str) -> BareMetalHost {
    site.hosts()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn state(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

fn powered_on(host: &BareMetalHost) -> bool {
    host.status.as_ref().is_some_and(|status| status.powered_on)
}

fn operational_status(host: &BareMetalHost) -> OperationalStatus {
    host.status
        .as_ref()
        .map(|status| status.operational_status)
        .unwrap_or_default()
}

fn error_type(host: &BareMetalHost) -> Option<ErrorType> {
    host.status.as_ref().and_then(|status| status.error_type)
}

/// The status and reason of condition `kind`.
fn condition(host: &BareMetalHost, kind: &str) -> Option<(String, String)> {
    host.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == kind))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn provisioned_url(host: &BareMetalHost) -> Option<String> {
    host.status
        .as_ref()
        .and_then(|status| status.provisioning.image.as_ref())
        .map(|image| image.url.clone())
}

/// The reset types of the power requests among `events`, in order.
fn power_requests(events: &[MachineEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            MachineEvent::PowerRequest { reset_type } => Some(reset_type.as_str()),
            _ => None,
        })
        .collect()
}

fn booted_agent(events: &[MachineEvent]) -> bool {
    events.iter().any(|event| {
        matches!(
            event,
            MachineEvent::Booted {
                activity: Activity::Agent { .. }
            }
        )
    })
}

/// Nothing was written to or booted on the machine: no media, no agent, a blank disk and no
/// image download.
fn assert_untouched(site: &Site, machine: &Machine) {
    let history = machine.history();
    assert!(
        !history
            .iter()
            .any(|event| matches!(event, MachineEvent::MediaInserted { .. })),
        "media was inserted: {history:?}"
    );
    assert!(!booted_agent(&history), "the agent was booted: {history:?}");
    assert!(
        disk_head(machine).iter().all(|byte| *byte == 0),
        "the disk was written"
    );
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 0);
}

async fn bmc_secret(site: &Site, host: &str) -> Secret {
    let secrets: Api<Secret> = Api::namespaced(site.client.clone(), site::NAMESPACE);
    secrets
        .get(&format!("{host}-bmc"))
        .await
        .unwrap_or_else(|e| panic!("secret of {host}: {e}"))
}

/// The operator acquired the Secret as upstream does (metal3-bmo.md §1.6), which is what makes
/// an edit wake the host.
fn assert_secret_watched(secret: &Secret) {
    assert_eq!(
        secret.labels().get(SECRET_LABEL).map(String::as_str),
        Some(SECRET_LABEL_VALUE)
    );
    assert!(secret.finalizers().iter().any(|f| f == SECRET_FINALIZER));
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "BareMetalHost" && owner.controller != Some(true)),
        "{:?}",
        secret.owner_references()
    );
}

fn assert_no_password(text: &str, password: &str) {
    assert!(!text.contains(password), "a BMC password leaked: {text}");
}

async fn wait_for_activity(machine: &Machine, wanted: &Activity) {
    wait_for_machine(machine, &format!("{wanted:?}"), |machine| {
        machine.status().activity == *wanted
    })
    .await;
}

/// Waits until the machine has booted from its disk since history event `mark`.
async fn wait_for_boot_from_disk(machine: &Machine, mark: usize) {
    wait_for_machine(machine, "a boot from disk", |machine| {
        machine.history().split_off(mark).iter().any(|event| {
            matches!(
                event,
                MachineEvent::Booted {
                    activity: Activity::BootedFromDisk { .. }
                }
            )
        })
    })
    .await;
}

async fn wait_for_machine(machine: &Machine, what: &str, done: impl Fn(&Machine) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(machine) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never reached {what}: {:?}, after {:?}",
            machine.id,
            machine.status(),
            machine.history()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
