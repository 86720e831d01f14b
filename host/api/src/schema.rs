//! Validation and defaulting of JSON objects against CRD (OpenAPI v3 structural) schemas, the
//! way kube-apiserver does on create: `null` in non-nullable fields is dropped, defaults are
//! filled in, then types, enums, patterns, bounds, required and unknown fields are checked.
//!
//! The CRD schemas generated from the Rust types are the single source of truth: `ingot
//! validate` and the embedded API server check objects against exactly what `ingot crds`
//! writes.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use regex::Regex;
use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::validation::{ErrorKind, FieldError};

/// The schema of `T` with the same generator settings and post-processing as the CRDs; used
/// for built-in kinds (Secret, ConfigMap) and for object metadata.
pub fn schema_for<T: JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut value = serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or_default();
    crate::structural::normalize_value(&mut value);
    serde_json::from_value(value).unwrap_or_default()
}

/// Drops `null` values of non-nullable fields, then fills in schema defaults for absent fields.
pub fn apply_defaults(value: &mut Value, schema: &JSONSchemaProps) {
    let Value::Object(object) = value else {
        if let (Value::Array(items), Some(item_schema)) = (value, item_schema(schema)) {
            items
                .iter_mut()
                .for_each(|item| apply_defaults(item, item_schema));
        }
        return;
    };

    if let Some(properties) = &schema.properties {
        for (name, property) in properties {
            let is_null = object.get(name).is_some_and(Value::is_null);
            if is_null && property.nullable != Some(true) {
                object.remove(name);
            }
            if let (false, Some(default)) = (object.contains_key(name), &property.default) {
                object.insert(name.clone(), default.0.clone());
            }
            if let Some(child) = object.get_mut(name) {
                apply_defaults(child, property);
            }
        }
    }
    if let Some(JSONSchemaPropsOrBool::Schema(additional)) = &schema.additional_properties {
        object
            .values_mut()
            .for_each(|child| apply_defaults(child, additional));
    }
}

/// Every way `value` breaks `schema`, with paths below `path` (empty for the root).
pub fn validate(value: &Value, schema: &JSONSchemaProps, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(value, schema, path, &mut errors);
    errors
}

