//! The Metal3 admission rules inside the embedded API server, driven by the real `kubectl`
//! (skipped when it is not installed): what a Metal3 cluster's webhook refuses is refused
//! with the same message, naming the field, and the dev walkthrough's manifests still pass.

use std::path::{Path, PathBuf};
use std::process::Output;

use ingot_apiserver::RunningApiServer;
use ingot_dev::cluster;

const KUBECTL: &str = "/usr/bin/kubectl";

const VALID_HOST: &str = "apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: host-0
  namespace: default
spec:
  online: true
  bootMACAddress: \"52:54:00:00:00:10\"
  bmc:
    address: redfish://127.0.0.1:8700/redfish/v1/Systems/host-0
    credentialsName: host-0-bmc
";

struct Cluster {
    _dir: tempfile::TempDir,
    _server: RunningApiServer,
    kubeconfig: PathBuf,
    workdir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (with a printed reason) when kubectl is absent.
    async fn start() -> Option<Self> {
        if !Path::new(KUBECTL).exists() {
            eprintln!("skipped: {KUBECTL} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = cluster::api_server(dir.path())
            .start()
            .await
            .expect("apiserver starts");
        let client = server.client().await.expect("client");
        cluster::install_crds(&client)
            .await
            .expect("crds installed");
        Some(Cluster {
            kubeconfig: server.kubeconfig_path().to_path_buf(),
            _dir: dir,
            _server: server,
            workdir: tempfile::tempdir().expect("work directory"),
        })
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(KUBECTL)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.workdir.path().join("cache").display()
            ))
            .args(args)
            .env("HOME", self.workdir.path())
            .kill_on_drop(true)
            .output()
            .await
            .expect("kubectl runs")
    }

    /// `kubectl apply` of `manifest`; its output (stdout and stderr) and whether it succeeded.
    async fn apply(&self, manifest: &str) -> (bool, String) {
        let path = self.workdir.path().join("manifest.yaml");
        std::fs::write(&path, manifest).expect("write manifest");
        self.apply_path(&path).await
    }

    async fn apply_path(&self, path: &Path) -> (bool, String) {
        let path = path.display().to_string();
        let output = self.kubectl(&["apply", "-f", &path]).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }
}

fn with_spec_lines(manifest: &str, lines: &str) -> String {
    format!("{manifest}{lines}")
}

#[tokio::test]
async fn invalid_hosts_are_refused_with_the_field_named() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };

    let no_checksum = with_spec_lines(VALID_HOST, "  image:\n    url: http://127.0.0.1/os.img\n");
    let (applied, output) = cluster.apply(&no_checksum).await;
    assert!(!applied, "{output}");
    assert!(
        output.contains("The BareMetalHost \"host-0\" is invalid")
            && output.contains("spec.image.checksum")
            && output.contains("checksum is required for normal images"),
        "{output}"
    );

    let power_off_disabled =
        VALID_HOST.replace("online: true", "online: false\n  disablePowerOff: true");
    let (applied, output) = cluster.apply(&power_off_disabled).await;
    assert!(!applied, "{output}");
    assert!(
        output.contains("online set to false and have power off disabled"),
        "{output}"
    );

    let hosts = cluster
        .kubectl(&["get", "baremetalhosts", "-A", "-o", "name"])
        .await;
    assert!(
        hosts.status.success() && hosts.stdout.is_empty(),
        "nothing refused is stored: {}",
        String::from_utf8_lossy(&hosts.stdout)
    );
}

#[tokio::test]
async fn cross_namespace_user_data_is_forbidden() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };

    let elsewhere = with_spec_lines(
        VALID_HOST,
        "  userData:\n    name: cloud-init\n    namespace: kube-system\n",
    );
    let (applied, output) = cluster.apply(&elsewhere).await;

    assert!(!applied, "{output}");
    assert!(
        output.contains("Error from server (Forbidden)")
            && output.contains("spec.userData")
            && output.contains("cross-namespace Secret references are not allowed"),
        "{output}"
    );
}

#[tokio::test]
async fn a_valid_host_is_accepted_and_a_deprecated_field_warned_about() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };

    let (applied, output) = cluster.apply(VALID_HOST).await;
    assert!(applied, "{output}");
    assert!(!output.contains("Warning"), "{output}");

    let profiled = with_spec_lines(VALID_HOST, "  hardwareProfile: libvirt\n");
    let (applied, output) = cluster.apply(&profiled).await;
    assert!(applied, "{output}");
    assert!(
        output.contains("Warning: spec.hardwareProfile: deprecated"),
        "{output}"
    );
}

#[tokio::test]
async fn changing_the_boot_mac_address_is_refused() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (applied, output) = cluster.apply(VALID_HOST).await;
    assert!(applied, "{output}");

    let moved = VALID_HOST.replace("52:54:00:00:00:10", "52:54:00:00:00:11");
    let (applied, output) = cluster.apply(&moved).await;

    assert!(!applied, "{output}");
    assert!(
        output.contains("spec.bootMACAddress")
            && output.contains("bootMACAddress can not be changed once it is set"),
        "{output}"
    );
    let stored = cluster
        .kubectl(&[
            "get",
            "bmh",
            "host-0",
            "-o",
            "jsonpath={.spec.bootMACAddress}",
        ])
        .await;
    assert_eq!(String::from_utf8_lossy(&stored.stdout), "52:54:00:00:00:10");
}

#[tokio::test]
async fn an_invalid_metal3_machine_template_is_refused() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let template = "apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: Metal3MachineTemplate
metadata:
  name: workers
  namespace: default
spec:
  template:
    spec:
      image:
        url: http://127.0.0.1/os.img
        checksum: http://127.0.0.1/os.img.sha256sum
        checksumType: sha256
        format: raw
      userData:
        name: cloud-init
        namespace: kube-system
";

    let (applied, output) = cluster.apply(template).await;

    assert!(!applied, "{output}");
    assert!(output.contains("spec.template.spec.userData"), "{output}");
}

#[tokio::test]
async fn the_dev_walkthrough_manifests_are_admitted() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dev");

    let (applied, output) = cluster.apply_path(&examples).await;

    assert!(applied, "{output}");
    assert!(!output.contains("Warning"), "{output}");
}
