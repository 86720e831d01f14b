//! From a `WasmPlugin` object to what the plugin registry loads.
//!
//! File and URL sources are handed to the registry as they are (it reads,
//! downloads and verifies them); a ConfigMap source is read here, through
//! the API, because the registry knows nothing of Kubernetes.

use std::path::PathBuf;

use ingot_api::plugins::{self as api, WasmPlugin, validate_wasm_plugin};
use ingot_plugin_host::cache::sha256_hex;
use ingot_plugin_host::limits::{FailurePolicy, Limits};
use ingot_plugin_host::registry::PluginSpec;
use ingot_plugin_host::source::PluginSource;
use ingot_plugin_host::world::World;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

/// Why a `WasmPlugin`'s spec could not be turned into something to load.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec breaks rules the schema cannot express.
    #[error("the spec is invalid: {}", problems.join("; "))]
    Invalid {
        /// Every problem found, each naming its field.
        problems: Vec<String>,
    },

    /// The ConfigMap holding the component could not be read.
    #[error("could not read ConfigMap {namespace}/{name}")]
    ReadConfigMap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// The ConfigMap does not exist.
    #[error(
        "ConfigMap {namespace}/{name} does not exist: create it with the component under binaryData key {key:?}"
    )]
    ConfigMapMissing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key the component should be under.
        key: String,
    },

    /// The ConfigMap has no such `binaryData` key.
    #[error(
        "ConfigMap {namespace}/{name} has no binaryData key {key:?}: create it with `kubectl create configmap {name} --from-file={key}=<plugin.wasm>` (a .wasm file becomes binaryData)"
    )]
    ConfigMapKeyMissing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The missing key.
        key: String,
    },
}

impl SpecError {
    /// The condition reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidSpec",
            Self::ReadConfigMap { .. } => "SourceUnavailable",
            Self::ConfigMapMissing { .. } | Self::ConfigMapKeyMissing { .. } => "SourceMissing",
        }
    }
}

/// What to load for one `WasmPlugin`, and a fingerprint of everything that
/// went into it: the same fingerprint means the same plugin.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The registry's spec.
    pub spec: PluginSpec,
    /// The spec and, for a ConfigMap source, the component's digest.
    pub fingerprint: String,
}

/// Resolves `plugin`'s source and settings.
///
/// # Errors
/// [`SpecError`] when the spec is invalid or its ConfigMap cannot be read.
pub async fn resolve(client: &Client, plugin: &WasmPlugin) -> Result<Resolved, SpecError> {
    let problems = validate_wasm_plugin(&plugin.spec);
    if !problems.is_empty() {
        return Err(SpecError::Invalid { problems });
    }

    let source = source(client, &plugin.spec.source).await?;
    let fingerprint = fingerprint(plugin, &source);

    Ok(Resolved {
        spec: PluginSpec {
            source,
            world: Some(world(plugin.spec.world)),
            config: plugin.spec.config.clone().into_iter().collect(),
            limits: limits(&plugin.spec),
            failure_policy: failure_policy(plugin.spec.failure_policy),
        },
        fingerprint,
    })
}

async fn source(client: &Client, source: &api::PluginSource) -> Result<PluginSource, SpecError> {
    if let Some(file) = &source.file {
        return Ok(PluginSource::File {
            path: PathBuf::from(&file.path),
            sha256: file.sha256.clone(),
        });
    }

    if let Some(url) = &source.url {
        return Ok(PluginSource::Https {
            url: url.url.clone(),
            sha256: url.sha256.clone(),
        });
    }

    match &source.config_map {
        Some(map) => config_map_source(client, map).await,
        None => Err(SpecError::Invalid {
            problems: vec!["spec.source: set exactly one of file, configMap or url".to_owned()],
        }),
    }
}

async fn config_map_source(
    client: &Client,
    map: &api::ConfigMapSource,
) -> Result<PluginSource, SpecError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &map.namespace);
    let found = api
        .get_opt(&map.name)
        .await
        .map_err(|source| SpecError::ReadConfigMap {
            namespace: map.namespace.clone(),
            name: map.name.clone(),
            source,
        })?;

    let Some(found) = found else {
        return Err(SpecError::ConfigMapMissing {
            namespace: map.namespace.clone(),
            name: map.name.clone(),
            key: map.key.clone(),
        });
    };
    let bytes = found
        .binary_data
        .and_then(|mut data| data.remove(&map.key))
        .ok_or_else(|| SpecError::ConfigMapKeyMissing {
            namespace: map.namespace.clone(),
            name: map.name.clone(),
            key: map.key.clone(),
        })?;

    Ok(PluginSource::Bytes {
        origin: format!("configmap {}/{} key {}", map.namespace, map.name, map.key),
        bytes: bytes.0,
        sha256: map.sha256.clone(),
    })
}

