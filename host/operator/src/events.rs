//! Events recorded while reconciling a host, published by the controller afterwards.

use std::sync::{Arc, Mutex, PoisonError};

/// Whether an event reports normal progress or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Normal progress.
    Normal,
    /// Something went wrong.
    Warning,
}

/// One event about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    /// Normal or warning.
    pub kind: EventKind,
    /// A CamelCase reason, stable for tooling (for example `BMCAccessValidated`).
    pub reason: String,
    /// A human-readable message, free of secrets.
    pub message: String,
}

/// A shared, append-only list of events; the state machine and the provisioner both publish
/// into it and the controller drains it after the reconcile.
#[derive(Debug, Clone, Default)]
pub struct EventSink(Arc<Mutex<Vec<HostEvent>>>);

impl EventSink {
    /// Records a normal event.
    pub fn normal(&self, reason: &str, message: impl Into<String>) {
        self.push(EventKind::Normal, reason, message.into());
    }

    /// Records a warning event.
    pub fn warning(&self, reason: &str, message: impl Into<String>) {
        self.push(EventKind::Warning, reason, message.into());
    }

    /// Takes every event recorded so far.
    pub fn drain(&self) -> Vec<HostEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, kind: EventKind, reason: &str, message: String) {
        let event = HostEvent {
            kind,
            reason: reason.to_string(),
            message,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}
