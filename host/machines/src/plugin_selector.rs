//! Ranking claimable hosts with `host-selector` WebAssembly plugins.
//!
//! ```text
//!  candidates ─▶ Routing::plugins_for(host).selector ─▶ one group per selector binding
//!                                                            │
//!  Registry::call(select, binding config) ◀── plugin loaded ┤
//!         DefaultSelector::rank  ◀── not loaded / ignored ───┘
//!                                                            ▼
//!                                   rankings merged position by position
//! ```
//!
//! Which plugin ranks a host is the host's business: a `HostPolicy` matching the host's labels
//! may name a site selector, everything else gets the bundled default. The candidates of one
//! claim are therefore grouped by the selector routed for each of them, and every group is
//! ranked by its own selector.
//!
//! # Guarantees
//!
//! - A claim only ever lands on a host the engine offered: hosts a plugin names that were not
//!   candidates, or names twice, are dropped.
//! - When the routed plugin is not loaded (not deployed yet, removed), or its failure policy
//!   says to ignore it while its guard is open, the built-in [`DefaultSelector`] ranks the
//!   group: selection degrades to the default rules, never to "no host".
//! - Scores of different plugins are not comparable, so groups are merged by position: every
//!   selector's best host comes before any selector's second best, and groups at the same
//!   position follow the order of their plugin names. With one group (the usual case) the
//!   plugin's order is kept exactly.
//! - A host no selector can be routed for (no usable BMC address, an unusable policy) is
//!   rejected with the routing error as its reason.
//!
//! # Errors
//!
//! A plugin that traps, times out or answers `other` fails the whole ranking
//! ([`SelectionError::Failed`]); one answering `invalid-claim` gives
//! [`SelectionError::InvalidClaim`]. The claim is retried with backoff either way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use ingot_plugin_host::CallError;
use ingot_plugin_host::bindings::selection as wit;
use ingot_plugin_host::bindings::types as wit_types;
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::DomainError;
use ingot_plugin_host::hardware::to_plugin;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::routing::{HostFacts, PluginBinding, Routing};
use ingot_plugin_host::state::CallScope;

use crate::labels::Operator;
use crate::selection::{
    Candidate, DefaultSelector, HostSelector, Ranked, Ranking, SelectionError, SelectionRequest,
};

/// Name under which this selector appears in logs and waiting messages.
pub const PLUGIN_SELECTOR: &str = "host-selector plugins";

/// A [`HostSelector`] calling the `host-selector` plugin routed for each host.
pub struct PluginSelector {
    registry: Arc<Registry>,
    routing: Arc<dyn Routing>,
}

impl PluginSelector {
    /// Ranks with the plugins of `registry`, chosen per host by `routing`.
    pub fn new(registry: Arc<Registry>, routing: Arc<dyn Routing>) -> Self {
        Self { registry, routing }
    }

    /// Splits the candidates by the selector routed for each; hosts without one are rejected.
    fn route(&self, request: &SelectionRequest, candidates: &[Candidate]) -> Routed {
        let mut routed = Routed::default();

        for candidate in candidates {
            let Some(scheme) = candidate.bmc_scheme.as_deref() else {
                routed.reject(candidate, "no usable BMC address".to_owned());
                continue;
            };
            let facts = HostFacts {
                namespace: &request.namespace,
                labels: &candidate.labels,
                bmc_scheme: scheme,
            };
            match self.routing.plugins_for(&facts) {
                Ok(plugins) => routed.add(plugins.selector, candidate),
                Err(error) => routed.reject(candidate, error.to_string()),
            }
        }

        routed
            .groups
            .sort_by(|a, b| a.binding.plugin.cmp(&b.binding.plugin));
        routed
    }

    /// One group's ranking, by its plugin or, when that is not serving, the built-in rules.
    async fn rank_group(
        &self,
        binding: &PluginBinding,
        request: &SelectionRequest,
        candidates: &[Candidate],
    ) -> Result<Ranking, SelectionError> {
        let call = PluginCall::Select {
            claim: claim(request),
            candidates: candidates
                .iter()
                .map(|c| candidate(&request.namespace, c))
                .collect(),
        };
        let plugin = binding.plugin.as_str();

        let scope = CallScope {
            config_overrides: binding.config.clone(),
            ..CallScope::default()
        };

        match self.registry.call(plugin, call, scope).await {
            Ok(PluginReply::Choice(choice)) => Ok(ranking(choice, candidates)),
            Ok(other) => Err(failed(plugin, UnexpectedReply(format!("{other:?}")))),
            Err(CallError::NotLoaded { .. } | CallError::Ignored { .. }) => {
                tracing::debug!(
                    plugin,
                    claim = %request.identity,
                    "selector plugin not serving; ranking with the built-in rules"
                );
                Ok(DefaultSelector::rank(request, candidates))
            }
            Err(CallError::Domain {
                error: DomainError::Selection(wit::SelectionError::InvalidClaim(reason)),
                ..
            }) => Err(SelectionError::InvalidClaim {
                selector: plugin.to_owned(),
                reason,
            }),
            Err(error) => Err(failed(plugin, error)),
        }
    }
}

