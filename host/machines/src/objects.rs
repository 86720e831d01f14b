//! Writes shared by the controllers: guarded finalizer changes and status patches that
//! clear removed fields and are skipped when nothing but timestamps changed.

use std::fmt::Debug;

use kube::api::{Api, Patch};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::claim::patch_params;

/// Fields that change on every write and must not make a status look different.
const TIMESTAMP_FIELDS: &[&str] = &["lastUpdated", "lastTransitionTime"];

/// Adds `finalizer` unless present. The patch carries the object's `resourceVersion`, so a
/// concurrent change makes it fail with 409 instead of overwriting someone's finalizer.
pub async fn add_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if object
        .finalizers()
        .iter()
        .any(|existing| existing == finalizer)
    {
        return Ok(());
    }

    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.to_owned());
    set_finalizers(api, object, finalizers).await
}

/// Removes `finalizer` if present, guarded like [`add_finalizer`].
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !object
        .finalizers()
        .iter()
        .any(|existing| existing == finalizer)
    {
        return Ok(());
    }

    let finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|existing| *existing != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, object, finalizers).await
}

async fn set_finalizers<K>(
    api: &Api<K>,
    object: &K,
    finalizers: Vec<String>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });

    api.patch(&object.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Writes `new` as the object's status if it differs from `old` in more than timestamps.
/// Top-level fields present in `old` but gone from `new` are sent as `null` so they are
/// cleared (a merge patch leaves absent fields alone). Returns whether anything was written.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let old = old.map(to_value).unwrap_or(Value::Null);
    let mut new = to_value(new);

    if without_timestamps(&old) == without_timestamps(&new) {
        return Ok(false);
    }

    if let (Value::Object(old), Value::Object(new)) = (&old, &mut new) {
        for key in old.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
    }

    let patch = json!({ "status": new });
    api.patch_status(name, &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(true)
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn without_timestamps(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !TIMESTAMP_FIELDS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), without_timestamps(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_timestamps).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_do_not_make_a_difference() {
        let old = json!({"ready": true, "lastUpdated": "a", "conditions": [{"type": "X", "lastTransitionTime": "a"}]});
        let new = json!({"ready": true, "lastUpdated": "b", "conditions": [{"type": "X", "lastTransitionTime": "b"}]});

        assert_eq!(without_timestamps(&old), without_timestamps(&new));
        assert_ne!(
            without_timestamps(&old),
            without_timestamps(&json!({"ready": false}))
        );
    }
}
