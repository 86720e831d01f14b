//! Behaviour beyond the conformance list: admission and conversion hooks,
//! field validation warnings, defaults, namespaces, garbage collection,
//! leases, secrets, and restart of the store (with log compaction).

mod common;

use std::sync::Arc;

use ingot_apiserver::{
    AdmissionHook, AdmissionRequest, AdmissionResponse, ConversionError, ConversionHook,
    FieldCause, StoreOptions,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use common::{TestServer, eventually};

fn crd_api(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    Api::all_with(client.clone(), &resource)
}

fn widgets(client: &Client, version: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("demo.example.com", version, "Widget"),
        "widgets",
    );
    Api::namespaced_with(client.clone(), "default", &resource)
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("object")
}

fn schema() -> Value {
    json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "integer"},
            "color": {"type": "string", "default": "grey"},
            "dimensions": {"type": "object", "properties": {"size": {"type": "integer"}}}
        }},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    }}})
}

async fn install(client: &Client, strategy: &str) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.demo.example.com"},
        "spec": {"group": "demo.example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "conversion": {"strategy": strategy},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema(), "subresources": {"status": {}}},
                {"name": "v2", "served": true, "storage": false, "schema": schema(), "subresources": {"status": {}}}
            ]}
    });
    crd_api(client)
        .create(&PostParams::default(), &object(crd))
        .await
        .expect("create CRD");
}

fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

struct SizeLimit;

impl AdmissionHook for SizeLimit {
    fn admit(&self, request: &AdmissionRequest<'_>) -> AdmissionResponse {
        let size = request
            .object
            .pointer("/spec/size")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut response = AdmissionResponse::default();
        if size > 10 {
            response.errors.push(FieldCause::invalid(
                "spec.size",
                &Value::from(size),
                "must be at most 10",
            ));
        }
        if size < 0 {
            response.errors.push(FieldCause::forbidden(
                "spec.size",
                "negative sizes are reserved for administrators",
            ));
            response.forbidden = true;
        }
        if size == 5 {
            response.warnings.push("size 5 is deprecated".to_string());
        }
        response
    }
}

async fn raw(
    client: &Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Value,
) -> (u16, Vec<String>, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .expect("request");
    let response = client.send(request).await.expect("send");
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|h| h.to_str().ok().map(str::to_string))
        .collect();
    let bytes = response.into_body().collect_bytes().await.expect("body");
    (
        status,
        warnings,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn admission_hook_rejects_and_warns() {
    let server = TestServer::start_with(|b| {
        b.admission_hook("demo.example.com", "Widget", Arc::new(SizeLimit))
    })
    .await;
    let client = server.client().await;
    install(&client, "None").await;
    let api = widgets(&client, "v1");

    let big = object(
        json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "metadata": {"name": "big"}, "spec": {"size": 20}}),
    );
    let status = api_error(api.create(&PostParams::default(), &big).await);
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Widget.demo.example.com \"big\" is invalid: spec.size: Invalid value: 20: must be at most 10"
    );

    let body = json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "metadata": {"name": "five"}, "spec": {"size": 5, "bogus": 1}});
    let (code, warnings, created) = raw(
        &client,
        "POST",
        "/apis/demo.example.com/v1/namespaces/default/widgets",
        "application/json",
        body,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert!(
        warnings
            .iter()
            .any(|w| w == "299 - \"size 5 is deprecated\""),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("unknown field \\\"spec.bogus\\\"")),
        "{warnings:?}"
    );
    assert_eq!(
        created["spec"],
        json!({"size": 5, "color": "grey"}),
        "pruned and defaulted"
    );

    let update = Patch::Merge(json!({"spec": {"size": 11}}));
    assert_eq!(
        api_error(api.patch("five", &PatchParams::default(), &update).await).code,
        422
    );

    let negative = Patch::Merge(json!({"spec": {"size": -1}}));
    let status = api_error(api.patch("five", &PatchParams::default(), &negative).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "widgets.demo.example.com \"five\" is forbidden: spec.size: Forbidden: negative sizes are reserved for administrators"
    );
    assert_eq!(
        api.get("five")
            .await
            .map(|w| w.data["spec"]["size"].clone())
            .ok(),
        Some(json!(5))
    );
}

