//! The resources the server knows: built-in kinds plus every installed
//! CustomResourceDefinition. Rebuilt whenever a CRD is written so that a new
//! CRD is served (and discoverable) as soon as its create is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ApiError, FieldCause};
use crate::scale::ScalePaths;

/// Built-in kinds that need behaviour of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event (the storage form of all events).
    CoreEvent,
    /// events.k8s.io/v1 Event, a second view of the core events.
    EventsV1,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition.
    Crd,
    /// coordination.k8s.io/v1 Lease.
    Lease,
}

/// How a CRD converts between its served versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionStrategy {
    /// Only `apiVersion` is rewritten.
    None,
    /// The registered conversion hook converts.
    Webhook,
}

/// A printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: integer, number, string, boolean or date.
    pub column_type: String,
    /// Optional OpenAPI format.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 = shown by default, higher = only with `-o wide`.
    pub priority: i64,
    /// Simple JSONPath (`.spec.size`).
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionDef {
    /// Version name, e.g. `v1`.
    pub name: String,
    /// Whether requests may use this version.
    pub served: bool,
    /// The structural `openAPIV3Schema`, for CRs.
    pub schema: Option<Value>,
    /// Whether the `status` subresource is enabled.
    pub status_subresource: bool,
    /// The `scale` subresource, when declared.
    pub scale: Option<ScalePaths>,
    /// Printer columns declared by the CRD.
    pub columns: Vec<PrinterColumn>,
}

/// A resource (group + plural) with everything needed to serve it.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Versions in CRD order.
    pub versions: Vec<VersionDef>,
    /// The version objects are stored in.
    pub storage_version: String,
    /// How versions convert.
    pub conversion: ConversionStrategy,
    /// Special behaviour, `None` for custom resources.
    pub builtin: Option<Builtin>,
}

impl ResourceDef {
    /// Key of the table the objects live in; both event views share one.
    pub fn storage_key(&self) -> String {
        match self.builtin {
            Some(Builtin::EventsV1) | Some(Builtin::CoreEvent) => "/events".to_string(),
            _ => format!("{}/{}", self.group, self.plural),
        }
    }

    /// `apiVersion` for a version of this resource.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// A served version by name.
    pub fn served_version(&self, version: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == version && v.served)
    }

    /// Whether a version has the status subresource.
    pub fn has_status(&self, version: &str) -> bool {
        self.versions
            .iter()
            .any(|v| v.name == version && v.status_subresource)
    }

    /// The scale subresource of a version, if it has one.
    pub fn scale(&self, version: &str) -> Option<&ScalePaths> {
        self.versions
            .iter()
            .find(|v| v.name == version)
            .and_then(|v| v.scale.as_ref())
    }

    /// Custom resources and CRDs carry `metadata.generation`; other built-ins do not.
    pub fn has_generation(&self) -> bool {
        matches!(self.builtin, None | Some(Builtin::Crd))
    }

    /// Whether this is a custom resource served from a CRD.
    pub fn is_custom(&self) -> bool {
        self.builtin.is_none()
    }

    /// The verbs listed in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// All resources, keyed by (group, plural).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: BTreeMap<(String, String), Arc<ResourceDef>>,
}

impl Registry {
    /// Built-ins plus the given CRD objects (invalid CRDs are skipped; they were rejected on write).
    pub fn build<'a>(crds: impl Iterator<Item = &'a Value>) -> Self {
        let mut resources = BTreeMap::new();
        for def in builtins() {
            resources.insert((def.group.clone(), def.plural.clone()), Arc::new(def));
        }
        for crd in crds {
            if let Ok(def) = resource_from_crd(crd) {
                resources.insert((def.group.clone(), def.plural.clone()), Arc::new(def));
            }
        }
        Self { resources }
    }

    /// A resource served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let def = self
            .resources
            .get(&(group.to_string(), plural.to_string()))?;
        def.served_version(version)?;
        Some(def.clone())
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceDef>> {
        self.resources.values()
    }

    /// Group names in discovery order: core first, then built-in groups, then CRD groups.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for def in self.resources.values() {
            if !def.group.is_empty() && !groups.contains(&def.group) {
                groups.push(def.group.clone());
            }
        }
        groups
    }

    /// Served versions of a group, preferred first.
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for def in self.resources.values().filter(|d| d.group == group) {
            for version in def.versions.iter().filter(|v| v.served) {
                if !versions.contains(&version.name) {
                    versions.push(version.name.clone());
                }
            }
        }
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions
    }

    /// Resources served in group/version.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.resources
            .values()
            .filter(|d| d.group == group && d.served_version(version).is_some())
            .cloned()
            .collect()
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.trim_start_matches('v');
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let suffix = &rest[digits.len()..];
    let (stage, minor_text) = if let Some(m) = suffix.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = suffix.strip_prefix("alpha") {
        (0, m)
    } else if suffix.is_empty() {
        (2, "")
    } else {
        return (0, 0, 0);
    };
    (stage, major, minor_text.parse().unwrap_or(0))
}

