//! Every BareMetalHost and Metal3Machine admission rule, each with an accepted and a refused
//! case, plus the update-only rules and the warnings.

use std::collections::BTreeMap;

use ingot_api::capm3::v1beta2::{Image, Metal3Machine, Metal3MachineSpec, Metal3MachineTemplate};
use ingot_api::metal3::{
    BareMetalHost, BareMetalHostSpec, BareMetalHostStatus, BmcDetails, BootMode, CustomDeploy,
    DiskFormat, FirmwareConfig, HardwareRaidVolume, Image as HostImage, InspectionMode,
    NetworkInterface, OperationalStatus, ProvisioningState, RaidConfig, RootDeviceHints,
    SoftwareRaidVolume,
};
use ingot_api::selector::{HostSelector, HostSelectorRequirement};
use ingot_api::validation::{
    host_warnings, validate_create, validate_metal3_machine, validate_metal3_machine_template,
    validate_update,
};
use k8s_openapi::api::core::v1::SecretReference;

/// A valid IPMI host in namespace `metal3`, changed by `edit`.
fn host(edit: impl FnOnce(&mut BareMetalHost)) -> BareMetalHost {
    let mut host = BareMetalHost::new(
        "worker-0",
        BareMetalHostSpec {
            online: true,
            bmc: Some(BmcDetails {
                address: "ipmi://192.0.2.10".into(),
                credentials_name: "worker-0-bmc".into(),
                disable_certificate_verification: None,
            }),
            boot_mac_address: Some("00:5c:52:00:00:01".into()),
            ..BareMetalHostSpec::default()
        },
    );
    host.metadata.namespace = Some("metal3".into());
    edit(&mut host);
    host
}

