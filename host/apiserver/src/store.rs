//! The object store: every object as compact JSON in memory, a global
//! resourceVersion counter, a bounded log of recent changes for watches, and
//! the write-ahead log underneath for durability.
//!
//! Writes are compare-and-swap on the object's resourceVersion: callers read,
//! compute the new object outside the lock, and commit with the version they
//! read; a concurrent write makes the commit fail with `Stale` and the caller
//! retries. A commit returns once the write-ahead log has synced it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::Value;
use tokio::sync::watch;

use crate::registry::Registry;
use crate::wal::{self, ObjectKey, Pending, SnapshotEntry, Wal, WalError, WalOwner};

/// Storage key of CustomResourceDefinitions; writes to it rebuild the registry.
pub const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";

/// One stored object: its JSON plus the few fields indexes need.
#[derive(Debug)]
pub struct StoredObject {
    /// resourceVersion of this revision.
    pub rv: u64,
    /// metadata.uid.
    pub uid: Box<str>,
    /// metadata.labels, for label selectors without parsing.
    pub labels: BTreeMap<String, String>,
    /// uids from metadata.ownerReferences, for garbage collection.
    pub owners: Vec<Box<str>>,
    /// Whether metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The object as compact JSON (with resourceVersion set).
    pub json: Box<str>,
}

impl StoredObject {
    fn new(rv: u64, value: &Value) -> Self {
        let meta = value.get("metadata");
        let text = |p: &str| {
            meta.and_then(|m| m.get(p))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("uid")?.as_str().map(Into::into))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            rv,
            uid: text("uid").into(),
            labels,
            owners,
            deleting: meta.and_then(|m| m.get("deletionTimestamp")).is_some(),
            json: value.to_string().into(),
        }
    }

    fn from_json(json: Box<str>) -> Option<Self> {
        let value: Value = serde_json::from_str(&json).ok()?;
        let rv = value
            .pointer("/metadata/resourceVersion")?
            .as_str()?
            .parse()
            .ok()?;
        let mut stored = Self::new(rv, &value);
        stored.json = json;
        Some(stored)
    }

    /// The object as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

/// One committed write, as watches see it.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion of the write.
    pub rv: u64,
    /// Created, updated or removed.
    pub kind: ChangeKind,
    /// Storage key of the resource.
    pub key: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object after the write (for deletes: the last state, at the delete's resourceVersion).
    pub object: Arc<StoredObject>,
    /// The object before the write, for selector transitions.
    pub previous: Option<Arc<StoredObject>>,
}

/// What a commit expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No object with this name.
    Absent,
    /// The object at exactly this resourceVersion.
    Version(u64),
}

/// One write to commit.
#[derive(Debug)]
pub struct Write {
    /// Storage key.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Precondition.
    pub expect: Expect,
    /// New content, `None` to delete.
    pub object: Option<Value>,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// `Expect::Absent` but the object exists.
    #[error("object already exists")]
    Exists,
    /// The object does not exist.
    #[error("object does not exist")]
    Missing,
    /// The object changed since it was read.
    #[error("object changed since it was read")]
    Stale,
    /// The write-ahead log failed; the store refuses writes from now on.
    #[error("write could not be made durable: {0}")]
    Durability(String),
}

/// A watch asked for history the change log no longer holds.
#[derive(Debug, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct Expired {
    /// The requested resourceVersion.
    pub requested: u64,
    /// The oldest resourceVersion a watch may resume from.
    pub oldest: u64,
}

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Rewrite the log as a snapshot once it exceeds this size.
    pub compact_bytes: u64,
    /// Keep at most this many bytes of object JSON in the change log.
    pub history_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            compact_bytes: 64 << 20,
            history_bytes: 64 << 20,
        }
    }
}

type Table = BTreeMap<(String, String), Arc<StoredObject>>;

struct State {
    rv: u64,
    tables: HashMap<String, Table>,
    registry: Arc<Registry>,
}

struct History {
    changes: VecDeque<Arc<Change>>,
    bytes: usize,
    oldest: u64,
}

struct Inner {
    state: Mutex<State>,
    history: Mutex<History>,
    published: watch::Sender<u64>,
    wal: Mutex<Option<Wal>>,
    history_bytes: usize,
}

