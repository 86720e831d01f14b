//! BareMetalHost admission rules (create, update) and warnings.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::SecretReference;
use regex::Regex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ErrorKind, FieldError, FieldWarning, parse_mac};
use crate::bmc::{self, BmcAddress};
use crate::metal3::{
    BareMetalHost, BareMetalHostSpec, BareMetalHostStatus, BootMode, DiskFormat, ErrorType,
    HardwareDetails, InspectionMode, OperationalStatus, ProvisioningState, RaidConfig,
};

/// Annotation that asks for (re-)inspection, or disables it with the value `disabled`.
pub const INSPECT_ANNOTATION: &str = "inspect.metal3.io";
/// Annotation carrying hardware details for hosts that are not inspected.
pub const HARDWARE_DETAILS_ANNOTATION: &str = "inspect.metal3.io/hardwaredetails";
/// Annotation carrying a whole status to restore (e.g. after moving clusters).
pub const STATUS_ANNOTATION: &str = "baremetalhost.metal3.io/status";
/// Prefix of the reboot annotations (`reboot.metal3.io` and `reboot.metal3.io/<key>`).
pub const REBOOT_ANNOTATION: &str = "reboot.metal3.io";

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
        .unwrap_or_else(|_| unreachable!("the UUID pattern is a valid regex"))
});

/// The admission rules that apply when a host is created.
pub fn validate_create(host: &BareMetalHost) -> Vec<FieldError> {
    let spec = &host.spec;
    let mut errors = Vec::new();
    let address = check_bmc_address(spec, &mut errors);

    check_name(
        host.metadata.name.as_deref().unwrap_or_default(),
        &mut errors,
    );
    check_firmware(spec, &mut errors);
    check_data_references(host, &mut errors);
    if let Some(raid) = &spec.raid {
        check_raid(raid, spec.root_device_hints.is_some(), &mut errors);
    }
    if let Some(address) = &address {
        check_driver_support(host, address, &mut errors);
    }
    check_boot_mac(spec, &mut errors);
    check_root_device_name(spec, &mut errors);
    check_image(spec, &mut errors);
    check_annotations(host, &mut errors);
    check_inspection_mode(host, address.as_ref(), &mut errors);
    check_power(spec, &mut errors);
    check_network_interfaces(spec, &mut errors);
    errors
}

/// The admission rules that apply when `old` is replaced by `new`: everything checked on
/// create, plus the fields that may not change.
pub fn validate_update(old: &BareMetalHost, new: &BareMetalHost) -> Vec<FieldError> {
    let mut errors = validate_create(new);
    check_address_change(old, new, &mut errors);
    check_boot_mac_change(old, new, &mut errors);
    check_externally_provisioned_change(old, new, &mut errors);
    errors
}

/// Things upstream admits that are almost certainly mistakes.
pub fn host_warnings(host: &BareMetalHost) -> Vec<FieldWarning> {
    let spec = &host.spec;
    let mut warnings = Vec::new();
    warn_multicast_mac(spec, &mut warnings);
    warn_certificate_flag_without_tls(spec, &mut warnings);
    warn_raw_format_for_qcow2_name(spec, &mut warnings);
    warn_deprecated_fields(spec, &mut warnings);
    warnings
}

fn check_bmc_address(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) -> Option<BmcAddress> {
    let address = spec
        .bmc
        .as_ref()
        .map(|bmc| bmc.address.as_str())
        .filter(|address| !address.is_empty())?;
    match bmc::parse(address) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            errors.push(FieldError::invalid("spec.bmc.address", error.to_string()));
            None
        }
    }
}

/// The BMC webhook allows `[A-Za-z0-9._-]`; the API server's DNS-1123 rule is checked with the
/// rest of the metadata.
fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        errors.push(FieldError::invalid(
            "metadata.name",
            "BareMetalHost resource name cannot contain characters other than [A-Za-z0-9._-]",
        ));
    }
    if UUID.is_match(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            "BareMetalHost resource name cannot be a UUID",
        ));
    }
}

fn check_firmware(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    if spec.firmware.is_some() {
        errors.push(FieldError::forbidden(
            "spec.firmware",
            "the Firmware field is no longer supported, use HostFirmwareSettings resource instead",
        ));
    }
}

