//! Which hosts may have a phase under way: at most a set number at once.
//!
//! A host that is told it may start holds its slot until its run begins, so that the hosts
//! told "yes" in the moments before any of them starts cannot outnumber the free slots (they
//! would otherwise be delayed again on their next step, a status write each way).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::records::Records;

/// How long a slot stays held for a host that was admitted but has not started its run, for
/// example because it took another way meanwhile.
const CLAIM_LIFETIME: Duration = Duration::from_secs(60);

/// The slots for hosts with a phase under way, and the hosts holding one before their run.
pub(crate) struct Capacity {
    max_busy_hosts: usize,
    claims: Mutex<HashMap<String, Instant>>,
}

impl Capacity {
    pub(crate) fn new(max_busy_hosts: usize) -> Self {
        Self {
            max_busy_hosts: max_busy_hosts.max(1),
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the host `uid` may have a phase under way: it has one already, it holds a
    /// slot, or a slot is free, which it then holds. Costs a look at the claims, at most one
    /// per slot, whatever the size of the fleet.
    pub(crate) fn admit(&self, uid: &str, records: &Records) -> bool {
        if records.is_busy(uid) {
            self.release(uid);
            return true;
        }

        let mut claims = self.claims();
        let now = Instant::now();
        claims.retain(|_, since| now.duration_since(*since) < CLAIM_LIFETIME);
        if claims.contains_key(uid) {
            return true;
        }
        if records.busy_hosts() + claims.len() >= self.max_busy_hosts {
            return false;
        }
        claims.insert(uid.to_owned(), now);
        true
    }

    /// Gives up the host's claim: its run has started, and counts as busy, or the host is gone.
    pub(crate) fn release(&self, uid: &str) {
        self.claims().remove(uid);
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::HostRecord;
    use crate::records::tests::running;

    fn start_run(records: &Records, uid: &str) {
        records
            .update(uid, |record: &mut HostRecord| {
                record.run = Some(running(0));
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn hosts_admitted_before_their_runs_start_do_not_outnumber_the_slots() {
        let records = Records::in_memory();
        let capacity = Capacity::new(2);

        assert!(capacity.admit("uid-1", &records));
        assert!(capacity.admit("uid-2", &records));
        assert!(!capacity.admit("uid-3", &records));
        assert!(capacity.admit("uid-1", &records), "a held slot stays held");
    }

    #[test]
    fn a_started_run_takes_over_the_claim_and_a_gone_host_frees_its_slot() {
        let records = Records::in_memory();
        let capacity = Capacity::new(2);
        assert!(capacity.admit("uid-1", &records));
        assert!(capacity.admit("uid-2", &records));

        start_run(&records, "uid-1");
        capacity.release("uid-1");
        assert!(!capacity.admit("uid-3", &records));
        assert!(
            capacity.admit("uid-1", &records),
            "a host with a run is always admitted"
        );

        capacity.release("uid-2");
        assert!(capacity.admit("uid-3", &records));
    }
}
