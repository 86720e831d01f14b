//! A small stand-in for Cluster API core's MachineSet and Machine controllers, used only by
//! `ingot dev`.
//!
//! The embedded default runs no Cluster API controllers, yet the Metal3 provider needs their
//! effects to do anything: a MachineSet must turn `replicas` into Machines, each Machine needs
//! an infrastructure object cloned from its template, bootstrap data, a providerID copied back
//! once the infrastructure is provisioned, and an orderly deletion when the set shrinks.
//! Against a real management cluster, real Cluster API does all of this and this module is not
//! used.
//!
//! What it does, following upstream behaviour:
//! - **Cluster**: records `status.initialization.infrastructureProvisioned` once its
//!   Metal3Cluster reports provisioned, which the Metal3Machine controller waits for.
//! - **MachineSet** (`cluster.x-k8s.io/v1beta2`): counts the Machines it owns; creates the
//!   missing ones from `spec.template` (labels, annotations, spec, owner reference), each with
//!   a Metal3Machine cloned from the Metal3MachineTemplate the template references, under the
//!   Machine's name and owned by the Machine; deletes the surplus in upstream deletion order
//!   (already deleting, then annotated `cluster.x-k8s.io/delete-machine`, then by name, since
//!   no Machine has a Node here); keeps `status.replicas`, `readyReplicas` and the
//!   serialized `status.selector` the `/scale` subresource reports.
//! - **Machine**: when the template names no bootstrap data, writes a cloud-config bootstrap
//!   Secret (`<machine>-bootstrap`, key `value`) and sets `spec.bootstrap.dataSecretName`, as a
//!   bootstrap provider would; copies `spec.providerID` and the addresses from the
//!   Metal3Machine once it reports provisioned; on deletion deletes the Metal3Machine, waits
//!   until it is gone (the provider deprovisions the host meanwhile), deletes the bootstrap
//!   Secret and releases its finalizer.
//!
//! What it leaves out: MachineDeployments and rollouts, Nodes (there is no workload cluster),
//! drain, remediation, in-place updates, pre-drain and pre-terminate hooks.

mod cluster;
mod machine;
mod machineset;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};

pub use machineset::selector_string;

/// Finalizer Cluster API core puts on every Machine.
pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
/// Label naming the Cluster a Machine belongs to.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label naming the MachineSet that created a Machine.
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
/// Annotation that makes a Machine the first one removed on scale-down.
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// Annotation naming the template an infrastructure object was cloned from.
pub const CLONED_FROM_NAME_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-name";
/// Annotation naming the kind of the template an infrastructure object was cloned from.
pub const CLONED_FROM_GROUP_KIND_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-groupkind";
/// Suffix of the bootstrap data Secret written for a Machine without bootstrap data.
pub const BOOTSTRAP_SECRET_SUFFIX: &str = "-bootstrap";

/// How long a Machine waits before looking at its Metal3Machine again.
const INFRASTRUCTURE_POLL: Duration = Duration::from_secs(2);

/// Failures of the stand-in controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write to the API server failed.
    #[error("{action} {kind} {namespace}/{name}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The MachineSet's template references an infrastructure template that does not exist.
    #[error(
        "the Metal3MachineTemplate {namespace}/{name} referenced by MachineSet {set} does not exist"
    )]
    MissingTemplate {
        /// Namespace.
        namespace: String,
        /// Template name.
        name: String,
        /// The MachineSet.
        set: String,
    },
    /// The MachineSet's template references another kind of infrastructure.
    #[error(
        "MachineSet {set} references a {kind}; this stand-in clones only Metal3MachineTemplates"
    )]
    UnsupportedInfrastructure {
        /// The MachineSet.
        set: String,
        /// The referenced kind.
        kind: String,
    },
    /// Every generated Machine name was taken.
    #[error("cannot find a free Machine name for MachineSet {set}")]
    NameCollisions {
        /// The MachineSet.
        set: String,
    },
    /// An object could not be encoded or decoded.
    #[error("cannot encode or decode {what}")]
    Encoding {
        /// What.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    fn api(
        action: &'static str,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Self {
        let namespace = namespace.to_string();
        let name = name.to_string();
        move |source| Error::Api {
            action,
            kind,
            namespace,
            name,
            source,
        }
    }
}

/// The Metal3Machine resource in the storage version.
pub fn metal3_machine_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        ingot_api::CAPM3_GROUP,
        "v1beta2",
        "Metal3Machine",
    ))
}

/// The Metal3MachineTemplate resource in the storage version.
pub fn metal3_machine_template_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        ingot_api::CAPM3_GROUP,
        "v1beta2",
        "Metal3MachineTemplate",
    ))
}

/// Runs the Cluster, MachineSet and Machine stand-ins until `shutdown` resolves.
pub async fn run(client: Client, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let client = Arc::new(client);
    tokio::join!(
        cluster::run(client.clone(), shutdown.clone()),
        machineset::run(client.clone(), shutdown.clone()),
        machine::run(client, shutdown),
    );
}