fn check_data_references(host: &BareMetalHost, errors: &mut Vec<FieldError>) {
    let namespace = host.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &host.spec;
    let references = [
        ("userData", &spec.user_data),
        ("networkData", &spec.network_data),
        ("metaData", &spec.meta_data),
    ];
    for (field, reference) in references {
        if let Some(message) = cross_namespace(reference.as_ref(), namespace, field) {
            errors.push(FieldError::forbidden(
                format!("spec.{field}.namespace"),
                message,
            ));
        }
    }
}

/// The message for a Secret reference that leaves `namespace`, if it does.
pub(super) fn cross_namespace(
    reference: Option<&SecretReference>,
    namespace: &str,
    field: &str,
) -> Option<String> {
    let target = reference?
        .namespace
        .as_deref()
        .filter(|target| !target.is_empty())?;
    (target != namespace).then(|| {
        format!("{field}: cross-namespace Secret references are not allowed (Secret in {target:?}, object in {namespace:?})")
    })
}

fn check_raid(raid: &RaidConfig, has_root_hints: bool, errors: &mut Vec<FieldError>) {
    let hardware = raid.hardware_raid_volumes.as_deref().unwrap_or_default();
    let software = raid.software_raid_volumes.as_deref().unwrap_or_default();
    if !hardware.is_empty() && !software.is_empty() {
        errors.push(FieldError::forbidden(
            "spec.raid",
            "hardwareRAIDVolumes and softwareRAIDVolumes can not be set at the same time",
        ));
    }

    for (index, volume) in hardware.iter().enumerate() {
        let path = format!("spec.raid.hardwareRAIDVolumes[{index}]");
        let disks = volume.physical_disks.as_deref().unwrap_or_default();
        if !disks.is_empty() && volume.controller.as_deref().unwrap_or_default().is_empty() {
            errors.push(FieldError::invalid(
                format!("{path}.controller"),
                format!(
                    "'physicalDisks' specified without 'controller' in hardware RAID volume {index}"
                ),
            ));
        }
        if let Some(count) = volume
            .number_of_physical_disks
            .filter(|_| !disks.is_empty())
            && count != disks.len() as i64
        {
            errors.push(FieldError::invalid(
                format!("{path}.numberOfPhysicalDisks"),
                format!(
                    "the 'numberOfPhysicalDisks'[{count}] and number of 'physicalDisks'[{}] is not same for volume {index}",
                    disks.len()
                ),
            ));
        }
    }

    let root_volumes: Vec<usize> = software
        .iter()
        .enumerate()
        .filter(|(_, volume)| volume.root_volume == Some(true))
        .map(|(index, _)| index)
        .collect();
    if root_volumes.len() > 1 {
        errors.push(FieldError::invalid(
            "spec.raid.softwareRAIDVolumes",
            "softwareRAIDVolumes[*].rootVolume can only be set once",
        ));
    }
    if !root_volumes.is_empty() && has_root_hints {
        errors.push(FieldError::invalid(
            "spec.rootDeviceHints",
            "softwareRAIDVolumes[*].rootVolume and rootDeviceHints can not be set at the same time",
        ));
    }
    for index in root_volumes {
        if software[index].level != "1" {
            errors.push(FieldError::invalid(
                format!("spec.raid.softwareRAIDVolumes[{index}].level"),
                format!("softwareRAIDVolumes[{index}] with rootVolume set must use RAID level 1"),
            ));
        }
    }
}

fn inspection_disabled(host: &BareMetalHost) -> bool {
    host.spec.inspection_mode == Some(InspectionMode::Disabled)
        || annotation(host, INSPECT_ANNOTATION) == Some("disabled")
}

fn annotation<'a>(host: &'a BareMetalHost, key: &str) -> Option<&'a str> {
    host.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn check_driver_support(host: &BareMetalHost, address: &BmcAddress, errors: &mut Vec<FieldError>) {
    let spec = &host.spec;
    let capabilities = address.capabilities();
    let driver = &address.scheme;

    let hardware_raid = spec
        .raid
        .as_ref()
        .and_then(|raid| raid.hardware_raid_volumes.as_ref());
    if hardware_raid.is_some_and(|volumes| !volumes.is_empty()) && !capabilities.raid {
        errors.push(FieldError::forbidden(
            "spec.raid.hardwareRAIDVolumes",
            format!("BMC driver {driver} does not support configuring RAID"),
        ));
    }

    let mac_missing = spec
        .boot_mac_address
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    if (capabilities.needs_mac || inspection_disabled(host)) && mac_missing {
        errors.push(FieldError::required(
            "spec.bootMACAddress",
            format!("BMC driver {driver} requires a BootMACAddress value"),
        ));
    }

    if spec.boot_mode == Some(BootMode::UefiSecureBoot) && !capabilities.secure_boot {
        errors.push(FieldError::forbidden(
            "spec.bootMode",
            format!("BMC driver {driver} does not support secure boot"),
        ));
    }
}

