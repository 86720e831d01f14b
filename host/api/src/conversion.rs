//! Conversion between the served versions of the multi-version kinds (v1beta1 and v1beta2 of
//! the Metal3 provider and Cluster API core objects).
//!
//! Conversion works on plain JSON objects because the API server converts stored objects it
//! never needs to type. Each kind has a short list of [`Rule`]s saying how a v1beta1 field maps
//! to v1beta2. Whatever a target version cannot express is kept in the annotation
//! [`CONVERSION_DATA_ANNOTATION`] and restored when the object converts back, so converting to
//! another version and back returns the original object.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Annotation holding fields the current version cannot express, keyed by JSON pointer.
pub const CONVERSION_DATA_ANNOTATION: &str = "conversion.ingot.dev/data";

const OLD_VERSION: &str = "v1beta1";
const NEW_VERSION: &str = "v1beta2";

/// Errors from converting an object between versions.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// The object has no usable `apiVersion` or `kind`.
    #[error("object has no apiVersion/kind")]
    MissingTypeMeta,
    /// The kind or one of the versions is not convertible.
    #[error("no conversion for {kind} from {from} to {to}")]
    Unsupported {
        /// Kind of the object.
        kind: String,
        /// Its current apiVersion.
        from: String,
        /// The requested apiVersion.
        to: String,
    },
    /// The conversion-data annotation is not valid JSON.
    #[error("annotation {CONVERSION_DATA_ANNOTATION} is not a JSON object")]
    BadConversionData(#[source] serde_json::Error),
    /// A typed object could not be turned into JSON or back.
    #[error("converting between typed and JSON form")]
    Typed(#[source] serde_json::Error),
}

/// How one field differs between v1beta1 (`old`) and v1beta2 (`new`). Paths are JSON pointers.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// The same value under another name.
    Move {
        old: &'static str,
        new: &'static str,
    },
    /// A field only v1beta1 has.
    OldOnly(&'static str),
    /// An `ObjectReference` (`apiVersion`, `kind`, `name`, ...) in v1beta1 that became a
    /// contract reference (`apiGroup`, `kind`, `name`) in v1beta2.
    Reference {
        old: &'static str,
        new: &'static str,
    },
    /// A Go duration string in v1beta1 that became whole seconds in v1beta2.
    Duration {
        old: &'static str,
        new: &'static str,
    },
}

/// The standard v1beta1 → v1beta2 status reshuffle of the Cluster API contract.
const CONTRACT_STATUS: &[Rule] = &[
    Rule::Move {
        old: "/status/conditions",
        new: "/status/deprecated/v1beta1/conditions",
    },
    Rule::Move {
        old: "/status/failureReason",
        new: "/status/deprecated/v1beta1/failureReason",
    },
    Rule::Move {
        old: "/status/failureMessage",
        new: "/status/deprecated/v1beta1/failureMessage",
    },
    Rule::Move {
        old: "/status/v1beta2/conditions",
        new: "/status/conditions",
    },
];

const METAL3_MACHINE: &[Rule] = &[
    Rule::Move {
        old: "/spec/image/format",
        new: "/spec/image/diskFormat",
    },
    Rule::Move {
        old: "/status/ready",
        new: "/status/initialization/provisioned",
    },
];

const METAL3_MACHINE_TEMPLATE: &[Rule] = &[Rule::Move {
    old: "/spec/template/spec/image/format",
    new: "/spec/template/spec/image/diskFormat",
}];

const METAL3_CLUSTER: &[Rule] = &[
    Rule::OldOnly("/spec/noCloudProvider"),
    Rule::Move {
        old: "/status/ready",
        new: "/status/initialization/provisioned",
    },
];

const CLUSTER: &[Rule] = &[
    Rule::Reference {
        old: "/spec/controlPlaneRef",
        new: "/spec/controlPlaneRef",
    },
    Rule::Reference {
        old: "/spec/infrastructureRef",
        new: "/spec/infrastructureRef",
    },
    Rule::Move {
        old: "/status/infrastructureReady",
        new: "/status/initialization/infrastructureProvisioned",
    },
    Rule::Move {
        old: "/status/controlPlaneReady",
        new: "/status/initialization/controlPlaneInitialized",
    },
];

const MACHINE: &[Rule] = &[
    Rule::Reference {
        old: "/spec/infrastructureRef",
        new: "/spec/infrastructureRef",
    },
    Rule::Reference {
        old: "/spec/bootstrap/configRef",
        new: "/spec/bootstrap/configRef",
    },
    Rule::Duration {
        old: "/spec/nodeDrainTimeout",
        new: "/spec/deletion/nodeDrainTimeoutSeconds",
    },
    Rule::Duration {
        old: "/spec/nodeVolumeDetachTimeout",
        new: "/spec/deletion/nodeVolumeDetachTimeoutSeconds",
    },
    Rule::Duration {
        old: "/spec/nodeDeletionTimeout",
        new: "/spec/deletion/nodeDeletionTimeoutSeconds",
    },
    Rule::Move {
        old: "/status/bootstrapReady",
        new: "/status/initialization/bootstrapDataSecretCreated",
    },
    Rule::Move {
        old: "/status/infrastructureReady",
        new: "/status/initialization/infrastructureProvisioned",
    },
];

/// MachineSet and MachineDeployment share the Machine template rules.
const MACHINE_TEMPLATE_OWNER: &[Rule] = &[
    Rule::Reference {
        old: "/spec/template/spec/infrastructureRef",
        new: "/spec/template/spec/infrastructureRef",
    },
    Rule::Reference {
        old: "/spec/template/spec/bootstrap/configRef",
        new: "/spec/template/spec/bootstrap/configRef",
    },
    Rule::Duration {
        old: "/spec/template/spec/nodeDrainTimeout",
        new: "/spec/template/spec/deletion/nodeDrainTimeoutSeconds",
    },
    Rule::Duration {
        old: "/spec/template/spec/nodeVolumeDetachTimeout",
        new: "/spec/template/spec/deletion/nodeVolumeDetachTimeoutSeconds",
    },
    Rule::Duration {
        old: "/spec/template/spec/nodeDeletionTimeout",
        new: "/spec/template/spec/deletion/nodeDeletionTimeoutSeconds",
    },
];

/// The rules of a convertible kind, or `None` when the kind has a single version.
fn rules_for(group: &str, kind: &str) -> Option<Vec<Rule>> {
    let specific: &[Rule] = match (group, kind) {
        (crate::CAPM3_GROUP, "Metal3Machine") => METAL3_MACHINE,
        (crate::CAPM3_GROUP, "Metal3MachineTemplate") => METAL3_MACHINE_TEMPLATE,
        (crate::CAPM3_GROUP, "Metal3Cluster") => METAL3_CLUSTER,
        (crate::CAPI_GROUP, "Cluster") => CLUSTER,
        (crate::CAPI_GROUP, "Machine") => MACHINE,
        (crate::CAPI_GROUP, "MachineSet" | "MachineDeployment") => MACHINE_TEMPLATE_OWNER,
        _ => return None,
    };
    let status_rules = if kind == "Metal3MachineTemplate" {
        &[][..]
    } else {
        CONTRACT_STATUS
    };
    Some(specific.iter().chain(status_rules).copied().collect())
}

/// Whether objects of `group`/`kind` can be converted between v1beta1 and v1beta2.
pub fn is_convertible(group: &str, kind: &str) -> bool {
    rules_for(group, kind).is_some()
}

/// Converts `object` to `desired_api_version` (`<group>/v1beta1` or `<group>/v1beta2`).
///
/// Converting to the version the object already has returns it unchanged.
///
/// # Errors
/// [`ConversionError::Unsupported`] for kinds or versions without a conversion, and
/// [`ConversionError::BadConversionData`] when the carried-over field annotation is corrupt.
pub fn convert(mut object: Value, desired_api_version: &str) -> Result<Value, ConversionError> {
    let (api_version, kind) = type_meta(&object)?;
    if api_version == desired_api_version {
        return Ok(object);
    }

    let unsupported = || ConversionError::Unsupported {
        kind: kind.clone(),
        from: api_version.clone(),
        to: desired_api_version.to_string(),
    };
    let (group, from) = api_version.split_once('/').ok_or_else(unsupported)?;
    let (desired_group, to) = desired_api_version
        .split_once('/')
        .ok_or_else(unsupported)?;
    let rules = rules_for(group, &kind)
        .filter(|_| group == desired_group)
        .ok_or_else(unsupported)?;

    let mut stash = take_stash(&mut object)?;
    match (from, to) {
        (OLD_VERSION, NEW_VERSION) => rules
            .iter()
            .for_each(|rule| upgrade(&mut object, *rule, &mut stash)),
        (NEW_VERSION, OLD_VERSION) => rules
            .iter()
            .rev()
            .for_each(|rule| downgrade(&mut object, *rule, &mut stash)),
        _ => return Err(unsupported()),
    }
    put_stash(&mut object, stash);
    set_pointer(
        &mut object,
        "/apiVersion",
        Value::String(desired_api_version.to_string()),
    );
    Ok(object)
}

/// Converts a typed object into another typed version through [`convert`].
///
/// # Errors
/// As [`convert`], plus [`ConversionError::Typed`] when the result does not fit `To`.
pub fn convert_typed<From: Serialize, To: DeserializeOwned>(
    object: &From,
    desired_api_version: &str,
) -> Result<To, ConversionError> {
    let value = serde_json::to_value(object).map_err(ConversionError::Typed)?;
    let converted = convert(value, desired_api_version)?;
    serde_json::from_value(converted).map_err(ConversionError::Typed)
}

fn type_meta(object: &Value) -> Result<(String, String), ConversionError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some(api_version), Some(kind)) => Ok((api_version.to_string(), kind.to_string())),
        _ => Err(ConversionError::MissingTypeMeta),
    }
}

