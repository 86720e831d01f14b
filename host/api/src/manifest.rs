//! Offline checking of manifest files: what `ingot validate` runs.
//!
//! Each file may hold several YAML documents of any kinds. A document is checked the way an
//! API server with ingot's CRDs and admission rules would check it on create:
//!
//! 1. un-rendered templates (Jinja `{{ }}`/`{% %}`, Go templates, envsubst `${VAR}`) and broken
//!    YAML are reported with their line;
//! 2. `apiVersion`/`kind` are looked up: ingot's own kinds are checked against the generated CRD
//!    schemas, `v1` Secrets and ConfigMaps against the Kubernetes schemas, unknown versions of
//!    ingot's kinds are refused, and kinds ingot does not know get a warning;
//! 3. metadata (names, namespaces, labels, annotations) is checked for every object;
//! 4. defaults are applied, the schema is checked (types, enums, patterns, unknown fields), and
//!    the admission rules of the kind run;
//! 5. documents are then checked against each other (unreferenced network data, odd
//!    credentials).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::validation::{self, FieldError, FieldWarning};
use crate::{CAPI_GROUP, CAPM3_GROUP, METAL3_GROUP, schema};

/// How strictly a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The document would be refused.
    Error,
    /// Admitted, but probably a mistake.
    Warning,
}

/// One problem found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// File name as given.
    pub file: String,
    /// 1-based index of the document in the file (0 when the file itself is the problem).
    pub document: usize,
    /// `Kind/name` of the object, or `-` when unknown.
    pub object: String,
    /// Field path, `-` when the finding concerns the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}: document {}: {}: {}: {severity}: {}",
            self.file, self.document, self.object, self.path, self.message
        )
    }
}

/// Options of a check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace assumed for namespaced objects that do not name one (as `kubectl apply` does).
    pub default_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_namespace: "default".into(),
        }
    }
}

/// The outcome of checking some files.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every finding, in file and document order.
    pub findings: Vec<Finding>,
    /// How many documents were checked.
    pub documents: usize,
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == Severity::Warning)
            .count()
    }
}

/// Checks the files `(name, contents)` together (cross-references may span files).
pub fn check_files(files: &[(String, String)], options: &Options) -> Report {
    let mut report = Report::default();
    let mut objects = Vec::new();
    for (name, text) in files {
        for document in split_documents(text) {
            report.documents += 1;
            let mut context = DocumentContext {
                file: name,
                index: document.index,
                object: "-".into(),
                findings: Vec::new(),
            };
            if let Some(object) = check_document(&document, options, &mut context) {
                objects.push(CheckedObject {
                    file: name.clone(),
                    index: document.index,
                    label: context.object.clone(),
                    object,
                });
            }
            report.findings.append(&mut context.findings);
        }
    }
    report
        .findings
        .extend(cross_document_warnings(&objects, options));
    report
}

/// One document's text with its position.
struct Document {
    index: usize,
    first_line: usize,
    text: String,
}

/// Splits a YAML stream at `---` lines, dropping documents that hold only comments.
fn split_documents(text: &str) -> Vec<Document> {
    let mut chunks: Vec<(usize, Vec<&str>)> = vec![(1, Vec::new())];
    for (number, line) in text.lines().enumerate() {
        let separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if separator {
            chunks.push((number + 1, Vec::new()));
        }
        if let Some((_, lines)) = chunks.last_mut() {
            lines.push(line);
        }
    }
    let has_content = |lines: &[&str]| {
        lines.iter().any(|line| {
            let trimmed = line.trim();
            !(trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed == "---"
                || trimmed == "...")
        })
    };
    chunks
        .into_iter()
        .filter(|(_, lines)| has_content(lines))
        .enumerate()
        .map(|(index, (first_line, lines))| Document {
            index: index + 1,
            first_line,
            text: lines.join("\n"),
        })
        .collect()
}

struct DocumentContext<'a> {
    file: &'a str,
    index: usize,
    object: String,
    findings: Vec<Finding>,
}

