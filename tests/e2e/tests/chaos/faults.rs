//! The chaos itself: a seeded random source, and the faults the lab can inject into one
//! machine for a short time.

use std::time::Duration;

use serde_json::{Value, json};

/// A small seeded random source (SplitMix64): the same seed gives the same choices, so a
/// failed run's seed replays its sequence of kills and faults.
pub struct Chaos {
    state: u64,
}

impl Chaos {
    /// A source starting from `seed`.
    pub fn new(seed: u64) -> Chaos {
        Chaos { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high.saturating_sub(low) + 1)
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.between(millis(low), millis(high)))
    }

    /// An index below `len` (which must not be zero).
    pub fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.next() % len).unwrap_or_default()
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every BMC request answers 503.
    BmcUnreachable,
    /// Every BMC request answers 500.
    BmcInternalError,
    /// The BMC forgets the open Redfish sessions.
    BmcSessionsDropped,
    /// Every BMC request takes longer than a driver call may.
    BmcPastDeadline,
    /// The deploy agent dies, and agents booted meanwhile die at start.
    AgentCrash,
}

const FAULTS: [Fault; 5] = [
    Fault::BmcUnreachable,
    Fault::BmcInternalError,
    Fault::BmcSessionsDropped,
    Fault::BmcPastDeadline,
    Fault::AgentCrash,
];

impl Fault {
    /// A fault chosen by `chaos`.
    pub fn pick(chaos: &mut Chaos) -> Fault {
        FAULTS[chaos.index(FAULTS.len())]
    }

    /// The lab's fault document; `deadline` is the driver's call deadline.
    pub fn document(self, deadline: Duration) -> Value {
        let past_deadline = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX) + 1_000;
        match self {
            Fault::BmcUnreachable => json!({"bmcUnreachable": true}),
            Fault::BmcInternalError => json!({"bmcInternalError": true}),
            Fault::BmcSessionsDropped => json!({"bmcSessionsDropped": true}),
            Fault::BmcPastDeadline => json!({"bmcDelayMs": past_deadline}),
            Fault::AgentCrash => json!({"agentCrash": true}),
        }
    }
}

/// No fault at all.
pub fn cleared() -> Value {
    json!({})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_sequence() {
        let draw = |seed| {
            let mut chaos = Chaos::new(seed);
            (0..8).map(|_| chaos.between(1, 6)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().all(|n| (1..=6).contains(n)));
    }

    #[test]
    fn every_fault_gets_picked() {
        let mut chaos = Chaos::new(1);
        let picked: Vec<Fault> = (0..200).map(|_| Fault::pick(&mut chaos)).collect();
        assert!(FAULTS.iter().all(|fault| picked.contains(fault)));
    }
}
