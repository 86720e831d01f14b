//! Structural-schema rules for CRD validation schemas.
//!
//! kube-apiserver only accepts CRD schemas that are *structural*: every node has a type (or
//! explicitly preserves unknown fields, or is int-or-string), objects do not mix `properties`
//! with `additionalProperties`, arrays have `items`, references and definitions are absent, and
//! logical junctors (`allOf`, `anyOf`, `oneOf`, `not`) only add value validations. schemars
//! emits JSON Schema that needs a little post-processing to get there ([`normalize_crd`]);
//! [`violations`] checks a schema against the rules so tests (and the embedded API server when it
//! accepts CRDs) catch anything a real API server would refuse.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::{Map, Value};

/// Keywords the API server refuses anywhere in a CRD schema.
const FORBIDDEN_KEYWORDS: &[&str] = &[
    "$ref",
    "$schema",
    "$defs",
    "definitions",
    "id",
    "additionalItems",
    "patternProperties",
    "dependencies",
    "const",
];

/// Keywords that may not appear inside `allOf`/`anyOf`/`oneOf`/`not`: they would change the
/// shape of the data rather than only constrain values.
const FORBIDDEN_IN_JUNCTORS: &[&str] = &[
    "type",
    "description",
    "default",
    "nullable",
    "additionalProperties",
    "title",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

const JUNCTORS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// Rewrites every version schema of `crd` into structural form.
///
/// Untyped nullable nodes (an `Option<serde_json::Value>`) become nodes that preserve unknown
/// fields, and leftovers such as `$schema` or empty `definitions` are dropped.
pub fn normalize_crd(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        let Some(validation) = version.schema.as_mut() else {
            continue;
        };
        let Some(schema) = validation.open_api_v3_schema.take() else {
            continue;
        };
        validation.open_api_v3_schema = Some(normalize(schema));
    }
}

fn normalize(schema: JSONSchemaProps) -> JSONSchemaProps {
    let Ok(mut value) = serde_json::to_value(&schema) else {
        return schema;
    };
    normalize_value(&mut value);
    serde_json::from_value(value).unwrap_or(schema)
}

/// [`normalize_crd`] for one schema in JSON form.
pub fn normalize_value(schema: &mut Value) {
    normalize_node(schema);
}

fn normalize_node(node: &mut Value) {
    let Some(object) = node.as_object_mut() else {
        return;
    };
    for keyword in ["$schema", "$defs", "definitions"] {
        object.remove(keyword);
    }

    let untyped = !object.contains_key("type")
        && !is_true(object, "x-kubernetes-int-or-string")
        && !JUNCTORS.iter().any(|junctor| object.contains_key(*junctor));
    if untyped {
        object.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }

    for_each_child(object, normalize_node);
}

fn for_each_child(object: &mut Map<String, Value>, mut visit: impl FnMut(&mut Value)) {
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(&mut visit);
    }
    for keyword in ["items", "additionalProperties", "not"] {
        if let Some(child @ Value::Object(_)) = object.get_mut(keyword) {
            visit(child);
        }
    }
    for junctor in JUNCTORS {
        if let Some(Value::Array(branches)) = object.get_mut(*junctor) {
            branches.iter_mut().for_each(&mut visit);
        }
    }
}

/// Every structural-schema rule `schema` breaks, each as `<json path>: <problem>`.
///
/// An empty list means a real kube-apiserver would accept the schema as structural.
pub fn violations(schema: &JSONSchemaProps) -> Vec<String> {
    let mut found = Vec::new();
    match serde_json::to_value(schema) {
        Ok(value) => {
            check_root(&value, &mut found);
            check_node(&value, "", false, &mut found);
        }
        Err(error) => found.push(format!("schema does not serialize: {error}")),
    }
    found
}

