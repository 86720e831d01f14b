//! One admission decision for every path that admits objects: the HTTPS webhook, the embedded
//! API server's in-process hook and `ingot validate` all judge an object through [`judge`], so
//! they cannot disagree about what Metal3 refuses.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    ErrorKind, FieldError, FieldWarning, host_warnings, validate_create, validate_metal3_machine,
    validate_metal3_machine_template, validate_update,
};
use crate::capm3::v1beta2::{Metal3Machine, Metal3MachineTemplate};
use crate::metal3::BareMetalHost;
use crate::{CAPM3_GROUP, METAL3_GROUP, conversion, crds};

/// The outcome of the admission rules for one write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every reason to refuse the write; empty when it is admitted.
    pub errors: Vec<FieldError>,
    /// Things admitted that are probably mistakes, shown to the client.
    pub warnings: Vec<FieldWarning>,
}

impl Verdict {
    fn refusing(errors: Vec<FieldError>) -> Self {
        Verdict {
            errors,
            warnings: Vec::new(),
        }
    }

    /// Whether the write may go ahead.
    pub fn admitted(&self) -> bool {
        self.errors.is_empty()
    }

    /// Upstream answers 403 Forbidden instead of 422 Invalid when any problem is a forbidden
    /// value (a cross-namespace Secret reference).
    pub fn forbidden(&self) -> bool {
        self.errors
            .iter()
            .any(|error| error.kind == ErrorKind::Forbidden)
    }
}

/// The object does not fit its kind, so no rule could judge it.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the {kind}: {reason}")]
pub struct UndecodableObject {
    /// The kind named by the object.
    pub kind: String,
    /// Why decoding failed.
    pub reason: String,
}

/// Judges `object` being created (`old` is `None`) or replacing `old`. The kind comes from the
/// object's `apiVersion` and `kind`; kinds without admission rules are admitted unchanged.
/// Metal3Machine and Metal3MachineTemplate are judged in their storage version whatever
/// version they arrive in.
///
/// # Errors
/// [`UndecodableObject`] when the object (or the old one) does not decode as its kind.
pub fn judge(object: &Value, old: Option<&Value>) -> Result<Verdict, UndecodableObject> {
    let api_version = text_at(object, "/apiVersion");
    let kind = text_at(object, "/kind");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        (METAL3_GROUP, "BareMetalHost") => judge_host(object, old),
        (CAPM3_GROUP, "Metal3Machine") => {
            let machine: Metal3Machine = decode_in_storage_version(object)?;
            Ok(Verdict::refusing(validate_metal3_machine(&machine)))
        }
        (CAPM3_GROUP, "Metal3MachineTemplate") => {
            let template: Metal3MachineTemplate = decode_in_storage_version(object)?;
            Ok(Verdict::refusing(validate_metal3_machine_template(
                &template,
            )))
        }
        _ => Ok(Verdict::default()),
    }
}

fn judge_host(object: &Value, old: Option<&Value>) -> Result<Verdict, UndecodableObject> {
    let host: BareMetalHost = decode(object.clone())?;
    let errors = match old {
        Some(old) => validate_update(&decode(old.clone())?, &host),
        None => validate_create(&host),
    };
    Ok(Verdict {
        errors,
        warnings: host_warnings(&host),
    })
}

fn decode_in_storage_version<T: DeserializeOwned>(object: &Value) -> Result<T, UndecodableObject> {
    let api_version = text_at(object, "/apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let storage = format!("{group}/{}", crds::STORAGE_VERSION);
    let converted =
        conversion::convert(object.clone(), &storage).map_err(|error| UndecodableObject {
            kind: text_at(object, "/kind").to_string(),
            reason: error.to_string(),
        })?;
    decode(converted)
}

fn decode<T: DeserializeOwned>(object: Value) -> Result<T, UndecodableObject> {
    let kind = text_at(&object, "/kind").to_string();
    serde_json::from_value(object).map_err(|error| UndecodableObject {
        kind,
        reason: error.to_string(),
    })
}

fn text_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}
