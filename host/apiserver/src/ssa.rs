//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is a set of paths; each path element is encoded the way
//! `fieldsV1` spells it: `f:<field>` for map members, `k:<json>` for members of
//! a `map` list (keyed by `x-kubernetes-list-map-keys`), `v:<json>` for members
//! of a `set` list, and `.` for a list member itself. Other lists are atomic.
//!
//! Applies conflict when another manager owns a field the applier sets to a
//! different value; `force` moves ownership instead. Non-apply writes
//! (`Update`) take ownership of the fields they change. Timestamps of an entry
//! change only when its field set changes, so a repeated identical apply
//! leaves the object byte-identical and is detected as a no-op.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A set of field paths.
pub type FieldSet = BTreeSet<Vec<String>>;

/// Which part of the object a write may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole object (no status subresource).
    Whole,
    /// Everything except `.status` (main resource when the status subresource is on).
    MainResource,
    /// Only `.status` (the status subresource).
    Status,
}

impl Scope {
    fn admits(self, path: &[String]) -> bool {
        let is_status = path.first().is_some_and(|p| p == "f:status");
        match self {
            Self::Whole => true,
            Self::MainResource => !is_status,
            Self::Status => is_status,
        }
    }

    fn subresource(self) -> Option<&'static str> {
        (self == Self::Status).then_some("status")
    }
}

fn metadata_schema() -> Value {
    json!({"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"], "items": {"type": "object"}}
    }})
}

fn child_schema<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let schema = schema?;
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn list_type(schema: Option<&Value>) -> (&str, Vec<String>) {
    let kind = schema
        .and_then(|s| s.get("x-kubernetes-list-type"))
        .and_then(Value::as_str)
        .unwrap_or("atomic");
    let keys = schema
        .and_then(|s| s.get("x-kubernetes-list-map-keys"))
        .and_then(Value::as_array)
        .map(|k| {
            k.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (kind, keys)
}

fn element_key(element: &Value, keys: &[String]) -> String {
    let mut map = Map::new();
    for key in keys {
        if let Some(v) = element.get(key) {
            map.insert(key.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(map))
}

/// The fields set by an object (apiVersion, kind and identity metadata excluded).
pub fn fields_of(object: &Value, schema: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    let meta_schema = metadata_schema();
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(v) = value.get(field) {
                        let path = vec!["f:metadata".to_string(), format!("f:{field}")];
                        collect(v, child_schema(Some(&meta_schema), field), path, &mut out);
                    }
                }
            }
            _ => collect(
                value,
                child_schema(schema, key),
                vec![format!("f:{key}")],
                &mut out,
            ),
        }
    }
    out
}

fn collect(value: &Value, schema: Option<&Value>, path: Vec<String>, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(format!("f:{key}"));
                collect(child, child_schema(schema, key), child_path, out);
            }
        }
        Value::Array(items) => {
            let (kind, keys) = list_type(schema);
            let item_schema = schema.and_then(|s| s.get("items"));
            match kind {
                "map" => {
                    for item in items {
                        let mut element = path.clone();
                        element.push(element_key(item, &keys));
                        let mut marker = element.clone();
                        marker.push(".".to_string());
                        out.insert(marker);
                        if let Some(fields) = item.as_object() {
                            for (key, child) in fields {
                                let mut child_path = element.clone();
                                child_path.push(format!("f:{key}"));
                                collect(child, child_schema(item_schema, key), child_path, out);
                            }
                        }
                    }
                }
                "set" => {
                    for item in items {
                        let mut element = path.clone();
                        element.push(format!("v:{item}"));
                        out.insert(element);
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a field path, if present.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for element in path {
        current = step(current, element)?;
    }
    Some(current)
}

fn step<'a>(current: &'a Value, element: &str) -> Option<&'a Value> {
    if element == "." {
        return Some(current);
    }
    if let Some(field) = element.strip_prefix("f:") {
        return current.get(field);
    }
    let items = current.as_array()?;
    if let Some(key) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items
            .iter()
            .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    let wanted: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
    items.iter().find(|item| **item == wanted)
}

fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_at(object, parents);
        return;
    }
    let mut current = object;
    for element in parents {
        let next = match element.strip_prefix("f:") {
            Some(field) => current.get_mut(field),
            None => find_element_mut(current, element),
        };
        match next {
            Some(n) => current = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = current.as_object_mut() {
            map.remove(field);
        }
        return;
    }
    let target = step(current, last).cloned();
    if let (Some(items), Some(target)) = (current.as_array_mut(), target) {
        items.retain(|item| *item != target);
    }
}

fn find_element_mut<'a>(current: &'a mut Value, element: &str) -> Option<&'a mut Value> {
    let wanted = step(current, element)?.clone();
    current
        .as_array_mut()?
        .iter_mut()
        .find(|item| **item == wanted)
}

