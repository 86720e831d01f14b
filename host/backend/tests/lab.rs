//! The host controller with the plugin backend against the virtual lab: real Redfish driver and
//! standard-steps components, the real deploy agent on simulated machines, the embedded API
//! server. A host registers, is inspected by the agent, becomes available, gets an image
//! written to its disk, boots it, and is cleaned again; an operator killed in the middle of
//! the image write resumes without writing the image twice, and one killed before a machine
//! booted its deploy media serves the media again. A host behind an IPMI BMC, which
//! has no virtual media, boots the deploy agent from the network instead.

mod site;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingot_api::metal3::ProvisioningState;
use ingot_lab::machine::{Activity, BootOverride, Faults, Machine, MachineEvent};
use site::{IMAGE, Site, disk_head, image_head};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_is_inspected_provisioned_and_cleaned_through_the_plugins() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    site.create_host("node-0", "lab-0").await;

    let available = site.wait_for("node-0", ProvisioningState::Available).await;
    let hardware = available.status.and_then(|status| status.hardware);
    let disks = hardware
        .and_then(|hardware| hardware.storage)
        .unwrap_or_default();
    assert!(!disks.is_empty(), "inspection found no disk");

    site.set_image("node-0", site.checksummed_image()).await;
    site.wait_for("node-0", ProvisioningState::Provisioned)
        .await;
    let machine = site.machine("lab-0");
    assert_holds_and_booted_the_image(&site, &machine);

    site.set_image("node-0", serde_json::Value::Null).await;
    site.wait_for("node-0", ProvisioningState::Available).await;
    assert_ne!(
        disk_head(&machine),
        image_head(&site),
        "cleaning left the partition table"
    );
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 1);

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_killed_while_writing_the_image_resumes_without_writing_it_again() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    site.create_host("node-1", "lab-1").await;
    site.wait_for("node-1", ProvisioningState::Available).await;

    site.set_image("node-1", site.checksummed_image()).await;
    site.wait_for_step(&operator, "node-1", "write-image").await;
    operator.kill();
    let restarted = site.start_operator().await;

    site.wait_for("node-1", ProvisioningState::Provisioned)
        .await;
    assert_eq!(disk_head(&site.machine("lab-1")), image_head(&site));
    assert_eq!(site.lab.image_downloads(&format!("{IMAGE}.raw")), 1);

    restarted.stop().await;
}

/// Deploy media live only in the operator's memory (the token they carry is never saved). A
/// machine that boots from its media after the operator restarted still gets its agent: the
/// restarted operator serves the media again at the URL the machine holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_machine_booting_its_deploy_media_after_an_operator_restart_still_gets_its_agent() {
    let site = Site::start().await;
    let machine = site.machine("lab-0");
    machine.set_faults(Faults {
        agent_crash: true,
        ..Faults::default()
    });
    let operator = site.start_operator().await;
    site.create_host("node-0", "lab-0").await;
    site.wait_for_step(&operator, "node-0", "boot-deploy-media")
        .await;
    wait_for_activity(&machine, |activity| {
        matches!(activity, Activity::AgentStopped { .. })
    })
    .await;

    operator.kill();
    let restarted = site.start_operator().await;
    machine.set_faults(Faults::default());
    boot_from_cd_until_the_agent_runs(&machine).await;

    site.wait_for("node-0", ProvisioningState::Available).await;
    restarted.stop().await;
}

/// Boots the machine from its virtual CD, as its firmware would after a slow start, until a boot
/// runs the deploy agent: the media is served again only once the restarted operator has looked
/// at the host.
async fn boot_from_cd_until_the_agent_runs(machine: &Arc<Machine>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = machine.history().len();
        machine.set_boot(BootOverride {
            boot_source_override_target: "Cd".into(),
            boot_source_override_enabled: "Once".into(),
            boot_source_override_mode: "UEFI".into(),
        });
        machine
            .reset("ForceRestart")
            .unwrap_or_else(|e| panic!("{e}"));
        let booted = wait_for_boot(machine, seen).await;
        if matches!(booted, Activity::Agent { .. }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the machine found no deploy media after the restart: {booted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the machine's first boot after its first `seen` events booted into.
async fn wait_for_boot(machine: &Machine, seen: usize) -> Activity {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let booted = machine
            .history()
            .into_iter()
            .skip(seen)
            .find_map(|event| match event {
                MachineEvent::Booted { activity } => Some(activity),
                _ => None,
            });
        if let Some(activity) = booted {
            return activity;
        }
        assert!(Instant::now() < deadline, "the machine did not boot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_activity(machine: &Machine, wanted: impl Fn(&Activity) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wanted(&machine.status().activity) {
        assert!(
            Instant::now() < deadline,
            "machine: {:?}",
            machine.status().activity
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ipmi_host_without_virtual_media_is_inspected_and_provisioned_through_network_boot() {
    let site = Site::start().await;
    let operator = site.start_operator().await;
    let ipmi = site
        .lab
        .ipmi_address("lab-1")
        .unwrap_or_else(|| panic!("the lab serves IPMI"));
    site.create_host_at("node-ipmi", "lab-1", &format!("ipmi://{ipmi}"))
        .await;

    let available = site
        .wait_for("node-ipmi", ProvisioningState::Available)
        .await;
    let machine = site.machine("lab-1");
    let inspected = available
        .status
        .and_then(|status| status.hardware)
        .and_then(|hardware| hardware.storage)
        .unwrap_or_default();
    assert!(!inspected.is_empty(), "inspection found no disk");
    assert_eq!(machine.status().media, None, "IPMI has no virtual media");

    site.set_image("node-ipmi", site.checksummed_image()).await;
    site.wait_for("node-ipmi", ProvisioningState::Provisioned)
        .await;

    assert_holds_and_booted_the_image(&site, &machine);
    operator.stop().await;
}

fn assert_holds_and_booted_the_image(site: &Site, machine: &Machine) {
    assert_eq!(
        disk_head(machine),
        image_head(site),
        "the disk does not hold the image"
    );
    assert!(
        matches!(machine.status().activity, Activity::BootedFromDisk { .. }),
        "the machine did not boot the image: {:?}",
        machine.status().activity
    );
}