fn check_root(root: &Value, found: &mut Vec<String>) {
    if root.get("type").and_then(Value::as_str) != Some("object") {
        found.push("<root>: type must be object".into());
    }
    let Some(metadata) = root.pointer("/properties/metadata") else {
        return;
    };
    let allowed_metadata = ["type", "properties", "description"];
    let extra: Vec<&String> = metadata
        .as_object()
        .map(|object| {
            object
                .keys()
                .filter(|key| !allowed_metadata.contains(&key.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if !extra.is_empty() {
        found.push(format!(
            ".metadata: only name and generateName may be constrained, found {extra:?}"
        ));
    }
}

fn check_node(node: &Value, path: &str, in_junctor: bool, found: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        found.push(format!("{}: schema node must be an object", display(path)));
        return;
    };

    check_forbidden(object, path, in_junctor, found);
    if !in_junctor {
        check_type(object, path, found);
        check_object_shape(object, path, found);
        check_list_type(object, path, found);
        check_enum_and_default(object, path, found);
    }
    check_children(object, path, in_junctor, found);
}

fn check_forbidden(
    object: &Map<String, Value>,
    path: &str,
    in_junctor: bool,
    found: &mut Vec<String>,
) {
    for keyword in FORBIDDEN_KEYWORDS {
        if object.contains_key(*keyword) {
            found.push(format!("{}: `{keyword}` is not allowed", display(path)));
        }
    }
    if object.get("uniqueItems") == Some(&Value::Bool(true)) {
        found.push(format!("{}: uniqueItems cannot be true", display(path)));
    }
    if object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        found.push(format!(
            "{}: x-kubernetes-preserve-unknown-fields must be true or absent",
            display(path)
        ));
    }
    if in_junctor {
        for keyword in FORBIDDEN_IN_JUNCTORS {
            if object.contains_key(*keyword) {
                found.push(format!(
                    "{}: `{keyword}` is not allowed inside allOf/anyOf/oneOf/not",
                    display(path)
                ));
            }
        }
    }
}

fn check_type(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    let int_or_string = is_true(object, "x-kubernetes-int-or-string");
    let preserve = is_true(object, "x-kubernetes-preserve-unknown-fields");
    match object.get("type") {
        Some(Value::String(kind)) => {
            let known = ["object", "array", "string", "integer", "number", "boolean"];
            if !known.contains(&kind.as_str()) {
                found.push(format!("{}: unknown type {kind:?}", display(path)));
            }
            if int_or_string {
                found.push(format!(
                    "{}: x-kubernetes-int-or-string must not set a type",
                    display(path)
                ));
            }
        }
        Some(other) => found.push(format!(
            "{}: type must be one string, found {other}",
            display(path)
        )),
        None if int_or_string || preserve => {}
        None => found.push(format!("{}: type is missing", display(path))),
    }
    if int_or_string {
        check_int_or_string_junctors(object, path, found);
    }
}

fn check_int_or_string_junctors(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    let expected = serde_json::json!([{"type": "integer"}, {"type": "string"}]);
    for junctor in JUNCTORS {
        if let Some(branches) = object.get(*junctor) {
            let allowed = *junctor == "anyOf" && *branches == expected;
            if !allowed {
                found.push(format!(
                    "{}: int-or-string allows only anyOf [integer, string], found {junctor}",
                    display(path)
                ));
            }
        }
    }
}

fn check_object_shape(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        found.push(format!(
            "{}: properties and additionalProperties are mutually exclusive",
            display(path)
        ));
    }
    if object.get("additionalProperties") == Some(&Value::Bool(false)) {
        found.push(format!(
            "{}: additionalProperties cannot be false",
            display(path)
        ));
    }
    let kind = object.get("type").and_then(Value::as_str);
    if kind == Some("array") && !object.contains_key("items") {
        found.push(format!("{}: array without items", display(path)));
    }
    if kind != Some("array") && object.contains_key("items") {
        found.push(format!("{}: items on a non-array node", display(path)));
    }
    let object_keys = ["properties", "additionalProperties", "required"];
    if kind.is_some()
        && kind != Some("object")
        && object_keys.iter().any(|key| object.contains_key(*key))
    {
        found.push(format!(
            "{}: object keywords on a {} node",
            display(path),
            kind.unwrap_or_default()
        ));
    }
    if is_true(object, "x-kubernetes-embedded-resource") && kind != Some("object") {
        found.push(format!(
            "{}: x-kubernetes-embedded-resource needs type object",
            display(path)
        ));
    }
    check_required_exist(object, path, found);
}

fn check_required_exist(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    let Some(Value::Array(required)) = object.get("required") else {
        return;
    };
    let properties = object.get("properties").and_then(Value::as_object);
    for name in required.iter().filter_map(Value::as_str) {
        let declared = properties.is_some_and(|properties| properties.contains_key(name));
        if !declared && !is_true(object, "x-kubernetes-preserve-unknown-fields") {
            found.push(format!(
                "{}: required field {name:?} is not a declared property",
                display(path)
            ));
        }
    }
}

fn check_list_type(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    let list_type = object.get("x-kubernetes-list-type").and_then(Value::as_str);
    let map_keys = object
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array);
    match (list_type, map_keys) {
        (Some("map"), Some(keys)) => check_list_map_keys(object, keys, path, found),
        (Some("map"), None) => found.push(format!(
            "{}: list-type map needs list-map-keys",
            display(path)
        )),
        (Some(_), Some(_)) | (None, Some(_)) => {
            found.push(format!(
                "{}: list-map-keys needs list-type map",
                display(path)
            ));
        }
        (Some("atomic" | "set"), None) | (None, None) => {}
        (Some(other), None) => {
            found.push(format!("{}: unknown list-type {other:?}", display(path)))
        }
    }
}