impl DocumentContext<'_> {
    fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            file: self.file.to_string(),
            document: self.index,
            object: self.object.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    fn field_errors(&mut self, errors: Vec<FieldError>) {
        for error in errors {
            self.error(&error.path, error.description());
        }
    }

    fn field_warnings(&mut self, warnings: Vec<FieldWarning>) {
        for warning in warnings {
            self.warning(&warning.path, warning.message);
        }
    }
}

/// An object that parsed, kept for the cross-document checks.
struct CheckedObject {
    file: String,
    index: usize,
    label: String,
    object: Value,
}

fn check_document(
    document: &Document,
    options: &Options,
    context: &mut DocumentContext<'_>,
) -> Option<Value> {
    let template = find_template(document);
    if let Some(template) = &template {
        context.error("-", template.to_string());
    }

    let yaml: serde_yaml::Value = match serde_yaml::from_str(&document.text) {
        Ok(yaml) => yaml,
        Err(error) => {
            context.error(
                "-",
                yaml_error_message(&error, document, template.is_some()),
            );
            return None;
        }
    };
    let object = match serde_json::to_value(&yaml) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(Value::Null) => return None,
        Ok(other) => {
            context.error(
                "-",
                format!("a manifest must be a mapping, found {}", json_kind(&other)),
            );
            return None;
        }
        Err(error) => {
            let hint = if template.is_some() {
                " (an unquoted template expression parses as a nested mapping)"
            } else {
                ""
            };
            context.error("-", format!("not representable as JSON: {error}{hint}"));
            return None;
        }
    };
    Some(check_object(object, options, context))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn yaml_error_message(error: &serde_yaml::Error, document: &Document, templated: bool) -> String {
    let text = error.to_string();
    let reason = text.split(" at line ").next().unwrap_or(&text);
    let location = error
        .location()
        .map(|location| {
            format!(
                " at line {}, column {}",
                document.first_line + location.line() - 1,
                location.column()
            )
        })
        .unwrap_or_default();
    let hint = if templated {
        " (the document is an un-rendered template; render it first)"
    } else {
        ""
    };
    format!("invalid YAML{location}: {reason}{hint}")
}

/// The first un-rendered template expression of a document.
struct Template {
    line: usize,
    flavour: &'static str,
    snippet: String,
    lines: usize,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = if self.lines > 1 {
            format!(" (and {} more lines)", self.lines - 1)
        } else {
            String::new()
        };
        write!(
            f,
            "un-rendered {} template at line {}: {}{more}; render it before applying",
            self.flavour, self.line, self.snippet
        )
    }
}

fn find_template(document: &Document) -> Option<Template> {
    let mut found: Option<Template> = None;
    let mut count = 0;
    for (offset, line) in document.text.lines().enumerate() {
        let Some((flavour, snippet)) = template_in_line(line) else {
            continue;
        };
        count += 1;
        found.get_or_insert(Template {
            line: document.first_line + offset,
            flavour,
            snippet,
            lines: 0,
        });
    }
    found.map(|template| Template {
        lines: count,
        ..template
    })
}

/// Jinja that cloud-init renders on the machine at boot (instance data such as
/// `{{ ds.meta_data.uuid }}` in bootstrap configs) is content, not an un-rendered manifest.
const CLOUD_INIT_PREFIXES: &[&str] = &["ds.", "v1."];

fn template_in_line(line: &str) -> Option<(&'static str, String)> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let jinja_block = ["{%", "{#"].iter().find_map(|open| line.find(open));
    if let Some(start) = jinja_block {
        return Some(("Jinja", snippet(line, start, &["%}", "#}"])));
    }
    if let Some(start) = line.find("{{") {
        let inner = line[start + 2..]
            .trim_start()
            .trim_start_matches('-')
            .trim_start();
        if CLOUD_INIT_PREFIXES
            .iter()
            .any(|prefix| inner.starts_with(prefix))
        {
            return None;
        }
        let flavour = if inner.starts_with('.') || inner.starts_with('$') {
            "Go"
        } else {
            "Jinja/Go"
        };
        return Some((flavour, snippet(line, start, &["}}"])));
    }
    let start = line.find("${")?;
    let rest = &line[start + 2..];
    let name_end = rest.find('}')?;
    let name = &rest[..name_end];
    let is_variable = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '=' || c == '-');
    is_variable.then(|| ("envsubst", line[start..start + name_end + 3].to_string()))
}

