//! Errors of the Redfish driver, each with a stable class for the host.

use crate::transport::TransportError;

/// The class of a failure, which the host maps to the BareMetalHost's
/// `errorType` and to its retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The BMC could not be reached or did not answer in time.
    Unreachable,
    /// The BMC rejected the credentials.
    Unauthorized,
    /// The BMC or this driver cannot do what was asked.
    Unsupported,
    /// The BMC is busy or failed temporarily; retrying later may work.
    Transient,
    /// The BMC answered something this driver cannot make sense of.
    Protocol,
}

/// A failed Redfish operation.
#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    /// The host could not carry the request.
    #[error("{method} {path}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Path on the BMC.
        path: String,
        /// What the host reported.
        #[source]
        source: TransportError,
    },

    /// The BMC answered with an error status.
    #[error("{method} {path} answered HTTP {status}{}", message_suffix(message))]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Path on the BMC.
        path: String,
        /// Status code.
        status: u16,
        /// Message extracted from the Redfish error body, if any.
        message: String,
        /// First Redfish `MessageId` of the error body, if any.
        message_id: Option<String>,
    },

    /// A body was not the JSON resource expected.
    #[error("{path}: malformed response: {reason}")]
    Malformed {
        /// Path on the BMC.
        path: String,
        /// What was wrong.
        reason: String,
    },

    /// The operation or value is not offered by this BMC.
    #[error("not supported by this BMC: {0}")]
    Unsupported(String),

    /// The BMC accepted a change but reading it back shows it did not apply.
    #[error("{what} was accepted but not applied: expected {expected}, BMC reports {found}")]
    NotApplied {
        /// Which setting.
        what: &'static str,
        /// Value written.
        expected: String,
        /// Value read back.
        found: String,
    },

    /// The system to manage could not be chosen.
    #[error("cannot choose the system: {0}")]
    SystemSelection(String),

    /// An asynchronous task ended without success.
    #[error("task {uri} ended in state {state}: {message}")]
    TaskFailed {
        /// Task or task monitor URI.
        uri: String,
        /// Final task state.
        state: String,
        /// Task messages.
        message: String,
    },

    /// The BMC address cannot be used by this driver.
    #[error("invalid BMC address: {0}")]
    Address(String),
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl RedfishError {
    /// The HTTP status the BMC answered with, if it answered with an error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Redfish `MessageId` of the BMC's error, if it gave one.
    pub fn message_id(&self) -> Option<String> {
        match self {
            Self::Status { message_id, .. } => message_id.clone(),
            _ => None,
        }
    }

    /// The stable class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transport { source, .. } => transport_kind(source),
            Self::Status { status, .. } => status_kind(*status),
            Self::Malformed { .. } | Self::NotApplied { .. } | Self::TaskFailed { .. } => {
                ErrorKind::Protocol
            }
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::SystemSelection(_) | Self::Address(_) => ErrorKind::Protocol,
        }
    }
}

fn transport_kind(error: &TransportError) -> ErrorKind {
    match error {
        TransportError::Timeout | TransportError::Connect(_) | TransportError::Tls(_) => {
            ErrorKind::Unreachable
        }
        TransportError::NoCredentials(_) => ErrorKind::Unauthorized,
        TransportError::Denied(_) | TransportError::TooLarge(_) => ErrorKind::Protocol,
        TransportError::Other(_) => ErrorKind::Unreachable,
    }
}

/// Class of an HTTP error status.
pub fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Unauthorized,
        404 | 405 | 501 => ErrorKind::Unsupported,
        409 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Protocol,
    }
}
