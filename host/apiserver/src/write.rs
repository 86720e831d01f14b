//! The write side: create, replace, patch (merge, JSON, strategic, apply),
//! delete and deletecollection, and the pipeline every write goes through.
//!
//! Pipeline order (mirrors the upstream request flow): type and identity
//! checks → structural schema (prune, default, validate) → field ownership →
//! conversion to the storage version → server-owned metadata → status
//! subresource isolation → kind-specific rules → finalizer rules → generation
//! → admission hook → no-op detection → commit. A write that produces a
//! byte-identical object is answered with the current object and is not
//! committed, so it creates no resourceVersion and no watch event.

use std::sync::Arc;

use hyper::Response;
use serde_json::{Map, Value, json};

use crate::api::{Api, ApiRequest, Target};
use crate::error::{ApiError, FieldCause, group_resource};
use crate::hooks::{AdmissionRequest, Operation};
use crate::http::{self, Body};
use crate::patch::{self, PatchError};
use crate::registry::{self, Builtin, ResourceDef};
use crate::schema::{self, FieldValidation};
use crate::ssa::{self, Ownership, Scope};
use crate::store::{CommitError, Expect, StoredObject, Write};

/// Storage key of namespaces.
pub const NAMESPACE_KEY: &str = "/namespaces";

/// How many times a write is recomputed after losing a race with another write.
const MAX_RETRIES: usize = 32;

/// Options common to writes.
struct WriteOptions {
    manager: String,
    validation: FieldValidation,
    dry_run: bool,
}

impl WriteOptions {
    fn from(request: &ApiRequest) -> Result<Self, ApiError> {
        let manager = match request.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => match request.user_agent.split('/').next() {
                Some(agent) if !agent.is_empty() => agent.to_string(),
                _ => "unknown".to_string(),
            },
        };
        let validation = FieldValidation::parse(request.query.get("fieldValidation"))
            .map_err(ApiError::bad_request)?;
        Ok(Self {
            manager,
            validation,
            dry_run: request.query.dry_run(),
        })
    }
}

/// The current object in both forms.
struct Old {
    stored: Arc<StoredObject>,
    storage: Value,
    view: Value,
}

