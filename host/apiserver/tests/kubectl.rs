//! Conformance checks driven by the machine's real `kubectl` (skipped when it
//! is not installed). Every invocation uses a fresh cache directory, because
//! the kubectl dispatcher caches `/version` per server URL.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Kubectl, TestServer, WIDGET_CRD};
use serde_json::Value;

const WIDGET: &str = "apiVersion: demo.example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  labels:\n    app: demo\nspec:\n  size: 1\n";

async fn with_crd(server: &TestServer) -> Option<Kubectl> {
    let kubectl = Kubectl::new(server.kubeconfig())?;
    let crd = kubectl.file("crd.yaml", WIDGET_CRD);
    kubectl.ok(&["apply", "-f", &crd]).await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.demo.example.com",
            "--timeout=5s",
        ])
        .await;
    Some(kubectl)
}

async fn with_widget(server: &TestServer) -> Option<Kubectl> {
    let kubectl = with_crd(server).await?;
    let widget = kubectl.file("widget.yaml", WIDGET);
    kubectl.ok(&["apply", "-f", &widget]).await;
    Some(kubectl)
}

/// `kubectl edit widget w1` with an editor script that changes `size: 1` to `to`.
async fn edit_size(kubectl: &Kubectl, to: u32) {
    let editor = kubectl.workdir.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\nsed -i 's/size: 1$/size: {to}/' \"$1\"\n"),
    )
    .expect("editor script");
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let editor = editor.display().to_string();
    let edit = kubectl
        .run_with_env(
            &["edit", "widget", "w1"],
            &[("EDITOR", &editor), ("KUBE_EDITOR", &editor)],
        )
        .await;
    assert!(
        edit.status.success(),
        "{}",
        String::from_utf8_lossy(&edit.stderr)
    );
}

async fn json_of(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&kubectl.ok(&full).await).expect("kubectl prints JSON")
}

/// Request log lines of the in-process servers, to see which kubectl the dispatcher ran.
static REQUEST_LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        REQUEST_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn version_reports_1_30() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ingot_apiserver=debug")
        .with_writer(|| LogSink)
        .with_ansi(false)
        .try_init();
    let server = TestServer::start().await;
    let Some(kubectl) = Kubectl::new(server.kubeconfig()) else {
        return;
    };
    let out = kubectl.ok(&["version"]).await;
    assert!(out.contains("Server Version: v1.30"), "{out}");
    let log = String::from_utf8_lossy(
        &REQUEST_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        log.contains("user_agent=kubectl/v1.30"),
        "the dispatcher did not run kubectl 1.30:\n{log}"
    );
}

async fn api_resources_lists_widgets(server: TestServer) {
    let Some(kubectl) = with_crd(&server).await else {
        return;
    };
    let out = kubectl.ok(&["api-resources"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("widgets "))
        .unwrap_or_else(|| panic!("no widgets line in:\n{out}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns,
        ["widgets", "wd", "demo.example.com/v1", "true", "Widget"]
    );
}

#[tokio::test]
async fn api_resources_with_aggregated_discovery() {
    api_resources_lists_widgets(TestServer::start().await).await;
}

#[tokio::test]
async fn api_resources_with_legacy_discovery() {
    api_resources_lists_widgets(TestServer::start_with(|b| b.legacy_discovery_only()).await).await;
}

#[tokio::test]
async fn apply_create_unchanged_configured() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_crd(&server).await else {
        return;
    };
    let widget = kubectl.file("widget.yaml", WIDGET);
    assert!(
        kubectl
            .ok(&["apply", "-f", &widget])
            .await
            .contains("widget.demo.example.com/w1 created")
    );
    assert!(
        kubectl
            .ok(&["apply", "-f", &widget])
            .await
            .contains("widget.demo.example.com/w1 unchanged")
    );
    let changed = kubectl.file("changed.yaml", &WIDGET.replace("size: 1", "size: 4"));
    assert!(
        kubectl
            .ok(&["apply", "-f", &changed])
            .await
            .contains("widget.demo.example.com/w1 configured")
    );
    assert_eq!(
        json_of(&kubectl, &["get", "widget", "w1"]).await["spec"]["size"],
        4
    );

    let cm = kubectl.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: one\n",
    );
    assert!(
        kubectl
            .ok(&["apply", "-f", &cm])
            .await
            .contains("configmap/c1 created")
    );
    let cm2 = kubectl.file(
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: two\n  b: three\n",
    );
    assert!(
        kubectl
            .ok(&["apply", "-f", &cm2])
            .await
            .contains("configmap/c1 configured")
    );
    assert_eq!(
        json_of(&kubectl, &["get", "configmap", "c1"]).await["data"],
        serde_json::json!({"a": "two", "b": "three"})
    );
}

