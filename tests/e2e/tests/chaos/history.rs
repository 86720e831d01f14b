//! Every change of every BareMetalHost during a run, watched from before the hosts exist, and
//! the rules the changes must keep: provisioning states only move forward (a failed
//! provisioning may go back through deprovisioning), a host never passes from one consumer
//! straight to another, and no consumer is held by two hosts at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::{StreamExt as _, TryStreamExt as _};
use ingot_api::metal3::{BareMetalHost, ProvisioningState};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};

/// What was seen so far.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Each host's provisioning states, in order, without repeats.
    pub states: BTreeMap<String, Vec<ProvisioningState>>,
    /// Each host's consumers, in order, without repeats (`None`: unclaimed).
    pub consumers: BTreeMap<String, Vec<Option<String>>>,
    /// Host name by UID.
    pub names: BTreeMap<String, String>,
    /// Broken rules, in the order they were seen.
    pub problems: Vec<String>,
}

impl Record {
    /// Takes in one observed version of host `name`.
    pub fn observe(
        &mut self,
        name: &str,
        uid: &str,
        state: ProvisioningState,
        consumer: Option<String>,
    ) {
        self.names.insert(uid.to_owned(), name.to_owned());
        self.observe_state(name, state);
        self.observe_consumer(name, consumer);
    }

    fn observe_state(&mut self, name: &str, state: ProvisioningState) {
        let states = self.states.entry(name.to_owned()).or_default();
        let Some(&previous) = states.last() else {
            states.push(state);
            return;
        };
        if previous == state {
            return;
        }
        if !allowed(previous, state) {
            self.problems.push(format!(
                "{name} went from {previous:?} to {state:?} (states so far: {states:?})"
            ));
        }
        states.push(state);
    }

    fn observe_consumer(&mut self, name: &str, consumer: Option<String>) {
        let holder = consumer.as_ref().and_then(|consumer| {
            self.consumers
                .iter()
                .filter(|(host, _)| host.as_str() != name)
                .find(|(_, seen)| seen.last() == Some(&Some(consumer.clone())))
                .map(|(host, _)| host.clone())
        });
        if let (Some(consumer), Some(holder)) = (&consumer, holder) {
            self.problems
                .push(format!("{consumer} is held by {holder} and {name} at once"));
        }

        let seen = self.consumers.entry(name.to_owned()).or_default();
        if seen.last() == Some(&consumer) {
            return;
        }
        if let (Some(Some(previous)), Some(next)) = (seen.last(), &consumer) {
            self.problems.push(format!(
                "{name} went from consumer {previous} straight to {next}"
            ));
        }
        seen.push(consumer);
    }

    /// How often host `name` entered `provisioning`: one per provisioning attempt.
    pub fn provisioning_attempts(&self, name: &str) -> usize {
        self.states.get(name).map_or(0, |states| {
            states
                .iter()
                .filter(|state| **state == ProvisioningState::Provisioning)
                .count()
        })
    }
}

/// Where a state sits on the way from a new host to a provisioned one.
fn rank(state: ProvisioningState) -> Option<u8> {
    match state {
        ProvisioningState::None => Some(0),
        ProvisioningState::Registering => Some(1),
        ProvisioningState::Inspecting => Some(2),
        ProvisioningState::Preparing => Some(3),
        ProvisioningState::Available => Some(4),
        ProvisioningState::Provisioning => Some(5),
        ProvisioningState::Provisioned => Some(6),
        _ => None,
    }
}

/// Whether a host may go from `from` to `to` in a run where nothing is deleted or released:
/// forward along the way to provisioned (a watch may skip versions), from a failed
/// provisioning through deprovisioning back to available and on, and from available to
/// preparing, which upstream does whenever settings are to be applied again (after
/// deprovisioning they are).
pub fn allowed(from: ProvisioningState, to: ProvisioningState) -> bool {
    use ProvisioningState::{Available, Deprovisioning, Preparing, Provisioning};
    let available = rank(Available);
    match (from, to) {
        (Provisioning, Deprovisioning) | (Available, Preparing) => true,
        (Deprovisioning, to) => rank(to) >= available,
        (from, to) => matches!((rank(from), rank(to)), (Some(from), Some(to)) if to > from),
    }
}

