//! Deletion and faults in the virtual lab, through the real Redfish driver and standard-steps
//! components, the real deploy agent and the embedded API server.
//!
//! A host deleted from any state is routed the way Metal3 routes it (cleaned first when it holds
//! or was getting an image, powered off otherwise, never cleaned when externally provisioned)
//! and is gone within a bound, even when its BMC stopped answering. A BMC failing in the middle
//! of provisioning shows on the host as a provisioning error, and the host recovers once the BMC
//! is back. A wrong image checksum fails provisioning with the disk left unbootable, stops at
//! the retry limit, and fixing the checksum recovers the host.

mod site;

use std::time::{Duration, Instant};

use ingot_api::metal3::{
    BareMetalHost, BareMetalHostStatus, ErrorType, OperationalStatus, ProvisioningState,
};
use ingot_lab::machine::{Activity, Faults, Machine, PowerState};
use ingot_operator::controller::SECRET_FINALIZER;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use site::{IMAGE, NAMESPACE, Operator, PASSWORD, Site, disk_head, image_head, root_disk};

/// A deletion that needs at most a power-off.
const QUICK_DELETION: Duration = Duration::from_secs(30);

/// A deletion that cleans the disk first: the deploy agent boots, erases, and the host powers off.
const CLEANING_DELETION: Duration = Duration::from_secs(60);

/// A deletion that has to give up on an unreachable BMC: clean-up and power-off each fail past
/// the retry limit first.
const ABANDONING_DELETION: Duration = Duration::from_secs(90);

/// The errors after which deletion stops trying to clean up or power off (upstream's three).
const DELETE_RETRY_LIMIT: i64 = 3;

/// The operator's `max_provisioning_retries` in the site.
const PROVISIONING_RETRY_LIMIT: i64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_without_an_image_of_ours_are_removed_without_cleaning() {
    let site = Site::start_with_machines(4).await;
    let operator = site.start_operator().await;

    tokio::join!(
        delete_while_registering_against_a_dead_bmc(&site, "lab-0"),
        delete_while_inspecting(&site, "lab-1"),
        delete_while_available(&site, "lab-2"),
        delete_while_externally_provisioned(&site, "lab-3"),
    );

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_holding_or_getting_an_image_are_cleaned_as_their_mode_says_then_removed() {
    let site = Site::start_with_machines(4).await;
    let operator = site.start_operator().await;

    tokio::join!(
        delete_while_writing_the_image(&site, &operator, "lab-0"),
        delete_while_provisioned(&site, "lab-1", Cleaning::Metadata),
        delete_while_provisioned(&site, "lab-2", Cleaning::Disabled),
        delete_while_deprovisioning(&site, "lab-3"),
    );

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provisioned_host_whose_bmc_stopped_answering_is_removed_after_bounded_retries() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-0");
    provision(&site, "orphan", "lab-0", json!({})).await;

    machine.set_faults(unreachable_bmc());
    let deletion = delete_and_follow(&site, "orphan", ABANDONING_DELETION).await;

    assert_eq!(deletion.from, ProvisioningState::Provisioned);
    assert_eq!(
        deletion.most_errors(ProvisioningState::Deprovisioning, ErrorType::Provisioning),
        Some(DELETE_RETRY_LIMIT),
        "clean-up was not retried up to the limit: {:#?}",
        deletion.seen
    );
    assert!(
        deletion.most_errors(
            ProvisioningState::PoweringOffBeforeDelete,
            ErrorType::PowerManagement
        ) > Some(0),
        "the power-off was not attempted: {:#?}",
        deletion.seen
    );
    assert_no_secret_in(&deletion.seen);
    assert_eq!(
        disk_head(&machine),
        image_head(&site),
        "nothing could reach the machine, yet its disk changed"
    );
    assert_secret_released(&site, "orphan").await;

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bmc_failing_during_provisioning_shows_as_an_error_and_the_host_recovers() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-0");
    site.create_host("flaky", "lab-0").await;
    site.wait_for("flaky", ProvisioningState::Available).await;

    site.set_image("flaky", site.checksummed_image()).await;
    site.wait_for("flaky", ProvisioningState::Provisioning)
        .await;
    machine.set_faults(unreachable_bmc());
    let failing = wait_until(&site, "flaky", "repeated provisioning errors", |status| {
        status.operational_status == OperationalStatus::Error
            && status.error_type == Some(ErrorType::Provisioning)
            && status.error_count >= 2
    })
    .await;

    let message = &status_of(&failing).error_message;
    assert!(
        message.contains("503"),
        "the error does not say why: {message}"
    );
    assert!(!message.contains(PASSWORD), "the error shows the password");
    machine.set_faults(Faults::default());
    assert_recovers_with_the_image(&site, "flaky", &machine).await;

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_checksum_fails_up_to_the_retry_limit_and_a_fixed_checksum_recovers() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-0");
    site.create_host("mistyped", "lab-0").await;
    site.wait_for("mistyped", ProvisioningState::Available)
        .await;

    let wrong =
        json!({"url": site.image_url(), "checksum": "0".repeat(64), "checksumType": "sha256"});
    site.set_image("mistyped", wrong).await;
    let failed = wait_until(&site, "mistyped", "a provisioning error", |status| {
        status.error_type == Some(ErrorType::Provisioning)
    })
    .await;
    let message = &status_of(&failed).error_message;
    assert!(
        message.contains("checksum mismatch"),
        "unclear error: {message}"
    );
    assert!(
        is_blank(&machine),
        "the disk was left bootable after a bad write"
    );

    let stopped = wait_until(&site, "mistyped", "the retry limit", |status| {
        status.provisioning.state == ProvisioningState::Available
            && status.error_message.contains("retry limit")
    })
    .await;
    assert_eq!(
        status_of(&stopped).provisioning_fail_count,
        PROVISIONING_RETRY_LIMIT
    );
    assert_eq!(
        status_of(&stopped).operational_status,
        OperationalStatus::Error
    );
    let attempts = site.lab.image_downloads(&format!("{IMAGE}.raw"));
    assert_eq!(attempts, 2, "one attempt and one retry were expected");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        site.lab.image_downloads(&format!("{IMAGE}.raw")),
        attempts,
        "provisioning went on past the retry limit"
    );

    site.set_image("mistyped", site.checksummed_image()).await;
    assert_recovers_with_the_image(&site, "mistyped", &machine).await;

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_disk_shows_as_a_provisioning_error_and_the_host_recovers_once_it_works() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-0");
    site.create_host("bad-disk", "lab-0").await;
    site.wait_for("bad-disk", ProvisioningState::Available)
        .await;

    machine.set_faults(Faults {
        disk_write_error: true,
        ..Faults::default()
    });
    site.set_image("bad-disk", site.checksummed_image()).await;
    let failing = wait_until(
        &site,
        "bad-disk",
        "a failed write, then a failed clean-up",
        |status| {
            status.provisioning.state == ProvisioningState::Deprovisioning
                && status.error_type == Some(ErrorType::Provisioning)
                && status.error_count >= 2
        },
    )
    .await;

    let message = &status_of(&failing).error_message;
    assert!(
        message.contains("deploy agent could not"),
        "unclear error: {message}"
    );
    assert!(!message.contains(PASSWORD), "the error shows the password");
    machine.set_faults(Faults::default());
    assert_recovers_with_the_image(&site, "bad-disk", &machine).await;

    operator.stop().await;
}