fn upgrade(object: &mut Value, rule: Rule, stash: &mut Map<String, Value>) {
    match rule {
        Rule::Move { old, new } => move_value(object, old, new),
        Rule::OldOnly(path) => {
            if let Some(value) = take_pointer(object, path) {
                stash.insert(path.to_string(), value);
            }
        }
        Rule::Reference { old, new } => {
            let Some(reference) = take_pointer(object, old) else {
                return;
            };
            let converted = contract_reference(&reference);
            if object_reference(&converted) != reference {
                stash.insert(old.to_string(), reference);
            }
            set_pointer(object, new, converted);
        }
        Rule::Duration { old, new } => {
            let Some(text) = take_pointer(object, old) else {
                return;
            };
            match text.as_str().and_then(parse_go_duration_seconds) {
                Some(seconds) => {
                    set_pointer(object, new, Value::from(seconds));
                    if format!("{seconds}s") != text.as_str().unwrap_or_default() {
                        stash.insert(old.to_string(), text);
                    }
                }
                None => {
                    stash.insert(old.to_string(), text);
                }
            }
        }
    }
}

fn downgrade(object: &mut Value, rule: Rule, stash: &mut Map<String, Value>) {
    match rule {
        Rule::Move { old, new } => move_value(object, new, old),
        Rule::OldOnly(path) => {
            if let Some(value) = stash.remove(path) {
                set_pointer(object, path, value);
            }
        }
        Rule::Reference { old, new } => {
            let original = stash.remove(old);
            let Some(reference) = take_pointer(object, new) else {
                return;
            };
            let restored = original
                .filter(|original| contract_reference(original) == reference)
                .unwrap_or_else(|| object_reference(&reference));
            set_pointer(object, old, restored);
        }
        Rule::Duration { old, new } => {
            let original = stash.remove(old);
            let Some(seconds) = take_pointer(object, new) else {
                if let Some(original) = original {
                    set_pointer(object, old, original);
                }
                return;
            };
            let seconds_text = format!("{}s", seconds.as_i64().unwrap_or_default());
            let restored = original
                .filter(|original| {
                    original.as_str().and_then(parse_go_duration_seconds) == seconds.as_i64()
                })
                .unwrap_or(Value::String(seconds_text));
            set_pointer(object, old, restored);
        }
    }
}

