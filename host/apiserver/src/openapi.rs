//! `/openapi/v3`: a root index and one document per group-version, built from
//! CRD schemas and small built-in stubs. Every PATCH operation declares the
//! `fieldValidation` parameter, which tells kubectl (1.29+) to let the server
//! validate instead of downloading the protobuf `/openapi/v2` document.

use serde_json::{Map, Value, json};

use crate::registry::{Builtin, Registry, ResourceDef};

/// Version reported in `info.version` and `/version`.
pub const KUBERNETES_VERSION: &str = "v1.30.0";

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `/openapi/v3`: the index of group-version documents with content hashes.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(registry) {
        let key = gv_path(&group, &version);
        let hash = document(registry, &group, &version)
            .map(|d| format!("{:08X}", crc32fast::hash(d.to_string().as_bytes())));
        if let Some(hash) = hash {
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), "v1".to_string())];
    for group in registry.groups() {
        for version in registry.group_versions(&group) {
            out.push((group.clone(), version));
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The schema component name upstream uses for a kind.
pub fn schema_name(def: &ResourceDef, version: &str) -> String {
    match def.builtin {
        Some(Builtin::Crd) => format!(
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{}",
            def.kind
        ),
        Some(_) if def.group.is_empty() => format!("io.k8s.api.core.{version}.{}", def.kind),
        Some(_) => format!(
            "io.k8s.api.{}.{version}.{}",
            def.group.split('.').next().unwrap_or_default(),
            def.kind
        ),
        None => {
            let reversed: Vec<&str> = def.group.split('.').rev().collect();
            format!("{}.{version}.{}", reversed.join("."), def.kind)
        }
    }
}

/// The document for one group-version, or `None` when nothing is served there.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = registry.resources_in(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.to_string(), object_meta_schema());
    for def in &defs {
        let name = schema_name(def, version);
        schemas.insert(name.clone(), kind_schema(def, version));
        add_paths(&mut paths, def, version, &name);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn gvk(def: &ResourceDef, version: &str) -> Value {
    json!({"group": def.group, "version": version, "kind": def.kind})
}

fn kind_schema(def: &ResourceDef, version: &str) -> Value {
    let declared = def
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.clone());
    let mut schema = declared
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(map) = schema.as_object_mut() {
        let properties = map.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = properties.as_object_mut() {
            props.insert("apiVersion".to_string(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".to_string(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".to_string(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}));
        }
        map.insert(
            "x-kubernetes-group-version-kind".to_string(),
            json!([gvk(def, version)]),
        );
    }
    schema
}

fn object_meta_schema() -> Value {
    let string = |d: &str| json!({"type": "string", "description": d});
    let string_map = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": string("Name must be unique within a namespace."),
            "generateName": string("Optional prefix used to generate a unique name."),
            "namespace": string("Namespace defines the space within which the name must be unique."),
            "uid": string("Unique identifier set by the server."),
            "resourceVersion": string("Opaque version of this object, set by the server."),
            "generation": {"type": "integer", "format": "int64", "description": "Sequence number of the desired state."},
            "creationTimestamp": string("Time the object was created."),
            "deletionTimestamp": string("Time after which the object will be deleted."),
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "labels": string_map("Map of string keys and values for organizing and selecting objects."),
            "annotations": string_map("Unstructured key value map set by tools."),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set",
                "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"],
                "description": "Objects depended by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "description": "Field ownership recorded by server-side apply."},
        }
    })
}

fn operation(
    def: &ResourceDef,
    version: &str,
    action: &str,
    schema: &str,
    query: &[&str],
) -> Value {
    let parameters: Vec<Value> = query
        .iter()
        .map(|name| json!({"name": name, "in": "query", "schema": {"type": if *name == "force" { "boolean" } else { "string" }, "uniqueItems": true}}))
        .collect();
    json!({
        "operationId": format!("{action}{}", def.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(def, version),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
    })
}

fn add_paths(paths: &mut Map<String, Value>, def: &ResourceDef, version: &str, schema: &str) {
    let base = if def.group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{}/{version}", def.group)
    };
    let scope = if def.namespaced {
        format!("{base}/namespaces/{{namespace}}")
    } else {
        base
    };
    let collection = format!("{scope}/{}", def.plural);
    let item = format!("{collection}/{{name}}");
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let patch = ["dryRun", "fieldManager", "fieldValidation", "force"];

    paths.insert(collection, json!({
        "get": operation(def, version, "list", schema, &["labelSelector", "fieldSelector", "watch", "resourceVersion"]),
        "post": operation(def, version, "post", schema, &write),
    }));
    paths.insert(
        item.clone(),
        json!({
            "get": operation(def, version, "get", schema, &[]),
            "put": operation(def, version, "put", schema, &write),
            "patch": operation(def, version, "patch", schema, &patch),
            "delete": operation(def, version, "delete", schema, &["dryRun"]),
        }),
    );
    if def.has_status(version) {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": operation(def, version, "get", schema, &[]),
                "put": operation(def, version, "put", schema, &write),
                "patch": operation(def, version, "patch", schema, &patch),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_declares_field_validation() {
        let registry = Registry::build(std::iter::empty());
        let doc = document(&registry, "", "v1").expect("core");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["name"] == "fieldValidation"))
        );
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "ConfigMap"
        );
        let root = root(&registry);
        assert!(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.starts_with("/openapi/v3/api/v1?hash="))
        );
    }
}
