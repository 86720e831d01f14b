//! The ingot virtual lab: simulated bare-metal machines for development and tests.
//!
//! A lab runs N machines built from a hardware profile. One HTTP listener serves:
//! - `/redfish/v1/...`: one Redfish service with a System and a Manager per machine;
//! - `/images/...`: the image server (images, checksum files, uploaded deploy documents);
//! - `/lab/v1/...`: the control API (machine status, fault injection).
//!
//! Machines power on with a delay, boot the deploy agent from virtual media (running the real
//! agent code against sparse-file disks) or boot the image written to their disk.

pub mod images;
pub mod ipmi;
pub mod machine;
pub mod profile;
pub mod redfish;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use machine::{Faults, Firmware, Machine};
use profile::Profile;
pub use redfish::Credentials;

/// Error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A machine could not be created.
    #[error("cannot create machine {index}")]
    Machine {
        /// Machine index.
        index: u32,
        /// Cause.
        #[source]
        source: machine::Error,
    },
    /// The lab directory could not be prepared.
    #[error("cannot prepare the lab directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The listener could not be opened.
    #[error("cannot listen on {address}")]
    Listen {
        /// Address.
        address: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of machines.
    pub machines: u32,
    /// Hardware of every machine.
    pub profile: Profile,
    /// Directory for disk files and the image store.
    pub dir: PathBuf,
    /// Address of the HTTP listener (port 0 picks a free one).
    pub listen: SocketAddr,
    /// BMC login.
    pub credentials: Credentials,
    /// Whether every machine also gets an IPMI (RMCP+) endpoint on its own UDP port.
    pub ipmi: bool,
    /// A CA certificate (PEM) the machines' firmware trusts for HTTPS virtual media, as a real
    /// BMC can be configured to; the public roots are trusted either way.
    pub trusted_ca_pem: Option<String>,
    /// Base URL of a network boot server the machines' firmware asks for `<url>/<mac>` when
    /// booting from the network (`Pxe`); without one, network boot finds nothing to boot.
    pub network_boot_url: Option<String>,
}

/// A running lab. Dropping it stops the server and every machine.
pub struct Lab {
    machines: Vec<Arc<Machine>>,
    url: String,
    image_dir: PathBuf,
    images: Arc<images::ImageStore>,
    server: tokio::task::JoinHandle<()>,
    ipmi: Vec<(String, SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.server.abort();
        for (_, _, task) in &self.ipmi {
            task.abort();
        }
    }
}

