//! The `WasmPlugin` controller: keeps the plugin registry in step with the
//! `WasmPlugin` objects and reports what serves in their status.
//!
//! ```text
//! WasmPlugin ──resolve (ConfigMap read here)──▶ Registry::load ──▶ status
//!     │ changed spec or ConfigMap content: fetch, verify, compile,
//!     │ type-check, smoke-call, swap (calls in flight finish on the old one)
//!     └ deleted: Registry::remove (or the bundled plugin of that name returns)
//! ```
//!
//! Lifecycle: a finalizer is added before the first load, so a deletion is
//! always seen and the plugin leaves the registry before the object leaves
//! the API. Loads are idempotent: a spec whose fingerprint already loaded is
//! not loaded again, and a failed one is retried after [`RETRY`].
//!
//! Status: `loadedDigest` and `worldVersion` describe the version serving
//! calls; `Ready` says one serves, `Loaded` whether the current spec did
//! (False with the reason and what to do, while the old version serves),
//! `Degraded` whether the failure guard is open. Status is written only
//! when it changed; objects are looked at again every [`RESYNC`] because
//! the guard changes with calls, not with the object.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingot_api::plugins::{WasmPlugin, WasmPluginStatus};
use ingot_plugin_host::guard::GuardState;
use ingot_plugin_host::registry::{LoadError, PluginStatus, Registry, error_chain};
use ingot_plugin_host::source::FetchError;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, Event};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::bundled::Bundled;
use crate::conditions::{self, DEGRADED, LOADED, READY, Wanted};
use crate::spec::{self, Resolved};

/// Finalizer that keeps a deleted `WasmPlugin` until it left the registry.
pub const FINALIZER: &str = "ingot.dev/wasmplugin";

/// How often every object is looked at again, to report its failure guard.
pub const RESYNC: Duration = Duration::from_secs(10);

/// How soon a failed load is tried again with an unchanged spec.
pub const RETRY: Duration = Duration::from_secs(30);

/// Why a reconcile failed; it is retried after [`RETRY`].
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The status could not be written.
    #[error("could not write the status of WasmPlugin {name}")]
    WriteStatus {
        /// The object.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// Adding or removing the finalizer, or the step it guards, failed.
    #[error("WasmPlugin finalizer step failed")]
    Finalizer(#[source] Box<finalizer::Error<ReconcileError>>),
}

/// Why the current spec did not load, for the `Loaded` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    reason: &'static str,
    message: String,
}

/// The last load tried for one object.
struct Attempt {
    fingerprint: String,
    failure: Option<Failure>,
    at: Instant,
}

/// What the controller works with.
pub struct Context {
    client: Client,
    registry: Arc<Registry>,
    bundled_dir: PathBuf,
    attempts: Mutex<HashMap<String, Attempt>>,
}

