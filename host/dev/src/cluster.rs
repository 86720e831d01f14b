//! The embedded control plane of a dev session: the API server with ingot's version
//! conversion, the CRDs, and applying manifests the way `kubectl apply --server-side` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingot_apiserver::{ApiServerBuilder, ConversionError, ConversionHook};
use ingot_operator::admission::Metal3Admission;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::Value;

/// Field manager of everything a dev session applies.
pub const FIELD_MANAGER: &str = "ingot-dev";

/// Failures preparing the control plane or applying manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRDs could not be generated.
    #[error("cannot generate the CRDs")]
    Crds(#[source] Box<ingot_api::crds::CrdError>),
    /// A CRD could not be installed.
    #[error("cannot install the CRD {name}")]
    InstallCrd {
        /// CRD name.
        name: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The manifest directory could not be read.
    #[error("cannot read the manifests in {path}")]
    ReadManifests {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file is not valid YAML.
    #[error("{path} is not valid YAML")]
    ParseManifest {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A manifest lacks `apiVersion`, `kind` or `metadata.name`.
    #[error("a document in {path} lacks apiVersion, kind or metadata.name")]
    IncompleteManifest {
        /// The file.
        path: PathBuf,
    },
    /// The server does not serve a manifest's kind.
    #[error("the server does not serve {api_version} {kind} (needed by {name})")]
    UnknownKind {
        /// apiVersion of the manifest.
        api_version: String,
        /// Kind of the manifest.
        kind: String,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The server refused a manifest.
    #[error("cannot apply {kind} {name}")]
    Apply {
        /// Kind.
        kind: String,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// A manifest could not be decoded as an object.
    #[error("cannot decode {kind} {name}")]
    Decode {
        /// Kind.
        kind: String,
        /// Object name.
        name: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Converts Cluster API and Metal3 provider objects between v1beta1 and v1beta2 in-process,
/// where a real cluster would call ingot's conversion webhook.
struct IngotConversion;

impl ConversionHook for IngotConversion {
    fn convert(&self, object: Value, desired_api_version: &str) -> Result<Value, ConversionError> {
        ingot_api::conversion::convert(object, desired_api_version)
            .map_err(|error| ConversionError(error.to_string()))
    }
}

/// An API server keeping its state in `data_dir`, converting ingot's multi-version kinds and
/// refusing what Metal3's admission webhooks refuse.
pub fn api_server(data_dir: &Path) -> ApiServerBuilder {
    let conversion: Arc<dyn ConversionHook> = Arc::new(IngotConversion);
    let builder = ApiServerBuilder::new(data_dir)
        .conversion_hook(ingot_api::CAPI_GROUP, conversion.clone())
        .conversion_hook(ingot_api::CAPM3_GROUP, conversion);
    Metal3Admission::register(builder)
}

/// Installs (or updates) every CRD with server-side apply.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let crds = ingot_api::crds::all().map_err(|error| Error::Crds(Box::new(error)))?;
    for mut crd in crds {
        let name = crd.name_any();
        crd.metadata.managed_fields = None;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| Error::InstallCrd {
                name,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// One object of a manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it came from.
    pub path: PathBuf,
    /// The object.
    pub object: Value,
}

impl Manifest {
    fn text(&self, pointer: &str) -> &str {
        self.object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.text("/apiVersion")
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        self.text("/kind")
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.text("/metadata/name")
    }
}

/// Every document of the `*.yaml` files in `dir`, files in name order.
pub fn load_manifests(dir: &Path) -> Result<Vec<Manifest>, Error> {
    let read_error = |source| Error::ReadManifests {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for path in files {
        manifests.extend(load_manifest_file(&path)?);
    }
    Ok(manifests)
}

/// Every document of one YAML file (empty documents skipped).
pub fn load_manifest_file(path: &Path) -> Result<Vec<Manifest>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadManifests {
        path: path.to_path_buf(),
        source,
    })?;
    let mut manifests = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).map_err(|source| Error::ParseManifest {
            path: path.to_path_buf(),
            source,
        })?;
        if object.is_null() {
            continue;
        }
        let manifest = Manifest {
            path: path.to_path_buf(),
            object,
        };
        if manifest.api_version().is_empty()
            || manifest.kind().is_empty()
            || manifest.name().is_empty()
        {
            return Err(Error::IncompleteManifest {
                path: path.to_path_buf(),
            });
        }
        manifests.push(manifest);
    }
    Ok(manifests)
}

/// Applies `manifests` in order with server-side apply, into `default` when they name no
/// namespace.
pub async fn apply(client: &Client, manifests: &[Manifest]) -> Result<(), Error> {
    for manifest in manifests {
        apply_one(client, manifest).await?;
    }
    Ok(())
}

/// Applies the manifests whose object does not exist yet, leaving existing objects as they
/// are (a resumed session keeps what was changed since). Returns how many were created.
pub async fn create_missing(client: &Client, manifests: &[Manifest]) -> Result<usize, Error> {
    let mut created = 0;
    for manifest in manifests {
        let api = api_for(client, manifest).await?;
        let existing = api
            .get_opt(manifest.name())
            .await
            .map_err(|source| Error::Apply {
                kind: manifest.kind().to_string(),
                name: manifest.name().to_string(),
                source: Box::new(source),
            })?;
        if existing.is_none() {
            apply_with(&api, manifest).await?;
            created += 1;
        }
    }
    Ok(created)
}

async fn apply_one(client: &Client, manifest: &Manifest) -> Result<(), Error> {
    let api = api_for(client, manifest).await?;
    apply_with(&api, manifest).await
}

/// The API serving a manifest's kind, in its namespace (`default` when it names none).
async fn api_for(client: &Client, manifest: &Manifest) -> Result<Api<DynamicObject>, Error> {
    let (group, version) = match manifest.api_version().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", manifest.api_version()),
    };
    let gvk = GroupVersionKind::gvk(group, version, manifest.kind());
    let (resource, capabilities) =
        pinned_kind(client, &gvk)
            .await
            .map_err(|source| Error::UnknownKind {
                api_version: manifest.api_version().to_string(),
                kind: manifest.kind().to_string(),
                name: manifest.name().to_string(),
                source: Box::new(source),
            })?;
    let api: Api<DynamicObject> = match capabilities.scope {
        kube::discovery::Scope::Namespaced => {
            let namespace = manifest
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str);
            Api::namespaced_with(client.clone(), namespace.unwrap_or("default"), &resource)
        }
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    Ok(api)
}

async fn apply_with(api: &Api<DynamicObject>, manifest: &Manifest) -> Result<(), Error> {
    let object: DynamicObject =
        serde_json::from_value(manifest.object.clone()).map_err(|source| Error::Decode {
            kind: manifest.kind().to_string(),
            name: manifest.name().to_string(),
            source,
        })?;
    api.patch(
        manifest.name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: manifest.kind().to_string(),
        name: manifest.name().to_string(),
        source: Box::new(source),
    })?;
    tracing::debug!(kind = manifest.kind(), name = manifest.name(), "applied");
    Ok(())
}