fn annotate(host: &mut BareMetalHost, key: &str, value: &str) {
    host.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

fn set_address(host: &mut BareMetalHost, address: &str) {
    if let Some(bmc) = host.spec.bmc.as_mut() {
        bmc.address = address.into();
    }
}

fn image(url: &str, checksum: Option<&str>, format: Option<DiskFormat>) -> HostImage {
    HostImage {
        url: url.into(),
        checksum: checksum.map(Into::into),
        disk_format: format,
        ..HostImage::default()
    }
}

fn secret(name: &str, namespace: Option<&str>) -> SecretReference {
    SecretReference {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
    }
}

/// Asserts the host is refused with an error at `path` whose text contains `fragment`.
fn refused(host: &BareMetalHost, path: &str, fragment: &str) {
    let errors = validate_create(host);
    assert!(
        errors
            .iter()
            .any(|error| error.path == path && error.message.contains(fragment)),
        "expected {path}: ...{fragment}... in {errors:#?}"
    );
}

fn accepted(host: &BareMetalHost) {
    let errors = validate_create(host);
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

#[test]
fn the_baseline_host_is_accepted() {
    accepted(&host(|_| {}));
}

#[test]
fn bmc_address_must_parse_with_a_known_driver() {
    accepted(&host(|h| {
        set_address(
            h,
            "redfish-virtualmedia+https://bmc.example/redfish/v1/Systems/1",
        )
    }));
    refused(
        &host(|h| set_address(h, "idrac://10.0.0.1")),
        "spec.bmc.address",
        "Unknown BMC type 'idrac'",
    );
    refused(
        &host(|h| set_address(h, "${BMC_ADDRESS}")),
        "spec.bmc.address",
        "failed to parse",
    );
    refused(
        &host(|h| set_address(h, "my-.examplehost.com")),
        "spec.bmc.address",
        "is invalid",
    );
}

#[test]
fn firmware_is_no_longer_supported() {
    refused(
        &host(|h| {
            h.spec.firmware = Some(FirmwareConfig {
                sriov_enabled: Some(true),
                ..FirmwareConfig::default()
            })
        }),
        "spec.firmware",
        "no longer supported",
    );
}

#[test]
fn data_secrets_must_be_in_the_host_namespace() {
    accepted(&host(|h| {
        h.spec.user_data = Some(secret("ud", Some("metal3")))
    }));
    accepted(&host(|h| h.spec.network_data = Some(secret("nd", None))));
    for field in ["userData", "networkData", "metaData"] {
        let other = Some(secret("x", Some("openshift-machine-api")));
        let refused_host = host(|h| match field {
            "userData" => h.spec.user_data = other,
            "networkData" => h.spec.network_data = other,
            _ => h.spec.meta_data = other,
        });
        refused(
            &refused_host,
            &format!("spec.{field}.namespace"),
            "cross-namespace Secret references are not allowed",
        );
    }
}

fn hardware_volume(edit: impl FnOnce(&mut HardwareRaidVolume)) -> HardwareRaidVolume {
    let mut volume = HardwareRaidVolume {
        level: "1".into(),
        ..HardwareRaidVolume::default()
    };
    edit(&mut volume);
    volume
}

fn software_volume(level: &str, root: Option<bool>) -> SoftwareRaidVolume {
    SoftwareRaidVolume {
        level: level.into(),
        root_volume: root,
        ..SoftwareRaidVolume::default()
    }
}

fn with_raid(
    hardware: Option<Vec<HardwareRaidVolume>>,
    software: Option<Vec<SoftwareRaidVolume>>,
) -> BareMetalHost {
    host(|h| {
        set_address(h, "redfish://bmc.example/redfish/v1/Systems/1");
        h.spec.raid = Some(RaidConfig {
            hardware_raid_volumes: hardware,
            software_raid_volumes: software,
        });
    })
}

#[test]
fn raid_rules() {
    let disks = || Some(vec!["Disk.Bay.0".to_string(), "Disk.Bay.1".to_string()]);
    accepted(&with_raid(
        Some(vec![hardware_volume(|v| {
            v.controller = Some("RAID.Slot.6-1".into());
            v.physical_disks = disks();
            v.number_of_physical_disks = Some(2);
        })]),
        None,
    ));
    accepted(&with_raid(
        None,
        Some(vec![
            software_volume("1", Some(true)),
            software_volume("0", None),
        ]),
    ));

    refused(
        &with_raid(
            Some(vec![hardware_volume(|_| {})]),
            Some(vec![software_volume("1", None)]),
        ),
        "spec.raid",
        "can not be set at the same time",
    );
    refused(
        &with_raid(
            Some(vec![hardware_volume(|v| v.physical_disks = disks())]),
            None,
        ),
        "spec.raid.hardwareRAIDVolumes[0].controller",
        "'physicalDisks' specified without 'controller'",
    );
    refused(
        &with_raid(
            Some(vec![hardware_volume(|v| {
                v.controller = Some("c".into());
                v.physical_disks = disks();
                v.number_of_physical_disks = Some(3);
            })]),
            None,
        ),
        "spec.raid.hardwareRAIDVolumes[0].numberOfPhysicalDisks",
        "is not same for volume 0",
    );
    refused(
        &with_raid(
            None,
            Some(vec![
                software_volume("1", Some(true)),
                software_volume("1", Some(true)),
            ]),
        ),
        "spec.raid.softwareRAIDVolumes",
        "rootVolume can only be set once",
    );
    refused(
        &with_raid(None, Some(vec![software_volume("0", Some(true))])),
        "spec.raid.softwareRAIDVolumes[0].level",
        "must use RAID level 1",
    );
    let mut with_hints = with_raid(None, Some(vec![software_volume("1", Some(true))]));
    with_hints.spec.root_device_hints = Some(RootDeviceHints {
        device_name: Some("/dev/sda".into()),
        ..RootDeviceHints::default()
    });
    refused(
        &with_hints,
        "spec.rootDeviceHints",
        "rootVolume and rootDeviceHints",
    );
}

#[test]
fn hardware_raid_needs_a_raid_capable_driver() {
    let mut ipmi = with_raid(Some(vec![hardware_volume(|_| {})]), None);
    set_address(&mut ipmi, "ipmi://192.0.2.10");
    refused(
        &ipmi,
        "spec.raid.hardwareRAIDVolumes",
        "BMC driver ipmi does not support configuring RAID",
    );
    let mut cleared = with_raid(Some(vec![]), None);
    set_address(&mut cleared, "ipmi://192.0.2.10");
    accepted(&cleared);
}

#[test]
fn boot_mac_is_required_for_libvirt_and_when_inspection_is_disabled() {
    accepted(&host(|h| h.spec.boot_mac_address = None));
    refused(
        &host(|h| {
            set_address(h, "libvirt://192.0.2.1:6233/");
            h.spec.boot_mac_address = None;
        }),
        "spec.bootMACAddress",
        "BMC driver libvirt requires a BootMACAddress value",
    );
    refused(
        &host(|h| {
            h.spec.boot_mac_address = None;
            annotate(h, "inspect.metal3.io", "disabled");
        }),
        "spec.bootMACAddress",
        "requires a BootMACAddress",
    );
    refused(
        &host(|h| {
            h.spec.boot_mac_address = None;
            h.spec.inspection_mode = Some(InspectionMode::Disabled);
        }),
        "spec.bootMACAddress",
        "requires a BootMACAddress",
    );
}

#[test]
fn boot_mac_must_parse() {
    accepted(&host(|h| {
        h.spec.boot_mac_address = Some("00:5C:52:00:01:14".into())
    }));
    refused(
        &host(|h| h.spec.boot_mac_address = Some("00:aa:bb:cc:dd".into())),
        "spec.bootMACAddress",
        "invalid MAC",
    );
}

#[test]
fn secure_boot_needs_a_capable_driver() {
    accepted(&host(|h| {
        set_address(h, "redfish://bmc.example/redfish/v1/Systems/1");
        h.spec.boot_mode = Some(BootMode::UefiSecureBoot);
    }));
    refused(
        &host(|h| h.spec.boot_mode = Some(BootMode::UefiSecureBoot)),
        "spec.bootMode",
        "BMC driver ipmi does not support secure boot",
    );
}

#[test]
fn host_names_follow_the_webhook_rules() {
    let named = |name: &str| host(|h| h.metadata.name = Some(name.into()));
    accepted(&named("worker_0.rack-1"));
    refused(
        &named("worker 0"),
        "metadata.name",
        "cannot contain characters other than",
    );
    refused(
        &named("8d566f5b-a28f-451b-a70f-419507c480cd"),
        "metadata.name",
        "cannot be a UUID",
    );
}

#[test]
fn root_device_names_must_be_dev_paths() {
    let hint = |name: &str| {
        host(|h| {
            h.spec.root_device_hints = Some(RootDeviceHints {
                device_name: Some(name.into()),
                ..RootDeviceHints::default()
            })
        })
    };
    accepted(&hint("/dev/sda"));
    accepted(&hint("/dev/disk/by-path/pci-0000:00:1f.2-ata-1"));
    refused(
        &hint("<root_device_hint>"),
        "spec.rootDeviceHints.deviceName",
        "must be a /dev/ path",
    );
    refused(
        &hint("/dev/disk/by-id/wwn-0x5000"),
        "spec.rootDeviceHints.deviceName",
        "/dev/disk/by-path/",
    );
}

#[test]
fn image_url_and_checksum_rules() {
    let with = |image: HostImage| host(|h| h.spec.image = Some(image));
    accepted(&with(image(
        "http://192.0.2.4/i.qcow2",
        Some("http://192.0.2.4/i.qcow2.md5sum"),
        Some(DiskFormat::Qcow2),
    )));
    accepted(&with(image(
        "http://192.0.2.4/image.iso",
        None,
        Some(DiskFormat::LiveIso),
    )));
    accepted(&with(image("oci://ghcr.io/org/image:latest", None, None)));

    refused(
        &with(image("oci://ghcr.io/org/image:latest", Some("abc"), None)),
        "spec.image.checksum",
        "must be empty for OCI images",
    );
    refused(
        &with(image("http://192.0.2.4/i.raw", None, Some(DiskFormat::Raw))),
        "spec.image.checksum",
        "checksum is required",
    );
    refused(
        &with(image("file:///tmp/i.raw", Some("abc"), None)),
        "spec.image.url",
        "scheme \"file\" is not supported",
    );
    refused(
        &with(image("images/i.raw", Some("abc"), None)),
        "spec.image.url",
        "invalid URI for request",
    );
    refused(
        &with(image("http://<IMAGE_SERVER_IP>:8080/x", Some("abc"), None)),
        "spec.image.url",
        "not a valid host name",
    );
}

#[test]
fn inspect_annotation_values() {
    accepted(&host(|h| annotate(h, "inspect.metal3.io", "")));
    accepted(&host(|h| annotate(h, "inspect.metal3.io", "disabled")));
    refused(
        &host(|h| annotate(h, "inspect.metal3.io", "enabled")),
        "metadata.annotations[inspect.metal3.io]",
        "only \"\"",
    );
}

#[test]
fn hardware_details_annotation_needs_inspection_disabled_and_known_fields() {
    let details = r#"{"cpu": {"arch": "x86_64", "count": 8}, "ramMebibytes": 4096}"#;
    accepted(&host(|h| {
        annotate(h, "inspect.metal3.io", "disabled");
        annotate(h, "inspect.metal3.io/hardwaredetails", details);
    }));
    let path = "metadata.annotations[inspect.metal3.io/hardwaredetails]";
    refused(
        &host(|h| annotate(h, "inspect.metal3.io/hardwaredetails", details)),
        path,
        "inspection must be disabled",
    );
    refused(
        &host(|h| {
            annotate(h, "inspect.metal3.io", "disabled");
            annotate(
                h,
                "inspect.metal3.io/hardwaredetails",
                r#"{"cpu": {"speedGHz": 3.5}}"#,
            );
        }),
        path,
        "unknown field \"cpu.speedGHz\"",
    );
}

#[test]
fn status_annotation_is_decoded_strictly_with_allowlists() {
    let path = "metadata.annotations[baremetalhost.metal3.io/status]";
    let good = r#"{"operationalStatus":"OK","errorMessage":"","poweredOn":true,"provisioning":{"state":"ready","ID":"x"}}"#;
    accepted(&host(|h| {
        annotate(h, "baremetalhost.metal3.io/status", good)
    }));
    refused(
        &host(|h| {
            annotate(
                h,
                "baremetalhost.metal3.io/status",
                r#"{"operationalStatus":"OK","bogus":1}"#,
            )
        }),
        path,
        "unknown field \"bogus\"",
    );
    refused(
        &host(|h| {
            annotate(
                h,
                "baremetalhost.metal3.io/status",
                r#"{"operationalStatus":"servicing"}"#,
            )
        }),
        path,
        "servicing",
    );
    refused(
        &host(|h| annotate(h, "baremetalhost.metal3.io/status", "{not json")),
        path,
        "not valid JSON",
    );
}

#[test]
fn reboot_annotations_are_empty_or_json_with_a_known_mode() {
    accepted(&host(|h| annotate(h, "reboot.metal3.io", "")));
    accepted(&host(|h| {
        annotate(
            h,
            "reboot.metal3.io/phase-1",
            r#"{"mode":"hard","force":true}"#,
        )
    }));
    refused(
        &host(|h| annotate(h, "reboot.metal3.io", r#"{"mode":"cold"}"#)),
        "metadata.annotations[reboot.metal3.io]",
        "invalid mode",
    );
    refused(
        &host(|h| annotate(h, "reboot.metal3.io/x", "now")),
        "metadata.annotations[reboot.metal3.io/x]",
        "must be empty or JSON",
    );
}

#[test]
fn inspection_mode_rules() {
    accepted(&host(|h| {
        set_address(h, "redfish://bmc.example/redfish/v1/Systems/1");
        h.spec.inspection_mode = Some(InspectionMode::Fast);
    }));
    refused(
        &host(|h| h.spec.inspection_mode = Some(InspectionMode::Fast)),
        "spec.inspectionMode",
        "does not support fast",
    );
    refused(
        &host(|h| {
            h.spec.inspection_mode = Some(InspectionMode::Agent);
            annotate(h, "inspect.metal3.io", "disabled");
        }),
        "spec.inspectionMode",
        "contradicts annotation",
    );
}

#[test]
fn power_off_cannot_be_disabled_on_an_offline_host() {
    accepted(&host(|h| h.spec.disable_power_off = Some(true)));
    refused(
        &host(|h| {
            h.spec.disable_power_off = Some(true);
            h.spec.online = false;
        }),
        "spec.online",
        "can't simultaneously",
    );
}

#[test]
fn network_interfaces_need_one_unique_selector() {
    let interface = |name: Option<&str>, mac: Option<&str>| NetworkInterface {
        name: name.map(Into::into),
        mac_address: mac.map(Into::into),
        ..NetworkInterface::default()
    };
    let with =
        |interfaces: Vec<NetworkInterface>| host(|h| h.spec.network_interfaces = Some(interfaces));
    accepted(&with(vec![
        interface(Some("eno1"), None),
        interface(None, Some("00:5c:52:00:00:02")),
    ]));
    refused(
        &with(vec![interface(Some("eno1"), Some("00:5c:52:00:00:02"))]),
        "spec.networkInterfaces[0]",
        "mutually exclusive",
    );
    refused(
        &with(vec![interface(None, None)]),
        "spec.networkInterfaces[0]",
        "either name or macAddress",
    );
    refused(
        &with(vec![
            interface(None, Some("00:5c:52:00:00:02")),
            interface(None, Some("00:5C:52:00:00:02")),
        ]),
        "spec.networkInterfaces[1]",
        "duplicate",
    );
}

fn with_state(
    mut host: BareMetalHost,
    state: ProvisioningState,
    status: OperationalStatus,
) -> BareMetalHost {
    let mut current = BareMetalHostStatus {
        operational_status: status,
        ..BareMetalHostStatus::default()
    };
    current.provisioning.state = state;
    host.status = Some(current);
    host
}

fn update_errors(old: &BareMetalHost, new: &BareMetalHost) -> Vec<String> {
    validate_update(old, new)
        .iter()
        .map(|error| error.path.clone())
        .collect()
}

#[test]
fn bmc_address_changes_only_while_registering_or_detached() {
    let old = with_state(
        host(|_| {}),
        ProvisioningState::Provisioned,
        OperationalStatus::Ok,
    );
    let new = with_state(
        host(|h| set_address(h, "ipmi://192.0.2.11")),
        ProvisioningState::Provisioned,
        OperationalStatus::Ok,
    );
    assert_eq!(update_errors(&old, &new), vec!["spec.bmc.address"]);

    let registering = with_state(
        host(|_| {}),
        ProvisioningState::Registering,
        OperationalStatus::Ok,
    );
    assert!(update_errors(&registering, &new).is_empty());
    let detached = with_state(
        host(|_| {}),
        ProvisioningState::Provisioned,
        OperationalStatus::Detached,
    );
    assert!(update_errors(&detached, &new).is_empty());
    let unset = host(|h| set_address(h, ""));
    assert!(update_errors(&unset, &new).is_empty());
}

#[test]
fn boot_mac_is_immutable_once_set_ignoring_case() {
    let old = host(|_| {});
    assert!(
        update_errors(
            &old,
            &host(|h| h.spec.boot_mac_address = Some("00:5C:52:00:00:01".into()))
        )
        .is_empty()
    );
    assert_eq!(
        update_errors(
            &old,
            &host(|h| h.spec.boot_mac_address = Some("00:5c:52:00:00:09".into()))
        ),
        vec!["spec.bootMACAddress"]
    );
    let unset = host(|h| h.spec.boot_mac_address = None);
    assert!(update_errors(&unset, &old).is_empty());
}

#[test]
fn externally_provisioned_can_only_be_enabled_from_available() {
    let enabled = |state| {
        with_state(
            host(|h| h.spec.externally_provisioned = Some(true)),
            state,
            OperationalStatus::Ok,
        )
    };
    let disabled = |state| with_state(host(|_| {}), state, OperationalStatus::Ok);
    assert!(
        update_errors(
            &disabled(ProvisioningState::Available),
            &enabled(ProvisioningState::Available)
        )
        .is_empty()
    );
    assert!(
        update_errors(
            &disabled(ProvisioningState::Ready),
            &enabled(ProvisioningState::Ready)
        )
        .is_empty()
    );
    assert_eq!(
        update_errors(
            &disabled(ProvisioningState::Inspecting),
            &enabled(ProvisioningState::Inspecting)
        ),
        vec!["spec.externallyProvisioned"]
    );
    assert!(
        update_errors(
            &enabled(ProvisioningState::Provisioned),
            &disabled(ProvisioningState::Provisioned)
        )
        .is_empty()
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let bad = host(|h| {
        set_address(h, "idrac://x");
        h.spec.firmware = Some(FirmwareConfig::default());
        h.spec.user_data = Some(secret("u", Some("other")));
        h.spec.image = Some(image("http://h/i", None, None));
    });
    let paths: Vec<String> = validate_create(&bad)
        .into_iter()
        .map(|error| error.path)
        .collect();
    assert_eq!(
        paths,
        vec![
            "spec.bmc.address",
            "spec.firmware",
            "spec.userData.namespace",
            "spec.image.checksum"
        ]
    );
}

#[test]
fn warnings_are_separate_from_errors() {
    let broadcast = host(|h| h.spec.boot_mac_address = Some("ff:ff:ff:ff:ff:ff".into()));
    assert!(validate_create(&broadcast).is_empty());
    assert_eq!(host_warnings(&broadcast)[0].path, "spec.bootMACAddress");

    let ipmi_tls = host(|h| {
        if let Some(bmc) = h.spec.bmc.as_mut() {
            bmc.disable_certificate_verification = Some(true);
        }
    });
    assert_eq!(
        host_warnings(&ipmi_tls)[0].path,
        "spec.bmc.disableCertificateVerification"
    );

    let raw_cloud_image = host(|h| {
        h.spec.image = Some(image(
            "https://h/noble-server-cloudimg-amd64.img",
            Some("https://h/SHA256SUMS"),
            Some(DiskFormat::Raw),
        ))
    });
    assert_eq!(host_warnings(&raw_cloud_image)[0].path, "spec.image.format");

    let profile = host(|h| h.spec.hardware_profile = Some("libvirt".into()));
    assert_eq!(host_warnings(&profile)[0].path, "spec.hardwareProfile");

    assert!(host_warnings(&host(|_| {})).is_empty());
}

fn machine(edit: impl FnOnce(&mut Metal3MachineSpec)) -> Metal3Machine {
    let mut spec = Metal3MachineSpec {
        image: Some(Image {
            url: "http://192.0.2.4/node.qcow2".into(),
            checksum: Some("http://192.0.2.4/node.qcow2.sha256sum".into()),
            ..Image::default()
        }),
        ..Metal3MachineSpec::default()
    };
    edit(&mut spec);
    let mut machine = Metal3Machine::new("m", spec);
    machine.metadata.namespace = Some("metal3".into());
    machine
}

fn machine_errors(machine: &Metal3Machine) -> Vec<String> {
    validate_metal3_machine(machine)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn metal3_machine_image_rules() {
    assert!(machine_errors(&machine(|_| {})).is_empty());
    assert!(
        machine_errors(&machine(|s| {
            s.image = None;
            s.custom_deploy = Some(CustomDeploy {
                method: "install_coreos".into(),
            });
        }))
        .is_empty()
    );
    assert!(
        machine_errors(&machine(|s| s.image = Some(Image {
            url: "oci://ghcr.io/a/b:1".into(),
            ..Image::default()
        })))
        .is_empty()
    );

    let missing = machine_errors(&machine(|s| s.image = None));
    assert!(
        missing[0].starts_with("spec.image.url: Required value"),
        "{missing:?}"
    );
    let oci = machine_errors(&machine(|s| {
        s.image = Some(Image {
            url: "oci://ghcr.io/a/b:1".into(),
            checksum: Some("x".into()),
            ..Image::default()
        })
    }));
    assert!(oci[0].contains("must be empty for OCI images"), "{oci:?}");
    let no_checksum = machine_errors(&machine(|s| {
        s.image = Some(Image {
            url: "http://h/i.raw".into(),
            ..Image::default()
        })
    }));
    assert!(
        no_checksum[0].contains("checksum is required"),
        "{no_checksum:?}"
    );
}

#[test]
fn metal3_machine_references_stay_in_namespace() {
    let errors = machine_errors(&machine(|s| {
        s.user_data = Some(secret("u", Some("elsewhere")))
    }));
    assert!(
        errors[0].starts_with("spec.userData.namespace: Forbidden"),
        "{errors:?}"
    );
}

#[test]
fn host_selector_operators_are_selection_operators() {
    let requirement = |operator: &str, values: &[&str]| HostSelectorRequirement {
        key: "key2".into(),
        operator: operator.into(),
        values: Some(values.iter().map(|value| value.to_string()).collect()),
    };
    let select = |requirement: HostSelectorRequirement| {
        machine(|s| {
            s.host_selector = Some(HostSelector {
                match_labels: None,
                match_expressions: Some(vec![requirement]),
            })
        })
    };
    assert!(machine_errors(&select(requirement("in", &["abc", "123"]))).is_empty());
    assert!(machine_errors(&select(requirement("In", &["abc"]))).is_empty());
    assert!(machine_errors(&select(requirement("exists", &[]))).is_empty());
    assert!(
        machine_errors(&select(requirement("Equals", &["us-east-1a"])))[0]
            .contains("not a selection operator")
    );
    assert!(
        machine_errors(&select(requirement("DoesNotExist", &[])))[0]
            .contains("not a selection operator")
    );
    assert!(machine_errors(&select(requirement("in", &[])))[0].contains("at least one value"));
    assert!(machine_errors(&select(requirement("gt", &["x"])))[0].contains("integer"));
}

#[test]
fn metal3_machine_template_checks_its_machine_spec() {
    let mut template = Metal3MachineTemplate::new("t", Default::default());
    template.metadata.namespace = Some("metal3".into());
    template.spec.template.spec = machine(|s| s.image = None).spec;
    let errors = validate_metal3_machine_template(&template);
    assert_eq!(errors[0].path, "spec.template.spec.image.url");
}
