//! Upstream example manifests survive a trip through the Rust types unchanged, and converting
//! the multi-version kinds to the other version and back gives the original object.
//!
//! The examples come from `../shared/fixtures/upstream-examples` (skipped when absent) and from
//! this crate's own fixtures. Cluster-template variables (`${VAR}`) are rendered first, as
//! `clusterctl generate` would.

use std::io::Write;
use std::path::{Path, PathBuf};

use ingot_api::{capi, capm3, conversion, metal3};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Values for the cluster-template variables the examples use.
const VARIABLES: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "lab"),
    ("NAMESPACE", "metal3"),
    ("WORKER_MACHINE_COUNT", "2"),
    ("KUBERNETES_VERSION", "v1.35.0"),
    ("IMAGE_CHECKSUM_TYPE", "sha256"),
    ("IMAGE_FORMAT", "raw"),
    ("IMAGE_URL", "http://192.0.2.1/node.raw"),
    ("IMAGE_CHECKSUM", "http://192.0.2.1/node.raw.sha256sum"),
    ("IMAGE_RAW_URL", "http://192.0.2.1/node.raw"),
    ("IMAGE_RAW_CHECKSUM", "http://192.0.2.1/node.raw.sha256sum"),
    (
        "PROVIDER_ID_FORMAT",
        "metal3://{{ ds.meta_data.providerid }}",
    ),
    (
        "SSH_PUB_KEY_CONTENT",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample lab",
    ),
];

/// Upstream files that are known not to match the upstream schema (their own README says so).
const KNOWN_MALFORMED: &[&str] = &["capm3-metal3machine-docs-example.yaml"];

/// envsubst: `${NAME}` from [`VARIABLES`], `${NAME:-default}` falls back to its default.
fn render(text: &str) -> String {
    let pattern = regex::Regex::new(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}").expect("valid pattern");
    pattern
        .replace_all(text, |captures: &regex::Captures<'_>| {
            let known = VARIABLES
                .iter()
                .find(|(name, _)| *name == &captures[1])
                .map(|(_, value)| value.to_string());
            let fallback = captures.get(2).map(|default| default.as_str().to_string());
            known
                .or(fallback)
                .unwrap_or_else(|| panic!("no value for {}", &captures[1]))
        })
        .into_owned()
}

fn documents(text: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(yaml) => found
                .push(serde_json::to_value(yaml).expect("example documents are JSON-compatible")),
            Err(error) => panic!("example does not parse: {error}"),
        }
    }
    found
}

/// Decodes into `T` and encodes again.
fn through<T: DeserializeOwned + serde::Serialize>(object: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|error| error.to_string())?;
    serde_json::to_value(&typed).map_err(|error| error.to_string())
}

/// The typed round trip for kinds ingot models; `None` for other kinds.
fn round_trip(object: &Value) -> Option<Result<Value, String>> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    Some(match (api_version, kind) {
        ("metal3.io/v1alpha1", "BareMetalHost") => through::<metal3::BareMetalHost>(object),
        ("metal3.io/v1alpha1", "HardwareData") => through::<metal3::HardwareData>(object),
        ("metal3.io/v1alpha1", "HostClaim") => through::<metal3::HostClaim>(object),
        ("infrastructure.cluster.x-k8s.io/v1beta1", "Metal3Machine") => {
            through::<capm3::v1beta1::Metal3Machine>(object)
        }
        ("infrastructure.cluster.x-k8s.io/v1beta2", "Metal3Machine") => {
            through::<capm3::v1beta2::Metal3Machine>(object)
        }
        ("infrastructure.cluster.x-k8s.io/v1beta1", "Metal3MachineTemplate") => {
            through::<capm3::v1beta1::Metal3MachineTemplate>(object)
        }
        ("infrastructure.cluster.x-k8s.io/v1beta2", "Metal3MachineTemplate") => {
            through::<capm3::v1beta2::Metal3MachineTemplate>(object)
        }
        ("infrastructure.cluster.x-k8s.io/v1beta1", "Metal3Cluster") => {
            through::<capm3::v1beta1::Metal3Cluster>(object)
        }
        ("infrastructure.cluster.x-k8s.io/v1beta2", "Metal3Cluster") => {
            through::<capm3::v1beta2::Metal3Cluster>(object)
        }
        ("cluster.x-k8s.io/v1beta1", "Cluster") => through::<capi::v1beta1::Cluster>(object),
        ("cluster.x-k8s.io/v1beta2", "Cluster") => through::<capi::v1beta2::Cluster>(object),
        ("cluster.x-k8s.io/v1beta1", "Machine") => through::<capi::v1beta1::Machine>(object),
        ("cluster.x-k8s.io/v1beta2", "Machine") => through::<capi::v1beta2::Machine>(object),
        ("cluster.x-k8s.io/v1beta1", "MachineSet") => through::<capi::v1beta1::MachineSet>(object),
        ("cluster.x-k8s.io/v1beta2", "MachineSet") => through::<capi::v1beta2::MachineSet>(object),
        ("cluster.x-k8s.io/v1beta1", "MachineDeployment") => {
            through::<capi::v1beta1::MachineDeployment>(object)
        }
        ("cluster.x-k8s.io/v1beta2", "MachineDeployment") => {
            through::<capi::v1beta2::MachineDeployment>(object)
        }
        ("v1", "Secret") => through::<Secret>(object),
        _ => return None,
    })
}

/// Fields the types may write although the input did not have them: zero values of status
/// fields that upstream marks required (their defaults).
fn allowed_addition(path: &str, value: &Value) -> bool {
    let zero = matches!(value, Value::Bool(false))
        || value == &Value::from(0)
        || value == &Value::from("");
    let defaulted_status = [
        "status.errorCount",
        "status.provisioningFailCount",
        "status.errorMessage",
        "status.poweredOn",
        "status.operationalStatus",
        "status.provisioning.ID",
        "status.provisioning.state",
    ];
    zero && defaulted_status.contains(&path)
}

