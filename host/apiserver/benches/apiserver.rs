//! Throughput, latency and memory of the development API server, with the
//! raw fsync rate of the same disk measured in the same run as the baseline.
//!
//! Run with `cargo bench -p ingot-apiserver`. Prints:
//! - raw fsync/s of the data directory's disk (baseline);
//! - durable writes/s with 8 concurrent writers, and its ratio to the baseline;
//! - p50/p99 watch delivery latency with 10 watchers;
//! - resident memory holding 10,000 BareMetalHost-sized objects.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use ingot_apiserver::ApiServerBuilder;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const WRITERS: usize = 8;
const WATCHERS: usize = 10;
const WRITE_SECONDS: u64 = 5;
const LATENCY_SAMPLES: usize = 300;
const HOSTS: usize = 10_000;

fn main() {
    // `cargo test --all-targets` also runs bench targets (without `--bench`);
    // the benchmark takes minutes, so it only runs under `cargo bench`.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("skipped: the apiserver benchmark runs with `cargo bench -p ingot-apiserver`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("data dir");
    let (baseline, fsync_p50, fsync_p99) = fsync_rate(dir.path(), Duration::from_secs(2));
    println!(
        "baseline: raw fsync rate of the disk           {baseline:>10.0} fsync/s  (fsync p50 {fsync_p50:.2} ms, p99 {fsync_p99:.2} ms)"
    );

    let server = ApiServerBuilder::new(dir.path().join("data"))
        .start()
        .await
        .expect("server");
    let client = server.client().await.expect("client");

    let before = resident_mib();
    load_hosts(&client).await;
    let after = resident_mib();
    println!(
        "resident memory with {HOSTS} BareMetalHosts   {after:>10.1} MiB  (+{:.1} MiB for the hosts; goal <= 150 MiB)",
        after - before
    );

    let writes = write_throughput(&client).await;
    println!(
        "durable writes/s, {WRITERS} concurrent writers      {writes:>10.0} writes/s  ({:.2}x the fsync rate; goal >= 1000)",
        writes / baseline
    );

    let latency = watch_latency(&client).await;
    println!(
        "watch latency from issuing the write, {WATCHERS} watchers    p50 {:>6.2} ms  p99 {:>6.2} ms  (includes one fsync; goal p99 <= 10 ms)",
        latency.from_issue.0, latency.from_issue.1
    );
    println!(
        "watch latency after the write is acknowledged    p50 {:>6.2} ms  p99 {:>6.2} ms  (negative: the event arrived before the acknowledgement)",
        latency.from_ack.0, latency.from_ack.1
    );
}