/// A write ready to commit.
struct Prepared {
    object: Value,
    warnings: Vec<String>,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn decode_body(request: &ApiRequest) -> Result<Value, ApiError> {
    let yaml = request.content_type.contains("yaml");
    let parsed: Result<Value, String> = if yaml {
        serde_yaml::from_slice(&request.body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&request.body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn schema_of<'a>(def: &'a ResourceDef, version: &str) -> Option<&'a Value> {
    def.versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
}

fn scope(target: &Target) -> Scope {
    match (target.status, target.def.has_status(&target.version)) {
        (true, _) => Scope::Status,
        (false, true) => Scope::MainResource,
        (false, false) => Scope::Whole,
    }
}

fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4().into_bytes();
    random
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// DNS-1123 subdomain (or label, for namespaces) as upstream checks names.
fn name_causes(name: &str, label_only: bool) -> Vec<FieldCause> {
    let limit = if label_only { 63 } else { 253 };
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let valid = name.len() <= limit
        && if label_only {
            part_ok(name)
        } else {
            name.split('.').all(part_ok)
        };
    if valid {
        return Vec::new();
    }
    let rule = if label_only {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    };
    vec![FieldCause::invalid(
        "metadata.name",
        &Value::String(name.to_string()),
        rule,
    )]
}

fn strip_empty_metadata(meta: &mut Map<String, Value>) {
    for field in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "managedFields",
    ] {
        let empty = match meta.get(field) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

fn without(object: &Value, fields: &[&str]) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        for field in fields {
            map.remove(*field);
        }
    }
    copy
}

fn finalizers(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether anything still holds a deleting object: metadata finalizers, or a
/// namespace's `spec.finalizers` (cleared by the namespace cleanup).
fn holds_finalizers(object: &Value) -> bool {
    let spec_held = object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
        && object.get("kind").and_then(Value::as_str) == Some("Namespace");
    !finalizers(object).is_empty() || spec_held
}

fn success_status(def: &ResourceDef, name: &str, uid: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": def.group, "kind": def.plural, "uid": uid}})
}

/// How a delete ended.
pub enum DeleteOutcome {
    /// The object is gone; carries its last state.
    Deleted(Value),
    /// Finalizers hold the object; carries it with `deletionTimestamp` set.
    Deleting(Value),
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// `Background`, `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// Required uid.
    pub uid: Option<String>,
    /// Required resourceVersion.
    pub resource_version: Option<String>,
    /// Change nothing.
    pub dry_run: bool,
}

impl DeleteOptions {
    fn from(request: &ApiRequest) -> Result<Self, ApiError> {
        let body: Value = if request.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&request.body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        let dry_run = request.query.dry_run()
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All"));
        Ok(Self {
            propagation: text("/propagationPolicy")
                .or_else(|| request.query.get("propagationPolicy").map(str::to_string)),
            uid: text("/preconditions/uid"),
            resource_version: text("/preconditions/resourceVersion"),
            dry_run,
        })
    }
}

impl Api {
    fn old(&self, target: &Target, stored: Arc<StoredObject>) -> Result<Old, ApiError> {
        let storage = stored.value();
        let view = self.present(&target.def, &target.version, storage.clone())?;
        Ok(Old {
            stored,
            storage,
            view,
        })
    }

    fn check_namespace(&self, target: &Target) -> Result<(), ApiError> {
        if !target.def.namespaced {
            return Ok(());
        }
        let Some(ns) = target.namespace.as_deref() else {
            return Err(ApiError::method_not_allowed("POST"));
        };
        let namespace = self
            .store
            .get(NAMESPACE_KEY, "", ns)
            .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
        if namespace.deleting {
            let mut err = ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                group_resource(&target.def.group, &target.def.plural),
                target.name.as_deref().unwrap_or_default()
            ));
            err.details = Some(
                json!({"causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
            );
            return Err(err);
        }
        Ok(())
    }

    /// POST.
    pub async fn create(
        &self,
        target: &Target,
        request: &ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        if target.status {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let options = WriteOptions::from(request)?;
        let body = decode_body(request)?;
        if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate = meta_str(&body, "generateName")
            .filter(|g| !g.is_empty())
            .map(str::to_string);
        let fixed = meta_str(&body, "name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        for _ in 0..MAX_RETRIES {
            let name = match (&fixed, &generate) {
                (Some(name), _) => name.clone(),
                (None, Some(prefix)) => format!("{prefix}{}", generated_suffix()),
                (None, None) => {
                    let cause = FieldCause::with_reason(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required".to_string(),
                    );
                    return Err(ApiError::invalid(
                        &target.def.group,
                        &target.def.kind,
                        "",
                        &[cause],
                    ));
                }
            };
            let mut object = body.clone();
            metadata_mut(&mut object)?.insert("name".to_string(), Value::String(name.clone()));
            let named = Target {
                name: Some(name.clone()),
                ..target.clone()
            };
            self.check_namespace(&named)?;
            let prepared = self.prepare(&named, &options, None, object, true)?;
            match self.insert(&named, prepared, options.dry_run).await {
                Ok(response) => return Ok(response),
                Err(CommitError::Exists) if generate.is_some() && fixed.is_none() => continue,
                Err(CommitError::Exists) => {
                    return Err(ApiError::already_exists(
                        &target.def.group,
                        &target.def.plural,
                        &name,
                    ));
                }
                Err(other) => return Err(commit_error(&named, other)),
            }
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// Commits a new object (201); a presentation failure is an internal error.
    async fn insert(
        &self,
        target: &Target,
        prepared: Prepared,
        dry_run: bool,
    ) -> Result<Response<Body>, CommitError> {
        let present = |object: Value| {
            self.present(&target.def, &target.version, object)
                .map(|view| http::json(201, &view, &prepared.warnings))
                .unwrap_or_else(|err| http::error(&err))
        };
        if dry_run {
            return Ok(present(prepared.object.clone()));
        }
        let write = Write {
            key: target.def.storage_key(),
            namespace: target.namespace_key().to_string(),
            name: target.name.clone().unwrap_or_default(),
            expect: Expect::Absent,
            object: Some(prepared.object.clone()),
        };
        let stored = self.store.commit(write).await?;
        Ok(present(stored.value()))
    }

    /// PUT.
    pub async fn replace(
        &self,
        target: &Target,
        request: &ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        let options = WriteOptions::from(request)?;
        let body = decode_body(request)?;
        let pinned = meta_str(&body, "resourceVersion")
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        self.update_loop(target, &options, pinned.is_some(), |_old| {
            Ok((body.clone(), true))
        })
        .await
    }

    /// PATCH (merge, JSON, strategic, apply).
    pub async fn patch(
        &self,
        target: &Target,
        request: &ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        let options = WriteOptions::from(request)?;
        let media = request
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if media == "application/apply-patch+yaml" {
            return self.apply(target, request, &options).await;
        }
        let strategic = media == "application/strategic-merge-patch+json";
        let supported = matches!(
            media.as_str(),
            "application/merge-patch+json" | "application/json-patch+json"
        ) || (strategic && !target.def.is_custom());
        if !supported {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                if target.def.is_custom() {
                    ""
                } else {
                    ", application/strategic-merge-patch+json"
                }
            )));
        }
        let document: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch document: {e}")))?;
        self.update_loop(target, &options, false, |old| {
            let mut candidate = old.view.clone();
            match media.as_str() {
                "application/json-patch+json" => patch::json_patch(&mut candidate, &document)
                    .map_err(|e| match e {
                        PatchError::Malformed(m) => ApiError::bad_request(m),
                        PatchError::Failed(m) => ApiError::unprocessable(m),
                    })?,
                "application/merge-patch+json" => patch::merge_patch(&mut candidate, &document),
                _ => patch::strategic_merge_patch(&mut candidate, &document),
            }
            if meta_str(&candidate, "resourceVersion")
                .is_some_and(|rv| rv != old.stored.rv.to_string())
            {
                return Err(ApiError::conflict(
                    &target.def.group,
                    &target.def.plural,
                    target.name.as_deref().unwrap_or_default(),
                ));
            }
            Ok((candidate, true))
        })
        .await
    }

    async fn apply(
        &self,
        target: &Target,
        request: &ApiRequest,
        options: &WriteOptions,
    ) -> Result<Response<Body>, ApiError> {
        if request.query.get("fieldManager").is_none_or(str::is_empty) {
            let cause = FieldCause::with_reason(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch".to_string(),
            );
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                &[cause],
            ));
        }
        let applied = decode_body(request)?;
        let name = target.name.as_deref().unwrap_or_default();
        let expected_version = target.def.api_version(&target.version);
        match applied.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v == expected_version => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "apiVersion must be {expected_version:?} in the applied configuration"
                )));
            }
        }
        if applied.get("kind").and_then(Value::as_str) != Some(target.def.kind.as_str()) {
            return Err(ApiError::bad_request(format!(
                "kind must be {:?} in the applied configuration",
                target.def.kind
            )));
        }
        if meta_str(&applied, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&applied, "name").unwrap_or_default()
            )));
        }
        let force = request.query.flag("force");
        let ownership = Ownership {
            manager: &options.manager,
            api_version: &expected_version,
            scope: scope(target),
            schema: schema_of(&target.def, &target.version),
        };
        let conflict = |conflicts: Vec<ssa::Conflict>| {
            let pairs: Vec<(String, String)> = conflicts
                .into_iter()
                .map(|c| (c.manager, c.field))
                .collect();
            ApiError::apply_conflicts(
                &target.def.group,
                &target.def.plural,
                name,
                &pairs,
                &expected_version,
            )
        };

        if self
            .store
            .get(&target.def.storage_key(), target.namespace_key(), name)
            .is_none()
            && !target.status
        {
            let mut created = ssa::apply(None, &applied, ownership, force).map_err(conflict)?;
            metadata_mut(&mut created)?.insert("name".to_string(), Value::String(name.to_string()));
            self.check_namespace(target)?;
            let prepared = self.prepare(target, options, None, created, false)?;
            match self.insert(target, prepared, options.dry_run).await {
                Ok(response) => return Ok(response),
                Err(CommitError::Exists) => {}
                Err(other) => return Err(commit_error(target, other)),
            }
        }
        self.update_loop(target, options, false, |old| {
            let result =
                ssa::apply(Some(&old.view), &applied, ownership, force).map_err(conflict)?;
            Ok((result, false))
        })
        .await
    }

    /// Read-modify-write with retries; `compute` returns the candidate and
    /// whether managedFields still need an `Update` entry.
    async fn update_loop(
        &self,
        target: &Target,
        options: &WriteOptions,
        pinned: bool,
        compute: impl Fn(&Old) -> Result<(Value, bool), ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        for _ in 0..MAX_RETRIES {
            let old = self.old(target, self.current(target)?)?;
            let (candidate, record) = compute(&old)?;
            if pinned
                && meta_str(&candidate, "resourceVersion")
                    != Some(old.stored.rv.to_string().as_str())
            {
                return Err(ApiError::conflict(
                    &target.def.group,
                    &target.def.plural,
                    target.name.as_deref().unwrap_or_default(),
                ));
            }
            let prepared = self.prepare(target, options, Some(&old), candidate, record)?;
            let mut comparable = prepared.object.clone();
            if let Ok(meta) = metadata_mut(&mut comparable) {
                meta.insert(
                    "resourceVersion".to_string(),
                    Value::String(old.stored.rv.to_string()),
                );
            }
            if comparable == old.storage {
                return Ok(http::json(200, &old.view, &prepared.warnings));
            }
            if options.dry_run {
                let view = self.present(&target.def, &target.version, prepared.object)?;
                return Ok(http::json(200, &view, &prepared.warnings));
            }
            let finished = old.stored.deleting && !holds_finalizers(&prepared.object);
            let write = Write {
                key: target.def.storage_key(),
                namespace: target.namespace_key().to_string(),
                name: target.name.clone().unwrap_or_default(),
                expect: Expect::Version(old.stored.rv),
                object: if finished {
                    None
                } else {
                    Some(prepared.object.clone())
                },
            };
            match self.store.commit(write).await {
                Ok(stored) => {
                    if finished {
                        self.gc_wakeup.notify_one();
                        let view = self.present(&target.def, &target.version, prepared.object)?;
                        return Ok(http::json(200, &view, &prepared.warnings));
                    }
                    let view = self.present(&target.def, &target.version, stored.value())?;
                    return Ok(http::json(200, &view, &prepared.warnings));
                }
                Err(CommitError::Stale) if !pinned => continue,
                Err(CommitError::Stale) => {
                    return Err(ApiError::conflict(
                        &target.def.group,
                        &target.def.plural,
                        target.name.as_deref().unwrap_or_default(),
                    ));
                }
                Err(other) => return Err(commit_error(target, other)),
            }
        }
        Err(ApiError::conflict(
            &target.def.group,
            &target.def.plural,
            target.name.as_deref().unwrap_or_default(),
        ))
    }

    /// Runs the write pipeline on a candidate object (in the request version).
    fn prepare(
        &self,
        target: &Target,
        options: &WriteOptions,
        old: Option<&Old>,
        mut candidate: Value,
        record: bool,
    ) -> Result<Prepared, ApiError> {
        let def = &target.def;
        let name = target.name.clone().unwrap_or_default();
        let mut warnings = Vec::new();
        self.check_identity(target, &mut candidate)?;

        let mut causes = Vec::new();
        if let Some(schema) = schema_of(def, &target.version) {
            let unknown = schema::prune(&mut candidate, schema);
            if !unknown.is_empty() {
                let listed: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                match options.validation {
                    FieldValidation::Strict => {
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                            def.kind,
                            target.version,
                            def.kind,
                            listed.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(listed),
                    FieldValidation::Ignore => {}
                }
            }
            schema::drop_nulls_and_default(&mut candidate, schema);
            causes.extend(schema::validate(&candidate, schema));
        }
        if old.is_none() {
            causes.extend(name_causes(&name, def.builtin == Some(Builtin::Namespace)));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&def.group, &def.kind, &name, &causes));
        }

        if record {
            let api_version = def.api_version(&target.version);
            let ownership = Ownership {
                manager: &options.manager,
                api_version: &api_version,
                scope: scope(target),
                schema: schema_of(def, &target.version),
            };
            ssa::record_update(old.map(|o| &o.view), &mut candidate, ownership);
        }

        let mut object = self.intake(def, candidate)?;
        server_owned_metadata(def, old.map(|o| &o.storage), &mut object)?;
        isolate_status(target, old.map(|o| &o.storage), &mut object);
        kind_rules(def, old.map(|o| &o.storage), &mut object)?;
        check_finalizers(def, &name, old.map(|o| &o.storage), &object)?;
        bump_generation(def, &target.version, old.map(|o| &o.storage), &mut object);
        warnings.extend(self.admit(def, target, old.map(|o| &o.storage), &object)?);
        Ok(Prepared { object, warnings })
    }

    fn check_identity(&self, target: &Target, candidate: &mut Value) -> Result<(), ApiError> {
        let def = &target.def;
        let expected_version = def.api_version(&target.version);
        let map = candidate
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != expected_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({expected_version})"
                )));
            }
            _ => {}
        }
        match map.get("kind").and_then(Value::as_str) {
            Some(k) if k != def.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    def.kind
                )));
            }
            _ => {}
        }
        map.insert("apiVersion".to_string(), Value::String(expected_version));
        map.insert("kind".to_string(), Value::String(def.kind.clone()));
        let url_name = target.name.clone().unwrap_or_default();
        let meta = metadata_mut(candidate)?;
        if let Some(body_name) = meta.get("name").and_then(Value::as_str)
            && body_name != url_name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        meta.insert("name".to_string(), Value::String(url_name));
        if def.namespaced {
            let url_ns = target.namespace.clone().unwrap_or_default();
            if let Some(body_ns) = meta.get("namespace").and_then(Value::as_str)
                && !body_ns.is_empty()
                && body_ns != url_ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".to_string(), Value::String(url_ns));
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    fn admit(
        &self,
        def: &ResourceDef,
        target: &Target,
        old: Option<&Value>,
        object: &Value,
    ) -> Result<Vec<String>, ApiError> {
        let Some(hook) = self.admission.get(&(def.group.clone(), def.kind.clone())) else {
            return Ok(Vec::new());
        };
        let name = target.name.as_deref().unwrap_or_default();
        let response = hook.admit(&AdmissionRequest {
            operation: if old.is_some() {
                Operation::Update
            } else {
                Operation::Create
            },
            group: &def.group,
            version: &def.storage_version,
            kind: &def.kind,
            namespace: target.namespace_key(),
            name,
            old_object: old,
            object,
            status_subresource: target.status,
        });
        if response.errors.is_empty() {
            Ok(response.warnings)
        } else if response.forbidden {
            Err(ApiError::forbidden_fields(
                &def.group,
                &def.plural,
                name,
                &response.errors,
            ))
        } else {
            Err(ApiError::invalid(
                &def.group,
                &def.kind,
                name,
                &response.errors,
            ))
        }
    }

    /// DELETE of one object.
    pub async fn delete(
        &self,
        target: &Target,
        request: &ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        if target.status {
            return Err(ApiError::method_not_allowed("DELETE"));
        }
        let options = DeleteOptions::from(request)?;
        let name = target.name.clone().unwrap_or_default();
        match self.delete_object(target, &options).await? {
            DeleteOutcome::Deleted(last) => {
                let uid = meta_str(&last, "uid").unwrap_or_default().to_string();
                Ok(http::json(
                    200,
                    &success_status(&target.def, &name, &uid),
                    &[],
                ))
            }
            DeleteOutcome::Deleting(object) => Ok(http::json(200, &object, &[])),
        }
    }

    /// Deletes one object honouring finalizers and propagation; shared with GC.
    pub async fn delete_object(
        &self,
        target: &Target,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let name = target.name.clone().unwrap_or_default();
        let conflict = |why: String| {
            ApiError::conflict_with(&target.def.group, &target.def.plural, &name, &why)
        };
        for _ in 0..MAX_RETRIES {
            let old = self.old(target, self.current(target)?)?;
            if let Some(uid) = &options.uid
                && *uid != *old.stored.uid
            {
                return Err(conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.stored.uid
                )));
            }
            if let Some(rv) = &options.resource_version
                && *rv != old.stored.rv.to_string()
            {
                return Err(conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.stored.rv
                )));
            }
            let mut object = old.storage.clone();
            let mut held = finalizers(&object);
            let extra = match options.propagation.as_deref() {
                Some("Orphan") => Some("orphan"),
                Some("Foreground") => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(extra) = extra.filter(|_| !old.stored.deleting)
                && !held.iter().any(|f| f == extra)
            {
                held.push(Value::from(extra));
            }
            let namespace = target.def.builtin == Some(Builtin::Namespace);
            if held.is_empty() && !namespace {
                if options.dry_run {
                    return Ok(DeleteOutcome::Deleted(old.view));
                }
                let write = self.write_for(target, old.stored.rv, None);
                match self.store.commit(write).await {
                    Ok(stored) => {
                        self.gc_wakeup.notify_one();
                        return Ok(DeleteOutcome::Deleted(self.present(
                            &target.def,
                            &target.version,
                            stored.value(),
                        )?));
                    }
                    Err(CommitError::Stale) => continue,
                    Err(CommitError::Missing) => {
                        return Err(ApiError::not_found(
                            &target.def.group,
                            &target.def.plural,
                            &name,
                        ));
                    }
                    Err(other) => return Err(commit_error(target, other)),
                }
            }
            if old.stored.deleting {
                return Ok(DeleteOutcome::Deleting(old.view));
            }
            let meta = metadata_mut(&mut object)?;
            meta.insert("deletionTimestamp".to_string(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".to_string(), Value::from(0));
            if !held.is_empty() {
                meta.insert("finalizers".to_string(), Value::Array(held));
            }
            if target.def.has_generation() {
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                meta.insert("generation".to_string(), Value::from(generation + 1));
            }
            if namespace {
                object["status"] = json!({"phase": "Terminating"});
            }
            if options.dry_run {
                return Ok(DeleteOutcome::Deleting(self.present(
                    &target.def,
                    &target.version,
                    object,
                )?));
            }
            match self
                .store
                .commit(self.write_for(target, old.stored.rv, Some(object)))
                .await
            {
                Ok(stored) => {
                    self.gc_wakeup.notify_one();
                    return Ok(DeleteOutcome::Deleting(self.present(
                        &target.def,
                        &target.version,
                        stored.value(),
                    )?));
                }
                Err(CommitError::Stale) => continue,
                Err(other) => return Err(commit_error(target, other)),
            }
        }
        Err(conflict(
            "the object kept changing during the delete".to_string(),
        ))
    }

    fn write_for(&self, target: &Target, rv: u64, object: Option<Value>) -> Write {
        Write {
            key: target.def.storage_key(),
            namespace: target.namespace_key().to_string(),
            name: target.name.clone().unwrap_or_default(),
            expect: Expect::Version(rv),
            object,
        }
    }

    /// DELETE of a collection: deletes every matching object; answers the list of them.
    pub async fn delete_collection(
        &self,
        target: &Target,
        request: &ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        let options = DeleteOptions::from(request)?;
        let (_, items) = self.matching(target, &request.query)?;
        let mut affected = Vec::new();
        for item in items {
            let named = Target {
                name: meta_str(&item, "name").map(str::to_string),
                namespace: meta_str(&item, "namespace").map(str::to_string),
                ..target.clone()
            };
            match self.delete_object(&named, &options).await {
                Ok(DeleteOutcome::Deleted(o)) | Ok(DeleteOutcome::Deleting(o)) => affected.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let body = json!({
            "kind": format!("{}List", target.def.kind),
            "apiVersion": target.def.api_version(&target.version),
            "metadata": {"resourceVersion": self.store.current_rv().to_string()},
            "items": affected,
        });
        Ok(http::json(200, &body, &[]))
    }
}

fn commit_error(target: &Target, err: CommitError) -> ApiError {
    let name = target.name.as_deref().unwrap_or_default();
    match err {
        CommitError::Exists => {
            ApiError::already_exists(&target.def.group, &target.def.plural, name)
        }
        CommitError::Missing => ApiError::not_found(&target.def.group, &target.def.plural, name),
        CommitError::Stale => ApiError::conflict(&target.def.group, &target.def.plural, name),
        CommitError::Durability(reason) => {
            ApiError::internal(format!("the write could not be stored: {reason}"))
        }
    }
}

fn server_owned_metadata(
    def: &ResourceDef,
    old: Option<&Value>,
    object: &mut Value,
) -> Result<(), ApiError> {
    let meta = metadata_mut(object)?;
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    match old.and_then(|o| o.get("metadata")) {
        Some(old_meta) => {
            for field in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generateName",
            ] {
                match old_meta.get(field) {
                    Some(value) => meta.insert(field.to_string(), value.clone()),
                    None => meta.remove(field),
                };
            }
        }
        None => {
            meta.insert(
                "uid".to_string(),
                Value::String(uuid::Uuid::new_v4().to_string()),
            );
            meta.insert("creationTimestamp".to_string(), Value::String(now()));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            if def.has_generation() {
                meta.insert("generation".to_string(), Value::from(1));
            } else {
                meta.remove("generation");
            }
        }
    }
    strip_empty_metadata(meta);
    Ok(())
}

fn isolate_status(target: &Target, old: Option<&Value>, object: &mut Value) {
    if !target.def.has_status(&target.version) {
        return;
    }
    let old_status = old.and_then(|o| o.get("status")).cloned();
    if target.status {
        let Some(old) = old else {
            return;
        };
        let mut result = old.clone();
        match object.get("status") {
            Some(status) => result["status"] = status.clone(),
            None => {
                if let Some(map) = result.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        match object.pointer("/metadata/managedFields") {
            Some(fields) => result["metadata"]["managedFields"] = fields.clone(),
            None => {
                if let Some(meta) = result.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("managedFields");
                }
            }
        }
        *object = result;
        return;
    }
    if let Some(map) = object.as_object_mut() {
        match old_status {
            Some(status) => map.insert("status".to_string(), status),
            None => map.remove("status"),
        };
    }
}

fn kind_rules(def: &ResourceDef, old: Option<&Value>, object: &mut Value) -> Result<(), ApiError> {
    match def.builtin {
        Some(Builtin::Namespace) => {
            let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
            if object.pointer("/spec/finalizers").is_none() {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            object["status"] = json!({"phase": if deleting { "Terminating" } else { "Active" }});
            Ok(())
        }
        Some(Builtin::Secret) => {
            secret_string_data(object);
            if object.get("type").is_none() {
                object["type"] = Value::from("Opaque");
            }
            Ok(())
        }
        Some(Builtin::Crd) => crd_rules(old, object),
        _ => Ok(()),
    }
}

fn secret_string_data(object: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let data = object
        .as_object_mut()
        .map(|m| m.entry("data").or_insert_with(|| json!({})));
    if let Some(Value::Object(data)) = data {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn crd_rules(old: Option<&Value>, object: &mut Value) -> Result<(), ApiError> {
    let name = meta_str(object, "name").unwrap_or_default().to_string();
    let def = registry::resource_from_crd(object)
        .map_err(|causes| registry::crd_invalid(&name, &causes))?;
    if let Some(old_def) = old.and_then(|o| registry::resource_from_crd(o).ok())
        && (old_def.group != def.group
            || old_def.plural != def.plural
            || old_def.namespaced != def.namespaced)
    {
        let cause = FieldCause::invalid(
            "spec",
            &Value::String(name.clone()),
            "group, plural and scope of a CustomResourceDefinition are immutable",
        );
        return Err(registry::crd_invalid(&name, &[cause]));
    }
    let mut stored_versions: Vec<Value> = old
        .and_then(|o| o.pointer("/status/storedVersions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !stored_versions.contains(&Value::from(def.storage_version.as_str())) {
        stored_versions.push(Value::from(def.storage_version.as_str()));
    }
    let transition = old
        .and_then(|o| o.pointer("/status/conditions/0/lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| Value::String(now()));
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": transition, "reason": reason, "message": message});
    let mut accepted = object
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    accepted["singular"] = Value::String(def.singular.clone());
    accepted["listKind"] = Value::String(format!("{}List", def.kind));
    object["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored_versions,
    });
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let held = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = held.as_array_mut()
            && old.is_none()
            && !list.iter().any(|f| f == crate::gc::CRD_CLEANUP_FINALIZER)
        {
            list.push(Value::from(crate::gc::CRD_CLEANUP_FINALIZER));
        }
        strip_empty_metadata(meta);
    }
    Ok(())
}

fn check_finalizers(
    def: &ResourceDef,
    name: &str,
    old: Option<&Value>,
    object: &Value,
) -> Result<(), ApiError> {
    let Some(old) = old.filter(|o| o.pointer("/metadata/deletionTimestamp").is_some()) else {
        return Ok(());
    };
    let before = finalizers(old);
    let added: Vec<String> = finalizers(object)
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| f.to_string())
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let detail = format!(
        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
        added.join(", ")
    );
    Err(ApiError::invalid(
        &def.group,
        &def.kind,
        name,
        &[FieldCause::forbidden("metadata.finalizers", &detail)],
    ))
}

fn bump_generation(def: &ResourceDef, version: &str, old: Option<&Value>, object: &mut Value) {
    let Some(old) = old.filter(|_| def.has_generation()) else {
        return;
    };
    let ignored: &[&str] = if def.has_status(version) {
        &["metadata", "status"]
    } else {
        &["metadata"]
    };
    if without(old, ignored) != without(object, ignored) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        object["metadata"]["generation"] = Value::from(generation + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(name_causes("w1.example", false).is_empty());
        assert!(!name_causes("W1", false).is_empty());
        assert!(!name_causes("a.b", true).is_empty());
        assert!(name_causes("team-a", true).is_empty());
    }

    #[test]
    fn string_data_is_encoded() {
        let mut secret = json!({"stringData": {"password": "hunter2"}});
        secret_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"password": "aHVudGVyMg=="}}));
    }
}
