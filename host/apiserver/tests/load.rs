//! Sustained load through kube-rs, the way the operator drives the server:
//! long-running `watcher`s on custom kinds share the client with a steady
//! stream of reads and writes from many tasks, and every request must be
//! answered promptly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition};
use kube::{Client, CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use common::TestServer;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "load.example.com",
    version = "v1",
    kind = "Machine",
    namespaced,
    status = "MachineStatus"
)]
pub struct MachineSpec {
    pub power: bool,
    pub image: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct MachineStatus {
    pub phase: Option<String>,
    pub round: Option<u64>,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "load.example.com",
    version = "v1",
    kind = "Inventory",
    namespaced
)]
pub struct InventorySpec {
    pub disks: u32,
}

const MACHINES: usize = 20;
const WORKERS: usize = 16;
const LOAD_DURATION: Duration = Duration::from_secs(20);

/// Far above any honest answer time on a busy two-core machine, far below
/// kube's own read timeout: a request that takes this long was left hanging.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// What went wrong during the run, collected rather than panicking inside tasks.
#[derive(Default)]
struct Findings {
    unanswered: Mutex<Vec<String>>,
    failed: Mutex<Vec<String>>,
    answered: AtomicUsize,
    slowest_ms: AtomicUsize,
}

impl Findings {
    async fn time<T>(&self, what: String, request: impl Future<Output = Result<T, kube::Error>>) {
        let started = Instant::now();
        match tokio::time::timeout(ANSWER_LIMIT, request).await {
            Err(_) => self.unanswered.lock().await.push(what),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => self.record(started),
            Ok(Err(err)) => self.failed.lock().await.push(format!("{what}: {err}")),
            Ok(Ok(_)) => self.record(started),
        }
    }

    fn record(&self, started: Instant) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let elapsed = usize::try_from(started.elapsed().as_millis()).unwrap_or(usize::MAX);
        self.slowest_ms.fetch_max(elapsed, Ordering::Relaxed);
    }
}

async fn install(client: &Client, crd: CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("CRD name");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(10), established)
        .await
        .expect("established in time")
        .expect("condition");
}

async fn seed(machines: &Api<Machine>, inventories: &Api<Inventory>) {
    for index in 0..MACHINES {
        let name = format!("m{index}");
        let spec = MachineSpec {
            power: false,
            image: None,
        };
        machines
            .create(&PostParams::default(), &Machine::new(&name, spec))
            .await
            .expect("create machine");
        inventories
            .create(
                &PostParams::default(),
                &Inventory::new(&name, InventorySpec { disks: 1 }),
            )
            .await
            .expect("create inventory");
    }
}

/// Runs a `watcher` until `stop`, counting events and recording a stream that ends or fails.
fn spawn_watcher<K>(
    api: Api<K>,
    stop: Arc<AtomicBool>,
    findings: Arc<Findings>,
) -> tokio::task::JoinHandle<usize>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        let config = watcher::Config::default().timeout(30);
        let mut stream = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut seen = 0;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(_))) => seen += 1,
                Ok(Some(Err(err))) => findings.failed.lock().await.push(format!("watch: {err}")),
                Ok(None) => {
                    findings
                        .failed
                        .lock()
                        .await
                        .push("watch stream ended".to_string());
                    break;
                }
            }
        }
        seen
    })
}

/// One worker: cycles through the request mix the operator's reconcilers send.
async fn work(worker: usize, client: Client, stop: Arc<AtomicBool>, findings: Arc<Findings>) {
    let machines: Api<Machine> = Api::namespaced(client.clone(), "default");
    let inventories: Api<Inventory> = Api::namespaced(client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let name = format!("m{}", (worker * 7 + round as usize) % MACHINES);
        let step = format!("worker {worker} round {round} on {name}");
        findings
            .time(format!("get machine ({step})"), machines.get(&name))
            .await;
        let spec =
            json!({"spec": {"power": round.is_multiple_of(2), "image": format!("img-{round}")}});
        findings
            .time(
                format!("merge patch ({step})"),
                machines.patch(&name, &PatchParams::default(), &Patch::Merge(&spec)),
            )
            .await;
        let status = json!({
            "apiVersion": "load.example.com/v1", "kind": "Machine",
            "status": {"phase": "Working", "round": round}
        });
        let apply = PatchParams::apply(&format!("worker-{worker}")).force();
        findings
            .time(
                format!("status apply ({step})"),
                machines.patch_status(&name, &apply, &Patch::Apply(&status)),
            )
            .await;
        findings
            .time(format!("replace inventory ({step})"), async {
                let mut inventory = inventories.get(&name).await?;
                inventory.spec.disks = u32::try_from(round % 8).unwrap_or(0) + 1;
                inventories
                    .replace(&name, &PostParams::default(), &inventory)
                    .await
            })
            .await;
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("w{worker}")}, "data": {"round": round.to_string()}});
        findings
            .time(
                format!("apply config map ({step})"),
                config_maps.patch(
                    &format!("w{worker}"),
                    &PatchParams::apply("load").force(),
                    &Patch::Apply(&config_map),
                ),
            )
            .await;
        if round.is_multiple_of(5) {
            findings
                .time(
                    format!("list machines ({step})"),
                    machines.list(&ListParams::default()),
                )
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_under_sustained_load_with_watchers() {
    let server = TestServer::start().await;
    let client = server.client().await;
    install(&client, Machine::crd()).await;
    install(&client, Inventory::crd()).await;
    let machines: Api<Machine> = Api::namespaced(client.clone(), "default");
    let inventories: Api<Inventory> = Api::namespaced(client.clone(), "default");
    seed(&machines, &inventories).await;

    let stop = Arc::new(AtomicBool::new(false));
    let findings = Arc::new(Findings::default());
    let watchers = vec![
        spawn_watcher(
            Api::<Machine>::all(client.clone()),
            stop.clone(),
            findings.clone(),
        ),
        spawn_watcher(machines.clone(), stop.clone(), findings.clone()),
        spawn_watcher(
            Api::<Inventory>::all(client.clone()),
            stop.clone(),
            findings.clone(),
        ),
        spawn_watcher(
            Api::<ConfigMap>::all(client.clone()),
            stop.clone(),
            findings.clone(),
        ),
    ];
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| tokio::spawn(work(worker, client.clone(), stop.clone(), findings.clone())))
        .collect();

    tokio::time::sleep(LOAD_DURATION).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker task");
    }
    let mut events = 0;
    for watcher in watchers {
        events += watcher.await.expect("watcher task");
    }

    let answered = findings.answered.load(Ordering::Relaxed);
    let slowest = findings.slowest_ms.load(Ordering::Relaxed);
    eprintln!("{answered} requests answered, slowest {slowest} ms, {events} watch events");
    let unanswered = findings.unanswered.lock().await;
    assert!(
        unanswered.is_empty(),
        "{} requests unanswered after {ANSWER_LIMIT:?} (of {answered} answered), first: {:?}",
        unanswered.len(),
        unanswered.iter().take(5).collect::<Vec<_>>()
    );
    let failed = findings.failed.lock().await;
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(answered > WORKERS * 10, "only {answered} requests answered");
    assert!(events > MACHINES * 2, "only {events} watch events");
}

