//! infrastructure.cluster.x-k8s.io/v1beta2: the storage version, following the Cluster API
//! v1beta2 contract (`initialization.provisioned`, standard conditions, `image.diskFormat`).

use k8s_openapi::api::core::v1::{ObjectReference, SecretReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ApiEndpoint, AutomatedCleaningMode, ChecksumType, MachineAddress, V1Beta1Condition,
};
use crate::metal3::{CustomDeploy, DiskFormat};
use crate::selector::HostSelector;

/// Desired state of a Metal3Machine: which host to claim and what to put on it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Metal3Machine",
    doc = "The bare-metal infrastructure of one Cluster API Machine: which host to claim and what to put on it.",
    plural = "metal3machines",
    namespaced,
    status = "Metal3MachineStatus",
    shortname = "m3m",
    shortname = "m3machine",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of Metal3Machine"}"#,
    printcolumn = r#"{"name":"ProviderID","type":"string","jsonPath":".spec.providerID","description":"Provider ID"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"string","jsonPath":".status.initialization.provisioned","description":"The host is provisioned"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']","description":"Cluster to which this M3Machine belongs"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"metal3machine current phase"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Metal3MachineSpec {
    /// `metal3://<namespace>/<host>/<machine>`; set by the provider.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 512))]
    pub provider_id: Option<String>,
    /// Image written to the claimed host; required unless `customDeploy` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Custom deploy step used instead of an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_deploy: Option<CustomDeploy>,
    /// User data Secret in the machine's namespace; the Machine's bootstrap data wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<SecretReference>,
    /// Restricts which hosts may be claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<HostSelector>,
    /// Metal3DataTemplate rendering meta and network data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_template: Option<ObjectReference>,
    /// Meta data Secret in the machine's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<SecretReference>,
    /// Network data Secret in the machine's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<SecretReference>,
    /// Copied onto the claimed host when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated_cleaning_mode: Option<AutomatedCleaningMode>,
    /// Copied from the owning Machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
}

/// A machine image as written in v1beta2.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Where the image is downloaded from.
    pub url: String,
    /// Checksum value or URL of a checksum file; empty for `live-iso` and `oci://` images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Algorithm of `checksum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<ChecksumType>,
    /// Disk format (spelled `format` in v1beta1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<DiskFormat>,
}

/// Observed state of a Metal3Machine in v1beta2.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metal3MachineStatus {
    /// Provisioning milestones of the Cluster API contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Addresses reported by the claimed host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<MachineAddress>>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// The user data Secret actually used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<SecretReference>,
    /// The meta data Secret actually used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<SecretReference>,
    /// The network data Secret actually used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<SecretReference>,
    /// The Metal3Data rendered for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_data: Option<ObjectReference>,
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Standard conditions (Ready, AssociateBareMetalHost, Metal3DataReady, Paused, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// Fields kept for clients of the v1beta1 contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<Deprecated>,
}

/// Provisioning milestones of the Cluster API v1beta2 contract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Initialization {
    /// The infrastructure is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

/// Deprecated fields grouped by the contract version they belong to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Deprecated {
    /// v1beta1-contract fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1beta1: Option<V1Beta1Status>,
}

/// The v1beta1-contract status fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Beta1Status {
    /// Conditions in the v1beta1 shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<V1Beta1Condition>>,
    /// Terminal failure class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Terminal failure details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
}

/// Template from which a MachineSet's Metal3Machines are cloned.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Metal3MachineTemplate",
    doc = "Template from which a MachineSet's Metal3Machines are cloned.",
    plural = "metal3machinetemplates",
    namespaced,
    shortname = "m3mt",
    shortname = "m3machinetemplate",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of Metal3MachineTemplate"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Metal3MachineTemplateSpec {
    /// The Metal3Machine to clone.
    pub template: Metal3MachineTemplateResource,
    /// Re-use the same hosts when machines of this template are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub node_reuse: Option<bool>,
}

/// The cloned part of a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Metal3MachineTemplateResource {
    /// Spec of every Metal3Machine cloned from the template.
    pub spec: Metal3MachineSpec,
}

/// Infrastructure of a workload cluster running on bare-metal hosts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Metal3Cluster",
    doc = "The bare-metal infrastructure of a Cluster API workload cluster.",
    plural = "metal3clusters",
    namespaced,
    status = "Metal3ClusterStatus",
    shortname = "m3c",
    shortname = "m3cluster",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of Metal3Cluster"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"string","jsonPath":".status.initialization.provisioned","description":"The infrastructure is provisioned"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.controlPlaneEndpoint","description":"Control plane endpoint"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct Metal3ClusterSpec {
    /// Where the workload cluster's API server is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// A cloud provider sets node provider IDs (changes how the provider finds nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_provider_enabled: Option<bool>,
}

/// Observed state of a Metal3Cluster in v1beta2.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metal3ClusterStatus {
    /// Provisioning milestones of the Cluster API contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// Fields kept for clients of the v1beta1 contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<Deprecated>,
}
