//! Named plugins, replaced atomically while calls are running.
//!
//! The operator calls [`Registry::load`] whenever a `WasmPlugin` (or a
//! built-in default) appears or changes, and [`Registry::remove`] when it is
//! deleted. Loading fetches, verifies, compiles, type-checks and smoke-calls
//! the new version before it replaces the old one in a single atomic swap:
//! calls already running keep the version they started with, every call
//! starting afterwards gets the new one, and a failed load leaves the old
//! version serving and records why in [`PluginStatus::last_error`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::bindings::selection::{Claim, LabelSelector, Requirements};
use crate::cache::CacheOutcome;
use crate::calls::{PluginCall, PluginReply};
use crate::error::CallError;
use crate::guard::{FailureGuard, GuardState};
use crate::limits::{FailurePolicy, GuardSettings, Limits};
use crate::runtime::{LoadedPlugin, PrepareError, Runtime};
use crate::source::{FetchError, Fetcher, PluginSource};
use crate::state::CallScope;
use crate::world::{Version, World};

/// Everything needed to load one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Where the component comes from.
    pub source: PluginSource,
    /// The world the plugin must implement, when the caller knows it.
    pub world: Option<World>,
    /// Configuration handed to the plugin.
    pub config: Vec<(String, String)>,
    /// Limits of every call.
    pub limits: Limits,
    /// What happens once the failure guard trips.
    pub failure_policy: FailurePolicy,
}

/// Why a plugin could not be loaded. The previous version, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The name is not a valid plugin name.
    #[error(
        "{name:?} is not a valid plugin name: use lower-case letters, digits, '-' and '.', at most 253 characters"
    )]
    InvalidName {
        /// The name.
        name: String,
    },

    /// The bytes could not be fetched or verified.
    #[error(transparent)]
    Fetch(#[from] FetchError),

    /// The component could not be compiled, inspected or type-checked.
    #[error(transparent)]
    Prepare(#[from] PrepareError),

    /// The component implements another world than expected.
    #[error("plugin {name} implements {found}, but {expected} is required")]
    UnexpectedWorld {
        /// Plugin name.
        name: String,
        /// Expected world.
        expected: World,
        /// The component's world.
        found: World,
    },

    /// The smoke call failed.
    #[error("plugin {name} failed its smoke call")]
    Smoke {
        /// Plugin name.
        name: String,
        /// The failure.
        #[source]
        source: CallError,
    },

    /// Compilation was interrupted.
    #[error("compiling plugin {name} was interrupted")]
    Interrupted {
        /// Plugin name.
        name: String,
    },
}

/// What a successful load produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedSummary {
    /// SHA-256 of the component.
    pub digest: String,
    /// Its world.
    pub world: World,
    /// The package version it was built against.
    pub world_version: Version,
    /// Its size in bytes.
    pub size: usize,
    /// Whether the compile cache was used.
    pub from_cache: bool,
}

/// The state of one plugin, for status reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// The version serving calls, if any.
    pub loaded: Option<LoadedSummary>,
    /// Why the last load failed; cleared by a successful load.
    pub last_error: Option<String>,
    /// The failure guard.
    pub guard: GuardState,
    /// The failure policy.
    pub failure_policy: FailurePolicy,
}

struct Slot {
    current: ArcSwapOption<LoadedPlugin>,
    guard: Mutex<FailureGuard>,
    policy: Mutex<FailurePolicy>,
    last_error: Mutex<Option<String>>,
    load: tokio::sync::Mutex<()>,
}

impl Slot {
    fn new(settings: GuardSettings, policy: FailurePolicy) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            guard: Mutex::new(FailureGuard::new(settings)),
            policy: Mutex::new(policy),
            last_error: Mutex::new(None),
            load: tokio::sync::Mutex::new(()),
        }
    }
}

/// A call the failure guard let through. When it is the half-open guard's one trial and its
/// caller gives up before the plugin answers (a deadline around a nested call, a cancelled
/// reconcile), the trial goes to the next caller instead of staying taken for ever.
struct Admitted<'a> {
    guard: &'a Mutex<FailureGuard>,
    is_trial: bool,
    answered: bool,
}

