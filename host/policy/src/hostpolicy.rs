//! `HostPolicy` routing and its controller.
//!
//! [`PolicyRouting`] answers [`Routing`] from the live `HostPolicy` objects:
//! the policy governing a host ([`resolve_policy`]) names its driver, host
//! selector and per-phase step plugins, each with configuration that
//! overrides the plugin's own for that host; what it leaves unset, and hosts
//! no policy matches, get [`BuiltinRouting`]'s bundled plugins.
//!
//! The controller writes each policy's `Ready` condition: True when every
//! plugin it names is loaded with the world its role needs, else False
//! naming each one that is not and why. It looks again whenever a
//! `WasmPlugin` it names changes.

use std::sync::Arc;
use std::time::Duration;

use ingot_api::plugins::{self as api, HostPolicy, HostPolicyStatus, PluginRef, WasmPlugin};
use ingot_plugin_host::bindings::steps::Phase;
use ingot_plugin_host::drivers::default_driver;
use ingot_plugin_host::registry::{Registry, error_chain};
use ingot_plugin_host::routing::{
    ALL_PHASES, BuiltinRouting, DEFAULT_SELECTOR, HostFacts, HostPlugins, PluginBinding, Routing,
    RoutingError, STANDARD_STEPS,
};
use ingot_plugin_host::world::World;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::conditions::{self, LOADED, READY, Wanted};
use crate::spec;

/// How often every policy is looked at again (plugins can stop serving
/// without their object changing, e.g. after an operator restart).
pub const RESYNC: Duration = Duration::from_secs(30);

/// How soon a failed status write is retried.
pub const RETRY: Duration = Duration::from_secs(5);

/// Why a policy reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The status could not be written.
    #[error("could not write the status of HostPolicy {namespace}/{name}")]
    WriteStatus {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// One plugin a policy names, and the role it plays.
struct Reference<'a> {
    role: String,
    plugin: &'a PluginRef,
    world: World,
}

/// Routing over the live `HostPolicy` objects.
pub struct PolicyRouting {
    policies: Store<HostPolicy>,
    plugins: Store<WasmPlugin>,
    registry: Arc<Registry>,
}

impl PolicyRouting {
    /// Routing from the policies in `policies`, checking the plugins they
    /// name against `registry` (and `plugins` to explain a missing one).
    pub fn new(
        policies: Store<HostPolicy>,
        plugins: Store<WasmPlugin>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            policies,
            plugins,
            registry,
        }
    }

    /// The policy governing a host with `labels` in `namespace`.
    fn governing(&self, facts: &HostFacts<'_>) -> Option<HostPolicy> {
        let namespace = Some(facts.namespace.to_owned());
        let candidates: Vec<HostPolicy> = self
            .policies
            .state()
            .iter()
            .filter(|policy| policy.metadata.namespace == namespace)
            .map(|policy| (**policy).clone())
            .collect();

        api::resolve_policy(&candidates, facts.labels).cloned()
    }

    /// Why the plugin `name` cannot serve as a `world` plugin, if it cannot.
    fn problem(&self, name: &str, world: World) -> Option<String> {
        if let Some(serving) = self.registry.current(name) {
            let found = serving.info.world;
            return (found != world)
                .then(|| format!("plugin {name} implements {found}, not {world}"));
        }

        let object = self.plugins.get(&ObjectRef::new(name));
        match object {
            None => Some(format!("WasmPlugin {name} does not exist")),
            Some(object) if spec::world(object.spec.world) != world => Some(format!(
                "WasmPlugin {name} is a {} plugin, not {world}",
                spec::world(object.spec.world)
            )),
            Some(object) => Some(format!(
                "WasmPlugin {name} is not loaded: {}",
                load_failure(&object)
            )),
        }
    }

    /// What is wrong with the plugins `policy` names, one line each.
    fn problems(&self, policy: &HostPolicy) -> Vec<String> {
        references(policy)
            .iter()
            .filter_map(|reference| {
                self.problem(&reference.plugin.name, reference.world)
                    .map(|problem| format!("{}: {problem}", reference.role))
            })
            .collect()
    }
}

/// Why a `WasmPlugin` did not load, from its status.
fn load_failure(plugin: &WasmPlugin) -> String {
    let conditions = plugin
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();

    conditions::find(conditions, LOADED)
        .filter(|loaded| loaded.status == "False")
        .map_or_else(
            || "its load has not finished yet".to_owned(),
            |loaded| loaded.message.clone(),
        )
}

