//! The operator's side of the deploy agent API.
//!
//! An HTTPS server (certificate from the operator's own [`CertificateAuthority`]) that deploy
//! agents long-poll for commands, and the library calls the operator uses to drive it:
//! register a host (which mints its token), queue commands with ids of the operator's
//! choosing, read their state, and take a [`Snapshot`] to persist. Restoring a snapshot after a
//! restart re-delivers unfinished commands; the agent answers a repeated id from its ledger. It
//! also serves again, with a new token, the deploy media a machine fetches after the restart.
//!
//! The same boot configuration is also served by MAC address under `/v1/network-boot/{mac}`,
//! the network boot server for hosts whose BMC has no virtual media: their firmware boots from
//! the network and the boot script it receives is looked up by the MAC of the booting NIC.
//!
//! The operator need not poll for an agent's progress: [`AgentApi::news`] names each host whose
//! agent has just checked in or finished a command.
//!
//! The API notes when each host's agent was last heard from. A command whose agent stays silent
//! for longer than the configured limit is given up as [`CommandState::Lost`] when the operator
//! next reads it, so a crashed agent ends its command instead of leaving it running for ever.
//!
//! Every request names the host in its path and carries that host's token; tokens are stored
//! hashed and compared in constant time, and the store refuses to deliver or accept commands
//! across hosts.

pub mod liveness;
mod served;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use ingot_agent::bootconfig::BootConfig;
use ingot_agent::protocol::{Command, Hello, PROTOCOL_VERSION, Report, Welcome};
use serde::Deserialize;
use served::ServedMedia;
use tokio::sync::{Notify, broadcast, watch};

pub use liveness::DEFAULT_SILENCE_LIMIT;
pub use store::{CommandState, HostRecord, Snapshot};
pub use tls::CertificateAuthority;

/// Longest long-poll the server holds open.
const MAX_WAIT_SECONDS: u64 = 60;
/// Poll interval suggested to agents that cannot long-poll.
const POLL_INTERVAL_SECONDS: u64 = 5;

/// How long a final report waits to be saved before the agent is told to send it again.
const SAVE_WAIT: Duration = Duration::from_secs(10);

