//! How many API writes and how much wall time one host costs, from creation to `available` and
//! on to `provisioned`, with hardware that answers at once (the scripted fake provisioner) so
//! that only the operator and the API server are measured.
//!
//! Run with `cargo bench -p ingot-operator --bench lifecycle [-- HOSTS]` (default 10 hosts).
//! The baseline, measured in the same run, is one status write round trip to the same API
//! server; each phase is reported as a median per host and as a ratio to that baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

use ingot_api::metal3::{BareMetalHost, HardwareData, ProvisioningState};
use ingot_apiserver::ApiServerBuilder;
use ingot_operator::backoff::FixedJitter;
use ingot_operator::controller::{self, Context};
use ingot_operator::fake::FakeBackend;
use ingot_operator::metrics::Metrics;
use ingot_operator::state_machine::Settings;

const NAMESPACE: &str = "default";

/// Counts the requests that change something (anything but GET).
#[derive(Clone)]
struct CountWrites<S> {
    inner: S,
    writes: Arc<AtomicU64>,
}

struct CountWritesLayer(Arc<AtomicU64>);

impl<S> tower::Layer<S> for CountWritesLayer {
    type Service = CountWrites<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountWrites {
            inner,
            writes: self.0.clone(),
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for CountWrites<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() != http::Method::GET {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.call(request)
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn state(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

/// Waits until every host reached `wanted`, recording when each got there.
async fn wait_all(
    hosts: &Api<BareMetalHost>,
    names: &[String],
    wanted: ProvisioningState,
) -> Vec<Instant> {
    let mut reached: Vec<Option<Instant>> = vec![None; names.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while reached.iter().any(Option::is_none) {
        let list = hosts.list(&Default::default()).await.expect("list hosts");
        if Instant::now() > deadline {
            let stuck: Vec<String> = list
                .items
                .iter()
                .filter(|host| state(host) != wanted && names.contains(&host.name_any()))
                .map(|host| format!("{} ({:?})", host.name_any(), state(host)))
                .collect();
            panic!("hosts did not reach {wanted:?} in time: {stuck:?}");
        }
        for host in list.items.iter().filter(|host| state(host) == wanted) {
            if let Some(index) = names.iter().position(|name| *name == host.name_any()) {
                reached[index].get_or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reached.into_iter().flatten().collect()
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [BareMetalHost::crd(), HardwareData::crd()] {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        await_condition(crds.clone(), &name, conditions::is_crd_established())
            .await
            .expect("CRD established");
    }
}

/// Median round trip of one status write: the unit the per-host costs are compared with.
async fn baseline_status_write(hosts: &Api<BareMetalHost>) -> Duration {
    let host: BareMetalHost = serde_json::from_value(json!({
        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
        "metadata": {"name": "baseline", "annotations": {"baremetalhost.metal3.io/paused": "bench"}},
        "spec": {"online": false},
    }))
    .expect("baseline host");
    hosts
        .create(&PostParams::default(), &host)
        .await
        .expect("create baseline host");
    let mut samples = Vec::new();
    for round in 0..50 {
        let patch = json!({"status": {"errorCount": round}});
        let started = Instant::now();
        hosts
            .patch_status("baseline", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("status write");
        samples.push(started.elapsed());
    }
    median(&mut samples)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = ApiServerBuilder::new(dir.path())
        .start()
        .await
        .expect("start API server");
    let client = server.client().await.expect("client");
    install_crds(&client).await;
    let hosts: Api<BareMetalHost> = Api::namespaced(client.clone(), NAMESPACE);
    let baseline = baseline_status_write(&hosts).await;

    let writes = Arc::new(AtomicU64::new(0));
    let counted = ClientBuilder::try_from(server.kube_config().await.expect("config"))
        .expect("client builder")
        .with_layer(&CountWritesLayer(writes.clone()))
        .build();
    let settings = Settings {
        max_provisioning_retries: 5,
        jitter: Arc::new(FixedJitter(0.0)),
    };
    let mut context = Context::new(
        counted,
        FakeBackend::new(),
        settings,
        Arc::new(Metrics::new()),
        "bench",
    );
    context.max_requeue = Some(Duration::from_millis(20));
    context.reconcile_timeout = Duration::from_secs(5);
    let operator = tokio::spawn(controller::run(
        Arc::new(context),
        8,
        std::future::pending(),
    ));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let names: Vec<String> = (0..count).map(|index| format!("bench-{index}")).collect();
    let mut created = Vec::new();
    for name in &names {
        let data = [("username", "admin"), ("password", "password")]
            .into_iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("{name}-bmc")),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        let host: BareMetalHost = serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": name},
            "spec": {"online": true, "bmc": {"address": "redfish://127.0.0.1/redfish/v1/Systems/1", "credentialsName": format!("{name}-bmc")}},
        }))
        .expect("host");
        created.push(Instant::now());
        hosts
            .create(&PostParams::default(), &host)
            .await
            .expect("create host");
    }
    let available = wait_all(&hosts, &names, ProvisioningState::Available).await;
    let writes_to_available = writes.swap(0, Ordering::SeqCst);

    let mut image_set = Vec::new();
    for name in &names {
        let patch = json!({"spec": {"image": {"url": "http://images.example/os.img", "checksum": "abc", "checksumType": "sha256"}}});
        image_set.push(Instant::now());
        hosts
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("set image");
    }
    let provisioned = wait_all(&hosts, &names, ProvisioningState::Provisioned).await;
    let writes_to_provisioned = writes.swap(0, Ordering::SeqCst);
    operator.abort();

    let mut to_available: Vec<Duration> = created
        .iter()
        .zip(&available)
        .map(|(start, end)| *end - *start)
        .collect();
    let mut to_provisioned: Vec<Duration> = image_set
        .iter()
        .zip(&provisioned)
        .map(|(start, end)| *end - *start)
        .collect();
    let to_available = median(&mut to_available);
    let to_provisioned = median(&mut to_provisioned);
    let per_host = |total: u64| total as f64 / count as f64;
    let ratio = |value: Duration| value.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON);

    println!("hosts: {count}");
    println!(
        "baseline: one status write round trip, median {:.2} ms",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "creation -> available:   {:.1} API writes per host, median {:.1} ms per host ({:.0}x baseline)",
        per_host(writes_to_available),
        to_available.as_secs_f64() * 1e3,
        ratio(to_available)
    );
    println!(
        "available -> provisioned: {:.1} API writes per host, median {:.1} ms per host ({:.0}x baseline)",
        per_host(writes_to_provisioned),
        to_provisioned.as_secs_f64() * 1e3,
        ratio(to_provisioned)
    );
}
