//! Host selectors as Metal3 writes them: label equality plus requirements whose operators are
//! the lower-case `selection.Operator` strings (`in`, `notin`, `exists`, `!`, `=`, `==`, `!=`,
//! `gt`, `lt`), which differ from the `In`/`NotIn` spelling of Kubernetes label selectors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects hosts by their labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<HostSelectorRequirement>>,
}

/// One label requirement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HostSelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator; matched case-insensitively against the selection operators.
    pub operator: String,
    /// Values the operator compares with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// Operators accepted in a requirement once lower-cased.
pub const SELECTION_OPERATORS: &[&str] =
    &["in", "notin", "exists", "!", "=", "==", "!=", "gt", "lt"];
