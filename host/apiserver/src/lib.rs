//! A Kubernetes-compatible API server for development and tests.
//!
//! **This is not a production control plane.** It exists so that the operator
//! and its tests can run on a laptop with no cluster: code that works against
//! it through kube-rs, and commands typed with the real `kubectl`, should work
//! unchanged against a real cluster. There is one user (a bearer token), no
//! RBAC, no admission webhooks over the network, no pods or nodes, and one
//! process holding all state.
//!
//! What it implements:
//! - HTTPS (a CA generated into the data directory) and a kubeconfig;
//! - `/version` (reporting 1.30), health endpoints, legacy and aggregated
//!   discovery, `/openapi/v3` built from CRD schemas;
//! - built-in Namespaces, Secrets, ConfigMaps, Events (core/v1 and
//!   events.k8s.io/v1 views of one store), CustomResourceDefinitions and
//!   coordination.k8s.io Leases, plus every CRD installed through the API;
//! - get, list, watch, create, replace, merge/JSON/strategic/apply patches,
//!   delete with finalizers, deletecollection, label and field selectors,
//!   Tables and metadata-only responses, the status and scale subresources;
//! - the structural schema pipeline (prune, default, validate) with upstream
//!   422 errors, `fieldValidation`, server-side apply with managedFields;
//! - garbage collection through ownerReferences and namespace termination;
//! - in-process admission and conversion hooks ([`AdmissionHook`],
//!   [`ConversionHook`]);
//! - durability: an append-only log under the data directory, synced with
//!   group commit before a write is acknowledged.
//!
//! ```text
//!  client ──TLS──▶ api (routing, reads) ──▶ write (pipeline) ──▶ store ──▶ wal (fsync)
//!                       │                                         │
//!                       └── watch ◀── change history ◀── durable ─┘      gc (background)
//! ```

mod api;
mod discovery;
mod error;
mod events;
mod gc;
mod hooks;
mod http;
mod openapi;
mod patch;
mod registry;
mod scale;
mod schema;
mod selector;
mod ssa;
mod store;
mod table;
mod tls;
mod wal;
mod watch;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::FieldCause;
pub use hooks::{
    AdmissionHook, AdmissionRequest, AdmissionResponse, ConversionError, ConversionHook, Operation,
};
pub use store::StoreOptions;

use api::Api;
use store::{CommitError, Expect, Store, Write};

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "store.log";

/// Pause after a failed accept before trying again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Namespaces every cluster has.
const SEEDED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Failures starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store log could not be opened or replayed.
    #[error("cannot open the store")]
    Store(#[from] wal::WalError),
    /// TLS material could not be prepared.
    #[error("cannot prepare TLS")]
    Tls(#[from] tls::TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The built-in namespaces could not be created.
    #[error("cannot create the built-in namespace {name}: {reason}")]
    Seed {
        /// Namespace name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Failures turning the kubeconfig into a kube client configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig was rejected by kube.
    #[error("cannot build a kube configuration from {path}")]
    Config {
        /// The kubeconfig.
        path: PathBuf,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kube client could not be built.
    #[error("cannot build a kube client")]
    Client(#[source] kube::Error),
}

/// Configures and starts a server.
pub struct ApiServerBuilder {
    data_dir: PathBuf,
    listen: SocketAddr,
    aggregated_discovery: bool,
    store: StoreOptions,
    admission: HashMap<(String, String), Arc<dyn AdmissionHook>>,
    conversion: HashMap<String, Arc<dyn ConversionHook>>,
}

impl ApiServerBuilder {
    /// A server keeping its state in `data_dir`, listening on an ephemeral loopback port.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            aggregated_discovery: true,
            store: StoreOptions::default(),
            admission: HashMap::new(),
            conversion: HashMap::new(),
        }
    }

    /// The address to listen on.
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// Serve only legacy discovery (clients fall back to per-group-version lists).
    pub fn legacy_discovery_only(mut self) -> Self {
        self.aggregated_discovery = false;
        self
    }

    /// Store tuning (log compaction and watch history size).
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// Runs `hook` on every create and update of `group`/`kind`.
    pub fn admission_hook(mut self, group: &str, kind: &str, hook: Arc<dyn AdmissionHook>) -> Self {
        self.admission
            .insert((group.to_string(), kind.to_string()), hook);
        self
    }

    /// Converts objects of `group` CRDs whose conversion strategy is `Webhook`.
    pub fn conversion_hook(mut self, group: &str, hook: Arc<dyn ConversionHook>) -> Self {
        self.conversion.insert(group.to_string(), hook);
        self
    }

    /// Opens the store, binds, writes `DATA_DIR/kubeconfig` and starts serving.
    pub async fn start(self) -> Result<RunningApiServer, StartError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| StartError::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        let store = Store::open(&self.data_dir.join(STORE_FILE), &self.store)?;
        let listener =
            TcpListener::bind(self.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: self.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: self.listen,
            source,
        })?;
        let material = tls::prepare(&self.data_dir, address.ip())?;
        let url = format!("https://{address}");
        let kubeconfig_path = self.data_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig_path, &url, &material.ca_pem, &material.token)?;

        let open_watches = Arc::new(AtomicUsize::new(0));
        let api = Arc::new(Api {
            store: store.clone(),
            admission: self.admission,
            conversion: self.conversion,
            aggregated_discovery: self.aggregated_discovery,
            token: material.token,
            gc_wakeup: tokio::sync::Notify::new(),
            open_watches: open_watches.clone(),
        });
        seed_namespaces(&store).await?;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            api.clone(),
            stopped.clone(),
        ));
        let gc_task = tokio::spawn(gc::run(api.clone(), stopped));
        tracing::info!(%url, data_dir = %self.data_dir.display(), "apiserver serving");
        Ok(RunningApiServer {
            address,
            url,
            kubeconfig_path,
            store,
            open_watches,
            stop,
            tasks: vec![accept_task, gc_task],
        })
    }
}