/// The spec as the API stores it, plus the digest of ConfigMap bytes: a
/// ConfigMap can change under an unchanged spec.
fn fingerprint(plugin: &WasmPlugin, source: &PluginSource) -> String {
    let spec = serde_json::to_vec(&plugin.spec).unwrap_or_default();
    let content = match source {
        PluginSource::Bytes { bytes, .. } => sha256_hex(bytes),
        PluginSource::File { .. } | PluginSource::Https { .. } => String::new(),
    };
    format!("{}/{content}", sha256_hex(&spec))
}

/// The host world of an API world.
pub fn world(world: api::PluginWorld) -> World {
    match world {
        api::PluginWorld::BmcDriver => World::BmcDriver,
        api::PluginWorld::HostSelector => World::HostSelector,
        api::PluginWorld::ProvisioningSteps => World::ProvisioningSteps,
    }
}

fn failure_policy(policy: api::FailurePolicy) -> FailurePolicy {
    match policy {
        api::FailurePolicy::Fail => FailurePolicy::Fail,
        api::FailurePolicy::Ignore => FailurePolicy::Ignore,
        api::FailurePolicy::UseBuiltin => FailurePolicy::UseBuiltin,
    }
}

/// The world's defaults with the spec's limits on top: selectors compute
/// and answer within a second; drivers and steps wait on BMCs and agents.
fn limits(spec: &api::WasmPluginSpec) -> Limits {
    let mut limits = match spec.world {
        api::PluginWorld::HostSelector => Limits::for_selection(),
        api::PluginWorld::BmcDriver | api::PluginWorld::ProvisioningSteps => Limits::default(),
    };
    let asked = spec.limits.clone().unwrap_or_default();

    if let Some(timeout) = asked.timeout_milliseconds {
        limits.timeout_ms = timeout;
    }
    if let Some(mebibytes) = asked.memory_mebibytes {
        limits.memory_bytes = mebibytes << 20;
    }

    limits
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use ingot_api::plugins::{FileSource, PluginLimits, WasmPluginSpec};

    fn spec(world: api::PluginWorld, limits: Option<PluginLimits>) -> WasmPluginSpec {
        WasmPluginSpec {
            source: api::PluginSource {
                file: Some(FileSource {
                    path: "/plugins/p.wasm".into(),
                    sha256: None,
                }),
                ..api::PluginSource::default()
            },
            world,
            config: BTreeMap::new(),
            limits,
            failure_policy: api::FailurePolicy::Fail,
        }
    }

    #[test]
    fn limits_start_from_the_world_defaults() {
        let selector = limits(&spec(api::PluginWorld::HostSelector, None));
        let driver = limits(&spec(api::PluginWorld::BmcDriver, None));

        assert_eq!(selector, Limits::for_selection());
        assert_eq!(driver, Limits::default());
    }

    #[test]
    fn asked_limits_replace_the_defaults() {
        let asked = PluginLimits {
            timeout_milliseconds: Some(2_500),
            memory_mebibytes: Some(16),
        };

        let limits = limits(&spec(api::PluginWorld::BmcDriver, Some(asked)));

        assert_eq!(limits.timeout_ms, 2_500);
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.log_records, Limits::default().log_records);
    }

    #[test]
    fn the_fingerprint_follows_the_spec_and_configmap_content() {
        let plugin = WasmPlugin::new("p", spec(api::PluginWorld::BmcDriver, None));
        let bytes = |content: &[u8]| PluginSource::Bytes {
            origin: "configmap".into(),
            bytes: content.to_vec(),
            sha256: None,
        };
        let mut changed = plugin.clone();
        changed.spec.config.insert("site".into(), "par1".into());

        assert_eq!(
            fingerprint(&plugin, &bytes(b"v1")),
            fingerprint(&plugin, &bytes(b"v1"))
        );
        assert_ne!(
            fingerprint(&plugin, &bytes(b"v1")),
            fingerprint(&plugin, &bytes(b"v2"))
        );
        assert_ne!(
            fingerprint(&plugin, &bytes(b"v1")),
            fingerprint(&changed, &bytes(b"v1"))
        );
    }
}
