//! The metal3.io/v1alpha1 API group: hosts, their inspected hardware and host claims.

mod bmh;
mod hardware;
mod hostclaim;

pub use bmh::*;
pub use hardware::*;
pub use hostclaim::*;
