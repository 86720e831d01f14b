//! Waking hosts whose wait is over, so that they move on at once instead of at their next
//! requeue: a host whose deploy agent checked in or finished a command, and a host given a busy
//! slot that has come free (a phase ended, or a slot held for a host that never used it ran
//! out).
//!
//! Wakes only hasten what requeues would do anyway, so one missed (a full backlog, a host not
//! yet seen by this operator) costs time, never correctness.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use ingot_operator::provisioner::Wake;
use tokio::sync::broadcast;

use crate::Shared;
use crate::capacity::CLAIM_LIFETIME;
use crate::records::Records;

/// Wakes not yet taken by the controller, beyond which the oldest are dropped.
const BACKLOG: usize = 4096;

/// The hosts this backend has seen, by UID, and the controller's subscription.
pub(crate) struct Wakes {
    hosts: Mutex<HashMap<String, Wake>>,
    /// Hosts whose deploy agent has had news since their step last ran: that step runs at
    /// once instead of at the end of the wait it asked for.
    agent_news: Mutex<HashSet<String>>,
    sender: broadcast::Sender<Wake>,
}

impl Wakes {
    pub(crate) fn new() -> Self {
        Self {
            hosts: Mutex::new(HashMap::new()),
            agent_news: Mutex::new(HashSet::new()),
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Notes the name of the host with `uid`, so that it can be woken by UID.
    pub(crate) fn remember(&self, uid: &str, namespace: &str, name: &str) {
        self.hosts().entry(uid.to_owned()).or_insert_with(|| Wake {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.hosts().remove(uid);
        self.agent_news().remove(uid);
    }

    /// Notes that the host's deploy agent has news and wakes the host.
    fn agent_has_news(&self, uid: &str) {
        self.agent_news().insert(uid.to_owned());
        self.wake(uid);
    }

    /// Whether the host's deploy agent has had news since the last time this was asked.
    pub(crate) fn take_agent_news(&self, uid: &str) -> bool {
        self.agent_news().remove(uid)
    }

    /// Asks the controller to look at the host with `uid` now.
    pub(crate) fn wake(&self, uid: &str) {
        let Some(wake) = self.hosts().get(uid).cloned() else {
            return;
        };
        tracing::debug!(host = %wake.name, "waking the host");
        // No subscriber means no controller running: it looks at every host when it starts.
        let _ = self.sender.send(wake);
    }

    /// Every wake from now on.
    pub(crate) fn subscribe(&self) -> BoxStream<'static, Wake> {
        let receiver = self.sender.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(wake) => return Some((wake, receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            missed,
                            "host wakes dropped; those hosts wait for their requeue"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<String, Wake>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn agent_news(&self) -> MutexGuard<'_, HashSet<String>> {
        self.agent_news
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tasks that wake hosts for one backend, stopped with it.
pub(crate) struct WakeTasks(Vec<tokio::task::AbortHandle>);

impl WakeTasks {
    /// Starts waking hosts on agent news and on freed slots. `shared` may still be under
    /// construction: it is only looked at once there is something to wake.
    pub(crate) fn start(
        shared: &Weak<Shared>,
        news: broadcast::Receiver<String>,
        records: Arc<Records>,
    ) -> Self {
        let on_news = tokio::spawn(wake_on_agent_news(shared.clone(), news));
        let on_freed = tokio::spawn(hand_out_freed_slots(shared.clone(), records));
        Self(vec![on_news.abort_handle(), on_freed.abort_handle()])
    }
}

impl Drop for WakeTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Wakes each host whose deploy agent has news (checked in, finished a command).
async fn wake_on_agent_news(shared: Weak<Shared>, mut news: broadcast::Receiver<String>) {
    loop {
        let uid = match news.recv().await {
            Ok(uid) => uid,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(shared) = shared.upgrade() {
            shared.wakes.agent_has_news(&uid);
        }
    }
}

/// Each time a busy host's phase ends or a held slot runs out, hands the free slots to the
/// hosts waiting longest and wakes them. Delayed hosts count on this wake: their own requeue is
/// only a fallback.
async fn hand_out_freed_slots(shared: Weak<Shared>, records: Arc<Records>) {
    loop {
        let expiry = shared
            .upgrade()
            .and_then(|shared| shared.capacity.next_expiry());
        slot_freed_or_expired(&records, expiry).await;
        let Some(shared) = shared.upgrade() else {
            continue;
        };
        for uid in shared.capacity.hand_out(&records) {
            shared.wakes.wake(&uid);
        }
    }
}

/// Resolves when a busy host's phase ends or the claim expiring at `expiry` runs out, and at
/// the latest after a claim's lifetime: a claim made meanwhile cannot run out before then, so
/// looking again after that long misses none.
async fn slot_freed_or_expired(records: &Records, expiry: Option<Instant>) {
    let latest = Instant::now() + CLAIM_LIFETIME;
    let until = expiry.map_or(latest, |expiry| expiry.min(latest));
    let _ = tokio::time::timeout_at(until.into(), records.slot_freed()).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_wait_for_a_free_slot_ends_when_a_claim_runs_out() {
        let records = Records::in_memory();
        let started = Instant::now();

        slot_freed_or_expired(&records, Some(started + Duration::from_millis(200))).await;

        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < CLAIM_LIFETIME, "{waited:?}");
    }
}