fn check(value: &Value, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if schema.nullable != Some(true) {
            errors.push(FieldError::new(
                ErrorKind::TypeInvalid,
                display(path),
                "must not be null",
            ));
        }
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(type_error(path, "an integer or a string", value));
        }
        return;
    }
    let Some(kind) = schema.type_.as_deref() else {
        return;
    };
    if !has_type(value, kind) {
        errors.push(type_error(path, article(kind), value));
        return;
    }
    check_enum(value, schema, path, errors);
    match value {
        Value::String(text) => check_string(text, schema, path, errors),
        Value::Number(_) => check_number(value, schema, path, errors),
        Value::Array(items) => check_array(items, schema, path, errors),
        Value::Object(object) => check_object(object, schema, path, errors),
        Value::Bool(_) | Value::Null => {}
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn article(kind: &str) -> &'static str {
    match kind {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "a list",
        "object" => "an object (a mapping)",
        _ => "a value of the declared type",
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> FieldError {
    FieldError::new(
        ErrorKind::TypeInvalid,
        display(path),
        format!("must be {expected}, found {}", describe(value)),
    )
}

fn describe(value: &Value) -> String {
    let shown = |text: String| {
        if text.chars().count() > 60 {
            format!("{}...", text.chars().take(57).collect::<String>())
        } else {
            text
        }
    };
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => format!("the boolean {flag}"),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => format!("the string {:?}", shown(text.clone())),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object (a mapping)".into(),
    }
}

fn check_enum(value: &Value, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = &schema.enum_ else {
        return;
    };
    if allowed.iter().any(|candidate| candidate.0 == *value) {
        return;
    }
    let listed: Vec<String> = allowed
        .iter()
        .filter(|candidate| !candidate.0.is_null())
        .map(|candidate| candidate.0.to_string())
        .collect();
    errors.push(FieldError::new(
        ErrorKind::NotSupported,
        display(path),
        format!("{value}: supported values: {}", listed.join(", ")),
    ));
}

fn check_string(text: &str, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<FieldError>) {
    let length = text.chars().count() as i64;
    if let Some(max) = schema.max_length.filter(|max| length > *max) {
        errors.push(FieldError::new(
            ErrorKind::TooLong,
            display(path),
            format!("may not be longer than {max}"),
        ));
    }
    if let Some(min) = schema.min_length.filter(|min| length < *min) {
        errors.push(FieldError::invalid(
            display(path),
            format!("should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = &schema.pattern
        && !matches_pattern(pattern, text)
    {
        errors.push(FieldError::invalid(
            display(path),
            format!("{text:?} does not match the pattern {pattern}"),
        ));
    }
    if let Some(problem) = schema
        .format
        .as_deref()
        .and_then(|format| format_problem(format, text))
    {
        errors.push(FieldError::invalid(display(path), problem));
    }
}

/// Regexes compiled once per pattern; an invalid pattern never matches.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> = LazyLock::new(Default::default);
    let Ok(mut cache) = CACHE.lock() else {
        return Regex::new(pattern).is_ok_and(|regex| regex.is_match(text));
    };
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|regex| regex.is_match(text))
}

fn format_problem(format: &str, text: &str) -> Option<String> {
    match format {
        "byte" => base64::engine::general_purpose::STANDARD.decode(text).is_err().then(|| {
            let shown: String = text.chars().take(40).collect();
            format!("{shown:?} is not valid base64 (Secret data must be base64-encoded; use stringData for plain text)")
        }),
        "date-time" => (!is_rfc3339(text)).then(|| format!("{text:?} is not an RFC 3339 date-time")),
        _ => None,
    }
}

fn is_rfc3339(text: &str) -> bool {
    static RFC3339: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
            .unwrap_or_else(|_| unreachable!("the date-time pattern is a valid regex"))
    });
    RFC3339.is_match(text)
}

fn check_number(value: &Value, schema: &JSONSchemaProps, path: &str, errors: &mut Vec<FieldError>) {
    let Some(number) = value.as_f64() else {
        return;
    };
    if let Some(minimum) = schema.minimum {
        let below = if schema.exclusive_minimum == Some(true) {
            number <= minimum
        } else {
            number < minimum
        };
        if below {
            errors.push(FieldError::invalid(
                display(path),
                format!("{value} should be greater than or equal to {minimum}"),
            ));
        }
    }
    if let Some(maximum) = schema.maximum {
        let above = if schema.exclusive_maximum == Some(true) {
            number >= maximum
        } else {
            number > maximum
        };
        if above {
            errors.push(FieldError::invalid(
                display(path),
                format!("{value} should be less than or equal to {maximum}"),
            ));
        }
    }
    if schema.format.as_deref() == Some("int32")
        && i32::try_from(value.as_i64().unwrap_or(i64::MAX)).is_err()
    {
        errors.push(FieldError::invalid(
            display(path),
            format!("{value} does not fit in 32 bits"),
        ));
    }
}

fn item_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(item) => Some(item),
        JSONSchemaPropsOrArray::Schemas(items) => items.first(),
    }
}

