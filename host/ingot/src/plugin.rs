//! `ingot plugin`: look inside a plugin component, check it against this
//! host, and call one of its functions under production limits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ingot_plugin_host::bindings::types::{BmcAddress, HostRef};
use ingot_plugin_host::bmc::{BmcAccess, BmcCredentials};
use ingot_plugin_host::calls::PluginCall;
use ingot_plugin_host::inspect::{ComponentInfo, check_imports, inspect};
use ingot_plugin_host::limits::{GuardSettings, Limits};
use ingot_plugin_host::registry::{PluginSpec, Registry, error_chain};
use ingot_plugin_host::runtime::{Runtime, RuntimeConfig};
use ingot_plugin_host::source::{Fetcher, PluginSource};
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use wasmtime::component::Component;

/// Arguments of `ingot plugin`.
#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show a component's world, package version, size, digest, imports and exports.
    Inspect {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Type-check a component against this host and smoke-call it under limits; exit 0 only if it loads.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Require this world (bmc-driver, host-selector, provisioning-steps).
        #[arg(long, value_parser = parse_world)]
        world: Option<World>,
    },
    /// Call one function with JSON input, under the same limits as the operator.
    Call(Box<CallArgs>),
}

#[derive(Debug, Parser)]
struct CallArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// The function, e.g. `select`, `get-power-state`, `set-power`, `plan`, `run`.
    function: String,
    /// The function's input as JSON, or `@path` to read it from a file
    /// (for `select`: `{"claim": {...}, "candidates": [...]}`).
    #[arg(long)]
    input: Option<String>,
    /// Plugin configuration entry `key=value`; repeatable.
    #[arg(long = "config", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Call budget in milliseconds (defaults: 1000 for selectors, 30000 otherwise).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory cap in mebibytes (default 64).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// The host the call is for, as `namespace/name`.
    #[arg(long, default_value = "default/plugin-call")]
    host: String,
    /// BMC address for driver calls, e.g. `redfish+http://127.0.0.1:8000/redfish/v1/Systems/1`.
    #[arg(long)]
    bmc_address: Option<String>,
    /// BMC user name.
    #[arg(long, default_value = "admin")]
    bmc_username: String,
    /// Name of the environment variable holding the BMC password (never pass it as an argument).
    #[arg(long, default_value = "INGOT_BMC_PASSWORD")]
    bmc_password_env: String,
    /// Skip TLS certificate verification towards the BMC.
    #[arg(long)]
    disable_certificate_verification: bool,
}

/// Runs `ingot plugin`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    match args.command {
        PluginCommand::Inspect { file, json } => inspect_file(&file, json),
        PluginCommand::Check { file, world } => tokio.block_on(check(&file, world)),
        PluginCommand::Call(call) => tokio.block_on(call_function(*call)),
    }
}

fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(
        Runtime::new(RuntimeConfig::default()).context("starting the plugin runtime")?,
    ))
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn inspect_file(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let runtime = runtime()?;
    let component = Component::from_binary(runtime.engine(), &bytes).map_err(|error| {
        anyhow::anyhow!(
            "{} is not a WebAssembly component: {error:#}",
            file.display()
        )
    })?;
    let info = inspect(runtime.engine(), &component).map_err(|error| anyhow::anyhow!(error))?;
    let denied = match check_imports(&info) {
        Ok(()) => Vec::new(),
        Err(ingot_plugin_host::inspect::InspectError::DeniedImport { imports, .. }) => imports,
        Err(other) => bail!(other),
    };
    let digest = ingot_plugin_host::cache::sha256_hex(&bytes);

    if json {
        let report = serde_json::json!({
            "world": info.world, "version": info.version.to_string(), "size": bytes.len(),
            "sha256": digest, "imports": info.imports, "exports": info.exports, "deniedImports": denied,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_info(&info, bytes.len(), &digest, &denied);
    }

    Ok(ExitCode::SUCCESS)
}

fn print_info(info: &ComponentInfo, size: usize, digest: &str, denied: &[String]) {
    println!("world:    {} (ingot:plugin@{})", info.world, info.version);
    println!("size:     {size} bytes");
    println!("sha256:   {digest}");
    println!("exports:");
    for export in &info.exports {
        println!("  {export}");
    }
    println!("imports:");
    for import in &info.imports {
        let mark = if denied.contains(import) {
            "  DENIED"
        } else {
            ""
        };
        println!("  {import}{mark}");
    }
}

async fn check(file: &Path, world: Option<World>) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(
        runtime()?,
        Fetcher::new(reqwest::Client::new()),
        GuardSettings::default(),
    );
    let spec = PluginSpec {
        source: PluginSource::File {
            path: file.to_owned(),
            sha256: None,
        },
        world,
        config: Vec::new(),
        limits: Limits::default(),
        failure_policy: Default::default(),
    };

    match registry.load("check", spec).await {
        Ok(summary) => {
            println!(
                "ok: {} implements {} (ingot:plugin@{}), {} bytes, sha256 {}",
                file.display(),
                summary.world,
                summary.world_version,
                summary.size,
                summary.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{}: {}", file.display(), error_chain(&error));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn call_function(args: CallArgs) -> anyhow::Result<ExitCode> {
    let call = parse_call(&args.function, args.input.as_deref())?;
    let scope = scope(&args)?;
    let base = if call.world() == World::HostSelector {
        Limits::for_selection()
    } else {
        Limits::default()
    };
    let limits = Limits {
        timeout_ms: args.timeout_ms.unwrap_or(base.timeout_ms),
        memory_bytes: args.memory_mib.map_or(base.memory_bytes, |mib| mib << 20),
        ..base
    };

    let runtime = runtime()?;
    let bytes = read(&args.file)?;
    let plugin = runtime
        .prepare("call", &bytes, args.config.clone(), limits)
        .map_err(|error| anyhow::anyhow!(error_chain(&error)))?;

    match runtime.call(&plugin, call, scope).await {
        Ok(reply) => {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{}", error_chain(&error));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Builds the call from the function name and its JSON input.
fn parse_call(function: &str, input: Option<&str>) -> anyhow::Result<PluginCall> {
    let input: Option<serde_json::Value> = match input {
        None => None,
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading input file {path}"))?,
                None => text.to_owned(),
            };
            Some(serde_json::from_str(&text).context("the input is not valid JSON")?)
        }
    };

    let mut call = serde_json::json!({ "function": function });
    if let Some(input) = input {
        call["input"] = input;
    }

    serde_json::from_value(call).with_context(|| {
        format!("{function:?} with this input is not a plugin call; see `ingot plugin call --help` for the functions")
    })
}

fn scope(args: &CallArgs) -> anyhow::Result<CallScope> {
    let Some((namespace, name)) = args.host.split_once('/') else {
        bail!("--host {:?} must be namespace/name", args.host);
    };
    let host = HostRef {
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("{namespace}-{name}"),
    };

    let Some(address) = &args.bmc_address else {
        return Ok(CallScope {
            host: Some(host),
            ..CallScope::default()
        });
    };

    let parsed =
        ingot_api::bmc::parse(address).with_context(|| format!("BMC address {address:?}"))?;
    let password = std::env::var(&args.bmc_password_env).ok();
    let credentials =
        password.map(|password| Arc::new(BmcCredentials::new(args.bmc_username.clone(), password)));

    let bmc = BmcAccess {
        host: host.clone(),
        address: BmcAddress {
            scheme: parsed.scheme,
            host: parsed.host,
            port: parsed.port,
            path: parsed.path,
            disable_certificate_verification: args.disable_certificate_verification,
        },
        credentials,
        boot_mac_address: None,
    };

    Ok(CallScope {
        host: Some(host),
        bmc: Some(bmc),
        ..CallScope::default()
    })
}

fn parse_world(text: &str) -> Result<World, String> {
    World::ALL
        .into_iter()
        .find(|world| world.name() == text)
        .ok_or_else(|| {
            format!("{text:?} is not a world: use bmc-driver, host-selector or provisioning-steps")
        })
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}
