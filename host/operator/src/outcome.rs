//! The closed set of results a reconcile step can produce.
//!
//! Every state handler returns one of these, so "must the status be saved" and "when do we look
//! again" are always explicit in the return value instead of hidden in side effects.

use std::time::Duration;

use crate::provisioner::ProvisionerError;

/// What a reconcile step decided.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to save; look again after the given delay (zero means at once).
    Continue { requeue_after: Duration },
    /// The status changed and must be saved; look again after the given delay.
    Update { requeue_after: Duration },
    /// The state changed; save it and look again at once.
    Complete,
    /// No provisioner capacity: the operational status is `delayed`; save and look again later.
    Delayed { requeue_after: Duration },
    /// A failure was recorded in the status; save it and retry after the backoff.
    Failed { requeue_after: Duration },
    /// A transient or internal failure: nothing is saved and the controller's error policy
    /// decides when to retry.
    Error(ProvisionerError),
    /// Nothing to save and nothing to do until the object changes again.
    AwaitChange,
    /// The host's finalizer may be removed: the host is gone from the provisioner.
    DeleteComplete,
}

impl Outcome {
    /// Continue at once, without saving.
    pub fn proceed() -> Self {
        Outcome::Continue {
            requeue_after: Duration::ZERO,
        }
    }

    /// Save the status and look again at once.
    pub fn update() -> Self {
        Outcome::Update {
            requeue_after: Duration::ZERO,
        }
    }

    /// Whether the status must be written after this step.
    pub fn saves_status(&self) -> bool {
        match self {
            Outcome::Update { .. }
            | Outcome::Complete
            | Outcome::Delayed { .. }
            | Outcome::Failed { .. } => true,
            Outcome::Continue { .. }
            | Outcome::Error(_)
            | Outcome::AwaitChange
            | Outcome::DeleteComplete => false,
        }
    }

    /// When to look at the host again; `None` means only when it changes.
    pub fn requeue_after(&self) -> Option<Duration> {
        match self {
            Outcome::Continue { requeue_after }
            | Outcome::Update { requeue_after }
            | Outcome::Delayed { requeue_after }
            | Outcome::Failed { requeue_after } => Some(*requeue_after),
            Outcome::Complete => Some(Duration::ZERO),
            Outcome::Error(_) | Outcome::AwaitChange | Outcome::DeleteComplete => None,
        }
    }

    /// A short stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Continue { .. } => "continue",
            Outcome::Update { .. } => "update",
            Outcome::Complete => "complete",
            Outcome::Delayed { .. } => "delayed",
            Outcome::Failed { .. } => "failed",
            Outcome::Error(_) => "error",
            Outcome::AwaitChange => "await-change",
            Outcome::DeleteComplete => "delete-complete",
        }
    }
}