fn builtin(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    builtin: Builtin,
) -> ResourceDef {
    let singular = kind.to_lowercase();
    ResourceDef {
        group: group.to_string(),
        plural: plural.to_string(),
        singular,
        kind: kind.to_string(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        versions: vec![VersionDef {
            name: "v1".to_string(),
            served: true,
            schema: None,
            status_subresource: matches!(builtin, Builtin::Namespace | Builtin::Crd),
            scale: None,
            columns: Vec::new(),
        }],
        storage_version: "v1".to_string(),
        conversion: ConversionStrategy::None,
        builtin: Some(builtin),
    }
}

fn builtins() -> Vec<ResourceDef> {
    vec![
        builtin(
            "",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            Builtin::Namespace,
        ),
        builtin("", "secrets", "Secret", true, &[], Builtin::Secret),
        builtin(
            "",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            Builtin::ConfigMap,
        ),
        builtin("", "events", "Event", true, &["ev"], Builtin::CoreEvent),
        builtin(
            "events.k8s.io",
            "events",
            "Event",
            true,
            &["ev"],
            Builtin::EventsV1,
        ),
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            Builtin::Crd,
        ),
        builtin(
            "coordination.k8s.io",
            "leases",
            "Lease",
            true,
            &[],
            Builtin::Lease,
        ),
    ]
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn strings_at(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a CRD and turns it into a resource definition; errors are 422 causes.
pub fn resource_from_crd(crd: &Value) -> Result<ResourceDef, Vec<FieldCause>> {
    let mut causes = Vec::new();
    let group = str_at(crd, "/spec/group").to_string();
    let plural = str_at(crd, "/spec/names/plural").to_string();
    let kind = str_at(crd, "/spec/names/kind").to_string();
    let name = str_at(crd, "/metadata/name");
    if group.is_empty() {
        causes.push(FieldCause::required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(FieldCause::required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(FieldCause::required("spec.names.kind"));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(FieldCause::invalid(
            "metadata.name",
            &Value::String(name.to_string()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = str_at(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(FieldCause::not_supported(
            "spec.scope",
            &Value::String(scope.to_string()),
            &[Value::from("Cluster"), Value::from("Namespaced")],
        ));
    }
    let versions = crd_versions(crd, &mut causes);
    let storage: Vec<&VersionDef> = versions.iter().collect();
    let storage_version = storage_version(crd, &mut causes);
    let conversion = match str_at(crd, "/spec/conversion/strategy") {
        "Webhook" => ConversionStrategy::Webhook,
        _ => ConversionStrategy::None,
    };
    if storage.is_empty() {
        causes.push(FieldCause::required("spec.versions"));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let singular = match str_at(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    Ok(ResourceDef {
        group,
        plural,
        singular,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strings_at(crd, "/spec/names/shortNames"),
        categories: strings_at(crd, "/spec/names/categories"),
        versions,
        storage_version,
        conversion,
        builtin: None,
    })
}

fn storage_version(crd: &Value, causes: &mut Vec<FieldCause>) -> String {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
        .collect();
    if storage.len() != 1 {
        causes.push(FieldCause::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
        return String::new();
    }
    str_at(storage[0], "/name").to_string()
}

fn crd_versions(crd: &Value, causes: &mut Vec<FieldCause>) -> Vec<VersionDef> {
    let Some(versions) = crd.pointer("/spec/versions").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut defs = Vec::new();
    for (index, version) in versions.iter().enumerate() {
        let name = str_at(version, "/name");
        if name.is_empty() {
            causes.push(FieldCause::required(&format!(
                "spec.versions[{index}].name"
            )));
            continue;
        }
        defs.push(VersionDef {
            name: name.to_string(),
            served: version
                .get("served")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            schema: version.pointer("/schema/openAPIV3Schema").cloned(),
            status_subresource: version.pointer("/subresources/status").is_some(),
            scale: ScalePaths::from_version(version),
            columns: printer_columns(version),
        });
    }
    defs
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let Some(columns) = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    columns
        .iter()
        .map(|c| PrinterColumn {
            name: str_at(c, "/name").to_string(),
            column_type: str_at(c, "/type").to_string(),
            format: str_at(c, "/format").to_string(),
            description: str_at(c, "/description").to_string(),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: str_at(c, "/jsonPath").to_string(),
        })
        .collect()
}

/// 422 for a CRD that cannot be served.
pub fn crd_invalid(name: &str, causes: &[FieldCause]) -> ApiError {
    ApiError::invalid(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        name,
        causes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_becomes_resource() {
        let crd = json!({
            "metadata": {"name": "widgets.demo.example.com"},
            "spec": {"group": "demo.example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]}
        });
        let registry = Registry::build(std::iter::once(&crd));
        let def = registry
            .find("demo.example.com", "v1", "widgets")
            .expect("served");
        assert_eq!(def.singular, "widget");
        assert!(def.has_status("v1"));
        assert_eq!(def.versions[0].columns[0].json_path, ".spec.size");
    }

    #[test]
    fn crd_without_storage_version_is_rejected() {
        let crd = json!({"metadata": {"name": "a.b.c"}, "spec": {"group": "b.c", "scope": "Cluster",
            "names": {"plural": "a", "kind": "A"}, "versions": [{"name": "v1", "served": true, "storage": false}]}});
        let causes = resource_from_crd(&crd).expect_err("no storage version");
        assert!(causes.iter().any(|c| c.field == "spec.versions"));
    }

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
