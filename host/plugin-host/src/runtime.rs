//! The engine, its linkers, and the life of one call.
//!
//! One [`Runtime`] owns one wasmtime engine with epoch interruption, a
//! pool of instance slots ([`crate::pool`]) and a single ticker thread. Loading turns bytes into a [`LoadedPlugin`]: compile
//! (through the disk cache), identify the world, check the imports against
//! the world's allow-list, and pre-instantiate. Every call then gets a fresh
//! store and instance built from that pre-instantiated component, a wall
//! deadline enforced both inside wasm (epochs) and around host I/O (a tokio
//! timeout), and memory caps; the store is dropped when the call ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};

use crate::bindings::bmc_driver::{BmcDriver, BmcDriverPre};
use crate::bindings::driver::DriverContext;
use crate::bindings::host_selector::{HostSelector, HostSelectorPre};
use crate::bindings::provisioning_steps::{ProvisioningSteps, ProvisioningStepsPre};
use crate::cache::{CacheOutcome, CompileCache, CompileError, sha256_hex};
use crate::calls::{PluginCall, PluginReply};
use crate::error::{CallError, DomainError};
use crate::inspect::{ComponentInfo, InspectError, check_imports, inspect};
use crate::kv::KvStore;
use crate::limits::Limits;
use crate::pool::{self, CallSlots, LimitTooLarge};
use crate::state::{CallScope, CallSetup, CallState, Output, Shared};
use crate::transport::{TransportSetupError, Transports};
use crate::world::World;

/// How often the epoch advances; deadlines are checked at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Extra time the outer timeout allows beyond the budget, so a guest
/// spinning in wasm is stopped by the epoch (a clean trap) before the outer
/// timeout drops the call.
const OUTER_GRACE: Duration = Duration::from_millis(50);