impl HostSelector for PluginSelector {
    fn name(&self) -> &str {
        PLUGIN_SELECTOR
    }

    fn select<'a>(
        &'a self,
        request: &'a SelectionRequest,
        candidates: &'a [Candidate],
    ) -> BoxFuture<'a, Result<Ranking, SelectionError>> {
        Box::pin(async move {
            let routed = self.route(request, candidates);

            let mut rankings = Vec::with_capacity(routed.groups.len());
            for group in &routed.groups {
                let ranking = self.rank_group(&group.binding, request, &group.members);
                rankings.push(ranking.await?);
            }

            let mut merged = interleave(rankings);
            merged.rejected.extend(routed.unrouted);
            Ok(merged)
        })
    }
}

/// The candidates of one selector binding.
struct Group {
    binding: PluginBinding,
    members: Vec<Candidate>,
}

/// Candidates grouped by their selector, and those no selector could be routed for.
#[derive(Default)]
struct Routed {
    groups: Vec<Group>,
    unrouted: Vec<(String, String)>,
}

impl Routed {
    fn add(&mut self, binding: PluginBinding, candidate: &Candidate) {
        match self
            .groups
            .iter_mut()
            .find(|group| group.binding == binding)
        {
            Some(group) => group.members.push(candidate.clone()),
            None => self.groups.push(Group {
                binding,
                members: vec![candidate.clone()],
            }),
        }
    }

    fn reject(&mut self, candidate: &Candidate, reason: String) {
        self.unrouted.push((candidate.name.clone(), reason));
    }
}

/// A plugin answered `select` with a reply of another function.
#[derive(Debug, thiserror::Error)]
#[error("the plugin answered select with {0}")]
struct UnexpectedReply(String);

fn failed(plugin: &str, source: impl std::error::Error + Send + Sync + 'static) -> SelectionError {
    SelectionError::Failed {
        selector: plugin.to_owned(),
        source: Box::new(source),
    }
}

/// Merges rankings position by position (see the module documentation).
fn interleave(rankings: Vec<Ranking>) -> Ranking {
    let mut merged = Ranking::default();
    let longest = rankings.iter().map(|r| r.ranked.len()).max().unwrap_or(0);

    for position in 0..longest {
        for ranking in &rankings {
            if let Some(ranked) = ranking.ranked.get(position) {
                merged.ranked.push(ranked.clone());
            }
        }
    }
    for ranking in rankings {
        merged.rejected.extend(ranking.rejected);
    }
    merged
}

/// The plugin's choice in host names, keeping only offered hosts, each once.
fn ranking(choice: wit::Choice, candidates: &[Candidate]) -> Ranking {
    let offered: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let mut seen = BTreeSet::new();

    let ranked = choice
        .ranked
        .into_iter()
        .filter(|ranked| offered.contains(ranked.host.name.as_str()))
        .filter(|ranked| seen.insert(ranked.host.name.clone()))
        .map(|ranked| Ranked {
            name: ranked.host.name,
            score: ranked.score,
            reasons: ranked.reasons,
        })
        .collect();
    let rejected = choice
        .rejected
        .into_iter()
        .map(|rejected| (rejected.host.name, rejected.reason))
        .collect();

    Ranking { ranked, rejected }
}

/// The claim as the plugin sees it.
///
/// Candidates already satisfy the whole host selector; `Gt` and `Lt` expressions, which the
/// WIT selector cannot express, are therefore left out rather than approximated.
fn claim(request: &SelectionRequest) -> wit::Claim {
    let match_expressions = request
        .query
        .requirements()
        .iter()
        .filter_map(|requirement| {
            let operator = match requirement.operator {
                Operator::In => wit::SelectorOperator::In,
                Operator::NotIn => wit::SelectorOperator::NotIn,
                Operator::Exists => wit::SelectorOperator::Exists,
                Operator::DoesNotExist => wit::SelectorOperator::DoesNotExist,
                Operator::GreaterThan | Operator::LessThan => return None,
            };
            Some(wit::SelectorRequirement {
                key: requirement.key.clone(),
                operator,
                values: requirement.values.clone(),
            })
        })
        .collect();

    wit::Claim {
        identity: request.identity.clone(),
        labels: pairs(&request.labels),
        selector: wit::LabelSelector {
            match_labels: Vec::new(),
            match_expressions,
        },
        requirements: wit::Requirements {
            cpu_arch: None,
            min_cpus: None,
            min_ram_mebibytes: None,
            min_disk_bytes: None,
            min_nics: None,
            extra: Vec::new(),
        },
        failure_domain: request.failure_domain.clone(),
        domain_usage: request
            .domain_usage
            .iter()
            .map(|(domain, count)| (domain.clone(), *count))
            .collect(),
    }
}

