//! Conformance checks driven by kube-rs: the client, `watcher`, `Controller`,
//! `finalizer` and `Recorder`, used unchanged against the server over HTTPS.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, conditions, predicates, wait::await_condition};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use common::{TestServer, eventually};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "demo.example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
pub struct WidgetSpec {
    pub size: i64,
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
    pub phase: Option<String>,
    pub observed: Option<i64>,
}

const FINALIZER: &str = "demo.example.com/cleanup";

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("create CRD");
    let established = await_condition(
        crds,
        "widgets.demo.example.com",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(5), established)
        .await
        .expect("established in time")
        .expect("condition");
}

fn widget(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None })
}

async fn setup() -> (TestServer, Client, Api<Widget>) {
    let server = TestServer::start().await;
    let client = server.client().await;
    install_crd(&client).await;
    let widgets = Api::namespaced(client.clone(), "default");
    (server, client, widgets)
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn conflicts_and_already_exists() {
    let (_server, _client, widgets) = setup().await;
    let created = widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .expect("create");
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.spec.size = 2;
    widgets
        .replace("w1", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    stale.spec.size = 3;
    let status = api_error(widgets.replace("w1", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let status = api_error(
        widgets
            .create(&PostParams::default(), &widget("w1", 1))
            .await,
    );
    assert!(status.is_already_exists(), "{status:?}");
}

#[tokio::test]
async fn get_opt_of_missing_is_none() {
    let (_server, _client, widgets) = setup().await;
    assert!(widgets.get_opt("missing").await.expect("get_opt").is_none());
}

#[tokio::test]
async fn json_patch_test_treats_absent_as_null() {
    let (_server, _client, widgets) = setup().await;
    widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .expect("create");
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    ]))
    .expect("patch document");
    let patched = widgets
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(add))
        .await
        .expect("absent equals null");
    assert_eq!(patched.finalizers(), [FINALIZER]);

    let wrong: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "other"}]),
    )
    .expect("patch document");
    let status = api_error(
        widgets
            .patch("w1", &PatchParams::default(), &Patch::Json::<()>(wrong))
            .await,
    );
    assert_eq!(status.code, 422);
}

#[tokio::test]
async fn repeated_status_apply_is_a_no_op() {
    let (_server, _client, widgets) = setup().await;
    widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .expect("create");
    let start = widgets
        .get("w1")
        .await
        .expect("get")
        .resource_version()
        .expect("rv");

    let watch = widgets
        .watch(&WatchParams::default().timeout(3), &start)
        .await
        .expect("watch");
    let events = tokio::spawn(async move { watch.try_collect::<Vec<_>>().await });

    let body = json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "status": {"phase": "Ready"}});
    let params = PatchParams::apply("status-writer").force();
    let first = widgets
        .patch_status("w1", &params, &Patch::Apply(&body))
        .await
        .expect("first apply");
    let second = widgets
        .patch_status("w1", &params, &Patch::Apply(&body))
        .await
        .expect("second apply");
    assert_eq!(first.resource_version(), second.resource_version());
    assert_eq!(
        second.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Ready")
    );

    let events = events.await.expect("join").expect("watch stream");
    let modified = events
        .iter()
        .filter(|e| matches!(e, WatchEvent::Modified(_)))
        .count();
    assert_eq!(modified, 1, "{events:?}");
}

async fn next_event<S>(stream: &mut S) -> Event<Widget>
where
    S: futures::Stream<Item = Result<Event<Widget>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event in time")
        .expect("stream continues")
        .expect("no watcher error")
}