/// Settings of a [`Runtime`].
#[derive(Default)]
pub struct RuntimeConfig {
    /// Directory for compiled components; none compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Extra trusted roots for BMC certificates.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// The key-value store; a fresh one by default.
    pub kv: Option<Arc<KvStore>>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("could not create the WebAssembly engine")]
    Engine(#[source] wasmtime::Error),

    /// A linker could not be populated.
    #[error("could not link the host interfaces of the {world} world")]
    Link {
        /// The world.
        world: World,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },

    /// The ticker thread could not start.
    #[error("could not start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),

    /// The BMC transports could not be built.
    #[error(transparent)]
    Transports(#[from] TransportSetupError),
}

/// Why bytes could not become a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Compilation failed.
    #[error(transparent)]
    Compile(#[from] CompileError),

    /// The component is not an acceptable plugin.
    #[error(transparent)]
    Inspect(#[from] InspectError),

    /// The plugin's limits ask for more than one call can get.
    #[error(transparent)]
    Limits(#[from] LimitTooLarge),

    /// The component's imports could not be satisfied by this host.
    #[error("the component does not type-check against the {world} world of this host")]
    TypeCheck {
        /// The world.
        world: World,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
}

/// The pre-instantiated component, per world.
#[derive(Clone)]
enum Pre {
    Driver(BmcDriverPre<CallState>),
    Selector(HostSelectorPre<CallState>),
    Steps(ProvisioningStepsPre<CallState>),
}

/// A compiled, checked and pre-instantiated plugin, ready for calls.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The name it is registered under.
    pub name: Arc<str>,
    /// SHA-256 of the component bytes.
    pub digest: Arc<str>,
    /// Size of the component in bytes.
    pub size: usize,
    /// World, version, imports and exports.
    pub info: ComponentInfo,
    /// Whether compiling was skipped thanks to the cache.
    pub cache: CacheOutcome,
    /// Configuration handed to the plugin.
    pub config: Arc<Vec<(String, String)>>,
    /// Limits of every call.
    pub limits: Limits,
    pre: Pre,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("world", &self.info.world)
            .field("version", &self.info.version)
            .finish_non_exhaustive()
    }
}

/// Advances the engine's epoch until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();

        let thread = std::thread::Builder::new()
            .name("ingot-plugin-epoch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;

        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);

        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The plugin runtime: one engine, one ticker, one linker per world.
pub struct Runtime {
    engine: Engine,
    slots: CallSlots,
    driver_linker: Linker<CallState>,
    selector_linker: Linker<CallState>,
    steps_linker: Linker<CallState>,
    cache: CompileCache,
    shared: Arc<Shared>,
    _ticker: Ticker,
}

impl Runtime {
    /// Creates the engine, links the host interfaces and starts the ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = pool::engine().map_err(RuntimeError::Engine)?;

        let shared = Arc::new(Shared {
            kv: config.kv.unwrap_or_default(),
            transports: Arc::new(Transports::new(&config.extra_roots)?),
        });

        Ok(Self {
            driver_linker: linker(&engine, World::BmcDriver)?,
            selector_linker: linker(&engine, World::HostSelector)?,
            steps_linker: linker(&engine, World::ProvisioningSteps)?,
            cache: CompileCache::new(config.cache_dir),
            slots: CallSlots::new(),
            _ticker: Ticker::start(engine.clone())?,
            shared,
            engine,
        })
    }

    /// The engine, for inspection and precompiling.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from cache), inspects, checks the imports and
    /// pre-instantiates `wasm`.
    pub fn prepare(
        &self,
        name: &str,
        wasm: &[u8],
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<LoadedPlugin, PrepareError> {
        pool::check(&limits)?;
        let digest = sha256_hex(wasm);
        let (component, cache) = self.cache.load(&self.engine, wasm, &digest)?;
        let info = inspect(&self.engine, &component)?;
        check_imports(&info)?;

        let type_check = |source| PrepareError::TypeCheck {
            world: info.world,
            source,
        };
        let pre = match info.world {
            World::BmcDriver => Pre::Driver(
                self.driver_linker
                    .instantiate_pre(&component)
                    .and_then(BmcDriverPre::new)
                    .map_err(type_check)?,
            ),
            World::HostSelector => Pre::Selector(
                self.selector_linker
                    .instantiate_pre(&component)
                    .and_then(HostSelectorPre::new)
                    .map_err(type_check)?,
            ),
            World::ProvisioningSteps => Pre::Steps(
                self.steps_linker
                    .instantiate_pre(&component)
                    .and_then(ProvisioningStepsPre::new)
                    .map_err(type_check)?,
            ),
        };

        Ok(LoadedPlugin {
            name: name.into(),
            digest: digest.into(),
            size: wasm.len(),
            info,
            cache,
            config: Arc::new(config),
            limits,
            pre,
        })
    }

    /// Runs one call in a fresh instance under the plugin's limits.
    pub async fn call(
        &self,
        plugin: &LoadedPlugin,
        call: PluginCall,
        scope: CallScope,
    ) -> Result<PluginReply, CallError> {
        if call.world() != plugin.info.world {
            return Err(CallError::WrongWorld {
                plugin: plugin.name.to_string(),
                world: plugin.info.world.to_string(),
                function: call.function().to_owned(),
            });
        }

        if plugin.info.world == World::BmcDriver && scope.bmc.is_none() {
            return Err(CallError::NoBmc {
                plugin: plugin.name.to_string(),
            });
        }

        let _slot = self.slots.take().await;
        let budget = plugin.limits.timeout();
        let deadline = Instant::now() + budget;
        let (store, output) = self.store(plugin, scope, deadline);

        let outcome =
            tokio::time::timeout(budget + OUTER_GRACE, run(plugin.pre.clone(), store, call)).await;

        let Ok((store, result)) = outcome else {
            return Err(timeout(plugin));
        };
        classify(plugin, store, &output, result)
    }

    /// Instantiates the plugin in a fresh store under its limits without
    /// calling it: runs its start-up code (constructors, allocator setup).
    pub async fn instantiate(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        let _slot = self.slots.take().await;
        let budget = plugin.limits.timeout();
        let (mut store, output) = self.store(plugin, CallScope::default(), Instant::now() + budget);

        let instantiated = async {
            let result = match &plugin.pre {
                Pre::Driver(pre) => pre.instantiate_async(&mut store).await.map(drop),
                Pre::Selector(pre) => pre.instantiate_async(&mut store).await.map(drop),
                Pre::Steps(pre) => pre.instantiate_async(&mut store).await.map(drop),
            };
            (store, result.map(|()| Ok(PluginReply::Steps(Vec::new()))))
        };

        let Ok((store, result)) = tokio::time::timeout(budget + OUTER_GRACE, instantiated).await
        else {
            return Err(timeout(plugin));
        };
        classify(plugin, store, &output, result).map(drop)
    }

    fn store(
        &self,
        plugin: &LoadedPlugin,
        scope: CallScope,
        deadline: Instant,
    ) -> (Store<CallState>, Output) {
        let setup = CallSetup {
            plugin: plugin.name.clone(),
            digest: plugin.digest.clone(),
            config: merged_config(&plugin.config, &scope.config_overrides),
            limits: plugin.limits.clone(),
            scope,
            shared: self.shared.clone(),
        };
        let (state, output) = CallState::new(setup, deadline);

        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        (store, output)
    }
}

/// The plugin's configuration with a call's overrides on top; shared
/// without copying when there are none, the common case.
fn merged_config(
    own: &Arc<Vec<(String, String)>>,
    overrides: &[(String, String)],
) -> Arc<Vec<(String, String)>> {
    if overrides.is_empty() {
        return own.clone();
    }

    let overridden = |key: &String| overrides.iter().any(|(name, _)| name == key);
    let kept = own.iter().filter(|(key, _)| !overridden(key)).cloned();
    Arc::new(kept.chain(overrides.iter().cloned()).collect())
}

/// A linker with the granted WASI subset and the world's host interfaces.
fn linker(engine: &Engine, world: World) -> Result<Linker<CallState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let link = |source| RuntimeError::Link { world, source };

    add_granted_wasi(&mut linker).map_err(link)?;

    match world {
        World::BmcDriver => {
            BmcDriver::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state)
        }
        World::HostSelector => {
            HostSelector::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state)
        }
        World::ProvisioningSteps => {
            ProvisioningSteps::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state)
        }
    }
    .map_err(link)?;

    Ok(linker)
}