fn check_array(
    items: &[Value],
    schema: &JSONSchemaProps,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let count = items.len() as i64;
    if let Some(max) = schema.max_items.filter(|max| count > *max) {
        errors.push(FieldError::new(
            ErrorKind::TooLong,
            display(path),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.min_items.filter(|min| count < *min) {
        errors.push(FieldError::invalid(
            display(path),
            format!("should have at least {min} items"),
        ));
    }
    if let Some(item_schema) = item_schema(schema) {
        for (index, item) in items.iter().enumerate() {
            check(item, item_schema, &format!("{path}[{index}]"), errors);
        }
    }
}

fn check_object(
    object: &Map<String, Value>,
    schema: &JSONSchemaProps,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let empty = Default::default();
    let properties = schema.properties.as_ref().unwrap_or(&empty);
    check_required(object, schema, properties, path, errors);

    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    for (name, child) in object {
        let child_path = child_path(path, name);
        if let Some(property) = properties.get(name) {
            check(child, property, &child_path, errors);
            continue;
        }
        match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(additional)) => {
                check(
                    child,
                    additional,
                    &format!("{}[{name}]", display(path)),
                    errors,
                );
            }
            Some(JSONSchemaPropsOrBool::Bool(true)) => {}
            _ if preserve => {}
            _ => errors.push(unknown_field(&child_path, name, properties)),
        }
    }
}

fn check_required(
    object: &Map<String, Value>,
    schema: &JSONSchemaProps,
    properties: &std::collections::BTreeMap<String, JSONSchemaProps>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for name in schema.required.iter().flatten() {
        let present = object.get(name).is_some_and(|value| {
            !value.is_null()
                || properties
                    .get(name)
                    .is_some_and(|p| p.nullable == Some(true))
        });
        if present {
            continue;
        }
        let nested: Vec<&String> = properties
            .get(name)
            .and_then(|property| property.required.as_ref())
            .into_iter()
            .flatten()
            .collect();
        let message = if nested.is_empty() {
            String::new()
        } else {
            format!(
                "must be set, with {}",
                nested
                    .iter()
                    .map(|name| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        errors.push(FieldError::required(child_path(path, name), message));
    }
}

fn unknown_field(
    path: &str,
    name: &str,
    properties: &std::collections::BTreeMap<String, JSONSchemaProps>,
) -> FieldError {
    let close = properties
        .keys()
        .find(|known| known.eq_ignore_ascii_case(name));
    let hint = match close {
        Some(known) => {
            format!("field {name:?} is not declared in the schema (did you mean {known:?}?)")
        }
        None if properties.is_empty() => format!("field {name:?} is not declared in the schema"),
        None => format!(
            "field {name:?} is not declared in the schema (known fields: {})",
            properties
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    FieldError::new(ErrorKind::Unknown, path, hint)
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metal3::BareMetalHost;

    fn host_schema() -> JSONSchemaProps {
        use kube::CustomResourceExt;
        let mut crd = BareMetalHost::crd();
        crate::structural::normalize_crd(&mut crd);
        crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|schema| schema.open_api_v3_schema)
            .expect("schema")
    }

    fn errors_for(spec: Value) -> Vec<String> {
        let mut object = json!({"spec": spec});
        let schema = host_schema();
        apply_defaults(&mut object, &schema);
        validate(&object, &schema, "")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_spec_passes_and_gets_defaults() {
        let mut object = json!({"spec": {"online": true, "bmc": {"address": "ipmi://h", "credentialsName": "c"}}});
        let schema = host_schema();
        apply_defaults(&mut object, &schema);
        assert_eq!(
            object.pointer("/spec/automatedCleaningMode"),
            Some(&json!("metadata"))
        );
        assert_eq!(validate(&object, &schema, ""), Vec::new());
    }

    #[test]
    fn defaults_do_not_override_written_values() {
        let mut object = json!({"spec": {"online": true, "automatedCleaningMode": "disabled"}});
        apply_defaults(&mut object, &host_schema());
        assert_eq!(
            object.pointer("/spec/automatedCleaningMode"),
            Some(&json!("disabled"))
        );
    }

    #[test]
    fn enum_pattern_type_required_and_unknown_fields_are_reported() {
        let found = errors_for(json!({
            "automatedCleaningMode": "disable",
            "bootMACAddress": "${BMC_MAC}",
            "rootDeviceHints": "/dev/sda",
            "bmc": {"address": "ipmi://h", "username": "u"},
            "machineRef": {"name": "x"}
        }));
        let expect = [
            "spec.automatedCleaningMode: Unsupported value: \"disable\": supported values: \"metadata\", \"disabled\"",
            "spec.bootMACAddress: Invalid value: \"${BMC_MAC}\" does not match the pattern",
            "spec.rootDeviceHints: Invalid type: must be an object (a mapping), found the string \"/dev/sda\"",
            "spec.bmc.credentialsName: Required value",
            "spec.bmc.username: Unknown field",
            "spec.machineRef: Unknown field",
            "spec.online: Required value",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|error| error.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn null_in_a_non_nullable_field_counts_as_absent() {
        let mut object = json!({"spec": null});
        let schema = host_schema();
        apply_defaults(&mut object, &schema);
        let found: Vec<String> = validate(&object, &schema, "")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec!["spec: Required value: must be set, with online".to_string()]
        );
    }

    #[test]
    fn bounds_and_lengths() {
        let found = errors_for(json!({
            "online": true,
            "rootDeviceHints": {"minSizeGigabytes": -1},
            "raid": {"softwareRAIDVolumes": [{"level": "1"}, {"level": "0"}, {"level": "1+0"}],
                     "hardwareRAIDVolumes": [{"level": "7", "name": "x".repeat(65)}]}
        }));
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("spec.rootDeviceHints.minSizeGigabytes: Invalid value: -1")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("spec.raid.softwareRAIDVolumes: Too long")),
            "{found:#?}"
        );
        assert!(found.iter().any(|e| e.starts_with("spec.raid.hardwareRAIDVolumes[0].level: Unsupported value")), "{found:#?}");
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("spec.raid.hardwareRAIDVolumes[0].name: Too long")),
            "{found:#?}"
        );
    }

    #[test]
    fn base64_and_date_time_formats() {
        assert!(format_problem("byte", "YWRtaW4=").is_none());
        assert!(format_problem("byte", "xxx").is_some());
        assert!(format_problem("date-time", "2022-05-31T06:33:05Z").is_none());
        assert!(format_problem("date-time", "yesterday").is_some());
    }
}