struct Reshape;

impl ConversionHook for Reshape {
    fn convert(&self, mut object: Value, desired: &str) -> Result<Value, ConversionError> {
        let spec = object
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ConversionError("no spec".into()))?;
        if desired.ends_with("/v2") {
            if let Some(size) = spec.remove("size") {
                spec.insert("dimensions".into(), json!({"size": size}));
            }
        } else if let Some(size) = spec
            .remove("dimensions")
            .and_then(|d| d.get("size").cloned())
        {
            spec.insert("size".into(), size);
        }
        object["apiVersion"] = Value::from(desired);
        Ok(object)
    }
}

#[tokio::test]
async fn webhook_conversion_uses_the_hook() {
    let server =
        TestServer::start_with(|b| b.conversion_hook("demo.example.com", Arc::new(Reshape))).await;
    let client = server.client().await;
    install(&client, "Webhook").await;
    let v2 = object(
        json!({"apiVersion": "demo.example.com/v2", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"dimensions": {"size": 3}}}),
    );
    let created = widgets(&client, "v2")
        .create(&PostParams::default(), &v2)
        .await
        .expect("create through v2");
    assert_eq!(created.data["spec"]["dimensions"]["size"], 3);
    let stored = widgets(&client, "v1")
        .get("w")
        .await
        .expect("read through v1");
    assert_eq!(
        stored.types.as_ref().map(|t| t.api_version.as_str()),
        Some("demo.example.com/v1")
    );
    assert_eq!(stored.data["spec"]["size"], 3);
    assert!(stored.data["spec"].get("dimensions").is_none());
}

#[tokio::test]
async fn none_conversion_rewrites_api_version_and_missing_hook_fails() {
    let server = TestServer::start().await;
    let client = server.client().await;
    install(&client, "None").await;
    let v1 = object(
        json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}}),
    );
    widgets(&client, "v1")
        .create(&PostParams::default(), &v1)
        .await
        .expect("create");
    let through_v2 = widgets(&client, "v2")
        .get("w")
        .await
        .expect("read through v2");
    assert_eq!(
        through_v2.types.as_ref().map(|t| t.api_version.as_str()),
        Some("demo.example.com/v2")
    );
    assert_eq!(through_v2.data["spec"]["size"], 2);

    let other = TestServer::start().await;
    let client = other.client().await;
    install(&client, "Webhook").await;
    let v2 = object(
        json!({"apiVersion": "demo.example.com/v2", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}),
    );
    let status = api_error(
        widgets(&client, "v2")
            .create(&PostParams::default(), &v2)
            .await,
    );
    assert_eq!(status.code, 500);
    assert!(
        status.message.contains("no conversion hook"),
        "{}",
        status.message
    );
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    if let Some(owner) = owner {
        cm.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.name_any(),
                uid: owner.uid().unwrap_or_default(),
                ..Default::default()
            },
        ]);
    }
    cm
}