const LARGE_OBJECTS: usize = 1500;
const LARGE_LISTS: usize = 6;

/// Creates `count` config maps `large-N` of `size` bytes each, from several tasks.
async fn seed_large_config_maps(config_maps: &Api<ConfigMap>, count: usize, size: usize) {
    let payload = "x".repeat(size);
    let creators: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let config_maps = config_maps.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for index in (worker..count).step_by(WORKERS) {
                    let config_map: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": format!("large-{index}")},
                        "data": {"payload": payload},
                    }))
                    .expect("config map");
                    config_maps
                        .create(&PostParams::default(), &config_map)
                        .await
                        .expect("create config map");
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await.expect("creator task");
    }
}

/// Lists the config maps as raw text (no client-side decoding), returning how long it took.
async fn raw_list(client: Client) -> Duration {
    let started = Instant::now();
    let request = http::Request::get("/api/v1/namespaces/default/configmaps")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.expect("list");
    assert!(text.len() > LARGE_OBJECTS * (8 << 10), "list is complete");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_do_not_hold_up_other_requests() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    seed_large_config_maps(&config_maps, LARGE_OBJECTS, 8 << 10).await;

    let lists: Vec<_> = (0..LARGE_LISTS)
        .map(|_| tokio::spawn(raw_list(client.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    config_maps.get("large-0").await.expect("get while listing");
    let get_latency = started.elapsed();
    let mut first_list = Duration::MAX;
    for list in lists {
        first_list = first_list.min(list.await.expect("list task"));
    }

    eprintln!(
        "get answered in {get_latency:?}; the first of {LARGE_LISTS} lists took {first_list:?}"
    );
    assert!(
        get_latency * 3 < first_list,
        "a get took {get_latency:?} while lists were rendered (the first list took {first_list:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_at_its_timeout_even_when_the_client_stops_reading() {
    const OBJECTS: usize = 600;
    const TIMEOUT_SECONDS: u32 = 2;
    let server = TestServer::start().await;
    let client = server.client().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    // 38 MiB of initial events: far more than the socket buffers and the
    // server's queue hold, so the server is left waiting on the client.
    seed_large_config_maps(&config_maps, OBJECTS, 64 << 10).await;

    let params = WatchParams::default().timeout(TIMEOUT_SECONDS);
    let stream = config_maps.watch(&params, "0").await.expect("watch");
    tokio::time::sleep(Duration::from_secs(u64::from(TIMEOUT_SECONDS) + 2)).await;

    let drained = tokio::time::timeout(Duration::from_secs(30), stream.count())
        .await
        .expect("the stream ends once the client reads again");
    eprintln!("{drained} of {OBJECTS} initial events delivered before the stream ended");
    assert!(
        drained < OBJECTS,
        "the stream outlived its timeout while the client was not reading: all {drained} events were sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_in_the_middle_of_a_watch_closes_it_on_the_server() {
    const OBJECTS: usize = 200;
    let server = TestServer::start().await;
    let client = server.client().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    // Events of 64 KiB span several TLS records, so the client leaves mid-event.
    seed_large_config_maps(&config_maps, OBJECTS, 64 << 10).await;

    let params = WatchParams::default().timeout(120);
    let mut stream = config_maps
        .watch(&params, "0")
        .await
        .expect("watch")
        .boxed();
    for _ in 0..5 {
        stream
            .next()
            .await
            .expect("an event")
            .expect("a decodable event");
    }
    assert_eq!(server.server.open_watches(), 1);
    drop(stream);

    common::eventually("the server closes the abandoned watch", async || {
        server.server.open_watches() == 0
    })
    .await;
    config_maps
        .get("large-0")
        .await
        .expect("the server still answers");
}
