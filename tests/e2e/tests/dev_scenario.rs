//! The README scenario against `ingot dev`, with the real kubectl: the fleet becomes
//! available, scaling the `workers` MachineSet claims and provisions a host (its virtual disk
//! holds the image) and gives its Machine a providerID, a new build of the Redfish driver is
//! swapped in while the host provisions, scaling back to zero releases and cleans the host,
//! Ctrl-C stops cleanly and a second run resumes from the state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ingot_e2e::{
    DevSession, Kubectl, eventually, free_tcp_address, has_partition_table, lab_disks,
};
use serde_json::Value;

const HOSTS: [&str; 4] = ["lab-0", "lab-1", "lab-2", "lab-3"];
const WORKER_HOSTS: [&str; 3] = ["lab-0", "lab-1", "lab-2"];
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn session_args() -> Vec<String> {
    vec![
        format!("--listen={}", free_tcp_address()),
        format!("--lab-listen={}", free_tcp_address()),
        format!("--operator-endpoints={}", free_tcp_address()),
        format!("--agent-listen={}", free_tcp_address()),
        "--image-mib=64".to_string(),
    ]
}

fn state_of(host: &Value) -> &str {
    host["status"]["provisioning"]["state"]
        .as_str()
        .unwrap_or_default()
}

fn host_named<'a>(hosts: &'a [Value], name: &str) -> Option<&'a Value> {
    hosts.iter().find(|h| h["metadata"]["name"] == name)
}

fn wait_all_available(kubectl: &Kubectl) -> Vec<Value> {
    eventually("every host available", STEP_TIMEOUT, || {
        let hosts = kubectl.try_items("baremetalhosts")?;
        let ready = HOSTS
            .iter()
            .all(|name| host_named(&hosts, name).is_some_and(|h| state_of(h) == "available"));
        ready.then_some(hosts)
    })
}

/// Where the root filesystem of the lab's OS image starts (after its 32 MiB EFI partition):
/// the config drive the operator adds changes the partition table, but not this.
const ROOT_FILESYSTEM_OFFSET: u64 = 33 << 20;

/// `len` bytes of a file at `offset`; lab disks are large sparse files, never read whole.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = vec![0; len];
    let read = file
        .read_at(&mut bytes, offset)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.truncate(read);
    bytes
}

/// The virtual disks of lab machine `host` that hold the OS image: a partition table and the
/// image's root filesystem.
fn disks_holding_image(state: &Path, host: &str) -> Vec<PathBuf> {
    let image = state.join("lab").join("images").join("lab-os.raw");
    let root = read_at(&image, ROOT_FILESYSTEM_OFFSET, 4096);
    lab_disks(&state.join("lab"), host)
        .into_iter()
        .filter(|disk| has_partition_table(disk))
        .filter(|disk| read_at(disk, ROOT_FILESYSTEM_OFFSET, 4096) == root)
        .collect()
}

