//! The agent API's hosts and commands on disk: one file per host, written when that host
//! changes, so that the cost of saving a change does not grow with the fleet. (Saving the whole
//! state on every change made each save at 10,000 hosts serialise all 10,000.)
//!
//! A file is named after the hex of its host's name, so any name makes a valid file name, and is
//! replaced atomically. A state directory from before this layout holds one `agent-api.json`
//! with every host: it is split into host files on the first start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use ingot_agent_api::{AgentApi, HostRecord, Snapshot};

use crate::BackendError;
use crate::files::{remove_if_present, write_atomically};

/// Directory in the state directory holding one file per agent API host.
const HOSTS_DIR: &str = "agent-hosts";

/// The single file earlier versions kept the whole agent API state in.
const LEGACY_FILE: &str = "agent-api.json";

/// How long to gather changes before saving them: a burst of reports becomes one round of writes.
const GATHER: Duration = Duration::from_millis(20);

/// How long to wait before trying again to save hosts whose files could not be written.
const RETRY: Duration = Duration::from_secs(1);

/// Loads the saved hosts from `state_dir`, first splitting a legacy single-file state into host
/// files.
///
/// # Errors
/// [`BackendError::Snapshot`] when a file cannot be read, parsed or written.
pub fn load(state_dir: &Path) -> Result<Snapshot, BackendError> {
    let dir = state_dir.join(HOSTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| state_error(&dir, e))?;
    migrate_legacy(state_dir, &dir)?;

    let mut hosts = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| state_error(&dir, e))? {
        let path = entry.map_err(|e| state_error(&dir, e))?.path();
        let Some(host) = host_of(&path) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| state_error(&path, e))?;
        let record = serde_json::from_slice(&bytes).map_err(|e| state_error(&path, e))?;
        hosts.insert(host, record);
    }
    Ok(Snapshot { hosts })
}

/// Saves each change of the agent API's hosts in `state_dir` until the API is gone, and tells
/// the API what is saved so that it can acknowledge the agents' final reports.
pub async fn persist(agent: Weak<AgentApi>, state_dir: PathBuf) {
    let dir = state_dir.join(HOSTS_DIR);
    let Some(mut changes) = agent.upgrade().map(|agent| agent.changes()) else {
        return;
    };
    let mut unsaved = BTreeMap::new();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(GATHER).await;
        let Some(agent) = agent.upgrade() else {
            return;
        };
        // Every change up to this generation is in the records taken right after.
        let generation = *changes.borrow_and_update();
        unsaved.extend(agent.take_changes());
        // Saving drops a host from `unsaved`; a host whose file could not be written stays.
        unsaved.retain(|host, record| save_host(&dir, host, record.as_ref()).is_err());
        if unsaved.is_empty() {
            agent.saved(generation);
        } else {
            // Nothing newer is acknowledged until these are saved; try them again soon.
            changes.mark_changed();
            tokio::time::sleep(RETRY).await;
        }
    }
}

fn save_host(dir: &Path, host: &str, record: Option<&HostRecord>) -> std::io::Result<()> {
    let path = dir.join(file_name(host));
    let result = match record {
        Some(record) => write_atomically(&path, &serde_json::to_vec(record)?),
        None => remove_if_present(&path),
    };
    if let Err(error) = &result {
        tracing::warn!(path = %path.display(), error = %error, "cannot save the agent API state of a host");
    }
    result
}

fn migrate_legacy(state_dir: &Path, dir: &Path) -> Result<(), BackendError> {
    let legacy = state_dir.join(LEGACY_FILE);
    let bytes = match std::fs::read(&legacy) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(state_error(&legacy, e)),
    };
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| state_error(&legacy, e))?;
    for (host, record) in &snapshot.hosts {
        let path = dir.join(file_name(host));
        let bytes = serde_json::to_vec(record).map_err(|e| state_error(&path, e))?;
        write_atomically(&path, &bytes).map_err(|e| state_error(&path, e))?;
    }
    std::fs::remove_file(&legacy).map_err(|e| state_error(&legacy, e))
}

fn file_name(host: &str) -> String {
    format!("{}.json", hex::encode(host))
}

/// The host a file is for; `None` for other files, such as an interrupted write's temporary.
fn host_of(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".json")?;
    String::from_utf8(hex::decode(stem).ok()?).ok()
}

fn state_error(
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackendError {
    BackendError::Snapshot {
        path: path.to_owned(),
        source: source.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &str) -> HostRecord {
        HostRecord {
            token_sha256: token.to_owned(),
            macs: vec!["52:54:00:00:00:01".to_owned()],
            commands: Vec::new(),
            media_sha256: None,
        }
    }

    #[test]
    fn any_host_name_round_trips_through_its_file_name() {
        for host in ["3f1c0d3a-uid", "default/node-0", "..", "ünïcode host"] {
            let path = Path::new("/state").join(file_name(host));
            assert_eq!(host_of(&path).as_deref(), Some(host));
        }
        assert_eq!(host_of(Path::new("/state/6869.json.tmp")), None);
        assert_eq!(host_of(Path::new("/state/not-hex.json")), None);
    }

    #[test]
    fn saved_and_forgotten_hosts_are_what_the_next_start_loads() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = state.path().join(HOSTS_DIR);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));

        save_host(&dir, "a", Some(&record("old"))).unwrap_or_else(|e| panic!("{e}"));
        save_host(&dir, "a", Some(&record("new"))).unwrap_or_else(|e| panic!("{e}"));
        save_host(&dir, "b", Some(&record("b"))).unwrap_or_else(|e| panic!("{e}"));
        save_host(&dir, "b", None).unwrap_or_else(|e| panic!("{e}"));
        save_host(&dir, "never-saved", None).unwrap_or_else(|e| panic!("{e}"));

        let loaded = load(state.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.hosts.len(), 1);
        assert_eq!(loaded.hosts.get("a"), Some(&record("new")));
    }

    #[test]
    fn a_legacy_single_file_state_is_split_into_host_files_once() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let legacy = Snapshot {
            hosts: [("a".to_owned(), record("a")), ("b".to_owned(), record("b"))].into(),
        };
        let bytes = serde_json::to_vec(&legacy).unwrap_or_default();
        std::fs::write(state.path().join(LEGACY_FILE), bytes).unwrap_or_else(|e| panic!("{e}"));

        let first = load(state.path()).unwrap_or_else(|e| panic!("{e}"));
        let again = load(state.path()).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(first, legacy);
        assert_eq!(again, legacy);
        assert!(!state.path().join(LEGACY_FILE).exists());
    }

    #[test]
    fn an_unreadable_host_file_is_an_error_naming_it() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = state.path().join(HOSTS_DIR);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let broken = dir.join(file_name("a"));
        std::fs::write(&broken, b"{not json").unwrap_or_else(|e| panic!("{e}"));

        let error = load(state.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();

        assert!(error.contains(&broken.display().to_string()), "{error}");
    }
}