/// News not yet taken by a slow listener, beyond which it misses some (and falls back to
/// polling for them).
const NEWS_BACKLOG: usize = 4096;

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}")]
    Listen {
        /// Address asked for.
        address: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS set-up failed.
    #[error("cannot set up TLS")]
    Tls(#[from] tls::Error),
    /// The random token could not be generated.
    #[error("cannot generate a token")]
    Random(#[source] getrandom::Error),
    /// A queue operation was refused.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// How to run the API.
#[derive(Debug, Clone)]
pub struct AgentApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Names (DNS or IP) the server certificate covers; agents connect to one of them.
    pub server_names: Vec<String>,
    /// Base URL agents use; defaults to `https://<listen address>`.
    pub advertised_url: Option<String>,
    /// The CA issuing the server certificate.
    pub ca: CertificateAuthority,
    /// How long an agent may go unheard before its unfinished commands are given up as lost;
    /// usually [`DEFAULT_SILENCE_LIMIT`]. Live agents are heard at least every few seconds.
    pub silence_limit: Duration,
}

struct Shared {
    /// Base URL of the API, as agents reach it.
    url: String,
    /// The API's CA certificate, which agents trust.
    ca_pem: String,
    store: Mutex<store::Store>,
    /// Published deploy media, by host, by the SHA-256 of the media id (the secret part of
    /// its URL) and by MAC.
    media: Mutex<ServedMedia>,
    /// Woken whenever a command is queued, so long-polls return at once.
    queued: Notify,
    /// Bumped on every change, for callers that persist or react to progress.
    changes: watch::Sender<u64>,
    /// The latest change generation the caller that persists the state has saved.
    saved: watch::Sender<u64>,
    /// Whether final reports are acknowledged only once saved (see
    /// [`AgentApi::acknowledge_reports_once_saved`]).
    acknowledge_once_saved: AtomicBool,
    /// Silence after which an agent's unfinished commands are lost.
    silence_limit: Duration,
    /// Hosts whose agent has just checked in or finished a command.
    news: broadcast::Sender<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, store::Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn media(&self) -> MutexGuard<'_, ServedMedia> {
        self.media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a change and returns its generation.
    fn changed(&self) -> u64 {
        self.changes.send_modify(|generation| *generation += 1);
        *self.changes.borrow()
    }

    /// Registers `host` with a new token, which it returns; any previous token stops working.
    fn register_host(&self, host: &str, macs: &[String]) -> Result<String, Error> {
        let token = random_hex()?;
        self.lock().register_host(host, macs, &token);
        self.changed();
        Ok(token)
    }

    fn boot_config(&self, host: &str, token: &str) -> BootConfig {
        BootConfig {
            api_url: self.url.clone(),
            ca_pem: self.ca_pem.clone(),
            host: host.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Registers `host` afresh and serves deploy media for it under `key` (the SHA-256 of the
    /// media id), in place of its earlier media. `media` is the held lock of the served media.
    fn serve_media(
        &self,
        media: &mut ServedMedia,
        host: &str,
        macs: &[String],
        key: &str,
    ) -> Result<BootConfig, Error> {
        let token = random_hex()?;
        let mut store = self.lock();
        store.register_host(host, macs, &token);
        store.set_media(host, key)?;
        drop(store);
        self.changed();

        let config = self.boot_config(host, &token);
        media.publish(host, key, macs, config.clone());
        Ok(config)
    }

    /// The boot configuration of the deploy media under `key`. Media a restart forgot (its
    /// token is never saved) is published again with a new token: a machine fetching it is
    /// booting an agent now, so no older agent of that host is still running.
    fn media_config(&self, key: &str) -> Option<BootConfig> {
        let mut media = self.media();
        if let Some(config) = media.by_key(key) {
            return Some(config.clone());
        }
        let (host, macs) = self.lock().media_owner(key)?;
        tracing::info!(host = %host, "deploy media served again after a restart");
        self.serve_media(&mut media, &host, &macs, key).ok()
    }

    /// The boot configuration of the deploy media that network-boots the NIC with `mac`
    /// (lower-case), published again after a restart like [`Shared::media_config`].
    fn network_boot_config(&self, mac: &str) -> Option<BootConfig> {
        let mut media = self.media();
        if let Some(config) = media.by_mac(mac) {
            return Some(config.clone());
        }
        let (host, key, macs) = self.lock().media_of_mac(mac)?;
        tracing::info!(host = %host, "deploy media served again by network boot after a restart");
        self.serve_media(&mut media, &host, &macs, &key).ok()
    }

    /// Tells listeners that the host's agent has news for the operator.
    fn announce(&self, host: &str) {
        // Nobody listening is fine: the news is also there for whoever polls.
        let _ = self.news.send(host.to_owned());
    }

    /// Waits until the change of `generation` is saved, when the state is saved at all.
    async fn saved(&self, generation: u64) -> Result<(), Refusal> {
        if !self.acknowledge_once_saved.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut saved = self.saved.subscribe();
        match tokio::time::timeout(SAVE_WAIT, saved.wait_for(|done| *done >= generation)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator could not save the report yet; send it again".into(),
            )),
        }
    }
}

/// A running agent API. Dropping it stops the server.
pub struct AgentApi {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    /// Closes open connections (including held long-polls) when the API is dropped.
    stop: watch::Sender<bool>,
}

impl Drop for AgentApi {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.server.abort();
    }
}

impl AgentApi {
    /// Starts serving, with the state of `snapshot` (empty for a first start).
    pub async fn start(config: AgentApiConfig, snapshot: Snapshot) -> Result<Self, Error> {
        let tls = tokio_rustls::TlsAcceptor::from(config.ca.server_config(&config.server_names)?);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                address: config.listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| Error::Listen {
            address: config.listen,
            source,
        })?;
        let url = config
            .advertised_url
            .clone()
            .unwrap_or_else(|| format!("https://{address}"));

        let shared = Arc::new(Shared {
            url: url.clone(),
            ca_pem: config.ca.cert_pem.clone(),
            store: Mutex::new(store::Store::from_snapshot(snapshot, Instant::now())),
            media: Mutex::new(ServedMedia::default()),
            queued: Notify::new(),
            changes: watch::channel(0).0,
            saved: watch::channel(0).0,
            acknowledge_once_saved: AtomicBool::new(false),
            silence_limit: config.silence_limit,
            news: broadcast::channel(NEWS_BACKLOG).0,
        });
        let router = router(shared.clone());
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, tls, router, stopped));
        tracing::info!(url = %url, "agent API listening");
        Ok(Self {
            shared,
            server,
            stop,
        })
    }

    /// Base URL of the API.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Registers a host with the MAC addresses its agent must show (empty accepts any) and
    /// returns a new token for it; any previous token stops working.
    pub fn register_host(&self, host: &str, macs: &[String]) -> Result<String, Error> {
        self.shared.register_host(host, macs)
    }

    /// Forgets a host, its commands and its deploy media.
    pub fn remove_host(&self, host: &str) {
        self.shared.lock().remove_host(host);
        self.shared.media().forget(host);
        self.shared.changed();
    }

    /// The boot configuration a deploy image for `host` must carry.
    pub fn boot_config(&self, host: &str, token: &str) -> BootConfig {
        self.shared.boot_config(host, token)
    }

    /// Registers `host` afresh and publishes deploy media that boots an agent for it; returns
    /// the media URL to insert as virtual media.
    ///
    /// The same media is served to network-booting firmware under
    /// `/v1/network-boot/<mac>` for each of `macs`, for hosts without virtual media.
    ///
    /// The URL is the only way to obtain the new token, so it is unguessable (a random id) and
    /// served over the API's TLS. Earlier media of the host stop working, and so does any agent
    /// still running with the old token: after this call, only an agent booted from the new
    /// media counts as connected. The commands still queued for the host are dropped: they
    /// were for an agent of an earlier boot, and the agent booted from the new media must not
    /// run them (an image write left over from a failed deployment would otherwise run during
    /// the cleaning that follows it). A restarted API serves the media again, with a new
    /// token, when a machine fetches it: only the SHA-256 of its id is saved.
    pub fn publish_media(&self, host: &str, macs: &[String]) -> Result<String, Error> {
        let id = random_hex()?;
        let mut media = self.shared.media();
        self.shared.lock().drop_commands(host);
        self.shared
            .serve_media(&mut media, host, macs, &store::token_hash(&id))?;
        Ok(format!("{}/v1/media/{id}", self.shared.url))
    }

    /// Whether an agent holding the host's current token has said hello.
    pub fn connected(&self, host: &str) -> bool {
        self.shared.lock().greeted(host)
    }

    /// Queues a command; idempotent for the same id and command.
    pub fn enqueue(&self, host: &str, id: &str, command: Command) -> Result<(), Error> {
        self.shared.lock().enqueue(host, id, command)?;
        self.shared.queued.notify_waiters();
        self.shared.changed();
        Ok(())
    }

    /// The current state of a command; [`CommandState::Lost`] once the host's agent has been
    /// silent for longer than the configured limit before finishing it.
    pub fn status(&self, host: &str, id: &str) -> Result<CommandState, Error> {
        let limit = self.shared.silence_limit;
        let mut store = self.shared.lock();
        let before_final = store.status(host, id)?.is_final();
        let state = store.follow(host, id, limit, Instant::now())?.clone();
        drop(store);

        if let CommandState::Lost { silent_seconds } = &state
            && !before_final
        {
            tracing::warn!(host = %host, command = %id, silent_seconds, "the deploy agent went silent; command given up as lost");
            self.shared.changed();
        }
        Ok(state)
    }

    /// How long an agent may go unheard before its unfinished commands are lost.
    pub fn silence_limit(&self) -> Duration {
        self.shared.silence_limit
    }

    /// Drops a finished command.
    pub fn remove_command(&self, host: &str, id: &str) -> Result<(), Error> {
        self.shared.lock().remove_command(host, id)?;
        self.shared.changed();
        Ok(())
    }

    /// The whole state to persist; pass it to [`AgentApi::start`] after a restart.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot().clone()
    }

    /// The hosts whose part of the state changed since the last call, each with its record now
    /// (`None` once forgotten), to be persisted host by host; the records saved, gathered in a
    /// [`Snapshot`], are what [`AgentApi::start`] takes after a restart.
    pub fn take_changes(&self) -> Vec<(String, Option<HostRecord>)> {
        self.shared.lock().take_changes()
    }

    /// The hosts whose agent has just checked in, or finished a command with its final report
    /// saved (when [`AgentApi::acknowledge_reports_once_saved`] is on). A receiver that falls
    /// more than a few thousand behind misses the oldest news.
    pub fn news(&self) -> broadcast::Receiver<String> {
        self.shared.news.subscribe()
    }

    /// A receiver that changes whenever a host, command or report changes; its value is the
    /// change's generation.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// From now on, an agent's final report (a command succeeded or failed) is acknowledged only
    /// once the caller has saved a snapshot holding it, as told through [`AgentApi::saved`]. An
    /// agent moves on once its report is acknowledged, so a report acknowledged but not yet saved
    /// would be lost for good if the operator were killed in between.
    pub fn acknowledge_reports_once_saved(&self) {
        self.shared
            .acknowledge_once_saved
            .store(true, Ordering::SeqCst);
    }

    /// Tells the API that a snapshot taken at change `generation` (or later) is saved.
    pub fn saved(&self, generation: u64) {
        self.shared.saved.send_if_modified(|saved| {
            let newer = generation > *saved;
            if newer {
                *saved = generation;
            }
            newer
        });
    }
}

