//! `WasmPlugin` and `HostPolicy` (`ingot.dev/v1alpha1`): which WebAssembly
//! plugins the operator loads, and which of them drive, select and provision
//! which hosts.
//!
//! ```text
//! WasmPlugin (cluster)           HostPolicy (namespaced)
//!   source, world, config,  <--    hostSelector -> driver, hostSelection,
//!   limits, failurePolicy          steps[] (plugin names + per-policy config)
//! ```
//!
//! A host is governed by the matching `HostPolicy` in its namespace with the
//! highest priority (ties broken by name); when none matches, the built-in
//! defaults apply ([`resolve_policy`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the plugin kinds.
pub const PLUGIN_GROUP: &str = "ingot.dev";

/// Largest call timeout a plugin may ask for, in milliseconds.
pub const MAX_TIMEOUT_MILLISECONDS: u64 = 300_000;

/// Largest memory a plugin may ask for, in mebibytes.
pub const MAX_MEMORY_MEBIBYTES: u64 = 1024;

/// A WebAssembly component plugin the operator loads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ingot.dev",
    version = "v1alpha1",
    kind = "WasmPlugin",
    plural = "wasmplugins",
    status = "WasmPluginStatus",
    printcolumn = r#"{"name":"World","type":"string","jsonPath":".spec.world"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.loadedDigest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    /// Where the component comes from: exactly one of `file`, `configMap`, `url`.
    pub source: PluginSource,
    /// The plugin world the component must implement.
    pub world: PluginWorld,
    /// Configuration handed to the plugin (its `config` import).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Per-call limits; defaults depend on the world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,
    /// What callers get once repeated failures disable the plugin.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// Where a plugin's component comes from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.file), has(self.configMap), has(self.url)].filter(x, x).size() == 1",
    "message": "exactly one of file, configMap or url must be set"
}]))]
pub struct PluginSource {
    /// A file on the operator's filesystem (development, or an image mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// A key of a ConfigMap's `binaryData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An HTTPS URL; its `sha256` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
}

/// A component file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// Absolute path of the `.wasm` file.
    pub path: String,
    /// Expected SHA-256 of the file, lower-case hex; checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A component stored in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Key in `binaryData` holding the component.
    pub key: String,
    /// Expected SHA-256, lower-case hex; checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A component downloaded over HTTPS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlSource {
    /// The `https://` URL.
    pub url: String,
    /// Expected SHA-256, lower-case hex. Required: the content behind a URL can change.
    pub sha256: String,
}

/// The plugin worlds of the `ingot:plugin` WIT package.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginWorld {
    /// Drives a vendor's BMC.
    BmcDriver,
    /// Ranks hosts for a claim.
    HostSelector,
    /// Plans and runs provisioning steps.
    ProvisioningSteps,
}

/// Per-call limits of a plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginLimits {
    /// Wall-clock budget of one call, in milliseconds (1 to 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_milliseconds: Option<u64>,
    /// Memory cap of one call's instance, in mebibytes (1 to 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mebibytes: Option<u64>,
}

/// What callers get once repeated failures disable a plugin.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    /// The operation fails and the host reports the plugin's condition.
    #[default]
    Fail,
    /// The operation proceeds without the plugin's answer.
    Ignore,
    /// The built-in implementation of the same world answers instead.
    UseBuiltin,
}

/// Observed state of a plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginStatus {
    /// SHA-256 of the component serving calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_digest: Option<String>,
    /// Version of the `ingot:plugin` package the loaded component was built against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_version: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (a version serves calls), `Loaded` (the current spec loaded;
    /// False with the reason when it did not, while the previous version
    /// keeps serving) and `Degraded` (the failure guard is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// Which plugins govern the hosts matching a selector.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ingot.dev",
    version = "v1alpha1",
    kind = "HostPolicy",
    plural = "hostpolicies",
    namespaced,
    status = "HostPolicyStatus",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HostPolicySpec {
    /// BareMetalHosts in this namespace whose labels match; empty matches all.
    #[serde(default)]
    pub host_selector: LabelSelector,
    /// Among matching policies the highest priority wins; ties go to the name first in order.
    #[serde(default)]
    pub priority: i32,
    /// The BMC driver plugin; the built-in driver for the address scheme when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<PluginRef>,
    /// The host-selector plugin ranking these hosts for claims; built-in when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<PluginRef>,
    /// Provisioning-steps plugins, each for the phases it lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepsRef>,
}