/// A watch of every host, recording into a shared [`Record`] until dropped.
pub struct HostWatch {
    record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl HostWatch {
    /// Starts watching and returns once the watch has listed the hosts.
    pub async fn start(hosts: Api<BareMetalHost>) -> HostWatch {
        let record = Arc::new(Mutex::new(Record::default()));
        let (listed, started) = tokio::sync::oneshot::channel::<()>();
        let shared = record.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(hosts, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .boxed();
            let _ = listed.send(());
            while let Ok(Some(host)) = events.try_next().await {
                lock(&shared).observe(
                    &host.name_any(),
                    &host.uid().unwrap_or_default(),
                    state_of(&host),
                    consumer_of(&host),
                );
            }
        });
        let _ = started.await;
        HostWatch { record, task }
    }

    /// A copy of what was seen so far.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(record: &Mutex<Record>) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The provisioning state of `host`.
pub fn state_of(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state)
        .unwrap_or_default()
}

/// The consumer of `host` as `Kind/namespace/name`.
pub fn consumer_of(host: &BareMetalHost) -> Option<String> {
    host.spec.consumer_ref.as_ref().map(|reference| {
        format!(
            "{}/{}/{}",
            reference.kind.clone().unwrap_or_default(),
            reference.namespace.clone().unwrap_or_default(),
            reference.name.clone().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProvisioningState::{
        Available, Deprovisioning, Inspecting, Preparing, Provisioned, Provisioning, Registering,
    };

    #[test]
    fn the_way_to_provisioned_is_allowed_even_with_versions_skipped() {
        let way = [
            ProvisioningState::None,
            Registering,
            Inspecting,
            Preparing,
            Available,
            Provisioning,
            Provisioned,
        ];
        for pair in way.windows(2) {
            assert!(allowed(pair[0], pair[1]), "{pair:?}");
        }
        assert!(allowed(Registering, Available));
        assert!(allowed(Available, Provisioned));
        assert!(allowed(Available, Preparing), "settings applied again");
    }

    #[test]
    fn only_a_failed_provisioning_goes_back_and_only_through_deprovisioning() {
        assert!(allowed(Provisioning, Deprovisioning));
        assert!(allowed(Deprovisioning, Available));
        assert!(allowed(Deprovisioning, Provisioning));
        assert!(!allowed(Provisioned, Provisioning));
        assert!(!allowed(Provisioned, Deprovisioning));
        assert!(!allowed(Provisioning, Available));
        assert!(!allowed(Available, Inspecting));
        assert!(!allowed(Inspecting, Registering));
        assert!(!allowed(Deprovisioning, Inspecting));
    }

    #[test]
    fn a_consumer_held_twice_or_swapped_is_a_problem() {
        let mut record = Record::default();
        let claim = |name: &str| Some(format!("Metal3Machine/default/{name}"));
        record.observe("host-0", "u0", Available, claim("worker-0"));
        record.observe("host-1", "u1", Available, None);
        assert!(record.problems.is_empty(), "{:?}", record.problems);

        record.observe("host-1", "u1", Available, claim("worker-0"));
        record.observe("host-0", "u0", Available, claim("worker-1"));
        assert_eq!(record.problems.len(), 2, "{:?}", record.problems);
        assert!(record.problems[0].contains("held by host-0 and host-1"));
        assert!(record.problems[1].contains("straight to"));
    }

    #[test]
    fn a_state_going_backwards_is_a_problem_and_attempts_are_counted() {
        let mut record = Record::default();
        for state in [
            Available,
            Provisioning,
            Deprovisioning,
            Available,
            Provisioning,
        ] {
            record.observe("host-0", "u0", state, None);
        }
        assert!(record.problems.is_empty(), "{:?}", record.problems);
        assert_eq!(record.provisioning_attempts("host-0"), 2);

        record.observe("host-0", "u0", Provisioned, None);
        record.observe("host-0", "u0", Provisioning, None);
        assert_eq!(record.problems.len(), 1, "{:?}", record.problems);
    }
}