fn contract_reference(reference: &Value) -> Value {
    let mut converted = Map::new();
    let group = reference
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|api_version| api_version.rsplit_once('/').map_or("", |(group, _)| group));
    if let Some(group) = group {
        converted.insert("apiGroup".into(), Value::String(group.to_string()));
    }
    for field in ["kind", "name"] {
        if let Some(value) = reference.get(field) {
            converted.insert(field.into(), value.clone());
        }
    }
    Value::Object(converted)
}

/// Without the original reference the version is unknown; v1beta1 objects refer to the
/// v1beta1 contract, so that version is assumed.
fn object_reference(reference: &Value) -> Value {
    let mut converted = Map::new();
    if let Some(group) = reference.get("apiGroup").and_then(Value::as_str) {
        let api_version = if group.is_empty() {
            OLD_VERSION.to_string()
        } else {
            format!("{group}/{OLD_VERSION}")
        };
        converted.insert("apiVersion".into(), Value::String(api_version));
    }
    for field in ["kind", "name"] {
        if let Some(value) = reference.get(field) {
            converted.insert(field.into(), value.clone());
        }
    }
    Value::Object(converted)
}

/// Whole seconds of a Go duration such as `1h30m`, `90s` or `0s`; `None` for fractions,
/// negative values or anything unparsable.
fn parse_go_duration_seconds(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut total = 0i64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: i64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match rest.get(..unit_len)? {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(factor)?)?;
        rest = rest.get(unit_len..)?;
    }
    Some(total)
}

