//! In-process extension points: admission (validation with warnings) and
//! conversion between the served versions of a custom resource.

use serde_json::Value;

use crate::error::FieldCause;

/// Whether an object is being created or updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create (POST, or apply of a missing object).
    Create,
    /// An update (PUT, PATCH, apply, status writes, finalizer changes).
    Update,
}

/// What an admission hook sees. Objects are in the resource's storage version,
/// after defaulting and schema validation.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    /// Create or update.
    pub operation: Operation,
    /// API group.
    pub group: &'a str,
    /// Storage version of `object`.
    pub version: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Namespace ("" for cluster-scoped).
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The current object, for updates.
    pub old_object: Option<&'a Value>,
    /// The object about to be stored.
    pub object: &'a Value,
    /// Whether the write came through the `status` subresource; upstream webhooks registered
    /// for the resource alone never see these writes.
    pub status_subresource: bool,
}

/// The verdict of an admission hook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmissionResponse {
    /// Field errors; any error rejects the write with 422 Invalid.
    pub errors: Vec<FieldCause>,
    /// Rejects the errors with 403 Forbidden instead, as upstream webhooks answer a reference
    /// the user may not make (e.g. to another namespace).
    pub forbidden: bool,
    /// Warnings sent back as `Warning: 299` headers.
    pub warnings: Vec<String>,
}

/// Validates writes of one group/kind. Called on every create and update that
/// changes the object; must not block for long (it runs on the request path).
pub trait AdmissionHook: Send + Sync {
    /// Judges one write.
    fn admit(&self, request: &AdmissionRequest<'_>) -> AdmissionResponse;
}

/// Why a conversion failed; answered to the client as a 500.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConversionError(pub String);

/// Converts objects of a CRD whose conversion strategy is `Webhook`.
pub trait ConversionHook: Send + Sync {
    /// Converts `object` (whatever its `apiVersion`) to `desired_api_version`.
    /// The returned object must carry `desired_api_version`.
    fn convert(&self, object: Value, desired_api_version: &str) -> Result<Value, ConversionError>;
}
