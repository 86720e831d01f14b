//! Ranking the claimable hosts: the seam to `host-selector` plugins and the built-in policy.
//!
//! The claim engine hands a [`HostSelector`] only hosts that already pass Metal3's
//! eligibility rules ([`crate::eligibility`]); the selector orders them. [`DefaultSelector`]
//! is the built-in policy, identical to the bundled default selector plugin: keep the hosts
//! of the requested failure domain, then order by a hash of the claimant's identity and the
//! host UID, so one claimant always prefers the same host while different claimants spread
//! over the pool (upstream picks at random, which makes retries wander).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use ingot_api::metal3::HardwareDetails;
use ingot_plugin_sdk::selector::stable_hash;

use crate::labels::LabelQuery;

/// A host offered to a selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Host name (unique within the namespace).
    pub name: String,
    /// Host UID.
    pub uid: String,
    /// Host labels.
    pub labels: BTreeMap<String, String>,
    /// Failure domain from the host's failure-domain label.
    pub failure_domain: Option<String>,
    /// Inspected hardware, when known.
    pub hardware: Option<HardwareDetails>,
    /// Scheme of the host's BMC address (e.g. `redfish+https`), which routes the host to its
    /// plugins; `None` when the address is missing or unparsable.
    pub bmc_scheme: Option<String>,
}

/// What the claimant asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectionRequest {
    /// Namespace of the claimant and of every candidate.
    pub namespace: String,
    /// `namespace/name` of the claimant, stable across retries.
    pub identity: String,
    /// Labels of the claimant.
    pub labels: BTreeMap<String, String>,
    /// The claimant's host selector (already applied to the candidates).
    pub query: LabelQuery,
    /// Failure domain the host must be in; cleared by the engine when no candidate is in it,
    /// so that the claim falls back to any host as Metal3 does.
    pub failure_domain: Option<String>,
    /// How many hosts the claimant's group (e.g. its cluster) holds per failure domain, for
    /// selectors that spread a group; empty when the claimant belongs to no group.
    pub domain_usage: BTreeMap<String, u32>,
}

/// One acceptable host, best first in a [`Ranking`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Host name.
    pub name: String,
    /// Higher is better.
    pub score: i64,
    /// Why it scored so.
    pub reasons: Vec<String>,
}

/// A selector's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    /// Acceptable hosts, best first.
    pub ranked: Vec<Ranked>,
    /// Refused hosts with the reason, for the claimant's status.
    pub rejected: Vec<(String, String)>,
}

/// Why a selector gave no ranking.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// The selector judged the claim itself invalid; retrying will not help until it changes.
    #[error("selector {selector} refused the claim: {reason}")]
    InvalidClaim {
        /// Selector name.
        selector: String,
        /// Its explanation.
        reason: String,
    },
    /// The selector failed (a plugin trap, timeout or error).
    #[error("selector {selector} failed")]
    Failed {
        /// Selector name.
        selector: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Orders claimable hosts for one claim. Must be deterministic for the same input.
pub trait HostSelector: Send + Sync {
    /// Name shown in logs and conditions.
    fn name(&self) -> &str;

    /// Ranks `candidates` for `request`.
    fn select<'a>(
        &'a self,
        request: &'a SelectionRequest,
        candidates: &'a [Candidate],
    ) -> BoxFuture<'a, Result<Ranking, SelectionError>>;
}

/// The built-in policy (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultSelector;

/// Name of the built-in selector.
pub const DEFAULT_SELECTOR: &str = "default";

impl DefaultSelector {
    /// The ranking, computed synchronously.
    pub fn rank(request: &SelectionRequest, candidates: &[Candidate]) -> Ranking {
        let mut ranking = Ranking::default();

        for candidate in candidates {
            match &request.failure_domain {
                Some(domain) if candidate.failure_domain.as_ref() != Some(domain) => {
                    ranking.rejected.push((
                        candidate.name.clone(),
                        format!("not in failure domain {domain}"),
                    ))
                }
                _ => ranking.ranked.push(spread(request, candidate)),
            }
        }

        let uid_of = |name: &str| {
            candidates
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.uid.clone())
        };
        ranking.ranked.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| uid_of(&a.name).cmp(&uid_of(&b.name)))
        });
        ranking
    }
}

fn spread(request: &SelectionRequest, candidate: &Candidate) -> Ranked {
    let hash = stable_hash(&[&request.identity, &candidate.uid]) >> 1;

    Ranked {
        name: candidate.name.clone(),
        score: i64::try_from(hash).unwrap_or(i64::MAX),
        reasons: vec!["matches the selector; spread by claim identity".to_owned()],
    }
}

