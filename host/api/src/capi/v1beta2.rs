//! cluster.x-k8s.io/v1beta2 core objects, typed for the fields the Metal3 provider reads.
//! Every struct keeps the fields it does not type in `other`, so nothing is dropped.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiEndpoint, MachineTemplateMetadata};

/// A workload cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Cluster",
    doc = "A Cluster API workload cluster.",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    shortname = "cl",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Cluster status such as Pending/Provisioning/Provisioned/Deleting/Failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of Cluster"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Reconciliation of the cluster and its machines is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Where the workload cluster's API server is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// The control plane provider's object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_ref: Option<ContractReference>,
    /// The infrastructure provider's object (a Metal3Cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractReference>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A reference to a provider object in the same namespace, by API group, kind and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractReference {
    /// API group of the referenced object.
    pub api_group: String,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
}

/// Observed state of a Cluster (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Provisioning milestones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitialization>,
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Provisioning milestones of a Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInitialization {
    /// The infrastructure object is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// The control plane is initialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

/// One machine of a workload cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Machine",
    doc = "One Cluster API machine of a workload cluster.",
    plural = "machines",
    namespaced,
    status = "MachineStatus",
    shortname = "ma",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterName","description":"Cluster"}"#,
    printcolumn = r#"{"name":"ProviderID","type":"string","jsonPath":".spec.providerID","description":"Provider ID"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Machine status such as Terminating/Pending/Running/Failed etc"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of Machine"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    /// Name of the Cluster this machine belongs to.
    pub cluster_name: String,
    /// Where the machine's bootstrap data comes from.
    pub bootstrap: Bootstrap,
    /// The infrastructure provider's object (a Metal3Machine).
    pub infrastructure_ref: ContractReference,
    /// Kubernetes version of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provider ID, copied from the infrastructure object.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Failure domain the machine is placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Deletion timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<MachineDeletion>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Bootstrap data source of a machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// The bootstrap provider's object (e.g. a KubeadmConfig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ContractReference>,
    /// Secret holding the bootstrap data, when set directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// Deletion timeouts of a machine, in seconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineDeletion {
    /// Longest node drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_drain_timeout_seconds: Option<i64>,
    /// Longest wait for volumes to detach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_volume_detach_timeout_seconds: Option<i64>,
    /// Longest wait for the Node to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_deletion_timeout_seconds: Option<i64>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Observed state of a Machine (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Provisioning milestones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<MachineInitialization>,
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Provisioning milestones of a Machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineInitialization {
    /// Bootstrap data is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_data_secret_created: Option<bool>,
    /// The infrastructure object is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
}

/// Keeps a number of identical machines.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "MachineSet",
    doc = "Keeps a number of identical Cluster API machines.",
    plural = "machinesets",
    namespaced,
    status = "ReplicaStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    shortname = "ms",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterName","description":"Cluster"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas","description":"Total number of machines"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of MachineSet"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MachineSetSpec {
    /// Name of the Cluster the machines belong to.
    pub cluster_name: String,
    /// Desired number of machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the machines owned by this set; must match the template labels.
    pub selector: LabelSelector,
    /// Machines are created from this template.
    pub template: MachineTemplateSpec,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Rolls out machines through MachineSets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "MachineDeployment",
    doc = "Rolls out Cluster API machines through MachineSets.",
    plural = "machinedeployments",
    namespaced,
    status = "ReplicaStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    shortname = "md",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterName","description":"Cluster"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas","description":"Total number of machines"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time duration since creation of MachineDeployment"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MachineDeploymentSpec {
    /// Name of the Cluster the machines belong to.
    pub cluster_name: String,
    /// Desired number of machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the machines owned by this deployment; must match the template labels.
    pub selector: LabelSelector,
    /// Machines are created from this template.
    pub template: MachineTemplateSpec,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The machine template of a MachineSet or MachineDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MachineTemplateSpec {
    /// Labels and annotations of created machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MachineTemplateMetadata>,
    /// Spec of created machines.
    pub spec: MachineSpec,
}

/// Replica counts of a MachineSet or MachineDeployment; everything is kept as written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReplicaStatus {
    /// Number of machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the machines, in its string form (`key=value,...`), for the
    /// `/scale` subresource (which is how `kubectl scale` and autoscalers find the machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Fields not typed here, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}