fn check_boot_mac(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    let Some(mac) = spec
        .boot_mac_address
        .as_deref()
        .filter(|mac| !mac.is_empty())
    else {
        return;
    };
    if parse_mac(mac).is_none() {
        errors.push(FieldError::invalid(
            "spec.bootMACAddress",
            format!("address {mac}: invalid MAC address"),
        ));
    }
}

fn check_root_device_name(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    let Some(name) = spec
        .root_device_hints
        .as_ref()
        .and_then(|hints| hints.device_name.as_deref())
    else {
        return;
    };
    let rest = name
        .strip_prefix("/dev/disk/by-path/")
        .or_else(|| name.strip_prefix("/dev/"));
    match rest {
        None => errors.push(FieldError::invalid(
            "spec.rootDeviceHints.deviceName",
            format!("device name of root device hint must be a /dev/ path, not {name:?}"),
        )),
        Some(rest) if rest.is_empty() || rest.contains('/') => errors.push(FieldError::invalid(
            "spec.rootDeviceHints.deviceName",
            format!("device name of root device hint must be path in /dev/ or /dev/disk/by-path/, not {name:?}"),
        )),
        Some(_) => {}
    }
}

fn check_image(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    let Some(image) = &spec.image else {
        return;
    };
    super::capm3::check_image_source(
        "spec.image",
        &image.url,
        image.checksum.as_deref(),
        image.disk_format,
        errors,
    );
}

fn check_annotations(host: &BareMetalHost, errors: &mut Vec<FieldError>) {
    let Some(annotations) = &host.metadata.annotations else {
        return;
    };
    for (key, value) in annotations {
        let path = format!("metadata.annotations[{key}]");
        match key.as_str() {
            INSPECT_ANNOTATION if !matches!(value.as_str(), "" | "disabled") => errors.push(FieldError::new(
                ErrorKind::NotSupported,
                path,
                format!("invalid value {value:?} for {INSPECT_ANNOTATION}: only \"\" (re-inspect) and \"disabled\" are allowed"),
            )),
            HARDWARE_DETAILS_ANNOTATION => check_hardware_details(host, value, &path, errors),
            STATUS_ANNOTATION => check_status_annotation(value, &path, errors),
            _ if key == REBOOT_ANNOTATION || key.starts_with("reboot.metal3.io/") => {
                check_reboot_annotation(value, &path, errors);
            }
            _ => {}
        }
    }
}

fn check_hardware_details(
    host: &BareMetalHost,
    value: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if value.is_empty() {
        return;
    }
    if !inspection_disabled(host) {
        errors.push(FieldError::invalid(
            path,
            "when hardware details are provided, inspection must be disabled (annotation inspect.metal3.io: disabled or spec.inspectionMode: disabled)",
        ));
    }
    if let Err(message) = strict_decode::<HardwareDetails>(value) {
        errors.push(FieldError::invalid(
            path,
            format!("hardware details: {message}"),
        ));
    }
}

fn check_status_annotation(value: &str, path: &str, errors: &mut Vec<FieldError>) {
    let status = match strict_decode::<BareMetalHostStatus>(value) {
        Ok(status) => status,
        Err(message) => {
            errors.push(FieldError::invalid(path, format!("status: {message}")));
            return;
        }
    };
    let allowed_status = !matches!(status.operational_status, OperationalStatus::Servicing);
    if !allowed_status {
        errors.push(FieldError::new(
            ErrorKind::NotSupported,
            path,
            "invalid operationalStatus \"servicing\" in status annotation",
        ));
    }
    if status.error_type == Some(ErrorType::Servicing) {
        errors.push(FieldError::new(
            ErrorKind::NotSupported,
            path,
            "invalid errorType \"servicing error\" in status annotation",
        ));
    }
}

