//! Background cleanup that upstream runs as controllers: the garbage
//! collector (ownerReferences with background, foreground and orphan
//! propagation), namespace termination, and removal of a CRD's objects when
//! the CRD is deleted. It sweeps after every deletion and once a second.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::{Api, Target};
use crate::error::ApiError;
use crate::registry::{Builtin, ResourceDef};
use crate::store::{CommitError, Expect, StoredObject, Write};
use crate::write::{DeleteOptions, NAMESPACE_KEY};

/// Finalizer that holds a CRD until its objects are gone.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// How often the collector sweeps without being woken.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

type Entry = (String, String, String, Arc<StoredObject>);

/// Runs until `stop` flips to true.
pub async fn run(api: Arc<Api>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = api.gc_wakeup.notified() => {}
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(err) = sweep(&api).await {
            tracing::warn!(error = %err, "garbage collection sweep failed; retrying on the next sweep");
        }
    }
}

fn definitions(api: &Api) -> HashMap<String, Arc<ResourceDef>> {
    api.store
        .registry()
        .all()
        .filter(|d| d.builtin != Some(Builtin::EventsV1))
        .map(|d| (d.storage_key(), d.clone()))
        .collect()
}

fn finalizers_of(object: &StoredObject) -> Vec<String> {
    object
        .value()
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One pass over all objects.
pub async fn sweep(api: &Api) -> Result<(), ApiError> {
    let objects = api.store.all_objects();
    let defs = definitions(api);
    let live: HashSet<&str> = objects.iter().map(|(_, _, _, o)| &*o.uid).collect();

    for (key, ns, name, object) in objects.iter().filter(|(_, _, _, o)| !o.owners.is_empty()) {
        if object.owners.iter().all(|uid| !live.contains(&**uid)) {
            delete(api, &defs, key, ns, name).await?;
        }
    }

    for (key, ns, name, object) in objects.iter().filter(|(_, _, _, o)| o.deleting) {
        let held = finalizers_of(object);
        if held.iter().any(|f| f == ORPHAN) {
            orphan_dependents(&objects, &object.uid, api).await?;
            edit(api, key, ns, name, |v| remove_finalizer(v, ORPHAN)).await?;
        }
        if held.iter().any(|f| f == FOREGROUND)
            && delete_dependents(api, &defs, &objects, &object.uid).await? == 0
        {
            edit(api, key, ns, name, |v| remove_finalizer(v, FOREGROUND)).await?;
        }
        if key == NAMESPACE_KEY && empty_namespace(api, &defs, &objects, name).await? == 0 {
            edit(api, key, ns, name, |v| {
                if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            })
            .await?;
        }
        if key == crate::store::CRD_KEY
            && held.iter().any(|f| f == CRD_CLEANUP_FINALIZER)
            && remove_custom_objects(api, &defs, &objects, object).await? == 0
        {
            edit(api, key, ns, name, |v| {
                remove_finalizer(v, CRD_CLEANUP_FINALIZER)
            })
            .await?;
        }
    }
    Ok(())
}

async fn delete(
    api: &Api,
    defs: &HashMap<String, Arc<ResourceDef>>,
    key: &str,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let Some(def) = defs.get(key) else {
        return Ok(());
    };
    let target = Target {
        def: def.clone(),
        version: def.storage_version.clone(),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        name: Some(name.to_string()),
        status: false,
    };
    match api.delete_object(&target, &DeleteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 || err.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn delete_dependents(
    api: &Api,
    defs: &HashMap<String, Arc<ResourceDef>>,
    objects: &[Entry],
    owner: &str,
) -> Result<usize, ApiError> {
    let mut count = 0;
    for (key, ns, name, object) in objects
        .iter()
        .filter(|(_, _, _, o)| o.owners.iter().any(|u| &**u == owner))
    {
        count += 1;
        if !object.deleting {
            delete(api, defs, key, ns, name).await?;
        }
    }
    Ok(count)
}

async fn orphan_dependents(objects: &[Entry], owner: &str, api: &Api) -> Result<(), ApiError> {
    for (key, ns, name, _) in objects
        .iter()
        .filter(|(_, _, _, o)| o.owners.iter().any(|u| &**u == owner))
    {
        edit(api, key, ns, name, |v| {
            if let Some(refs) = v
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner));
            }
            strip_empty(v, "ownerReferences");
        })
        .await?;
    }
    Ok(())
}

async fn empty_namespace(
    api: &Api,
    defs: &HashMap<String, Arc<ResourceDef>>,
    objects: &[Entry],
    namespace: &str,
) -> Result<usize, ApiError> {
    let mut count = 0;
    for (key, ns, name, object) in objects.iter().filter(|(_, ns, _, _)| ns == namespace) {
        count += 1;
        if !object.deleting {
            delete(api, defs, key, ns, name).await?;
        }
    }
    Ok(count)
}

async fn remove_custom_objects(
    api: &Api,
    defs: &HashMap<String, Arc<ResourceDef>>,
    objects: &[Entry],
    crd: &StoredObject,
) -> Result<usize, ApiError> {
    let value = crd.value();
    let group = value
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = value
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = format!("{group}/{plural}");
    let mut count = 0;
    for (_, ns, name, object) in objects.iter().filter(|(k, _, _, _)| *k == key) {
        count += 1;
        if !object.deleting {
            delete(api, defs, &key, ns, name).await?;
        }
    }
    Ok(count)
}

fn remove_finalizer(object: &mut Value, finalizer: &str) {
    if let Some(list) = object
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != finalizer);
    }
    strip_empty(object, "finalizers");
}

fn strip_empty(object: &mut Value, field: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get(field)
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        meta.remove(field);
    }
}

/// Read-modify-write by the server itself; a deleting object left with
/// nothing holding it is removed.
async fn edit(
    api: &Api,
    key: &str,
    ns: &str,
    name: &str,
    change: impl Fn(&mut Value),
) -> Result<(), ApiError> {
    loop {
        let Some(current) = api.store.get(key, ns, name) else {
            return Ok(());
        };
        let mut object = current.value();
        change(&mut object);
        if object == current.value() {
            return Ok(());
        }
        let namespace_held = object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
            && key == NAMESPACE_KEY;
        let released =
            current.deleting && object.pointer("/metadata/finalizers").is_none() && !namespace_held;
        let write = Write {
            key: key.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            expect: Expect::Version(current.rv),
            object: (!released).then_some(object),
        };
        match api.store.commit(write).await {
            Ok(_) => {
                if released {
                    api.gc_wakeup.notify_one();
                }
                return Ok(());
            }
            Err(CommitError::Stale) => continue,
            Err(CommitError::Missing) => return Ok(()),
            Err(err) => return Err(ApiError::internal(err.to_string())),
        }
    }
}
