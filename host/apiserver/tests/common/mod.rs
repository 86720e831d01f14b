//! Shared helpers for the integration tests: an in-process server on an
//! ephemeral port, the Widget custom resource, and a real-`kubectl` runner.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use ingot_apiserver::{ApiServerBuilder, RunningApiServer};

/// A running server with its data directory.
pub struct TestServer {
    pub server: RunningApiServer,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    pub async fn start_with(configure: impl FnOnce(ApiServerBuilder) -> ApiServerBuilder) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let server = configure(ApiServerBuilder::new(dir.path()))
            .start()
            .await
            .expect("server starts");
        Self { server, dir }
    }

    pub async fn client(&self) -> kube::Client {
        self.server.client().await.expect("kube client")
    }

    pub fn kubeconfig(&self) -> &Path {
        self.server.kubeconfig_path()
    }
}

/// The Widget CRD used throughout (printer columns, status subresource, schema).
pub const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.demo.example.com
spec:
  group: demo.example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Phase
      type: string
      jsonPath: .status.phase
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: Desired state of the widget.
            properties:
              size:
                type: integer
                description: How big the widget is.
              color:
                type: string
                description: Paint colour.
          status:
            type: object
            properties:
              phase:
                type: string
"#;

/// Polls `check` every 100 ms for up to 10 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Where the real kubectl lives, if it is installed.
pub fn kubectl_path() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/kubectl");
    path.exists().then_some(path)
}

/// Runs kubectl against the server with a fresh cache directory (the dispatcher
/// caches `/version` per server URL).
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
}

impl Kubectl {
    /// `None` (with a printed reason) when kubectl is absent.
    pub fn new(kubeconfig: &Path) -> Option<Self> {
        let Some(binary) = kubectl_path() else {
            eprintln!("skipped: /usr/bin/kubectl is not installed");
            return None;
        };
        Some(Self {
            binary,
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().expect("cache dir"),
            workdir: tempfile::tempdir().expect("work dir"),
        })
    }

    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.workdir.path().join(name);
        std::fs::write(&path, contents).expect("write manifest");
        path.display().to_string()
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[]).await
    }

    pub async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .args(args)
            .env("KUBECACHEDIR", self.cache.path())
            .env("HOME", self.workdir.path())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().await.expect("kubectl runs")
    }

    /// Runs and asserts success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            !output.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}