impl Lab {
    /// Creates the machines and starts serving.
    pub async fn start(config: LabConfig) -> Result<Self, Error> {
        let image_dir = config.dir.join("images");
        std::fs::create_dir_all(&image_dir).map_err(|source| Error::Directory {
            path: image_dir.clone(),
            source,
        })?;
        let firmware = Firmware {
            http: firmware_client(config.trusted_ca_pem.as_deref())?,
            network_boot_url: config.network_boot_url.clone(),
        };
        let machines = (0..config.machines)
            .map(|index| {
                Machine::create(index, &config.profile, &config.dir, firmware.clone())
                    .map(Arc::new)
                    .map_err(|source| Error::Machine { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let images = Arc::new(images::ImageStore::new(image_dir.clone()));
        let app = redfish::router(machines.clone(), config.credentials.clone())
            .merge(images::router(images.clone()))
            .merge(control_router(machines.clone()))
            .merge(downloads_router(images.clone()));
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
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(error = %error, "lab server stopped");
            }
        });
        let ipmi = if config.ipmi {
            start_ipmi(&machines, &config).await?
        } else {
            Vec::new()
        };
        tracing::info!(url = %format!("http://{address}"), machines = machines.len(), "lab running");
        Ok(Self {
            machines,
            url: format!("http://{address}"),
            image_dir,
            images,
            server,
            ipmi,
        })
    }

    /// The IPMI (RMCP+) address of machine `id`, when IPMI is enabled.
    pub fn ipmi_address(&self, id: &str) -> Option<SocketAddr> {
        self.ipmi
            .iter()
            .find(|(machine, _, _)| machine == id)
            .map(|(_, address, _)| *address)
    }

    /// Base URL of the lab listener.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Redfish address of machine `id` in Metal3 form.
    pub fn bmc_address(&self, id: &str) -> String {
        format!("redfish+{}/redfish/v1/Systems/{id}", self.url)
    }

    /// Directory the image server serves.
    pub fn image_dir(&self) -> &std::path::Path {
        &self.image_dir
    }

    /// How many times the image server served the image `name` (one per image write).
    pub fn image_downloads(&self, name: &str) -> u64 {
        self.images.downloads(name)
    }

    /// Downloads of the image `name`: started, and completed per host.
    pub fn image_download_counts(&self, name: &str) -> images::ImageDownloads {
        self.images.download_counts(name)
    }

    /// The machines.
    pub fn machines(&self) -> &[Arc<Machine>] {
        &self.machines
    }
}

/// The HTTP client the simulated firmware fetches virtual media and network boot with.
fn firmware_client(trusted_ca_pem: Option<&str>) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = trusted_ca_pem {
        let certificate = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(Error::Client)?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(Error::Client)
}

/// One UDP socket per machine, on free ports of the listen address.
async fn start_ipmi(
    machines: &[Arc<Machine>],
    config: &LabConfig,
) -> Result<Vec<(String, SocketAddr, tokio::task::JoinHandle<()>)>, Error> {
    let mut endpoints = Vec::new();
    for machine in machines {
        let wanted = SocketAddr::new(config.listen.ip(), 0);
        let failed = |source| Error::Listen {
            address: wanted,
            source,
        };
        let socket = tokio::net::UdpSocket::bind(wanted).await.map_err(failed)?;
        let address = socket.local_addr().map_err(failed)?;
        let credentials = config.credentials.clone();
        let task = tokio::spawn(ipmi::serve(
            socket,
            machine.clone(),
            credentials.username,
            credentials.password,
        ));
        endpoints.push((machine.id.clone(), address, task));
    }
    Ok(endpoints)
}

fn control_router(machines: Vec<Arc<Machine>>) -> axum::Router {
    axum::Router::new()
        .route("/lab/v1/machines", get(list_machines))
        .route("/lab/v1/machines/{id}", get(machine_status))
        .route(
            "/lab/v1/machines/{id}/faults",
            put(set_faults).get(get_faults),
        )
        .with_state(Arc::new(machines))
}

/// `GET /lab/v1/images/{name}/downloads`: how often an image was downloaded, and by whom.
fn downloads_router(images: Arc<images::ImageStore>) -> axum::Router {
    axum::Router::new()
        .route("/lab/v1/images/{name}/downloads", get(image_downloads))
        .with_state(images)
}

async fn image_downloads(
    State(images): State<Arc<images::ImageStore>>,
    Path(name): Path<String>,
) -> Json<images::ImageDownloads> {
    Json(images.download_counts(&name))
}

type Machines = Arc<Vec<Arc<Machine>>>;

fn find<'a>(machines: &'a Machines, id: &str) -> Result<&'a Arc<Machine>, (StatusCode, String)> {
    machines
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no machine {id}")))
}

async fn list_machines(State(machines): State<Machines>) -> Response {
    Json(machines.iter().map(|m| m.status()).collect::<Vec<_>>()).into_response()
}

async fn machine_status(State(machines): State<Machines>, Path(id): Path<String>) -> Response {
    find(&machines, &id).map_or_else(IntoResponse::into_response, |m| {
        Json(m.status()).into_response()
    })
}

async fn get_faults(State(machines): State<Machines>, Path(id): Path<String>) -> Response {
    find(&machines, &id).map_or_else(IntoResponse::into_response, |m| {
        Json(m.faults()).into_response()
    })
}

async fn set_faults(
    State(machines): State<Machines>,
    Path(id): Path<String>,
    Json(faults): Json<Faults>,
) -> Response {
    match find(&machines, &id) {
        Ok(machine) => {
            tracing::info!(machine = %id, faults = ?faults, "faults set");
            machine.set_faults(faults);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(not_found) => not_found.into_response(),
    }
}