/// Every plugin `policy` names, with its role and expected world.
fn references(policy: &HostPolicy) -> Vec<Reference<'_>> {
    let spec = &policy.spec;
    let driver = spec.driver.iter().map(|plugin| Reference {
        role: "driver".to_owned(),
        plugin,
        world: World::BmcDriver,
    });
    let selection = spec.host_selection.iter().map(|plugin| Reference {
        role: "hostSelection".to_owned(),
        plugin,
        world: World::HostSelector,
    });
    let steps = spec.steps.iter().map(|steps| Reference {
        role: format!("steps ({})", phase_names(&steps.phases)),
        plugin: &steps.plugin,
        world: World::ProvisioningSteps,
    });

    driver.chain(selection).chain(steps).collect()
}

fn phase_names(phases: &[api::Phase]) -> String {
    phases
        .iter()
        .map(|phase| serde_json::to_value(phase).ok())
        .filter_map(|value| value?.as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(", ")
}

fn binding(plugin: &PluginRef) -> PluginBinding {
    PluginBinding {
        plugin: plugin.name.clone(),
        config: plugin.config.clone().into_iter().collect(),
        parameters: Vec::new(),
    }
}

fn api_phase(phase: Phase) -> api::Phase {
    match phase {
        Phase::Inspect => api::Phase::Inspect,
        Phase::Prepare => api::Phase::Prepare,
        Phase::Deploy => api::Phase::Deploy,
        Phase::Deprovision => api::Phase::Deprovision,
        Phase::LiveIso => api::Phase::LiveIso,
    }
}

/// The plugins `policy` chooses for a host, built-in where it is silent.
fn plugins_of(policy: &HostPolicy, bmc_scheme: &str) -> Result<HostPlugins, RoutingError> {
    let spec = &policy.spec;
    let driver = match &spec.driver {
        Some(plugin) => binding(plugin),
        None => PluginBinding::named(default_driver(bmc_scheme)?),
    };
    let selector = spec
        .host_selection
        .as_ref()
        .map_or_else(|| PluginBinding::named(DEFAULT_SELECTOR), binding);
    let steps = ALL_PHASES
        .iter()
        .map(|phase| {
            let chosen = spec
                .steps
                .iter()
                .find(|steps| steps.phases.contains(&api_phase(*phase)));
            let plugin = chosen.map_or_else(
                || PluginBinding::named(STANDARD_STEPS),
                |steps| binding(&steps.plugin),
            );
            (*phase, plugin)
        })
        .collect();

    Ok(HostPlugins {
        driver,
        selector,
        steps,
    })
}

fn qualified(policy: &HostPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

impl Routing for PolicyRouting {
    fn plugins_for(&self, facts: &HostFacts<'_>) -> Result<HostPlugins, RoutingError> {
        let Some(policy) = self.governing(facts) else {
            return BuiltinRouting.plugins_for(facts);
        };

        let problems = self.problems(&policy);
        if !problems.is_empty() {
            return Err(RoutingError::Policy {
                policy: qualified(&policy),
                reason: problems.join("; "),
            });
        }

        plugins_of(&policy, facts.bmc_scheme)
    }
}

/// What the controller works with.
pub struct Context {
    client: Client,
    routing: Arc<PolicyRouting>,
}

impl Context {
    /// A context checking policies with `routing`.
    pub fn new(client: Client, routing: Arc<PolicyRouting>) -> Self {
        Self { client, routing }
    }
}

/// The controller, not yet running; its store lists the `HostPolicy`s.
pub fn controller(client: &Client) -> Controller<HostPolicy> {
    let policies: Api<HostPolicy> = Api::all(client.clone());
    let plugins: Api<WasmPlugin> = Api::all(client.clone());
    let controller = Controller::new(policies, watcher::Config::default());
    let store = controller.store();

    controller.watches(plugins, watcher::Config::default(), move |plugin| {
        policies_naming(&store, &plugin.name_any())
    })
}

/// The policies that name the plugin `name`.
fn policies_naming(store: &Store<HostPolicy>, name: &str) -> Vec<ObjectRef<HostPolicy>> {
    store
        .state()
        .iter()
        .filter(|policy| {
            references(policy)
                .iter()
                .any(|reference| reference.plugin.name == name)
        })
        .map(|policy| ObjectRef::from_obj(&**policy))
        .collect()
}

/// Runs `controller` until `shutdown` completes.
pub async fn run(
    controller: Controller<HostPolicy>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    crate::drive(controller, reconcile, error_policy, ctx, shutdown).await;
}

fn error_policy(policy: Arc<HostPolicy>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %qualified(&policy), error = %error_chain(error), "HostPolicy reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn reconcile(policy: Arc<HostPolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let problems = ctx.routing.problems(&policy);
    let ready = if problems.is_empty() {
        Wanted::holds(
            READY,
            "PluginsReady",
            "every plugin the policy names is loaded",
        )
    } else {
        Wanted::fails(READY, "PluginNotReady", problems.join("; "))
    };

    let existing = policy
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();
    let status = HostPolicyStatus {
        conditions: Some(conditions::merge(
            existing,
            &[ready],
            policy.metadata.generation,
        )),
    };

    if policy.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &policy, &status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

async fn write_status(
    client: &Client,
    policy: &HostPolicy,
    status: &HostPolicyStatus,
) -> Result<(), ReconcileError> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<HostPolicy> = Api::namespaced(client.clone(), &namespace);

    let patch = json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::WriteStatus {
            namespace,
            name,
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use ingot_api::plugins::{HostPolicySpec, StepsRef};

    fn plugin(name: &str, config: &[(&str, &str)]) -> PluginRef {
        PluginRef {
            name: name.into(),
            config: config
                .iter()
                .map(|(key, value)| ((*key).into(), (*value).into()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn policy(spec: HostPolicySpec) -> HostPolicy {
        let mut policy = HostPolicy::new("racks", spec);
        policy.metadata.namespace = Some("lab".into());
        policy
    }

    #[test]
    fn a_policy_chooses_what_it_names_and_leaves_the_rest_built_in() {
        let policy = policy(HostPolicySpec {
            driver: Some(plugin("dell-oem", &[("quirk", "slow-reset")])),
            steps: vec![StepsRef {
                plugin: plugin("raid-steps", &[]),
                phases: vec![api::Phase::Prepare],
            }],
            ..HostPolicySpec::default()
        });

        let Ok(chosen) = plugins_of(&policy, "ipmi") else {
            panic!("the policy names a driver");
        };

        assert_eq!(chosen.driver.plugin, "dell-oem");
        assert_eq!(
            chosen.driver.config,
            [("quirk".to_owned(), "slow-reset".to_owned())]
        );
        assert_eq!(chosen.selector, PluginBinding::named(DEFAULT_SELECTOR));
        assert_eq!(
            chosen.steps_for(Phase::Prepare).map(|b| b.plugin.as_str()),
            Some("raid-steps")
        );
        assert_eq!(
            chosen.steps_for(Phase::Deploy).map(|b| b.plugin.as_str()),
            Some(STANDARD_STEPS)
        );
    }

    #[test]
    fn without_a_driver_the_scheme_decides() {
        let policy = policy(HostPolicySpec::default());

        let redfish = plugins_of(&policy, "idrac-virtualmedia").map(|p| p.driver.plugin);
        let unknown = plugins_of(&policy, "irmc");

        assert_eq!(redfish.ok().as_deref(), Some("ingot-plugin-redfish"));
        assert!(matches!(unknown, Err(RoutingError::UnknownScheme(_))));
    }

    #[test]
    fn references_name_their_role_and_world() {
        let policy = policy(HostPolicySpec {
            host_selection: Some(plugin("spread", &[])),
            steps: vec![StepsRef {
                plugin: plugin("fw", &[]),
                phases: vec![api::Phase::Prepare, api::Phase::LiveIso],
            }],
            ..HostPolicySpec::default()
        });

        let found: Vec<(String, String, World)> = references(&policy)
            .iter()
            .map(|r| (r.role.clone(), r.plugin.name.clone(), r.world))
            .collect();

        assert_eq!(
            found,
            [
                (
                    "hostSelection".to_owned(),
                    "spread".to_owned(),
                    World::HostSelector
                ),
                (
                    "steps (prepare, live-iso)".to_owned(),
                    "fw".to_owned(),
                    World::ProvisioningSteps
                ),
            ]
        );
    }
}