fn candidate(namespace: &str, candidate: &Candidate) -> wit::Candidate {
    wit::Candidate {
        host: wit_types::HostRef {
            namespace: namespace.to_owned(),
            name: candidate.name.clone(),
            uid: candidate.uid.clone(),
        },
        labels: pairs(&candidate.labels),
        failure_domain: candidate.failure_domain.clone(),
        hardware: candidate.hardware.as_ref().map(to_plugin),
    }
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(name: &str) -> Candidate {
        Candidate {
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::new(),
            failure_domain: None,
            hardware: None,
            bmc_scheme: Some("redfish".into()),
        }
    }

    fn wit_ranked(name: &str, score: i64) -> wit::Ranked {
        wit::Ranked {
            host: wit_types::HostRef {
                namespace: "lab".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            score,
            reasons: Vec::new(),
        }
    }

    fn ranked(names: &[&str]) -> Ranking {
        Ranking {
            ranked: names
                .iter()
                .map(|name| Ranked {
                    name: (*name).into(),
                    score: 0,
                    reasons: Vec::new(),
                })
                .collect(),
            rejected: Vec::new(),
        }
    }

    fn names(ranking: &Ranking) -> Vec<&str> {
        ranking.ranked.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_plugin_cannot_add_hosts_or_name_one_twice() {
        let choice = wit::Choice {
            ranked: vec![
                wit_ranked("b", 9),
                wit_ranked("not-offered", 8),
                wit_ranked("b", 7),
                wit_ranked("a", 6),
            ],
            rejected: Vec::new(),
        };

        let ranking = ranking(choice, &[offered("a"), offered("b")]);

        assert_eq!(names(&ranking), ["b", "a"]);
        assert_eq!(ranking.ranked[0].score, 9);
    }

    #[test]
    fn rankings_are_merged_position_by_position() {
        let merged = interleave(vec![ranked(&["a1", "a2", "a3"]), ranked(&["b1"])]);

        assert_eq!(names(&merged), ["a1", "b1", "a2", "a3"]);
    }

    #[test]
    fn the_claim_carries_every_expressible_requirement() {
        let query = crate::labels::LabelQuery::compile(Some(&ingot_api::selector::HostSelector {
            match_labels: Some(BTreeMap::from([("role".into(), "worker".into())])),
            match_expressions: Some(vec![
                ingot_api::selector::HostSelectorRequirement {
                    key: "retired".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                ingot_api::selector::HostSelectorRequirement {
                    key: "generation".into(),
                    operator: "Gt".into(),
                    values: Some(vec!["3".into()]),
                },
            ]),
        }))
        .expect("valid selector");
        let request = SelectionRequest {
            namespace: "lab".into(),
            identity: "lab/worker-0".into(),
            query,
            domain_usage: BTreeMap::from([("rack-a".into(), 2)]),
            ..SelectionRequest::default()
        };

        let claim = claim(&request);

        let expressions: Vec<_> = claim
            .selector
            .match_expressions
            .iter()
            .map(|e| (e.key.as_str(), e.operator, e.values.clone()))
            .collect();
        assert_eq!(
            expressions,
            [
                ("role", wit::SelectorOperator::In, vec!["worker".to_owned()]),
                ("retired", wit::SelectorOperator::DoesNotExist, Vec::new()),
            ]
        );
        assert_eq!(claim.domain_usage, [("rack-a".to_owned(), 2)]);
    }

    #[test]
    fn hardware_keeps_what_selectors_compare_and_clamps_nonsense() {
        let details: ingot_api::metal3::HardwareDetails =
            serde_json::from_value(serde_json::json!({
                "cpu": { "arch": "aarch64", "count": 48 },
                "ramMebibytes": 196608,
                "nics": [{ "name": "eno1", "mac": "52:54:00:AB:CD:EF", "vlanId": 70000 }],
                "storage": [{ "name": "/dev/sda", "sizeBytes": -1, "type": "NVME" }],
            }))
            .expect("hardware");

        let converted = to_plugin(&details);

        let cpu = converted.cpu.expect("cpu");
        assert_eq!((cpu.arch.as_str(), cpu.count), ("aarch64", 48));
        assert_eq!(converted.ram_mebibytes, 196_608);
        assert_eq!(converted.nics[0].mac, "52:54:00:ab:cd:ef");
        assert_eq!(converted.nics[0].vlan_id, None);
        assert_eq!(converted.storage[0].size_bytes, 0);
        assert_eq!(converted.storage[0].kind, Some(wit_types::DiskKind::Nvme));
    }
}
