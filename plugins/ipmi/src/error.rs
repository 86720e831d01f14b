//! Errors of the IPMI driver, each with a stable class for the host.

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

/// A failed IPMI operation.
#[derive(Debug, thiserror::Error)]
pub enum IpmiError {
    /// The host could not send or receive a datagram.
    #[error("datagram transport failed during {step}: {reason}")]
    Transport {
        /// Protocol step.
        step: &'static str,
        /// What the host reported.
        reason: String,
    },

    /// No valid answer after every retransmission.
    #[error("no answer from the BMC to {step} after {attempts} attempts")]
    NoAnswer {
        /// Protocol step.
        step: &'static str,
        /// Datagrams sent.
        attempts: u32,
    },

    /// Answers came, but none could be decoded.
    #[error("undecodable answers from the BMC to {step}: {reason}")]
    Malformed {
        /// Protocol step.
        step: &'static str,
        /// Why the last answer was rejected.
        reason: String,
    },

    /// The BMC refused a session handshake step with an RMCP+ status code.
    #[error("the BMC refused {step} with RMCP+ status {status:#04x} ({})", rakp_status_text(*status))]
    SessionRefused {
        /// Handshake step.
        step: &'static str,
        /// RMCP+ status code.
        status: u8,
    },

    /// The BMC's RAKP 2 proof does not match the password: wrong password,
    /// or an impostor.
    #[error("the BMC's RAKP 2 key exchange code does not match: the password is wrong")]
    PasswordMismatch,

    /// The session integrity check of RAKP 4 failed.
    #[error("the BMC's RAKP 4 integrity check value does not match")]
    SessionCheckFailed,

    /// No offered cipher suite was accepted.
    #[error("the BMC accepted neither cipher suite 17 nor 3")]
    NoCipherSuite,

    /// A command answered with a non-zero completion code.
    #[error("{command} failed with completion code {code:#04x} ({})", completion_code_text(*code))]
    Completion {
        /// Command name.
        command: &'static str,
        /// Completion code.
        code: u8,
    },

    /// The host's secret store failed.
    #[error("BMC credentials unavailable: {0}")]
    Secret(String),

    /// A value written was not what the BMC reports afterwards.
    #[error("{what} was accepted but not applied: expected {expected}, BMC reports {found}")]
    NotApplied {
        /// Which setting.
        what: &'static str,
        /// Value written.
        expected: String,
        /// Value read back.
        found: String,
    },

    /// The operation does not exist in IPMI or in this driver.
    #[error("not supported over IPMI: {0}")]
    Unsupported(String),
}

impl IpmiError {
    /// The stable class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transport { .. } | Self::NoAnswer { .. } => ErrorKind::Unreachable,
            Self::Malformed { .. } | Self::SessionCheckFailed | Self::NotApplied { .. } => {
                ErrorKind::Protocol
            }
            Self::SessionRefused { status, .. } => rakp_status_kind(*status),
            Self::PasswordMismatch | Self::Secret(_) => ErrorKind::Unauthorized,
            Self::NoCipherSuite | Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Completion { code, .. } => completion_code_kind(*code),
        }
    }
}

fn rakp_status_kind(status: u8) -> ErrorKind {
    match status {
        0x01 => ErrorKind::Transient,
        0x0D | 0x09 | 0x12 => ErrorKind::Unauthorized,
        0x04..=0x06 | 0x11 => ErrorKind::Unsupported,
        _ => ErrorKind::Protocol,
    }
}

fn rakp_status_text(status: u8) -> &'static str {
    match status {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x09 => "inactive session id or unauthorized role",
        0x0D => "unauthorized name",
        0x0F => "invalid integrity check value",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "other",
    }
}

fn completion_code_kind(code: u8) -> ErrorKind {
    match code {
        0xC1 | 0xC2 | 0xCB | 0xD5 => ErrorKind::Unsupported,
        0xD4 => ErrorKind::Unauthorized,
        0xC0 | 0xC3 | 0xCE | 0xD2 | 0xFF => ErrorKind::Transient,
        _ => ErrorKind::Protocol,
    }
}

fn completion_code_text(code: u8) -> &'static str {
    match code {
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC7 => "request data length invalid",
        0xC9 => "parameter out of range",
        0xCB => "requested data not present",
        0xCC => "invalid data field in request",
        0xCE => "command response could not be provided",
        0xD2 => "BMC initialization in progress",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xFF => "unspecified error",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_codes_are_classified() {
        let invalid = IpmiError::Completion {
            command: "x",
            code: 0xC1,
        };
        assert_eq!(invalid.kind(), ErrorKind::Unsupported);
        assert!(invalid.to_string().contains("invalid command"));
        let busy = IpmiError::Completion {
            command: "x",
            code: 0xC0,
        };
        assert_eq!(busy.kind(), ErrorKind::Transient);
        let privilege = IpmiError::Completion {
            command: "x",
            code: 0xD4,
        };
        assert_eq!(privilege.kind(), ErrorKind::Unauthorized);
    }
}
