//! Host data kept outside the status: the HardwareData record, the status annotation used to
//! carry a status across clusters, and hardware details supplied by annotation.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

use super::{Error, Next, writes};
use crate::annotations::{HARDWARE_DETAILS, STATUS};
use crate::events::EventSink;
use crate::host::HostFacts;
use crate::model::{BareMetalHost, BareMetalHostStatus, HardwareData, HardwareDetails};

/// Runs the host-data steps in order; `Some` means the step wrote something and the reconcile
/// ends there (the write itself, or a requeue, brings the host back).
pub async fn reconcile_host_data(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
    client: &Client,
    events: &EventSink,
) -> Result<Option<Next>, Error> {
    let hardware_data = load_hardware_data(host, client).await?;

    if host
        .status
        .as_ref()
        .and_then(|status| status.last_updated.as_ref())
        .is_none()
        && let Some(restored) = host
            .annotation_map()
            .get(STATUS)
            .and_then(|value| decode_status(value))
    {
        let mut restored = restored;
        if let Some(hardware) = hardware_data
            .as_ref()
            .and_then(|data| data.spec.hardware.clone())
        {
            restored.hardware = Some(hardware);
        }
        host.status = Some(restored);
        tracing::info!("restored the status from its annotation");
        writes::save_status(host, hosts).await?;
        return Ok(Some(Some(std::time::Duration::ZERO)));
    }
    if host.annotation_map().contains_key(STATUS) {
        writes::remove_annotations(host, hosts, &[STATUS.to_string()].into()).await?;
        return Ok(Some(Some(std::time::Duration::ZERO)));
    }

    let architecture = hardware_data
        .as_ref()
        .and_then(|data| data.spec.hardware.as_ref())
        .and_then(|hardware| hardware.cpu.as_ref())
        .and_then(|cpu| cpu.arch.clone())
        .filter(|arch| !arch.is_empty());
    if host
        .spec
        .architecture
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        && let Some(architecture) = architecture
    {
        let patch = serde_json::json!({"spec": {"architecture": architecture}});
        hosts
            .patch(
                &host.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::api("set host architecture"))?;
        return Ok(Some(Some(std::time::Duration::ZERO)));
    }

    update_hardware_details(host, hosts, hardware_data.as_ref(), events).await
}

/// Reads the host's HardwareData; while the host is being deleted, lets go of it.
async fn load_hardware_data(
    host: &BareMetalHost,
    client: &Client,
) -> Result<Option<HardwareData>, Error> {
    let api: Api<HardwareData> =
        Api::namespaced(client.clone(), &host.namespace().unwrap_or_default());
    let data = api
        .get_opt(&host.name_any())
        .await
        .map_err(Error::api("get hardware data"))?;
    if host.is_deleting()
        && let Some(data) = &data
    {
        writes::drop_hardware_data_finalizer(data, &api).await?;
    }
    Ok(data)
}

/// Takes hardware details from HardwareData, or from the annotation, when the host has none
/// or does not inspect; always consumes the annotation.
async fn update_hardware_details(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
    hardware_data: Option<&HardwareData>,
    events: &EventSink,
) -> Result<Option<Next>, Error> {
    let annotation = host.annotation_map().get(HARDWARE_DETAILS).cloned();
    let wanted = host
        .status
        .as_ref()
        .and_then(|status| status.hardware.as_ref())
        .is_none()
        || host.inspection_disabled();

    if wanted {
        let supplied = hardware_data
            .and_then(|data| data.spec.hardware.clone())
            .or_else(|| annotation.as_deref().and_then(strict::<HardwareDetails>));
        if let Some(details) = supplied
            && host
                .status
                .as_ref()
                .and_then(|status| status.hardware.as_ref())
                != Some(&details)
        {
            host.status.get_or_insert_default().hardware = Some(details);
            writes::save_status(host, hosts).await?;
            events.normal(
                "UpdateHardwareDetails",
                "Set HardwareDetails from annotation or HardwareData",
            );
            return Ok(Some(Some(std::time::Duration::ZERO)));
        }
    }

    if annotation.is_some() {
        if !wanted {
            events.normal(
                "RemoveAnnotation",
                "HardwareDetails annotation ignored: the host is inspected",
            );
        }
        writes::remove_annotations(host, hosts, &[HARDWARE_DETAILS.to_string()].into()).await?;
        return Ok(Some(Some(std::time::Duration::ZERO)));
    }
    Ok(None)
}

/// Decodes a status annotation. Statuses written by other operators carry `"errorType": ""` for
/// "no error", which is the absence of an error type here.
fn decode_status(value: &str) -> Option<BareMetalHostStatus> {
    let mut object: serde_json::Value = serde_json::from_str(value).ok()?;
    if let Some(fields) = object.as_object_mut()
        && fields.get("errorType").and_then(serde_json::Value::as_str) == Some("")
    {
        fields.remove("errorType");
    }
    strict(&object.to_string())
}

/// Decodes JSON refusing unknown fields, as upstream does for both annotations: a typo must
/// not silently drop data.
fn strict<T: DeserializeOwned + serde::Serialize>(value: &str) -> Option<T> {
    let known: T = serde_json::from_str(value).ok()?;
    let original: serde_json::Value = serde_json::from_str(value).ok()?;
    let round_trip = serde_json::to_value(&known).ok()?;
    covers(&round_trip, &original).then_some(known)
}

/// Whether every field present in `original` survived decoding into `decoded`.
fn covers(decoded: &serde_json::Value, original: &serde_json::Value) -> bool {
    match (decoded, original) {
        (serde_json::Value::Object(decoded), serde_json::Value::Object(original)) => {
            original.iter().all(|(key, value)| {
                value.is_null() || decoded.get(key).is_some_and(|kept| covers(kept, value))
            })
        }
        (serde_json::Value::Array(decoded), serde_json::Value::Array(original)) => {
            decoded.len() == original.len()
                && decoded
                    .iter()
                    .zip(original)
                    .all(|(kept, value)| covers(kept, value))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding_rejects_unknown_fields() {
        assert!(strict::<HardwareDetails>(r#"{"ramMebibytes": 1024}"#).is_some());
        assert!(
            strict::<HardwareDetails>(r#"{"ramMebibytes": 1024, "ramGigabytes": 1}"#).is_none()
        );
        assert!(strict::<HardwareDetails>(r#"{"cpu": {"arch": "x86_64", "cores": 4}}"#).is_none());
        assert!(strict::<HardwareDetails>("not json").is_none());
    }

    #[test]
    fn strict_decoding_accepts_a_full_status() {
        let status = r#"{"operationalStatus":"OK","errorMessage":"","poweredOn":true,
            "provisioning":{"state":"provisioned","ID":"abc","image":{"url":"http://x/i.img","checksum":"c"}},
            "errorCount":0,"errorType":""}"#;
        let decoded = decode_status(status).expect("valid status");

        assert!(decoded.powered_on);
    }
}
