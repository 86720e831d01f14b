//! The `/scale` subresource of custom resources that declare
//! `subresources.scale`: an `autoscaling/v1` Scale view of the object's
//! replica fields, read with GET and written with PUT or PATCH.
//!
//! A write to the Scale only changes the field named by `specReplicasPath`;
//! it goes through the ordinary replace path of the object, so schema
//! validation, admission, generation and watch events behave as for any
//! other update of the object.

use http_body_util::BodyExt;
use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::api::{Api, ApiRequest, Target};
use crate::error::{ApiError, FieldCause};
use crate::http::{self, Body};
use crate::patch::{self, PatchError};

/// How many times a write is recomputed after losing a race with another
/// write of the same object (only when the client did not pin a version).
const MAX_RETRIES: usize = 8;

/// Where a custom resource keeps its replica counts (`subresources.scale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON path of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// JSON path of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// JSON path of the serialized label selector, if declared.
    pub label_selector: Option<String>,
}

impl ScalePaths {
    /// Reads `subresources.scale` of one CRD version, if present and usable.
    pub fn from_version(version: &Value) -> Option<Self> {
        let scale = version.pointer("/subresources/scale")?;
        let text = |key: &str| scale.get(key).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            spec_replicas: text("specReplicasPath")?,
            status_replicas: text("statusReplicasPath")?,
            label_selector: text("labelSelectorPath").filter(|p| !p.is_empty()),
        })
    }
}

/// `rest` without a trailing `scale` segment, when it addresses a named object's subresource.
pub fn object_path<'a>(rest: &'a [&'a str]) -> Option<&'a [&'a str]> {
    match rest {
        [object @ .., _, "scale"] => Some(&rest[..object.len() + 1]),
        _ => None,
    }
}

/// Serves GET, PUT and PATCH on the Scale of the object `target` names.
pub async fn serve(
    api: &Api,
    target: &Target,
    paths: &ScalePaths,
    request: ApiRequest,
) -> Result<Response<Body>, ApiError> {
    match request.method {
        Method::GET => {
            let object = api.present(&target.def, &target.version, api.current(target)?.value())?;
            Ok(http::json(200, &scale_of(&object, paths), &[]))
        }
        Method::PUT | Method::PATCH => update(api, target, paths, request).await,
        ref method => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// The `autoscaling/v1` Scale view of an object.
pub fn scale_of(object: &Value, paths: &ScalePaths) -> Value {
    let metadata = &object["metadata"];
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": read_path(object, &paths.spec_replicas).unwrap_or(json!(0))},
        "status": {"replicas": read_path(object, &paths.status_replicas).unwrap_or(json!(0))},
    });
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|path| read_path(object, path))
        .filter(Value::is_string)
    {
        scale["status"]["selector"] = selector;
    }
    if let Some(meta) = scale["metadata"].as_object_mut() {
        meta.retain(|_, value| !value.is_null());
    }
    scale
}

async fn update(
    api: &Api,
    target: &Target,
    paths: &ScalePaths,
    request: ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let document: Value = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("invalid Scale body: {e}")))?;
    for _ in 0..MAX_RETRIES {
        let current = api.present(&target.def, &target.version, api.current(target)?.value())?;
        let wanted = wanted_scale(target, &request, &document, scale_of(&current, paths))?;
        let pinned = wanted["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        let current_rv = current["metadata"]["resourceVersion"].clone();
        if pinned.as_ref().is_some_and(|rv| current_rv != *rv) {
            return Err(conflict(target));
        }

        let replicas = replicas_of(target, &wanted)?;
        let mut object = current;
        write_path(&mut object, &paths.spec_replicas, json!(replicas))?;
        let body = serde_json::to_vec(&object)
            .map_err(|e| ApiError::internal(format!("cannot encode the object: {e}")))?;
        let replace = ApiRequest {
            method: Method::PUT,
            query: crate::http::Query::parse(Some(&forwarded_query(&request))),
            accept: String::new(),
            content_type: "application/json".to_string(),
            user_agent: request.user_agent.clone(),
            body: body.into(),
        };
        let response = api.replace(target, &replace).await;
        match response {
            Err(err) if err.code == 409 && pinned.is_none() => continue,
            Err(err) => return Err(err),
            Ok(response) => return scale_response(response, paths).await,
        }
    }
    Err(conflict(target))
}

/// The Scale the client asks for: the PUT body, or the current Scale with the patch applied.
fn wanted_scale(
    target: &Target,
    request: &ApiRequest,
    document: &Value,
    current: Value,
) -> Result<Value, ApiError> {
    if request.method == Method::PUT {
        return Ok(document.clone());
    }
    let media = request
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let mut scale = current;
    match media {
        "application/merge-patch+json" => patch::merge_patch(&mut scale, document),
        "application/json-patch+json" => {
            patch::json_patch(&mut scale, document).map_err(|e| match e {
                PatchError::Malformed(m) => ApiError::bad_request(m),
                PatchError::Failed(m) => ApiError::unprocessable(m),
            })?
        }
        "application/strategic-merge-patch+json" => {
            patch::strategic_merge_patch(&mut scale, document)
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types for {}/scale include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
                target.def.plural
            )));
        }
    }
    Ok(scale)
}

