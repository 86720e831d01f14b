//! Errors answered to API clients as `Status` objects, in the format the
//! upstream API server uses so that kube-rs and kubectl react to them the same way.

use serde_json::{Value, json};

/// One field-level problem inside a 422 `Invalid` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCause {
    /// Upstream cause reason, e.g. `FieldValueInvalid` or `FieldValueRequired`.
    pub reason: String,
    /// Dotted field path, e.g. `spec.size`.
    pub field: String,
    /// The message without the field prefix, e.g. `Invalid value: 0: must be positive`.
    pub message: String,
}

impl FieldCause {
    /// `field: Invalid value: <value>: <detail>` (reason `FieldValueInvalid`).
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        Self::with_reason(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {detail}", render_value(value)),
        )
    }

    /// A type mismatch; upstream shows the JSON type name as the bad value.
    pub fn type_invalid(field: &str, actual_type: &str, detail: &str) -> Self {
        Self::with_reason(
            "FieldValueTypeInvalid",
            field,
            format!("Invalid value: \"{actual_type}\": {detail}"),
        )
    }

    /// `field: Required value`.
    pub fn required(field: &str) -> Self {
        Self::with_reason("FieldValueRequired", field, "Required value".to_string())
    }

    /// `field: Forbidden: <detail>`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self::with_reason("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }

    /// `field: Unsupported value: <value>: supported values: ...`.
    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(render_value).collect();
        Self::with_reason(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                allowed.join(", ")
            ),
        )
    }

    /// `field: Too long: may not be more than N <unit>`.
    pub fn too_long(field: &str, limit: u64, unit: &str) -> Self {
        Self::with_reason(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {limit} {unit}"),
        )
    }

    /// `field: Too many: N: must have at most M items`.
    pub fn too_many(field: &str, actual: usize, limit: u64) -> Self {
        Self::with_reason(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {limit} items"),
        )
    }

    /// A cause with an explicit upstream reason.
    pub fn with_reason(reason: &str, field: &str, message: String) -> Self {
        Self {
            reason: reason.to_string(),
            field: field.to_string(),
            message,
        }
    }

    fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Renders a value the way upstream field errors quote it: strings quoted, numbers bare.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// An error answered to the client as a `Status` with an HTTP code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Upstream `StatusReason`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The `details` object, when upstream sends one.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404 for a missing object of a resource (`widgets.demo.example.com "w1" not found`).
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", group_resource(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for a path that names nothing.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 for a create of an existing name.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                group_resource(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 for a write based on a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict_with(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with an explicit explanation (e.g. a failed precondition).
    pub fn conflict_with(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                group_resource(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 for server-side apply conflicts.
    pub fn apply_conflicts(
        group: &str,
        plural: &str,
        name: &str,
        conflicts: &[(String, String)],
        api_version: &str,
    ) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| {
                format!("conflict with \"{manager}\" using {api_version}: {field}")
            })
            .collect();
        let message = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                lines.len(),
                lines.join("\n")
            )
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .zip(&lines)
            .map(|((_, field), line)| json!({"reason": "FieldManagerConflict", "message": line, "field": field}))
            .collect();
        Self::new(409, "Conflict", message)
            .with_details(json!({"name": name, "group": group, "kind": plural, "causes": causes}))
    }

    /// 422 with field causes (`Widget.demo.example.com "w1" is invalid: ...`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[FieldCause]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {}", summary(causes)),
        )
        .with_details(
            json!({"name": name, "group": group, "kind": kind, "causes": cause_details(causes)}),
        )
    }

    /// 403 with field causes (`widgets.demo.example.com "w1" is forbidden: ...`), for writes an
    /// admission hook refuses as not allowed rather than malformed.
    pub fn forbidden_fields(group: &str, plural: &str, name: &str, causes: &[FieldCause]) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {}",
                group_resource(group, plural),
                summary(causes)
            ),
        )
        .with_details(
            json!({"name": name, "group": group, "kind": plural, "causes": cause_details(causes)}),
        )
    }

    /// 422 without field causes (e.g. a failed JSON patch `test`).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message).with_details(json!({}))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 401 for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 406 when no acceptable media type can be produced.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json (requested {accept})"
            ),
        )
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 410 for a list or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object sent as the body (or as a watch `ERROR` event object).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(map)) = (&self.details, status.as_object_mut()) {
            map.insert("details".to_string(), details.clone());
        }
        status
    }
}

/// One cause alone, or every cause in brackets, as upstream aggregates field errors.
fn summary(causes: &[FieldCause]) -> String {
    let rendered: Vec<String> = causes.iter().map(FieldCause::display).collect();
    match rendered.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn cause_details(causes: &[FieldCause]) -> Vec<Value> {
    causes
        .iter()
        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect()
}

/// `widgets.demo.example.com` for CRs, `configmaps` for the core group.
pub fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_upstream_layout() {
        let cause = FieldCause::type_invalid(
            "spec.size",
            "string",
            "spec.size in body must be of type integer: \"string\"",
        );
        let err = ApiError::invalid("demo.example.com", "Widget", "w1", &[cause]);
        assert_eq!(
            err.message,
            "Widget.demo.example.com \"w1\" is invalid: spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
        assert_eq!(
            err.to_status()["details"]["causes"][0]["reason"],
            "FieldValueTypeInvalid"
        );
        assert_eq!(err.to_status()["code"], 422);
    }

    #[test]
    fn several_causes_are_bracketed() {
        let err = ApiError::invalid(
            "",
            "ConfigMap",
            "c",
            &[FieldCause::required("a"), FieldCause::required("b")],
        );
        assert!(
            err.message
                .ends_with("[a: Required value, b: Required value]"),
            "{}",
            err.message
        );
    }
}
