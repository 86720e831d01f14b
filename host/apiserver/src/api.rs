//! Request routing and the read side: discovery, OpenAPI, get and list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::hooks::{AdmissionHook, ConversionHook};
use crate::http::{self, Body, Format, Query};
use crate::registry::{Builtin, ConversionStrategy, ResourceDef};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Store, StoredObject};
use crate::{discovery, events, openapi, table};

/// Largest request body accepted.
const MAX_BODY: usize = 8 << 20;

/// Shared server state behind every request.
pub struct Api {
    /// The object store.
    pub store: Store,
    /// Admission hooks by (group, kind).
    pub admission: HashMap<(String, String), Arc<dyn AdmissionHook>>,
    /// Conversion hooks by group.
    pub conversion: HashMap<String, Arc<dyn ConversionHook>>,
    /// Whether aggregated discovery is offered.
    pub aggregated_discovery: bool,
    /// The bearer token clients must present.
    pub token: String,
    /// Wakes the garbage collector after deletions.
    pub gc_wakeup: Notify,
    /// Watch streams currently open.
    pub open_watches: Arc<AtomicUsize>,
}

/// The resource a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub def: Arc<ResourceDef>,
    /// Requested version.
    pub version: String,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Object name from the URL.
    pub name: Option<String>,
    /// `status` when the status subresource is addressed.
    pub status: bool,
}

impl Target {
    /// Namespace as stored ("" for cluster-scoped).
    pub fn namespace_key(&self) -> &str {
        if self.def.namespaced {
            self.namespace.as_deref().unwrap_or_default()
        } else {
            ""
        }
    }
}

/// A parsed request.
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Query parameters.
    pub query: Query,
    /// Accept header.
    pub accept: String,
    /// Content-Type header.
    pub content_type: String,
    /// User-Agent header.
    pub user_agent: String,
    /// Request body.
    pub body: Bytes,
}