#[tokio::test]
async fn garbage_collection_follows_propagation_policy() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();

    let parent = api
        .create(&pp, &config_map("background", None))
        .await
        .expect("parent");
    api.create(&pp, &config_map("background-child", Some(&parent)))
        .await
        .expect("child");
    api.delete("background", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("background collection", async || {
        api.get_opt("background-child")
            .await
            .expect("get")
            .is_none()
    })
    .await;

    let parent = api
        .create(&pp, &config_map("foreground", None))
        .await
        .expect("parent");
    api.create(&pp, &config_map("foreground-child", Some(&parent)))
        .await
        .expect("child");
    api.delete("foreground", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("foreground collection", async || {
        api.get_opt("foreground-child")
            .await
            .expect("get")
            .is_none()
            && api.get_opt("foreground").await.expect("get").is_none()
    })
    .await;

    let parent = api
        .create(&pp, &config_map("orphan", None))
        .await
        .expect("parent");
    api.create(&pp, &config_map("orphan-child", Some(&parent)))
        .await
        .expect("child");
    api.delete("orphan", &DeleteParams::orphan())
        .await
        .expect("delete");
    eventually("orphaning", async || {
        api.get_opt("orphan").await.expect("get").is_none()
    })
    .await;
    let child = api.get("orphan-child").await.expect("child survives");
    assert!(child.metadata.owner_references.is_none(), "{child:?}");
}

#[tokio::test]
async fn namespace_termination() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team".into());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let mut held = config_map("held", None);
    held.metadata.finalizers = Some(vec!["demo.example.com/hold".into()]);
    configmaps
        .create(&PostParams::default(), &held)
        .await
        .expect("held");
    configmaps
        .create(&PostParams::default(), &config_map("plain", None))
        .await
        .expect("plain");

    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    assert_eq!(
        api_error(
            missing
                .create(&PostParams::default(), &config_map("x", None))
                .await
        )
        .code,
        404
    );

    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete namespace");
    let terminating = namespaces.get("team").await.expect("still there");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let status = api_error(
        configmaps
            .create(&PostParams::default(), &config_map("late", None))
            .await,
    );
    assert_eq!(status.code, 403, "{status:?}");
    eventually("plain content removed", async || {
        configmaps.get_opt("plain").await.expect("get").is_none()
    })
    .await;

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    configmaps
        .patch("held", &PatchParams::default(), &release)
        .await
        .expect("release");
    eventually("namespace removed", async || {
        namespaces.get_opt("team").await.expect("get").is_none()
    })
    .await;
}

#[tokio::test]
async fn leases_and_secrets() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).expect("lease");
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let mut taken = created.clone();
    taken.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &taken)
        .await
        .expect("take over");
    assert_eq!(
        api_error(
            leases
                .replace("leader", &PostParams::default(), &created)
                .await
        )
        .code,
        409
    );

    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "bmc"}, "stringData": {"password": "hunter2"}}),
    )
    .expect("secret");
    let stored = secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    assert_eq!(stored.type_.as_deref(), Some("Opaque"));
    let password = stored
        .data
        .and_then(|d| d.get("password").cloned())
        .expect("data");
    assert_eq!(password.0, b"hunter2");
}

#[tokio::test]
async fn restart_keeps_objects_and_resource_versions_after_compaction() {
    let dir = tempfile::tempdir().expect("dir");
    let options = StoreOptions {
        compact_bytes: 8 * 1024,
        ..StoreOptions::default()
    };
    let server = ingot_apiserver::ApiServerBuilder::new(dir.path())
        .store_options(options.clone())
        .start()
        .await
        .expect("start");
    let api: Api<ConfigMap> = Api::namespaced(server.client().await.expect("client"), "default");
    for n in 0..60 {
        let mut cm = config_map(&format!("c{n}"), None);
        cm.data = Some([("n".to_string(), n.to_string())].into());
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    for n in 0..20 {
        api.delete(&format!("c{n}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    api.patch(
        "c59",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "changed"}})),
    )
    .await
    .expect("patch");
    let last_rv: u64 = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .and_then(|r| r.parse().ok())
        .expect("rv");
    server.shutdown().await;
    let log_size = std::fs::metadata(dir.path().join(ingot_apiserver::STORE_FILE))
        .expect("log")
        .len();

    let server = ingot_apiserver::ApiServerBuilder::new(dir.path())
        .store_options(options)
        .start()
        .await
        .expect("restart");
    let api: Api<ConfigMap> = Api::namespaced(server.client().await.expect("client"), "default");
    let items = api.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(items.len(), 40);
    let changed = api.get("c59").await.expect("c59");
    assert_eq!(
        changed.data.and_then(|d| d.get("n").cloned()).as_deref(),
        Some("changed")
    );
    let created = api
        .create(&PostParams::default(), &config_map("after", None))
        .await
        .expect("create");
    let rv: u64 = created
        .resource_version()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    assert!(rv > last_rv, "{rv} <= {last_rv}");
    assert!(
        log_size < 60 * 700,
        "the log was compacted ({log_size} bytes)"
    );
}
