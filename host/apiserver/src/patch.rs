//! Patch formats: JSON merge patch (RFC 7386), JSON patch with the semantics of
//! the evanphx/json-patch library the upstream server uses, and the subset of
//! strategic merge patch that built-in kinds need.
//!
//! The JSON patch `test` operation deliberately differs from RFC 6902: a
//! missing path compares equal to `null`. kube-runtime's finalizer helper
//! sends `{"op":"test","path":"/metadata/finalizers","value":null}` for
//! objects without finalizers and relies on this.

use serde_json::{Map, Value};

/// Why a patch failed: `Malformed` is a 400, `Failed` a 422.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch document itself is not valid.
    #[error("{0}")]
    Malformed(String),
    /// The patch could not be applied to the object.
    #[error("{0}")]
    Failed(String),
}

type Object = Map<String, Value>;

/// Both sides as maps; a non-object patch replaces the target instead, and a
/// non-object target becomes an empty map first.
fn object_pair<'a, 'b>(
    target: &'a mut Value,
    patch: &'b Value,
) -> Option<(&'a mut Object, &'b Object)> {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return None;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    target
        .as_object_mut()
        .map(|target_map| (target_map, patch_map))
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some((target_map, patch_map)) = object_pair(target, patch) else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies a strategic merge patch as built-in kinds need it: maps merge,
/// `null` deletes, `$`-directives are ignored, lists are replaced except
/// `metadata.finalizers` (union) and `metadata.ownerReferences` (merged by uid).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    strategic_merge_at(target, patch, "");
}

fn strategic_merge_at(target: &mut Value, patch: &Value, path: &str) {
    let Some((target_map, patch_map)) = object_pair(target, patch) else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        let child_path = format!("{path}/{key}");
        match (child_path.as_str(), value) {
            (_, Value::Null) => {
                target_map.remove(key);
            }
            ("/metadata/finalizers", Value::Array(items)) => {
                let existing = target_map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = existing {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
            ("/metadata/ownerReferences", Value::Array(items)) => {
                let existing = target_map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = existing {
                    for item in items {
                        match list.iter_mut().find(|e| e.get("uid") == item.get("uid")) {
                            Some(entry) => strategic_merge_at(entry, item, &child_path),
                            None => list.push(item.clone()),
                        }
                    }
                }
            }
            _ => strategic_merge_at(
                target_map.entry(key.clone()).or_insert(Value::Null),
                value,
                &child_path,
            ),
        }
    }
}

/// Applies a JSON patch document with evanphx/json-patch semantics.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "json patch must be an array of operations".to_string(),
        ));
    };
    for operation in operations {
        apply_operation(target, operation)?;
    }
    Ok(())
}

fn string_field<'a>(operation: &'a Value, field: &str) -> Result<&'a str, PatchError> {
    operation.get(field).and_then(Value::as_str).ok_or_else(|| {
        PatchError::Malformed(format!(
            "json patch operation is missing '{field}': {operation}"
        ))
    })
}

fn apply_operation(target: &mut Value, operation: &Value) -> Result<(), PatchError> {
    let op = string_field(operation, "op")?;
    let path = string_field(operation, "path")?;
    let value = || {
        operation.get("value").cloned().ok_or_else(|| {
            PatchError::Malformed(format!("{op} operation does not apply: missing value"))
        })
    };
    match op {
        "add" => add(target, path, value()?),
        "remove" => remove(target, path).map(drop),
        "replace" => {
            let new = value()?;
            let slot = pointer_mut(target, path).ok_or_else(|| {
                PatchError::Failed(format!(
                    "replace operation does not apply: doc is missing key: {path}"
                ))
            })?;
            *slot = new;
            Ok(())
        }
        "move" => {
            let from = string_field(operation, "from")?;
            let moved = remove(target, from)?;
            add(target, path, moved)
        }
        "copy" => {
            let from = string_field(operation, "from")?;
            let copied = pointer(target, from).cloned().ok_or_else(|| {
                PatchError::Failed(format!(
                    "copy operation does not apply: doc is missing from path: {from}"
                ))
            })?;
            add(target, path, copied)
        }
        "test" => {
            let expected = operation.get("value").cloned().unwrap_or(Value::Null);
            let actual = pointer(target, path).cloned().unwrap_or(Value::Null);
            if actual == expected {
                Ok(())
            } else {
                Err(PatchError::Failed(format!(
                    "testing value {path} failed: test failed"
                )))
            }
        }
        other => Err(PatchError::Malformed(format!(
            "unexpected kind of operation: {other:?}"
        ))),
    }
}

fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path.strip_prefix('/').ok_or_else(|| {
        PatchError::Malformed(format!("json pointer must start with '/': {path:?}"))
    })?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn pointer<'a>(target: &'a Value, path: &str) -> Option<&'a Value> {
    let tokens = parse_pointer(path).ok()?;
    let mut current = target;
    for token in &tokens {
        current = match current {
            Value::Object(map) => map.get(token)?,
            Value::Array(list) => list.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn pointer_mut<'a>(target: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let tokens = parse_pointer(path).ok()?;
    let mut current = target;
    for token in &tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(list) => list.get_mut(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn split_parent(path: &str) -> Result<(String, String), PatchError> {
    let mut tokens = parse_pointer(path)?;
    let last = tokens.pop().ok_or_else(|| {
        PatchError::Failed(
            "the root of the document cannot be the target of this operation".to_string(),
        )
    })?;
    let parent = tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok((parent, last))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent_path, last) = split_parent(path)?;
    let missing = || {
        PatchError::Failed(format!(
            "add operation does not apply: doc is missing path: {path:?}"
        ))
    };
    let parent = pointer_mut(target, &parent_path).ok_or_else(missing)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(list) => {
            let index = if last == "-" {
                list.len()
            } else {
                last.parse::<usize>().map_err(|_| missing())?
            };
            if index > list.len() {
                return Err(PatchError::Failed(format!(
                    "add operation does not apply: index out of bounds: {path:?}"
                )));
            }
            list.insert(index, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent_path, last) = split_parent(path)?;
    let missing = || {
        PatchError::Failed(format!(
            "remove operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match pointer_mut(target, &parent_path).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(list) => {
            let index = last.parse::<usize>().map_err(|_| missing())?;
            if index < list.len() {
                Ok(list.remove(index))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_of_missing_path_equals_null() {
        let mut doc = json!({"metadata": {"name": "w"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]}
        ]);
        json_patch(&mut doc, &patch).expect("absent equals null");
        assert_eq!(doc["metadata"]["finalizers"], json!(["a/b"]));
    }

    #[test]
    fn failed_test_and_missing_remove_are_failures() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}});
        let wrong = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "b"}]);
        assert!(matches!(
            json_patch(&mut doc, &wrong),
            Err(PatchError::Failed(_))
        ));
        let remove = json!([{"op": "remove", "path": "/spec/x"}]);
        assert!(matches!(
            json_patch(&mut doc, &remove),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!({"op": "add"})),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn add_append_move_copy_replace() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        let patch = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "copy", "from": "/b/c", "path": "/d"},
            {"op": "move", "from": "/b", "path": "/e"},
            {"op": "replace", "path": "/d", "value": "x"},
            {"op": "remove", "path": "/a/1"}
        ]);
        json_patch(&mut doc, &patch).expect("valid");
        assert_eq!(doc, json!({"a": [0, 2, 3], "d": "x", "e": {"c": 1}}));
    }

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut doc = json!({"spec": {"a": 1, "b": 2}, "x": [1]});
        merge_patch(&mut doc, &json!({"spec": {"a": null, "c": 3}, "x": [2]}));
        assert_eq!(doc, json!({"spec": {"b": 2, "c": 3}, "x": [2]}));
    }

    #[test]
    fn strategic_merges_finalizers_and_ignores_directives() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}, "data": {"k": "v"}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "data": {"$retainKeys": ["k"], "j": "w"}, "$patch": "merge"});
        strategic_merge_patch(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["a", "b"]}, "data": {"k": "v", "j": "w"}})
        );
    }
}
