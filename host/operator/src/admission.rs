//! The Metal3 admission rules as an in-process hook of the embedded API server, so that
//! `ingot apiserver`, `ingot dev` and the test sites refuse what a real Metal3 cluster refuses.
//! The HTTPS webhook ([`crate::webhook`]) reaches the same decision through
//! [`validation::judge`].

use std::sync::Arc;

use ingot_api::validation::{self, ErrorKind, FieldError, Verdict};
use ingot_api::{CAPM3_GROUP, METAL3_GROUP};
use ingot_apiserver::{
    AdmissionHook, AdmissionRequest, AdmissionResponse, ApiServerBuilder, FieldCause, Operation,
};

/// The kinds with admission rules, by group.
const ADMITTED_KINDS: [(&str, &str); 3] = [
    (METAL3_GROUP, "BareMetalHost"),
    (CAPM3_GROUP, "Metal3Machine"),
    (CAPM3_GROUP, "Metal3MachineTemplate"),
];

/// Judges BareMetalHost, Metal3Machine and Metal3MachineTemplate writes.
pub struct Metal3Admission;

impl Metal3Admission {
    /// Registers the rules for every kind that has them.
    pub fn register(builder: ApiServerBuilder) -> ApiServerBuilder {
        let hook: Arc<dyn AdmissionHook> = Arc::new(Metal3Admission);
        ADMITTED_KINDS
            .iter()
            .fold(builder, |builder, (group, kind)| {
                builder.admission_hook(group, kind, hook.clone())
            })
    }
}

impl AdmissionHook for Metal3Admission {
    fn admit(&self, request: &AdmissionRequest<'_>) -> AdmissionResponse {
        // Upstream's webhook is registered for the resources, not their status subresource,
        // so the controller's status writes are never judged.
        if request.status_subresource {
            return AdmissionResponse::default();
        }

        let old = match request.operation {
            Operation::Create => None,
            Operation::Update => request.old_object,
        };
        match validation::judge(request.object, old) {
            Ok(verdict) => answer(&verdict),
            Err(undecodable) => AdmissionResponse {
                errors: vec![FieldCause::with_reason(
                    "FieldValueInvalid",
                    "",
                    undecodable.to_string(),
                )],
                ..AdmissionResponse::default()
            },
        }
    }
}

fn answer(verdict: &Verdict) -> AdmissionResponse {
    AdmissionResponse {
        errors: verdict.errors.iter().map(cause).collect(),
        warnings: verdict.warnings.iter().map(ToString::to_string).collect(),
        forbidden: verdict.forbidden(),
    }
}

fn cause(error: &FieldError) -> FieldCause {
    FieldCause::with_reason(reason(error.kind), &error.path, error.description())
}

/// The upstream `StatusCause` reason of each kind of field error.
fn reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Required => "FieldValueRequired",
        // Kubernetes has no reason for an undeclared field; strict decoding calls it invalid.
        ErrorKind::Invalid | ErrorKind::Unknown => "FieldValueInvalid",
        ErrorKind::NotSupported => "FieldValueNotSupported",
        ErrorKind::Forbidden => "FieldValueForbidden",
        ErrorKind::Duplicate => "FieldValueDuplicate",
        ErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        ErrorKind::TooLong => "FieldValueTooLong",
    }
}
