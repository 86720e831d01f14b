//! Server-side `Table` output (what `kubectl get` prints) and the
//! `PartialObjectMetadata` forms used by metadata-only clients.

use serde_json::{Value, json};

use crate::registry::{Builtin, PrinterColumn, ResourceDef};

/// The `PartialObjectMetadata` form of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `PartialObjectMetadataList` form of a list.
pub fn partial_metadata_list(objects: &[Value], resource_version: u64) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "items": objects.iter().map(partial_metadata).collect::<Vec<_>>(),
    })
}

enum Cell {
    Name,
    Age(&'static str),
    Path(String, String),
    DataCount,
    EventObject,
}

struct Column {
    name: String,
    column_type: String,
    format: String,
    description: String,
    priority: i64,
    cell: Cell,
}

fn column(name: &str, column_type: &str, cell: Cell) -> Column {
    Column {
        name: name.to_string(),
        column_type: column_type.to_string(),
        format: if matches!(cell, Cell::Name) {
            "name".to_string()
        } else {
            String::new()
        },
        description: String::new(),
        priority: 0,
        cell,
    }
}

fn path_column(name: &str, column_type: &str, path: &str) -> Column {
    column(
        name,
        column_type,
        Cell::Path(path.to_string(), column_type.to_string()),
    )
}

fn columns(def: &ResourceDef, version: &str) -> Vec<Column> {
    let mut columns = vec![column("Name", "string", Cell::Name)];
    match def.builtin {
        Some(Builtin::Namespace) => {
            columns.push(path_column("Status", "string", ".status.phase"));
            columns.push(column(
                "Age",
                "string",
                Cell::Age("/metadata/creationTimestamp"),
            ));
        }
        Some(Builtin::ConfigMap) => {
            columns.push(column("Data", "integer", Cell::DataCount));
            columns.push(column(
                "Age",
                "string",
                Cell::Age("/metadata/creationTimestamp"),
            ));
        }
        Some(Builtin::Secret) => {
            columns.push(path_column("Type", "string", ".type"));
            columns.push(column("Data", "integer", Cell::DataCount));
            columns.push(column(
                "Age",
                "string",
                Cell::Age("/metadata/creationTimestamp"),
            ));
        }
        Some(Builtin::CoreEvent) | Some(Builtin::EventsV1) => {
            columns = vec![
                column("Last Seen", "string", Cell::Age("/lastTimestamp")),
                path_column("Type", "string", ".type"),
                path_column("Reason", "string", ".reason"),
                column("Object", "string", Cell::EventObject),
                path_column("Message", "string", ".message"),
            ];
        }
        Some(Builtin::Crd) => columns.push(path_column(
            "Created At",
            "date",
            ".metadata.creationTimestamp",
        )),
        Some(Builtin::Lease) => {
            columns.push(path_column("Holder", "string", ".spec.holderIdentity"));
            columns.push(column(
                "Age",
                "string",
                Cell::Age("/metadata/creationTimestamp"),
            ));
        }
        None => {
            let declared = def
                .versions
                .iter()
                .find(|v| v.name == version)
                .map(|v| v.columns.clone())
                .unwrap_or_default();
            if declared.is_empty() {
                columns.push(path_column("Age", "date", ".metadata.creationTimestamp"));
            }
            columns.extend(declared.iter().map(printer_column));
        }
    }
    columns
}

fn printer_column(c: &PrinterColumn) -> Column {
    Column {
        name: c.name.clone(),
        column_type: c.column_type.clone(),
        format: c.format.clone(),
        description: c.description.clone(),
        priority: c.priority,
        cell: Cell::Path(c.json_path.clone(), c.column_type.clone()),
    }
}

/// A `Table` for the objects; `with_columns` is false for watch events after the first.
pub fn table(
    def: &ResourceDef,
    version: &str,
    objects: &[Value],
    resource_version: Option<u64>,
    with_columns: bool,
) -> Value {
    let columns = columns(def, version);
    let definitions: Vec<Value> = if with_columns {
        columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.column_type, "format": c.format, "description": c.description, "priority": c.priority}))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": columns.iter().map(|c| cell(c, o)).collect::<Vec<_>>(), "object": partial_metadata(o)}))
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = Value::String(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

fn cell(column: &Column, object: &Value) -> Value {
    match &column.cell {
        Cell::Name => object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
        Cell::Age(pointer) => object
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(age)
            .map_or_else(|| Value::from("<unknown>"), Value::String),
        Cell::Path(path, column_type) => typed_cell(first_match(object, path), column_type),
        Cell::DataCount => {
            let count = |k: &str| {
                object
                    .get(k)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            Value::from(count("data") + count("binaryData"))
        }
        Cell::EventObject => {
            let kind = object
                .pointer("/involvedObject/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = object
                .pointer("/involvedObject/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Value::String(format!("{}/{name}", kind.to_lowercase()))
        }
    }
}

fn typed_cell(value: Option<Value>, column_type: &str) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    match column_type {
        "integer" => value
            .as_f64()
            .map_or(Value::Null, |f| Value::from(f as i64)),
        "number" => value.as_f64().map_or(Value::Null, Value::from),
        "boolean" => value.as_bool().map_or(Value::Null, Value::from),
        "date" => value
            .as_str()
            .and_then(age)
            .map_or(Value::Null, Value::String),
        _ => match value {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        },
    }
}

fn age(timestamp: &str) -> Option<String> {
    let then: jiff::Timestamp = timestamp.parse().ok()?;
    let seconds = jiff::Timestamp::now().as_second() - then.as_second();
    Some(human_duration(seconds))
}

/// Upstream's `HumanDuration`: `45s`, `3m20s`, `5h2m`, `3d4h`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let seconds = seconds.max(0);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86400);
    let with = |major: i64, unit: &str, minor: i64, minor_unit: &str| {
        if minor == 0 {
            format!("{major}{unit}")
        } else {
            format!("{major}{unit}{minor}{minor_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        with(days / 365, "y", days % 365, "d")
    } else {
        format!("{}y", days / 365)
    }
}

/// Evaluates a simple JSONPath (`.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`) and returns
/// the single match, or all matches as an array.
pub fn first_match(object: &Value, path: &str) -> Option<Value> {
    let mut current = vec![object.clone()];
    for step in split_path(path.trim().trim_start_matches('{').trim_end_matches('}'))? {
        current = current.iter().flat_map(|v| apply_step(v, &step)).collect();
    }
    match current.len() {
        0 => None,
        1 => current.pop(),
        _ => Some(Value::Array(current)),
    }
}

enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, Value),
}

fn split_path(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            steps.push(bracket_step(inner)?);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end > 0 {
                steps.push(Step::Field(after[..end].to_string()));
            }
            rest = &after[end..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn bracket_step(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(index) = inner.parse() {
        return Some(Step::Index(index));
    }
    let condition = inner.strip_prefix("?(@.")?.strip_suffix(')')?;
    let (field, value) = condition.split_once("==")?;
    let value = value.trim();
    let value = serde_json::from_str(value)
        .unwrap_or_else(|_| Value::String(value.trim_matches('\'').to_string()));
    Some(Step::Filter(field.trim().to_string(), value))
}

fn apply_step(value: &Value, step: &Step) -> Vec<Value> {
    match step {
        Step::Field(name) => value.get(name).cloned().into_iter().collect(),
        Step::Index(i) => value.get(*i).cloned().into_iter().collect(),
        Step::All => match value {
            Value::Array(items) => items.clone(),
            Value::Object(map) => map.values().cloned().collect(),
            _ => Vec::new(),
        },
        Step::Filter(field, expected) => value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| i.get(field) == Some(expected))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_and_indexes() {
        let object = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"size": 3}});
        assert_eq!(
            first_match(&object, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(
            first_match(&object, ".status.conditions[0].type"),
            Some(json!("A"))
        );
        assert_eq!(first_match(&object, ".spec.size"), Some(json!(3)));
        assert_eq!(first_match(&object, ".spec.missing"), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5 + 120), "5h2m");
        assert_eq!(human_duration(86400 * 3 + 3600 * 4), "3d4h");
    }
}