/// Links exactly the WASI interfaces listed in [`crate::world::GRANTED_WASI`].
fn add_granted_wasi(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi_io::bindings::wasi::io;

    struct Table;
    impl wasmtime::component::HasData for Table {
        type Data<'a> = &'a mut ResourceTable;
    }

    use wasmtime_wasi::WasiView as _;
    let l = linker;
    io::error::add_to_linker::<_, Table>(l, |state| state.ctx().table)?;
    io::poll::add_to_linker::<_, Table>(l, |state| state.ctx().table)?;
    io::streams::add_to_linker::<_, Table>(l, |state| state.ctx().table)?;
    cli::environment::add_to_linker::<_, HasSelf<CallState>>(l, |state| state)?;
    cli::exit::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, CallState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, CallState::clocks)?;
    random::random::add_to_linker::<_, WasiRandom>(l, |state| state.ctx().ctx.random())?;
    random::insecure::add_to_linker::<_, WasiRandom>(l, |state| state.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |state| state.ctx().ctx.random())?;
    Ok(())
}

type CallResult = wasmtime::Result<Result<PluginReply, DomainError>>;

/// Instantiates and calls; hands the store back so the caller can read what
/// happened inside (denials, exhausted limits).
async fn run(
    pre: Pre,
    mut store: Store<CallState>,
    call: PluginCall,
) -> (Store<CallState>, CallResult) {
    let result = match pre {
        Pre::Selector(pre) => call_selector(&pre, &mut store, call).await,
        Pre::Driver(pre) => call_driver(&pre, &mut store, call).await,
        Pre::Steps(pre) => call_steps(&pre, &mut store, call).await,
    };
    (store, result)
}

async fn call_selector(
    pre: &HostSelectorPre<CallState>,
    store: &mut Store<CallState>,
    call: PluginCall,
) -> CallResult {
    let PluginCall::Select { claim, candidates } = call else {
        return Err(wasmtime::format_err!(
            "{} is not a selection function",
            call.function()
        ));
    };

    let instance = pre.instantiate_async(&mut *store).await?;
    let answer = instance
        .ingot_plugin_selection()
        .call_select(&mut *store, &claim, &candidates)
        .await?;
    Ok(answer
        .map(PluginReply::Choice)
        .map_err(DomainError::Selection))
}

async fn call_driver(
    pre: &BmcDriverPre<CallState>,
    store: &mut Store<CallState>,
    call: PluginCall,
) -> CallResult {
    let Some(ctx) = store.data().driver_context() else {
        return Err(wasmtime::format_err!(
            "driver call without a BMC to bind it to"
        ));
    };

    let instance = pre.instantiate_async(&mut *store).await?;
    let driver = instance.ingot_plugin_driver();
    let store = &mut *store;

    let answer = match call {
        PluginCall::Capabilities => driver
            .call_capabilities(store, &ctx)
            .await?
            .map(PluginReply::Capabilities),
        PluginCall::GetPowerState => driver
            .call_get_power_state(store, &ctx)
            .await?
            .map(PluginReply::PowerState),
        PluginCall::SetPower(action) => driver
            .call_set_power(store, &ctx, action)
            .await?
            .map(PluginReply::Progress),
        PluginCall::SetBootDevice(device) => driver
            .call_set_boot_device(store, &ctx, device)
            .await?
            .map(PluginReply::Progress),
        PluginCall::InsertMedia(media) => driver
            .call_insert_media(store, &ctx, &media)
            .await?
            .map(PluginReply::Progress),
        PluginCall::EjectMedia => driver
            .call_eject_media(store, &ctx)
            .await?
            .map(PluginReply::Progress),
        PluginCall::Inventory => driver
            .call_inventory(store, &ctx)
            .await?
            .map(|details| PluginReply::Inventory(Box::new(details))),
        PluginCall::BiosAttributes => driver
            .call_bios_attributes(store, &ctx)
            .await?
            .map(PluginReply::BiosAttributes),
        other => {
            return Err(wasmtime::format_err!(
                "{} is not a driver function",
                other.function()
            ));
        }
    };

    Ok(answer.map_err(DomainError::Driver))
}

