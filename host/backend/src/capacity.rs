//! Which hosts may have a phase under way: at most a set number at once.
//!
//! A host that is told it may start holds its slot until its run begins, so that the hosts
//! told "yes" in the moments before any of them starts cannot outnumber the free slots (they
//! would otherwise be delayed again on their next step, a status write each way).
//!
//! Hosts told "no" queue up in the order they asked. When runs end, [`Capacity::hand_out`]
//! gives the free slots to the hosts first in line, so that they can be woken at once instead
//! of finding room by polling.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::records::Records;

/// How long a slot stays held for a host that was admitted but has not started its run, for
/// example because it took another way meanwhile.
pub(crate) const CLAIM_LIFETIME: Duration = Duration::from_secs(60);

/// The slots for hosts with a phase under way, and the hosts holding one before their run.
pub(crate) struct Capacity {
    max_busy_hosts: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Hosts admitted whose run has not started, with when they were admitted.
    claims: HashMap<String, Instant>,
    /// Hosts refused a slot, first come first; entries no longer in `waiting` are skipped.
    line: VecDeque<String>,
    /// The hosts in `line` still waiting.
    waiting: HashSet<String>,
}

impl Slots {
    fn expire_claims(&mut self, now: Instant) {
        self.claims
            .retain(|_, since| now.duration_since(*since) < CLAIM_LIFETIME);
    }

    fn free(&self, max_busy_hosts: usize, records: &Records) -> usize {
        max_busy_hosts.saturating_sub(records.busy_hosts() + self.claims.len())
    }

    fn join_line(&mut self, uid: &str) {
        if self.waiting.insert(uid.to_owned()) {
            self.line.push_back(uid.to_owned());
        }
    }

    /// The first host in line still waiting, taken out of the line.
    fn next_in_line(&mut self) -> Option<String> {
        while let Some(uid) = self.line.pop_front() {
            if self.waiting.remove(&uid) {
                return Some(uid);
            }
        }
        None
    }
}

impl Capacity {
    pub(crate) fn new(max_busy_hosts: usize) -> Self {
        Self {
            max_busy_hosts: max_busy_hosts.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Whether the host `uid` may have a phase under way: it has one already, it holds a
    /// slot, or a slot is free, which it then holds. A host refused joins the line for
    /// [`Capacity::hand_out`]. Costs a look at the claims, at most one per slot, whatever the
    /// size of the fleet.
    pub(crate) fn admit(&self, uid: &str, records: &Records) -> bool {
        if records.is_busy(uid) {
            self.release(uid);
            return true;
        }

        let mut slots = self.slots();
        slots.expire_claims(Instant::now());
        if slots.claims.contains_key(uid) {
            return true;
        }
        if slots.free(self.max_busy_hosts, records) == 0 {
            slots.join_line(uid);
            return false;
        }
        slots.waiting.remove(uid);
        slots.claims.insert(uid.to_owned(), Instant::now());
        true
    }

    /// Gives every free slot to the next host in line and returns those hosts, which now hold
    /// their slot as if admitted.
    pub(crate) fn hand_out(&self, records: &Records) -> Vec<String> {
        let mut slots = self.slots();
        let now = Instant::now();
        slots.expire_claims(now);

        let mut handed = Vec::new();
        while slots.free(self.max_busy_hosts, records) > 0 {
            let Some(uid) = slots.next_in_line() else {
                break;
            };
            slots.claims.insert(uid.clone(), now);
            handed.push(uid);
        }
        handed
    }

    /// When the oldest claim runs out, if any: its slot is then free for the next in line.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let slots = self.slots();
        slots
            .claims
            .values()
            .min()
            .map(|since| *since + CLAIM_LIFETIME)
    }

    /// Gives up the host's claim and its place in line: its run has started, and counts as
    /// busy, or the host is gone.
    pub(crate) fn release(&self, uid: &str) {
        let mut slots = self.slots();
        slots.claims.remove(uid);
        slots.waiting.remove(uid);
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
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

    fn end_run(records: &Records, uid: &str) {
        records
            .update(uid, |record: &mut HostRecord| record.run = None)
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

    #[test]
    fn an_unused_claim_runs_out_after_its_lifetime() {
        let records = Records::in_memory();
        let capacity = Capacity::new(1);
        assert_eq!(capacity.next_expiry(), None);

        let before = Instant::now();
        assert!(capacity.admit("uid-1", &records));
        let expiry = capacity.next_expiry().expect("a claim is held");

        assert!(expiry >= before + CLAIM_LIFETIME);
        assert!(expiry <= Instant::now() + CLAIM_LIFETIME);
        capacity.release("uid-1");
        assert_eq!(capacity.next_expiry(), None);
    }

    #[test]
    fn freed_slots_go_to_the_hosts_refused_first() {
        let records = Records::in_memory();
        let capacity = Capacity::new(2);
        assert!(capacity.admit("uid-1", &records));
        assert!(capacity.admit("uid-2", &records));
        for uid in ["uid-1", "uid-2"] {
            start_run(&records, uid);
            capacity.release(uid);
        }
        for uid in ["uid-3", "uid-4", "uid-5", "uid-3"] {
            assert!(!capacity.admit(uid, &records));
        }
        capacity.release("uid-4");
        assert!(capacity.hand_out(&records).is_empty(), "no slot is free");

        end_run(&records, "uid-1");
        end_run(&records, "uid-2");
        let handed = capacity.hand_out(&records);

        assert_eq!(
            handed,
            ["uid-3", "uid-5"],
            "in line order, the gone host skipped"
        );
        assert!(
            !capacity.admit("uid-6", &records),
            "the handed slots are held"
        );
        assert!(capacity.admit("uid-5", &records));
        assert!(capacity.hand_out(&records).is_empty());
    }
}
