//! When each host's deploy agent was last heard from, to tell a dead agent from a busy one.
//!
//! Every authenticated request counts as a sign of life, and so does a long-poll while it is
//! held open. A running agent reports progress every second and an idle one keeps a poll
//! open, so a live agent is never silent for more than a moment; silence longer than the
//! limit means the agent crashed, lost its network or the machine went down.
//!
//! Times kept here live only as long as the process: after an operator restart every host
//! counts as heard at the start, which gives each agent a full limit to come back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Silence after which an agent counts as gone, unless configured otherwise: twelve of the
/// five-second poll intervals suggested to agents, three of the agent's own long-polls.
pub const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// What is known of one host's agent.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// The last request, or the registration when none came since.
    last: Instant,
    /// Long-polls being held open for it right now.
    open_polls: usize,
}

/// The signs of life of every host's agent.
#[derive(Debug)]
pub struct Liveness {
    /// When this process started counting; hosts never heard since count from here.
    started: Instant,
    hosts: HashMap<String, Heard>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Liveness {
    /// Starts counting at `now`, every host as just heard.
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            hosts: HashMap::new(),
        }
    }

    /// The agent of `host` made a request.
    pub fn heard(&mut self, host: &str, now: Instant) {
        self.entry(host).last = now;
    }

    /// The agent of `host` started a long-poll; it counts as alive until the poll ends.
    pub fn poll_opened(&mut self, host: &str, now: Instant) {
        let heard = self.entry(host);
        heard.last = now;
        heard.open_polls += 1;
    }

    /// A long-poll of `host` ended. Silence counts from when it was opened: a poll held open
    /// for an agent that died meanwhile proves nothing.
    pub fn poll_closed(&mut self, host: &str) {
        if let Some(heard) = self.hosts.get_mut(host) {
            heard.open_polls = heard.open_polls.saturating_sub(1);
        }
    }

    /// A new agent is booting for `host` (it was registered again): its silence starts now.
    pub fn restart(&mut self, host: &str, now: Instant) {
        self.hosts.insert(
            host.to_owned(),
            Heard {
                last: now,
                open_polls: 0,
            },
        );
    }

    /// Forgets `host`.
    pub fn forget(&mut self, host: &str) {
        self.hosts.remove(host);
    }

    /// How long the agent of `host` has been silent at `now`; zero while a poll is open.
    pub fn silence(&self, host: &str, now: Instant) -> Duration {
        match self.hosts.get(host) {
            Some(heard) if heard.open_polls > 0 => Duration::ZERO,
            Some(heard) => now.saturating_duration_since(heard.last),
            None => now.saturating_duration_since(self.started),
        }
    }

    fn entry(&mut self, host: &str) -> &mut Heard {
        let started = self.started;
        self.hosts.entry(host.to_owned()).or_insert(Heard {
            last: started,
            open_polls: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn silence_counts_from_the_last_request() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);

        liveness.heard("a", start + 10 * SECOND);

        assert_eq!(liveness.silence("a", start + 25 * SECOND), 15 * SECOND);
    }

    #[test]
    fn hosts_not_heard_since_a_restart_count_from_the_restart() {
        let restart = Instant::now();
        let liveness = Liveness::new(restart);

        assert_eq!(liveness.silence("restored", restart), Duration::ZERO);
        assert_eq!(
            liveness.silence("restored", restart + 30 * SECOND),
            30 * SECOND
        );
    }

    #[test]
    fn an_open_poll_keeps_an_agent_alive_however_long_it_is_held() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);

        liveness.poll_opened("a", start);

        assert_eq!(liveness.silence("a", start + 600 * SECOND), Duration::ZERO);
    }

    #[test]
    fn after_a_poll_ends_silence_counts_from_when_it_was_opened() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        liveness.poll_opened("a", start + SECOND);
        liveness.poll_opened("a", start + 2 * SECOND);

        liveness.poll_closed("a");
        let one_still_open = liveness.silence("a", start + 40 * SECOND);
        liveness.poll_closed("a");
        let none_open = liveness.silence("a", start + 40 * SECOND);

        assert_eq!(one_still_open, Duration::ZERO);
        assert_eq!(none_open, 38 * SECOND);
    }

    #[test]
    fn registering_again_starts_the_silence_afresh() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        liveness.poll_opened("a", start);

        liveness.restart("a", start + 100 * SECOND);

        assert_eq!(liveness.silence("a", start + 101 * SECOND), SECOND);
    }
}