/// 32 random bytes in hex: tokens and media ids.
fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(hex::encode(bytes))
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    stopped: watch::Receiver<bool>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        let service = TowerToHyperService::new(router.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(peer = %peer, error = %error, "TLS handshake failed");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer, error = %error, "agent connection ended with an error");
                    }
                }
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/hosts/{host}/hello", post(hello))
        .route("/v1/hosts/{host}/commands/next", get(next))
        .route("/v1/hosts/{host}/commands/{id}/report", post(report))
        .route("/v1/media/{id}", get(media))
        .route("/v1/network-boot/{mac}", get(network_boot))
        .with_state(shared)
}

/// Refusal of a request, with a message for the agent's log.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<store::Error> for Refusal {
    fn from(error: store::Error) -> Self {
        let status = match error {
            store::Error::MacMismatch(_) => StatusCode::FORBIDDEN,
            store::Error::IdReused { .. } => StatusCode::CONFLICT,
            store::Error::UnknownHost(_) | store::Error::UnknownCommand { .. } => {
                StatusCode::NOT_FOUND
            }
        };
        Self(status, error.to_string())
    }
}

fn authenticate(shared: &Shared, host: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut store = shared.lock();
    if store.authenticate(host, token) {
        store.liveness().heard(host, Instant::now());
        return Ok(());
    }
    drop(store);
    tracing::warn!(host = %host, "agent request with a wrong or missing token");
    Err(Refusal(
        StatusCode::UNAUTHORIZED,
        "invalid token for this host".into(),
    ))
}