/// A reference to a `WasmPlugin` with per-policy configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    /// Name of the `WasmPlugin`.
    pub name: String,
    /// Configuration merged over the plugin's own (these keys win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// A provisioning-steps plugin and the phases it plans.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepsRef {
    /// The plugin.
    #[serde(flatten)]
    pub plugin: PluginRef,
    /// Phases it plans: inspect, prepare, deploy, deprovision, live-iso.
    pub phases: Vec<Phase>,
}

/// A provisioning phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Hardware inspection.
    Inspect,
    /// Firmware and RAID preparation.
    Prepare,
    /// Image deployment.
    Deploy,
    /// Clean-up after use.
    Deprovision,
    /// Booting a live ISO.
    LiveIso,
}

/// Observed state of a host policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPolicyStatus {
    /// `Ready`: every referenced plugin exists, implements the expected world and is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// Checks what the schema cannot: one source, HTTPS URLs, digests and limit ranges.
pub fn validate_wasm_plugin(spec: &WasmPluginSpec) -> Vec<String> {
    let source = &spec.source;
    let mut errors = Vec::new();

    let set = [
        source.file.is_some(),
        source.config_map.is_some(),
        source.url.is_some(),
    ];
    if set.iter().filter(|set| **set).count() != 1 {
        errors.push("spec.source: set exactly one of file, configMap or url".to_owned());
    }

    if let Some(file) = &source.file
        && !file.path.starts_with('/')
    {
        errors.push(format!(
            "spec.source.file.path: {:?} must be an absolute path",
            file.path
        ));
    }

    if let Some(url) = &source.url {
        if !url.url.starts_with("https://") {
            errors.push(format!("spec.source.url.url: {:?} must use https", url.url));
        }
        check_digest("spec.source.url.sha256", Some(&url.sha256), &mut errors);
    }

    check_digest(
        "spec.source.file.sha256",
        source.file.as_ref().and_then(|file| file.sha256.as_ref()),
        &mut errors,
    );
    check_digest(
        "spec.source.configMap.sha256",
        source
            .config_map
            .as_ref()
            .and_then(|map| map.sha256.as_ref()),
        &mut errors,
    );
    check_limits(spec.limits.as_ref(), &mut errors);

    errors
}

fn check_digest(field: &str, digest: Option<&String>, errors: &mut Vec<String>) {
    let Some(digest) = digest else { return };

    if digest.len() != 64
        || !digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        errors.push(format!(
            "{field}: {digest:?} is not a lower-case hex SHA-256 (64 characters)"
        ));
    }
}

fn check_limits(limits: Option<&PluginLimits>, errors: &mut Vec<String>) {
    let Some(limits) = limits else { return };

    if let Some(timeout) = limits.timeout_milliseconds
        && !(1..=MAX_TIMEOUT_MILLISECONDS).contains(&timeout)
    {
        errors.push(format!(
            "spec.limits.timeoutMilliseconds: {timeout} is outside 1..={MAX_TIMEOUT_MILLISECONDS}"
        ));
    }

    if let Some(memory) = limits.memory_mebibytes
        && !(1..=MAX_MEMORY_MEBIBYTES).contains(&memory)
    {
        errors.push(format!(
            "spec.limits.memoryMebibytes: {memory} is outside 1..={MAX_MEMORY_MEBIBYTES}"
        ));
    }
}

/// Whether `labels` satisfy a Kubernetes label selector.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));

    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| requirement_matches(requirement, labels))
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let listed = |value: &String| {
        requirement
            .values
            .iter()
            .flatten()
            .any(|listed| listed == value)
    };

    match requirement.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// The policy governing a host with `labels`: the matching policy with the
