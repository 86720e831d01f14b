//! The built-in host selector.
//!
//! Keeps the candidates whose labels satisfy the claim's selector, whose
//! failure domain matches the claim's (when it names one) and whose hardware
//! meets the requirements. Metal3 picks among the matching hosts at random;
//! this selector orders them by a hash of the claim identity and the host UID
//! instead, so the choice is spread over hosts yet stable across retries.

use ingot_plugin_sdk::host::{Host, Level};
use ingot_plugin_sdk::selector::{
    Candidate, Choice, Claim, HostSelector, Ranked, Rejected, SelectionError, selector_matches,
    stable_hash, unmet_requirements, validate_selector,
};

/// The default selection policy.
pub struct DefaultSelector;

impl HostSelector for DefaultSelector {
    fn select(
        host: &impl Host,
        claim: Claim,
        candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError> {
        validate_selector(&claim.selector)?;

        let mut choice = Choice {
            ranked: Vec::new(),
            rejected: Vec::new(),
        };

        for candidate in candidates {
            match rejection(&claim, &candidate) {
                Some(reason) => choice.rejected.push(Rejected {
                    host: candidate.host,
                    reason,
                }),
                None => choice.ranked.push(rank(&claim, candidate)),
            }
        }

        choice.ranked.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| a.host.uid.cmp(&b.host.uid))
        });

        let ranked = choice.ranked.len().to_string();
        let rejected = choice.rejected.len().to_string();
        host.log(
            Level::Debug,
            "ranked candidates",
            &[
                ("claim", &claim.identity),
                ("ranked", &ranked),
                ("rejected", &rejected),
            ],
        );

        Ok(choice)
    }
}

fn rejection(claim: &Claim, candidate: &Candidate) -> Option<String> {
    if !selector_matches(&claim.selector, &candidate.labels) {
        return Some("labels do not match the host selector".to_owned());
    }

    if let Some(domain) = &claim.failure_domain
        && candidate.failure_domain.as_ref() != Some(domain)
    {
        return Some(format!("not in failure domain {domain}"));
    }

    let unmet = unmet_requirements(&claim.requirements, candidate.hardware.as_ref());
    (!unmet.is_empty()).then(|| unmet.join("; "))
}

fn rank(claim: &Claim, candidate: Candidate) -> Ranked {
    let spread = stable_hash(&[&claim.identity, &candidate.host.uid]) >> 1;

    Ranked {
        host: candidate.host,
        score: i64::try_from(spread).unwrap_or(i64::MAX),
        reasons: vec!["matches the selector and requirements; spread by claim identity".to_owned()],
    }
}

ingot_plugin_sdk::export_host_selector!(DefaultSelector);

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_plugin_sdk::mock::{MockHost, fixtures};
    use ingot_plugin_sdk::selector::{LabelSelector, SelectorOperator, SelectorRequirement};

    fn candidate(name: &str, labels: &[(&str, &str)], cpus: u32) -> Candidate {
        fixtures::candidate(name, labels, None, cpus, 4)
    }

    fn claim(identity: &str, selector: LabelSelector, min_cpus: Option<u32>) -> Claim {
        let mut claim = fixtures::claim(identity);
        claim.selector = selector;
        claim.requirements.min_cpus = min_cpus;
        claim
    }

    fn no_selector() -> LabelSelector {
        LabelSelector {
            match_labels: Vec::new(),
            match_expressions: Vec::new(),
        }
    }

    #[test]
    fn rejects_hosts_failing_selector_or_requirements() {
        let selector = LabelSelector {
            match_labels: vec![("role".into(), "worker".into())],
            match_expressions: Vec::new(),
        };
        let candidates = vec![
            candidate("a", &[("role", "worker")], 8),
            candidate("b", &[("role", "control")], 8),
            candidate("c", &[("role", "worker")], 2),
        ];

        let choice = DefaultSelector::select(
            &MockHost::new(),
            claim("ns/m1", selector, Some(4)),
            candidates,
        )
        .expect("selection succeeds");

        assert_eq!(
            choice
                .ranked
                .iter()
                .map(|r| r.host.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(choice.rejected.len(), 2);
        assert!(choice.rejected[1].reason.contains("fewer than 4 CPUs"));
    }

    #[test]
    fn same_claim_always_prefers_same_host() {
        let candidates: Vec<_> = (0..10)
            .map(|i| candidate(&format!("h{i}"), &[], 8))
            .collect();
        let first = |identity: &str| {
            DefaultSelector::select(
                &MockHost::new(),
                claim(identity, no_selector(), None),
                candidates.clone(),
            )
            .expect("selection succeeds")
            .ranked[0]
                .host
                .name
                .clone()
        };

        assert_eq!(first("ns/m1"), first("ns/m1"));
        let chosen: std::collections::BTreeSet<_> =
            (0..20).map(|i| first(&format!("ns/m{i}"))).collect();
        assert!(
            chosen.len() > 1,
            "different claims spread over hosts: {chosen:?}"
        );
    }

    #[test]
    fn malformed_expression_is_an_invalid_claim() {
        let selector = LabelSelector {
            match_labels: Vec::new(),
            match_expressions: vec![SelectorRequirement {
                key: "zone".into(),
                operator: SelectorOperator::In,
                values: Vec::new(),
            }],
        };

        let error =
            DefaultSelector::select(&MockHost::new(), claim("ns/m1", selector, None), Vec::new())
                .expect_err("empty `in` is invalid");

        assert!(matches!(error, SelectionError::InvalidClaim(text) if text.contains("zone")));
    }

    #[test]
    fn logs_the_counts() {
        let host = MockHost::new();
        DefaultSelector::select(
            &host,
            claim("ns/m1", no_selector(), None),
            vec![candidate("a", &[], 1)],
        )
        .expect("selection succeeds");

        let logs = host.logs();
        assert_eq!(logs.len(), 1);
        assert!(logs[0].fields.contains(&("ranked".into(), "1".into())));
    }
}