fn snippet(line: &str, start: usize, closers: &[&str]) -> String {
    let rest = &line[start..];
    let end = closers
        .iter()
        .filter_map(|closer| rest.find(closer).map(|index| index + closer.len()))
        .min()
        .unwrap_or(rest.len());
    rest[..end.min(80)].to_string()
}

/// What ingot knows about an `apiVersion`/`kind`.
enum KindInfo {
    /// One of ingot's CRD kinds.
    Custom {
        schema: JSONSchemaProps,
        namespaced: bool,
        has_status: bool,
    },
    /// A built-in kind with a Kubernetes schema.
    Core { schema: JSONSchemaProps },
}

struct Registry {
    kinds: BTreeMap<(String, String), KindInfo>,
    served: BTreeMap<(String, String), Vec<String>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let crds = crate::crds::all().unwrap_or_default();
    let mut registry = Registry {
        kinds: BTreeMap::new(),
        served: BTreeMap::new(),
    };
    for crd in &crds {
        register_crd(&mut registry, crd);
    }
    registry.kinds.insert(
        ("v1".into(), "Secret".into()),
        KindInfo::Core {
            schema: schema::schema_for::<Secret>(),
        },
    );
    registry.kinds.insert(
        ("v1".into(), "ConfigMap".into()),
        KindInfo::Core {
            schema: schema::schema_for::<ConfigMap>(),
        },
    );
    registry
});

static OBJECT_META_SCHEMA: LazyLock<JSONSchemaProps> =
    LazyLock::new(schema::schema_for::<ObjectMeta>);

fn register_crd(registry: &mut Registry, crd: &CustomResourceDefinition) {
    let group = &crd.spec.group;
    let kind = &crd.spec.names.kind;
    for version in crd.spec.versions.iter().filter(|version| version.served) {
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|schema| schema.open_api_v3_schema.clone())
        else {
            continue;
        };
        let has_status = version
            .subresources
            .as_ref()
            .is_some_and(|subresources| subresources.status.is_some());
        let info = KindInfo::Custom {
            schema,
            namespaced: crd.spec.scope == "Namespaced",
            has_status,
        };
        registry
            .kinds
            .insert((format!("{group}/{}", version.name), kind.clone()), info);
        registry
            .served
            .entry((group.clone(), kind.clone()))
            .or_default()
            .push(version.name.clone());
    }
}

fn check_object(mut object: Value, options: &Options, context: &mut DocumentContext<'_>) -> Value {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    context.object = if kind.is_empty() {
        format!("-/{name}")
    } else {
        format!("{kind}/{name}")
    };

    if api_version.is_empty() {
        context.error(
            "apiVersion",
            "Required value: every manifest needs apiVersion (e.g. metal3.io/v1alpha1)",
        );
    }
    if kind.is_empty() {
        context.error("kind", "Required value: every manifest needs kind");
    }

    let key = (api_version.clone(), kind.clone());
    let namespaced = match REGISTRY.kinds.get(&key) {
        Some(KindInfo::Custom { namespaced, .. }) => *namespaced,
        _ => true,
    };
    let namespace_missing = object.pointer("/metadata/namespace").is_none();
    if namespaced
        && namespace_missing
        && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.insert(
            "namespace".into(),
            Value::String(options.default_namespace.clone()),
        );
    }
    check_metadata(&object, namespaced, context);

    match REGISTRY.kinds.get(&key) {
        Some(KindInfo::Custom {
            schema, has_status, ..
        }) => {
            if *has_status
                && let Some(map) = object.as_object_mut()
                && map.remove("status").is_some()
            {
                context.warning("status", "ignored: the API server drops status when an object is created; the controller writes it");
            }
            schema::apply_defaults(&mut object, schema);
            let schema_errors = validate_body(&object, schema);
            let decodable = without_paths(&object, &schema_errors);
            let admission_errors = admission(&decodable, &api_version, &kind, context);
            report_without_duplicates(schema_errors, admission_errors, context);
        }
        Some(KindInfo::Core { schema }) => {
            schema::apply_defaults(&mut object, schema);
            context.field_errors(validate_body(&object, schema));
            context.field_errors(core_rules(&object, &kind));
        }
        None if !api_version.is_empty() && !kind.is_empty() => {
            unknown_kind(&api_version, &kind, context)
        }
        None => {}
    }
    check_selector_matches_template(&object, &kind, context);
    object
}

