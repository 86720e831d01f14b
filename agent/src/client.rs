//! The agent loop: introduce itself, long-poll for commands, run them, report.
//!
//! Commands run one at a time. The outcome of every command is kept in a ledger keyed by the
//! operator's command id; a command delivered again (because the operator restarted before
//! it stored the report) is answered from the ledger instead of being run twice. Reports are
//! retried until the API accepts them, so a result is never lost to a transient failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::bootconfig::BootConfig;
use crate::disk::Disk;
use crate::hardware::Hardware;
use crate::image::ImageWriter;
use crate::protocol::{
    Command, CommandEnvelope, CommandResult, Hello, PROTOCOL_VERSION, Progress, Report, Welcome,
};

/// Seconds the API may hold a poll open.
const POLL_WAIT_SECONDS: u64 = 20;
/// How often running commands report progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA certificate in the boot configuration is unusable.
    #[error("the CA certificate in the boot configuration is invalid")]
    InvalidCa(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The API refused the token or the MAC addresses.
    #[error(
        "the agent API refused this agent's credentials (HTTP {0}); the deploy image is for another host or outdated"
    )]
    Refused(u16),
    /// The API speaks another protocol version.
    #[error("the agent API speaks protocol version {0}, this agent speaks {PROTOCOL_VERSION}")]
    Version(u32),
}

/// Transient failure of one exchange with the API; retried with backoff.
#[derive(Debug, thiserror::Error)]
enum Exchange {
    #[error("request failed")]
    Http(#[from] reqwest::Error),
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    #[error("the API asks for a new hello")]
    HelloNeeded,
    #[error(transparent)]
    Fatal(#[from] Error),
}

/// A running agent.
pub struct Agent {
    config: BootConfig,
    hardware: Arc<dyn Hardware>,
    http: reqwest::Client,
    images: ImageWriter,
    ledger: Mutex<HashMap<String, Report>>,
}

impl Agent {
    /// Prepares an agent that trusts only the CA of `config` for the API; images are
    /// downloaded with the system's web PKI roots plus that CA.
    pub fn new(
        config: BootConfig,
        hardware: Arc<dyn Hardware>,
        spill_dir: PathBuf,
    ) -> Result<Self, Error> {
        let ca =
            reqwest::Certificate::from_pem(config.ca_pem.as_bytes()).map_err(Error::InvalidCa)?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(POLL_WAIT_SECONDS + 30))
            .build()
            .map_err(Error::Client)?;
        let image_client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .user_agent(crate::image::user_agent(&config.host))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(Error::Client)?;
        let images = ImageWriter {
            client: image_client,
            spill_dir,
        };
        Ok(Self {
            config,
            hardware,
            http,
            images,
            ledger: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until the API refuses the agent; transient failures are retried forever.
    pub async fn run(&self) -> Result<(), Error> {
        let mut backoff = Backoff::default();
        loop {
            match self.session().await {
                Err(Exchange::Fatal(error)) => return Err(error),
                Err(error) => {
                    tracing::warn!(error = %error, "agent API exchange failed; retrying");
                    backoff.wait().await;
                }
                Ok(()) => backoff = Backoff::default(),
            }
        }
    }

    /// One hello followed by polls until something fails.
    async fn session(&self) -> Result<(), Exchange> {
        self.hello().await?;
        loop {
            if let Some(envelope) = self.next_command().await? {
                self.handle(envelope).await?;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/hosts/{}/{path}",
            self.config.api_url.trim_end_matches('/'),
            self.config.host
        )
    }

    async fn hello(&self) -> Result<(), Exchange> {
        let inventory = self.hardware.inventory().unwrap_or_default();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            macs: inventory
                .nics
                .iter()
                .map(|nic| nic.mac.to_lowercase())
                .collect(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        };
        let response = self
            .http
            .post(self.url("hello"))
            .bearer_auth(&self.config.token)
            .json(&hello)
            .send()
            .await?;
        let welcome: Welcome = check(response).await?.json().await?;
        if welcome.version != PROTOCOL_VERSION {
            return Err(Error::Version(welcome.version).into());
        }
        tracing::info!(host = %self.config.host, "connected to the agent API");
        Ok(())
    }

    async fn next_command(&self) -> Result<Option<CommandEnvelope>, Exchange> {
        let url = self.url(&format!("commands/next?wait={POLL_WAIT_SECONDS}"));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.config.token)
            .send()
            .await?;
        let response = check(response).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(response.json().await?))
    }

    async fn handle(&self, envelope: CommandEnvelope) -> Result<(), Exchange> {
        let known = self
            .ledger
            .lock()
            .ok()
            .and_then(|ledger| ledger.get(&envelope.id).cloned());
        let report = match known {
            Some(report) => {
                tracing::info!(command = %envelope.id, "command already ran; reporting its outcome again");
                report
            }
            None => {
                let report = self.execute(&envelope).await;
                if let Ok(mut ledger) = self.ledger.lock() {
                    ledger.insert(envelope.id.clone(), report.clone());
                }
                report
            }
        };
        self.report_until_accepted(&envelope.id, &report).await
    }

    /// Runs a command while a side task reports its progress every second.
    async fn execute(&self, envelope: &CommandEnvelope) -> Report {
        tracing::info!(command = %envelope.id, kind = command_kind(&envelope.command), "running command");
        let latest = Arc::new(Mutex::new(Progress {
            step: "started".into(),
            ..Progress::default()
        }));
        let reporter = Reporter(self.progress_reporter(envelope.id.clone(), latest.clone()));

        let outcome = self.run_command(&envelope.command, latest).await;
        drop(reporter);

        match outcome {
            Ok(result) => Report::Succeeded {
                result: Box::new(result),
            },
            Err(error) => {
                tracing::warn!(command = %envelope.id, error = %error, "command failed");
                Report::Failed { error }
            }
        }
    }

    /// Spawns the task reporting progress; see [`Reporter`] for how it ends.
    fn progress_reporter(
        &self,
        id: String,
        latest: Arc<Mutex<Progress>>,
    ) -> tokio::task::JoinHandle<()> {
        let http = self.http.clone();
        let url = self.url(&format!("commands/{id}/report"));
        let token = self.config.token.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                ticker.tick().await;
                let progress = latest.lock().map(|p| p.clone()).unwrap_or_default();
                let report = Report::Running { progress };
                if let Err(error) = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&report)
                    .send()
                    .await
                {
                    tracing::debug!(error = %error, "progress report failed");
                }
            }
        })
    }

    async fn run_command(
        &self,
        command: &Command,
        latest: Arc<Mutex<Progress>>,
    ) -> Result<CommandResult, String> {
        let hardware = self.hardware.clone();
        match command {
            Command::Inventory => {
                let hardware = hardware.inventory().map_err(|e| error_chain(&e))?;
                Ok(CommandResult::Inventory {
                    hardware: Box::new(hardware),
                })
            }
            Command::EraseMetadata => blocking(move || erase_all(hardware.as_ref())).await,
            Command::Sync => blocking(move || sync_all(hardware.as_ref())).await,
            Command::WriteImage(request) => {
                let progress = Arc::new(move |p: Progress| {
                    if let Ok(mut slot) = latest.lock() {
                        *slot = p;
                    }
                });
                let written = self
                    .images
                    .write(hardware.as_ref(), request, progress)
                    .await;
                written
                    .map(CommandResult::ImageWritten)
                    .map_err(|e| error_chain(&e))
            }
        }
    }

    async fn report_until_accepted(&self, id: &str, report: &Report) -> Result<(), Exchange> {
        let mut backoff = Backoff::default();
        loop {
            let sent = self
                .http
                .post(self.url(&format!("commands/{id}/report")))
                .bearer_auth(&self.config.token)
                .json(report)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                // The operator no longer knows this command: nobody is waiting for the report.
                Ok(response) if response.status() == StatusCode::NOT_FOUND => return Ok(()),
                Ok(response) if is_refusal(response.status()) => {
                    return Err(Error::Refused(response.status().as_u16()).into());
                }
                Ok(response) => tracing::warn!(
                    status = response.status().as_u16(),
                    command = id,
                    "report rejected; retrying"
                ),
                Err(error) => {
                    tracing::warn!(error = %error, command = id, "report failed; retrying")
                }
            }
            backoff.wait().await;
        }
    }
}