async fn call_steps(
    pre: &ProvisioningStepsPre<CallState>,
    store: &mut Store<CallState>,
    call: PluginCall,
) -> CallResult {
    let instance = pre.instantiate_async(&mut *store).await?;
    let steps = instance.ingot_plugin_steps();

    let answer = match call {
        PluginCall::Plan(ctx) => steps
            .call_plan(&mut *store, &ctx)
            .await?
            .map(PluginReply::Steps),
        PluginCall::Run { ctx, step, state } => steps
            .call_run(&mut *store, &ctx, &step, state.as_deref())
            .await?
            .map(PluginReply::Outcome),
        other => {
            return Err(wasmtime::format_err!(
                "{} is not a steps function",
                other.function()
            ));
        }
    };

    Ok(answer.map_err(DomainError::Steps))
}

fn timeout(plugin: &LoadedPlugin) -> CallError {
    tracing::warn!(plugin = %plugin.name, budget_ms = plugin.limits.timeout_ms, "plugin call timed out");
    CallError::Timeout {
        plugin: plugin.name.to_string(),
        budget_ms: plugin.limits.timeout_ms,
    }
}

/// Turns what happened in the store into the call's typed result.
fn classify(
    plugin: &LoadedPlugin,
    store: Store<CallState>,
    output: &Output,
    result: CallResult,
) -> Result<PluginReply, CallError> {
    let name = plugin.name.to_string();
    let state = store.into_data();

    if let Some(detail) = state.limiter.exhausted {
        tracing::warn!(plugin = %name, detail = %detail, "plugin exhausted a resource limit");
        return Err(CallError::ResourceExhausted {
            plugin: name,
            detail,
        });
    }

    let denied = state
        .denials
        .into_iter()
        .next()
        .map(|denial| CallError::DeniedCapability {
            plugin: name.clone(),
            capability: denial.capability,
            detail: denial.detail,
        });

    match (result, denied) {
        (Err(error), denied) => match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Err(timeout(plugin)),
            Some(_) => Err(crashed(plugin, output, &error)),
            None => Err(denied.unwrap_or_else(|| crashed(plugin, output, &error))),
        },
        (Ok(_), Some(denied)) => Err(denied),
        (Ok(Ok(reply)), None) => Ok(reply),
        (Ok(Err(error)), None) => Err(CallError::Domain {
            plugin: name,
            error,
        }),
    }
}

fn crashed(plugin: &LoadedPlugin, output: &Output, error: &wasmtime::Error) -> CallError {
    let stderr = String::from_utf8_lossy(&output.stderr.contents()).into_owned();
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(ToString::to_string)
        .unwrap_or_default();
    let trap = error
        .downcast_ref::<Trap>()
        .map_or_else(|| format!("{error:#}"), ToString::to_string);

    tracing::error!(
        plugin = %plugin.name,
        digest = %plugin.digest,
        trap = %trap,
        stderr = %stderr,
        backtrace = %backtrace,
        "plugin crashed"
    );

    let said = guest_message(&stderr);
    let reason = if said.is_empty() {
        trap
    } else {
        format!("{trap}; guest stderr: {said}")
    };

    CallError::Crashed {
        plugin: plugin.name.to_string(),
        reason,
    }
}

/// The guest's stderr without Rust's hints, on one line and capped, for the
/// error message (the full text is in the log).
fn guest_message(stderr: &str) -> String {
    const CAP: usize = 512;

    let text = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note:"))
        .collect::<Vec<_>>()
        .join(" | ");

    match text.char_indices().nth(CAP) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

impl CallState {
    /// The driver context for the BMC the call is bound to.
    fn driver_context(&self) -> Option<DriverContext> {
        let bmc = self.scope().bmc.as_ref()?;
        Some(DriverContext {
            host: bmc.host.clone(),
            address: bmc.address.clone(),
            boot_mac_address: bmc.boot_mac_address.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn overrides_replace_their_keys_and_keep_the_rest() {
        let own = Arc::new(pairs(&[("spread-weight", "10"), ("site", "par1")]));

        let merged = merged_config(&own, &pairs(&[("spread-weight", "1"), ("rack", "r2")]));

        assert_eq!(
            *merged,
            pairs(&[("site", "par1"), ("spread-weight", "1"), ("rack", "r2")])
        );
    }

    #[test]
    fn without_overrides_the_plugin_configuration_is_shared() {
        let own = Arc::new(pairs(&[("site", "par1")]));

        let merged = merged_config(&own, &[]);

        assert!(Arc::ptr_eq(&own, &merged));
    }
}
