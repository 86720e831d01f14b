//! The write-ahead log: one append-only file holding every committed write.
//!
//! Each record is framed as `len (u32 LE) | crc32 (u32 LE) | JSON payload`.
//! A dedicated thread appends records and calls `fdatasync` once per batch
//! (group commit): writers that arrive while a sync is running are written
//! and synced together by the next one. Only after the sync succeeds are the
//! writes acknowledged and published to watchers, so an acknowledged write
//! survives `kill -9`. When the file grows well past the live data it is
//! rewritten as a snapshot (write to a temporary file, fsync, rename, fsync
//! the directory) so the rewrite is atomic.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::store::{Change, StoredObject};

/// Failures of the log file.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log file could not be opened or created.
    #[error("cannot open the store log {path}")]
    Open {
        /// Log path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be read back at start.
    #[error("cannot read the store log {path}")]
    Read {
        /// Log path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be appended or synced.
    #[error("cannot append to the store log")]
    Append(#[source] std::io::Error),
    /// A record in the middle of the log is corrupt (not a torn tail).
    #[error("store log record at offset {offset} is corrupt: {reason}")]
    Corrupt {
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Identifies one stored object: (storage key, namespace, name).
pub type ObjectKey = (String, String, String);

/// The content of the log after replay.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Highest resourceVersion ever committed.
    pub rv: u64,
    /// Live objects as compact JSON.
    pub objects: HashMap<ObjectKey, Box<str>>,
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    rv: u64,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    ns: String,
    #[serde(default)]
    name: String,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

/// Frames one record (a put when `object` is some, a delete otherwise).
pub fn frame(rv: u64, key: &ObjectKey, object: Option<&str>) -> Vec<u8> {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let payload = format!(
        "{{\"rv\":{rv},\"key\":{},\"ns\":{},\"name\":{},\"object\":{}}}",
        quote(&key.0),
        quote(&key.1),
        quote(&key.2),
        object.unwrap_or("null")
    );
    frame_payload(payload.as_bytes())
}

fn frame_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the log, truncating a torn tail left by a crash during an append.
pub fn replay(path: &Path) -> Result<Replayed, WalError> {
    let read_err = |source| WalError::Read {
        path: path.to_path_buf(),
        source,
    };
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(read_err)?;
    if created {
        sync_parent(path).map_err(read_err)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;

    let mut replayed = Replayed::default();
    let mut offset = 0usize;
    while let Some((payload, next)) = next_frame(&bytes, offset) {
        apply_record(&mut replayed, payload, offset as u64)?;
        offset = next;
    }

    if offset < bytes.len() {
        tracing::warn!(
            offset,
            dropped = bytes.len() - offset,
            "truncating torn tail of the store log"
        );
        file.set_len(offset as u64).map_err(read_err)?;
        file.sync_all().map_err(read_err)?;
    }
    Ok(replayed)
}

/// Makes a created or renamed file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// The payload at `offset` and the next offset, or `None` at the end or at a torn record.
fn next_frame(bytes: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(offset..offset + 8)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(offset + 8..offset + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, offset + 8 + len))
}

fn apply_record(replayed: &mut Replayed, payload: &[u8], offset: u64) -> Result<(), WalError> {
    let record: RecordIn<'_> = serde_json::from_slice(payload).map_err(|e| WalError::Corrupt {
        offset,
        reason: e.to_string(),
    })?;
    replayed.rv = replayed.rv.max(record.rv);
    let Some(key) = record.key else {
        return Ok(());
    };
    let key = (key, record.ns, record.name);
    match record.object {
        Some(raw) if raw.get() != "null" => {
            replayed.objects.insert(key, raw.get().into());
        }
        _ => {
            replayed.objects.remove(&key);
        }
    }
    Ok(())
}

/// A live object handed to a snapshot.
pub type SnapshotEntry = (ObjectKey, Arc<StoredObject>);

/// What the log thread needs from the store.
pub trait WalOwner: Send + Sync {
    /// The batch is durable: make it visible to watchers.
    fn durable(&self, changes: Vec<Arc<Change>>);
    /// Current resourceVersion and every live object, for compaction.
    fn snapshot(&self) -> (u64, Vec<SnapshotEntry>);
}

/// One write waiting for its sync.
pub struct Pending {
    /// Framed record.
    pub frame: Vec<u8>,
    /// Opaque change published once durable.
    pub change: Arc<Change>,
    /// Completed after the sync.
    pub ack: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Handle to the log thread.
pub struct Wal {
    sender: Sender<Pending>,
}

impl Wal {
    /// Opens the log for appending and starts the commit thread.
    pub fn start(
        path: &Path,
        compact_bytes: u64,
        owner: Weak<dyn WalOwner>,
    ) -> Result<Self, WalError> {
        let file = open_append(path)?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("apiserver-wal".to_string())
            .spawn(move || commit_loop(receiver, file, path, compact_bytes, owner))
            .map_err(|source| WalError::Open {
                path: PathBuf::new(),
                source,
            })?;
        Ok(Self { sender })
    }

    /// Queues a record; must be called in resourceVersion order.
    pub fn append(&self, pending: Pending) -> Result<(), Pending> {
        self.sender.send(pending).map_err(|e| e.0)
    }
}

fn open_append(path: &Path) -> Result<File, WalError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| WalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    file.seek(SeekFrom::End(0))
        .map_err(|source| WalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(file)
}

fn commit_loop(
    receiver: Receiver<Pending>,
    mut file: File,
    path: PathBuf,
    compact_bytes: u64,
    owner: Weak<dyn WalOwner>,
) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut threshold = compact_bytes;
    let mut failed: Option<String> = None;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter());

        let result = match &failed {
            Some(reason) => Err(reason.clone()),
            None => write_batch(&mut file, &batch).map_err(|e| e.to_string()),
        };
        if let Err(reason) = &result {
            tracing::error!(error = %reason, "store log append failed; refusing further writes");
            failed = Some(reason.clone());
        }
        size += batch.iter().map(|p| p.frame.len() as u64).sum::<u64>();
        finish_batch(batch, &result, &owner);

        if result.is_ok() && size > threshold {
            match compact(&path, &owner) {
                Ok((new_file, new_size)) => {
                    file = new_file;
                    size = new_size;
                    threshold = compact_bytes.max(new_size * 4);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store log compaction failed; continuing with the old log")
                }
            }
        }
    }
}

