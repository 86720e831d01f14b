//! Writes the controller makes: status, finalizers, annotation removals and HardwareData.
//!
//! The status is written with the resource version it was read at, so a concurrent change makes
//! the write fail with a conflict and the step is simply run again on fresh data. Finalizer
//! edits are guarded the same way with a JSON-patch `test`.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::{Error, owned_metadata};
use crate::model::{BareMetalHost, BareMetalHostStatus, HardwareData, HardwareDetails};
use ingot_api::metal3::HardwareDataSpec;

/// Finalizer that keeps a host until it is gone from the provisioner.
pub const HOST_FINALIZER: &str = "baremetalhost.metal3.io";

/// Finalizer that keeps a HardwareData until its host is being deleted.
pub const HARDWARE_DATA_FINALIZER: &str = "baremetalhost.metal3.io/hardwareData";

/// Whether the status differs in anything but its timestamps.
pub fn status_changed(before: &BareMetalHost, after: &BareMetalHost) -> bool {
    comparable(before.status.as_ref()) != comparable(after.status.as_ref())
}

fn comparable(status: Option<&BareMetalHostStatus>) -> BareMetalHostStatus {
    let mut status = status.cloned().unwrap_or_default();
    status.last_updated = None;
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    status
}

/// Writes the status, stamping `lastUpdated`, and keeps the host's resource version current.
pub async fn save_status(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
) -> Result<(), Error> {
    host.status.get_or_insert_default().last_updated = Some(Time(Timestamp::now()));
    let saved = hosts
        .replace_status(&host.name_any(), &PostParams::default(), host)
        .await
        .map_err(Error::api("save host status"))?;
    host.metadata.resource_version = saved.metadata.resource_version;
    Ok(())
}

/// Removes annotations from the host (a no-op when the set is empty).
pub async fn remove_annotations(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
    keys: &BTreeSet<String>,
) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let removals: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|key| (key.clone(), serde_json::Value::Null))
        .collect();
    let patch = serde_json::json!({"metadata": {"annotations": removals}});
    let saved = hosts
        .patch(
            &host.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::api("remove host annotations"))?;
    host.metadata.annotations = saved.metadata.annotations;
    host.metadata.resource_version = saved.metadata.resource_version;
    Ok(())
}

/// Adds the host finalizer to a live host. `Some` means it was added and the step ends.
pub async fn ensure_finalizer(
    host: &BareMetalHost,
    hosts: &Api<BareMetalHost>,
) -> Result<Option<super::Next>, Error> {
    if host.metadata.deletion_timestamp.is_some()
        || host.finalizers().iter().any(|f| f == HOST_FINALIZER)
    {
        return Ok(None);
    }
    let mut finalizers = host.finalizers().to_vec();
    finalizers.push(HOST_FINALIZER.to_string());
    patch_finalizers(host, hosts, finalizers).await?;
    Ok(Some(Some(std::time::Duration::ZERO)))
}

/// Removes the host finalizer, letting the API server delete the host.
pub async fn remove_finalizer(
    host: &BareMetalHost,
    hosts: &Api<BareMetalHost>,
) -> Result<(), Error> {
    let finalizers: Vec<String> = host
        .finalizers()
        .iter()
        .filter(|f| *f != HOST_FINALIZER)
        .cloned()
        .collect();
    if finalizers.len() == host.finalizers().len() {
        return Ok(());
    }
    patch_finalizers(host, hosts, finalizers).await
}

/// Replaces the finalizer list, guarded by a test of the list it was computed from, so that a
/// finalizer someone else added meanwhile is never dropped.
async fn patch_finalizers(
    host: &BareMetalHost,
    hosts: &Api<BareMetalHost>,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let current = host.metadata.finalizers.clone();
    let patch: json_patch::Patch = serde_json::from_value(match current {
        Some(current) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": finalizers},
        ]),
        None => {
            serde_json::json!([{"op": "add", "path": "/metadata/finalizers", "value": finalizers}])
        }
    })
    .map_err(|source| Error::Encode {
        what: "finalizer patch",
        source,
    })?;
    hosts
        .patch(
            &host.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(Error::api("update host finalizers"))?;
    Ok(())
}

/// Creates or refreshes the host's HardwareData after an inspection.
pub async fn write_hardware_data(
    host: &BareMetalHost,
    details: &HardwareDetails,
    client: &Client,
) -> Result<(), Error> {
    let api: Api<HardwareData> =
        Api::namespaced(client.clone(), &host.namespace().unwrap_or_default());
    let spec = HardwareDataSpec {
        hardware: Some(details.clone()),
    };
    match api
        .get_opt(&host.name_any())
        .await
        .map_err(Error::api("get hardware data"))?
    {
        Some(mut existing) => {
            if existing.spec == spec {
                return Ok(());
            }
            existing.spec = spec;
            api.replace(&host.name_any(), &PostParams::default(), &existing)
                .await
                .map_err(Error::api("update hardware data"))?;
        }
        None => {
            let data = HardwareData {
                metadata: owned_metadata(host, HARDWARE_DATA_FINALIZER),
                spec,
            };
            api.create(&PostParams::default(), &data)
                .await
                .map_err(Error::api("create hardware data"))?;
        }
    }
    Ok(())
}

/// Lets a HardwareData go once its host is being deleted.
pub async fn drop_hardware_data_finalizer(
    data: &HardwareData,
    api: &Api<HardwareData>,
) -> Result<(), Error> {
    if !data
        .finalizers()
        .iter()
        .any(|f| f == HARDWARE_DATA_FINALIZER)
    {
        return Ok(());
    }
    let mut data = data.clone();
    data.finalizers_mut()
        .retain(|f| f != HARDWARE_DATA_FINALIZER);
    api.replace(&data.name_any(), &PostParams::default(), &data)
        .await
        .map_err(Error::api("release hardware data"))?;
    Ok(())
}
