//! Per-plugin resource limits and failure handling settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every call of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// Wall-clock budget of one call, including host I/O, in milliseconds.
    pub timeout_ms: u64,
    /// Cap on the linear memory of one call's instance, in bytes.
    pub memory_bytes: u64,
    /// Cap on table elements of one call's instance.
    pub table_elements: usize,
    /// Cap on captured guest stdout and stderr, in bytes each.
    pub output_bytes: usize,
    /// Cap on log records one call may emit; further records are dropped.
    pub log_records: usize,
    /// Cap on the size of one HTTP or datagram response from the BMC, in bytes.
    pub response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            memory_bytes: 64 << 20,
            table_elements: 100_000,
            output_bytes: 64 << 10,
            log_records: 256,
            response_bytes: 8 << 20,
        }
    }
}

impl Limits {
    /// Limits suited to pure computations such as host selection.
    pub fn for_selection() -> Self {
        Self {
            timeout_ms: 1_000,
            ..Self::default()
        }
    }

    /// The call budget as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What callers get once a plugin's failure guard has tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FailurePolicy {
    /// Calls fail with [`crate::CallError::GuardOpen`]; the operation stops.
    #[default]
    Fail,
    /// Calls fail with [`crate::CallError::Ignored`]; the caller proceeds as
    /// if the plugin had no opinion (for example, keeps the built-in order).
    Ignore,
    /// Calls go to the built-in plugin registered for the same world.
    UseBuiltin,
}

/// When repeated failures trip a plugin's guard, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Failures (timeouts, crashes, exhausted resources, denied capabilities)
    /// within `window` that trip the guard.
    pub max_failures: u32,
    /// Sliding window over which failures are counted.
    pub window: Duration,
    /// How long the guard stays open before one trial call is let through.
    pub cooldown: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}
