//! Metal3-compatible API types for ingot, the CRDs generated from them, BMC address parsing and
//! the admission rules that the webhook, the embedded API server and `ingot validate` share.

pub mod crds;
pub mod metal3;
pub mod selector;
pub mod structural;
