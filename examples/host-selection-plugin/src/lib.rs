//! A site's host-selection policy, written as an ingot plugin.
//!
//! Among the hosts that satisfy a claim (label selector, failure domain and
//! hardware requirements), prefer:
//!
//! 1. a failure domain holding fewer of the claimant group's hosts, so a
//!    cluster spreads across racks or zones;
//! 2. within that, the smallest host that fits, so large machines stay free
//!    for the claims that need them;
//! 3. between equals, a stable hash of the claim and host, so retries of the
//!    same claim pick the same host.
//!
//! Configuration (`WasmPlugin.spec.config`): `spread-weight` (default
//! 1000000) is the score one extra host in a domain costs, compared with one
//! unit of surplus size (one CPU or one GiB of memory above the request).

use ingot_plugin_sdk::host::{Host, Level};
use ingot_plugin_sdk::selector::{
    Candidate, Choice, Claim, HostSelector, Ranked, Rejected, SelectionError, selector_matches,
    stable_hash, unmet_requirements, validate_selector,
};

/// Default score cost of one more host already placed in a failure domain.
const DEFAULT_SPREAD_WEIGHT: i64 = 1_000_000;

/// The example policy.
pub struct SmallestSpread;

impl HostSelector for SmallestSpread {
    fn select(
        host: &impl Host,
        claim: Claim,
        candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError> {
        validate_selector(&claim.selector)?;
        let spread_weight = spread_weight(host)?;

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
                None => choice.ranked.push(rank(&claim, candidate, spread_weight)),
            }
        }

        choice.ranked.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| tie_break(&claim, b).cmp(&tie_break(&claim, a)))
        });

        if let Some(best) = choice.ranked.first() {
            host.log(
                Level::Info,
                "chose host",
                &[("claim", &claim.identity), ("host", &best.host.name)],
            );
        }

        Ok(choice)
    }
}

fn spread_weight(host: &impl Host) -> Result<i64, SelectionError> {
    match host.config("spread-weight") {
        None => Ok(DEFAULT_SPREAD_WEIGHT),
        Some(text) => text.trim().parse().map_err(|_| {
            SelectionError::Other(format!("config spread-weight {text:?} is not an integer"))
        }),
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

fn rank(claim: &Claim, candidate: Candidate, spread_weight: i64) -> Ranked {
    let (cpus, ram_gib) = size(&candidate);
    let wanted_cpus = i64::from(claim.requirements.min_cpus.unwrap_or(0));
    let wanted_gib = claim.requirements.min_ram_mebibytes.unwrap_or(0) as i64 / 1024;
    let surplus = (cpus - wanted_cpus) + (ram_gib - wanted_gib);

    let domain = candidate.failure_domain.clone().unwrap_or_default();
    let placed = claim
        .domain_usage
        .iter()
        .find(|(name, _)| *name == domain)
        .map_or(0, |(_, count)| i64::from(*count));

    let reasons = vec![
        format!("failure domain {domain:?} already holds {placed} of this group's hosts"),
        format!("{cpus} CPUs and {ram_gib} GiB: {surplus} units above the request"),
    ];

    Ranked {
        host: candidate.host,
        score: -(placed * spread_weight) - surplus,
        reasons,
    }
}

/// CPU count and memory in GiB, zero when not inspected.
fn size(candidate: &Candidate) -> (i64, i64) {
    let hardware = candidate.hardware.as_ref();
    let cpus = hardware
        .and_then(|hardware| hardware.cpu.as_ref())
        .map_or(0, |cpu| cpu.count);
    let ram_gib = hardware.map_or(0, |hardware| hardware.ram_mebibytes / 1024);
    (i64::from(cpus), ram_gib as i64)
}

fn tie_break(claim: &Claim, ranked: &Ranked) -> u64 {
    stable_hash(&[&claim.identity, &ranked.host.uid])
}

ingot_plugin_sdk::export_host_selector!(SmallestSpread);

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_plugin_sdk::mock::{MockHost, fixtures};

    fn host(name: &str, domain: &str, cpus: u32, ram_gib: u64) -> Candidate {
        fixtures::candidate(name, &[("role", "worker")], Some(domain), cpus, ram_gib)
    }

    fn claim(min_cpus: u32, usage: &[(&str, u32)]) -> Claim {
        let mut claim = fixtures::claim("site/worker-0");
        claim.selector.match_labels = fixtures::labels(&[("role", "worker")]);
        claim.requirements.cpu_arch = Some("x86_64".into());
        claim.requirements.min_cpus = Some(min_cpus);
        claim.domain_usage = usage
            .iter()
            .map(|(name, count)| ((*name).into(), *count))
            .collect();
        claim
    }

    fn names(choice: &Choice) -> Vec<&str> {
        choice
            .ranked
            .iter()
            .map(|ranked| ranked.host.name.as_str())
            .collect()
    }

    #[test]
    fn prefers_the_smallest_host_that_fits() {
        let candidates = vec![
            host("big", "rack-1", 64, 512),
            host("small", "rack-1", 8, 32),
            host("tiny", "rack-1", 2, 8),
        ];

        let choice = SmallestSpread::select(&MockHost::new(), claim(8, &[]), candidates)
            .expect("selection succeeds");

        assert_eq!(names(&choice), ["small", "big"]);
        assert_eq!(choice.rejected[0].reason, "fewer than 8 CPUs");
    }

    #[test]
    fn spreads_across_failure_domains_before_size() {
        let candidates = vec![
            host("small-a", "rack-a", 8, 32),
            host("big-b", "rack-b", 32, 256),
        ];

        let choice =
            SmallestSpread::select(&MockHost::new(), claim(4, &[("rack-a", 2)]), candidates)
                .expect("selection succeeds");

        assert_eq!(names(&choice), ["big-b", "small-a"]);
        assert!(choice.ranked[1].reasons[0].contains("already holds 2"));
    }

    #[test]
    fn spread_weight_comes_from_config() {
        let candidates = vec![
            host("small-a", "rack-a", 8, 32),
            host("big-b", "rack-b", 32, 256),
        ];
        let host = MockHost::new().with_config("spread-weight", "1");

        let choice = SmallestSpread::select(&host, claim(4, &[("rack-a", 2)]), candidates)
            .expect("selection succeeds");

        assert_eq!(
            names(&choice),
            ["small-a", "big-b"],
            "size wins when spreading is cheap"
        );
        assert_eq!(host.logs()[0].fields[1], ("host".into(), "small-a".into()));
    }

    #[test]
    fn bad_config_is_reported() {
        let host = MockHost::new().with_config("spread-weight", "lots");

        let error = SmallestSpread::select(&host, claim(1, &[]), Vec::new()).expect_err("invalid");

        assert!(matches!(error, SelectionError::Other(text) if text.contains("lots")));
    }
}
