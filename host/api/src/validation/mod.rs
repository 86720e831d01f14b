//! Admission rules: pure functions that return every problem at once, each with the path of
//! the field it concerns.
//!
//! The admission webhook, the embedded API server and `ingot validate` all reach these through
//! [`judge`], which picks the rules by kind:
//! - [`validate_create`] and [`validate_update`] for BareMetalHost (errors refuse the object),
//!   [`host_warnings`] for things upstream admits but that are almost certainly mistakes;
//! - [`validate_metal3_machine`] / [`validate_metal3_machine_template`] for the provider objects;
//! - [`meta`] for object names, namespaces, labels and annotations.
//!
//! Enums, patterns and required fields are enforced by the CRD schemas (see
//! the generated CRDs); the rules here are the cross-field and driver rules on top of them.

mod admission;
mod bmh;
mod capm3;
pub mod meta;

use std::fmt;

pub use admission::{UndecodableObject, Verdict, judge};
pub use bmh::{host_warnings, validate_create, validate_update};
pub use capm3::{validate_metal3_machine, validate_metal3_machine_template};

/// What kind of problem a [`FieldError`] reports, following Kubernetes' field error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required value is missing.
    Required,
    /// A value is malformed or out of range.
    Invalid,
    /// A value is not one of the allowed ones.
    NotSupported,
    /// The value is not allowed here (e.g. a cross-namespace reference).
    Forbidden,
    /// The value repeats one that must be unique.
    Duplicate,
    /// A field the schema does not declare.
    Unknown,
    /// A value of the wrong JSON type.
    TypeInvalid,
    /// A string or list exceeds its limit.
    TooLong,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Required => "Required value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Unknown => "Unknown field",
            ErrorKind::TypeInvalid => "Invalid type",
            ErrorKind::TooLong => "Too long",
        })
    }
}

/// One reason an object is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.bmc.address` or `metadata.annotations[inspect.metal3.io]`.
    pub path: String,
    /// Class of problem.
    pub kind: ErrorKind,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl FieldError {
    /// A new error of `kind` at `path`.
    pub fn new(kind: ErrorKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }

    /// A missing required value.
    pub fn required(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Required, path, message)
    }

    /// A malformed value.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, path, message)
    }

    /// A value that is not allowed.
    pub fn forbidden(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, path, message)
    }

    /// The problem without the field path, e.g. `Invalid value: checksum is required`.
    pub fn description(&self) -> String {
        if self.message.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}: {}", self.kind, self.message)
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.description())
    }
}

/// Something admitted that is probably a mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWarning {
    /// Dotted path of the field concerned.
    pub path: String,
    /// What looks wrong and why.
    pub message: String,
}

impl FieldWarning {
    /// A new warning at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Parses a MAC address the way Go's `net.ParseMAC` does: 6, 8 or 20 octets written as
/// `xx:xx:..`, `xx-xx-..` or `xxxx.xxxx.xxxx`.
pub fn parse_mac(text: &str) -> Option<Vec<u8>> {
    let colon_or_dash = text.contains(':') || text.contains('-');
    let groups: Vec<&str> = if colon_or_dash {
        text.split([':', '-']).collect()
    } else {
        text.split('.').collect()
    };
    let group_len = if colon_or_dash { 2 } else { 4 };
    let mixed_separators = text.contains(':') && text.contains('-');
    if mixed_separators || groups.iter().any(|group| group.len() != group_len) {
        return None;
    }
    let bytes: Vec<u8> = groups
        .iter()
        .flat_map(|group| {
            (0..group.len())
                .step_by(2)
                .map(move |start| u8::from_str_radix(&group[start..start + 2], 16))
        })
        .collect::<Result<_, _>>()
        .ok()?;
    matches!(bytes.len(), 6 | 8 | 20).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing_matches_go() {
        assert_eq!(
            parse_mac("00:5c:52:00:01:0A").map(|bytes| bytes.len()),
            Some(6)
        );
        assert!(parse_mac("00-5c-52-00-01-0a").is_some());
        assert!(parse_mac("005c.5200.010a").is_some());
        assert!(parse_mac("00:00:5e:00:53:01:02:03").is_some());
        assert!(parse_mac("00:aa:bb:cc:dd").is_none());
        assert!(parse_mac("00:5c:52-00:01:0a").is_none());
        assert!(parse_mac("<PXE_MACADDRESS>").is_none());
        assert!(parse_mac("0:5c:52:00:01:0a").is_none());
    }

    #[test]
    fn errors_print_path_kind_and_message() {
        let error = FieldError::required("spec.online", "");
        assert_eq!(error.to_string(), "spec.online: Required value");
        let error = FieldError::invalid("spec.bmc.address", "bad");
        assert_eq!(error.to_string(), "spec.bmc.address: Invalid value: bad");
    }
}
