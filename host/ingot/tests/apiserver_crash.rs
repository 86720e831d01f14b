//! Durability of `ingot apiserver`: SIGKILL during a burst of concurrent
//! writes loses no acknowledged write, and resourceVersions keep increasing
//! after the restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

const WRITERS: usize = 8;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn start(data: &Path, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(["apiserver", "--data"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingot apiserver starts")
}

async fn client(data: &Path) -> kube::Client {
    for _ in 0..100 {
        if let Ok(kubeconfig) = kube::config::Kubeconfig::read_from(data.join("kubeconfig"))
            && let Ok(config) =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
            && let Ok(client) = kube::Client::try_from(config)
            && client.apiserver_version().await.is_ok()
            && Api::<ConfigMap>::namespaced(client.clone(), "default")
                .list(&ListParams::default())
                .await
                .is_ok()
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the apiserver did not become ready");
}

fn config_map(name: String) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name);
    cm.data = Some([("payload".to_string(), "x".repeat(512))].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let mut server = start(data.path(), port);
    let configmaps: Api<ConfigMap> = Api::namespaced(client(data.path()).await, "default");

    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (configmaps, acknowledged) = (configmaps.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("w{writer}-{n}");
                match configmaps
                    .create(&PostParams::default(), &config_map(name.clone()))
                    .await
                {
                    Ok(created) => {
                        let rv = created
                            .resource_version()
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(0);
                        acknowledged.lock().expect("lock").push((name, rv));
                    }
                    Err(_) => return,
                }
            }
        }));
    }

    while acknowledged.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("reaped");
    for writer in writers {
        writer.await.expect("writer ends");
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let _restarted = start(data.path(), port);
    let configmaps: Api<ConfigMap> = Api::namespaced(client(data.path()).await, "default");
    let stored: std::collections::HashSet<String> = configmaps
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .map(|(name, _)| name)
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );

    let highest = acknowledged.iter().map(|(_, rv)| *rv).max().unwrap_or(0);
    let after = configmaps
        .create(&PostParams::default(), &config_map("after-restart".into()))
        .await
        .expect("write after restart");
    let after_rv: u64 = after
        .resource_version()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    assert!(
        after_rv > highest,
        "resourceVersion went backwards: {after_rv} <= {highest}"
    );
}