fn check_reboot_annotation(value: &str, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_empty() {
        return;
    }
    let mode = serde_json::from_str::<BTreeMap<String, Value>>(value)
        .map_err(|error| error.to_string())
        .and_then(|fields| reboot_mode(&fields));
    if let Err(message) = mode {
        errors.push(FieldError::invalid(path, format!("reboot annotation must be empty or JSON {{\"mode\": \"hard\"|\"soft\", \"force\": bool}}: {message}")));
    }
}

fn reboot_mode(fields: &BTreeMap<String, Value>) -> Result<(), String> {
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("mode", Value::String(mode)) if matches!(mode.as_str(), "" | "hard" | "soft") => {}
            ("mode", other) => return Err(format!("invalid mode {other}")),
            ("force", Value::Bool(_)) => {}
            ("force", other) => return Err(format!("force must be a boolean, found {other}")),
            (other, _) => return Err(format!("unknown field {other:?}")),
        }
    }
    Ok(())
}

/// Decodes JSON into `T`, refusing fields `T` does not know (like Go's DisallowUnknownFields).
fn strict_decode<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, String> {
    let raw: Value =
        serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))?;
    let typed: T = serde_json::from_value(raw.clone()).map_err(|error| error.to_string())?;
    let known = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    match unknown_field(&raw, &known, "") {
        Some(field) => Err(format!("unknown field {field:?}")),
        None => Ok(typed),
    }
}

fn unknown_field(raw: &Value, known: &Value, path: &str) -> Option<String> {
    match (raw, known) {
        (Value::Object(raw), Value::Object(known)) => raw.iter().find_map(|(key, value)| {
            let child = format!("{path}{}{key}", if path.is_empty() { "" } else { "." });
            match known.get(key) {
                Some(known_value) => unknown_field(value, known_value, &child),
                None if value.is_null() => None,
                None => Some(child),
            }
        }),
        (Value::Array(raw), Value::Array(known)) => {
            raw.iter()
                .zip(known)
                .enumerate()
                .find_map(|(index, (raw, known))| {
                    unknown_field(raw, known, &format!("{path}[{index}]"))
                })
        }
        _ => None,
    }
}

fn check_inspection_mode(
    host: &BareMetalHost,
    address: Option<&BmcAddress>,
    errors: &mut Vec<FieldError>,
) {
    let Some(mode) = host.spec.inspection_mode else {
        return;
    };
    let annotation_disabled = annotation(host, INSPECT_ANNOTATION) == Some("disabled");
    if annotation_disabled && mode != InspectionMode::Disabled {
        errors.push(FieldError::invalid(
            "spec.inspectionMode",
            format!("inspectionMode {mode:?} contradicts annotation inspect.metal3.io: disabled"),
        ));
    }
    if let Some(address) = address
        .filter(|address| mode == InspectionMode::Fast && !address.capabilities().fast_inspection)
    {
        errors.push(FieldError::forbidden(
            "spec.inspectionMode",
            format!(
                "BMC driver {} does not support fast (out-of-band) inspection",
                address.scheme
            ),
        ));
    }
}

fn check_power(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    if spec.disable_power_off == Some(true) && !spec.online {
        errors.push(FieldError::invalid(
            "spec.online",
            "node can't simultaneously have online set to false and have power off disabled",
        ));
    }
}

fn check_network_interfaces(spec: &BareMetalHostSpec, errors: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (index, interface) in spec.network_interfaces.iter().flatten().enumerate() {
        let path = format!("spec.networkInterfaces[{index}]");
        let selector = match (interface.name.as_deref(), interface.mac_address.as_deref()) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::invalid(
                    &path,
                    "name and macAddress are mutually exclusive",
                ));
                continue;
            }
            (None, None) => {
                errors.push(FieldError::required(
                    &path,
                    "either name or macAddress must be set",
                ));
                continue;
            }
            (Some(name), None) => format!("name:{}", name.to_lowercase()),
            (None, Some(mac)) => format!("mac:{}", mac.to_lowercase()),
        };
        if !seen.insert(selector.clone()) {
            errors.push(FieldError::new(
                ErrorKind::Duplicate,
                path,
                format!("duplicate interface selector {selector}"),
            ));
        }
    }
}

