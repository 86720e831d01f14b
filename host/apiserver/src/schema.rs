//! The structural schema pipeline for custom resources, in upstream order:
//! prune unknown fields, drop `null`s where not nullable, apply defaults,
//! validate. Validation failures become 422 causes with upstream wording.

use serde_json::{Map, Value};

use crate::error::FieldCause;

/// How unknown fields are treated (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields fail the request with 400.
    Strict,
    /// Unknown fields are pruned and reported in `Warning` headers (server default).
    Warn,
    /// Unknown fields are pruned silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query value; absent means `Warn`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            )),
        }
    }
}

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Removes fields the schema does not know (keeping `apiVersion`, `kind`, and
/// ObjectMeta fields at the root) and returns their dotted paths.
pub fn prune(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Value::Object(root) = object else {
        return unknown;
    };
    if let Some(Value::Object(meta)) = root.get_mut("metadata") {
        meta.retain(|key, _| {
            let known = OBJECT_META_FIELDS.contains(&key.as_str());
            if !known {
                unknown.push(format!("metadata.{key}"));
            }
            known
        });
    }
    for (key, value) in root.iter_mut() {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(child_schema) = schema.get("properties").and_then(|p| p.get(key)) {
            prune_value(value, child_schema, key, &mut unknown);
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    if !preserves_unknown(schema) {
        root.retain(|key, _| {
            let known = matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                || properties.is_some_and(|p| p.contains_key(key));
            if !known {
                unknown.push(key.clone());
            }
            known
        });
    }
    unknown
}

fn prune_value(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => prune_object(map, schema, path, unknown),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    prune_value(item, item_schema, &format!("{path}[{index}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    let keep_unknown =
        preserves_unknown(schema) || schema.get("additionalProperties") == Some(&Value::Bool(true));
    map.retain(|key, value| {
        let child = child_path(path, key);
        if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
            prune_value(value, child_schema, &child, unknown);
            return true;
        }
        if keep_unknown || (embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
        {
            return true;
        }
        unknown.push(child);
        false
    });
}

/// Drops `null` values of fields that are not `nullable`, then applies `default`s.
pub fn drop_nulls_and_default(value: &mut Value, schema: &Value) {
    let Value::Object(map) = value else {
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for item in items {
                drop_nulls_and_default(item, item_schema);
            }
        }
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    map.retain(|key, child| {
        let child_schema = properties.and_then(|p| p.get(key)).or(additional);
        let nullable = child_schema
            .and_then(|s| s.get("nullable"))
            .and_then(Value::as_bool)
            == Some(true);
        !(child.is_null() && child_schema.is_some() && !nullable)
    });
    if let Some(properties) = properties {
        for (key, child_schema) in properties {
            if let (false, Some(default)) = (map.contains_key(key), child_schema.get("default")) {
                map.insert(key.clone(), default.clone());
            }
        }
    }
    for (key, child) in map.iter_mut() {
        if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
            drop_nulls_and_default(child, child_schema);
        }
    }
}

/// Validates an object against its schema; `apiVersion`, `kind` and `metadata` are skipped.
pub fn validate(object: &Value, schema: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let (Value::Object(root), Some(properties)) =
        (object, schema.get("properties").and_then(Value::as_object))
    else {
        return causes;
    };
    for (key, child_schema) in properties {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(value) = root.get(key) {
            validate_value(value, child_schema, key, &mut causes);
        }
    }
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = required.as_str()
            && !root.contains_key(name)
        {
            causes.push(FieldCause::required(name));
        }
    }
    causes
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

fn validate_value(value: &Value, schema: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if value.is_null() && nullable {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            causes.push(FieldCause::type_invalid(
                path,
                type_name(value),
                &format!(
                    "{path} in body must be of type integer,string: \"{}\"",
                    type_name(value)
                ),
            ));
        }
        validate_combinators(value, schema, path, causes);
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(value, expected)
    {
        causes.push(FieldCause::type_invalid(
            path,
            type_name(value),
            &format!(
                "{path} in body must be of type {expected}: \"{}\"",
                type_name(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        causes.push(FieldCause::not_supported(path, value, allowed));
    }
    match value {
        Value::Number(_) => validate_number(value, schema, path, causes),
        Value::String(text) => validate_string(value, text, schema, path, causes),
        Value::Array(items) => validate_array(items, schema, path, causes),
        Value::Object(map) => validate_object(map, schema, path, causes),
        _ => {}
    }
    validate_combinators(value, schema, path, causes);
}

fn validate_number(value: &Value, schema: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let Some(number) = value.as_f64() else {
        return;
    };
    let flag = |name: &str| schema.get(name).and_then(Value::as_bool) == Some(true);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMinimum");
        if number < min || (exclusive && number == min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(FieldCause::invalid(
                path,
                value,
                &format!("{path} in body should be {relation} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMaximum");
        if number > max || (exclusive && number == max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(FieldCause::invalid(
                path,
                value,
                &format!("{path} in body should be {relation} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(multiple) = schema.get("multipleOf").and_then(Value::as_f64)
        && multiple > 0.0
        && (number / multiple).fract() != 0.0
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!(
                "{path} in body should be a multiple of {}",
                schema["multipleOf"]
            ),
        ));
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && !(i32::MIN as f64..=i32::MAX as f64).contains(&number)
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body must be of type int32: \"{value}\""),
        ));
    }
}

fn validate_string(
    value: &Value,
    text: &str,
    schema: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        causes.push(FieldCause::with_reason(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => {
                causes.push(FieldCause::invalid(
                    path,
                    value,
                    &format!("{path} in body should match '{pattern}'"),
                ));
            }
            Ok(_) => {}
            Err(_) => causes.push(FieldCause::invalid(
                path,
                value,
                &format!("the schema pattern '{pattern}' is not a valid regular expression"),
            )),
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !format_matches(format, text)
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body must be of type {format}: {value}"),
        ));
    }
}

fn format_matches(format: &str, text: &str) -> bool {
    use base64::Engine;
    match format {
        "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
        "date" => text.parse::<jiff::civil::Date>().is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok(),
        "uuid" => uuid::Uuid::parse_str(text).is_ok(),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "int-or-string" => true,
        _ => true,
    }
}

/// `minItems`/`maxItems` or `minProperties`/`maxProperties`.
fn check_count(
    count: usize,
    schema: &Value,
    (min_key, max_key, noun): (&str, &str, &str),
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && count as u64 > max
    {
        causes.push(FieldCause::too_many(path, count, max));
    }
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && (count as u64) < min
    {
        causes.push(FieldCause::invalid(
            path,
            &Value::from(count),
            &format!("{path} in body should have at least {min} {noun}"),
        ));
    }
}

fn validate_array(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    check_count(
        items.len(),
        schema,
        ("minItems", "maxItems", "items"),
        path,
        causes,
    );
    let set_like = schema.get("uniqueItems").and_then(Value::as_bool) == Some(true)
        || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if set_like {
        for (index, item) in items.iter().enumerate() {
            if items[..index].contains(item) {
                causes.push(FieldCause::with_reason(
                    "FieldValueDuplicate",
                    &format!("{path}[{index}]"),
                    format!("Duplicate value: {item}"),
                ));
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            validate_value(item, item_schema, &format!("{path}[{index}]"), causes);
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = required.as_str()
            && !map.contains_key(name)
        {
            causes.push(FieldCause::required(&child_path(path, name)));
        }
    }
    check_count(
        map.len(),
        schema,
        ("minProperties", "maxProperties", "properties"),
        path,
        causes,
    );
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in map {
        if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
            validate_value(value, child_schema, &child_path(path, key), causes);
        }
    }
}

fn passes(value: &Value, schema: &Value, path: &str) -> bool {
    let mut scratch = Vec::new();
    validate_value(value, schema, path, &mut scratch);
    scratch.is_empty()
}

fn validate_combinators(value: &Value, schema: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate_value(value, sub, path, causes);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| passes(value, s, path))
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| passes(value, s, path)).count() != 1
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body must validate one and only one schema (oneOf)"),
        ));
    }
    if let Some(not) = schema.get("not")
        && passes(value, not, path)
    {
        causes.push(FieldCause::invalid(
            path,
            value,
            &format!("{path} in body must not validate the schema (not)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "note": {"type": "string", "nullable": true, "maxLength": 3},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true}
            }},
            "status": {"type": "object", "properties": {"phase": {"type": "string", "pattern": "^[A-Z]"}}}
        }})
    }

    #[test]
    fn prune_reports_unknown_fields_and_keeps_preserved_ones() {
        let mut object = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "a", "bogus": 1},
            "spec": {"size": 1, "foo": 2, "extra": {"anything": true}}, "top": 1});
        let unknown = prune(&mut object, &widget_schema());
        assert_eq!(unknown, ["metadata.bogus", "spec.foo", "top"]);
        assert_eq!(
            object["spec"],
            json!({"size": 1, "extra": {"anything": true}})
        );
    }

    #[test]
    fn defaults_and_nulls() {
        let mut object = json!({"spec": {"size": 1, "color": null, "note": null}});
        drop_nulls_and_default(&mut object, &widget_schema());
        assert_eq!(
            object["spec"],
            json!({"size": 1, "color": "red", "note": null})
        );
    }

    #[test]
    fn validation_messages_follow_upstream() {
        let object = json!({"spec": {"size": "x", "color": "green", "note": "long!", "port": true}, "status": {"phase": "ready"}});
        let causes = validate(&object, &widget_schema());
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert!(rendered.contains(&"spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"".to_string()), "{rendered:?}");
        assert!(
            rendered.contains(
                &"spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
                    .to_string()
            ),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|r| r.starts_with("spec.note: Too long")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|r| r.starts_with("spec.port: Invalid value: \"boolean\"")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|r| r.contains("status.phase in body should match '^[A-Z]'")),
            "{rendered:?}"
        );
    }

    #[test]
    fn required_and_minimum() {
        let causes = validate(&json!({"spec": {}}), &widget_schema());
        assert_eq!(causes[0].field, "spec.size");
        assert_eq!(causes[0].message, "Required value");
        let causes = validate(&json!({"spec": {"size": 0}}), &widget_schema());
        assert_eq!(
            causes[0].message,
            "Invalid value: 0: spec.size in body should be greater than or equal to 1"
        );
    }
}