/// Merges an applied configuration into a live object: maps merge, `map` lists
/// merge by key, `set` lists union, everything else is replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, schema: Option<&Value>) {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) => {
            for (key, value) in applied_map {
                let sub_schema = if key == "metadata" {
                    None
                } else {
                    child_schema(schema, key)
                };
                match live_map.get_mut(key) {
                    Some(existing) if key == "metadata" => merge_metadata(existing, value),
                    Some(existing) => merge_applied(existing, value, sub_schema),
                    None => {
                        live_map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(applied_items)) => {
            let (kind, keys) = list_type(schema);
            let item_schema = schema.and_then(|s| s.get("items"));
            match kind {
                "map" => {
                    for item in applied_items {
                        let key = element_key(item, &keys);
                        let position = live_items.iter().position(|l| element_key(l, &keys) == key);
                        match position {
                            Some(index) => merge_applied(&mut live_items[index], item, item_schema),
                            None => live_items.push(item.clone()),
                        }
                    }
                }
                "set" => {
                    for item in applied_items {
                        if !live_items.contains(item) {
                            live_items.push(item.clone());
                        }
                    }
                }
                _ => *live_items = applied_items.clone(),
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

fn merge_metadata(live: &mut Value, applied: &Value) {
    let schema = metadata_schema();
    let (Some(live_map), Some(applied_map)) = (live.as_object_mut(), applied.as_object()) else {
        return;
    };
    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
        if let Some(value) = applied_map.get(field) {
            let entry = live_map
                .entry(field.to_string())
                .or_insert_with(|| match value {
                    Value::Array(_) => Value::Array(Vec::new()),
                    _ => Value::Object(Map::new()),
                });
            merge_applied(entry, value, child_schema(Some(&schema), field));
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Manager {
    name: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Manager {
    fn same_identity(&self, name: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.name == name
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.name,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.fields),
        });
        if let (Some(sub), Some(map)) = (&self.subresource, entry.as_object_mut()) {
            map.insert("subresource".to_string(), Value::String(sub.clone()));
        }
        entry
    }
}

fn managers_of(object: &Value) -> Vec<Manager> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Manager {
                name: text("manager"),
                operation: text("operation"),
                api_version: text("apiVersion"),
                time: text("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

fn store_managers(object: &mut Value, managers: Vec<Manager>) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let Some(meta) = root
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(Manager::to_json)
        .collect();
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".to_string(), Value::Array(entries));
    }
}

/// Encodes a field set as a `fieldsV1` tree.
pub fn to_fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for element in path {
            let next = node
                .entry(element.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(map) = next else {
                break;
            };
            node = map;
        }
    }
    Value::Object(root)
}

/// Decodes a `fieldsV1` tree.
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk_tree(tree, &mut Vec::new(), &mut out);
    out
}

fn walk_tree(node: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
    match node.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                walk_tree(child, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

/// Renders a path as upstream conflict messages do (`.spec.list[name="a"].image`).
pub fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let parsed: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[{value}]"));
        }
    }
    out
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Context of one write for field management.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// apiVersion the request used.
    pub api_version: &'a str,
    /// Which part of the object the request may change.
    pub scope: Scope,
    /// The version's schema, for list types.
    pub schema: Option<&'a Value>,
}

/// Records an `Update` (non-apply write) in `new`'s managedFields, based on `old`'s.
pub fn record_update(old: Option<&Value>, new: &mut Value, ownership: Ownership<'_>) {
    let mut managers = old.map(managers_of).unwrap_or_default();
    let new_fields = fields_of(new, ownership.schema);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| ownership.scope.admits(p))
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    for manager in &mut managers {
        manager.fields.retain(|p| !changed.contains(p));
    }
    if !changed.is_empty() {
        let subresource = ownership.scope.subresource();
        let time = now();
        match managers
            .iter_mut()
            .find(|m| m.same_identity(ownership.manager, "Update", subresource))
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = time;
                entry.api_version = ownership.api_version.to_string();
            }
            None => managers.push(Manager {
                name: ownership.manager.to_string(),
                operation: "Update".to_string(),
                api_version: ownership.api_version.to_string(),
                time,
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    forget_missing(&mut managers, new);
    store_managers(new, managers);
}

fn forget_missing(managers: &mut [Manager], object: &Value) {
    for manager in managers {
        manager.fields.retain(|p| value_at(object, p).is_some());
    }
}

/// A field owned by another manager that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// Rendered field path.
    pub field: String,
}

/// Server-side apply of `applied` onto `live` (or onto nothing, for a create).
/// Returns the new object, or the conflicts when `force` is off.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    ownership: Ownership<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let subresource = ownership.scope.subresource();
    let applied_fields: FieldSet = fields_of(applied, ownership.schema)
        .into_iter()
        .filter(|p| ownership.scope.admits(p))
        .collect();
    let mut managers = managers_of(live);

    let mut conflicts = Vec::new();
    let mut conflicting_paths = FieldSet::new();
    for manager in managers
        .iter()
        .filter(|m| !m.same_identity(ownership.manager, "Apply", subresource))
    {
        for path in manager.fields.intersection(&applied_fields) {
            if path.last().is_some_and(|e| e == ".")
                || value_at(live, path) == value_at(applied, path)
            {
                continue;
            }
            conflicts.push(Conflict {
                manager: manager.name.clone(),
                field: render_path(path),
            });
            conflicting_paths.insert(path.clone());
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for manager in managers
        .iter_mut()
        .filter(|m| !m.same_identity(ownership.manager, "Apply", subresource))
    {
        manager.fields.retain(|p| !conflicting_paths.contains(p));
    }

    let previous = managers
        .iter()
        .find(|m| m.same_identity(ownership.manager, "Apply", subresource))
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = managers
        .iter()
        .filter(|m| !m.same_identity(ownership.manager, "Apply", subresource))
        .flat_map(|m| m.fields.iter().cloned())
        .collect();

    let mut result = live.clone();
    for path in previous
        .difference(&applied_fields)
        .filter(|p| !others.contains(*p))
    {
        remove_at(&mut result, path);
    }
    merge_applied(&mut result, applied, ownership.schema);

    let changed_set = previous != applied_fields;
    match managers
        .iter_mut()
        .find(|m| m.same_identity(ownership.manager, "Apply", subresource))
    {
        Some(entry) if changed_set => {
            entry.fields = applied_fields;
            entry.time = now();
            entry.api_version = ownership.api_version.to_string();
        }
        Some(_) => {}
        None => managers.push(Manager {
            name: ownership.manager.to_string(),
            operation: "Apply".to_string(),
            api_version: ownership.api_version.to_string(),
            time: now(),
            subresource: subresource.map(str::to_string),
            fields: applied_fields,
        }),
    }
    forget_missing(&mut managers, &result);
    store_managers(&mut result, managers);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ownership(manager: &str) -> Ownership<'_> {
        Ownership {
            manager,
            api_version: "demo.example.com/v1",
            scope: Scope::Whole,
            schema: None,
        }
    }

    fn widget(size: i64) -> Value {
        json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "labels": {"app": "demo"}}, "spec": {"size": size}})
    }

    #[test]
    fn fields_v1_round_trip() {
        let fields = fields_of(&widget(1), None);
        let tree = to_fields_v1(&fields);
        assert_eq!(
            tree,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:size": {}}})
        );
        assert_eq!(from_fields_v1(&tree), fields);
    }

    #[test]
    fn repeated_apply_is_identical() {
        let first = apply(None, &widget(1), ownership("kubectl"), false).expect("create");
        let second = apply(Some(&first), &widget(1), ownership("kubectl"), false).expect("again");
        assert_eq!(first, second);
    }

    #[test]
    fn update_takes_ownership_and_apply_conflicts_until_forced() {
        let applied = apply(None, &widget(1), ownership("kubectl"), false).expect("create");
        let mut edited = applied.clone();
        edited["spec"]["size"] = json!(5);
        record_update(Some(&applied), &mut edited, ownership("kubectl-edit"));
        let conflicts =
            apply(Some(&edited), &widget(1), ownership("kubectl"), false).expect_err("conflict");
        assert_eq!(
            conflicts,
            [Conflict {
                manager: "kubectl-edit".to_string(),
                field: ".spec.size".to_string()
            }]
        );
        let forced = apply(Some(&edited), &widget(1), ownership("kubectl"), true).expect("forced");
        assert_eq!(forced["spec"]["size"], 1);
        let managers = forced["metadata"]["managedFields"]
            .as_array()
            .expect("managers");
        assert_eq!(managers.len(), 1, "{managers:?}");
        assert_eq!(managers[0]["manager"], "kubectl");
    }

    #[test]
    fn dropped_fields_are_removed_unless_shared() {
        let mut first = widget(1);
        first["spec"]["color"] = json!("red");
        let live = apply(None, &first, ownership("a"), false).expect("create");
        let live = apply(Some(&live), &widget(1), ownership("a"), false).expect("drop color");
        assert!(live["spec"].get("color").is_none());
    }

    #[test]
    fn map_lists_merge_by_key() {
        let schema = json!({"properties": {"spec": {"properties": {"ports": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}}}}});
        let owned = |m| Ownership {
            manager: m,
            api_version: "v1",
            scope: Scope::Whole,
            schema: Some(&schema),
        };
        let a = json!({"spec": {"ports": [{"name": "http", "port": 80}]}});
        let b = json!({"spec": {"ports": [{"name": "https", "port": 443}]}});
        let live = apply(None, &a, owned("a"), false).expect("a");
        let live = apply(Some(&live), &b, owned("b"), false).expect("b");
        assert_eq!(live["spec"]["ports"].as_array().map(Vec::len), Some(2));
        let c = json!({"spec": {"ports": [{"name": "http", "port": 81}]}});
        let conflicts = apply(Some(&live), &c, owned("c"), false).expect_err("conflict");
        assert_eq!(conflicts[0].field, ".spec.ports[name=\"http\"].port");
    }
}
