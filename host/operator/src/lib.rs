//! The BareMetalHost controller: takes every host from registration to provisioned and back,
//! the way Metal3's baremetal-operator does, with the hardware driven through a
//! [`provisioner::Provisioner`].
//!
//! - [`state_machine`]: one reconcile step, pure over the host object and a provisioner.
//! - [`provisioner`]: the seam to the hardware side and its request and result types.
//! - [`outcome`]: the closed set of step results.
//! - [`conditions`]: the standard conditions derived from the state.
//! - [`annotations`], [`host`]: how annotations and spec fields are read.
//! - [`backoff`]: retry delays after failures.
//! - [`fake`]: a scripted in-memory provisioner for tests and benchmarks.
//! - [`turns`]: fair turns for reconciles when more hosts are due than workers can take.

pub mod admission;
pub mod annotations;
pub mod backoff;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod fake;
pub mod host;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod outcome;
pub mod provisioner;
pub mod runner;
pub mod state_machine;
pub mod triggers;
pub mod turns;
pub mod webhook;