/// Differences between `original` and `copy`, treating `null` like an absent field.
fn differences(original: &Value, copy: &Value, path: &str, found: &mut Vec<String>) {
    match (original, copy) {
        (Value::Object(original), Value::Object(copy)) => {
            for (key, value) in original {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match copy.get(key) {
                    Some(copied) => differences(value, copied, &child, found),
                    None if value.is_null() => {}
                    None => found.push(format!("{child}: dropped ({value})")),
                }
            }
            for (key, value) in copy.iter().filter(|(key, _)| !original.contains_key(*key)) {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if !allowed_addition(&child, value) {
                    found.push(format!("{child}: added ({value})"));
                }
            }
        }
        (Value::Array(original), Value::Array(copy)) if original.len() == copy.len() => {
            for (index, (original, copy)) in original.iter().zip(copy).enumerate() {
                differences(original, copy, &format!("{path}[{index}]"), found);
            }
        }
        (Value::Number(original), Value::Number(copy)) if original.as_f64() == copy.as_f64() => {}
        _ if original == copy => {}
        _ => found.push(format!("{path}: {original} became {copy}")),
    }
}

fn other_version(api_version: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/')?;
    let other = match version {
        "v1beta1" => "v1beta2",
        "v1beta2" => "v1beta1",
        _ => return None,
    };
    Some(format!("{group}/{other}"))
}

/// Converting to the other served version and back must give the original.
fn conversion_problems(object: &Value) -> Vec<String> {
    let (Some(api_version), Some(kind)) = (object["apiVersion"].as_str(), object["kind"].as_str())
    else {
        return Vec::new();
    };
    let group = api_version.split('/').next().unwrap_or_default();
    let Some(other) =
        other_version(api_version).filter(|_| conversion::is_convertible(group, kind))
    else {
        return Vec::new();
    };
    let there = conversion::convert(object.clone(), &other).expect("converts to the other version");
    if round_trip(&there).is_some_and(|typed| typed.is_err()) {
        return vec![format!("{kind} converted to {other} does not decode")];
    }
    let back = conversion::convert(there, api_version).expect("converts back");
    let mut found = Vec::new();
    differences(object, &back, "", &mut found);
    found
}

struct Outcome {
    checked: Vec<String>,
    problems: Vec<String>,
}

fn check_dir(dir: &Path) -> Outcome {
    let mut outcome = Outcome {
        checked: Vec::new(),
        problems: Vec::new(),
    };
    let mut files: Vec<PathBuf> = walk(dir);
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = render(&std::fs::read_to_string(&path).expect("example readable"));
        for (index, object) in documents(&text).iter().enumerate() {
            let label = format!(
                "{name}#{} {}",
                index + 1,
                object["kind"].as_str().unwrap_or("?")
            );
            match round_trip(object) {
                None => {}
                Some(Err(error)) if KNOWN_MALFORMED.contains(&name.as_str()) => {
                    outcome
                        .checked
                        .push(format!("{label} (refused as expected: {error})"));
                }
                Some(Err(error)) => outcome
                    .problems
                    .push(format!("{label}: does not decode: {error}")),
                Some(Ok(copy)) => {
                    let mut found = Vec::new();
                    differences(object, &copy, "", &mut found);
                    found.extend(conversion_problems(object));
                    outcome.problems.extend(
                        found
                            .into_iter()
                            .map(|problem| format!("{label}: {problem}")),
                    );
                    outcome.checked.push(label);
                }
            }
        }
    }
    outcome
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("directory readable")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path
            .extension()
            .is_some_and(|extension| extension == "yaml")
        {
            files.push(path);
        }
    }
    files
}

#[test]
fn upstream_examples_round_trip_through_the_types() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/upstream-examples");
    if !dir.exists() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: ../shared/fixtures not present (looked in {})",
            dir.display()
        );
        return;
    }
    let outcome = check_dir(&dir);
    assert!(
        outcome.problems.is_empty(),
        "round-trip problems:\n{}",
        outcome.problems.join("\n")
    );
    let hosts = outcome
        .checked
        .iter()
        .filter(|label| label.ends_with("BareMetalHost"))
        .count();
    let templates = outcome
        .checked
        .iter()
        .filter(|label| label.ends_with("Metal3MachineTemplate"))
        .count();
    let deployments = outcome
        .checked
        .iter()
        .filter(|label| label.ends_with("MachineDeployment"))
        .count();
    assert!(
        hosts >= 5 && templates >= 2 && deployments >= 2,
        "too few typed documents: {:#?}",
        outcome.checked
    );
}

#[test]
fn in_repo_fixtures_round_trip_through_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/round-trip");
    let outcome = check_dir(&dir);
    assert!(
        outcome.problems.is_empty(),
        "round-trip problems:\n{}",
        outcome.problems.join("\n")
    );
    assert!(
        outcome.checked.len() >= 8,
        "too few typed documents: {:#?}",
        outcome.checked
    );
}

#[test]
fn a_dropped_field_is_detected() {
    let original =
        serde_json::json!({"spec": {"online": true, "mystery": 1}, "status": {"errorCount": 0}});
    let copy = serde_json::json!({"spec": {"online": true}, "status": {"errorCount": 0, "poweredOn": false, "surprise": 1}});
    let mut found = Vec::new();
    differences(&original, &copy, "", &mut found);
    assert_eq!(
        found,
        vec![
            "spec.mystery: dropped (1)".to_string(),
            "status.surprise: added (1)".to_string()
        ]
    );
}
