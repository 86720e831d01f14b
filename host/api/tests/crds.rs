//! The generated CRDs are structural and `crds/` matches what `ingot crds` would write.

use std::path::{Path, PathBuf};

use ingot_api::{crds, structural};

fn repo_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds")
}

#[test]
fn every_crd_schema_is_structural() {
    let all = crds::all().expect("CRDs build");
    assert!(!all.is_empty());

    let mut problems = Vec::new();
    for crd in &all {
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|validation| validation.open_api_v3_schema.as_ref())
                .expect("every version has a schema");
            for problem in structural::violations(schema) {
                problems.push(format!(
                    "{} {}: {problem}",
                    crd.spec.names.kind, version.name
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "non-structural schemas:\n{}",
        problems.join("\n")
    );
}

/// Set `INGOT_WRITE_CRDS=1` to regenerate `crds/` from this test (same as `ingot crds`).
#[test]
fn checked_in_crds_are_up_to_date() {
    let dir = repo_crds_dir();
    if std::env::var_os("INGOT_WRITE_CRDS").is_some() {
        crds::write_all(&dir).expect("crds/ written");
    }
    let mut stale = Vec::new();
    let mut expected_files = Vec::new();
    for crd in crds::all().expect("CRDs build") {
        let name = crds::file_name(&crd);
        let want = crds::render(&crd).expect("CRD renders");
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if have != want {
            stale.push(name.clone());
        }
        expected_files.push(name);
    }

    let mut extra = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("crds/ exists").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !expected_files.contains(&name) {
            extra.push(name);
        }
    }

    assert!(
        stale.is_empty() && extra.is_empty(),
        "crds/ is stale (run `cargo run -p ingot -- crds`, or this test with INGOT_WRITE_CRDS=1): outdated {stale:?}, not generated {extra:?}"
    );
}

/// `kubectl scale` and autoscalers reach MachineSets and MachineDeployments through the
/// `/scale` subresource upstream Cluster API declares on every served version.
#[test]
fn replica_sets_of_machines_serve_scale_like_upstream() {
    let all = crds::all().expect("CRDs build");

    for kind in ["MachineSet", "MachineDeployment"] {
        let crd = all
            .iter()
            .find(|crd| crd.spec.names.kind == kind)
            .unwrap_or_else(|| panic!("{kind} CRD"));
        for version in &crd.spec.versions {
            let scale = version
                .subresources
                .as_ref()
                .and_then(|subresources| subresources.scale.as_ref())
                .unwrap_or_else(|| panic!("{kind} {} has /scale", version.name));
            assert_eq!(
                (
                    scale.spec_replicas_path.as_str(),
                    scale.status_replicas_path.as_str(),
                    scale.label_selector_path.as_deref(),
                ),
                (
                    ".spec.replicas",
                    ".status.replicas",
                    Some(".status.selector")
                ),
                "{kind} {}",
                version.name
            );
        }
    }
}
