//! Running out of file descriptors: the server keeps its CPU to itself while
//! it cannot accept, and serves again once descriptors free up. A test binary
//! of its own, because the descriptor limit is per process.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use common::TestServer;

/// Counts the lines the log subscriber writes that report a failed accept.
#[derive(Clone, Default)]
struct AcceptFailures(Arc<AtomicUsize>);

impl Write for AcceptFailures {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        if String::from_utf8_lossy(buffer).contains("accept failed") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_descriptors_pause_accepting_and_the_server_recovers() {
    let failures = AcceptFailures::default();
    let writer = failures.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .init();
    let server = TestServer::start().await;
    let namespaces: Api<Namespace> = Api::all(server.client().await);
    namespaces.get("default").await.expect("get before");

    let original = getrlimit(Resource::Nofile);
    let open = std::fs::read_dir("/proc/self/fd").expect("fd list").count() as u64;
    let scarce = Rlimit {
        current: Some(open + 8),
        maximum: original.maximum,
    };
    setrlimit(Resource::Nofile, scarce).expect("lower the descriptor limit");
    // Each accepted connection takes a descriptor here and one in the server;
    // the last ones wait in the listen queue while accepting fails.
    let connections: Vec<_> = (0..16)
        .filter_map(|_| std::net::TcpStream::connect(server.server.address()).ok())
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_accepts = failures.0.load(Ordering::SeqCst);
    setrlimit(Resource::Nofile, original).expect("restore the descriptor limit");
    drop(connections);

    let answer = tokio::time::timeout(Duration::from_secs(10), namespaces.get("default")).await;
    answer.expect("answered in time").expect("get after");
    assert!(failed_accepts > 0, "the descriptor table never filled up");
    assert!(
        failed_accepts <= 20,
        "{failed_accepts} failed accepts in one second: the accept loop spins"
    );
}
