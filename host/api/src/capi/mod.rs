//! Cluster API core objects (cluster.x-k8s.io) in the two versions served today. They are
//! typed for what the Metal3 provider reads and keep every other field untouched, so ingot can
//! serve them in its embedded API server and read them from real clusters.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod v1beta1;
pub mod v1beta2;

pub use crate::capm3::ApiEndpoint;

/// Labels and annotations given to machines created from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MachineTemplateMetadata {
    /// Labels; must satisfy the owner's selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}
