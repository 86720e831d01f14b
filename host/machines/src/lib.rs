//! The machine loop: claims BareMetalHosts for Cluster API machines (Metal3Machine) and for
//! sites without Cluster API (HostClaim), hands them what to run, and gives them back clean.
//!
//! ```text
//!  Metal3Machine ─┐                                  ┌─ eligibility (Metal3 rules)
//!                 ├─▶ claim engine ─ list hosts live ─┤
//!  HostClaim ─────┘        │                          └─ selector (built-in or plugin)
//!                          ▼
//!        host.spec.consumerRef (the lock, written with a resourceVersion precondition)
//!                          ▼
//!        host spec: image, data, power ──▶ host controller provisions / deprovisions
//! ```
//!
//! - [`labels`]: host selectors with every Metal3 operator, including `DoesNotExist`.
//! - [`eligibility`]: which hosts a consumer may claim.
//! - [`selection`]: ranking the claimable hosts.
//! - [`claim`]: the claim engine.
//! - [`hostspec`]: what a consumer writes on its host, and the release steps.

pub mod claim;
pub mod eligibility;
pub mod hostspec;
pub mod labels;
pub mod selection;
