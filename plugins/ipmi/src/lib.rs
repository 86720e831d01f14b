//! IPMI 2.0 (RMCP+) BMC driver for ingot.
//!
//! Serves the address schemes `ipmi` and `libvirt` (VirtualBMC), and bare
//! `host[:port]` addresses, which mean `ipmi`.
//!
//! ```text
//! Driver ──► Session (Open Session, RAKP 1-4, retransmits) ──► codec (RMCP+ framing)
//!    │              │
//!    └── chassis    └── Secrets: password MACs and session keys, host-side
//! ```
//!
//! The password never reaches this code: RAKP proofs are computed by the
//! host's keyed-MAC import, and the session keys stay in a host handle.

pub mod chassis;
pub mod codec;
pub mod component;
pub mod driver;
pub mod error;
pub mod session;
pub mod transport;

pub use driver::{Driver, Outcome, PowerGoal};
pub use error::{ErrorKind, IpmiError};