/// Completed once the write-ahead log has synced a write.
type Durable = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// Cheap-to-clone handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Replays the log at `path` and starts the commit thread.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, WalError> {
        let replayed = wal::replay(path)?;
        let mut tables: HashMap<String, Table> = HashMap::new();
        for ((key, namespace, name), json) in replayed.objects {
            match StoredObject::from_json(json) {
                Some(stored) => {
                    tables
                        .entry(key)
                        .or_default()
                        .insert((namespace, name), Arc::new(stored));
                }
                None => {
                    tracing::warn!(%key, %namespace, %name, "skipping unreadable object in the store log")
                }
            }
        }
        let rv = replayed.rv.max(
            tables
                .values()
                .flat_map(|t| t.values())
                .map(|o| o.rv)
                .max()
                .unwrap_or(0),
        );
        let registry = Arc::new(registry_from(&tables));
        let (published, _) = watch::channel(rv);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv,
                tables,
                registry,
            }),
            history: Mutex::new(History {
                changes: VecDeque::new(),
                bytes: 0,
                oldest: rv,
            }),
            published,
            wal: Mutex::new(None),
            history_bytes: options.history_bytes,
        });
        let owner: Arc<dyn WalOwner> = inner.clone();
        let weak: Weak<dyn WalOwner> = Arc::downgrade(&owner);
        let wal = Wal::start(path, options.compact_bytes, weak)?;
        *lock(&inner.wal) = Some(wal);
        Ok(Self { inner })
    }

    /// The current registry (built-ins plus installed CRDs).
    pub fn registry(&self) -> Arc<Registry> {
        lock(&self.inner.state).registry.clone()
    }

    /// The latest assigned resourceVersion.
    pub fn current_rv(&self) -> u64 {
        lock(&self.inner.state).rv
    }

    /// One object.
    pub fn get(&self, key: &str, namespace: &str, name: &str) -> Option<Arc<StoredObject>> {
        let state = lock(&self.inner.state);
        state
            .tables
            .get(key)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in one namespace, or all), sorted by namespace and name,
    /// with the resourceVersion the list is consistent with.
    pub fn list(&self, key: &str, namespace: Option<&str>) -> (u64, Vec<Arc<StoredObject>>) {
        let state = lock(&self.inner.state);
        let Some(table) = state.tables.get(key) else {
            return (state.rv, Vec::new());
        };
        let items = match namespace {
            Some(ns) => table
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, o)| o.clone())
                .collect(),
            None => table.values().cloned().collect(),
        };
        (state.rv, items)
    }

    /// Every object of every resource: (storage key, namespace, name, object).
    pub fn all_objects(&self) -> Vec<(String, String, String, Arc<StoredObject>)> {
        let state = lock(&self.inner.state);
        state
            .tables
            .iter()
            .flat_map(|(key, table)| {
                table
                    .iter()
                    .map(move |((ns, name), o)| (key.clone(), ns.clone(), name.clone(), o.clone()))
            })
            .collect()
    }

    /// Commits one write once it is durable; returns the stored revision.
    pub async fn commit(&self, write: Write) -> Result<Arc<StoredObject>, CommitError> {
        let (receiver, stored) = self.apply(write)?;
        match receiver.await {
            Ok(Ok(())) => Ok(stored),
            Ok(Err(reason)) => Err(CommitError::Durability(reason)),
            Err(_) => Err(CommitError::Durability(
                "the store log thread stopped".to_string(),
            )),
        }
    }

    fn apply(&self, write: Write) -> Result<(Durable, Arc<StoredObject>), CommitError> {
        let mut state = lock(&self.inner.state);
        let table_key = (write.namespace.clone(), write.name.clone());
        let current = state
            .tables
            .get(&write.key)
            .and_then(|t| t.get(&table_key))
            .cloned();
        check_expectation(write.expect, current.as_ref())?;

        let rv = state.rv + 1;
        let (kind, stored) = match write.object {
            Some(mut value) => {
                set_resource_version(&mut value, rv);
                let kind = if current.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                (kind, Arc::new(StoredObject::new(rv, &value)))
            }
            None => {
                let mut value = current.as_ref().ok_or(CommitError::Missing)?.value();
                set_resource_version(&mut value, rv);
                (ChangeKind::Deleted, Arc::new(StoredObject::new(rv, &value)))
            }
        };

        let (ack, receiver) = tokio::sync::oneshot::channel();
        let object_key: ObjectKey = (
            write.key.clone(),
            write.namespace.clone(),
            write.name.clone(),
        );
        let frame = wal::frame(
            rv,
            &object_key,
            (kind != ChangeKind::Deleted).then_some(&*stored.json),
        );
        let change = Arc::new(Change {
            rv,
            kind,
            key: write.key.clone(),
            namespace: write.namespace,
            object: stored.clone(),
            previous: current,
        });
        let queued = lock(&self.inner.wal)
            .as_ref()
            .map(|wal| wal.append(Pending { frame, change, ack }));
        if !matches!(queued, Some(Ok(()))) {
            return Err(CommitError::Durability(
                "the store log thread stopped".to_string(),
            ));
        }

        state.rv = rv;
        let table = state.tables.entry(write.key.clone()).or_default();
        if kind == ChangeKind::Deleted {
            table.remove(&table_key);
        } else {
            table.insert(table_key, stored.clone());
        }
        if write.key == CRD_KEY {
            state.registry = Arc::new(registry_from(&state.tables));
        }
        Ok((receiver, stored))
    }

    /// Changes with a resourceVersion above `rv`, oldest first.
    pub fn changes_after(&self, rv: u64) -> Result<Vec<Arc<Change>>, Expired> {
        let history = lock(&self.inner.history);
        if rv < history.oldest {
            return Err(Expired {
                requested: rv,
                oldest: history.oldest,
            });
        }
        let start = history.changes.partition_point(|c| c.rv <= rv);
        Ok(history.changes.range(start..).cloned().collect())
    }

    /// Like [`Store::list`], but returned only once every write the list
    /// reflects is durable: objects are applied to memory before their log
    /// sync completes, and a watcher must never see a write that a crash could
    /// still take back. `None` if the store log has stopped.
    pub async fn durable_list(
        &self,
        key: &str,
        namespace: Option<&str>,
    ) -> Option<(u64, Vec<Arc<StoredObject>>)> {
        let mut published = self.subscribe();
        let (rv, objects) = self.list(key, namespace);
        published.wait_for(|durable| *durable >= rv).await.ok()?;
        Some((rv, objects))
    }

    /// Notified with the latest durable resourceVersion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.published.subscribe()
    }

    /// Forgets all change history, as etcd compaction does; watches resuming
    /// from an older resourceVersion then get `410 Expired`.
    pub fn compact_history(&self) {
        let mut history = lock(&self.inner.history);
        history.oldest = *self.inner.published.borrow();
        history.changes.clear();
        history.bytes = 0;
    }

    /// Stops the commit thread once queued writes are synced.
    pub fn close(&self) {
        lock(&self.inner.wal).take();
    }
}

