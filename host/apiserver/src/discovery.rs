//! Discovery documents: legacy (`/api`, `/apis`, per group-version resource
//! lists) and aggregated (`apidiscovery.k8s.io/v2`), built from the registry
//! on every request so new CRDs appear immediately.

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceDef};

/// Content type kubectl requires to recognise an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=APIGroupDiscoveryList")
            && params.contains(&"v=v2")
            && params.contains(&"g=apidiscovery.k8s.io")
    })
}

/// `GET /api` (legacy).
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_json(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .group_versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `GET /apis` (legacy).
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|g| group_json(registry, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>` (legacy).
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    if !registry.groups().iter().any(|g| g == group) {
        return None;
    }
    let mut doc = group_json(registry, group);
    doc["kind"] = Value::from("APIGroup");
    doc["apiVersion"] = Value::from("v1");
    Some(doc)
}

/// `GET /api/v1` or `/apis/<group>/<version>` (legacy).
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = registry.resources_in(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for def in &defs {
        resources.push(json!({
            "name": def.plural, "singularName": def.singular, "namespaced": def.namespaced,
            "kind": def.kind, "verbs": def.verbs(), "shortNames": def.short_names, "categories": def.categories,
        }));
        if def.has_status(version) {
            resources.push(json!({"name": format!("{}/status", def.plural), "singularName": "", "namespaced": def.namespaced,
                "kind": def.kind, "verbs": ["get", "patch", "update"]}));
        }
        if def.scale(version).is_some() {
            resources.push(json!({"name": format!("{}/scale", def.plural), "singularName": "", "namespaced": def.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": def_group_version(group, version), "resources": resources}),
    )
}

fn def_group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn aggregated_resource(def: &ResourceDef, version: &str) -> Value {
    let kind = json!({"group": def.group, "version": version, "kind": def.kind});
    let mut resource = json!({
        "resource": def.plural, "responseKind": kind, "scope": if def.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": def.singular, "verbs": def.verbs(),
    });
    if !def.short_names.is_empty() {
        resource["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        resource["categories"] = json!(def.categories);
    }
    let mut subresources = Vec::new();
    if def.has_status(version) {
        subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if def.scale(version).is_some() {
        let scale = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        subresources.push(json!({"subresource": "scale", "responseKind": scale, "verbs": ["get", "patch", "update"]}));
    }
    if !subresources.is_empty() {
        resource["subresources"] = Value::Array(subresources);
    }
    resource
}

fn aggregated_group(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .group_versions(group)
        .iter()
        .map(|version| {
            let resources: Vec<Value> = registry
                .resources_in(group, version)
                .iter()
                .map(|d| aggregated_resource(d, version))
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

/// Aggregated discovery for `/api` (core only) or `/apis` (all named groups).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(registry, "")]
    } else {
        registry
            .groups()
            .iter()
            .map(|g| aggregated_group(registry, g))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_aggregated() {
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(accept));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn core_resources_listed_with_status_entries() {
        let registry = Registry::build(std::iter::empty());
        let list = resource_list(&registry, "", "v1").expect("core");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"namespaces/status"), "{names:?}");
        assert!(names.contains(&"configmaps"));
        let all = aggregated(&registry, false);
        assert!(all["items"].as_array().is_some_and(|i| {
            i.iter()
                .any(|g| g["metadata"]["name"] == "coordination.k8s.io")
        }));
    }
}
