//! Host label selectors, evaluated with the operators Metal3 users write.
//!
//! A Metal3 `hostSelector` holds `matchLabels` plus `matchExpressions` whose operators are
//! matched case-insensitively against the label-selection operators (`in`, `notin`, `exists`,
//! `!`, `=`, `==`, `!=`, `gt`, `lt`). Upstream lower-cases the Kubernetes spelling, so `In`,
//! `NotIn` and `Exists` work there but `DoesNotExist` becomes the unknown `doesnotexist` and
//! the claim fails. Here `DoesNotExist` is accepted as the synonym of `!` it was meant to be.

use std::collections::BTreeMap;

use ingot_api::selector::HostSelector;

/// Why a host selector cannot be evaluated. These are configuration errors: retrying will not
/// help until the selector is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is none of the accepted ones.
    #[error(
        "host selector expression on {key:?}: unknown operator {operator:?} \
         (use In, NotIn, Exists, DoesNotExist, =, ==, !=, Gt or Lt)"
    )]
    UnknownOperator {
        /// Label key of the expression.
        key: String,
        /// The operator as written.
        operator: String,
    },
    /// The operator was given the wrong number or kind of values.
    #[error("host selector expression on {key:?}: {operator} {problem}")]
    BadValues {
        /// Label key of the expression.
        key: String,
        /// The operator as written.
        operator: String,
        /// What is wrong with the values.
        problem: &'static str,
    },
}

/// How one expression compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// The label is present with one of the values (`in`, `=`, `==`).
    In,
    /// The label is absent or has none of the values (`notin`, `!=`).
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent (`!`, `DoesNotExist`).
    DoesNotExist,
    /// The label is an integer greater than the value.
    GreaterThan,
    /// The label is an integer less than the value.
    LessThan,
}

/// One compiled expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Comparison.
    pub operator: Operator,
    /// Values compared with; one integer for `GreaterThan` and `LessThan`.
    pub values: Vec<String>,
}

/// A compiled host selector: every requirement must hold. The empty query matches every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelQuery {
    requirements: Vec<Requirement>,
}

impl LabelQuery {
    /// Compiles a Metal3 host selector; `None` matches everything.
    pub fn compile(selector: Option<&HostSelector>) -> Result<Self, SelectorError> {
        let Some(selector) = selector else {
            return Ok(Self::default());
        };

        let equalities = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                operator: Operator::In,
                values: vec![value.clone()],
            });
        let mut requirements: Vec<Requirement> = equalities.collect();

        for expression in selector.match_expressions.iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(requirement(&expression.key, &expression.operator, values)?);
        }

        Ok(Self { requirements })
    }

    /// The compiled requirements, `matchLabels` first.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |value: &String| self.values.contains(value);

        match self.operator {
            Operator::In => value.is_some_and(listed),
            Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan => compare(value, &self.values, |label, bound| label > bound),
            Operator::LessThan => compare(value, &self.values, |label, bound| label < bound),
        }
    }
}

fn compare(value: Option<&String>, bound: &[String], holds: impl Fn(i64, i64) -> bool) -> bool {
    let label = value.and_then(|value| value.parse::<i64>().ok());
    let bound = bound.first().and_then(|bound| bound.parse::<i64>().ok());

    matches!((label, bound), (Some(label), Some(bound)) if holds(label, bound))
}

fn requirement(
    key: &str,
    written: &str,
    values: Vec<String>,
) -> Result<Requirement, SelectorError> {
    let operator = parse_operator(key, written)?;
    let bad = |problem| SelectorError::BadValues {
        key: key.to_owned(),
        operator: written.to_owned(),
        problem,
    };

    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => Err(bad("needs at least one value")),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            Err(bad("takes no values"))
        }
        Operator::GreaterThan | Operator::LessThan
            if values.len() != 1 || values[0].parse::<i64>().is_err() =>
        {
            Err(bad("needs exactly one integer value"))
        }
        _ if is_equality(written) && values.len() != 1 => Err(bad("needs exactly one value")),
        _ => Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        }),
    }
}

