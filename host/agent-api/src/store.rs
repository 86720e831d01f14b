//! Hosts, their tokens and their command queues: the state behind the agent API.
//!
//! Kept free of HTTP so the rules are in one place: a command belongs to exactly one host,
//! is delivered only to a caller that proved to be that host, and a report is accepted only
//! for a command of the reporting host. The whole state serialises to a [`Snapshot`] the
//! operator stores, so queues survive an operator restart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use ingot_agent::protocol::{
    Command, CommandEnvelope, CommandId, CommandResult, Hello, Progress, Report,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::liveness::Liveness;

/// Error of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The host is not registered.
    #[error("host {0:?} is not registered with the agent API")]
    UnknownHost(String),
    /// The host has no command with this id.
    #[error("host {host:?} has no command {id:?}")]
    UnknownCommand {
        /// Host name.
        host: String,
        /// Command id.
        id: CommandId,
    },
    /// The id is already used by a different command of the same host.
    #[error("command id {id:?} of host {host:?} is already used by a different command")]
    IdReused {
        /// Host name.
        host: String,
        /// Command id.
        id: CommandId,
    },
    /// The agent's MAC addresses are not the host's.
    #[error("none of the agent's MAC addresses belongs to host {0:?}")]
    MacMismatch(String),
}

/// Where a command is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum CommandState {
    /// Queued, not yet handed to the agent.
    Pending,
    /// Handed to the agent, no report yet.
    Delivered,
    /// The agent reported progress.
    Running {
        /// Latest progress.
        progress: Progress,
    },
    /// Finished successfully.
    Succeeded {
        /// The agent's result.
        result: Box<CommandResult>,
    },
    /// Finished with an error.
    Failed {
        /// The agent's message.
        error: String,
    },
    /// Given up: the agent went silent before finishing it.
    Lost {
        /// How long nothing had been heard from the agent when it was given up.
        silent_seconds: u64,
    },
}

impl CommandState {
    /// True once the command succeeded, failed or was lost.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::Lost { .. }
        )
    }
}

/// One queued command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    /// Operator-chosen id.
    pub id: CommandId,
    /// The command.
    pub command: Command,
    /// Its state.
    pub state: CommandState,
}

/// One host known to the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    /// SHA-256 of the host's token, hex; the token itself is never stored.
    pub token_sha256: String,
    /// MAC addresses the agent must show (any one of them); empty accepts any.
    pub macs: Vec<String>,
    /// Commands in the order they were queued.
    pub commands: Vec<CommandRecord>,
    /// SHA-256 of the id of the host's current deploy media, hex, so that a restarted API can
    /// serve it again to a machine that boots from it; the id itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_sha256: Option<String>,
}

/// The persistent state of the agent API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Hosts by name.
    pub hosts: BTreeMap<String, HostRecord>,
}

/// The live state: the snapshot plus which hosts said hello since this process started, when
/// their agents were last heard from, and which hosts' records changed since they were last
/// taken to be saved.
#[derive(Debug, Default)]
pub struct Store {
    snapshot: Snapshot,
    greeted: HashSet<String>,
    liveness: Liveness,
    changed: BTreeSet<String>,
}