fn write_batch(file: &mut File, batch: &[Pending]) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(batch.iter().map(|p| p.frame.len()).sum());
    for pending in batch {
        buffer.extend_from_slice(&pending.frame);
    }
    file.write_all(&buffer)?;
    file.sync_data()
}

fn finish_batch(batch: Vec<Pending>, result: &Result<(), String>, owner: &Weak<dyn WalOwner>) {
    let mut acks = Vec::with_capacity(batch.len());
    let mut changes = Vec::with_capacity(batch.len());
    for pending in batch {
        changes.push(pending.change);
        acks.push(pending.ack);
    }
    if result.is_ok()
        && let Some(owner) = owner.upgrade()
    {
        owner.durable(changes);
    }
    for ack in acks {
        let _ = ack.send(result.clone());
    }
}

fn compact(path: &Path, owner: &Weak<dyn WalOwner>) -> Result<(File, u64), WalError> {
    let Some(owner) = owner.upgrade() else {
        return Err(WalError::Append(std::io::Error::other(
            "store is shutting down",
        )));
    };
    let (rv, objects) = owner.snapshot();
    let temporary = path.with_extension("log.tmp");
    let mut out = File::create(&temporary).map_err(WalError::Append)?;
    let mut buffer = frame_payload(format!("{{\"rv\":{rv}}}").as_bytes());
    for (key, json) in &objects {
        buffer.extend_from_slice(&frame(rv, key, Some(&json.json)));
    }
    out.write_all(&buffer).map_err(WalError::Append)?;
    out.sync_all().map_err(WalError::Append)?;
    std::fs::rename(&temporary, path).map_err(WalError::Append)?;
    sync_parent(path).map_err(WalError::Append)?;
    tracing::info!(
        objects = objects.len(),
        bytes = buffer.len(),
        "compacted the store log"
    );
    Ok((open_append(path)?, buffer.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        (
            "/configmaps".to_string(),
            "default".to_string(),
            name.to_string(),
        )
    }

    #[test]
    fn replay_applies_puts_and_deletes_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.log");
        let mut bytes = frame(1, &key("a"), Some("{\"x\":1}"));
        bytes.extend(frame(2, &key("b"), Some("{\"x\":2}")));
        bytes.extend(frame(3, &key("a"), None));
        let torn = frame(4, &key("c"), Some("{\"x\":3}"));
        bytes.extend(&torn[..torn.len() - 3]);
        std::fs::write(&path, &bytes).expect("write");

        let replayed = replay(&path).expect("replay");
        assert_eq!(replayed.rv, 3);
        assert_eq!(replayed.objects.len(), 1);
        assert_eq!(&*replayed.objects[&key("b")], "{\"x\":2}");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            (bytes.len() - torn.len() + 3) as u64
        );
    }

    #[test]
    fn corrupt_checksum_stops_replay_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.log");
        let mut bytes = frame(1, &key("a"), Some("{}"));
        let mut second = frame(2, &key("b"), Some("{}"));
        second[5] ^= 0xff;
        bytes.extend(second);
        std::fs::write(&path, &bytes).expect("write");
        let replayed = replay(&path).expect("replay");
        assert_eq!(replayed.rv, 1);
    }
}