#[tokio::test]
async fn apply_rejects_invalid_and_unknown_fields() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_crd(&server).await else {
        return;
    };
    let bad = kubectl.file("bad.yaml", &WIDGET.replace("size: 1", "size: \"x\""));
    let err = kubectl.fails(&["apply", "-f", &bad]).await;
    assert!(
        err.contains("The Widget \"w1\" is invalid: spec.size: Invalid value"),
        "{err}"
    );
    let unknown = kubectl.file("unknown.yaml", &format!("{WIDGET}  foo: bar\n"));
    let err = kubectl.fails(&["apply", "-f", &unknown]).await;
    assert!(
        err.contains("strict decoding error: unknown field \"spec.foo\""),
        "{err}"
    );
}

#[tokio::test]
async fn get_prints_crd_columns_and_labels() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    let out = kubectl.ok(&["get", "widgets"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SIZE", "PHASE"], "{out}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["w1", "1"]),
        "{out}"
    );

    let all = kubectl.ok(&["get", "widgets", "-A"]).await;
    assert!(all.starts_with("NAMESPACE"), "{all}");
    let labelled = kubectl.ok(&["get", "widgets", "-L", "app"]).await;
    assert!(
        labelled.lines().nth(1).is_some_and(|l| l.ends_with("demo")),
        "{labelled}"
    );
    let shown = kubectl.ok(&["get", "widgets", "--show-labels"]).await;
    assert!(shown.contains("app=demo"), "{shown}");

    let plain_crd = WIDGET_CRD
        .replace("widgets", "gadgets")
        .replace("widget", "gadget")
        .replace("Widget", "Gadget")
        .replace("[wd]", "[gd]");
    let plain_crd = plain_crd
        .split("    additionalPrinterColumns:")
        .next()
        .unwrap_or_default()
        .to_string()
        + "    schema:"
        + plain_crd.split("    schema:").nth(1).unwrap_or_default();
    kubectl
        .ok(&["apply", "-f", &kubectl.file("gadgets.yaml", &plain_crd)])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/gadgets.demo.example.com",
            "--timeout=5s",
        ])
        .await;
    kubectl
        .ok(&[
            "apply",
            "-f",
            &kubectl.file("g.yaml", &WIDGET.replace("Widget", "Gadget")),
        ])
        .await;
    let out = kubectl.ok(&["get", "gadgets"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "AGE"], "{out}");
}

#[tokio::test]
async fn watch_prints_one_row_per_change_and_generation_rules_hold() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    let mut watch = tokio::process::Command::new(common::kubectl_path().expect("kubectl"))
        .arg(format!("--kubeconfig={}", server.kubeconfig().display()))
        .arg(format!(
            "--cache-dir={}",
            kubectl.workdir.path().join("watch-cache").display()
        ))
        .args(["get", "widgets", "-w", "--no-headers"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch starts");
    tokio::time::sleep(Duration::from_secs(2)).await;

    edit_size(&kubectl, 2).await;
    assert_eq!(
        json_of(&kubectl, &["get", "widget", "w1"]).await["metadata"]["generation"],
        2
    );

    kubectl
        .ok(&[
            "patch",
            "widget",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Ready"}}"#,
        ])
        .await;
    let object = json_of(&kubectl, &["get", "widget", "w1"]).await;
    assert_eq!(object["metadata"]["generation"], 2);
    assert_eq!(object["status"]["phase"], "Ready");

    let waited = kubectl
        .ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Ready",
            "widget/w1",
            "--timeout=5s",
        ])
        .await;
    assert!(waited.contains("condition met"), "{waited}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    watch.start_kill().expect("stop watch");
    let output = watch.wait_with_output().await.expect("watch output");
    let rows: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(rows.len(), 3, "initial row plus one per change: {rows:?}");
    assert!(rows[1].split_whitespace().nth(1) == Some("2"), "{rows:?}");
    assert!(rows[2].contains("Ready"), "{rows:?}");
}

