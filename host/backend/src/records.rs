//! What the backend remembers about each host between reconciles: the phase it is running,
//! the step it is on and the state that step asked to resume with.
//!
//! Records live in memory and, when the backend has a state directory, in one JSON file per
//! host, rewritten (through a temporary file and a rename) on every change. A restarted
//! operator therefore resumes every host at the step it was on instead of starting the phase
//! again, which matters for steps such as writing an image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ingot_api::metal3::HardwareDetails;
use ingot_plugin_host::bindings::steps::Phase;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::files::{remove_if_present, write_atomically};

/// Why the records could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The state directory could not be read or created.
    #[error("cannot use the state directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A record file could not be read or parsed.
    #[error("cannot read the host record {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record file could not be written.
    #[error("cannot write the host record {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything remembered about one host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    /// The phase running or last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PhaseRun>,
    /// How many phases were started for this host; makes run ids unique.
    #[serde(default)]
    pub runs_started: u64,
    /// The hardware the deploy agent reported during the last inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspected: Option<HardwareDetails>,
    /// The last power change failed at the BMC.
    #[serde(default)]
    pub power_failed: bool,
}

/// One run of a provisioning phase through a steps plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRun {
    /// Unique per host; deploy agent command ids derive from it.
    pub id: String,
    /// The phase.
    pub phase: PhaseName,
    /// Digest of what the phase was asked to do; a different request starts a new run.
    pub fingerprint: String,
    /// The steps plugin that planned the run.
    pub plugin: String,
    /// The URL of the deploy media published for this run.
    pub media_url: String,
    /// The planned steps; empty until planned.
    pub steps: Vec<PlannedStep>,
    /// Whether `steps` holds the plan (an empty plan is a valid plan).
    pub planned: bool,
    /// Index of the step being run.
    pub current: usize,
    /// State the current step asked to resume with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<u8>>,
    /// Unix milliseconds before which the current step is not run again.
    pub not_before_ms: u64,
    /// The step's latest progress note.
    pub detail: String,
    /// Calls in a row to the current step (or to the plan) that got no answer: a transient
    /// error such as an unreachable BMC, or a failing plugin.
    #[serde(default)]
    pub transient_failures: u32,
    /// How the run ended, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

impl PhaseRun {
    /// The name of the step being run, if any.
    pub fn current_step(&self) -> Option<&PlannedStep> {
        self.steps.get(self.current)
    }
}

/// A step of a plan, as the plugin returned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Step name.
    pub name: String,
    /// The plugin's arguments.
    pub args: Vec<(String, String)>,
}

/// How a phase run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunOutcome {
    /// Every step completed.
    Done,
    /// A step failed with this message.
    Failed(String),
}

/// The phases, in a form that can be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseName {
    /// Hardware inspection.
    Inspect,
    /// Firmware and RAID preparation.
    Prepare,
    /// Image deployment.
    Deploy,
    /// Clean-up after use.
    Deprovision,
    /// Booting a live ISO.
    LiveIso,
}

impl From<PhaseName> for Phase {
    fn from(name: PhaseName) -> Self {
        match name {
            PhaseName::Inspect => Phase::Inspect,
            PhaseName::Prepare => Phase::Prepare,
            PhaseName::Deploy => Phase::Deploy,
            PhaseName::Deprovision => Phase::Deprovision,
            PhaseName::LiveIso => Phase::LiveIso,
        }
    }
}

impl PhaseName {
    /// The name used in run ids, logs and the phase parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Inspect => "inspect",
            PhaseName::Prepare => "prepare",
            PhaseName::Deploy => "deploy",
            PhaseName::Deprovision => "deprovision",
            PhaseName::LiveIso => "live-iso",
        }
    }
}

/// The records of every host, keyed by the host's UID.
#[derive(Debug, Default)]
pub struct Records {
    table: Mutex<Table>,
    dir: Option<PathBuf>,
    /// Notified when a host stops being busy, so that a waiting host can take its slot.
    slot_freed: Notify,
}