/// Fields every object has; they are checked on their own before the body.
const TYPE_AND_META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Validates everything but `apiVersion`, `kind` and `metadata`, which the API server handles
/// itself (CRD schemas need not declare them).
fn validate_body(object: &Value, schema: &JSONSchemaProps) -> Vec<FieldError> {
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        TYPE_AND_META_FIELDS.iter().for_each(|field| {
            map.remove(*field);
        });
    }
    let mut body_schema = schema.clone();
    if let Some(required) = body_schema.required.as_mut() {
        required.retain(|field| !TYPE_AND_META_FIELDS.contains(&field.as_str()));
    }
    if let Some(properties) = body_schema.properties.as_mut() {
        TYPE_AND_META_FIELDS.iter().for_each(|field| {
            properties.remove(*field);
        });
    }
    schema::validate(&body, &body_schema, "")
}

/// A copy of `object` without the fields the schema refused, so that the typed admission rules
/// can still judge the rest (an invalid enum value would otherwise stop typed decoding).
fn without_paths(object: &Value, errors: &[FieldError]) -> Value {
    let mut copy = object.clone();
    for error in errors {
        let pointer: String = error
            .path
            .replace('[', ".")
            .replace(']', "")
            .split('.')
            .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
            .collect();
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            continue;
        };
        match copy.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&last.replace("~1", "/").replace("~0", "~"));
            }
            Some(Value::Array(items)) => {
                if let Some(index) = last
                    .parse::<usize>()
                    .ok()
                    .filter(|index| *index < items.len())
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
    }
    copy
}

/// Schema errors first; admission errors on a path already flagged (by the schema or the
/// metadata rules) add nothing.
fn report_without_duplicates(
    schema_errors: Vec<FieldError>,
    admission_errors: Vec<FieldError>,
    context: &mut DocumentContext<'_>,
) {
    let mut flagged: BTreeSet<String> = schema_errors
        .iter()
        .map(|error| error.path.clone())
        .collect();
    flagged.extend(
        context
            .findings
            .iter()
            .filter(|finding| finding.severity == Severity::Error)
            .map(|finding| finding.path.clone()),
    );
    context.field_errors(schema_errors);
    context.field_errors(
        admission_errors
            .into_iter()
            .filter(|error| !flagged.contains(&error.path))
            .collect(),
    );
}

fn check_metadata(object: &Value, namespaced: bool, context: &mut DocumentContext<'_>) {
    let Some(metadata) = object
        .get("metadata")
        .filter(|metadata| !metadata.is_null())
    else {
        context.error(
            "metadata.name",
            "Required value: metadata with a name is required",
        );
        return;
    };
    let mut metadata = metadata.clone();
    schema::apply_defaults(&mut metadata, &OBJECT_META_SCHEMA);
    let schema_errors = schema::validate(&metadata, &OBJECT_META_SCHEMA, "metadata");
    let typed_ok = schema_errors.is_empty();
    context.field_errors(schema_errors);
    if !typed_ok {
        return;
    }
    match serde_json::from_value::<ObjectMeta>(metadata) {
        Ok(meta) => context.field_errors(validation::meta::validate_object_meta(&meta, namespaced)),
        Err(error) => context.error("metadata", format!("cannot be decoded: {error}")),
    }
}

fn admission(
    object: &Value,
    api_version: &str,
    kind: &str,
    context: &mut DocumentContext<'_>,
) -> Vec<FieldError> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    if group == CAPI_GROUP && matches!(kind, "MachineSet" | "MachineDeployment") {
        return template_cluster_name(object);
    }
    // An undecodable object already has schema errors; the rules have nothing to add.
    let Ok(verdict) = validation::judge(object, None) else {
        return Vec::new();
    };
    context.field_warnings(verdict.warnings);
    verdict.errors
}