/// A new build of a plugin component: the same code with a custom section naming `version`
/// appended, so its digest differs as a rebuilt component's would.
fn rebuilt_component(original: &Path, version: &str, into: &Path) -> PathBuf {
    let mut bytes = std::fs::read(original).unwrap_or_else(|e| panic!("{e}"));
    let name = b"ingot-build";
    let mut payload = vec![u8::try_from(name.len()).unwrap_or_default()];
    payload.extend_from_slice(name);
    payload.extend_from_slice(version.as_bytes());
    bytes.push(0);
    bytes.push(u8::try_from(payload.len()).expect("short custom section"));
    bytes.extend_from_slice(&payload);

    let path = into.join(format!("redfish-{version}.wasm"));
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Swaps the `redfish` WasmPlugin to a new build and waits until the new digest serves.
fn swap_redfish_driver(kubectl: &Kubectl, state: &Path) -> String {
    let plugin = kubectl.json(&["get", "wasmplugin", "redfish"]);
    let original = plugin["spec"]["source"]["file"]["path"]
        .as_str()
        .map(PathBuf::from)
        .expect("the redfish WasmPlugin loads from a file");
    let rebuilt = rebuilt_component(&original, "2", state);
    let digest = sha256_hex(&rebuilt);
    let patch = serde_json::json!({"spec": {"source": {"file": {"path": rebuilt}}}});
    kubectl.ok(&[
        "patch",
        "wasmplugin",
        "redfish",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);

    eventually("the new redfish build serving", STEP_TIMEOUT, || {
        let plugin = kubectl.json(&["get", "wasmplugin", "redfish"]);
        let ready = plugin["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && plugin["status"]["loadedDigest"] == digest.as_str()).then_some(())
    });
    digest
}

#[test]
fn scale_up_provision_scale_down_and_resume() {
    let Some(_) = Kubectl::new(std::path::Path::new("/dev/null")) else {
        eprintln!("skipped: {} is not installed", ingot_e2e::KUBECTL);
        return;
    };
    let state = tempfile::tempdir().expect("state directory");
    let mut session = DevSession::start(state.path(), &session_args());
    let kubectl = Kubectl::new(&session.kubeconfig).expect("kubectl");

    // The fleet registers and becomes available; the view logs each change.
    let hosts = wait_all_available(&kubectl);
    for name in HOSTS {
        let host = host_named(&hosts, name).expect("host listed");
        assert!(
            host["spec"]["consumerRef"].is_null(),
            "{name} starts unclaimed"
        );
    }
    let table = kubectl.ok(&["get", "bmh"]);
    assert!(
        table.contains("lab-2") && table.contains("available"),
        "{table}"
    );
    eventually("the fleet view logging availability", STEP_TIMEOUT, || {
        let output = session.output.lock().map(|o| o.clone()).unwrap_or_default();
        output
            .iter()
            .any(|line| line.contains("host=default/lab-0 state=available"))
            .then_some(())
    });

    // Scale up: a Machine, its Metal3Machine, a claimed worker host, a providerID.
    let scale = kubectl.json(&["get", "machineset", "workers"]);
    assert_eq!(scale["spec"]["replicas"], 0);
    let out = kubectl.ok(&["scale", "machineset", "workers", "--replicas=1"]);
    assert!(out.contains("scaled"), "{out}");

    let machine = eventually("a Machine with a providerID", STEP_TIMEOUT, || {
        kubectl.items("machines").into_iter().find(|m| {
            m["spec"]["providerID"]
                .as_str()
                .is_some_and(|p| !p.is_empty())
        })
    });
    let machine_name = machine["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(machine_name.starts_with("workers-"), "{machine_name}");
    let hosts = kubectl.items("baremetalhosts");
    let claimed: Vec<&Value> = hosts
        .iter()
        .filter(|h| h["spec"]["consumerRef"]["name"] == machine_name.as_str())
        .collect();
    assert_eq!(
        claimed.len(),
        1,
        "exactly one host claimed by {machine_name}"
    );
    let host = claimed[0];
    let host_name = host["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        WORKER_HOSTS.contains(&host_name),
        "{host_name} is from the workers pool"
    );
    assert_eq!(
        machine["spec"]["providerID"],
        format!("metal3://default/{host_name}/{machine_name}")
    );
    // While it provisions, a new build of its driver replaces the old one without a restart.
    eventually("the claimed host provisioning", STEP_TIMEOUT, || {
        let host = kubectl.json(&["get", "bmh", host_name]);
        matches!(state_of(&host), "provisioning" | "provisioned").then_some(())
    });
    swap_redfish_driver(&kubectl, state.path());

    let provisioned = eventually("the claimed host provisioned", STEP_TIMEOUT, || {
        let host = kubectl.json(&["get", "bmh", host_name]);
        (state_of(&host) == "provisioned").then_some(host)
    });
    assert_eq!(
        provisioned["status"]["errorMessage"]
            .as_str()
            .unwrap_or_default(),
        ""
    );
    assert_eq!(
        disks_holding_image(state.path(), host_name).len(),
        1,
        "one disk of {host_name} holds the image"
    );
    assert!(
        provisioned["spec"]["image"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/images/lab-os.raw")),
        "{provisioned}"
    );
    let bootstrap = kubectl.json(&["get", "secret", &format!("{machine_name}-bootstrap")]);
    assert_eq!(bootstrap["type"], "cluster.x-k8s.io/secret");

    // Scale down: the Machine goes, the host is deprovisioned and available again.
    kubectl.ok(&["scale", "machineset", "workers", "--replicas=0"]);
    eventually("the Machine deleted", STEP_TIMEOUT, || {
        kubectl.items("machines").is_empty().then_some(())
    });
    eventually(
        "the host available and unclaimed again",
        STEP_TIMEOUT,
        || {
            let host = kubectl.json(&["get", "bmh", host_name]);
            (state_of(&host) == "available" && host["spec"]["consumerRef"].is_null()).then_some(())
        },
    );
    assert!(kubectl.items("metal3machines").is_empty());
    let still_partitioned: Vec<PathBuf> = lab_disks(&state.path().join("lab"), host_name)
        .into_iter()
        .filter(|disk| has_partition_table(disk))
        .collect();
    assert!(
        still_partitioned.is_empty(),
        "cleaning erased every partition table of {host_name}: {still_partitioned:?}"
    );

    // Ctrl-C stops everything cleanly; a change made since the first start survives it.
    kubectl.ok(&["label", "bmh", "lab-3", "note=kept"]);
    let status = session.interrupt();
    assert!(status.success(), "ingot dev exit status {status:?}");

    // A second run resumes from the state directory: nothing recreated, nothing lost.
    let session = DevSession::start(state.path(), &session_args());
    let kubectl = Kubectl::new(&session.kubeconfig).expect("kubectl");
    let hosts = wait_all_available(&kubectl);
    assert_eq!(hosts.len(), HOSTS.len(), "no duplicate hosts");
    let set = kubectl.json(&["get", "machineset", "workers"]);
    assert_eq!(set["spec"]["replicas"], 0, "the scale stays as left");
    let relabelled = kubectl.json(&["get", "bmh", "lab-3"]);
    assert_eq!(
        relabelled["metadata"]["labels"]["note"], "kept",
        "examples are not re-applied"
    );
}
