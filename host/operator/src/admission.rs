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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn host_with_foreign_user_data() -> Value {
        json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": "host-0", "namespace": "default"},
            "spec": {"online": true, "userData": {"name": "data", "namespace": "other"}}})
    }

    fn admit(object: &Value, status_subresource: bool) -> AdmissionResponse {
        Metal3Admission.admit(&AdmissionRequest {
            operation: Operation::Update,
            group: METAL3_GROUP,
            version: "v1alpha1",
            kind: "BareMetalHost",
            namespace: "default",
            name: "host-0",
            old_object: Some(object),
            object,
            status_subresource,
        })
    }

    #[test]
    fn a_cross_namespace_reference_is_refused_as_forbidden() {
        let response = admit(&host_with_foreign_user_data(), false);

        assert!(response.forbidden);
        assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
        assert_eq!(response.errors[0].field, "spec.userData.namespace");
        assert_eq!(response.errors[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn status_writes_are_not_judged() {
        let response = admit(&host_with_foreign_user_data(), true);

        assert_eq!(response, AdmissionResponse::default());
    }

    #[test]
    fn an_object_that_does_not_fit_its_kind_is_refused() {
        let mut object = host_with_foreign_user_data();
        object["spec"]["online"] = json!("yes");

        let response = admit(&object, false);

        assert!(!response.forbidden);
        assert!(
            response.errors[0]
                .message
                .contains("cannot decode the BareMetalHost"),
            "{:?}",
            response.errors
        );
    }
}
