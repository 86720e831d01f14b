//! A simulated machine: power state machine, boot override, virtual media, disks, and the
//! deploy agent it runs when booted from the deploy image.
//!
//! Booting from virtual media fetches the inserted image URL, which serves the agent's boot
//! configuration (the lab stands in for the ramdisk), and starts the real agent code as a
//! task against the machine's sparse-file disks. Booting from disk succeeds only when a disk
//! carries a valid partition table, which is what a written image leaves behind.
//!
//! Booting from the network (`Pxe`) stands in for PXE/iPXE: the firmware asks the network boot
//! server for the boot configuration of its PXE NIC's MAC address and starts the agent from it
//! exactly as from virtual media.
//!
//! Virtual media holding an ISO 9660 image instead of a deploy document boots as a live ISO:
//! the machine runs it from the CD and leaves its disks alone.
//!
//! Each machine keeps a short history of what was done to it (power requests, media changes,
//! boots) and counts the requests its BMC answered, so tests can tell what the operator did.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ingot_agent::bootconfig::BootConfig;
use ingot_agent::client::Agent;
use ingot_agent::disk::Disk;
use ingot_agent::hardware::{self, Hardware, SimulatedHardware};
use ingot_agent::inventory::{HardwareDetails, Storage};
use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A disk file could not be created.
    #[error("cannot create disk file {path}")]
    CreateDisk {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The requested reset type is not offered.
    #[error(
        "ResetType {0:?} is not supported; supported values are listed in ResetType@Redfish.AllowableValues"
    )]
    UnsupportedReset(String),
}

/// Reset types the simulated BMC offers.
pub const RESET_TYPES: [&str; 6] = [
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
];

/// Boot targets the simulated BMC offers.
pub const BOOT_TARGETS: [&str; 4] = ["None", "Pxe", "Cd", "Hdd"];

/// How many history events a machine keeps; older ones are dropped so a long-running lab does
/// not grow without bound.
pub const HISTORY_LIMIT: usize = 1024;

/// How much of a virtual medium the firmware reads to find out what it holds: enough for an
/// ISO 9660 volume descriptor or a deploy document, never a whole image.
const MEDIA_READ_LIMIT: usize = 1 << 20;

/// Redfish power states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    /// Powered off.
    Off,
    /// Transitioning to on.
    PoweringOn,
    /// Powered on.
    On,
    /// Transitioning to off.
    PoweringOff,
}

/// Redfish boot source override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BootOverride {
    /// `None`, `Pxe`, `Cd` or `Hdd`.
    pub boot_source_override_target: String,
    /// `Disabled`, `Once` or `Continuous`.
    pub boot_source_override_enabled: String,
    /// `UEFI` or `Legacy`.
    pub boot_source_override_mode: String,
}

impl Default for BootOverride {
    fn default() -> Self {
        Self {
            boot_source_override_target: "None".into(),
            boot_source_override_enabled: "Disabled".into(),
            boot_source_override_mode: "UEFI".into(),
        }
    }
}

/// Faults injected through the lab control API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// The BMC answers every request with 503, as if it were unreachable behind a proxy.
    pub bmc_unreachable: bool,
    /// Extra latency of every BMC request, in milliseconds.
    pub bmc_delay_ms: u64,
    /// The BMC answers every request with 500, as a BMC whose web service is failing does.
    pub bmc_internal_error: bool,
    /// The BMC forgets the Redfish sessions open when this is set, as after a BMC reset: their
    /// tokens get 401 on this machine from then on, while new logins work.
    pub bmc_sessions_dropped: bool,
    /// Disk writes fail with "no space left on device".
    pub disk_write_error: bool,
    /// The agent dies as soon as it starts (a running agent is killed when this is set).
    pub agent_crash: bool,
}