#[tokio::test]
async fn describe_shows_spec_status_and_events() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    let uid = json_of(&kubectl, &["get", "widget", "w1"]).await["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: w1.1\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: demo\nreportingInstance: demo-1\naction: Test\nreason: Tested\ntype: Normal\nnote: described event\nregarding:\n  apiVersion: demo.example.com/v1\n  kind: Widget\n  name: w1\n  namespace: default\n  uid: {uid}\n"
    );
    kubectl
        .ok(&["create", "-f", &kubectl.file("event.yaml", &event)])
        .await;
    let out = kubectl.ok(&["describe", "widget", "w1"]).await;
    assert!(out.contains("Spec:") && out.contains("Size:"), "{out}");
    assert!(
        out.contains("Events:") && out.contains("described event"),
        "{out}"
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_crd(&server).await else {
        return;
    };
    let file = kubectl.file("w.yaml", WIDGET);
    assert!(
        kubectl
            .ok(&["apply", "--server-side", "-f", &file])
            .await
            .contains("serverside-applied")
    );

    edit_size(&kubectl, 7).await;

    let err = kubectl
        .fails(&["apply", "--server-side", "-f", &file])
        .await;
    assert!(
        err.contains("conflict with \"kubectl-edit\"") && err.contains(".spec.size"),
        "{err}"
    );
    assert!(
        kubectl
            .ok(&["apply", "--server-side", "--force-conflicts", "-f", &file])
            .await
            .contains("serverside-applied")
    );
    let object = json_of(&kubectl, &["get", "widget", "w1", "--show-managed-fields"]).await;
    assert_eq!(object["spec"]["size"], 1);
    let managers = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let owner = managers
        .iter()
        .find(|m| m["fieldsV1"]["f:spec"]["f:size"].is_object())
        .expect("spec.size has an owner");
    assert_eq!(owner["manager"], "kubectl");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    kubectl
        .ok(&[
            "patch",
            "widget",
            "w1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["x/y"]}}"#,
        ])
        .await;
    kubectl
        .fails(&["delete", "widget", "w1", "--timeout=3s"])
        .await;
    let object = json_of(&kubectl, &["get", "widget", "w1"]).await;
    assert!(
        object["metadata"]["deletionTimestamp"].is_string(),
        "{object}"
    );
    assert_eq!(object["metadata"]["generation"], 2);

    let wait = tokio::spawn({
        let kubeconfig = server.kubeconfig().to_path_buf();
        async move {
            let waiter = Kubectl::new(&kubeconfig).expect("kubectl");
            waiter
                .run(&["wait", "--for=delete", "widget/w1", "--timeout=10s"])
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    kubectl
        .ok(&[
            "patch",
            "widget",
            "w1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        ])
        .await;
    let waited = wait.await.expect("join");
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let err = kubectl.fails(&["get", "widget", "w1"]).await;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn explain_lists_fields() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_crd(&server).await else {
        return;
    };
    let out = kubectl.ok(&["explain", "widgets.spec"]).await;
    assert!(out.contains("size") && out.contains("color"), "{out}");
}

#[tokio::test]
async fn strategic_patch_on_custom_resource_is_415() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    let err = kubectl
        .fails(&["patch", "widget", "w1", "--type=strategic", "-p", "{}"])
        .await;
    assert!(
        err.contains("UnsupportedMediaType")
            || err.contains("415")
            || err.contains("unknown format"),
        "{err}"
    );
}

#[tokio::test]
async fn selectors_filter_and_unknown_fields_are_rejected() {
    let server = TestServer::start().await;
    let Some(kubectl) = with_widget(&server).await else {
        return;
    };
    kubectl
        .ok(&[
            "apply",
            "-f",
            &kubectl.file(
                "w2.yaml",
                &WIDGET
                    .replace("w1", "w2")
                    .replace("app: demo", "app: other"),
            ),
        ])
        .await;
    let names = |out: String| {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            kubectl
                .ok(&["get", "widgets", "--field-selector", "metadata.name=w1"])
                .await
        ),
        ["w1"]
    );
    assert_eq!(
        names(kubectl.ok(&["get", "widgets", "-l", "app=demo"]).await),
        ["w1"]
    );
    assert_eq!(
        names(kubectl.ok(&["get", "widgets", "-l", "app!=demo"]).await),
        ["w2"]
    );
    let err = kubectl
        .fails(&["get", "widgets", "--field-selector", "spec.size=1"])
        .await;
    assert!(
        err.contains("BadRequest") || err.contains("not a known field selector"),
        "{err}"
    );
}
