//! Admission rules for Metal3Machine and Metal3MachineTemplate (checked in their v1beta2 form;
//! convert v1beta1 objects with [`crate::conversion`] first).

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use super::{ErrorKind, FieldError};
use crate::capm3::v1beta2::{Metal3Machine, Metal3MachineSpec, Metal3MachineTemplate};
use crate::metal3::DiskFormat;
use crate::selector::SELECTION_OPERATORS;
use crate::url;

/// URL schemes an image may be downloaded from.
pub const IMAGE_URL_SCHEMES: &[&str] = &["http", "https", "ftp", "gopher", "oci"];

static HOST_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-_]{0,61}[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-_]{0,61}[A-Za-z0-9])$")
        .unwrap_or_else(|_| unreachable!("the host name pattern is a valid regex"))
});

/// The admission rules of a Metal3Machine.
pub fn validate_metal3_machine(machine: &Metal3Machine) -> Vec<FieldError> {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    check_machine_spec(&machine.spec, "spec", namespace)
}

/// The admission rules of a Metal3MachineTemplate (its machine spec must be valid on its own).
pub fn validate_metal3_machine_template(template: &Metal3MachineTemplate) -> Vec<FieldError> {
    let namespace = template.metadata.namespace.as_deref().unwrap_or_default();
    check_machine_spec(
        &template.spec.template.spec,
        "spec.template.spec",
        namespace,
    )
}

fn check_machine_spec(spec: &Metal3MachineSpec, path: &str, namespace: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let custom_deploy = spec
        .custom_deploy
        .as_ref()
        .is_some_and(|deploy| !deploy.method.is_empty());
    if !custom_deploy {
        check_image(spec, path, &mut errors);
    }
    check_references(spec, path, namespace, &mut errors);
    check_host_selector(spec, path, &mut errors);
    errors
}

fn check_image(spec: &Metal3MachineSpec, path: &str, errors: &mut Vec<FieldError>) {
    let image = match &spec.image {
        Some(image) if !image.url.is_empty() => image,
        _ => {
            errors.push(FieldError::required(
                format!("{path}.image.url"),
                "an image URL is required unless customDeploy is set",
            ));
            return;
        }
    };
    check_image_source(
        &format!("{path}.image"),
        &image.url,
        image.checksum.as_deref(),
        image.disk_format,
        errors,
    );
}

/// The URL and checksum rules shared by hosts and machines: an allowed URL, a checksum for
/// every image except live ISOs and `oci://` images, and no checksum for `oci://` images
/// (their digests are embedded).
pub(super) fn check_image_source(
    path: &str,
    url: &str,
    checksum: Option<&str>,
    format: Option<DiskFormat>,
    errors: &mut Vec<FieldError>,
) {
    if let Err(message) = check_image_url(url) {
        errors.push(FieldError::invalid(format!("{path}.url"), message));
    }
    let is_oci = url.starts_with("oci://");
    let has_checksum = checksum.is_some_and(|checksum| !checksum.is_empty());
    if is_oci && has_checksum {
        errors.push(FieldError::invalid(
            format!("{path}.checksum"),
            "checksum must be empty for OCI images (oci:// images have embedded checksums)",
        ));
    }
    if !is_oci && !has_checksum && format != Some(DiskFormat::LiveIso) {
        errors.push(FieldError::required(
            format!("{path}.checksum"),
            "checksum is required for normal images",
        ));
    }
}

/// Checks an image URL: a request URI with an allowed scheme and a real host.
///
/// Upstream only runs Go's `ParseRequestURI` and the scheme allowlist; this also refuses hosts
/// that are not a host name or IP address (such as `<IMAGE_SERVER_IP>` left in a template),
/// which Go's parser lets through.
pub fn check_image_url(text: &str) -> Result<(), String> {
    let parsed =
        url::parse_request_uri(text).map_err(|error| format!("invalid URL {text:?}: {error}"))?;
    if !IMAGE_URL_SCHEMES.contains(&parsed.scheme.as_str()) {
        return Err(format!(
            "URL scheme {:?} is not supported (use one of {})",
            parsed.scheme,
            IMAGE_URL_SCHEMES.join(", ")
        ));
    }
    let host = parsed.hostname();
    if host.is_empty() {
        return Err(format!("URL {text:?} has no host"));
    }
    if host.parse::<IpAddr>().is_err() && !HOST_NAME.is_match(host) {
        return Err(format!(
            "URL host {host:?} is not a valid host name or IP address"
        ));
    }
    Ok(())
}

fn check_references(
    spec: &Metal3MachineSpec,
    path: &str,
    namespace: &str,
    errors: &mut Vec<FieldError>,
) {
    let references = [
        ("userData", &spec.user_data),
        ("metaData", &spec.meta_data),
        ("networkData", &spec.network_data),
    ];
    for (field, reference) in references {
        if let Some(message) = super::bmh::cross_namespace(reference.as_ref(), namespace, field) {
            errors.push(FieldError::forbidden(
                format!("{path}.{field}.namespace"),
                message,
            ));
        }
    }
    let template_namespace = spec
        .data_template
        .as_ref()
        .and_then(|template| template.namespace.as_deref());
    if let Some(target) =
        template_namespace.filter(|target| !target.is_empty() && *target != namespace)
    {
        errors.push(FieldError::forbidden(
            format!("{path}.dataTemplate.namespace"),
            format!("dataTemplate must be in the object's namespace {namespace:?}, not {target:?}"),
        ));
    }
}

fn check_host_selector(spec: &Metal3MachineSpec, path: &str, errors: &mut Vec<FieldError>) {
    let expressions = spec
        .host_selector
        .as_ref()
        .and_then(|selector| selector.match_expressions.as_ref());
    for (index, requirement) in expressions.into_iter().flatten().enumerate() {
        let at = format!("{path}.hostSelector.matchExpressions[{index}]");
        let operator = requirement.operator.to_lowercase();
        let values = requirement.values.as_deref().unwrap_or_default();
        if !SELECTION_OPERATORS.contains(&operator.as_str()) {
            errors.push(FieldError::new(
                ErrorKind::NotSupported,
                format!("{at}.operator"),
                format!(
                    "{:?} is not a selection operator (use one of {})",
                    requirement.operator,
                    SELECTION_OPERATORS.join(", ")
                ),
            ));
            continue;
        }
        if let Some(problem) = operator_value_problem(&operator, values) {
            errors.push(FieldError::invalid(format!("{at}.values"), problem));
        }
        for problem in super::meta::label_key_problems(&requirement.key) {
            errors.push(FieldError::invalid(format!("{at}.key"), problem));
        }
    }
}

/// The value-count rules of label requirements, per operator.
fn operator_value_problem(operator: &str, values: &[String]) -> Option<String> {
    match operator {
        "in" | "notin" if values.is_empty() => {
            Some(format!("operator {operator} needs at least one value"))
        }
        "=" | "==" | "!=" if values.len() != 1 => {
            Some(format!("operator {operator} needs exactly one value"))
        }
        "exists" | "!" if !values.is_empty() => {
            Some(format!("operator {operator} takes no values"))
        }
        "gt" | "lt" => match values {
            [value] if value.parse::<i64>().is_ok() => None,
            _ => Some(format!(
                "operator {operator} needs exactly one integer value"
            )),
        },
        _ => None,
    }
}