async fn watcher_lifecycle(config: watcher::Config) {
    let (server, _client, widgets) = setup().await;
    widgets
        .create(&PostParams::default(), &widget("before", 1))
        .await
        .expect("create");
    let mut stream = watcher(widgets.clone(), config).boxed();

    assert!(matches!(next_event(&mut stream).await, Event::Init));
    assert!(
        matches!(next_event(&mut stream).await, Event::InitApply(w) if w.name_any() == "before")
    );
    assert!(matches!(next_event(&mut stream).await, Event::InitDone));

    widgets
        .create(&PostParams::default(), &widget("after", 2))
        .await
        .expect("create");
    assert!(matches!(next_event(&mut stream).await, Event::Apply(w) if w.name_any() == "after"));
    widgets
        .delete("after", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(matches!(next_event(&mut stream).await, Event::Delete(w) if w.name_any() == "after"));

    drop(stream);
    drop(server);
}

use kube::runtime::watcher::watcher;

#[tokio::test]
async fn watcher_list_watch() {
    watcher_lifecycle(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_streaming_lists() {
    watcher_lifecycle(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn expired_resource_version_makes_watcher_relist() {
    let (server, _client, widgets) = setup().await;
    widgets
        .create(&PostParams::default(), &widget("a", 1))
        .await
        .expect("create");
    let old = widgets
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    widgets
        .create(&PostParams::default(), &widget("b", 1))
        .await
        .expect("create");
    server.server.compact_watch_history();

    let mut raw = widgets
        .watch(&WatchParams::default().timeout(2), &old)
        .await
        .expect("watch starts with 200")
        .boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }

    // A selective watcher that re-watches every second from the last resourceVersion it saw.
    let config = watcher::Config::default().labels("app=watched").timeout(1);
    let mut stream = watcher(widgets.clone(), config).boxed();
    assert!(matches!(next_event(&mut stream).await, Event::Init));
    assert!(matches!(next_event(&mut stream).await, Event::InitDone));

    widgets
        .create(&PostParams::default(), &widget("unwatched", 1))
        .await
        .expect("create");
    server.server.compact_watch_history();
    let expired = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("in time");
    assert!(
        matches!(expired, Some(Err(watcher::Error::WatchError(ref s))) if s.code == 410),
        "{expired:?}"
    );
    assert!(
        matches!(next_event(&mut stream).await, Event::Init),
        "an expired resume must re-list"
    );
    assert!(matches!(next_event(&mut stream).await, Event::InitDone));
}

struct Context {
    client: Client,
    reconciles: AtomicUsize,
    cleanups: AtomicUsize,
}

async fn reconcile(
    widget: Arc<Widget>,
    ctx: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let namespace = widget.namespace().unwrap_or_default();
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, widget, |event| async {
        match event {
            FinalizerEvent::Apply(w) => {
                let status = json!({"apiVersion": "demo.example.com/v1", "kind": "Widget", "status": {"phase": "Ready", "observed": w.spec.size}});
                api.patch_status(&w.name_any(), &PatchParams::apply("widget-controller").force(), &Patch::Apply(&status)).await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _: Arc<Widget>,
    _: &kube::runtime::finalizer::Error<kube::Error>,
    _: Arc<Context>,
) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_with_finalizer_does_not_hot_loop() {
    let (_server, client, widgets) = setup().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(configmaps.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    let created = widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_create = ctx.reconciles.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&after_create),
        "{after_create} reconciles in 5 s"
    );
    let current = widgets.get("w1").await.expect("get");
    assert_eq!(current.finalizers(), [FINALIZER]);
    assert_eq!(
        current.status.and_then(|s| s.phase).as_deref(),
        Some("Ready")
    );

    let owner = created.controller_owner_ref(&()).expect("owner reference");
    let child = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("child".into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        ..Default::default()
    };
    // Counted before the create: the owns() event can reach the controller, and its
    // reconcile can run, before the create call returns to this task.
    let before = ctx.reconciles.load(Ordering::SeqCst);
    configmaps
        .create(&PostParams::default(), &child)
        .await
        .expect("child");
    eventually("owns() to trigger", async || {
        ctx.reconciles.load(Ordering::SeqCst) > before
    })
    .await;

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the widget to disappear", async || {
        widgets.get_opt("w1").await.expect("get").is_none()
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    eventually("the child to be collected", async || {
        configmaps.get_opt("child").await.expect("get").is_none()
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn generation_predicate_ignores_status_changes() {
    let (_server, client, widgets) = setup().await;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let stream = watcher(widgets.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let collector = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(Ok(_)) = stream.next().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut created = widget("w1", 1);
    created.metadata.finalizers = Some(vec![FINALIZER.into()]);
    widgets
        .create(&PostParams::default(), &created)
        .await
        .expect("create");
    eventually("first reconcile", async || {
        count.load(Ordering::SeqCst) == 1
    })
    .await;

    let status = json!({"status": {"phase": "Busy"}});
    widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "status change must not pass the generation predicate"
    );

    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .expect("spec");
    eventually("spec change", async || count.load(Ordering::SeqCst) == 2).await;

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("deletion generation bump", async || {
        count.load(Ordering::SeqCst) == 3
    })
    .await;
    let deleting = widgets.get("w1").await.expect("still there");
    assert_eq!(deleting.metadata.generation, Some(3));
    drop(client);
    collector.abort();
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("a".into());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");

    let list = configmaps
        .list_metadata(&ListParams::default())
        .await
        .expect("metadata list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );

    let stream = configmaps
        .watch_metadata(&WatchParams::default().timeout(2), "0")
        .await
        .expect("metadata watch");
    let events: Vec<WatchEvent<PartialObjectMeta<ConfigMap>>> =
        stream.try_collect().await.expect("events");
    match events.first() {
        Some(WatchEvent::Added(meta)) => assert_eq!(
            meta.types.as_ref().map(|t| t.kind.as_str()),
            Some("PartialObjectMetadata")
        ),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn recorder_posts_then_patches() {
    let (_server, client, widgets) = setup().await;
    let created = widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .expect("create");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "widget-controller".into(),
            instance: None,
        },
    );
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello from the recorder".into()),
        action: "Testing".into(),
        secondary: None,
    };
    let reference = created.object_ref(&());
    recorder
        .publish(&event, &reference)
        .await
        .expect("first publish");
    recorder
        .publish(&event, &reference)
        .await
        .expect("second publish");

    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let selector = "involvedObject.name=w1,involvedObject.kind=Widget";
    let events = core
        .list(&ListParams::default().fields(selector))
        .await
        .expect("core events");
    assert_eq!(events.items.len(), 1, "{:?}", events.items);
    assert_eq!(
        events.items[0].message.as_deref(),
        Some("hello from the recorder")
    );
    assert_eq!(events.items[0].count, Some(2));
}

#[tokio::test]
async fn crd_established_condition_resolves() {
    let server = TestServer::start().await;
    let client = server.client().await;
    install_crd(&client).await;
    let crd: Api<CustomResourceDefinition> = Api::all(client);
    let fetched = crd.get("widgets.demo.example.com").await.expect("crd");
    assert_eq!(
        fetched.status.and_then(|s| s.stored_versions),
        Some(vec!["v1".to_string()])
    );
    let _ = Widget::api_resource();
}
