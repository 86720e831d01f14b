//! `ingot validate` and `ingot crds` through the real binary: exit codes and output lines.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../api/tests/fixtures/manifests")
        .join(name)
}

fn ingot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ingot runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn valid_manifests_exit_zero_with_a_summary() {
    let path = fixture("valid-image-at-creation-with-user-data.yaml");
    let output = ingot(&["validate", path.to_str().expect("utf-8 path")]);
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), "");
    assert!(text(&output.stderr).contains("checked 3 documents in 1 files: 0 errors, 0 warnings"));
}

#[test]
fn each_problem_is_one_line_with_file_document_object_and_field() {
    let path = fixture("reject-cleaning-mode-typo.yaml");
    let output = ingot(&["validate", path.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    let expected = format!(
        "{}: document 1: BareMetalHost/rack1-node2: spec.automatedCleaningMode: error: Unsupported value: \"disable\": supported values: \"metadata\", \"disabled\"\n",
        path.display()
    );
    assert_eq!(stdout, expected);
}

#[test]
fn warnings_alone_do_not_fail() {
    let path = fixture("warn-broadcast-boot-mac.yaml");
    let output = ingot(&["validate", path.to_str().expect("utf-8 path")]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains(": spec.bootMACAddress: warning: "));
}

#[test]
fn templates_broken_yaml_and_missing_files_fail_cleanly() {
    let template = fixture("template-jinja-blocks.yaml");
    let missing = fixture("does-not-exist.yaml");
    let output = ingot(&[
        "validate",
        template.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("error: un-rendered Jinja"), "{stdout}");
    assert!(stdout.contains("error: invalid YAML at line"), "{stdout}");
    assert!(
        stdout.contains("does-not-exist.yaml: document 0: -: -: error: cannot read:"),
        "{stdout}"
    );
    assert!(!text(&output.stderr).contains("panicked"));
}

#[test]
fn namespace_option_decides_cross_namespace_references() {
    let path = fixture("namespace-cross-namespace-user-data.yaml");
    let path = path.to_str().expect("utf-8 path");
    assert_eq!(ingot(&["validate", path]).status.code(), Some(1));
    assert!(
        ingot(&["validate", "--namespace", "provisioning", path])
            .status
            .success()
    );
}

#[test]
fn a_directory_stands_for_its_yaml_files() {
    let dir = fixture("");
    let output = ingot(&["validate", dir.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let summary = text(&output.stderr);
    assert!(summary.contains("in 40 files"), "{summary}");
}

#[test]
fn crds_are_written_as_one_file_per_kind() {
    let out = std::env::temp_dir().join(format!("ingot-crds-{}", std::process::id()));
    let output = ingot(&["crds", "--out", out.to_str().expect("utf-8 path")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let host = std::fs::read_to_string(out.join("metal3.io_baremetalhosts.yaml"))
        .expect("host CRD written");
    assert!(host.contains("kind: CustomResourceDefinition"));
    assert!(
        out.join("infrastructure.cluster.x-k8s.io_metal3machines.yaml")
            .exists()
    );
    std::fs::remove_dir_all(&out).expect("temporary directory removed");
}
