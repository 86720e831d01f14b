//! The machine loop: claims BareMetalHosts for Cluster API machines (Metal3Machine) and for
//! sites without Cluster API (HostClaim), hands them what to run, and gives them back clean.
//!
//! ```text
//!  Metal3Machine ─┐                                   ┌─ eligibility (Metal3 rules)
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
//! - [`selection`]: ranking the claimable hosts; [`plugin_selector`]: ranking them with
//!   `host-selector` WebAssembly plugins.
//! - [`claim`]: the claim engine.
//! - [`hostspec`]: what a consumer writes on its host, and the release steps.
//! - [`metal3machine`], [`metal3cluster`], [`hostclaim`]: the controllers.
//! - [`conditions`], [`objects`]: condition and write helpers.

pub mod claim;
pub mod conditions;
pub mod eligibility;
pub mod hostclaim;
pub mod hostspec;
pub mod labels;
pub mod metal3cluster;
pub mod metal3machine;
pub mod objects;
pub mod plugin_selector;
pub mod selection;

use std::sync::Arc;

use futures::FutureExt;
use kube::Client;

pub use claim::ClaimEngine;
pub use metal3machine::{Context, Settings};
pub use selection::Selectors;

/// Runs the Metal3Machine, Metal3Cluster and HostClaim controllers until `shutdown`
/// completes. Hosts are chosen by `selectors`.
pub async fn run(
    client: Client,
    selectors: Selectors,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let ctx = Arc::new(Context {
        engine: ClaimEngine::new(client.clone(), selectors),
        client,
        settings,
    });
    let shutdown = shutdown.boxed().shared();

    tokio::join!(
        metal3machine::run(ctx.clone(), shutdown.clone()),
        metal3cluster::run(ctx.clone(), shutdown.clone()),
        hostclaim::run(ctx, shutdown),
    );
}