fn fsync_rate(dir: &std::path::Path, duration: Duration) -> (f64, f64, f64) {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let block = vec![0u8; 4096];
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < duration {
        let one = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(one.elapsed().as_secs_f64() * 1e3);
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (
        rate,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn config_map(name: String, labels: &[(&str, &str)], annotations: &[(&str, String)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name);
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    cm.data = Some([("payload".to_string(), "x".repeat(256))].into());
    cm
}

async fn write_throughput(client: &kube::Client) -> f64 {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (api, done) = (api.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                api.create(
                    &PostParams::default(),
                    &config_map(format!("tp-{writer}-{n}"), &[], &[]),
                )
                .await
                .expect("create");
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// p50/p99 in milliseconds, measured from when the write was issued and from when it was acknowledged.
struct Latency {
    from_issue: (f64, f64),
    from_ack: (f64, f64),
}

async fn watch_latency(client: &kube::Client) -> Latency {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = api
        .list_metadata(&Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let stream = api
            .watch(
                &WatchParams::default().labels("bench=latency").timeout(120),
                &rv,
            )
            .await
            .expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            let mut stream = stream.boxed();
            while received.len() < LATENCY_SAMPLES {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(cm))) => {
                        let sent: u128 = cm
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("sent").and_then(|s| s.parse().ok()))
                            .unwrap_or(0);
                        received.push((cm.metadata.name.unwrap_or_default(), sent, now_nanos()));
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            received
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acknowledged = std::collections::HashMap::new();
    for n in 0..LATENCY_SAMPLES {
        let name = format!("lat-{n}");
        let cm = config_map(
            name.clone(),
            &[("bench", "latency")],
            &[("sent", now_nanos().to_string())],
        );
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        acknowledged.insert(name, now_nanos());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut from_issue = Vec::new();
    let mut from_ack = Vec::new();
    for watcher in watchers {
        for (name, sent, at) in watcher.await.expect("watcher") {
            from_issue.push(at.saturating_sub(sent) as f64 / 1e6);
            if let Some(ack) = acknowledged.get(&name) {
                from_ack.push((at as f64 - *ack as f64) / 1e6);
            }
        }
    }
    from_issue.sort_by(f64::total_cmp);
    from_ack.sort_by(f64::total_cmp);
    Latency {
        from_issue: (percentile(&from_issue, 0.5), percentile(&from_issue, 0.99)),
        from_ack: (percentile(&from_ack, 0.5), percentile(&from_ack, 0.99)),
    }
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn host_crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "baremetalhosts.metal3.io"},
        "spec": {"group": "metal3.io", "scope": "Namespaced",
            "names": {"plural": "baremetalhosts", "singular": "baremetalhost", "kind": "BareMetalHost", "shortNames": ["bmh"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// A BareMetalHost with the size of a provisioned host (spec, inspected hardware, status).
fn host(n: usize) -> serde_json::Value {
    let nics: Vec<_> = (0..4)
        .map(|i| json!({"name": format!("eno{i}"), "mac": format!("52:54:00:{:02x}:{:02x}:{i:02x}", n / 256 % 256, n % 256), "ip": format!("10.{}.{}.{}", i, n / 256 % 256, n % 256), "speedGbps": 25, "vlanId": 0, "pxe": i == 0, "model": "0x8086 0x1572"}))
        .collect();
    let disks: Vec<_> = (0..3)
        .map(|i| json!({"name": format!("/dev/sd{}", (b'a' + i) as char), "sizeBytes": 960_197_124_096u64, "rotational": false, "vendor": "ATA", "model": "SAMSUNG MZ7LH960", "serialNumber": format!("S45NNA0M{n:08}{i}"), "hctl": format!("{i}:0:0:0")}))
        .collect();
    json!({
        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
        "metadata": {"name": format!("host-{n:05}"), "labels": {"rack": format!("r{}", n % 40), "cluster": "bench"}},
        "spec": {"online": true, "bootMACAddress": format!("52:54:00:{:02x}:{:02x}:00", n / 256 % 256, n % 256), "bootMode": "UEFI",
            "bmc": {"address": format!("redfish-virtualmedia+https://10.0.{}.{}/redfish/v1/Systems/1", n / 256 % 256, n % 256), "credentialsName": format!("host-{n:05}-bmc"), "disableCertificateVerification": true},
            "rootDeviceHints": {"deviceName": "/dev/sda"},
            "image": {"url": "http://images.example/ubuntu-22.04.qcow2", "checksum": "http://images.example/ubuntu-22.04.qcow2.sha256sum", "checksumType": "sha256", "format": "qcow2"}},
        "status": {"operationalStatus": "OK", "provisioning": {"state": "provisioned", "ID": format!("{n:08x}-0000-4000-8000-000000000000")},
            "hardware": {"systemVendor": {"manufacturer": "Dell Inc.", "productName": "PowerEdge R650", "serialNumber": format!("SN{n:07}")},
                "firmware": {"bios": {"vendor": "Dell Inc.", "version": "1.6.5", "date": "2022-03-01"}},
                "cpu": {"arch": "x86_64", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "clockMegahertz": 2000, "count": 64, "flags": ["avx2", "sse4_2", "vmx", "aes"]},
                "ramMebibytes": 262_144, "nics": nics, "storage": disks, "hostname": format!("host-{n:05}")},
            "poweredOn": true, "errorCount": 0}
    })
}

async fn load_hosts(client: &kube::Client) {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(host_crd()).expect("crd");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metal3.io", "v1alpha1", "BareMetalHost"),
        "baremetalhosts",
    );
    let hosts: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (hosts, next) = (hosts.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= HOSTS {
                    return;
                }
                let object: DynamicObject = serde_json::from_value(host(n)).expect("host");
                hosts
                    .create(&PostParams::default(), &object)
                    .await
                    .expect("create host");
            }
        }));
    }
    for task in tasks {
        task.await.expect("loader");
    }
}
