//! Redfish BMC driver for ingot.
//!
//! Serves the address schemes `redfish`, `redfish-virtualmedia`,
//! `redfish-uefihttp`, `idrac-redfish`, `idrac-virtualmedia`, `ilo5-redfish`
//! and `ilo5-virtualmedia`, each also with `+http`/`+https`.
//!
//! ```text
//! wasm glue ──► Driver::run ──► Client (discovery, session/Basic auth, ETag and retry ladders)
//!                    │
//!                    └──► Session: power · boot · media · inventory
//! ```
//!
//! The protocol logic only talks to the [`transport::BmcHttp`] and
//! [`transport::Environment`] traits, so the same code runs inside the Wasm
//! component (over the host's imports) and natively in tests. The password
//! never reaches this code: the host adds Basic credentials or fills in the
//! session-login placeholders itself.

pub mod boot;
pub mod client;
pub mod component;
pub mod driver;
pub mod error;
pub mod inventory;
pub mod json;
pub mod media;
pub mod model;
pub mod power;
pub mod profile;
pub mod transport;

pub use driver::Driver;
pub use error::{ErrorKind, RedfishError};