fn check_list_map_keys(
    object: &Map<String, Value>,
    keys: &[Value],
    path: &str,
    found: &mut Vec<String>,
) {
    let items = object.get("items");
    let required: Vec<&str> = items
        .and_then(|items| items.get("required"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for key in keys.iter().filter_map(Value::as_str) {
        let key_schema = items.and_then(|items| items.pointer(&format!("/properties/{key}")));
        let Some(key_schema) = key_schema else {
            found.push(format!(
                "{}: list-map key {key:?} is not an item property",
                display(path)
            ));
            continue;
        };
        let scalar = matches!(
            key_schema.get("type").and_then(Value::as_str),
            Some("string" | "integer" | "number" | "boolean")
        );
        if !scalar {
            found.push(format!(
                "{}: list-map key {key:?} must be a scalar",
                display(path)
            ));
        }
        if !required.contains(&key) && key_schema.get("default").is_none() {
            found.push(format!(
                "{}: list-map key {key:?} must be required or defaulted",
                display(path)
            ));
        }
    }
}

fn check_enum_and_default(object: &Map<String, Value>, path: &str, found: &mut Vec<String>) {
    let kind = object.get("type").and_then(Value::as_str);
    let nullable = is_true(object, "nullable");
    if let Some(Value::Array(values)) = object.get("enum") {
        for value in values.iter().filter(|value| !(value.is_null() && nullable)) {
            if !value_has_type(value, kind) {
                found.push(format!(
                    "{}: enum value {value} does not match type {kind:?}",
                    display(path)
                ));
            }
        }
    }
    if let Some(default) = object.get("default")
        && !value_has_type(default, kind)
        && !is_true(object, "x-kubernetes-preserve-unknown-fields")
    {
        found.push(format!(
            "{}: default {default} does not match type {kind:?}",
            display(path)
        ));
    }
}

fn value_has_type(value: &Value, kind: Option<&str>) -> bool {
    match kind {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ => true,
    }
}

fn check_children(
    object: &Map<String, Value>,
    path: &str,
    in_junctor: bool,
    found: &mut Vec<String>,
) {
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, child) in properties {
            check_node(child, &format!("{path}.{name}"), in_junctor, found);
        }
    }
    if let Some(items) = object.get("items") {
        check_node(items, &format!("{path}[*]"), in_junctor, found);
    }
    if let Some(additional @ Value::Object(_)) = object.get("additionalProperties") {
        check_node(additional, &format!("{path}.*"), in_junctor, found);
    }
    if let Some(negated) = object.get("not") {
        check_node(negated, &format!("{path}(not)"), true, found);
    }
    for junctor in JUNCTORS {
        if let Some(Value::Array(branches)) = object.get(*junctor) {
            for (index, branch) in branches.iter().enumerate() {
                check_node(branch, &format!("{path}({junctor}[{index}])"), true, found);
            }
        }
    }
}

fn is_true(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key) == Some(&Value::Bool(true))
}

fn display(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(schema: Value) -> Vec<String> {
        let props: JSONSchemaProps = serde_json::from_value(schema).expect("valid JSONSchemaProps");
        violations(&props)
    }

    fn object_with(property: Value) -> Value {
        json!({"type": "object", "properties": {"spec": property}})
    }

    #[test]
    fn a_typed_schema_passes() {
        let schema = object_with(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "port": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "list": {"type": "array", "items": {"type": "string"}}
            }
        }));
        assert_eq!(problems(schema), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let cases = [
            (json!({"description": "no type"}), "type is missing"),
            (
                json!({"$ref": "#/definitions/x", "type": "object"}),
                "`$ref` is not allowed",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
                "mutually exclusive",
            ),
            (json!({"type": "array"}), "array without items"),
            (
                json!({"type": "string", "uniqueItems": true}),
                "uniqueItems",
            ),
            (json!({"type": "string", "enum": [1]}), "enum value 1"),
            (json!({"type": "integer", "default": "x"}), "default \"x\""),
            (
                json!({"type": "string", "nullable": true, "anyOf": [{"type": "string"}]}),
                "inside allOf/anyOf/oneOf/not",
            ),
            (
                json!({"x-kubernetes-int-or-string": true, "oneOf": [{"type": "integer"}]}),
                "int-or-string",
            ),
            (
                json!({"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"]}),
                "required or defaulted",
            ),
            (
                json!({"type": "object", "required": ["missing"], "properties": {}}),
                "not a declared property",
            ),
        ];
        for (node, expected) in cases {
            let found = problems(object_with(node.clone()));
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{node} should report {expected:?}, got {found:?}"
            );
        }
    }

    #[test]
    fn root_must_be_an_object_and_metadata_is_restricted() {
        assert!(
            problems(json!({"type": "string"}))
                .iter()
                .any(|p| p.contains("type must be object"))
        );
        let metadata = json!({"type": "object", "properties": {"metadata": {"type": "object", "required": ["name"]}}});
        assert!(problems(metadata).iter().any(|p| p.contains(".metadata")));
    }

    #[test]
    fn normalize_marks_untyped_nodes_as_preserving() {
        let mut value =
            json!({"type": "object", "properties": {"free": {"nullable": true}}, "$schema": "x"});
        normalize_node(&mut value);
        assert_eq!(value.get("$schema"), None);
        assert_eq!(
            value.pointer("/properties/free/x-kubernetes-preserve-unknown-fields"),
            Some(&json!(true))
        );
    }
}
