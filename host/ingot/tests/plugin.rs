//! `ingot plugin inspect|check|call` against components built by `make plugins`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn wasm(crate_name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("wasm32-wasip2/plugin")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));

    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    path
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

const SELECT_INPUT: &str = r#"{
  "claim": {"identity": "lab/worker-0", "labels": [],
            "selector": {"match_labels": [], "match_expressions": []},
            "requirements": {"cpu_arch": null, "min_cpus": 8, "min_ram_mebibytes": null,
                             "min_disk_bytes": null, "min_nics": null, "extra": []},
            "failure_domain": null, "domain_usage": []},
  "candidates": [
    {"host": {"namespace": "lab", "name": "small", "uid": "1"}, "labels": [], "failure_domain": "rack-a",
     "hardware": {"system_vendor": null, "bios": null, "ram_mebibytes": 32768, "nics": [], "storage": [],
                  "hostname": null,
                  "cpu": {"arch": "x86_64", "model": "x", "clock_megahertz": 2000.0, "flags": [], "count": 8}}},
    {"host": {"namespace": "lab", "name": "tiny", "uid": "2"}, "labels": [], "failure_domain": "rack-a",
     "hardware": {"system_vendor": null, "bios": null, "ram_mebibytes": 4096, "nics": [], "storage": [],
                  "hostname": null,
                  "cpu": {"arch": "x86_64", "model": "x", "clock_megahertz": 2000.0, "flags": [], "count": 2}}}
  ]}"#;

#[test]
fn inspect_shows_world_version_and_imports() {
    let file = wasm("ingot-example-host-selection");
    let output = ingot(&[
        "plugin",
        "inspect",
        "--json",
        file.to_str().unwrap_or_default(),
    ]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["world"], "host-selector");
    assert_eq!(report["version"], "0.1.0");
    assert_eq!(report["sha256"].as_str().map(str::len), Some(64));
    assert!(
        report["imports"]
            .as_array()
            .is_some_and(|imports| imports.iter().any(|i| i == "ingot:plugin/config@0.1.0"))
    );
    assert_eq!(report["deniedImports"], serde_json::json!([]));
}

#[test]
fn inspect_marks_denied_imports() {
    let file = wasm("ingot-fixture-file-reader");
    let output = ingot(&["plugin", "inspect", file.to_str().unwrap_or_default()]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout)
            .lines()
            .any(|line| line.contains("wasi:filesystem/preopens") && line.ends_with("DENIED"))
    );
}

#[test]
fn check_accepts_a_good_plugin_and_explains_a_bad_one() {
    let good = wasm("ingot-default-selector");
    let output = ingot(&[
        "plugin",
        "check",
        "--world",
        "host-selector",
        good.to_str().unwrap_or_default(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("ok: "));

    let wrong_world = ingot(&[
        "plugin",
        "check",
        "--world",
        "bmc-driver",
        good.to_str().unwrap_or_default(),
    ]);
    assert!(!wrong_world.status.success());
    assert!(
        text(&wrong_world.stderr).contains("implements host-selector, but bmc-driver is required")
    );

    let sockets = wasm("ingot-fixture-socket-dialer");
    let output = ingot(&["plugin", "check", sockets.to_str().unwrap_or_default()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("wasi:sockets/"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn call_runs_a_function_with_json_input() {
    let file = wasm("ingot-example-host-selection");
    let output = ingot(&[
        "plugin",
        "call",
        file.to_str().unwrap_or_default(),
        "select",
        "--input",
        SELECT_INPUT,
    ]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON reply");
    assert_eq!(reply["choice"]["ranked"][0]["host"]["name"], "small");
    assert_eq!(
        reply["choice"]["rejected"][0]["reason"],
        "fewer than 8 CPUs"
    );
}

#[test]
fn call_applies_production_limits() {
    let file = wasm("ingot-fixture-hostile");
    let input = SELECT_INPUT.replace("lab/worker-0", "loop");
    let output = ingot(&[
        "plugin",
        "call",
        file.to_str().unwrap_or_default(),
        "select",
        "--timeout-ms",
        "100",
        "--input",
        &input,
    ]);

    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("timed out after 100 ms"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn call_rejects_unknown_functions() {
    let file = wasm("ingot-default-selector");
    let output = ingot(&[
        "plugin",
        "call",
        file.to_str().unwrap_or_default(),
        "reboot",
    ]);

    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("is not a plugin call"),
        "{}",
        text(&output.stderr)
    );
}
