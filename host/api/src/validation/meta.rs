//! Object metadata rules every Kubernetes API server applies: names, namespaces, label and
//! annotation keys and values.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use regex::Regex;

use super::{ErrorKind, FieldError};

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|_| unreachable!("metadata patterns are valid regexes"))
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));

/// Checks name, namespace, labels and annotations of an object.
pub fn validate_object_meta(meta: &ObjectMeta, namespaced: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_name(meta, &mut errors);
    check_namespace(meta, namespaced, &mut errors);
    if let Some(labels) = &meta.labels {
        check_labels(labels, &mut errors);
    }
    if let Some(annotations) = &meta.annotations {
        check_annotations(annotations, &mut errors);
    }
    errors
}

fn check_name(meta: &ObjectMeta, errors: &mut Vec<FieldError>) {
    let has_generate_name = meta
        .generate_name
        .as_deref()
        .is_some_and(|prefix| !prefix.is_empty());
    match meta.name.as_deref() {
        None | Some("") if has_generate_name => {}
        None | Some("") => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => {
            for problem in dns1123_subdomain_problems(name) {
                errors.push(FieldError::invalid(
                    "metadata.name",
                    format!("{name:?}: {problem}"),
                ));
            }
        }
    }
}

fn check_namespace(meta: &ObjectMeta, namespaced: bool, errors: &mut Vec<FieldError>) {
    let Some(namespace) = meta
        .namespace
        .as_deref()
        .filter(|namespace| !namespace.is_empty())
    else {
        return;
    };
    if !namespaced {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on cluster-scoped objects",
        ));
        return;
    }
    for problem in dns1123_label_problems(namespace) {
        errors.push(FieldError::invalid(
            "metadata.namespace",
            format!("{namespace:?}: {problem}"),
        ));
    }
}

fn check_labels(labels: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    for (key, value) in labels {
        let path = format!("metadata.labels[{key}]");
        for problem in label_key_problems(key) {
            errors.push(FieldError::invalid(
                &path,
                format!("key {key:?}: {problem}"),
            ));
        }
        for problem in label_value_problems(value) {
            errors.push(FieldError::invalid(
                &path,
                format!("value {value:?}: {problem}"),
            ));
        }
    }
}

fn check_annotations(annotations: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    for key in annotations.keys() {
        for problem in label_key_problems(key) {
            errors.push(FieldError::invalid(
                format!("metadata.annotations[{key}]"),
                format!("key {key:?}: {problem}"),
            ));
        }
    }
    let size: usize = annotations
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if size > ANNOTATIONS_MAX_BYTES {
        errors.push(FieldError::new(
            ErrorKind::TooLong,
            "metadata.annotations",
            format!("annotations take {size} bytes, the limit is {ANNOTATIONS_MAX_BYTES}"),
        ));
    }
}

/// Problems of a DNS-1123 label (namespaces): lower-case alphanumerics and `-`, at most 63.
pub fn dns1123_label_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !DNS1123_LABEL.is_match(value) {
        problems.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into(),
        );
    }
    problems
}

/// Problems of a DNS-1123 subdomain (object names): lower-case alphanumerics, `-` and `.`.
pub fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        problems.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into(),
        );
    }
    problems
}

/// Problems of a label or annotation key: `[prefix/]name`, prefix a DNS subdomain.
pub fn label_key_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".into());
        } else {
            problems.extend(
                dns1123_subdomain_problems(prefix)
                    .into_iter()
                    .map(|problem| format!("prefix part {problem}")),
            );
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".into());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            problems.push(format!(
                "name part must be no more than {QUALIFIED_NAME_MAX} characters"
            ));
        }
        if !QUALIFIED_NAME.is_match(name) {
            problems.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into(),
            );
        }
    }
    problems
}

/// Problems of a label value: empty, or like a key's name part.
pub fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.is_empty() {
        return problems;
    }
    if value.len() > LABEL_VALUE_MAX {
        problems.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !QUALIFIED_NAME.is_match(value) {
        problems.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into(),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(Into::into),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn names_must_be_lowercase_subdomains() {
        assert!(validate_object_meta(&meta("worker-0.lab", Some("metal3")), true).is_empty());
        assert_eq!(
            validate_object_meta(&meta("nombreNodo", None), true).len(),
            1
        );
        assert_eq!(
            validate_object_meta(&meta("<BAREMETAL_HOST_NAME>", None), true).len(),
            1
        );
        let missing = validate_object_meta(&ObjectMeta::default(), true);
        assert_eq!(missing[0].kind, ErrorKind::Required);
        let generated = ObjectMeta {
            generate_name: Some("host-".into()),
            ..ObjectMeta::default()
        };
        assert!(validate_object_meta(&generated, true).is_empty());
    }

    #[test]
    fn namespaces_must_be_labels() {
        let errors = validate_object_meta(&meta("a", Some("ALSOVERYWRONG")), true);
        assert_eq!(errors[0].path, "metadata.namespace");
        assert!(!validate_object_meta(&meta("a", Some("ns")), false).is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key_problems("machine.openshift.io/cluster-api-cluster").is_empty());
        assert!(!label_key_problems("node-role.kubernetes.io/<role>").is_empty());
        assert!(!label_key_problems("/x").is_empty());
        assert!(label_value_problems("").is_empty());
        assert!(!label_value_problems("<infrastructure_id>").is_empty());
        assert!(!label_value_problems(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn annotation_keys_are_checked_and_size_is_limited() {
        let mut object = meta("a", None);
        object.annotations = Some(BTreeMap::from([("bad key".to_string(), String::new())]));
        assert_eq!(validate_object_meta(&object, true).len(), 1);
        object.annotations = Some(BTreeMap::from([(
            "big".to_string(),
            "x".repeat(ANNOTATIONS_MAX_BYTES),
        )]));
        assert_eq!(
            validate_object_meta(&object, true)[0].kind,
            ErrorKind::TooLong
        );
    }
}
