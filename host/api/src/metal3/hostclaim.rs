//! `HostClaim` (metal3.io/v1alpha1): a request for one BareMetalHost chosen by label selector or
//! failure domain, carrying what the host should run. It lets a consumer (such as the machine
//! loop) claim a host without editing the host itself.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bmh::{CustomDeploy, Image, NamespacedName};
use crate::selector::HostSelector;

/// Desired state of a host claim.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metal3.io",
    version = "v1alpha1",
    kind = "HostClaim",
    doc = "A request for one BareMetalHost, chosen by labels or failure domain, and what it should run.",
    plural = "hostclaims",
    namespaced,
    status = "HostClaimStatus",
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.bareMetalHost.name","description":"The claimed BareMetalHost"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of HostClaim"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HostClaimSpec {
    /// Only hosts matching this selector may be claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<HostSelector>,
    /// Prefer hosts labelled with this failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Desired power state of the claimed host.
    #[serde(default)]
    pub powered_on: bool,
    /// Image to provision on the claimed host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Custom deploy step instead of an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,
    /// User data Secret, in the claim's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<SecretReference>,
    /// Network data Secret, in the claim's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<SecretReference>,
    /// Meta data Secret, in the claim's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<SecretReference>,
}

/// Observed state of a host claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostClaimStatus {
    /// The host bound to this claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_metal_host: Option<NamespacedName>,
    /// Last observed power state of the bound host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powered_on: Option<bool>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}
