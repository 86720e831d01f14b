//! A deploy agent that dies, in the virtual lab, through the real Redfish and standard-steps
//! components, the real deploy agent and the embedded API server.
//!
//! An agent killed in the middle of an image write goes silent; the agent API gives its command
//! up once the silence outlasts the limit, provisioning fails with an error naming the host and
//! the command, and once the fault is gone the usual retry boots a new agent that writes the
//! image. An agent that crashes as soon as it starts fails inspection the same way, and the host
//! is inspected once it no longer crashes.

mod site;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ingot_api::metal3::{BareMetalHost, BareMetalHostStatus, ErrorType, OperationalStatus};
use ingot_api::metal3::{HardwareData, ProvisioningState};
use ingot_lab::machine::Faults;
use kube::api::Api;
use serde_json::json;
use site::{IMAGE, NAMESPACE, PASSWORD, Site, WAIT, disk_head, image_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The silence after which the site's agent API gives a command up: short, so the test is
/// quick, yet many times the one-second progress reports of a live agent.
const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// How soon the crash must show: the limit, plus the steps plugin's five-second polls and the
/// operator's requeues, with room for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(45);

/// Bytes the held image server sends before it holds the rest back.
const SENT_BEFORE_HOLDING: usize = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_crashing_mid_write_fails_provisioning_by_name_and_a_retry_provisions() {
    let mut site = Site::start().await;
    site.agent_silence_limit = SILENCE_LIMIT;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-0");
    site.create_host("crashy", "lab-0").await;
    site.wait_for("crashy", ProvisioningState::Available).await;
    let held = HeldImage::serve(site.lab.image_dir().join(format!("{IMAGE}.raw"))).await;

    site.set_image("crashy", held.image(&site)).await;
    held.wait_until_writing().await;
    machine.set_faults(crashing_agent());
    let crashed = std::time::Instant::now();
    let failed = wait_for_error(&site, "crashy", ErrorType::Provisioning).await;

    assert!(
        crashed.elapsed() < NOTICED_WITHIN,
        "the crash was noticed only after {:?}",
        crashed.elapsed()
    );

    assert_error_says(
        &failed.error_message,
        "the agent on default/crashy stopped responding during write-image",
    );
    machine.set_faults(Faults::default());
    held.release();
    let recovered = site
        .wait_for("crashy", ProvisioningState::Provisioned)
        .await;
    let status = recovered.status.unwrap_or_default();
    assert_eq!(status.operational_status, OperationalStatus::Ok);
    assert_eq!(
        disk_head(&machine),
        image_head(&site),
        "no image on the disk"
    );

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_crashing_at_start_fails_inspection_and_the_host_recovers() {
    let mut site = Site::start().await;
    site.agent_silence_limit = SILENCE_LIMIT;
    site.load_steps_plugin(&[("agent-boot-timeout-seconds", "20")])
        .await;
    let operator = site.start_operator().await;
    let machine = site.machine("lab-1");
    machine.set_faults(crashing_agent());

    site.create_host("blind", "lab-1").await;
    let failed = wait_for_error(&site, "blind", ErrorType::Inspection).await;

    assert_error_says(&failed.error_message, "deploy agent");
    machine.set_faults(Faults::default());
    let inspected = site.wait_for("blind", ProvisioningState::Available).await;
    assert_eq!(
        inspected.status.unwrap_or_default().operational_status,
        OperationalStatus::Ok
    );
    let hardware: Api<HardwareData> = Api::namespaced(site.client.clone(), NAMESPACE);
    assert!(
        hardware.get("blind").await.is_ok(),
        "no HardwareData after the recovered inspection"
    );

    operator.stop().await;
}

fn crashing_agent() -> Faults {
    Faults {
        agent_crash: true,
        ..Faults::default()
    }
}

/// The error says `fragment`, and it is for people: no Rust type names or debug forms, no
/// secret.
fn assert_error_says(message: &str, fragment: &str) {
    assert!(
        message.contains(fragment),
        "the error does not say {fragment:?}: {message}"
    );
    for debug_form in ["StepError", "DriverError", "Transient(", "Some(", "\\\""] {
        assert!(
            !message.contains(debug_form),
            "{debug_form} in the error: {message}"
        );
    }
    assert!(!message.contains(PASSWORD), "the error shows the password");
}

/// Waits until host `name` shows an error of type `wanted`.
async fn wait_for_error(site: &Site, name: &str, wanted: ErrorType) -> BareMetalHostStatus {
    let hosts: Api<BareMetalHost> = site.hosts();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = hosts.get(name).await.ok().and_then(|host| host.status);
        if let Some(status) = status
            .as_ref()
            .filter(|status| status.error_type == Some(wanted))
        {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never showed a {wanted:?} error; last status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An image server on 127.0.0.1 that sends the first part of the image, then holds the rest
/// back until released, so an image write is surely under way when the agent is killed.
struct HeldImage {
    url: String,
    /// Downloads that got their first part.
    started: Arc<AtomicUsize>,
    released: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HeldImage {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HeldImage {
    async fn serve(path: PathBuf) -> Self {
        let image = Arc::new(std::fs::read(&path).unwrap_or_else(|e| panic!("image: {e}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let started = Arc::new(AtomicUsize::new(0));
        let (released, gate) = watch::channel(false);

        let counter = started.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(send_held(
                    stream,
                    image.clone(),
                    counter.clone(),
                    gate.clone(),
                ));
            }
        });
        Self {
            url: format!("http://{address}/images/{IMAGE}.raw"),
            started,
            released,
            server,
        }
    }

    /// The image spec: served from here, checked against the lab's published checksum.
    fn image(&self, site: &Site) -> serde_json::Value {
        json!({
            "url": self.url,
            "checksum": format!("{}.sha256sum", site.image_url()),
            "checksumType": "sha256",
        })
    }

    async fn wait_until_writing(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.started.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent never downloaded the image"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

/// Answers one GET with the image, holding back all but its first part until released.
async fn send_held(
    mut stream: tokio::net::TcpStream,
    image: Arc<Vec<u8>>,
    started: Arc<AtomicUsize>,
    mut gate: watch::Receiver<bool>,
) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }

    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        image.len()
    );
    let (first, rest) = image.split_at(SENT_BEFORE_HOLDING.min(image.len()));
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(first).await.is_err() {
        return;
    }
    started.fetch_add(1, Ordering::SeqCst);
    if gate.wait_for(|released| *released).await.is_ok() {
        let _ = stream.write_all(rest).await;
    }
}