fn move_value(object: &mut Value, from: &str, to: &str) {
    if let Some(value) = take_pointer(object, from) {
        set_pointer(object, to, value);
    }
}

fn take_stash(object: &mut Value) -> Result<Map<String, Value>, ConversionError> {
    let pointer = format!(
        "/metadata/annotations/{}",
        escape(CONVERSION_DATA_ANNOTATION)
    );
    let Some(Value::String(text)) = take_pointer(object, &pointer) else {
        return Ok(Map::new());
    };
    serde_json::from_str(&text).map_err(ConversionError::BadConversionData)
}

fn put_stash(object: &mut Value, stash: Map<String, Value>) {
    if stash.is_empty() {
        return;
    }
    let text = Value::Object(stash).to_string();
    let pointer = format!(
        "/metadata/annotations/{}",
        escape(CONVERSION_DATA_ANNOTATION)
    );
    set_pointer(object, &pointer, Value::String(text));
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Removes the value at `pointer`, then removes parents the removal left empty.
fn take_pointer(object: &mut Value, pointer: &str) -> Option<Value> {
    let segments: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    take_segments(object, &segments)
}

fn take_segments(node: &mut Value, segments: &[String]) -> Option<Value> {
    let (first, rest) = segments.split_first()?;
    let map = node.as_object_mut()?;
    if rest.is_empty() {
        return map.remove(first);
    }
    let child = map.get_mut(first)?;
    let taken = take_segments(child, rest)?;
    if child.as_object().is_some_and(Map::is_empty) {
        map.remove(first);
    }
    Some(taken)
}

/// Sets the value at `pointer`, creating missing parent objects.
fn set_pointer(object: &mut Value, pointer: &str, value: Value) {
    let segments: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = object;
    for segment in parents {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        node = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metal3_machine_template_renames_format_both_ways() {
        let old = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "Metal3MachineTemplate",
            "metadata": {"name": "workers"},
            "spec": {"template": {"spec": {"image": {"url": "http://x/i.raw", "checksum": "abc", "format": "raw"}}}}
        });
        let new =
            convert(old.clone(), "infrastructure.cluster.x-k8s.io/v1beta2").expect("converts");
        assert_eq!(
            new.pointer("/spec/template/spec/image/diskFormat"),
            Some(&json!("raw"))
        );
        assert_eq!(new.pointer("/spec/template/spec/image/format"), None);
        assert_eq!(new.pointer("/metadata/annotations"), None);

        let back = convert(new, "infrastructure.cluster.x-k8s.io/v1beta1").expect("converts back");
        assert_eq!(back, old);
    }

    #[test]
    fn metal3_cluster_keeps_no_cloud_provider_across_a_round_trip() {
        let old = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "Metal3Cluster",
            "metadata": {"name": "c"},
            "spec": {"noCloudProvider": true, "controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}},
            "status": {"ready": true, "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        });
        let new =
            convert(old.clone(), "infrastructure.cluster.x-k8s.io/v1beta2").expect("converts");
        assert_eq!(new.pointer("/spec/noCloudProvider"), None);
        assert_eq!(
            new.pointer("/status/initialization/provisioned"),
            Some(&json!(true))
        );
        assert!(
            new.pointer("/status/deprecated/v1beta1/conditions")
                .is_some()
        );
        assert!(
            new.pointer("/metadata/annotations/conversion.ingot.dev~1data")
                .is_some()
        );

        let back = convert(new, "infrastructure.cluster.x-k8s.io/v1beta1").expect("converts back");
        assert_eq!(back, old);
    }

    #[test]
    fn metal3_machine_status_moves_conditions_between_contracts() {
        let new = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
            "kind": "Metal3Machine",
            "metadata": {"name": "m"},
            "spec": {"image": {"url": "http://x/i.qcow2", "checksum": "abc", "diskFormat": "qcow2"}},
            "status": {
                "initialization": {"provisioned": false},
                "conditions": [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "deprecated": {"v1beta1": {"failureReason": "x"}}
            }
        });
        let old =
            convert(new.clone(), "infrastructure.cluster.x-k8s.io/v1beta1").expect("converts");
        assert_eq!(old.pointer("/status/ready"), Some(&json!(false)));
        assert_eq!(old.pointer("/status/failureReason"), Some(&json!("x")));
        assert!(old.pointer("/status/v1beta2/conditions/0").is_some());
        assert_eq!(old.pointer("/spec/image/format"), Some(&json!("qcow2")));

        let back = convert(old, "infrastructure.cluster.x-k8s.io/v1beta2").expect("converts back");
        assert_eq!(back, new);
    }

    #[test]
    fn machine_references_and_timeouts_round_trip() {
        let old = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Machine",
            "metadata": {"name": "m", "annotations": {"keep": "me"}},
            "spec": {
                "clusterName": "c",
                "bootstrap": {"configRef": {"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfig", "name": "m", "namespace": "ns"}},
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "Metal3Machine", "name": "m"},
                "nodeDrainTimeout": "1m30s",
                "nodeDeletionTimeout": "10s"
            }
        });
        let new = convert(old.clone(), "cluster.x-k8s.io/v1beta2").expect("converts");
        assert_eq!(
            new.pointer("/spec/infrastructureRef"),
            Some(
                &json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "Metal3Machine", "name": "m"})
            )
        );
        assert_eq!(
            new.pointer("/spec/deletion/nodeDrainTimeoutSeconds"),
            Some(&json!(90))
        );
        assert_eq!(
            new.pointer("/spec/deletion/nodeDeletionTimeoutSeconds"),
            Some(&json!(10))
        );

        let back = convert(new, "cluster.x-k8s.io/v1beta1").expect("converts back");
        assert_eq!(back, old);
    }

    #[test]
    fn new_references_get_the_v1beta1_contract_version_when_nothing_was_kept() {
        let new = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "MachineSet",
            "metadata": {"name": "ms"},
            "spec": {"clusterName": "c", "template": {"spec": {"clusterName": "c",
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "Metal3MachineTemplate", "name": "t"},
                "deletion": {"nodeDrainTimeoutSeconds": 0}}}}
        });
        let old = convert(new.clone(), "cluster.x-k8s.io/v1beta1").expect("converts");
        assert_eq!(
            old.pointer("/spec/template/spec/infrastructureRef/apiVersion"),
            Some(&json!("infrastructure.cluster.x-k8s.io/v1beta1"))
        );
        assert_eq!(
            old.pointer("/spec/template/spec/nodeDrainTimeout"),
            Some(&json!("0s"))
        );
        let again = convert(old, "cluster.x-k8s.io/v1beta2").expect("converts back");
        assert_eq!(again, new);
    }

    #[test]
    fn unknown_kinds_and_versions_are_refused() {
        let host = json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost"});
        assert!(matches!(
            convert(host, "metal3.io/v1beta1"),
            Err(ConversionError::Unsupported { .. })
        ));

        let old = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha4", "kind": "Metal3Machine"});
        assert!(matches!(
            convert(old, "infrastructure.cluster.x-k8s.io/v1beta2"),
            Err(ConversionError::Unsupported { .. })
        ));
        assert!(matches!(
            convert(json!({}), "v1"),
            Err(ConversionError::MissingTypeMeta)
        ));
    }

    #[test]
    fn go_durations_parse_to_whole_seconds() {
        assert_eq!(parse_go_duration_seconds("1h2m3s"), Some(3723));
        assert_eq!(parse_go_duration_seconds("0s"), Some(0));
        assert_eq!(parse_go_duration_seconds("1.5s"), None);
        assert_eq!(parse_go_duration_seconds("10"), None);
    }
}