/// Registration never succeeded, so the host goes straight to removal without touching the
/// machine.
async fn delete_while_registering_against_a_dead_bmc(site: &Site, machine_id: &str) {
    let name = "never-registered";
    let machine = site.machine(machine_id);
    machine.set_faults(unreachable_bmc());
    site.create_host(name, machine_id).await;
    wait_until(site, name, "a registration error", |status| {
        status.error_type == Some(ErrorType::Registration)
    })
    .await;

    let deletion = delete_and_follow(site, name, QUICK_DELETION).await;

    assert_eq!(deletion.from, ProvisioningState::Registering);
    assert!(!deletion.passed_through(ProvisioningState::PoweringOffBeforeDelete));
    assert_no_secret_in(&deletion.seen);
    let untouched = machine.status();
    assert_eq!((untouched.power, untouched.media), (PowerState::Off, None));
    assert_secret_released(site, name).await;
}

/// A deploy agent that dies at start keeps the host inspecting; deletion powers it off.
async fn delete_while_inspecting(site: &Site, machine_id: &str) {
    let name = "inspecting";
    let machine = site.machine(machine_id);
    machine.set_faults(Faults {
        agent_crash: true,
        ..Faults::default()
    });
    site.create_host(name, machine_id).await;
    site.wait_for(name, ProvisioningState::Inspecting).await;
    wait_for_power(&machine, PowerState::On).await;

    delete_with_a_power_off_only(site, name, &machine, ProvisioningState::Inspecting).await;
}

async fn delete_while_available(site: &Site, machine_id: &str) {
    let name = "available";
    let machine = site.machine(machine_id);
    site.create_host(name, machine_id).await;
    site.wait_for(name, ProvisioningState::Available).await;
    wait_for_power(&machine, PowerState::On).await;

    delete_with_a_power_off_only(site, name, &machine, ProvisioningState::Available).await;
}