/// Hex SHA-256 of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Restores a store from a snapshot at `now`; every agent counts as heard at `now`.
    pub fn from_snapshot(snapshot: Snapshot, now: Instant) -> Self {
        Self {
            snapshot,
            greeted: HashSet::new(),
            liveness: Liveness::new(now),
            changed: BTreeSet::new(),
        }
    }

    /// The persistent part of the state.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The hosts whose record changed since the last call, each with its record now (`None`
    /// once the host is forgotten), so that a caller can save only what changed.
    pub fn take_changes(&mut self) -> Vec<(String, Option<HostRecord>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|host| {
                let record = self.snapshot.hosts.get(&host).cloned();
                (host, record)
            })
            .collect()
    }

    /// Registers (or re-keys) a host; its queued commands are kept.
    pub fn register_host(&mut self, host: &str, macs: &[String], token: &str) {
        let macs = macs.iter().map(|m| m.to_lowercase()).collect();
        let token_sha256 = token_hash(token);
        let record = self
            .snapshot
            .hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostRecord {
                token_sha256: String::new(),
                macs: Vec::new(),
                commands: Vec::new(),
                media_sha256: None,
            });
        record.token_sha256 = token_sha256;
        record.macs = macs;
        self.changed.insert(host.to_owned());
        self.greeted.remove(host);
        self.liveness.restart(host, Instant::now());
    }

    /// Records the SHA-256 of the id of the host's deploy media, replacing earlier media.
    pub fn set_media(&mut self, host: &str, media_sha256: &str) -> Result<(), Error> {
        self.host_mut(host)?.media_sha256 = Some(media_sha256.to_owned());
        Ok(())
    }

    /// The host whose deploy media has the id with SHA-256 `media_sha256`, and its MACs.
    pub fn media_owner(&self, media_sha256: &str) -> Option<(String, Vec<String>)> {
        self.snapshot
            .hosts
            .iter()
            .find(|(_, record)| record.media_sha256.as_deref() == Some(media_sha256))
            .map(|(host, record)| (host.clone(), record.macs.clone()))
    }

    /// The host with deploy media that boots the NIC with `mac` (lower-case), its media's id
    /// SHA-256 and its MACs.
    pub fn media_of_mac(&self, mac: &str) -> Option<(String, String, Vec<String>)> {
        self.snapshot.hosts.iter().find_map(|(host, record)| {
            let media = record.media_sha256.clone()?;
            record
                .macs
                .iter()
                .any(|known| known == mac)
                .then(|| (host.clone(), media, record.macs.clone()))
        })
    }

    /// Drops every command queued for the host, finished or not.
    pub fn drop_commands(&mut self, host: &str) {
        if let Some(record) = self.snapshot.hosts.get_mut(host)
            && !record.commands.is_empty()
        {
            record.commands.clear();
            self.changed.insert(host.to_owned());
        }
    }

    /// Forgets a host and its commands.
    pub fn remove_host(&mut self, host: &str) {
        if self.snapshot.hosts.remove(host).is_some() {
            self.changed.insert(host.to_owned());
        }
        self.greeted.remove(host);
        self.liveness.forget(host);
    }

    /// The signs of life of the hosts' agents, for the API to record requests in.
    pub fn liveness(&mut self) -> &mut Liveness {
        &mut self.liveness
    }

    /// Whether `token` is the token of `host`, compared in constant time. Unknown hosts are
    /// compared against a dummy hash so timing does not reveal which hosts exist.
    pub fn authenticate(&self, host: &str, token: &str) -> bool {
        let presented = token_hash(token);
        let (expected, known) = match self.snapshot.hosts.get(host) {
            Some(record) => (record.token_sha256.as_str(), true),
            None => (
                "0000000000000000000000000000000000000000000000000000000000000000",
                false,
            ),
        };
        let equal: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        equal && known
    }

    /// Records an authenticated agent's hello after checking its MAC addresses.
    pub fn hello(&mut self, host: &str, hello: &Hello) -> Result<(), Error> {
        let record = self.host(host)?;
        let shown: HashSet<String> = hello.macs.iter().map(|m| m.to_lowercase()).collect();
        if !record.macs.is_empty() && !record.macs.iter().any(|m| shown.contains(m)) {
            return Err(Error::MacMismatch(host.to_owned()));
        }
        self.greeted.insert(host.to_owned());
        Ok(())
    }

    /// Whether the host's agent said hello since this process started.
    pub fn greeted(&self, host: &str) -> bool {
        self.greeted.contains(host)
    }

    /// Queues a command. Queuing the same id with the same command again is a no-op, so an
    /// operator can re-issue its commands after a restart without duplicating them.
    pub fn enqueue(&mut self, host: &str, id: &str, command: Command) -> Result<(), Error> {
        let record = self.host_mut(host)?;
        if let Some(existing) = record.commands.iter().find(|c| c.id == id) {
            if existing.command == command {
                return Ok(());
            }
            return Err(Error::IdReused {
                host: host.to_owned(),
                id: id.to_owned(),
            });
        }
        record.commands.push(CommandRecord {
            id: id.to_owned(),
            command,
            state: CommandState::Pending,
        });
        Ok(())
    }

    /// The state of one command.
    pub fn status(&self, host: &str, id: &str) -> Result<&CommandState, Error> {
        let record = self.host(host)?;
        record
            .commands
            .iter()
            .find(|c| c.id == id)
            .map(|c| &c.state)
            .ok_or_else(|| Error::UnknownCommand {
                host: host.to_owned(),
                id: id.to_owned(),
            })
    }

    /// The state of one command at `now`. An unfinished command whose agent has been silent
    /// for longer than `silence_limit` is given up as lost first, so it ends instead of
    /// waiting for an agent that is gone.
    pub fn follow(
        &mut self,
        host: &str,
        id: &str,
        silence_limit: Duration,
        now: Instant,
    ) -> Result<&CommandState, Error> {
        let silence = self.liveness.silence(host, now);
        let unfinished = !self.status(host, id)?.is_final();
        if unfinished && silence > silence_limit {
            self.command_mut(host, id)?.state = CommandState::Lost {
                silent_seconds: silence.as_secs(),
            };
        }
        self.status(host, id)
    }

    /// Drops a command (normally once its result has been consumed).
    pub fn remove_command(&mut self, host: &str, id: &str) -> Result<(), Error> {
        self.host_mut(host)?.commands.retain(|c| c.id != id);
        Ok(())
    }

    /// The first unfinished command of the host, marked delivered. An unfinished command
    /// that was already delivered is delivered again: the agent answers from its ledger.
    pub fn next(&mut self, host: &str) -> Result<Option<CommandEnvelope>, Error> {
        let record = self.host(host)?;
        let Some(command) = record.commands.iter().find(|c| !c.state.is_final()) else {
            return Ok(None);
        };
        let envelope = CommandEnvelope {
            id: command.id.clone(),
            command: command.command.clone(),
        };
        if command.state == CommandState::Pending {
            self.command_mut(host, &envelope.id)?.state = CommandState::Delivered;
        }
        Ok(Some(envelope))
    }

    /// Applies a report from the host's agent. Reports after the final one are ignored, so a
    /// repeated final report is harmless.
    pub fn report(&mut self, host: &str, id: &str, report: Report) -> Result<(), Error> {
        let command = self.command_mut(host, id)?;
        if command.state.is_final() {
            return Ok(());
        }
        command.state = match report {
            Report::Running { progress } => CommandState::Running { progress },
            Report::Succeeded { result } => CommandState::Succeeded { result },
            Report::Failed { error } => CommandState::Failed { error },
        };
        Ok(())
    }

    fn command_mut(&mut self, host: &str, id: &str) -> Result<&mut CommandRecord, Error> {
        self.host_mut(host)?
            .commands
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::UnknownCommand {
                host: host.to_owned(),
                id: id.to_owned(),
            })
    }

    fn host(&self, host: &str) -> Result<&HostRecord, Error> {
        self.snapshot
            .hosts
            .get(host)
            .ok_or_else(|| Error::UnknownHost(host.to_owned()))
    }

    /// The host's record, counted as changed.
    fn host_mut(&mut self, host: &str) -> Result<&mut HostRecord, Error> {
        let record = self
            .snapshot
            .hosts
            .get_mut(host)
            .ok_or_else(|| Error::UnknownHost(host.to_owned()))?;
        self.changed.insert(host.to_owned());
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let mut store = Store::default();
        store.register_host("a", &["AA:00:00:00:00:01".into()], "token-a");
        store.register_host("b", &[], "token-b");
        store
    }

    fn hello(macs: &[&str]) -> Hello {
        Hello {
            version: 1,
            macs: macs.iter().map(|m| (*m).to_owned()).collect(),
            agent_version: "test".into(),
        }
    }

    #[test]
    fn tokens_only_open_their_own_host() {
        let store = store();
        assert!(store.authenticate("a", "token-a"));
        assert!(!store.authenticate("a", "token-b"));
        assert!(!store.authenticate("b", "token-a"));
        assert!(!store.authenticate("nobody", "token-a"));
    }

    #[test]
    fn hello_requires_one_of_the_hosts_macs() {
        let mut store = store();
        assert_eq!(
            store.hello("a", &hello(&["bb:00:00:00:00:09"])),
            Err(Error::MacMismatch("a".into()))
        );
        assert!(!store.greeted("a"));
        assert_eq!(
            store.hello("a", &hello(&["bb:00:00:00:00:09", "aa:00:00:00:00:01"])),
            Ok(())
        );
        assert!(store.greeted("a"));
    }

    #[test]
    fn commands_are_delivered_only_to_their_host_and_in_order() {
        let mut store = store();
        store
            .enqueue("a", "1", Command::Inventory)
            .unwrap_or_default();
        store.enqueue("a", "2", Command::Sync).unwrap_or_default();

        assert_eq!(store.next("b").ok().flatten(), None);
        assert_eq!(
            store.next("a").ok().flatten().map(|e| e.id),
            Some("1".into())
        );
        assert_eq!(
            store.report("b", "1", Report::Failed { error: "x".into() }),
            Err(Error::UnknownCommand {
                host: "b".into(),
                id: "1".into()
            })
        );
        assert_eq!(store.status("a", "1"), Ok(&CommandState::Delivered));

        store
            .report(
                "a",
                "1",
                Report::Succeeded {
                    result: Box::new(CommandResult::Synced),
                },
            )
            .unwrap_or_default();
        store
            .report(
                "a",
                "1",
                Report::Failed {
                    error: "late".into(),
                },
            )
            .unwrap_or_default();

        assert!(matches!(
            store.status("a", "1"),
            Ok(CommandState::Succeeded { .. })
        ));
        assert_eq!(
            store.next("a").ok().flatten().map(|e| e.id),
            Some("2".into())
        );
    }

    #[test]
    fn re_enqueueing_is_idempotent_but_an_id_cannot_change_meaning() {
        let mut store = store();
        assert_eq!(store.enqueue("a", "1", Command::Inventory), Ok(()));
        assert_eq!(store.enqueue("a", "1", Command::Inventory), Ok(()));
        assert_eq!(
            store.enqueue("a", "1", Command::Sync),
            Err(Error::IdReused {
                host: "a".into(),
                id: "1".into()
            })
        );
        assert_eq!(store.snapshot().hosts["a"].commands.len(), 1);
    }

    #[test]
    fn only_hosts_that_changed_are_taken_to_be_saved_and_only_once() {
        let mut store = store();
        store.take_changes();

        assert_eq!(store.enqueue("a", "1", Command::Inventory), Ok(()));
        let _ = store.status("a", "1");
        store.remove_host("b");
        let changes = store.take_changes();

        let hosts: Vec<(&str, bool)> = changes
            .iter()
            .map(|(host, record)| (host.as_str(), record.is_some()))
            .collect();
        assert_eq!(hosts, [("a", true), ("b", false)]);
        assert_eq!(changes[0].1.as_ref().map(|r| r.commands.len()), Some(1));
        assert!(store.take_changes().is_empty());

        let _ = store.next("a");
        let _ = store.next("a");
        assert_eq!(
            store.take_changes().len(),
            1,
            "delivery is a change, a redelivery is not"
        );
        assert!(store.take_changes().is_empty());
    }

    const LIMIT: Duration = Duration::from_secs(60);
    const SECOND: Duration = Duration::from_secs(1);

    /// Host "b" with a command delivered to its agent at `start`.
    fn store_running_at(start: Instant) -> Store {
        let mut store = Store::from_snapshot(Snapshot::default(), start);
        store.register_host("b", &[], "token-b");
        store.liveness().heard("b", start);
        store
            .enqueue("b", "write", Command::Sync)
            .unwrap_or_default();
        store.next("b").unwrap_or_default();
        store
    }

    fn progress(done_bytes: u64) -> Report {
        Report::Running {
            progress: Progress {
                done_bytes,
                ..Progress::default()
            },
        }
    }

    #[test]
    fn a_command_whose_agent_went_silent_past_the_limit_is_lost_for_good() {
        let start = Instant::now();
        let mut store = store_running_at(start);

        let at_limit = store.follow("b", "write", LIMIT, start + LIMIT).cloned();
        let past_limit = store
            .follow("b", "write", LIMIT, start + LIMIT + SECOND)
            .cloned();
        store
            .report(
                "b",
                "write",
                Report::Succeeded {
                    result: Box::new(CommandResult::Synced),
                },
            )
            .unwrap_or_default();

        assert_eq!(at_limit, Ok(CommandState::Delivered));
        assert_eq!(past_limit, Ok(CommandState::Lost { silent_seconds: 61 }));
        assert_eq!(
            store.status("b", "write"),
            Ok(&CommandState::Lost { silent_seconds: 61 }),
            "a report from an agent given up on changes nothing"
        );
        assert_eq!(store.next("b"), Ok(None));
    }

    #[test]
    fn an_agent_that_keeps_reporting_is_never_lost_however_long_the_command_runs() {
        let start = Instant::now();
        let mut store = store_running_at(start);

        for minute in 1..=120 {
            let now = start + minute * LIMIT;
            store.liveness().heard("b", now - SECOND);
            store
                .report("b", "write", progress(u64::from(minute)))
                .unwrap_or_default();
            let state = store.follow("b", "write", LIMIT, now).cloned();
            assert!(
                matches!(state, Ok(CommandState::Running { .. })),
                "minute {minute}: {state:?}"
            );
        }
    }

    #[test]
    fn finished_commands_stay_as_they_ended_whatever_the_silence() {
        let start = Instant::now();
        let mut store = store_running_at(start);
        store
            .report(
                "b",
                "write",
                Report::Failed {
                    error: "disk full".into(),
                },
            )
            .unwrap_or_default();

        let state = store.follow("b", "write", LIMIT, start + 100 * LIMIT);

        assert_eq!(
            state,
            Ok(&CommandState::Failed {
                error: "disk full".into()
            })
        );
    }

    #[test]
    fn after_a_restart_every_agent_gets_a_full_limit_to_come_back() {
        let start = Instant::now();
        let store = store_running_at(start);
        let snapshot = store.snapshot().clone();
        let restart = start + 10 * LIMIT;

        let mut restored = Store::from_snapshot(snapshot, restart);

        assert_eq!(
            restored
                .follow("b", "write", LIMIT, restart + LIMIT)
                .cloned(),
            Ok(CommandState::Delivered)
        );
        assert!(matches!(
            restored.follow("b", "write", LIMIT, restart + LIMIT + SECOND),
            Ok(CommandState::Lost { .. })
        ));
    }

    #[test]
    fn a_lost_command_survives_the_snapshot() {
        let start = Instant::now();
        let mut store = store_running_at(start);
        let lost = store.follow("b", "write", LIMIT, start + 2 * LIMIT).is_ok();
        assert!(lost);
        let json = serde_json::to_string(store.snapshot()).unwrap_or_default();

        let snapshot: Snapshot = serde_json::from_str(&json).unwrap_or_default();
        let restored = Store::from_snapshot(snapshot, Instant::now());

        assert_eq!(
            restored.status("b", "write"),
            Ok(&CommandState::Lost {
                silent_seconds: 120
            })
        );
    }

    #[test]
    fn a_restored_snapshot_redelivers_unfinished_commands_and_needs_a_new_hello() {
        let mut store = store();
        store.hello("b", &hello(&[])).unwrap_or_default();
        store
            .enqueue("b", "write", Command::Sync)
            .unwrap_or_default();
        store.next("b").unwrap_or_default();
        let json = serde_json::to_string(store.snapshot()).unwrap_or_default();

        let snapshot: Snapshot = serde_json::from_str(&json).unwrap_or_default();
        let mut restored = Store::from_snapshot(snapshot, Instant::now());

        assert!(!restored.greeted("b"));
        assert!(restored.authenticate("b", "token-b"));
        assert_eq!(
            restored.next("b").ok().flatten().map(|e| e.id),
            Some("write".into())
        );
        assert!(!json.contains("token-b"), "tokens are stored hashed");
    }
}