/// The records with a running count of busy hosts, so that the capacity check, made on every
/// step of every host in a busy state, does not scan the whole fleet.
#[derive(Debug, Default)]
struct Table {
    hosts: HashMap<String, HostRecord>,
    busy: usize,
}

impl Table {
    fn new(hosts: HashMap<String, HostRecord>) -> Self {
        let busy = hosts.values().filter(|record| record.is_busy()).count();
        Self { hosts, busy }
    }

    /// Keeps the busy count right across one record's change from `was_busy`; true when a
    /// busy host stopped being busy.
    fn recount(&mut self, was_busy: bool, is_busy: bool) -> bool {
        match (was_busy, is_busy) {
            (false, true) => self.busy += 1,
            (true, false) => self.busy = self.busy.saturating_sub(1),
            _ => {}
        }
        was_busy && !is_busy
    }
}

impl HostRecord {
    /// Whether the host has a phase under way (planned or running, not finished).
    fn is_busy(&self) -> bool {
        self.run.as_ref().is_some_and(|run| run.outcome.is_none())
    }
}

impl Records {
    /// Records kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Records kept in `dir`, loading the ones already there.
    ///
    /// # Errors
    /// [`RecordsError`] when the directory cannot be created or a record cannot be read.
    pub fn open(dir: &Path) -> Result<Self, RecordsError> {
        let directory_error = |source| RecordsError::Directory {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(directory_error)?;

        let mut hosts = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(directory_error)? {
            let path = entry.map_err(directory_error)?.path();
            let Some(uid) = record_uid(&path) else {
                continue;
            };
            hosts.insert(uid, read_record(&path)?);
        }

        Ok(Self {
            table: Mutex::new(Table::new(hosts)),
            dir: Some(dir.to_owned()),
            slot_freed: Notify::new(),
        })
    }

    /// A copy of the host's record, if there is one.
    pub fn get(&self, uid: &str) -> Option<HostRecord> {
        self.lock().hosts.get(uid).cloned()
    }

    /// Changes the host's record (creating an empty one first) and saves it.
    ///
    /// # Errors
    /// [`RecordsError::Write`] when the record cannot be saved; the change is kept in memory.
    pub fn update<T>(
        &self,
        uid: &str,
        change: impl FnOnce(&mut HostRecord) -> T,
    ) -> Result<T, RecordsError> {
        let mut table = self.lock();
        let record = table.hosts.entry(uid.to_owned()).or_default();
        let before = record.clone();
        let answer = change(record);

        if *record == before {
            return Ok(answer);
        }
        let (was_busy, is_busy) = (before.is_busy(), record.is_busy());
        let saved = self.save(uid, record);
        if table.recount(was_busy, is_busy) {
            self.slot_freed.notify_one();
        }
        saved.map(|()| answer)
    }

    /// Forgets the host.
    ///
    /// # Errors
    /// [`RecordsError::Write`] when its file cannot be removed.
    pub fn remove(&self, uid: &str) -> Result<(), RecordsError> {
        let mut table = self.lock();
        if let Some(removed) = table.hosts.remove(uid)
            && table.recount(removed.is_busy(), false)
        {
            self.slot_freed.notify_one();
        }
        drop(table);

        let Some(path) = self.path_of(uid) else {
            return Ok(());
        };
        remove_if_present(&path).map_err(|source| RecordsError::Write { path, source })
    }

    /// Whether the host has a phase under way.
    pub fn is_busy(&self, uid: &str) -> bool {
        self.lock().hosts.get(uid).is_some_and(HostRecord::is_busy)
    }

    /// How many hosts have a phase under way (planned or running, not finished).
    pub fn busy_hosts(&self) -> usize {
        self.lock().busy
    }

    /// Resolves once a host has stopped being busy since the last time it resolved (or since
    /// the records were opened).
    pub async fn slot_freed(&self) {
        self.slot_freed.notified().await;
    }

    fn save(&self, uid: &str, record: &HostRecord) -> Result<(), RecordsError> {
        let Some(path) = self.path_of(uid) else {
            return Ok(());
        };
        let write_error = |source| RecordsError::Write {
            path: path.clone(),
            source,
        };

        let bytes = serde_json::to_vec(record).map_err(|e| write_error(e.into()))?;
        write_atomically(&path, &bytes).map_err(write_error)
    }

    fn path_of(&self, uid: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        // UIDs are generated by the API server; refuse anything that could leave the directory.
        let safe = uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        safe.then(|| dir.join(format!("{uid}.json")))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn record_uid(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".json").map(str::to_owned)
}

fn read_record(path: &Path) -> Result<HostRecord, RecordsError> {
    let read_error = |source: Box<dyn std::error::Error + Send + Sync>| RecordsError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| read_error(e.into()))?;
    serde_json::from_slice(&bytes).map_err(|e| read_error(e.into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deploy run at `step`, not finished.
    pub(crate) fn running(step: usize) -> PhaseRun {
        PhaseRun {
            id: "deploy-1".into(),
            phase: PhaseName::Deploy,
            fingerprint: "f".into(),
            plugin: "steps".into(),
            media_url: "https://127.0.0.1/v1/media/x".into(),
            steps: vec![PlannedStep {
                name: "write-image".into(),
                args: Vec::new(),
            }],
            planned: true,
            current: step,
            state: Some(b"command-1".to_vec()),
            not_before_ms: 0,
            detail: String::new(),
            transient_failures: 0,
            outcome: None,
        }
    }

    #[test]
    fn a_reopened_store_resumes_at_the_same_step() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let records = Records::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        records
            .update("uid-1", |record| record.run = Some(running(0)))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(records);

        let reopened = Records::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));

        let run = reopened.get("uid-1").and_then(|record| record.run);
        assert_eq!(run, Some(running(0)));
        assert_eq!(reopened.busy_hosts(), 1);
    }