async fn hello(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    Json(hello): Json<Hello>,
) -> Result<Json<Welcome>, Refusal> {
    authenticate(&shared, &host, &headers)?;
    if hello.version == PROTOCOL_VERSION {
        shared.lock().hello(&host, &hello)?;
        tracing::info!(host = %host, agent_version = %hello.agent_version, "agent said hello");
        shared.changed();
        shared.announce(&host);
    }
    Ok(Json(Welcome {
        version: PROTOCOL_VERSION,
        poll_interval_seconds: POLL_INTERVAL_SECONDS,
    }))
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    wait: u64,
}

async fn next(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
    Query(query): Query<NextQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authenticate(&shared, &host, &headers)?;
    if !shared.lock().greeted(&host) {
        return Err(Refusal(
            StatusCode::PRECONDITION_REQUIRED,
            "say hello first".into(),
        ));
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(query.wait.min(MAX_WAIT_SECONDS));
    let _open = OpenPoll::new(shared.clone(), &host);
    loop {
        // Subscribe before looking, so a command queued in between still wakes us.
        let queued = shared.queued.notified();
        if let Some(envelope) = shared.lock().next(&host)? {
            shared.changed();
            return Ok(Json(envelope).into_response());
        }
        tokio::select! {
            () = queued => {}
            () = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// A long-poll held open: its agent counts as alive until it ends, even when the handler is
/// dropped because the connection closed.
struct OpenPoll {
    shared: Arc<Shared>,
    host: String,
}

impl OpenPoll {
    fn new(shared: Arc<Shared>, host: &str) -> Self {
        shared.lock().liveness().poll_opened(host, Instant::now());
        Self {
            shared,
            host: host.to_owned(),
        }
    }
}

impl Drop for OpenPoll {
    fn drop(&mut self) {
        self.shared.lock().liveness().poll_closed(&self.host);
    }
}

async fn report(
    State(shared): State<Arc<Shared>>,
    Path((host, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(report): Json<Report>,
) -> Result<StatusCode, Refusal> {
    authenticate(&shared, &host, &headers)?;
    let finished = !matches!(report, Report::Running { .. });
    shared.lock().report(&host, &id, report)?;
    let generation = shared.changed();
    if finished {
        shared.saved(generation).await?;
        shared.announce(&host);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The deploy media: in the virtual lab the media is the boot configuration itself; a real deploy
/// image would carry the same document in its ramdisk.
async fn media(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<BootConfig>, Refusal> {
    let config = shared.media_config(&store::token_hash(&id));
    config.map(Json).ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            "no such deploy media; newer media replaced it".into(),
        )
    })
}

/// The network boot server: the deploy media of the host that owns the booting NIC's MAC, as an
/// iPXE script per MAC would hand out. A real deployment would chain a kernel and ramdisk that
/// carry this document; the virtual lab reads it directly.
async fn network_boot(
    State(shared): State<Arc<Shared>>,
    Path(mac): Path<String>,
) -> Result<Json<BootConfig>, Refusal> {
    let mac = mac.to_lowercase();
    let config = shared.network_boot_config(&mac);
    config.map(Json).ok_or_else(|| {
        tracing::info!(mac = %mac, "network boot request from an unknown MAC");
        Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "no deploy media is published for MAC {mac}; the operator network-boots only \
                 hosts it is provisioning, by the boot MAC addresses of their BareMetalHost"
            ),
        )
    })
}