fn check_expectation(
    expect: Expect,
    current: Option<&Arc<StoredObject>>,
) -> Result<(), CommitError> {
    match (expect, current) {
        (Expect::Absent, Some(_)) => Err(CommitError::Exists),
        (Expect::Version(_), None) => Err(CommitError::Missing),
        (Expect::Version(rv), Some(c)) if c.rv != rv => Err(CommitError::Stale),
        _ => Ok(()),
    }
}

fn set_resource_version(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), Value::String(rv.to_string()));
    }
}

fn registry_from(tables: &HashMap<String, Table>) -> Registry {
    let crds: Vec<Value> = tables
        .get(CRD_KEY)
        .map(|t| t.values().map(|o| o.value()).collect())
        .unwrap_or_default();
    Registry::build(crds.iter())
}

impl WalOwner for Inner {
    fn durable(&self, changes: Vec<Arc<Change>>) {
        let Some(last) = changes.last().map(|c| c.rv) else {
            return;
        };
        let mut history = lock(&self.history);
        for change in changes {
            history.bytes += change.object.json.len();
            history.changes.push_back(change);
        }
        while history.bytes > self.history_bytes && history.changes.len() > 1 {
            if let Some(dropped) = history.changes.pop_front() {
                history.bytes -= dropped.object.json.len();
                history.oldest = dropped.rv;
            }
        }
        drop(history);
        self.published.send_replace(last);
    }

    fn snapshot(&self) -> (u64, Vec<SnapshotEntry>) {
        let state = lock(&self.state);
        let entries = state
            .tables
            .iter()
            .flat_map(|(key, table)| {
                table.iter().map(move |((ns, name), o)| {
                    ((key.clone(), ns.clone(), name.clone()), o.clone())
                })
            })
            .collect();
        (state.rv, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(name: &str) -> Write {
        Write {
            key: "/configmaps".to_string(),
            namespace: "default".to_string(),
            name: name.to_string(),
            expect: Expect::Absent,
            object: Some(serde_json::json!({"metadata": {"name": name}})),
        }
    }

    #[tokio::test]
    async fn durable_list_waits_until_the_log_has_synced_what_it_shows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("store.log"), &StoreOptions::default()).expect("open");
        store.commit(config_map("synced")).await.expect("commit");

        // Holding the history lock stops the log thread right after its
        // sync, before it publishes the write as durable.
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let inner = store.inner.clone();
        let holder = std::thread::spawn(move || {
            let _history = lock(&inner.history);
            let _ = locked.send(());
            let _ = released.recv();
        });
        is_locked.recv().expect("history locked");
        let (_durable, pending) = store.apply(config_map("pending")).expect("apply");
        let (_, in_memory) = store.list("/configmaps", Some("default"));
        assert_eq!(in_memory.len(), 2, "the write is applied to memory at once");

        let listing = tokio::spawn({
            let store = store.clone();
            async move { store.durable_list("/configmaps", Some("default")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !listing.is_finished(),
            "listed a write before it was durable"
        );

        release.send(()).expect("release the history");
        holder.join().expect("holder thread");
        let (rv, objects) = listing.await.expect("join").expect("store running");
        assert_eq!((rv, objects.len()), (pending.rv, 2));
    }
}
