//! The Metal3 Cluster API provider objects (infrastructure.cluster.x-k8s.io): Metal3Machine,
//! Metal3MachineTemplate and Metal3Cluster, in v1beta1 (deprecated, still served) and v1beta2
//! (storage). [`crate::conversion`] converts between them.

mod common;
pub mod v1beta1;
pub mod v1beta2;

pub use common::*;