fn check_address_change(old: &BareMetalHost, new: &BareMetalHost, errors: &mut Vec<FieldError>) {
    let address = |host: &BareMetalHost| {
        host.spec
            .bmc
            .as_ref()
            .map(|bmc| bmc.address.clone())
            .unwrap_or_default()
    };
    let (old_address, new_address) = (address(old), address(new));
    if old_address.is_empty() || old_address == new_address {
        return;
    }
    let detached = |host: &BareMetalHost| {
        host.status
            .as_ref()
            .is_some_and(|status| status.operational_status == OperationalStatus::Detached)
    };
    let registering = |host: &BareMetalHost| state(host) == ProvisioningState::Registering;
    if !(detached(old) || detached(new) || registering(old) || registering(new)) {
        errors.push(FieldError::forbidden(
            "spec.bmc.address",
            "BMC address can not be changed if the BMH is not in the Registering state, or if the BMH is not detached",
        ));
    }
}

fn state(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state.canonical())
        .unwrap_or_default()
}

fn check_boot_mac_change(old: &BareMetalHost, new: &BareMetalHost, errors: &mut Vec<FieldError>) {
    let mac = |host: &BareMetalHost| {
        host.spec
            .boot_mac_address
            .clone()
            .unwrap_or_default()
            .to_lowercase()
    };
    let (old_mac, new_mac) = (mac(old), mac(new));
    if !old_mac.is_empty() && old_mac != new_mac {
        errors.push(FieldError::forbidden(
            "spec.bootMACAddress",
            "bootMACAddress can not be changed once it is set",
        ));
    }
}

fn check_externally_provisioned_change(
    old: &BareMetalHost,
    new: &BareMetalHost,
    errors: &mut Vec<FieldError>,
) {
    let enabled = |host: &BareMetalHost| host.spec.externally_provisioned == Some(true);
    if enabled(old) || !enabled(new) {
        return;
    }
    let available = |host: &BareMetalHost| state(host) == ProvisioningState::Available;
    if !available(old) && !available(new) {
        let current = serde_json::to_value(state(old))
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        errors.push(FieldError::forbidden(
            "spec.externallyProvisioned",
            format!("externallyProvisioned can only be enabled when in Available state, currently in {current:?}"),
        ));
    }
}

fn warn_multicast_mac(spec: &BareMetalHostSpec, warnings: &mut Vec<FieldWarning>) {
    let Some(bytes) = spec.boot_mac_address.as_deref().and_then(parse_mac) else {
        return;
    };
    if bytes.first().is_some_and(|first| first & 1 == 1) {
        warnings.push(FieldWarning::new(
            "spec.bootMACAddress",
            "this is a broadcast/multicast address; a NIC never boots from it, so the host will not be found on the provisioning network",
        ));
    }
}

fn warn_certificate_flag_without_tls(spec: &BareMetalHostSpec, warnings: &mut Vec<FieldWarning>) {
    let Some(bmc) = &spec.bmc else {
        return;
    };
    let flag_set = bmc.disable_certificate_verification == Some(true);
    let plain_ipmi =
        bmc::parse(&bmc.address).is_ok_and(|address| !address.driver.has_transport_variants());
    if flag_set && plain_ipmi {
        warnings.push(FieldWarning::new(
            "spec.bmc.disableCertificateVerification",
            "has no effect: IPMI does not use TLS certificates",
        ));
    }
}

/// Cloud images named `*.img` or `*.qcow2` are almost always qcow2; written raw they do not boot.
fn warn_raw_format_for_qcow2_name(spec: &BareMetalHostSpec, warnings: &mut Vec<FieldWarning>) {
    let Some(image) = &spec.image else {
        return;
    };
    let path = image
        .url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let looks_qcow2 = path.ends_with(".qcow2") || path.ends_with(".img");
    if image.disk_format == Some(DiskFormat::Raw) && looks_qcow2 {
        warnings.push(FieldWarning::new(
            "spec.image.format",
            format!(
                "format raw declared for {:?}, whose name suggests a qcow2 image; a qcow2 file written as raw will not boot (use format: qcow2 or a .raw image)",
                image.url
            ),
        ));
    }
}

fn warn_deprecated_fields(spec: &BareMetalHostSpec, warnings: &mut Vec<FieldWarning>) {
    if spec
        .hardware_profile
        .as_deref()
        .is_some_and(|profile| !profile.is_empty())
    {
        warnings.push(FieldWarning::new(
            "spec.hardwareProfile",
            "deprecated: use spec.rootDeviceHints to choose the root disk",
        ));
    }
    if spec
        .taints
        .as_ref()
        .is_some_and(|taints| !taints.is_empty())
    {
        warnings.push(FieldWarning::new(
            "spec.taints",
            "deprecated and never acted upon",
        ));
    }
}