impl Api {
    /// Serves one HTTP request.
    pub async fn serve(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().trim_end_matches('/').to_string();
        let started = std::time::Instant::now();
        let method = request.method().clone();
        let user_agent = request
            .headers()
            .get("user-agent")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let response = match self.route(request, &path).await {
            Ok(response) => response,
            Err(err) => http::error(&err),
        };
        tracing::debug!(
            %method,
            %path,
            %user_agent,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let header = request
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        header
            .strip_prefix("Bearer ")
            .is_some_and(|t| t.trim() == self.token)
    }

    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        path: &str,
    ) -> Result<Response<Body>, ApiError> {
        match path {
            "/healthz" | "/readyz" | "/livez" => return Ok(http::text(200, "ok")),
            "/version" => return Ok(http::json(200, &version(), &[])),
            _ if path.starts_with("/healthz/")
                || path.starts_with("/readyz/")
                || path.starts_with("/livez/") =>
            {
                return Ok(http::text(200, "ok"));
            }
            _ => {}
        }
        if !self.authorized(&request) {
            return Err(ApiError::unauthorized());
        }
        let request = read_request(request).await?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["api"] => Ok(self.discovery_root(&request, true)),
            ["apis"] => Ok(self.discovery_root(&request, false)),
            ["api", "v1"] => found(discovery::resource_list(&self.store.registry(), "", "v1")),
            ["apis", group] => found(discovery::group(&self.store.registry(), group)),
            ["apis", group, version] => found(discovery::resource_list(
                &self.store.registry(),
                group,
                version,
            )),
            ["openapi", "v3"] => Ok(http::json(200, &openapi::root(&self.store.registry()), &[])),
            ["openapi", "v3", "api", version] => {
                found(openapi::document(&self.store.registry(), "", version))
            }
            ["openapi", "v3", "apis", group, version] => {
                found(openapi::document(&self.store.registry(), group, version))
            }
            ["api", "v1", rest @ ..] => self.resource_request(request, "", "v1", rest).await,
            ["apis", group, version, rest @ ..] => {
                self.resource_request(request, group, version, rest).await
            }
            _ => Err(ApiError::path_not_found()),
        }
    }

    fn discovery_root(&self, request: &ApiRequest, core: bool) -> Response<Body> {
        let registry = self.store.registry();
        if self.aggregated_discovery && discovery::wants_aggregated(&request.accept) {
            let body = discovery::aggregated(&registry, core).to_string();
            return http::json_text(200, body, discovery::AGGREGATED_CONTENT_TYPE, &[]);
        }
        let body = if core {
            discovery::core_versions()
        } else {
            discovery::group_list(&registry)
        };
        http::json(200, &body, &[])
    }

    fn target(&self, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
        let registry = self.store.registry();
        let find = |plural: &str| registry.find(group, version, plural);
        let namespaced = |plural: &str| find(plural).filter(|d| d.namespaced);
        let (def, namespace, name, sub) = match rest {
            ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
                let def = namespaced(plural).ok_or_else(ApiError::path_not_found)?;
                match tail {
                    [] => (def, Some(*ns), None, None),
                    [name] => (def, Some(*ns), Some(*name), None),
                    [name, sub] => (def, Some(*ns), Some(*name), Some(*sub)),
                    _ => return Err(ApiError::path_not_found()),
                }
            }
            [plural, tail @ ..] => {
                let def = find(plural).ok_or_else(ApiError::path_not_found)?;
                match tail {
                    [] => (def, None, None, None),
                    [name] if !def.namespaced => (def, None, Some(*name), None),
                    [name, sub] if !def.namespaced => (def, None, Some(*name), Some(*sub)),
                    _ => return Err(ApiError::path_not_found()),
                }
            }
            _ => return Err(ApiError::path_not_found()),
        };
        let status = match sub {
            None => false,
            Some("status") if def.has_status(version) => true,
            Some(_) => return Err(ApiError::path_not_found()),
        };
        Ok(Target {
            def,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            status,
        })
    }

    async fn resource_request(
        self: &Arc<Self>,
        request: ApiRequest,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Response<Body>, ApiError> {
        if let Some(object) = crate::scale::object_path(rest)
            && let Ok(target) = self.target(group, version, object)
            && let (Some(_), Some(paths)) = (&target.name, target.def.scale(version))
        {
            let paths = paths.clone();
            return crate::scale::serve(self, &target, &paths, request).await;
        }
        let target = self.target(group, version, rest)?;
        match (&request.method, target.name.is_some()) {
            (&Method::GET, true) => self.get(&target, &request),
            (&Method::GET, false) if request.query.flag("watch") => {
                crate::watch::start(self.clone(), &target, &request)
            }
            (&Method::GET, false) => self.list_off_runtime(target, request).await,
            (&Method::POST, false) => self.create(&target, &request).await,
            (&Method::PUT, true) => self.replace(&target, &request).await,
            (&Method::PATCH, true) => self.patch(&target, &request).await,
            (&Method::DELETE, true) => self.delete(&target, &request).await,
            (&Method::DELETE, false) => self.delete_collection(&target, &request).await,
            (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
        }
    }

    /// Converts a stored object to the requested version and view.
    pub fn present(
        &self,
        def: &ResourceDef,
        version: &str,
        stored: Value,
    ) -> Result<Value, ApiError> {
        match def.builtin {
            Some(Builtin::EventsV1) => Ok(events::to_events_v1(&stored)),
            Some(_) => Ok(stored),
            None => self.convert(def, stored, version),
        }
    }

    /// Converts a request object to the storage version and form.
    pub fn intake(&self, def: &ResourceDef, value: Value) -> Result<Value, ApiError> {
        match def.builtin {
            Some(Builtin::EventsV1) => Ok(events::to_core(&value)),
            Some(_) => Ok(value),
            None => self.convert(def, value, &def.storage_version.clone()),
        }
    }

    fn convert(
        &self,
        def: &ResourceDef,
        mut object: Value,
        version: &str,
    ) -> Result<Value, ApiError> {
        let desired = def.api_version(version);
        if object.get("apiVersion").and_then(Value::as_str) == Some(desired.as_str()) {
            return Ok(object);
        }
        match def.conversion {
            ConversionStrategy::None => {
                object["apiVersion"] = Value::String(desired);
                Ok(object)
            }
            ConversionStrategy::Webhook => {
                let hook = self.conversion.get(&def.group).ok_or_else(|| {
                    ApiError::internal(format!("conversion webhook for {}, Kind={} failed: no conversion hook is registered for group {}", desired, def.kind, def.group))
                })?;
                let converted = hook.convert(object, &desired).map_err(|e| {
                    ApiError::internal(format!(
                        "conversion webhook for {desired}, Kind={} failed: {e}",
                        def.kind
                    ))
                })?;
                if converted.get("apiVersion").and_then(Value::as_str) != Some(desired.as_str()) {
                    return Err(ApiError::internal(format!(
                        "conversion webhook for {desired}, Kind={} returned an object of another version",
                        def.kind
                    )));
                }
                Ok(converted)
            }
        }
    }

    /// The stored object addressed by the target, or 404.
    pub fn current(&self, target: &Target) -> Result<std::sync::Arc<StoredObject>, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        self.store
            .get(&target.def.storage_key(), target.namespace_key(), name)
            .ok_or_else(|| ApiError::not_found(&target.def.group, &target.def.plural, name))
    }

    fn get(&self, target: &Target, request: &ApiRequest) -> Result<Response<Body>, ApiError> {
        let format = http::negotiate(&request.accept)?;
        let object = self.present(&target.def, &target.version, self.current(target)?.value())?;
        let body = match format {
            Format::Json => object,
            Format::Metadata => table::partial_metadata(&object),
            Format::Table => table::table(&target.def, &target.version, &[object], None, true),
        };
        Ok(http::json(200, &body, &[]))
    }

    /// Parsed selectors of a list, watch or deletecollection.
    pub fn selectors(
        &self,
        target: &Target,
        query: &Query,
    ) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(
            query.get("fieldSelector").unwrap_or_default(),
            supported_fields(&target.def),
        )?;
        Ok((labels, fields))
    }

    /// Objects of the target (namespace or all) that match the selectors, in the requested version.
    pub fn matching(&self, target: &Target, query: &Query) -> Result<(u64, Vec<Value>), ApiError> {
        let (labels, fields) = self.selectors(target, query)?;
        let (rv, stored) = self.store.list(
            &target.def.storage_key(),
            target
                .namespace
                .as_deref()
                .filter(|_| target.def.namespaced),
        );
        let mut items = Vec::new();
        for object in stored.iter().filter(|o| labels.matches(&o.labels)) {
            let value = self.present(&target.def, &target.version, object.value())?;
            if fields.matches_object(&value) {
                items.push(value);
            }
        }
        Ok((rv, items))
    }

    /// Renders a list on the blocking pool: a list of thousands of objects is
    /// CPU-bound work for as long as it takes, and on a runtime worker it would
    /// hold up every other request and watch event of the server meanwhile.
    async fn list_off_runtime(
        self: &Arc<Self>,
        target: Target,
        request: ApiRequest,
    ) -> Result<Response<Body>, ApiError> {
        let api = self.clone();
        tokio::task::spawn_blocking(move || api.list(&target, &request))
            .await
            .map_err(|e| ApiError::internal(format!("rendering the list failed: {e}")))?
    }

    fn list(&self, target: &Target, request: &ApiRequest) -> Result<Response<Body>, ApiError> {
        let format = http::negotiate(&request.accept)?;
        let exact = request.query.get("resourceVersionMatch") == Some("Exact");
        let (rv, items) = self.matching(target, &request.query)?;
        if let (true, Some(asked)) = (
            exact,
            request
                .query
                .get("resourceVersion")
                .and_then(|r| r.parse::<u64>().ok()),
        ) && asked != rv
        {
            return Err(ApiError::expired(format!(
                "too old resource version: {asked} ({rv})"
            )));
        }
        let body = match format {
            Format::Json => json!({
                "kind": format!("{}List", target.def.kind),
                "apiVersion": target.def.api_version(&target.version),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }),
            Format::Metadata => table::partial_metadata_list(&items, rv),
            Format::Table => table::table(&target.def, &target.version, &items, Some(rv), true),
        };
        Ok(http::json(200, &body, &[]))
    }
}

fn found(document: Option<Value>) -> Result<Response<Body>, ApiError> {
    document
        .map(|d| http::json(200, &d, &[]))
        .ok_or_else(ApiError::path_not_found)
}

/// Field selectors each resource accepts.
pub fn supported_fields(def: &ResourceDef) -> &'static [&'static str] {
    match def.builtin {
        Some(Builtin::CoreEvent) => events::CORE_FIELDS,
        Some(Builtin::EventsV1) => events::V1_FIELDS,
        Some(Builtin::Namespace) => &["metadata.name", "status.phase"],
        Some(Builtin::Secret) => &["metadata.name", "metadata.namespace", "type"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The `/version` document; the minor (30) makes the kubectl dispatcher pick kubectl 1.30.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "30",
        "gitVersion": openapi::KUBERNETES_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

async fn read_request(request: Request<Incoming>) -> Result<ApiRequest, ApiError> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let accept = header("accept");
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let method = request.method().clone();
    let query = Query::parse(request.uri().query());
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    let body = limited
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes();
    Ok(ApiRequest {
        method,
        query,
        accept,
        content_type,
        user_agent,
        body,
    })
}