impl Context {
    /// A context loading into `registry`; `bundled_dir` is where a bundled
    /// plugin is reloaded from when a `WasmPlugin` that replaced it goes.
    pub fn new(client: Client, registry: Arc<Registry>, bundled_dir: PathBuf) -> Self {
        Self {
            client,
            registry,
            bundled_dir,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attempt>> {
        self.attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The controller, not yet running; its store lists the `WasmPlugin`s.
pub fn controller(client: &Client) -> Controller<WasmPlugin> {
    let plugins: Api<WasmPlugin> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let controller = Controller::new(plugins, watcher::Config::default());
    let store = controller.store();

    controller.watches(config_maps, watcher::Config::default(), move |map| {
        plugins_reading(&store, &map)
    })
}

/// The `WasmPlugin`s whose component is in `map`.
fn plugins_reading(store: &Store<WasmPlugin>, map: &ConfigMap) -> Vec<ObjectRef<WasmPlugin>> {
    let (namespace, name) = (map.namespace(), map.name_any());

    store
        .state()
        .iter()
        .filter(|plugin| {
            plugin
                .spec
                .source
                .config_map
                .as_ref()
                .is_some_and(|source| {
                    Some(&source.namespace) == namespace.as_ref() && source.name == name
                })
        })
        .map(|plugin| ObjectRef::from_obj(&**plugin))
        .collect()
}

/// Runs `controller` until `shutdown` completes.
pub async fn run(
    controller: Controller<WasmPlugin>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    crate::drive(controller, reconcile, error_policy, ctx, shutdown).await;
}

async fn reconcile(plugin: Arc<WasmPlugin>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api: Api<WasmPlugin> = Api::all(ctx.client.clone());

    finalizer::finalizer(&api, FINALIZER, plugin, |event| async {
        match event {
            Event::Apply(plugin) => apply(&api, &plugin, &ctx).await,
            Event::Cleanup(plugin) => Ok(cleanup(&plugin, &ctx).await),
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)))
}

fn error_policy(plugin: Arc<WasmPlugin>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(plugin = %plugin.name_any(), error = %error_chain(error), "WasmPlugin reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn apply(
    api: &Api<WasmPlugin>,
    plugin: &WasmPlugin,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = plugin.name_any();
    let failure = ensure_loaded(ctx, &name, plugin).await;

    let status = desired_status(plugin, ctx.registry.status(&name), failure.as_ref());
    write_status(api, &name, plugin, status).await?;

    Ok(Action::requeue(if failure.is_some() {
        RETRY
    } else {
        RESYNC
    }))
}

/// Loads the current spec unless it is what already serves; `Some` says why
/// it did not load.
async fn ensure_loaded(ctx: &Context, name: &str, plugin: &WasmPlugin) -> Option<Failure> {
    let resolved = match spec::resolve(&ctx.client, plugin).await {
        Ok(resolved) => resolved,
        Err(error) => {
            return Some(Failure {
                reason: error.reason(),
                message: error_chain(&error),
            });
        }
    };

    if let Some(outcome) = settled(ctx, name, &resolved.fingerprint) {
        return outcome;
    }

    let failure = load(ctx, name, resolved.clone()).await;
    ctx.attempts().insert(
        name.to_owned(),
        Attempt {
            fingerprint: resolved.fingerprint,
            failure: failure.clone(),
            at: Instant::now(),
        },
    );
    failure
}

/// The outcome of the last attempt when it still stands: same fingerprint,
/// and either it loaded or it failed less than [`RETRY`] ago.
fn settled(ctx: &Context, name: &str, fingerprint: &str) -> Option<Option<Failure>> {
    let attempts = ctx.attempts();
    let attempt = attempts.get(name)?;

    let same = attempt.fingerprint == fingerprint;
    let standing = attempt.failure.is_none() || attempt.at.elapsed() < RETRY;
    (same && standing).then(|| attempt.failure.clone())
}

async fn load(ctx: &Context, name: &str, resolved: Resolved) -> Option<Failure> {
    match ctx.registry.load(name, resolved.spec).await {
        Ok(_) => None,
        Err(error) => Some(Failure {
            reason: load_reason(&error),
            message: format!("{}; {}", error_chain(&error), remedy(&error)),
        }),
    }
}

fn load_reason(error: &LoadError) -> &'static str {
    match error {
        LoadError::InvalidName { .. } => "InvalidName",
        LoadError::Fetch(FetchError::DigestMismatch { .. }) => "DigestMismatch",
        LoadError::Fetch(FetchError::TooLarge { .. }) => "TooLarge",
        LoadError::Fetch(FetchError::NotHttps { .. }) => "InvalidSpec",
        LoadError::Fetch(_) => "SourceUnavailable",
        LoadError::Prepare(_) => "InvalidComponent",
        LoadError::UnexpectedWorld { .. } => "WrongWorld",
        LoadError::Smoke { .. } => "SmokeCallFailed",
        LoadError::Interrupted { .. } => "Interrupted",
    }
}

/// What a person can do about a failed load.
fn remedy(error: &LoadError) -> &'static str {
    match error {
        LoadError::InvalidName { .. } => {
            "rename the WasmPlugin with lower-case letters, digits, '-' and '.'"
        }
        LoadError::Fetch(FetchError::DigestMismatch { .. }) => {
            "set spec.source's sha256 to the digest of the component you mean to load (`sha256sum plugin.wasm`), or restore that component at the source"
        }
        LoadError::Fetch(FetchError::TooLarge { .. }) => {
            "build the plugin with the `plugin` profile (optimised for size) or strip it"
        }
        LoadError::Fetch(_) => "check that the operator can reach the source, then it is retried",
        LoadError::Prepare(_) => {
            "point the source at a WebAssembly component built for wasm32-wasip2 with the ingot plugin SDK, and check it with `ingot plugin check <file>`"
        }
        LoadError::UnexpectedWorld { .. } => {
            "set spec.world to the world the component implements, or point the source at a component built for spec.world"
        }
        LoadError::Smoke { .. } => {
            "the plugin failed when started under its limits: run `ingot plugin call` on it to see the failure, or raise spec.limits"
        }
        LoadError::Interrupted { .. } => "the operator was stopping; it is retried",
    }
}

/// Removes the plugin, or brings back the bundled plugin it replaced.
async fn cleanup(plugin: &WasmPlugin, ctx: &Context) -> Action {
    let name = plugin.name_any();
    ctx.attempts().remove(&name);

    let Some(bundled) = Bundled::named(&name) else {
        ctx.registry.remove(&name);
        tracing::info!(plugin = %name, "WasmPlugin deleted; plugin removed");
        return Action::await_change();
    };

    match ctx
        .registry
        .load(&name, bundled.spec(&ctx.bundled_dir))
        .await
    {
        Ok(_) => {
            tracing::info!(plugin = %name, "WasmPlugin deleted; the bundled plugin serves again")
        }
        Err(error) => {
            ctx.registry.remove(&name);
            tracing::warn!(plugin = %name, error = %error_chain(&error), "WasmPlugin deleted; the bundled plugin it replaced did not load, so none serves");
        }
    }
    Action::await_change()
}

fn desired_status(
    plugin: &WasmPlugin,
    serving: Option<PluginStatus>,
    failure: Option<&Failure>,
) -> WasmPluginStatus {
    let loaded = serving.as_ref().and_then(|status| status.loaded.clone());
    let wanted = [
        ready(
            loaded.as_ref().map(|l| (&l.digest, &l.world_version)),
            failure,
        ),
        loaded_condition(loaded.as_ref().map(|l| &l.digest), failure),
        degraded(serving.as_ref()),
    ];
    let existing = plugin
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();

    WasmPluginStatus {
        loaded_digest: loaded.as_ref().map(|loaded| loaded.digest.clone()),
        world_version: loaded
            .as_ref()
            .map(|loaded| loaded.world_version.to_string()),
        observed_generation: plugin.metadata.generation,
        conditions: Some(conditions::merge(
            existing,
            &wanted,
            plugin.metadata.generation,
        )),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn ready(
    loaded: Option<(&String, &ingot_plugin_host::world::Version)>,
    failure: Option<&Failure>,
) -> Wanted {
    match (loaded, failure) {
        (Some((digest, version)), _) => Wanted::holds(
            READY,
            "Serving",
            format!(
                "version {} (ingot:plugin@{version}) serves calls",
                short(digest)
            ),
        ),
        (None, Some(failure)) => Wanted::fails(READY, "NotLoaded", failure.message.clone()),
        (None, None) => Wanted::fails(READY, "NotLoaded", "no version is loaded yet"),
    }
}

fn loaded_condition(serving: Option<&String>, failure: Option<&Failure>) -> Wanted {
    let Some(failure) = failure else {
        return Wanted::holds(LOADED, "Loaded", "the current spec is loaded");
    };

    let message = match serving {
        Some(digest) => format!(
            "{}; the previous version {} keeps serving",
            failure.message,
            short(digest)
        ),
        None => failure.message.clone(),
    };
    Wanted::fails(LOADED, failure.reason, message)
}

fn degraded(serving: Option<&PluginStatus>) -> Wanted {
    match serving {
        Some(status) if status.guard != GuardState::Closed => Wanted::holds(
            DEGRADED,
            "GuardOpen",
            format!(
                "repeated failures (timeouts, crashes, exhausted limits or denied capabilities) disabled the plugin; failure policy {:?} applies until a trial call succeeds; the operator log names each failure",
                status.failure_policy
            ),
        ),
        _ => Wanted::fails(DEGRADED, "Healthy", "calls are admitted"),
    }
}

async fn write_status(
    api: &Api<WasmPlugin>,
    name: &str,
    plugin: &WasmPlugin,
    status: WasmPluginStatus,
) -> Result<(), ReconcileError> {
    if plugin.status.as_ref() == Some(&status) {
        return Ok(());
    }

    let patch = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::WriteStatus {
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}