/// The operating system was installed by someone else: it is powered off, never erased.
async fn delete_while_externally_provisioned(site: &Site, machine_id: &str) {
    let name = "external";
    let machine = site.machine(machine_id);
    install_image_by_hand(site, &machine);
    site.create_host_with_spec(name, machine_id, json!({"externallyProvisioned": true}))
        .await;
    site.wait_for(name, ProvisioningState::ExternallyProvisioned)
        .await;
    wait_for_power(&machine, PowerState::On).await;

    delete_with_a_power_off_only(
        site,
        name,
        &machine,
        ProvisioningState::ExternallyProvisioned,
    )
    .await;
    assert_eq!(
        disk_head(&machine),
        image_head(site),
        "an externally provisioned disk was erased"
    );
}

/// Deletes host `name`, which is in state `from`: it must be powered off and removed without
/// being deprovisioned.
async fn delete_with_a_power_off_only(
    site: &Site,
    name: &str,
    machine: &Machine,
    from: ProvisioningState,
) {
    let deletion = delete_and_follow(site, name, QUICK_DELETION).await;

    assert_eq!(deletion.from, from);
    assert!(!deletion.passed_through(ProvisioningState::Deprovisioning));
    wait_for_power(machine, PowerState::Off).await;
    assert_secret_released(site, name).await;
}

/// Deleted halfway through the image write: the partial image is erased before removal.
async fn delete_while_writing_the_image(site: &Site, operator: &Operator, machine_id: &str) {
    let name = "writing";
    let machine = site.machine(machine_id);
    site.create_host(name, machine_id).await;
    site.wait_for(name, ProvisioningState::Available).await;
    site.set_image(name, site.checksummed_image()).await;
    site.wait_for_step(operator, name, "write-image").await;

    let deletion = delete_and_follow(site, name, CLEANING_DELETION).await;

    assert_eq!(deletion.from, ProvisioningState::Provisioning);
    assert!(deletion.passed_through(ProvisioningState::Deprovisioning));
    assert!(is_blank(&machine), "the partial image was not erased");
    wait_for_power(&machine, PowerState::Off).await;
    assert_secret_released(site, name).await;
}

/// How a provisioned host's disks are treated when it is deprovisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleaning {
    Metadata,
    Disabled,
}

/// Deprovisioned before removal: erased with `metadata` cleaning, only shut down with
/// `disabled`.
async fn delete_while_provisioned(site: &Site, machine_id: &str, cleaning: Cleaning) {
    let (name, mode) = match cleaning {
        Cleaning::Metadata => ("provisioned", "metadata"),
        Cleaning::Disabled => ("kept", "disabled"),
    };
    let machine = site.machine(machine_id);
    provision(
        site,
        name,
        machine_id,
        json!({"automatedCleaningMode": mode}),
    )
    .await;

    let deletion = delete_and_follow(site, name, CLEANING_DELETION).await;

    assert_eq!(deletion.from, ProvisioningState::Provisioned);
    assert!(deletion.passed_through(ProvisioningState::Deprovisioning));
    match cleaning {
        Cleaning::Metadata => assert!(is_blank(&machine), "the disk was not cleaned"),
        Cleaning::Disabled => assert_eq!(
            disk_head(&machine),
            image_head(site),
            "cleaning is disabled, yet the disk was erased"
        ),
    }
    wait_for_power(&machine, PowerState::Off).await;
    assert_secret_released(site, name).await;
}

/// Deleted while the image is being removed: cleaning finishes, then the host is removed.
async fn delete_while_deprovisioning(site: &Site, machine_id: &str) {
    let name = "deprovisioning";
    let machine = site.machine(machine_id);
    provision(site, name, machine_id, json!({})).await;
    site.set_image(name, serde_json::Value::Null).await;
    site.wait_for(name, ProvisioningState::Deprovisioning).await;

    let deletion = delete_and_follow(site, name, CLEANING_DELETION).await;

    assert_eq!(deletion.from, ProvisioningState::Deprovisioning);
    assert!(is_blank(&machine), "the disk was not cleaned");
    wait_for_power(&machine, PowerState::Off).await;
    assert_secret_released(site, name).await;
}

/// Creates host `name` with `spec` on `machine_id` and provisions the lab image onto it.
async fn provision(site: &Site, name: &str, machine_id: &str, spec: serde_json::Value) {
    site.create_host_with_spec(name, machine_id, spec).await;
    site.wait_for(name, ProvisioningState::Available).await;
    site.set_image(name, site.checksummed_image()).await;
    site.wait_for(name, ProvisioningState::Provisioned).await;
    assert_eq!(
        disk_head(&site.machine(machine_id)),
        image_head(site),
        "{name}: the image is not on the disk"
    );
}

