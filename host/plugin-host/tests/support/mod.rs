//! Shared set-up for the plugin-host integration tests: locating the plugin
//! components built by `make plugins`, and building claims and registries.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::sync::Arc;

use ingot_plugin_host::bindings::selection::{Candidate, Claim, LabelSelector, Requirements};
use ingot_plugin_host::bindings::types::{Cpu, HardwareDetails, HostRef};
use ingot_plugin_host::calls::PluginCall;
use ingot_plugin_host::limits::{FailurePolicy, GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::world::World;

/// The `.wasm` of plugin crate `crate_name`, as built by `make plugins`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = target_dir.join("wasm32-wasip2").join("plugin").join(file);

    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` (with the same CARGO_TARGET_DIR) before the tests",
        path.display()
    );
    path
}

/// The bytes of plugin crate `crate_name`.
pub fn wasm(crate_name: &str) -> Vec<u8> {
    std::fs::read(wasm_path(crate_name))
        .unwrap_or_else(|error| panic!("reading {crate_name}: {error}"))
}

/// A compile cache shared by the test binaries: compiling in a debug build
/// takes seconds per plugin, loading from the cache milliseconds.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ingot-plugin-cache")
}

/// A runtime with the shared compile cache.
pub fn runtime() -> Arc<Runtime> {
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir()),
        ..RuntimeConfig::default()
    };
    Arc::new(Runtime::new(config).expect("runtime starts"))
}

/// A registry over a fresh runtime.
pub fn registry_with(guard: GuardSettings) -> Registry {
    Registry::new(runtime(), Fetcher::new(reqwest::Client::new()), guard)
}

/// A registry with default guard settings.
pub fn registry() -> Registry {
    registry_with(GuardSettings::default())
}

/// A spec loading `crate_name` from its file.
pub fn spec(crate_name: &str, world: World, limits: Limits) -> PluginSpec {
    PluginSpec {
        source: PluginSource::File {
            path: wasm_path(crate_name),
            sha256: None,
        },
        world: Some(world),
        config: Vec::new(),
        limits,
        failure_policy: FailurePolicy::Fail,
    }
}

/// A host reference.
pub fn host_ref(name: &str) -> HostRef {
    HostRef {
        namespace: "lab".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

/// A candidate with `cpus` CPUs and `ram_gib` GiB in failure domain `domain`.
pub fn candidate(name: &str, domain: &str, cpus: u32, ram_gib: u64) -> Candidate {
    Candidate {
        host: host_ref(name),
        labels: vec![("role".into(), "worker".into())],
        failure_domain: Some(domain.into()),
        hardware: Some(HardwareDetails {
            system_vendor: None,
            bios: None,
            ram_mebibytes: ram_gib * 1024,
            nics: Vec::new(),
            storage: Vec::new(),
            cpu: Some(Cpu {
                arch: "x86_64".into(),
                model: "lab".into(),
                clock_megahertz: 2000.0,
                flags: Vec::new(),
                count: cpus,
            }),
            hostname: None,
        }),
    }
}

/// A claim for a worker with at least `min_cpus` CPUs.
pub fn claim(identity: &str, min_cpus: u32) -> Claim {
    Claim {
        identity: identity.into(),
        labels: Vec::new(),
        selector: LabelSelector {
            match_labels: vec![("role".into(), "worker".into())],
            match_expressions: Vec::new(),
        },
        requirements: Requirements {
            cpu_arch: None,
            min_cpus: Some(min_cpus),
            min_ram_mebibytes: None,
            min_disk_bytes: None,
            min_nics: None,
            extra: Vec::new(),
        },
        failure_domain: None,
        domain_usage: Vec::new(),
    }
}

/// A `select` call for `identity` over three hosts of different sizes.
pub fn select(identity: &str) -> PluginCall {
    PluginCall::Select {
        claim: claim(identity, 4),
        candidates: vec![
            candidate("big", "rack-a", 64, 512),
            candidate("small", "rack-a", 8, 32),
            candidate("tiny", "rack-b", 2, 4),
        ],
    }
}

/// One request received by a [`FakeBmc`].
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line, e.g. `GET /redfish/v1/ HTTP/1.1`.
    pub line: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Received {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers each with the same scripted response.
pub struct FakeBmc {
    /// Its port.
    pub port: u16,
    /// Requests received so far.
    pub received: Arc<std::sync::Mutex<Vec<Received>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBmc {
    /// Starts a plain-HTTP server answering `status` with `headers` and `body`.
    pub async fn start(status: u16, headers: Vec<(String, String)>, body: &str) -> Self {
        Self::serve(None, response(status, &headers, body)).await
    }

    /// Starts an HTTPS server with a self-signed certificate for 127.0.0.1;
    /// also returns the certificate (PEM) so a client can be told to trust it.
    pub async fn start_tls(status: u16, body: &str) -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        (
            Self::serve(Some(acceptor), response(status, &[], body)).await,
            pem,
        )
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, response: String) -> Self {
        use std::sync::atomic::Ordering;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));

        let (log, count) = (received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                match &tls {
                    None => exchange(stream, &response, &log).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            exchange(stream, &response, &log).await;
                        }
                    }
                }
            }
        });

        Self {
            port,
            received,
            connections,
            task,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

fn response(status: u16, headers: &[(String, String)], body: &str) -> String {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!(
        "HTTP/1.1 {status} OK\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Reads one request, logs it and writes the response. The request is logged before the client
/// has its answer, so a test that looks at the log after a call finds the call's request there.
async fn exchange<S>(mut stream: S, response: &str, log: &std::sync::Mutex<Vec<Received>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];

    let request = loop {
        let Ok(read) = stream.read(&mut chunk).await else {
            return;
        };
        if read == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(request) = parse(&buffer) {
            break request;
        }
    };

    log.lock().expect("log").push(request);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn parse(buffer: &[u8]) -> Option<Received> {
    let end = buffer.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|header| header.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let body = buffer.get(end + 4..end + 4 + length)?.to_vec();

    Some(Received {
        line,
        headers,
        body,
    })
}
