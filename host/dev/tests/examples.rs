//! The manifests `ingot dev` applies are valid by ingot's own offline checks, and describe the
//! mixed fleet and the objects the walkthrough uses.

use std::path::PathBuf;

use ingot_api::manifest::{Options, check_files};
use ingot_dev::cluster::load_manifests;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev")
}

#[test]
fn examples_pass_offline_validation() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples/dev") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            files.push((path.display().to_string(), text));
        }
    }
    let report = check_files(&files, &Options::default());
    assert_eq!(report.errors(), 0, "{:#?}", report.findings);
    assert_eq!(report.warnings(), 0, "{:#?}", report.findings);
    assert_eq!(report.documents, 14);
}

#[test]
fn examples_describe_the_walkthrough_objects() {
    let manifests = load_manifests(&examples_dir()).expect("examples load");
    let addresses: Vec<String> = manifests
        .iter()
        .filter(|m| m.kind() == "BareMetalHost")
        .filter_map(|m| {
            m.object
                .pointer("/spec/bmc/address")
                .and_then(|a| a.as_str())
                .map(str::to_string)
        })
        .collect();
    for scheme in [
        "redfish-virtualmedia+http://",
        "idrac-virtualmedia+http://",
        "ipmi://",
    ] {
        assert!(
            addresses.iter().any(|a| a.starts_with(scheme)),
            "{scheme} in {addresses:?}"
        );
    }
    let set = manifests
        .iter()
        .find(|m| m.kind() == "MachineSet" && m.name() == "workers")
        .expect("MachineSet workers");
    assert_eq!(set.object["spec"]["replicas"], 0);
    for kind in [
        "Secret",
        "Cluster",
        "Metal3Cluster",
        "Metal3MachineTemplate",
        "WasmPlugin",
        "HostPolicy",
    ] {
        assert!(manifests.iter().any(|m| m.kind() == kind), "{kind} present");
    }
}
