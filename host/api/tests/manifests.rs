//! `ingot validate` verdicts on manifest fixtures.
//!
//! Each fixture starts with `# expected: <verdict>` (VALID, VALID + WARN, REJECT,
//! TEMPLATE/REJECT, MIXED, or `VALID only if applied in <namespace>`). The in-repo fixtures name
//! the reason of each rejection and warning with `# reason:` / `# warning:` lines; the real-world
//! corpus in `../shared/fixtures/real-world` (checked when present) uses the table below.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ingot_api::manifest::{self, Options, Report, Severity};

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Valid,
    ValidWithWarning,
    Rejected,
    ValidOnlyIn(String),
}

struct Expectation {
    verdict: Verdict,
    reasons: Vec<String>,
    warnings: Vec<String>,
}

fn verdict(expected: &str) -> Verdict {
    let expected = expected.trim();
    if let Some(rest) = expected.strip_prefix("VALID only if applied in ") {
        return Verdict::ValidOnlyIn(
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    if expected.starts_with("VALID + WARN") {
        return Verdict::ValidWithWarning;
    }
    if expected.contains("REJECT on current")
        || ["REJECT", "TEMPLATE", "MIXED"]
            .iter()
            .any(|prefix| expected.starts_with(prefix))
    {
        return Verdict::Rejected;
    }
    assert!(
        expected.starts_with("VALID"),
        "unknown verdict {expected:?}"
    );
    Verdict::Valid
}

fn header_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix(&format!("# {key}:")))
        .map(str::trim)
        .collect()
}

fn run(name: &str, text: &str, namespace: &str) -> Report {
    let options = Options {
        default_namespace: namespace.into(),
    };
    manifest::check_files(&[(name.to_string(), text.to_string())], &options)
}

fn lines(report: &Report, severity: Severity) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|finding| finding.severity == severity)
        .map(ToString::to_string)
        .collect()
}

