//! The failure guard: repeated failures of one plugin stop calls to it.
//!
//! States: `Closed` (calls flow; failures are counted in a sliding window),
//! `Open` (the window held `max_failures` failures; calls are refused and
//! the failure policy applies until the cooldown ends), `HalfOpen` (one trial
//! call is let through: success closes the guard, failure opens it again).
//! Loading a new version of the plugin resets the guard.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use crate::limits::GuardSettings;

/// The guard's state, as reported in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GuardState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
    /// One trial call is in flight.
    HalfOpen,
}

/// The guard of one plugin.
#[derive(Debug)]
pub struct FailureGuard {
    settings: GuardSettings,
    failures: VecDeque<Instant>,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl FailureGuard {
    /// A closed guard.
    pub fn new(settings: GuardSettings) -> Self {
        Self {
            settings,
            failures: VecDeque::new(),
            opened_at: None,
            trial_in_flight: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> GuardState {
        match (self.opened_at, self.trial_in_flight) {
            (None, _) => GuardState::Closed,
            (Some(_), true) => GuardState::HalfOpen,
            (Some(_), false) => GuardState::Open,
        }
    }

    /// Whether a call may go to the plugin now. After the cooldown the
    /// first caller gets the trial call.
    pub fn admit(&mut self, now: Instant) -> bool {
        let Some(opened_at) = self.opened_at else {
            return true;
        };

        let cooled_down = now.duration_since(opened_at) >= self.settings.cooldown;
        if cooled_down && !self.trial_in_flight {
            self.trial_in_flight = true;
            return true;
        }

        false
    }

    /// Lets the next caller after the cooldown have the trial that was under way: its caller
    /// gave up before the plugin answered, which says nothing about the plugin. Without this,
    /// an abandoned trial would keep the guard half-open, refusing every call, for ever.
    pub fn abandon_trial(&mut self) {
        self.trial_in_flight = false;
    }

    /// Records a successful call (a domain error counts as success: the
    /// plugin worked).
    pub fn record_success(&mut self) {
        if self.opened_at.is_some() && self.trial_in_flight {
            tracing::info!("plugin trial call succeeded; failure guard closed");
        }

        self.failures.clear();
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    /// Records a failed call; returns true when this failure opened the guard.
    pub fn record_failure(&mut self, now: Instant) -> bool {
        if self.opened_at.is_some() {
            self.opened_at = Some(now);
            self.trial_in_flight = false;
            return false;
        }

        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|failure| now.duration_since(*failure) > self.settings.window)
        {
            self.failures.pop_front();
        }

        if self.failures.len() >= self.settings.max_failures as usize {
            self.opened_at = Some(now);
            self.failures.clear();
            return true;
        }

        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> GuardSettings {
        GuardSettings {
            max_failures: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_max_failures_within_the_window() {
        let mut guard = FailureGuard::new(settings());
        let start = Instant::now();

        assert!(!guard.record_failure(start));
        assert!(!guard.record_failure(start + Duration::from_secs(1)));
        assert!(guard.record_failure(start + Duration::from_secs(2)));
        assert_eq!(guard.state(), GuardState::Open);
        assert!(!guard.admit(start + Duration::from_secs(3)));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut guard = FailureGuard::new(settings());
        let start = Instant::now();

        guard.record_failure(start);
        guard.record_failure(start + Duration::from_secs(1));
        assert!(!guard.record_failure(start + Duration::from_secs(20)));
        assert_eq!(guard.state(), GuardState::Closed);
    }

    /// A guard opened by failures at `start`, and a moment after its cooldown.
    fn opened_at(start: Instant) -> (FailureGuard, Instant) {
        let mut guard = FailureGuard::new(settings());
        (0..3).for_each(|_| {
            guard.record_failure(start);
        });
        (guard, start + Duration::from_secs(6))
    }

    #[test]
    fn half_open_trial_closes_or_reopens() {
        let (mut guard, later) = opened_at(Instant::now());
        assert!(guard.admit(later));
        assert_eq!(guard.state(), GuardState::HalfOpen);
        assert!(!guard.admit(later), "only one trial at a time");

        guard.record_failure(later);
        assert_eq!(guard.state(), GuardState::Open);
        assert!(!guard.admit(later + Duration::from_secs(1)));

        assert!(guard.admit(later + Duration::from_secs(6)));
        guard.record_success();
        assert_eq!(guard.state(), GuardState::Closed);
    }

    #[test]
    fn an_abandoned_trial_hands_the_trial_to_the_next_caller() {
        let (mut guard, later) = opened_at(Instant::now());
        assert!(guard.admit(later));

        guard.abandon_trial();

        assert_eq!(guard.state(), GuardState::Open);
        assert!(guard.admit(later), "the next caller gets the trial");
    }

    #[test]
    fn success_resets_the_count() {
        let mut guard = FailureGuard::new(settings());
        let start = Instant::now();

        guard.record_failure(start);
        guard.record_failure(start);
        guard.record_success();
        assert!(!guard.record_failure(start));
        assert_eq!(guard.state(), GuardState::Closed);
    }
}
