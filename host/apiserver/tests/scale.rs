//! The `/scale` subresource of custom resources: kube-rs's scale calls, the
//! real `kubectl scale`, discovery entries and the error answers.

mod common;

use common::{Kubectl, TestServer};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const POOL_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pools.demo.example.com
spec:
  group: demo.example.com
  scope: Namespaced
  names: {plural: pools, singular: pool, kind: Pool}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer, minimum: 0}
              flavour: {type: string}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
"#;

async fn server_with_pools() -> (TestServer, Api<DynamicObject>) {
    let server = TestServer::start().await;
    let client = server.client().await;
    let crd: serde_json::Value = serde_yaml::from_str(POOL_CRD).expect("crd yaml");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).expect("crd"),
    )
    .await
    .expect("crd created");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("demo.example.com", "v1", "Pool"));
    let pools = Api::namespaced_with(client, "default", &resource);
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "demo.example.com/v1", "kind": "Pool",
        "metadata": {"name": "workers"},
        "spec": {"replicas": 1, "flavour": "small"},
    }))
    .expect("pool");
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("pool created");
    pools
        .patch_status(
            "workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "selector": "pool=workers"}})),
        )
        .await
        .expect("status written");
    (server, pools)
}

#[tokio::test]
async fn scale_reads_and_writes_the_declared_paths() {
    let (_server, pools) = server_with_pools().await;

    let scale = pools.get_scale("workers").await.expect("scale read");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let status = scale.status.expect("scale status");
    assert_eq!(status.replicas, 1);
    assert_eq!(status.selector.as_deref(), Some("pool=workers"));

    let patched = pools
        .patch_scale(
            "workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale patched");
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(3));
    let pool = pools.get("workers").await.expect("pool");
    assert_eq!(pool.data["spec"]["replicas"], 3);
    assert_eq!(pool.data["spec"]["flavour"], "small", "other fields kept");
    assert_eq!(pool.data["status"]["replicas"], 1, "status untouched");
    assert_eq!(
        pool.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
}

#[tokio::test]
async fn scale_replace_honours_resource_version() {
    let (_server, pools) = server_with_pools().await;
    let mut scale = pools.get_scale("workers").await.expect("scale read");
    let stale = scale.metadata.resource_version.clone();

    if let Some(spec) = scale.spec.as_mut() {
        spec.replicas = Some(2);
    }
    let replaced = pools
        .replace_scale("workers", &PostParams::default(), &scale)
        .await
        .expect("scale replaced");
    assert_eq!(replaced.spec.and_then(|s| s.replicas), Some(2));
    assert_ne!(replaced.metadata.resource_version, stale);

    let err = pools
        .replace_scale("workers", &PostParams::default(), &scale)
        .await
        .expect_err("stale resourceVersion");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
}

#[tokio::test]
async fn negative_replicas_are_rejected() {
    let (_server, pools) = server_with_pools().await;
    let err = pools
        .patch_scale(
            "workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .expect_err("negative replicas");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    let pool = pools.get("workers").await.expect("pool");
    assert_eq!(pool.data["spec"]["replicas"], 1);
}

#[tokio::test]
async fn resources_without_scale_have_no_scale_path() {
    let (server, _pools) = server_with_pools().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(server.client().await, "default");
    let err = secrets.get_scale("missing").await.expect_err("no scale");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn kubectl_scale_uses_the_subresource() {
    let (server, pools) = server_with_pools().await;
    let Some(kubectl) = Kubectl::new(server.kubeconfig()) else {
        return;
    };

    let resources = kubectl
        .ok(&["get", "--raw", "/apis/demo.example.com/v1"])
        .await;
    assert!(resources.contains("pools/scale"), "{resources}");

    let out = kubectl
        .ok(&["scale", "pool", "workers", "--replicas=4"])
        .await;
    assert!(out.contains("scaled"), "{out}");
    let pool = pools.get("workers").await.expect("pool");
    assert_eq!(pool.data["spec"]["replicas"], 4);

    let err = kubectl
        .fails(&[
            "scale",
            "pool",
            "workers",
            "--current-replicas=2",
            "--replicas=5",
        ])
        .await;
    assert!(err.contains("Expected replicas to be 2, was 4"), "{err}");
    let pool = pools.get("workers").await.expect("pool");
    assert_eq!(pool.data["spec"]["replicas"], 4);
}