    fn finish(record: &mut HostRecord) {
        if let Some(run) = record.run.as_mut() {
            run.outcome = Some(RunOutcome::Done);
        }
    }

    #[test]
    fn the_busy_count_follows_runs_as_they_start_end_and_go() {
        let records = Records::in_memory();
        let change = |uid: &str, change: fn(&mut HostRecord)| {
            records
                .update(uid, change)
                .unwrap_or_else(|e| panic!("{e}"));
        };

        change("uid-1", |record| record.run = Some(running(0)));
        change("uid-2", |record| record.run = Some(running(0)));
        change("uid-3", |record| record.power_failed = true);
        assert_eq!(records.busy_hosts(), 2);

        change("uid-1", |record| record.run = Some(running(1)));
        change("uid-2", finish);
        assert_eq!(records.busy_hosts(), 1);

        change("uid-2", |record| record.run = Some(running(0)));
        records.remove("uid-1").unwrap_or_else(|e| panic!("{e}"));
        records.remove("uid-1").unwrap_or_else(|e| panic!("{e}"));
        records.remove("uid-3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.busy_hosts(), 1);

        change("uid-2", finish);
        assert_eq!(records.busy_hosts(), 0);
    }

    #[test]
    fn removed_hosts_stay_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let records = Records::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        records
            .update("uid-1", |record| record.power_failed = true)
            .unwrap_or_else(|e| panic!("{e}"));

        records.remove("uid-1").unwrap_or_else(|e| panic!("{e}"));

        let reopened = Records::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reopened.get("uid-1"), None);
    }

    #[test]
    fn a_corrupt_record_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("uid-1.json"), b"{not json")
            .unwrap_or_else(|e| panic!("{e}"));

        let error = Records::open(dir.path()).err().map(|e| e.to_string());

        assert!(error.is_some_and(|text| text.contains("uid-1.json")));
    }
}