fn template_cluster_name(object: &Value) -> Vec<FieldError> {
    let cluster = object.pointer("/spec/clusterName").and_then(Value::as_str);
    let template_cluster = object
        .pointer("/spec/template/spec/clusterName")
        .and_then(Value::as_str);
    match (cluster, template_cluster) {
        (Some(cluster), Some(template)) if cluster != template => vec![FieldError::invalid(
            "spec.template.spec.clusterName",
            format!("must match spec.clusterName {cluster:?}, found {template:?}"),
        )],
        _ => Vec::new(),
    }
}

fn core_rules(object: &Value, kind: &str) -> Vec<FieldError> {
    let fields: &[&str] = match kind {
        "Secret" => &["data", "stringData"],
        "ConfigMap" => &["data", "binaryData"],
        _ => &[],
    };
    let mut errors = Vec::new();
    for field in fields {
        let keys = object
            .get(*field)
            .and_then(Value::as_object)
            .map(|map| map.keys().cloned().collect::<Vec<_>>());
        for key in keys.into_iter().flatten() {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                errors.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
    errors
}

/// Kinds ingot owns must use a served version; everything else is only noted.
fn unknown_kind(api_version: &str, kind: &str, context: &mut DocumentContext<'_>) {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    if let Some(versions) = REGISTRY.served.get(&(group.to_string(), kind.to_string())) {
        let served: Vec<String> = versions
            .iter()
            .map(|version| format!("{group}/{version}"))
            .collect();
        context.error(
            "apiVersion",
            format!(
                "Unsupported value: {api_version} is not served for {kind}; use {}",
                served.join(" or ")
            ),
        );
        return;
    }
    let own_kind = REGISTRY
        .served
        .iter()
        .find(|((own_group, own_kind), _)| own_kind == kind && own_group != CAPI_GROUP)
        .map(|((own_group, _), versions)| format!("{own_group}/{}", versions.join(", ")));
    if let Some(served) = own_kind {
        context.error(
            "apiVersion",
            format!("Unsupported value: unknown API group/version {api_version} for {kind}; {kind} is served as {served}"),
        );
        return;
    }
    let note = if [METAL3_GROUP, CAPM3_GROUP, CAPI_GROUP].contains(&group) {
        format!("{kind} ({api_version}) is not modelled by ingot; only its metadata was checked")
    } else {
        format!("{kind} ({api_version}) is not a kind ingot knows; only its metadata was checked")
    };
    context.warning("-", note);
}

/// Controllers that create objects from a template only own what their selector matches.
fn check_selector_matches_template(object: &Value, kind: &str, context: &mut DocumentContext<'_>) {
    const TEMPLATE_OWNERS: &[&str] = &[
        "MachineSet",
        "MachineDeployment",
        "ReplicaSet",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
    ];
    if !TEMPLATE_OWNERS.contains(&kind) {
        return;
    }
    let Some(selector) = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return;
    };
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let missing: Vec<String> = selector
        .iter()
        .filter(|(key, value)| labels.and_then(|labels| labels.get(*key)) != Some(*value))
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    if !missing.is_empty() {
        context.error(
            "spec.selector",
            format!(
                "Invalid value: selector does not match template labels (missing {}); created machines would not be owned",
                missing.join(", ")
            ),
        );
    }
}

fn cross_document_warnings(objects: &[CheckedObject], options: &Options) -> Vec<Finding> {
    let mut findings = Vec::new();
    let referenced = network_data_references(objects, options);
    for checked in objects
        .iter()
        .filter(|checked| is_kind(&checked.object, "v1", "Secret"))
    {
        let mut warn = |path: &str, message: String| {
            findings.push(Finding {
                severity: Severity::Warning,
                file: checked.file.clone(),
                document: checked.index,
                object: checked.label.clone(),
                path: path.to_string(),
                message,
            });
        };
        let namespace = namespace_of(&checked.object, options);
        let name = checked
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let holds_network = secret_keys(&checked.object)
            .iter()
            .any(|key| matches!(key.as_str(), "networkData" | "nmstate"));
        let has_hosts = objects.iter().any(|other| {
            is_kind(
                &other.object,
                &format!("{METAL3_GROUP}/v1alpha1"),
                "BareMetalHost",
            )
        });
        if holds_network
            && has_hosts
            && !referenced.contains(&(namespace.clone(), name.to_string()))
        {
            warn(
                "-",
                format!(
                    "network data Secret {name:?} is not referenced by any BareMetalHost's preprovisioningNetworkDataName or networkData here; its configuration will never be used"
                ),
            );
        }
        for (key, problem) in credential_problems(&checked.object) {
            warn(&format!("data[{key}]"), problem);
        }
    }
    findings
}