impl HostSelector for DefaultSelector {
    fn name(&self) -> &str {
        DEFAULT_SELECTOR
    }

    fn select<'a>(
        &'a self,
        request: &'a SelectionRequest,
        candidates: &'a [Candidate],
    ) -> BoxFuture<'a, Result<Ranking, SelectionError>> {
        Box::pin(async move { Ok(Self::rank(request, candidates)) })
    }
}

/// The selector for each namespace: a default, overridden per namespace by site policy.
#[derive(Clone)]
pub struct Selectors {
    default: Arc<dyn HostSelector>,
    by_namespace: BTreeMap<String, Arc<dyn HostSelector>>,
}

impl Default for Selectors {
    fn default() -> Self {
        Self::new(Arc::new(DefaultSelector))
    }
}

impl Selectors {
    /// Every namespace uses `default`.
    pub fn new(default: Arc<dyn HostSelector>) -> Self {
        Self {
            default,
            by_namespace: BTreeMap::new(),
        }
    }

    /// Every namespace ranks hosts with the `host-selector` plugins of `registry`, routed per
    /// host by `routing` (see [`crate::plugin_selector`]).
    pub fn through_plugins(
        registry: Arc<ingot_plugin_host::registry::Registry>,
        routing: Arc<dyn ingot_plugin_host::routing::Routing>,
    ) -> Self {
        Self::new(Arc::new(crate::plugin_selector::PluginSelector::new(
            registry, routing,
        )))
    }

    /// Hosts of `namespace` are chosen by `selector` instead of the default.
    pub fn with_namespace(mut self, namespace: &str, selector: Arc<dyn HostSelector>) -> Self {
        self.by_namespace.insert(namespace.to_owned(), selector);
        self
    }

    /// The selector serving `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> &Arc<dyn HostSelector> {
        self.by_namespace.get(namespace).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, domain: Option<&str>) -> Candidate {
        Candidate {
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::new(),
            failure_domain: domain.map(Into::into),
            hardware: None,
            bmc_scheme: Some("redfish".into()),
        }
    }

    fn request(identity: &str, domain: Option<&str>) -> SelectionRequest {
        SelectionRequest {
            namespace: "lab".into(),
            identity: identity.into(),
            failure_domain: domain.map(Into::into),
            ..SelectionRequest::default()
        }
    }

    fn first(ranking: &Ranking) -> &str {
        ranking
            .ranked
            .first()
            .map_or("", |ranked| ranked.name.as_str())
    }

    #[test]
    fn a_claimant_always_prefers_the_same_host_and_claimants_spread() {
        let pool: Vec<_> = (0..10).map(|i| candidate(&format!("h{i}"), None)).collect();
        let mut reversed = pool.clone();
        reversed.reverse();

        let once = DefaultSelector::rank(&request("lab/m1", None), &pool);
        let again = DefaultSelector::rank(&request("lab/m1", None), &reversed);
        assert_eq!(once, again, "order of the listing does not matter");

        let firsts: std::collections::BTreeSet<String> = (0..20)
            .map(|i| {
                first(&DefaultSelector::rank(
                    &request(&format!("lab/m{i}"), None),
                    &pool,
                ))
                .to_owned()
            })
            .collect();
        assert!(firsts.len() > 3, "claimants spread over hosts: {firsts:?}");
    }

    #[test]
    fn failure_domain_keeps_only_its_hosts() {
        let pool = [
            candidate("a", Some("rack-1")),
            candidate("b", Some("rack-2")),
            candidate("c", None),
        ];

        let ranking = DefaultSelector::rank(&request("lab/m1", Some("rack-2")), &pool);

        assert_eq!(first(&ranking), "b");
        assert_eq!(ranking.ranked.len(), 1);
        assert_eq!(ranking.rejected.len(), 2);
    }

    #[test]
    fn namespaces_can_use_their_own_selector() {
        struct Named;
        impl HostSelector for Named {
            fn name(&self) -> &str {
                "site"
            }
            fn select<'a>(
                &'a self,
                _: &'a SelectionRequest,
                _: &'a [Candidate],
            ) -> BoxFuture<'a, Result<Ranking, SelectionError>> {
                Box::pin(async { Ok(Ranking::default()) })
            }
        }

        let selectors = Selectors::default().with_namespace("edge", Arc::new(Named));

        assert_eq!(selectors.for_namespace("edge").name(), "site");
        assert_eq!(selectors.for_namespace("lab").name(), DEFAULT_SELECTOR);
    }
}
