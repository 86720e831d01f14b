//! The deployment manifests: every kustomization points at files that exist, every document is
//! a well-formed Kubernetes object, and the RBAC rules grant what the controller uses.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(document).expect("valid YAML");
            serde_json::to_value(value).expect("JSON-compatible YAML")
        })
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read deploy dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
    files
}

#[test]
fn kustomizations_reference_existing_resources() {
    for file in yaml_files(&deploy_dir())
        .into_iter()
        .filter(|path| path.ends_with("kustomization.yaml"))
    {
        let base = file.parent().expect("kustomization folder");
        for document in documents(&file) {
            for resource in document["resources"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let target = base.join(resource.as_str().expect("resource path"));
                assert!(
                    target.exists(),
                    "{}: {} does not exist",
                    file.display(),
                    target.display()
                );
            }
        }
    }
}

#[test]
fn every_manifest_is_a_kubernetes_object() {
    for file in yaml_files(&deploy_dir())
        .into_iter()
        .filter(|path| !path.ends_with("kustomization.yaml"))
    {
        for document in documents(&file) {
            assert!(
                document["apiVersion"].is_string(),
                "{}: apiVersion",
                file.display()
            );
            assert!(document["kind"].is_string(), "{}: kind", file.display());
            assert!(
                document["metadata"]["name"].is_string(),
                "{}: metadata.name",
                file.display()
            );
        }
    }
}

#[test]
fn rbac_grants_what_the_controller_uses() {
    let mut granted = Vec::new();
    for file in yaml_files(&deploy_dir().join("rbac")) {
        for document in documents(&file) {
            for rule in document["rules"].as_array().cloned().unwrap_or_default() {
                for resource in rule["resources"].as_array().cloned().unwrap_or_default() {
                    for verb in rule["verbs"].as_array().cloned().unwrap_or_default() {
                        granted.push(format!(
                            "{}:{}",
                            resource.as_str().unwrap_or_default(),
                            verb.as_str().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    let needed = [
        "baremetalhosts:watch",
        "baremetalhosts:patch",
        "baremetalhosts/status:update",
        "hardwaredata:create",
        "hardwaredata:update",
        "secrets:watch",
        "secrets:update",
        "events:create",
        "leases:update",
        "leases:create",
    ];
    for permission in needed {
        assert!(
            granted.iter().any(|have| have == permission),
            "missing {permission}"
        );
    }
}
