//! Plugin and policy controllers: which WebAssembly plugins the operator
//! runs, and which of them serve which host.
//!
//! ```text
//!  bundled dir ──load_bundled──┐
//!                              ▼
//!  WasmPlugin ──controller──▶ Registry ◀── calls (provisioner, machine loop)
//!                              ▲
//!  HostPolicy ──controller──▶ PolicyRouting: Routing ── which plugin, which config
//! ```
//!
//! - [`bundled`]: the plugins shipped with ingot, loaded from a directory
//!   and registered as the built-in plugin of their world.
//! - [`wasmplugin`]: loads each `WasmPlugin` into the registry, swaps it
//!   when its spec changes, removes it when it is deleted, and reports
//!   `Ready`, `Loaded` and `Degraded`.
//! - [`hostpolicy`]: [`PolicyRouting`] over the live `HostPolicy` objects,
//!   and their `Ready` condition.
//! - [`index`]: the live object lists routing reads.
//! - [`spec`], [`conditions`]: from API objects to registry specs, and
//!   conditions written without churn.
//!
//! # Entry point
//!
//! The operator and `ingot dev` call [`start`] once with the registry their
//! provisioner calls through:
//!
//! ```no_run
//! # async fn example(client: kube::Client, registry: std::sync::Arc<ingot_plugin_host::registry::Registry>) {
//! use std::path::Path;
//!
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let routing = ingot_policy::start(
//!     client,
//!     registry,
//!     Path::new("/var/lib/ingot/plugins"),
//!     async move {
//!         let _ = stopped.await;
//!     },
//! )
//! .await;
//! // routing.plugins_for(&facts) names each host's driver, selector and steps.
//! # drop((routing, stop));
//! # }
//! ```
//!
//! Guarantees: when `start` returns, the bundled plugins found are loaded
//! and routing has listed the policies and plugins, so it already
//! follows every existing `HostPolicy`. `WasmPlugin`s load in the
//! background; until one has loaded, routing to it fails with a message
//! naming it, and callers retry. Everything stops when `shutdown` completes.

pub mod bundled;
pub mod conditions;
pub mod hostpolicy;
pub mod index;
pub mod spec;
pub mod wasmplugin;

use std::fmt::Debug;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryFuture};
use ingot_api::plugins::{HostPolicy, WasmPlugin};
use ingot_plugin_host::registry::{Registry, error_chain};
use ingot_plugin_host::routing::Routing;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

pub use bundled::{BundledReport, load_bundled};
pub use hostpolicy::PolicyRouting;

/// Loads the bundled plugins from `bundled_dir`, starts the `WasmPlugin`
/// and `HostPolicy` controllers on `client` until `shutdown` completes, and
/// returns the routing that follows the `HostPolicy` objects.
///
/// Waits until routing has listed the `HostPolicy` and `WasmPlugin`
/// objects; with no API server to list from, it waits for one.
pub async fn start(
    client: Client,
    registry: Arc<Registry>,
    bundled_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Arc<dyn Routing> {
    load_bundled(&registry, bundled_dir).await;
    let shutdown = shutdown.shared();

    let (mut policy_index, policy_feed) = index::index(Api::<HostPolicy>::all(client.clone()));
    let (mut plugin_index, plugin_feed) = index::index(Api::<WasmPlugin>::all(client.clone()));
    tokio::spawn(until(shutdown.clone(), policy_feed));
    tokio::spawn(until(shutdown.clone(), plugin_feed));

    let routing = Arc::new(PolicyRouting::new(
        policy_index.store.clone(),
        plugin_index.store.clone(),
        registry.clone(),
    ));
    let plugin_ctx = Arc::new(wasmplugin::Context::new(
        client.clone(),
        registry,
        bundled_dir.to_path_buf(),
    ));
    let policy_ctx = Arc::new(hostpolicy::Context::new(client.clone(), routing.clone()));

    tokio::spawn(wasmplugin::run(
        wasmplugin::controller(&client),
        plugin_ctx,
        shutdown.clone(),
    ));
    tokio::spawn(hostpolicy::run(
        hostpolicy::controller(&client),
        policy_ctx,
        shutdown,
    ));

    policy_index.listed().await;
    plugin_index.listed().await;
    routing
}

/// Runs `controller` until `shutdown` completes; a reconcile that did not
/// complete is logged at debug level (its error policy already warned).
async fn drive<K, Ctx, ReconcileFut>(
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> ReconcileFut,
    error_policy: impl Fn(Arc<K>, &ReconcileFut::Error, Arc<Ctx>) -> Action,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone,
    ReconcileFut: TryFuture<Ok = Action> + Send + 'static,
    ReconcileFut::Error: std::error::Error + Send + 'static,
{
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error_chain(&error), "reconcile did not complete");
            }
        })
        .await;
}

/// Runs `work` until `shutdown` completes.
async fn until(shutdown: impl Future<Output = ()>, work: impl Future<Output = ()>) {
    tokio::select! {
        () = shutdown => {}
        () = work => {}
    }
}
