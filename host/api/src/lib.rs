//! Metal3-compatible API types for ingot, the CRDs generated from them, BMC address parsing and
//! the admission rules that the webhook, the embedded API server and `ingot validate` share.

pub mod bmc;
pub mod capi;
pub mod capm3;
pub mod conversion;
pub mod crds;
pub mod manifest;
pub mod metal3;
pub mod plugins;
pub mod schema;
pub mod selector;
pub mod structural;
pub mod url;
pub mod validation;

/// API group of BareMetalHost, HardwareData and HostClaim.
pub const METAL3_GROUP: &str = "metal3.io";
/// API group of the Metal3 Cluster API provider objects.
pub const CAPM3_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// API group of the Cluster API core objects.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