/// A started server; dropping it stops serving.
pub struct RunningApiServer {
    address: SocketAddr,
    url: String,
    kubeconfig_path: PathBuf,
    store: Store,
    open_watches: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningApiServer {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Path of the written kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A kube client configuration for this server.
    pub async fn kube_config(&self) -> Result<kube::Config, ClientError> {
        let config_error = |source| ClientError::Config {
            path: self.kubeconfig_path.clone(),
            source,
        };
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig_path).map_err(config_error)?;
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(config_error)
    }

    /// A kube client for this server.
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        kube::Client::try_from(self.kube_config().await?).map_err(ClientError::Client)
    }

    /// How many watch streams are open: a stream closes at its `timeoutSeconds`
    /// or as soon as its client goes away.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    /// Forgets the watch history, as etcd compaction does: watches resuming
    /// from an older resourceVersion get `410 Expired` and must re-list.
    pub fn compact_watch_history(&self) {
        self.store.compact_history();
    }

    /// Stops accepting, ends open connections and stops the background tasks.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    fn stop_tasks(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        self.store.close();
    }
}

impl Drop for RunningApiServer {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    api: Arc<Api>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = stopped.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors (or another resource), the pending
                // connection stays queued and accepting again fails at once:
                // pause instead of spinning a core until resources free up.
                tracing::warn!(error = %err, "accept failed; pausing before the next attempt");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_RETRY) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let api = api.clone();
        connections.spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.serve(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

async fn seed_namespaces(store: &Store) -> Result<(), StartError> {
    for name in SEEDED_NAMESPACES {
        if store.get(write::NAMESPACE_KEY, "", name).is_some() {
            continue;
        }
        let object = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let write = Write {
            key: write::NAMESPACE_KEY.to_string(),
            namespace: String::new(),
            name: name.to_string(),
            expect: Expect::Absent,
            object: Some(object),
        };
        match store.commit(write).await {
            Ok(_) | Err(CommitError::Exists) => {}
            Err(err) => {
                return Err(StartError::Seed {
                    name: name.to_string(),
                    reason: err.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &str) -> Result<(), StartError> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ingot\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: ingot\n  user:\n    token: {token}\ncontexts:\n- name: ingot\n  context:\n    cluster: ingot\n    user: ingot\n    namespace: default\ncurrent-context: ingot\n"
    );
    let error = |source| StartError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(error)?;
        file.write_all(text.as_bytes()).map_err(error)?;
        file.sync_all().map_err(error)?;
    }
    std::fs::rename(&temporary, path).map_err(error)
}