/// What the machine is doing, for the lab status endpoint and Redfish `BootProgress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Activity {
    /// Powered off.
    Off,
    /// Firmware is starting.
    Booting,
    /// Running the deploy agent from virtual media or network boot.
    Agent {
        /// URL the deploy image was fetched from.
        image: String,
    },
    /// The deploy agent stopped.
    AgentStopped {
        /// Why.
        reason: String,
    },
    /// Booted the operating system from a disk.
    BootedFromDisk {
        /// The disk it booted from.
        disk: String,
    },
    /// Nothing bootable was found.
    NoBootableDevice {
        /// What was tried.
        reason: String,
    },
    /// Running a live ISO from virtual media; the disks are not touched.
    LiveIso {
        /// URL of the ISO.
        image: String,
    },
}

/// Something done to a machine, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum MachineEvent {
    /// A power request, by its Redfish reset type (IPMI chassis controls use the same names).
    #[serde(rename_all = "camelCase")]
    PowerRequest {
        /// `On`, `ForceOff`, `GracefulShutdown`, ...
        reset_type: String,
    },
    /// Virtual media was inserted.
    MediaInserted {
        /// The image URL.
        image: String,
    },
    /// Inserted virtual media was ejected.
    MediaEjected,
    /// The firmware finished booting.
    Booted {
        /// What it booted into.
        activity: Activity,
    },
}

/// Virtual media slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Media {
    /// Inserted image URL.
    pub image: Option<String>,
}

struct State {
    power: PowerState,
    boot: BootOverride,
    media: Media,
    activity: Activity,
    faults: Faults,
    agent: Option<tokio::task::JoinHandle<()>>,
    /// Bumped by every power request, so a superseded transition does not complete.
    generation: u64,
    history: VecDeque<MachineEvent>,
    bmc_requests: u64,
    /// When the BMC last dropped its sessions; older sessions are refused.
    sessions_dropped_at: Option<Instant>,
}

impl State {
    fn record(&mut self, event: MachineEvent) {
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }
}

/// How the simulated firmware reaches boot servers.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// Client for virtual media and network boot, trusting the lab's configured CA.
    pub http: reqwest::Client,
    /// Base URL of the network boot server, which answers `<url>/<mac>`; none means no server
    /// answers network boot requests.
    pub network_boot_url: Option<String>,
}

/// One simulated machine.
pub struct Machine {
    /// System id in Redfish and name in the lab.
    pub id: String,
    /// Stable UUID.
    pub uuid: String,
    /// Hardware and disks.
    pub hardware: SimulatedHardware,
    power_delay: Duration,
    spill_dir: PathBuf,
    firmware: Firmware,
    state: Mutex<State>,
}

/// Snapshot of a machine for status endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Machine id.
    pub id: String,
    /// Power state.
    pub power: PowerState,
    /// Boot override.
    pub boot: BootOverride,
    /// Inserted media.
    pub media: Option<String>,
    /// What it is doing.
    pub activity: Activity,
    /// Active faults.
    pub faults: Faults,
}