fn is_equality(written: &str) -> bool {
    matches!(written, "=" | "==" | "!=")
}

fn parse_operator(key: &str, written: &str) -> Result<Operator, SelectorError> {
    match written.to_ascii_lowercase().as_str() {
        "in" | "=" | "==" => Ok(Operator::In),
        "notin" | "!=" => Ok(Operator::NotIn),
        "exists" => Ok(Operator::Exists),
        "!" | "doesnotexist" => Ok(Operator::DoesNotExist),
        "gt" => Ok(Operator::GreaterThan),
        "lt" => Ok(Operator::LessThan),
        _ => Err(SelectorError::UnknownOperator {
            key: key.to_owned(),
            operator: written.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_api::selector::HostSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> HostSelectorRequirement {
        HostSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn query(expressions: Vec<HostSelectorRequirement>) -> Result<LabelQuery, SelectorError> {
        LabelQuery::compile(Some(&HostSelector {
            match_labels: None,
            match_expressions: Some(expressions),
        }))
    }

    #[test]
    fn does_not_exist_matches_hosts_without_the_label() {
        for spelling in ["DoesNotExist", "doesnotexist", "!"] {
            let query = query(vec![expression("retired", spelling, &[])]).expect("valid selector");

            assert!(query.matches(&labels(&[("rack", "a")])), "{spelling}");
            assert!(!query.matches(&labels(&[("retired", "yes")])), "{spelling}");
        }
    }

    #[test]
    fn kubernetes_and_selection_spellings_agree() {
        let host = labels(&[("zone", "a"), ("gen", "5")]);
        let cases = [
            ("In", vec!["a", "b"], true),
            ("in", vec!["b"], false),
            ("NotIn", vec!["b"], true),
            ("notin", vec!["a"], false),
            ("=", vec!["a"], true),
            ("==", vec!["b"], false),
            ("!=", vec!["b"], true),
        ];

        for (operator, values, expected) in cases {
            let query = query(vec![expression("zone", operator, &values)]).expect("valid selector");
            assert_eq!(query.matches(&host), expected, "zone {operator} {values:?}");
        }
    }

    #[test]
    fn numeric_comparisons_need_integer_labels() {
        let newer = query(vec![expression("gen", "Gt", &["4"])]).expect("valid selector");

        assert!(newer.matches(&labels(&[("gen", "5")])));
        assert!(!newer.matches(&labels(&[("gen", "4")])));
        assert!(!newer.matches(&labels(&[("gen", "five")])));
        assert!(!newer.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let query = LabelQuery::compile(Some(&HostSelector {
            match_labels: Some(labels(&[("role", "worker")])),
            match_expressions: Some(vec![expression("zone", "Exists", &[])]),
        }))
        .expect("valid selector");

        assert!(query.matches(&labels(&[("role", "worker"), ("zone", "a")])));
        assert!(!query.matches(&labels(&[("role", "worker")])));
        assert!(!query.matches(&labels(&[("zone", "a")])));
    }

    #[test]
    fn malformed_expressions_are_reported_with_their_key() {
        let unknown =
            query(vec![expression("zone", "Near", &["a"])]).expect_err("unknown operator");
        assert!(unknown.to_string().contains("\"zone\""), "{unknown}");
        assert!(unknown.to_string().contains("DoesNotExist"), "{unknown}");

        let cases = [
            expression("zone", "In", &[]),
            expression("zone", "Exists", &["a"]),
            expression("gen", "Lt", &["x"]),
            expression("zone", "=", &["a", "b"]),
        ];
        for case in cases {
            assert!(
                matches!(
                    query(vec![case.clone()]),
                    Err(SelectorError::BadValues { .. })
                ),
                "{case:?}"
            );
        }
    }

    #[test]
    fn no_selector_matches_everything() {
        let query = LabelQuery::compile(None).expect("valid selector");
        assert!(query.matches(&labels(&[])));
        assert!(query.requirements().is_empty());
    }
}
