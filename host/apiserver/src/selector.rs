//! Label and field selectors with the upstream syntax.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed `labelSelector`; all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h`; bad syntax is a 400.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector {text:?}: {part:?}"
                ))
            })?);
        }
        Ok(Self { requirements })
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                LabelOp::Equals(v) => value == Some(v),
                LabelOp::NotEquals(v) => value != Some(v),
                LabelOp::In(vs) => value.is_some_and(|x| vs.contains(x)),
                LabelOp::NotIn(vs) => !value.is_some_and(|x| vs.contains(x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    name_ok && prefix_ok && (key.matches('/').count() <= 1)
}

fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn parse_requirement(part: &str) -> Option<(String, LabelOp)> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| (key.to_string(), LabelOp::DoesNotExist));
    }
    for (word, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = part.split_once(word) {
            let key = key.trim();
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if !valid_key(key) || !values.iter().all(|v| valid_value(v)) {
                return None;
            }
            let op = if negate {
                LabelOp::NotIn(values)
            } else {
                LabelOp::In(values)
            };
            return Some((key.to_string(), op));
        }
    }
    let (key, op) = if let Some((k, v)) = part.split_once("!=") {
        (k, LabelOp::NotEquals(v.trim().to_string()))
    } else if let Some((k, v)) = part.split_once("==") {
        (k, LabelOp::Equals(v.trim().to_string()))
    } else if let Some((k, v)) = part.split_once('=') {
        (k, LabelOp::Equals(v.trim().to_string()))
    } else {
        (part, LabelOp::Exists)
    };
    let key = key.trim();
    let value_ok = match &op {
        LabelOp::Equals(v) | LabelOp::NotEquals(v) => valid_value(v),
        _ => true,
    };
    (valid_key(key) && value_ok).then(|| (key.to_string(), op))
}

/// A parsed `fieldSelector`: `path=value`, `path==value`, `path!=value`, comma-joined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses and checks the fields against those the resource supports.
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                return Err(ApiError::bad_request(format!(
                    "{field:?} is not a known field selector: only {}",
                    quoted.join(", ")
                )));
            }
            requirements.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether only metadata.name / metadata.namespace are used (no parsing needed).
    pub fn only_identity(&self) -> bool {
        self.requirements
            .iter()
            .all(|(f, _, _)| f == "metadata.name" || f == "metadata.namespace")
    }

    /// Evaluates with a lookup from field path to its string value.
    pub fn matches_with(&self, lookup: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|(field, equal, value)| (lookup(field) == *value) == *equal)
    }

    /// Evaluates against a full object.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches_with(|field| field_value(object, field))
    }
}

/// The string value of a dotted field path, "" when absent.
pub fn field_value(object: &Value, field: &str) -> String {
    let mut current = object;
    for part in field.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_operators() {
        let l = labels(&[("app", "demo"), ("tier", "web")]);
        let cases = [
            ("app=demo", true),
            ("app==demo", true),
            ("app!=demo", false),
            ("missing!=x", true),
            ("tier in (web,db)", true),
            ("tier notin (web)", false),
            ("app,tier", true),
            ("!app", false),
            ("!missing", true),
            ("app=demo,tier=db", false),
            ("", true),
        ];
        for (text, expected) in cases {
            assert_eq!(
                LabelSelector::parse(text).expect(text).matches(&l),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_label_syntax_is_rejected() {
        assert_eq!(
            LabelSelector::parse("app in demo").expect_err("bad").code,
            400
        );
        assert_eq!(LabelSelector::parse("a b=c").expect_err("bad").code, 400);
    }

    #[test]
    fn field_selector_checks_supported_fields() {
        let err = FieldSelector::parse("spec.size=1", &["metadata.name", "metadata.namespace"])
            .expect_err("bad");
        assert_eq!(
            err.message,
            "\"spec.size\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let s = FieldSelector::parse("metadata.name=w1", &["metadata.name"]).expect("ok");
        assert!(s.matches_object(&serde_json::json!({"metadata": {"name": "w1"}})));
        let s = FieldSelector::parse("metadata.name!=w1", &["metadata.name"]).expect("ok");
        assert!(!s.matches_object(&serde_json::json!({"metadata": {"name": "w1"}})));
    }
}