impl Machine {
    /// Creates machine `index` from `profile`, with sparse disk files in `dir`.
    pub fn create(
        index: u32,
        profile: &Profile,
        dir: &Path,
        firmware: Firmware,
    ) -> Result<Self, Error> {
        let id = format!("lab-{index}");
        let details = profile.inventory(index, &id);
        let disk_files = create_disks(&details, &dir.join(&id))?;
        let spill_dir = dir.join(&id).join("tmp");
        std::fs::create_dir_all(&spill_dir).map_err(|source| Error::CreateDisk {
            path: spill_dir.clone(),
            source,
        })?;
        Ok(Self {
            uuid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()).to_string(),
            id,
            hardware: SimulatedHardware {
                details,
                disk_files,
            },
            power_delay: Duration::from_millis(profile.power_delay_ms),
            spill_dir,
            firmware,
            state: Mutex::new(State {
                power: PowerState::Off,
                boot: BootOverride::default(),
                media: Media::default(),
                activity: Activity::Off,
                faults: Faults::default(),
                agent: None,
                generation: 0,
                history: VecDeque::new(),
                bmc_requests: 0,
                sessions_dropped_at: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current status.
    pub fn status(&self) -> MachineStatus {
        let state = self.lock();
        MachineStatus {
            id: self.id.clone(),
            power: state.power,
            boot: state.boot.clone(),
            media: state.media.image.clone(),
            activity: state.activity.clone(),
            faults: state.faults.clone(),
        }
    }

    /// Inventory the machine presents.
    pub fn details(&self) -> &HardwareDetails {
        &self.hardware.details
    }

    /// Active faults.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces the active faults; setting `agentCrash` kills a running agent, setting
    /// `bmcSessionsDropped` ends the sessions open now.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.lock();
        if faults.bmc_sessions_dropped {
            state.sessions_dropped_at = Some(Instant::now());
        }
        if faults.agent_crash
            && let Some(agent) = state.agent.take()
        {
            agent.abort();
            state.activity = Activity::AgentStopped {
                reason: "crashed (injected fault)".into(),
            };
        }
        state.faults = faults;
    }

    /// Whether a session opened at `opened` was dropped by this machine's BMC.
    pub fn session_dropped(&self, opened: Instant) -> bool {
        self.lock()
            .sessions_dropped_at
            .is_some_and(|dropped| opened <= dropped)
    }

    /// Applies a boot override PATCH.
    pub fn set_boot(&self, boot: BootOverride) {
        self.lock().boot = boot;
    }

    /// Inserts virtual media.
    pub fn insert_media(&self, image: String) {
        let mut state = self.lock();
        state.media.image = Some(image.clone());
        state.record(MachineEvent::MediaInserted { image });
    }

    /// Ejects virtual media.
    pub fn eject_media(&self) {
        let mut state = self.lock();
        if state.media.image.take().is_some() {
            state.record(MachineEvent::MediaEjected);
        }
    }

    /// What was done to the machine so far, oldest first (at most [`HISTORY_LIMIT`] events).
    pub fn history(&self) -> Vec<MachineEvent> {
        self.lock().history.iter().cloned().collect()
    }

    /// How many requests the machine's BMC answered (Redfish and IPMI).
    pub fn bmc_requests(&self) -> u64 {
        self.lock().bmc_requests
    }

    /// Counts one request to the machine's BMC.
    pub fn count_bmc_request(&self) {
        self.lock().bmc_requests += 1;
    }

    /// Handles a Redfish `ComputerSystem.Reset`.
    pub fn reset(self: &Arc<Self>, reset_type: &str) -> Result<(), Error> {
        if !RESET_TYPES.contains(&reset_type) {
            return Err(Error::UnsupportedReset(reset_type.to_owned()));
        }
        self.lock().record(MachineEvent::PowerRequest {
            reset_type: reset_type.to_owned(),
        });

        match reset_type {
            "On" => self.power_on(),
            "ForceOff" | "GracefulShutdown" => self.power_off(),
            _ => {
                self.power_off();
                self.power_on();
            }
        }
        Ok(())
    }

    fn power_on(self: &Arc<Self>) {
        let generation = {
            let mut state = self.lock();
            if matches!(state.power, PowerState::On | PowerState::PoweringOn) {
                return;
            }
            // Without a delay the BMC applies the change before it answers, as many do.
            state.power = if self.power_delay.is_zero() {
                PowerState::On
            } else {
                PowerState::PoweringOn
            };
            state.activity = Activity::Booting;
            state.generation += 1;
            state.generation
        };
        let machine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(machine.power_delay).await;
            {
                let mut state = machine.lock();
                if state.generation != generation {
                    return;
                }
                state.power = PowerState::On;
            }
            machine.boot(generation).await;
        });
    }

    fn power_off(self: &Arc<Self>) {
        let generation = {
            let mut state = self.lock();
            if let Some(agent) = state.agent.take() {
                agent.abort();
            }
            if state.power == PowerState::Off {
                return;
            }
            state.power = if self.power_delay.is_zero() {
                PowerState::Off
            } else {
                PowerState::PoweringOff
            };
            state.activity = Activity::Off;
            state.generation += 1;
            state.generation
        };
        let machine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(machine.power_delay).await;
            let mut state = machine.lock();
            if state.generation == generation {
                state.power = PowerState::Off;
            }
        });
    }

    /// Firmware: picks the boot device and starts what it holds.
    async fn boot(self: &Arc<Self>, generation: u64) {
        let (target, media) = {
            let mut state = self.lock();
            let target = match state.boot.boot_source_override_enabled.as_str() {
                "Once" | "Continuous" => state.boot.boot_source_override_target.clone(),
                _ => "Hdd".to_owned(),
            };
            if state.boot.boot_source_override_enabled == "Once" {
                state.boot.boot_source_override_enabled = "Disabled".into();
            }
            (target, state.media.image.clone())
        };

        let activity = match (target.as_str(), media) {
            ("Cd", Some(image)) => self.boot_media(image, generation).await,
            ("Cd", None) => Activity::NoBootableDevice {
                reason: "boot from Cd requested but no media is inserted".into(),
            },
            ("Pxe", _) => self.boot_network(generation).await,
            _ => self.boot_disk(),
        };
        let mut state = self.lock();
        if state.generation == generation {
            tracing::info!(machine = %self.id, activity = ?activity, "machine booted");
            state.activity = activity.clone();
            state.record(MachineEvent::Booted { activity });
        }
    }

    fn boot_disk(&self) -> Activity {
        for storage in &self.hardware.details.storage {
            if is_bootable(&self.hardware, storage) {
                return Activity::BootedFromDisk {
                    disk: storage.name.clone(),
                };
            }
        }
        Activity::NoBootableDevice {
            reason: "no disk carries a valid partition table".into(),
        }
    }

    /// Network boot from the first PXE-capable NIC.
    async fn boot_network(self: &Arc<Self>, generation: u64) -> Activity {
        let Some(server) = &self.firmware.network_boot_url else {
            return Activity::NoBootableDevice {
                reason: "network boot requested but no network boot server is configured".into(),
            };
        };
        let Some(nic) = self.hardware.details.nics.iter().find(|nic| nic.pxe) else {
            return Activity::NoBootableDevice {
                reason: "network boot requested but no NIC can network-boot".into(),
            };
        };

        let url = format!("{}/{}", server.trim_end_matches('/'), nic.mac);
        let config = self
            .fetch_media(&url, "network boot")
            .await
            .and_then(|bytes| boot_config(&bytes, "network boot"));
        match config {
            Ok(config) => self.start_agent(config, url, generation),
            Err(reason) => Activity::NoBootableDevice { reason },
        }
    }

    /// Boots the inserted virtual media: a live ISO, or the deploy agent its document names.
    async fn boot_media(self: &Arc<Self>, image: String, generation: u64) -> Activity {
        let bytes = match self.fetch_media(&image, "virtual media").await {
            Ok(bytes) => bytes,
            Err(reason) => return Activity::NoBootableDevice { reason },
        };
        if crate::images::is_iso9660(&bytes) {
            return Activity::LiveIso { image };
        }
        match boot_config(&bytes, "virtual media") {
            Ok(config) => self.start_agent(config, image, generation),
            Err(reason) => Activity::NoBootableDevice { reason },
        }
    }

    /// Runs the deploy agent `config` describes, booted from `image`.
    fn start_agent(
        self: &Arc<Self>,
        config: BootConfig,
        image: String,
        generation: u64,
    ) -> Activity {
        let hardware = Arc::new(FaultyHardware {
            machine: Arc::downgrade(self),
            inner: self.hardware.clone(),
        });
        let agent = match Agent::new(config, hardware, self.spill_dir.clone()) {
            Ok(agent) => agent,
            Err(error) => {
                return Activity::AgentStopped {
                    reason: error.to_string(),
                };
            }
        };

        let mut state = self.lock();
        if state.generation != generation {
            return state.activity.clone();
        }
        if state.faults.agent_crash {
            return Activity::AgentStopped {
                reason: "crashed (injected fault)".into(),
            };
        }
        let machine = Arc::downgrade(self);
        state.agent = Some(tokio::spawn(async move {
            let outcome = agent.run().await;
            if let Some(machine) = machine.upgrade() {
                let reason = outcome.map_or_else(|e| e.to_string(), |()| "exited".into());
                machine.lock().activity = Activity::AgentStopped { reason };
            }
        }));
        Activity::Agent { image }
    }

    /// Reads the start of the medium at `url` (at most [`MEDIA_READ_LIMIT`] bytes); `source`
    /// names where it comes from in the reason of a failure.
    async fn fetch_media(&self, url: &str, source: &str) -> Result<Vec<u8>, String> {
        let unreadable = |e: reqwest::Error| format!("cannot read {source}: {}", e.without_url());
        let mut response = self
            .firmware
            .http
            .get(url)
            .send()
            .await
            .map_err(unreadable)?;
        if !response.status().is_success() {
            return Err(format!("{source} server answered {}", response.status()));
        }

        let mut bytes = Vec::new();
        while bytes.len() < MEDIA_READ_LIMIT {
            match response.chunk().await.map_err(unreadable)? {
                Some(chunk) => bytes.extend_from_slice(&chunk),
                None => break,
            }
        }
        bytes.truncate(MEDIA_READ_LIMIT);
        Ok(bytes)
    }
}