impl<'a> Admitted<'a> {
    fn new(guard: &'a Mutex<FailureGuard>) -> Option<Self> {
        let mut state = locked(guard);
        if !state.admit(Instant::now()) {
            return None;
        }
        Some(Self {
            guard,
            is_trial: state.state() == GuardState::HalfOpen,
            answered: false,
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.is_trial && !self.answered {
            locked(self.guard).abandon_trial();
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The plugins of one operator.
pub struct Registry {
    runtime: Arc<Runtime>,
    fetcher: Fetcher,
    guard_settings: GuardSettings,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    builtins: RwLock<HashMap<World, String>>,
}

impl Registry {
    /// A registry running plugins on `runtime` and fetching HTTPS sources
    /// with `fetcher`.
    pub fn new(runtime: Arc<Runtime>, fetcher: Fetcher, guard_settings: GuardSettings) -> Self {
        Self {
            runtime,
            fetcher,
            guard_settings,
            slots: RwLock::new(HashMap::new()),
            builtins: RwLock::new(HashMap::new()),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Names the plugin that serves calls for `world` when another plugin's
    /// guard is open and its policy is `UseBuiltin`.
    pub fn set_builtin(&self, world: World, name: &str) {
        let mut builtins = self
            .builtins
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        builtins.insert(world, name.to_owned());
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.get(name).cloned()
    }

    fn slot_or_insert(&self, name: &str, policy: FailurePolicy) -> Arc<Slot> {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(self.guard_settings, policy)))
            .clone()
    }

    /// Loads or replaces the plugin `name`.
    ///
    /// Loads of the same name are serialised; calls are never blocked.
    pub async fn load(&self, name: &str, spec: PluginSpec) -> Result<LoadedSummary, LoadError> {
        if !valid_name(name) {
            return Err(LoadError::InvalidName {
                name: name.to_owned(),
            });
        }

        let slot = self.slot_or_insert(name, spec.failure_policy);
        let _serialised = slot.load.lock().await;
        let source = spec.source.describe();

        match self.build(name, spec.clone()).await {
            Ok(plugin) => {
                let summary = summary(&plugin);
                slot.current.store(Some(Arc::new(plugin)));
                *locked(&slot.guard) = FailureGuard::new(self.guard_settings);
                *locked(&slot.policy) = spec.failure_policy;
                *locked(&slot.last_error) = None;
                tracing::info!(plugin = name, source, digest = %summary.digest, world = %summary.world, "plugin loaded");
                Ok(summary)
            }
            Err(error) => {
                let reason = error_chain(&error);
                tracing::warn!(plugin = name, source, error = %reason, "plugin load failed; the previous version keeps serving");
                *locked(&slot.last_error) = Some(reason);
                Err(error)
            }
        }
    }

    async fn build(&self, name: &str, spec: PluginSpec) -> Result<LoadedPlugin, LoadError> {
        let bytes = self.fetcher.fetch(&spec.source).await?;

        let runtime = self.runtime.clone();
        let owned_name = name.to_owned();
        let plugin = tokio::task::spawn_blocking(move || {
            runtime.prepare(&owned_name, &bytes, spec.config, spec.limits)
        })
        .await
        .map_err(|_| LoadError::Interrupted {
            name: name.to_owned(),
        })??;

        if let Some(expected) = spec.world
            && expected != plugin.info.world
        {
            return Err(LoadError::UnexpectedWorld {
                name: name.to_owned(),
                expected,
                found: plugin.info.world,
            });
        }

        self.smoke(&plugin).await?;
        Ok(plugin)
    }

    /// Proves the new version runs under its limits before it serves: a
    /// selector ranks an empty candidate list; drivers and step plugins,
    /// whose functions act on machines, are instantiated without a call.
    async fn smoke(&self, plugin: &LoadedPlugin) -> Result<(), LoadError> {
        let outcome = match plugin.info.world {
            World::HostSelector => self
                .runtime
                .call(plugin, empty_selection(), CallScope::default())
                .await
                .map(|_| ()),
            World::BmcDriver | World::ProvisioningSteps => self.runtime.instantiate(plugin).await,
        };

        match outcome {
            Ok(()) | Err(CallError::Domain { .. }) => Ok(()),
            Err(source) => Err(LoadError::Smoke {
                name: plugin.name.to_string(),
                source,
            }),
        }
    }

    /// Removes a plugin; calls already running finish on it.
    pub fn remove(&self, name: &str) -> bool {
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.remove(name).is_some()
    }

    /// The status of a plugin, if it was ever loaded or attempted.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let slot = self.slot(name)?;
        let loaded = slot.current.load_full().map(|plugin| summary(&plugin));

        Some(PluginStatus {
            loaded,
            last_error: locked(&slot.last_error).clone(),
            guard: locked(&slot.guard).state(),
            failure_policy: *locked(&slot.policy),
        })
    }

    /// The version currently serving `name`.
    pub fn current(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.slot(name)?.current.load_full()
    }

    /// Calls the plugin `name`, applying its failure guard and policy.
    pub async fn call(
        &self,
        name: &str,
        call: PluginCall,
        scope: CallScope,
    ) -> Result<PluginReply, CallError> {
        let (slot, plugin) = self.serving(name)?;

        let Some(mut admitted) = Admitted::new(&slot.guard) else {
            return self.refused(name, &plugin, call, scope).await;
        };

        let result = self.runtime.call(&plugin, call, scope).await;
        admitted.answered = true;
        self.record(name, &slot, &result);
        result
    }

    fn serving(&self, name: &str) -> Result<(Arc<Slot>, Arc<LoadedPlugin>), CallError> {
        let not_loaded = || CallError::NotLoaded {
            plugin: name.to_owned(),
        };
        let slot = self.slot(name).ok_or_else(not_loaded)?;
        let plugin = slot.current.load_full().ok_or_else(not_loaded)?;
        Ok((slot, plugin))
    }

    fn record(&self, name: &str, slot: &Slot, result: &Result<PluginReply, CallError>) {
        let mut guard = locked(&slot.guard);

        match result {
            Err(error) if error.is_plugin_failure() => {
                if guard.record_failure(Instant::now()) {
                    let policy = *locked(&slot.policy);
                    tracing::warn!(plugin = name, ?policy, last_error = %error, "failure guard tripped; applying the failure policy");
                }
            }
            _ => guard.record_success(),
        }
    }

    /// Applies the failure policy to a call the guard refused.
    async fn refused(
        &self,
        name: &str,
        plugin: &LoadedPlugin,
        call: PluginCall,
        scope: CallScope,
    ) -> Result<PluginReply, CallError> {
        let policy = self
            .status(name)
            .map_or(FailurePolicy::Fail, |status| status.failure_policy);

        match policy {
            FailurePolicy::Fail => Err(CallError::GuardOpen {
                plugin: name.to_owned(),
                policy,
            }),
            FailurePolicy::Ignore => Err(CallError::Ignored {
                plugin: name.to_owned(),
            }),
            FailurePolicy::UseBuiltin => {
                let builtin = self
                    .builtin_for(plugin.info.world)
                    .filter(|builtin| builtin != name);
                let Some(builtin) = builtin else {
                    return Err(CallError::GuardOpen {
                        plugin: name.to_owned(),
                        policy,
                    });
                };

                tracing::debug!(
                    plugin = name,
                    builtin,
                    "guard open; calling the built-in plugin"
                );
                let (slot, fallback) = self.serving(&builtin)?;
                let result = self.runtime.call(&fallback, call, scope).await;
                self.record(&builtin, &slot, &result);
                result
            }
        }
    }

    fn builtin_for(&self, world: World) -> Option<String> {
        let builtins = self
            .builtins
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        builtins.get(&world).cloned()
    }
}

fn summary(plugin: &LoadedPlugin) -> LoadedSummary {
    LoadedSummary {
        digest: plugin.digest.to_string(),
        world: plugin.info.world,
        world_version: plugin.info.version,
        size: plugin.size,
        from_cache: plugin.cache == CacheOutcome::Hit,
    }
}

fn empty_selection() -> PluginCall {
    PluginCall::Select {
        claim: Claim {
            identity: "ingot/smoke-call".into(),
            labels: Vec::new(),
            selector: LabelSelector {
                match_labels: Vec::new(),
                match_expressions: Vec::new(),
            },
            requirements: Requirements {
                cpu_arch: None,
                min_cpus: None,
                min_ram_mebibytes: None,
                min_disk_bytes: None,
                min_nics: None,
                extra: Vec::new(),
            },
            failure_domain: None,
            domain_usage: Vec::new(),
        },
        candidates: Vec::new(),
    }
}

/// Kubernetes object-name rules (DNS subdomain), since plugins are named
/// after their `WasmPlugin` object and names end up in paths and logs.
fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());

    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(allowed)
        && edge(name.chars().next())
        && edge(name.chars().last())
}

/// The error and its causes on one line, for status messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();

    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }

    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        for good in ["sel", "site-selector", "a.b-c9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Sel", "-sel", "sel-", "../x", "a/b", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