async fn blocking(
    work: impl FnOnce() -> Result<CommandResult, String> + Send + 'static,
) -> Result<CommandResult, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err("the command's worker thread stopped".into()))
}

fn erase_all(hardware: &dyn Hardware) -> Result<CommandResult, String> {
    let inventory = hardware.inventory().map_err(|e| error_chain(&e))?;
    let mut erased = Vec::new();
    for storage in &inventory.storage {
        let file = hardware.open_disk(storage).map_err(|e| error_chain(&e))?;
        let mut disk = Disk::new(file).map_err(|e| error_chain(&e))?;
        crate::erase::erase_disk(&mut disk)
            .map_err(|e| format!("{}: {}", storage.name, error_chain(&e)))?;
        erased.push(storage.name.clone());
    }
    Ok(CommandResult::Erased { disks: erased })
}

fn sync_all(hardware: &dyn Hardware) -> Result<CommandResult, String> {
    let inventory = hardware.inventory().map_err(|e| error_chain(&e))?;
    for storage in &inventory.storage {
        let file = hardware.open_disk(storage).map_err(|e| error_chain(&e))?;
        file.sync_all()
            .map_err(|e| format!("{}: {e}", storage.name))?;
    }
    Ok(CommandResult::Synced)
}

fn command_kind(command: &Command) -> &'static str {
    match command {
        Command::Inventory => "inventory",
        Command::EraseMetadata => "eraseMetadata",
        Command::WriteImage(_) => "writeImage",
        Command::Sync => "sync",
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, Exchange> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::PRECONDITION_REQUIRED {
        return Err(Exchange::HelloNeeded);
    }
    if is_refusal(status) {
        return Err(Error::Refused(status.as_u16()).into());
    }
    Err(Exchange::Status(status.as_u16()))
}

fn is_refusal(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// The progress reports of one command. They stop when it is dropped: when the command ends, and
/// also when the agent itself is stopped mid-command, so a stopped agent never looks alive to
/// the operator.
struct Reporter(tokio::task::JoinHandle<()>);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error and its causes on one line, for reports read by people.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Exponential backoff from 250 ms up to [`MAX_BACKOFF`].
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }
}