/// The deploy agent's boot configuration held by a medium read from `source`.
fn boot_config(bytes: &[u8], source: &str) -> Result<BootConfig, String> {
    BootConfig::from_json(bytes).map_err(|e| format!("{source} is not a deploy image: {e}"))
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(agent) = self.lock().agent.take() {
            agent.abort();
        }
    }
}

fn create_disks(details: &HardwareDetails, dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDisk {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = BTreeMap::new();
    for storage in &details.storage {
        let path = dir.join(format!(
            "{}.img",
            storage.device_name().trim_start_matches("/dev/")
        ));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(storage.size_bytes))
            .map_err(|source| Error::CreateDisk {
                path: path.clone(),
                source,
            });
        file?;
        files.insert(storage.name.clone(), path);
    }
    Ok(files)
}

fn is_bootable(hardware: &SimulatedHardware, storage: &Storage) -> bool {
    let Ok(file) = hardware.open_disk(storage) else {
        return false;
    };
    let Ok(mut disk) = Disk::new(file) else {
        return false;
    };
    matches!(ingot_agent::partition::read_partitions(&mut disk), Ok(Some((_, spans))) if !spans.is_empty())
}

/// The machine's hardware as the agent sees it, with injected disk faults.
struct FaultyHardware {
    machine: std::sync::Weak<Machine>,
    inner: SimulatedHardware,
}

impl Hardware for FaultyHardware {
    fn inventory(&self) -> Result<HardwareDetails, hardware::Error> {
        self.inner.inventory()
    }

    fn open_disk(&self, disk: &Storage) -> Result<std::fs::File, hardware::Error> {
        let failing = self
            .machine
            .upgrade()
            .is_some_and(|m| m.faults().disk_write_error);
        if !failing {
            return self.inner.open_disk(disk);
        }
        // A read-only descriptor makes every write fail with an I/O error, as a failing
        // disk would, while reads and the size still look normal.
        let path = self
            .inner
            .disk_files
            .get(&disk.name)
            .cloned()
            .unwrap_or_default();
        std::fs::File::open(path).map_err(|source| hardware::Error::OpenDisk {
            disk: disk.name.clone(),
            source,
        })
    }
}