/// highest priority, ties broken by name; `None` means the built-in defaults.
pub fn resolve_policy<'a>(
    policies: &'a [HostPolicy],
    labels: &BTreeMap<String, String>,
) -> Option<&'a HostPolicy> {
    policies
        .iter()
        .filter(|policy| selector_matches(&policy.spec.host_selector, labels))
        .min_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn plugin(source: PluginSource) -> WasmPluginSpec {
        WasmPluginSpec {
            source,
            world: PluginWorld::HostSelector,
            config: BTreeMap::new(),
            limits: None,
            failure_policy: FailurePolicy::Fail,
        }
    }

    fn policy(name: &str, priority: i32, selector: LabelSelector) -> HostPolicy {
        let mut policy = HostPolicy::new(
            name,
            HostPolicySpec {
                host_selector: selector,
                priority,
                ..HostPolicySpec::default()
            },
        );
        policy.metadata.namespace = Some("lab".into());
        policy
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).into(), (*value).into()))
            .collect()
    }

    #[test]
    fn parses_a_manifest() {
        let yaml = r#"
apiVersion: ingot.dev/v1alpha1
kind: WasmPlugin
metadata: {name: site-selector}
spec:
  world: host-selector
  source: {url: {url: "https://plugins.example/sel.wasm", sha256: "aa"}}
  config: {spread-weight: "10"}
  limits: {timeoutMilliseconds: 500}
  failurePolicy: UseBuiltin
"#;
        let plugin: WasmPlugin = serde_yaml::from_str(yaml).expect("parses");

        assert_eq!(plugin.spec.world, PluginWorld::HostSelector);
        assert_eq!(plugin.spec.failure_policy, FailurePolicy::UseBuiltin);
        assert_eq!(
            validate_wasm_plugin(&plugin.spec),
            ["spec.source.url.sha256: \"aa\" is not a lower-case hex SHA-256 (64 characters)"]
        );
    }

    #[test]
    fn exactly_one_source() {
        assert_eq!(
            validate_wasm_plugin(&plugin(PluginSource::default())).len(),
            1
        );

        let both = PluginSource {
            file: Some(FileSource {
                path: "/p.wasm".into(),
                sha256: None,
            }),
            url: Some(UrlSource {
                url: "https://x/p.wasm".into(),
                sha256: "a".repeat(64),
            }),
            config_map: None,
        };
        assert!(validate_wasm_plugin(&plugin(both))[0].contains("exactly one"));

        let file = PluginSource {
            file: Some(FileSource {
                path: "/p.wasm".into(),
                sha256: None,
            }),
            ..PluginSource::default()
        };
        assert!(validate_wasm_plugin(&plugin(file)).is_empty());
    }

    #[test]
    fn urls_must_be_https_and_limits_in_range() {
        let mut spec = plugin(PluginSource {
            url: Some(UrlSource {
                url: "http://x/p.wasm".into(),
                sha256: "b".repeat(64),
            }),
            ..PluginSource::default()
        });
        spec.limits = Some(PluginLimits {
            timeout_milliseconds: Some(0),
            memory_mebibytes: Some(4096),
        });

        let errors = validate_wasm_plugin(&spec);

        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("https"));
    }

    #[test]
    fn highest_priority_matching_policy_wins() {
        let racks = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "rack".into(),
                operator: "In".into(),
                values: Some(vec!["r1".into(), "r2".into()]),
            }]),
            ..LabelSelector::default()
        };
        let dell = LabelSelector {
            match_labels: Some(labels(&[("vendor", "dell")])),
            ..LabelSelector::default()
        };
        let policies = vec![
            policy("b-racks", 1, racks.clone()),
            policy("a-racks", 1, racks),
            policy("dell", 5, dell),
        ];

        let name = |host: &[(&str, &str)]| {
            resolve_policy(&policies, &labels(host)).and_then(|policy| policy.metadata.name.clone())
        };

        assert_eq!(name(&[("rack", "r1")]).as_deref(), Some("a-racks"));
        assert_eq!(
            name(&[("rack", "r2"), ("vendor", "dell")]).as_deref(),
            Some("dell")
        );
        assert_eq!(name(&[("rack", "r9")]), None, "no match: built-in defaults");
    }

    #[test]
    fn crds_are_cluster_and_namespace_scoped() {
        assert_eq!(WasmPlugin::crd().spec.scope, "Cluster");
        assert_eq!(HostPolicy::crd().spec.scope, "Namespaced");
        assert_eq!(WasmPlugin::crd().spec.group, PLUGIN_GROUP);
    }
}