/// Every way `text` misses `expectation`; empty when it matches.
fn mismatches(name: &str, text: &str, expectation: &Expectation) -> Vec<String> {
    let mut problems = Vec::new();
    let report = match &expectation.verdict {
        Verdict::ValidOnlyIn(namespace) => {
            let elsewhere = run(name, text, "default");
            if elsewhere.errors() == 0 {
                problems.push(format!(
                    "{name}: accepted in namespace default, expected a refusal"
                ));
            }
            let home = run(name, text, namespace);
            if home.errors() != 0 {
                problems.push(format!(
                    "{name}: refused in namespace {namespace}: {:#?}",
                    lines(&home, Severity::Error)
                ));
            }
            elsewhere
        }
        verdict => {
            let report = run(name, text, "default");
            let errors = lines(&report, Severity::Error);
            let refused = !errors.is_empty();
            match verdict {
                Verdict::Rejected if !refused => {
                    problems.push(format!("{name}: accepted, expected a refusal"))
                }
                Verdict::Valid | Verdict::ValidWithWarning if refused => {
                    problems.push(format!("{name}: refused: {errors:#?}"))
                }
                Verdict::ValidWithWarning if report.warnings() == 0 => {
                    problems.push(format!("{name}: accepted without the expected warning"))
                }
                _ => {}
            }
            report
        }
    };

    let errors = lines(&report, Severity::Error);
    for reason in &expectation.reasons {
        if !errors.iter().any(|line| line.contains(reason.as_str())) {
            problems.push(format!(
                "{name}: no error mentions {reason:?}; errors: {errors:#?}"
            ));
        }
    }
    let warnings = lines(&report, Severity::Warning);
    for warning in &expectation.warnings {
        if !warnings.iter().any(|line| line.contains(warning.as_str())) {
            problems.push(format!(
                "{name}: no warning mentions {warning:?}; warnings: {warnings:#?}"
            ));
        }
    }
    problems
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn in_repo_fixtures_get_their_stated_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests");
    let files = yaml_files(&dir);
    assert!(files.len() >= 40, "fixtures missing from {}", dir.display());

    let mut problems = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = header_values(&text, "expected");
        assert_eq!(
            expected.len(),
            1,
            "{name} needs exactly one `# expected:` line"
        );
        let expectation = Expectation {
            verdict: verdict(expected[0]),
            reasons: header_values(&text, "reason")
                .into_iter()
                .map(String::from)
                .collect(),
            warnings: header_values(&text, "warning")
                .into_iter()
                .map(String::from)
                .collect(),
        };
        let rejected = matches!(
            expectation.verdict,
            Verdict::Rejected | Verdict::ValidOnlyIn(_)
        );
        assert!(
            !rejected || !expectation.reasons.is_empty(),
            "{name}: a refusal needs a `# reason:` line"
        );
        problems.extend(mismatches(&name, &text, &expectation));
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// What each rejected real-world file must be refused for (its stated reason), and the
/// warning each VALID + WARN file must get.
fn real_world_reasons() -> BTreeMap<&'static str, (&'static [&'static str], &'static [&'static str])>
{
    BTreeMap::from([
        (
            "02",
            (
                &["spec.automatedCleaningMode: error: Unsupported value: \"disable\""][..],
                &[][..],
            ),
        ),
        ("07", (&["spec.online: error: Required value"][..], &[][..])),
        (
            "08",
            (
                &[
                    "un-rendered envsubst template",
                    "spec.bootMACAddress",
                    "spec.bmc.address",
                    "\"${BMC_USERNAME}\" is not valid base64",
                ][..],
                &[][..],
            ),
        ),
        (
            "11",
            (
                &[
                    "BareMetalHost/<BAREMETAL_HOST_NAME>: metadata.name",
                    "spec.bootMACAddress",
                    "is not valid base64",
                    "spec.image.url",
                ][..],
                &[][..],
            ),
        ),
        (
            "14",
            (&["duplicate entry with key \"apiVersion\""][..], &[][..]),
        ),
        (
            "17",
            (
                &["unknown API group/version metalkube.org/v1alpha1"][..],
                &[][..],
            ),
        ),
        (
            "19",
            (
                &["invalid YAML at line 13", "mapping values are not allowed"][..],
                &[][..],
            ),
        ),
        ("25", (&["invalid YAML"][..], &[][..])),
        (
            "28",
            (
                &[
                    "spec.automatedCleaningMode: error: Unsupported value: \"Disabled\"",
                    "spec.online: error: Required value",
                ][..],
                &[][..],
            ),
        ),
        (
            "29",
            (
                &["metadata.name: error: Invalid value: \"nombreNodo\""][..],
                &[][..],
            ),
        ),
        (
            "32",
            (
                &[
                    "spec.bmc.address",
                    "spec.bootMACAddress",
                    "metadata.name: error: Invalid value: \"NAME\"",
                ][..],
                &["control characters"][..],
            ),
        ),
        (
            "34",
            (
                &[
                    "Secret/bmh1: data[username]: error",
                    "ConfigMap/<unnamed>: metadata.name: error: Required value",
                ][..],
                &[][..],
            ),
        ),
        (
            "35",
            (&["spec.userData.namespace: error: Forbidden"][..], &[][..]),
        ),
        (
            "38",
            (
                &[
                    "spec.bmc.username: error: Unknown field",
                    "spec.bmc.password: error: Unknown field",
                    "spec.bootMACAddress",
                    "spec.rootDeviceHints.deviceName",
                    "is not valid base64",
                ][..],
                &[][..],
            ),
        ),
        (
            "40",
            (
                &["BMC address hostname/IP : [redfish-virtualmedia+<address>] is invalid"][..],
                &[][..],
            ),
        ),
        (
            "41",
            (&["IP literal in brackets must be IPv6"][..], &[][..]),
        ),
        (
            "43",
            (
                &[
                    "metadata.infraenvs.agent-install.openshift.io: error: Unknown field",
                    "spec.address: error: Unknown field",
                ][..],
                &[][..],
            ),
        ),
        (
            "46",
            (
                &[
                    "spec.bmc.address: error: Required value",
                    "spec.bmc.credentialsName: error: Required value",
                ][..],
                &[][..],
            ),
        ),
        (
            "47",
            (
                &[
                    "metadata.namespace: error",
                    "metadata.annotations[inspect.metal3.io]: error",
                    "spec.rootDeviceHints: error: Invalid type",
                    "spec.userData: error: Invalid type",
                ][..],
                &[][..],
            ),
        ),
        (
            "49",
            (
                &["spec: error: Required value: must be set, with online"][..],
                &[][..],
            ),
        ),
        ("50", (&["un-rendered Jinja", "invalid YAML"][..], &[][..])),
        (
            "52",
            (
                &[][..],
                &["\"worker2-network-config-secret\" is not referenced"][..],
            ),
        ),
        (
            "53",
            (
                &[][..],
                &["spec.image.format: warning: format raw declared"][..],
            ),
        ),
        (
            "55",
            (
                &[
                    "infrastructure.cluster.x-k8s.io/v1alpha4 is not served for Metal3MachineTemplate",
                ][..],
                &[][..],
            ),
        ),
        ("56", (&["apiVersion: error: Required value"][..], &[][..])),
        (
            "59",
            (&["un-rendered", "not representable as JSON"][..], &[][..]),
        ),
        (
            "61",
            (
                &["spec.template.spec.image.format: error: Unknown field"][..],
                &[][..],
            ),
        ),
        (
            "64",
            (
                &[
                    "metadata.name: error",
                    "spec.template.spec.image.url: error",
                ][..],
                &[][..],
            ),
        ),
        (
            "65",
            (
                &["un-rendered Jinja/Go template", "invalid YAML"][..],
                &[][..],
            ),
        ),
        (
            "67",
            (
                &["metadata.labels[machine.openshift.io/cluster-api-cluster]: error"][..],
                &[][..],
            ),
        ),
        (
            "68",
            (
                &[
                    "spec.hostSelector.matchExpressions: error: Invalid type",
                    "spec.dataTemplate.Name: error: Unknown field",
                    "spec.metaData.Name: error: Unknown field",
                ][..],
                &[][..],
            ),
        ),
        (
            "70",
            (
                &[
                    "metadata.name: error: Required value",
                    "v1alpha4 is not served",
                ][..],
                &[][..],
            ),
        ),
        (
            "71",
            (
                &["spec.selector: error: Invalid value: selector does not match template labels"][..],
                &[][..],
            ),
        ),
    ])
}

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/real-world")
}

#[test]
fn real_world_corpus_gets_the_verdicts_of_its_index() {
    let dir = shared_dir();
    if !dir.join("INDEX.md").exists() {
        // Written past the test harness's capture so the skip is visible in every run.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: ../shared/fixtures not present (looked in {})",
            dir.display()
        );
        return;
    }

    let reasons = real_world_reasons();
    let files = yaml_files(&dir);
    let index = std::fs::read_to_string(dir.join("INDEX.md")).expect("INDEX.md readable");
    let mut problems = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(index.contains(&name), "{name} is not listed in INDEX.md");
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let expected = header_values(&text, "expected");
        assert_eq!(
            expected.len(),
            1,
            "{name} needs exactly one `# expected:` line"
        );
        let number = name.get(..2).unwrap_or_default();
        let (errors, warnings) = reasons.get(number).copied().unwrap_or((&[], &[]));
        let expectation = Expectation {
            verdict: verdict(expected[0]),
            reasons: errors.iter().map(|reason| reason.to_string()).collect(),
            warnings: warnings.iter().map(|warning| warning.to_string()).collect(),
        };
        let rejected = matches!(
            expectation.verdict,
            Verdict::Rejected | Verdict::ValidOnlyIn(_)
        );
        assert!(
            !rejected || !expectation.reasons.is_empty(),
            "{name}: add its stated reason to the table"
        );
        problems.extend(mismatches(&name, &text, &expectation));
    }
    assert_eq!(files.len(), 48, "the corpus should hold 48 manifests");
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