/// Waits until host `name` is provisioned again and checks that nothing of its failures is
/// left: no error, no failed attempts counted, and the machine runs the image from its disk.
async fn assert_recovers_with_the_image(site: &Site, name: &str, machine: &Machine) {
    let recovered = site.wait_for(name, ProvisioningState::Provisioned).await;

    let status = status_of(&recovered);
    assert_eq!(status.operational_status, OperationalStatus::Ok);
    assert_eq!((status.error_type, status.error_count), (None, 0));
    assert_eq!(status.provisioning_fail_count, 0);
    assert_eq!(
        disk_head(machine),
        image_head(site),
        "{name}: the image is not on the disk"
    );
    assert!(
        matches!(machine.status().activity, Activity::BootedFromDisk { .. }),
        "{name}: the machine did not boot the image: {:?}",
        machine.status().activity
    );
}

/// The lab image with its published checksum file.
fn unreachable_bmc() -> Faults {
    Faults {
        bmc_unreachable: true,
        ..Faults::default()
    }
}

/// One look at a host's status while it was being deleted.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: ProvisioningState,
    error_type: Option<ErrorType>,
    error_count: i64,
    error_message: String,
}

/// A deletion, from the request until the object was gone.
struct Deletion {
    /// The state the host was in when the deletion was requested.
    from: ProvisioningState,
    /// Every distinct status seen on the way, in order.
    seen: Vec<Seen>,
}

impl Deletion {
    fn passed_through(&self, state: ProvisioningState) -> bool {
        self.seen.iter().any(|seen| seen.state == state)
    }

    /// The highest error count seen in `state` with errors of `error_type`.
    fn most_errors(&self, state: ProvisioningState, error_type: ErrorType) -> Option<i64> {
        self.seen
            .iter()
            .filter(|seen| seen.state == state && seen.error_type == Some(error_type))
            .map(|seen| seen.error_count)
            .max()
    }
}

/// Deletes host `name` and follows its status until the object is gone, which must happen
/// within `bound`.
async fn delete_and_follow(site: &Site, name: &str, bound: Duration) -> Deletion {
    let started = Instant::now();
    let requested = site
        .hosts()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    let from = requested
        .left()
        .and_then(|host| host.status)
        .map(|status| status.provisioning.state)
        .unwrap_or_else(|| panic!("{name} was removed at once: it had no finalizer"));

    let mut seen: Vec<Seen> = Vec::new();
    while let Some(host) = site
        .hosts()
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
    {
        let status = status_of(&host);
        let now = Seen {
            state: status.provisioning.state,
            error_type: status.error_type,
            error_count: status.error_count,
            error_message: status.error_message.clone(),
        };
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        assert!(
            started.elapsed() < bound,
            "{name} was not removed within {bound:?}; it went through {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Deletion { from, seen }
}

/// Waits until the status of host `name` satisfies `check`, described by `what`.
async fn wait_until(
    site: &Site,
    name: &str,
    what: &str,
    check: impl Fn(&BareMetalHostStatus) -> bool,
) -> BareMetalHost {
    let deadline = Instant::now() + site::WAIT;
    loop {
        let host = site.hosts().get(name).await.ok();
        let status = host.as_ref().and_then(|host| host.status.clone());
        if let (Some(host), Some(status)) = (&host, &status)
            && check(status)
        {
            return host.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never showed {what}; last status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn status_of(host: &BareMetalHost) -> BareMetalHostStatus {
    host.status.clone().unwrap_or_default()
}

fn assert_no_secret_in(seen: &[Seen]) {
    for status in seen {
        assert!(
            !status.error_message.contains(PASSWORD),
            "an error shows the BMC password: {status:?}"
        );
    }
}

/// The host's BMC Secret no longer carries the operator's finalizer: it is gone with its owner,
/// or free to be deleted.
async fn assert_secret_released(site: &Site, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(site.client.clone(), NAMESPACE);
    let secret = secrets
        .get_opt(&format!("{name}-bmc"))
        .await
        .unwrap_or_else(|e| panic!("{name}: the BMC secret: {e}"));
    let finalizers = secret.map(|secret| secret.finalizers().to_vec());
    assert!(
        !finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == SECRET_FINALIZER),
        "{name}: the BMC secret still carries {SECRET_FINALIZER}"
    );
}

/// Waits until the machine's power reaches `wanted` (power changes take the lab a moment).
async fn wait_for_power(machine: &Machine, wanted: PowerState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while machine.status().power != wanted {
        assert!(
            Instant::now() < deadline,
            "{} never reached {wanted:?}: {:?}",
            machine.id,
            machine.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the start of the root disk is all zeros: erased, or marked unbootable.
fn is_blank(machine: &Machine) -> bool {
    disk_head(machine).iter().all(|byte| *byte == 0)
}

/// Copies the start of the lab image onto the machine's root disk, as an installer run outside
/// the operator would have left it.
fn install_image_by_hand(site: &Site, machine: &Machine) {
    use std::io::Write as _;
    let disk = root_disk(machine);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .unwrap_or_else(|e| panic!("{}: {e}", disk.display()));
    file.write_all(&image_head(site))
        .unwrap_or_else(|e| panic!("{}: {e}", disk.display()));
}
