//! The host controller with the plugin backend against the virtual lab: real Redfish driver and
//! standard-steps components, the real deploy agent on simulated machines, the embedded API
//! server. A host registers, is inspected by the agent, becomes available, gets an image
//! written to its disk, boots it, and is cleaned again; an operator killed in the middle of
//! the image write resumes without writing the image twice. A host behind an IPMI BMC, which
//! has no virtual media, boots the deploy agent from the network instead.

mod site;

use ingot_api::metal3::ProvisioningState;
use ingot_lab::machine::{Activity, Machine};
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