fn is_kind(object: &Value, api_version: &str, kind: &str) -> bool {
    object.get("apiVersion").and_then(Value::as_str) == Some(api_version)
        && object.get("kind").and_then(Value::as_str) == Some(kind)
}

fn namespace_of(object: &Value, options: &Options) -> String {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(&options.default_namespace)
        .to_string()
}

fn network_data_references(
    objects: &[CheckedObject],
    options: &Options,
) -> BTreeSet<(String, String)> {
    let mut referenced = BTreeSet::new();
    for checked in objects.iter().filter(|checked| {
        is_kind(
            &checked.object,
            &format!("{METAL3_GROUP}/v1alpha1"),
            "BareMetalHost",
        )
    }) {
        let namespace = namespace_of(&checked.object, options);
        if let Some(name) = checked
            .object
            .pointer("/spec/preprovisioningNetworkDataName")
            .and_then(Value::as_str)
        {
            referenced.insert((namespace.clone(), name.to_string()));
        }
        if let Some(name) = checked
            .object
            .pointer("/spec/networkData/name")
            .and_then(Value::as_str)
        {
            let target = checked
                .object
                .pointer("/spec/networkData/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&namespace);
            referenced.insert((target.to_string(), name.to_string()));
        }
    }
    referenced
}

fn secret_keys(object: &Value) -> Vec<String> {
    ["data", "stringData"]
        .iter()
        .filter_map(|field| object.get(*field).and_then(Value::as_object))
        .flat_map(|map| map.keys().cloned())
        .collect()
}

/// Decoded BMC credentials that are empty or carry control characters (such as the newline of
/// `echo x | base64`).
fn credential_problems(object: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for key in ["username", "password"] {
        let decoded = match (
            object.pointer(&format!("/data/{key}")),
            object.pointer(&format!("/stringData/{key}")),
        ) {
            (_, Some(Value::String(plain))) => Some(plain.clone().into_bytes()),
            (Some(Value::String(encoded)), _) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok(),
            _ => None,
        };
        let Some(decoded) = decoded else {
            continue;
        };
        if decoded.is_empty() {
            problems.push((
                key.to_string(),
                format!("empty {key}: the host will fail registration with a credentials error"),
            ));
        } else if decoded.iter().any(|byte| byte.is_ascii_control()) {
            problems.push((
                key.to_string(),
                format!("decoded {key} contains control characters (a trailing newline from `echo ... | base64`?); use `echo -n` or stringData"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separators_and_skip_comment_only_parts() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\n...\n";
        let documents = split_documents(text);
        assert_eq!(documents.len(), 2);
        assert_eq!((documents[0].index, documents[0].first_line), (1, 2));
        assert_eq!((documents[1].index, documents[1].first_line), (2, 6));
    }

    #[test]
    fn template_flavours_are_recognised() {
        assert_eq!(
            template_in_line("  name: {{ node_name }}").map(|t| t.0),
            Some("Jinja/Go")
        );
        assert_eq!(
            template_in_line("  name: \"{{ .Node.HostName }}\"").map(|t| t.0),
            Some("Go")
        );
        assert_eq!(template_in_line("{% if x %}").map(|t| t.0), Some("Jinja"));
        assert_eq!(
            template_in_line("  bootMACAddress: ${BMC_MAC}"),
            Some(("envsubst", "${BMC_MAC}".to_string()))
        );
        assert_eq!(template_in_line("  # address: ${BMC_ADDRESS}"), None);
        assert_eq!(
            template_in_line("  value: 'metal3.io/uuid={{ ds.meta_data.uuid }}'"),
            None
        );
        assert_eq!(template_in_line("  price: $5 {not a template}"), None);
    }
}