fn replicas_of(target: &Target, scale: &Value) -> Result<i64, ApiError> {
    let value = &scale["spec"]["replicas"];
    let invalid = |detail: &str| {
        ApiError::invalid(
            "autoscaling",
            "Scale",
            target.name.as_deref().unwrap_or_default(),
            &[FieldCause::invalid("spec.replicas", value, detail)],
        )
    };
    match value.as_i64() {
        Some(replicas) if replicas < 0 => Err(invalid("must be greater than or equal to 0")),
        Some(replicas) if replicas > i64::from(i32::MAX) => {
            Err(invalid("must be a 32-bit integer"))
        }
        Some(replicas) => Ok(replicas),
        None if value.is_null() => Ok(0),
        None => Err(invalid("must be an integer")),
    }
}

/// Query parameters the object write honours (dry run, field manager and validation).
fn forwarded_query(request: &ApiRequest) -> String {
    ["dryRun", "fieldManager", "fieldValidation"]
        .iter()
        .filter_map(|key| {
            request
                .query
                .get(key)
                .map(|value| format!("{key}={}", encode(value)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Turns the object answer of the replace into a Scale answer.
async fn scale_response(
    response: Response<Body>,
    paths: &ScalePaths,
) -> Result<Response<Body>, ApiError> {
    let status = response.status().as_u16();
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .map(str::to_string)
        .collect();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let object: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("cannot read the updated object: {e}")))?;
    let mut answer = http::json(status, &scale_of(&object, paths), &[]);
    for warning in warnings {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&warning) {
            answer.headers_mut().append("warning", value);
        }
    }
    Ok(answer)
}

fn conflict(target: &Target) -> ApiError {
    ApiError::conflict(
        &target.def.group,
        &target.def.plural,
        target.name.as_deref().unwrap_or_default(),
    )
}

/// Splits a simple JSON path (`.spec.replicas`) into its fields.
fn fields(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|f| !f.is_empty())
}

fn read_path(object: &Value, path: &str) -> Option<Value> {
    let mut node = object;
    for field in fields(path) {
        node = node.get(field)?;
    }
    Some(node.clone()).filter(|v| !v.is_null())
}

fn write_path(object: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let mut node = object;
    for field in fields(path) {
        if node.is_null() {
            *node = json!({});
        }
        let map = node.as_object_mut().ok_or_else(|| {
            ApiError::internal(format!(
                "cannot set {path}: {field} is not inside an object"
            ))
        })?;
        node = map.entry(field.to_string()).or_insert(Value::Null);
    }
    *node = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> ScalePaths {
        ScalePaths {
            spec_replicas: ".spec.replicas".to_string(),
            status_replicas: ".status.replicas".to_string(),
            label_selector: Some(".status.selector".to_string()),
        }
    }

    #[test]
    fn paths_come_from_the_crd_version() {
        let version = json!({"subresources": {"scale": {
            "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"}}});
        assert_eq!(ScalePaths::from_version(&version), Some(paths()));
        assert_eq!(
            ScalePaths::from_version(&json!({"subresources": {"status": {}}})),
            None
        );
    }

    #[test]
    fn scale_view_reads_the_declared_paths() {
        let object = json!({"metadata": {"name": "workers", "namespace": "default", "resourceVersion": "7"},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "set=workers"}});
        let scale = scale_of(&object, &paths());
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "set=workers");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
        assert!(scale["metadata"].get("uid").is_none());
    }

    #[test]
    fn missing_replica_fields_read_as_zero() {
        let scale = scale_of(&json!({"metadata": {"name": "a"}, "spec": {}}), &paths());
        assert_eq!(scale["spec"]["replicas"], 0);
        assert_eq!(scale["status"]["replicas"], 0);
        assert!(scale["status"].get("selector").is_none());
    }

    #[test]
    fn writing_a_path_creates_missing_objects() {
        let mut object = json!({"metadata": {}});
        write_path(&mut object, ".spec.replicas", json!(2)).expect("writable");
        assert_eq!(object["spec"]["replicas"], 2);
        let mut scalar = json!({"spec": 1});
        assert!(write_path(&mut scalar, ".spec.replicas", json!(2)).is_err());
    }

    #[test]
    fn only_named_object_subresources_are_scale_paths() {
        let namespaced = ["namespaces", "default", "machinesets", "workers", "scale"];
        assert_eq!(object_path(&namespaced), Some(&namespaced[..4]));
        assert_eq!(
            object_path(&["machinesets", "scale"]),
            Some(&["machinesets"][..])
        );
        assert_eq!(object_path(&["scale"]), None);
        assert_eq!(object_path(&["machinesets", "workers"]), None);
    }
}
