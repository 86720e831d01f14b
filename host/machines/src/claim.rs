//! The claim engine shared by Metal3Machine and HostClaim: find the host a consumer holds, or
//! take a free one without ever double-booking it.
//!
//! # Guarantees
//!
//! - The host's `spec.consumerRef` is the lock. A claim is one merge patch that sets it and
//!   carries the `resourceVersion` the choice was made on, so the API server refuses it (409)
//!   if anyone wrote the host since: two claimants, two controller processes or a stale cache
//!   can never both win. On a refusal the engine tries the next ranked host, then re-lists
//!   and chooses again.
//! - Hosts are always read live from the API server, never from a cache.
//! - A host whose `consumerRef` already names the consumer is returned first, whatever its
//!   state: a claim interrupted after the host was written but before the consumer recorded
//!   it is completed rather than repeated.
//! - A consumer keeps one host. Should a race between controller instances leave it named by
//!   more than one, each instance keeps the same one ([`keep_order`]) and hands the others
//!   back. A host is only handed to the consumer for its deployment while no other host names
//!   the consumer, so two hosts never both get it.
//! - For the same hosts and the same consumer the choice is the same (see
//!   [`crate::selection`]).

use std::collections::BTreeMap;

use ingot_api::metal3::BareMetalHost;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use crate::eligibility::{
    Consumer, FAILURE_DOMAIN_LABEL, NODE_REUSE_LABEL, Sorted, Wanted, has_deployment, keep_order,
    state,
};
use crate::hostspec::{ReleaseOptions, ReleaseStep, release_step};
use crate::selection::{Candidate, SelectionError, SelectionRequest, Selectors};

/// Field manager of every write the machine loop makes.
pub const FIELD_MANAGER: &str = "ingot-machines";

/// How many times a claim re-lists after losing every ranked host to other claimants.
const DEFAULT_ATTEMPTS: usize = 5;

/// Failures of a claim. Conflicts are not failures: they are retried inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Listing the hosts failed.
    #[error("listing BareMetalHosts in {namespace} failed")]
    ListHosts {
        /// Namespace.
        namespace: String,
        /// Client error.
        #[source]
        source: kube::Error,
    },
    /// Writing the claim failed for a reason other than losing a race.
    #[error("claiming BareMetalHost {namespace}/{host} failed")]
    WriteClaim {
        /// Namespace.
        namespace: String,
        /// Host name.
        host: String,
        /// Client error.
        #[source]
        source: kube::Error,
    },
    /// The selector gave no ranking.
    #[error(transparent)]
    Select(#[from] SelectionError),
    /// Writing a release step on the host failed.
    #[error("releasing BareMetalHost {namespace}/{host} failed")]
    WriteRelease {
        /// Namespace.
        namespace: String,
        /// Host name.
        host: String,
        /// Client error.
        #[source]
        source: kube::Error,
    },
}

/// How a release stands, for the consumer's finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Releasing {
    /// No host names the consumer any more: its finalizer may go.
    Done,
    /// The host changed while a step was written; look again at once.
    Retry,
    /// The host is being cleaned; the text says which and how far.
    Waiting(String),
}

impl Releasing {
    /// Where two releases stand together: done when both are, looked at again at once if
    /// either asks, waiting otherwise.
    fn and(self, other: Releasing) -> Releasing {
        match (self, other) {
            (Releasing::Retry, _) | (_, Releasing::Retry) => Releasing::Retry,
            (Releasing::Waiting(message), _) | (_, Releasing::Waiting(message)) => {
                Releasing::Waiting(message)
            }
            (Releasing::Done, Releasing::Done) => Releasing::Done,
        }
    }
}

/// What a consumer asks the engine for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Who claims.
    pub consumer: Consumer,
    /// Which hosts qualify.
    pub wanted: Wanted,
    /// Labels of the consumer, shown to the selector.
    pub labels: BTreeMap<String, String>,
    /// Failure domain to place the host in, if any.
    pub failure_domain: Option<String>,
    /// Labels written on the host together with the claim (e.g. the cluster name).
    pub host_labels: BTreeMap<String, String>,
}

/// The engine's answer.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The consumer holds this host (just claimed, or held before).
    Held(Box<BareMetalHost>),
    /// No host can be claimed now; the text says why, for the consumer's condition.
    Waiting(String),
}

/// Claims hosts for consumers.
#[derive(Clone)]
pub struct ClaimEngine {
    client: Client,
    selectors: Selectors,
    attempts: usize,
}

impl ClaimEngine {
    /// An engine choosing hosts with `selectors`.
    pub fn new(client: Client, selectors: Selectors) -> Self {
        Self {
            client,
            selectors,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The hosts of `namespace`.
    pub fn hosts(&self, namespace: &str) -> Api<BareMetalHost> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The host `consumer` holds, if any: the first of [`Self::all_held`].
    pub async fn held(&self, consumer: &Consumer) -> Result<Option<BareMetalHost>, ClaimError> {
        Ok(self.all_held(consumer).await?.into_iter().next())
    }

    /// Every host whose `consumerRef` names `consumer`, the one to keep first.
    async fn all_held(&self, consumer: &Consumer) -> Result<Vec<BareMetalHost>, ClaimError> {
        let hosts = self.list(&consumer.namespace).await?;
        Ok(naming(hosts, consumer))
    }

    /// Returns the host `request.consumer` holds, or claims one.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Claim, ClaimError> {
        let namespace = &request.consumer.namespace;

        for _ in 0..self.attempts {
            let hosts = self.list(namespace).await?;
            let usage = domain_usage(&hosts, &request.host_labels);
            let sorted = Sorted::new(hosts, &request.consumer, &request.wanted);
            if let Some(host) = sorted.mine {
                return self.keep(host, &sorted.extra, &request.consumer).await;
            }

            let candidates = match candidates(sorted) {
                Ok(candidates) => candidates,
                Err(reason) => return Ok(Claim::Waiting(reason)),
            };
            let (order, rejected) = self.rank(request, &candidates, usage).await?;
            if order.is_empty() {
                let selector = self.selectors.for_namespace(namespace).name().to_owned();
                return Ok(Claim::Waiting(format!(
                    "selector {selector} accepted none of the {} available hosts{}",
                    candidates.len(),
                    rejection_summary(&rejected)
                )));
            }

            for host in order {
                if let Some(claimed) = self.take(host, request).await? {
                    return self.keep_unless_doubled(claimed, request).await;
                }
            }
        }

        Ok(Claim::Waiting(format!(
            "lost the race for every ranked host {} times in a row; retrying",
            self.attempts
        )))
    }

    /// Sends a guarded patch built for `host`; `None` when the host changed or vanished since
    /// it was read (the caller reads it again and recomputes).
    pub async fn write(
        &self,
        host: &BareMetalHost,
        patch: &Value,
    ) -> Result<Option<BareMetalHost>, kube::Error> {
        let namespace = host.namespace().unwrap_or_default();
        let written = self
            .hosts(&namespace)
            .patch(&host.name_any(), &patch_params(), &Patch::Merge(patch))
            .await;

        match written {
            Ok(host) => Ok(Some(host)),
            Err(error) if lost_race(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Takes one release step for every host `consumer` holds (see [`crate::hostspec`]):
    /// `options` apply to the host it keeps, [`extra_release`] to any other.
    pub async fn release(
        &self,
        consumer: &Consumer,
        options: &ReleaseOptions,
    ) -> Result<Releasing, ClaimError> {
        let mut held = self.all_held(consumer).await?.into_iter();
        let Some(kept) = held.next() else {
            return Ok(Releasing::Done);
        };

        let mut releasing = self.release_one(&kept, consumer, options).await?;
        for extra in held {
            let step = self.release_one(&extra, consumer, &extra_release()).await?;
            releasing = releasing.and(step);
        }
        Ok(releasing)
    }

    /// Keeps `host` for `consumer` and starts handing back `extras`, the other hosts naming
    /// it (a deployed one is cleaned first; each step's host events wake the consumer for the
    /// next). While extras are left the consumer waits, unless `host` already has its
    /// deployment: a deployment is only ever written on a host the consumer holds alone.
    async fn keep(
        &self,
        host: BareMetalHost,
        extras: &[BareMetalHost],
        consumer: &Consumer,
    ) -> Result<Claim, ClaimError> {
        for extra in extras {
            tracing::info!(%consumer, kept = %host.name_any(), host = %extra.name_any(), "the consumer is named by more than one host after a claim race; handing this one back");
            self.release_one(extra, consumer, &extra_release()).await?;
        }

        if extras.is_empty() || has_deployment(&host) {
            return Ok(Claim::Held(Box::new(host)));
        }
        let names: Vec<String> = extras.iter().map(ResourceExt::name_any).collect();
        Ok(Claim::Waiting(format!(
            "controller instances claimed several hosts for it at the same time; keeping {}, \
             handing back {}",
            host.name_any(),
            names.join(", ")
        )))
    }

    async fn release_one(
        &self,
        host: &BareMetalHost,
        consumer: &Consumer,
        options: &ReleaseOptions,
    ) -> Result<Releasing, ClaimError> {
        let name = host.name_any();

        let (patch, step) = release_step(host, consumer, options);
        if let Some(patch) = patch {
            let written =
                self.write(host, &patch)
                    .await
                    .map_err(|source| ClaimError::WriteRelease {
                        namespace: consumer.namespace.clone(),
                        host: name.clone(),
                        source,
                    })?;
            if written.is_none() {
                return Ok(Releasing::Retry);
            }
        }

        Ok(match step {
            ReleaseStep::Released => {
                tracing::info!(%consumer, host = %name, "released host");
                Releasing::Done
            }
            ReleaseStep::Cleared => Releasing::Waiting(format!("clearing host {name}")),
            ReleaseStep::Waiting(state) => Releasing::Waiting(format!(
                "waiting for host {name} to be deprovisioned (now {state:?})"
            )),
        })
    }

    async fn list(&self, namespace: &str) -> Result<Vec<BareMetalHost>, ClaimError> {
        let listed = self.hosts(namespace).list(&ListParams::default()).await;

        listed
            .map(|list| list.items)
            .map_err(|source| ClaimError::ListHosts {
                namespace: namespace.to_owned(),
                source,
            })
    }

    /// The candidates in the order the namespace's selector prefers them, and the hosts it
    /// refused with its reasons.
    async fn rank(
        &self,
        request: &ClaimRequest,
        hosts: &[BareMetalHost],
        domain_usage: BTreeMap<String, u32>,
    ) -> Result<(Vec<BareMetalHost>, Vec<(String, String)>), ClaimError> {
        let candidates: Vec<Candidate> = hosts.iter().map(candidate).collect();
        let selection = selection_request(request, &candidates, domain_usage);
        let selector = self.selectors.for_namespace(&request.consumer.namespace);

        let ranking = selector.select(&selection, &candidates).await?;

        let by_name = |name: &str| hosts.iter().find(|host| host.name_any() == name).cloned();
        let order = ranking
            .ranked
            .iter()
            .filter_map(|ranked| by_name(&ranked.name))
            .collect();
        Ok((order, ranking.rejected))
    }

    /// Keeps a freshly claimed host unless the consumer turns out to hold one to keep instead.
    ///
    /// The host lock cannot stop two controller instances from claiming two different hosts
    /// for the same consumer at once. Each claimant therefore looks again after its claim. A
    /// claimant whose host comes first in [`keep_order`] keeps it, and the consumer waits until
    /// it is the only host left; any other hands its host back, guarded by the resourceVersion
    /// it wrote. The consumer's next look hands back whatever a lost hand-back left.
    async fn keep_unless_doubled(
        &self,
        claimed: BareMetalHost,
        request: &ClaimRequest,
    ) -> Result<Claim, ClaimError> {
        let name = claimed.name_any();
        let namespace = &request.consumer.namespace;
        let hosts = self.list(namespace).await?;
        let mut held = naming(hosts, &request.consumer).into_iter();
        if let Some(kept) = held.next().filter(|kept| kept.name_any() == name) {
            let extras: Vec<BareMetalHost> = held.collect();
            if extras.is_empty() {
                tracing::info!(consumer = %request.consumer, host = %name, "claimed host");
            }
            return self.keep(kept, &extras, &request.consumer).await;
        }

        let undo = unclaim_patch(&claimed, request);
        let handed_back =
            self.write(&claimed, &undo)
                .await
                .map_err(|source| ClaimError::WriteRelease {
                    namespace: namespace.clone(),
                    host: name.clone(),
                    source,
                })?;
        tracing::info!(consumer = %request.consumer, host = %name, handed_back = handed_back.is_some(), "another instance claimed a host for this consumer at the same time; handing this one back");
        Ok(Claim::Waiting(format!(
            "claimed host {name} at the same time as another controller instance claimed \
             one; handed {name} back"
        )))
    }

    /// Writes the claim on `host` if nobody wrote the host since it was listed; `None` when
    /// another writer got there first.
    async fn take(
        &self,
        host: BareMetalHost,
        request: &ClaimRequest,
    ) -> Result<Option<BareMetalHost>, ClaimError> {
        let name = host.name_any();
        let patch = claim_patch(&host, request);

        let written = self
            .hosts(&request.consumer.namespace)
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await;

        match written {
            Ok(host) => Ok(Some(host)),
            Err(error) if lost_race(&error) => {
                tracing::debug!(consumer = %request.consumer, host = %name, "host changed under the claim; trying the next one");
                Ok(None)
            }
            Err(source) => Err(ClaimError::WriteClaim {
                namespace: request.consumer.namespace.clone(),
                host: name,
                source,
            }),
        }
    }
}

/// The hosts whose `consumerRef` names `consumer`, the one to keep first.
fn naming(hosts: Vec<BareMetalHost>, consumer: &Consumer) -> Vec<BareMetalHost> {
    let mut held: Vec<BareMetalHost> = hosts
        .into_iter()
        .filter(|host| consumer.is_named_by(host))
        .collect();
    keep_order(&mut held);
    held
}

/// How a host named by a consumer besides the one it keeps is handed back: powered off and
/// free for anyone, never booked for reuse, as it was never meant to be the consumer's.
fn extra_release() -> ReleaseOptions {
    ReleaseOptions::default()
}

/// Undoes [`claim_patch`] on a host claimed a moment ago, guarded by the `resourceVersion`
/// the claim produced.
fn unclaim_patch(host: &BareMetalHost, request: &ClaimRequest) -> Value {
    let labels: Map<String, Value> = request
        .host_labels
        .keys()
        .map(|key| (key.clone(), Value::Null))
        .collect();

    json!({
        "metadata": {
            "resourceVersion": host.resource_version(),
            "labels": labels,
        },
        "spec": { "consumerRef": null },
    })
}

/// Which consumers of kind `K` a host event concerns: the one its `consumerRef` names; for a
/// free, available host, every consumer of its namespace that `waiting` says holds no host
/// yet (so a freed host is taken at once instead of at the next periodic look).
pub fn consumers_to_wake<K>(
    host: &BareMetalHost,
    store: &kube::runtime::reflector::Store<K>,
    waiting: impl Fn(&K) -> bool,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = host.namespace().unwrap_or_default();
    if let Some(reference) = &host.spec.consumer_ref {
        let ours = reference.kind.as_deref() == Some(K::kind(&()).as_ref());
        return reference
            .name
            .iter()
            .filter(|_| ours)
            .map(|name| kube::runtime::reflector::ObjectRef::new(name).within(&namespace))
            .collect();
    }
    if !crate::eligibility::is_available(host) {
        return Vec::new();
    }

    store
        .state()
        .iter()
        .filter(|consumer| consumer.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|consumer| waiting(consumer))
        .map(|consumer| kube::runtime::reflector::ObjectRef::from_obj(consumer.as_ref()))
        .collect()
}

/// Parameters of every patch the machine loop sends.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Whether a write failed because the object changed (409) or vanished (404) since it was
/// read: normal contention, never a failure of the consumer.
pub fn lost_race(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 || status.code == 404)
}

/// Which hosts may be claimed now, or why none.
///
/// Hosts reserved for the consumer's machine group come first: while any of them is still
/// being cleaned the consumer waits for it rather than taking a fresh host.
fn candidates(sorted: Sorted) -> Result<Vec<BareMetalHost>, String> {
    if !sorted.reusable.is_empty() {
        if let Some((host, _)) = sorted.reusable.iter().find(|(_, ready)| !ready) {
            return Err(format!(
                "waiting for host {} reserved for reuse to become available (now {:?})",
                host.name_any(),
                state(host)
            ));
        }
        return Ok(sorted.reusable.into_iter().map(|(host, _)| host).collect());
    }

    if sorted.available.is_empty() {
        return Err(sorted.explain());
    }
    Ok(sorted.available)
}

/// How many hosts of the claimant's group are held per failure domain (hosts outside any
/// domain count under the empty name). The group is the set of held hosts carrying every label
/// the claim writes (for a Metal3Machine, its cluster name); a claim writing no labels has no
/// group.
fn domain_usage(
    hosts: &[BareMetalHost],
    group_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, u32> {
    let mut usage = BTreeMap::new();
    if group_labels.is_empty() {
        return usage;
    }

    let in_group = |host: &&BareMetalHost| {
        host.spec.consumer_ref.is_some()
            && group_labels
                .iter()
                .all(|(key, value)| host.labels().get(key) == Some(value))
    };
    for host in hosts.iter().filter(in_group) {
        let domain = host.labels().get(FAILURE_DOMAIN_LABEL).cloned();
        *usage.entry(domain.unwrap_or_default()).or_insert(0) += 1;
    }
    usage
}

/// The first few refusals, for a waiting message.
fn rejection_summary(rejected: &[(String, String)]) -> String {
    const SHOWN: usize = 3;
    if rejected.is_empty() {
        return String::new();
    }

    let shown: Vec<String> = rejected
        .iter()
        .take(SHOWN)
        .map(|(host, reason)| format!("{host}: {reason}"))
        .collect();
    let more = rejected.len().saturating_sub(SHOWN);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!(" ({}{tail})", shown.join("; "))
}

fn candidate(host: &BareMetalHost) -> Candidate {
    Candidate {
        name: host.name_any(),
        uid: host.uid().unwrap_or_default(),
        labels: host.labels().clone(),
        failure_domain: host.labels().get(FAILURE_DOMAIN_LABEL).cloned(),
        hardware: host
            .status
            .as_ref()
            .and_then(|status| status.hardware.clone()),
        bmc_scheme: host
            .spec
            .bmc
            .as_ref()
            .and_then(|bmc| ingot_api::bmc::parse(&bmc.address).ok())
            .map(|address| address.scheme),
    }
}

/// The selector's request. A failure domain no candidate is in is dropped, so the claim falls
/// back to any host instead of waiting forever (Metal3 does the same).
fn selection_request(
    request: &ClaimRequest,
    candidates: &[Candidate],
    domain_usage: BTreeMap<String, u32>,
) -> SelectionRequest {
    let domain_has_hosts = |domain: &String| {
        candidates
            .iter()
            .any(|candidate| candidate.failure_domain.as_ref() == Some(domain))
    };

    SelectionRequest {
        namespace: request.consumer.namespace.clone(),
        identity: request.consumer.identity(),
        labels: request.labels.clone(),
        query: request.wanted.query.clone(),
        failure_domain: request.failure_domain.clone().filter(domain_has_hosts),
        domain_usage,
    }
}

/// The claim: the consumer reference and the claim's labels, guarded by the listed
/// `resourceVersion`; a node-reuse reservation is consumed by the claim.
fn claim_patch(host: &BareMetalHost, request: &ClaimRequest) -> Value {
    let mut labels: Map<String, Value> = request
        .host_labels
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    if host.labels().contains_key(NODE_REUSE_LABEL) {
        labels.insert(NODE_REUSE_LABEL.to_owned(), Value::Null);
    }

    json!({
        "metadata": {
            "resourceVersion": host.resource_version(),
            "labels": labels,
        },
        "spec": { "consumerRef": request.consumer.reference() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, labels: &[(&str, &str)], consumer: Option<&str>) -> BareMetalHost {
        serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {
                "name": name,
                "labels": labels.iter().copied().collect::<BTreeMap<_, _>>(),
            },
            "spec": {
                "online": false,
                "consumerRef": consumer.map(|name| json!({ "kind": "Metal3Machine", "name": name })),
            },
        }))
        .unwrap_or_else(|error| panic!("host {name}: {error}"))
    }

    #[test]
    fn domain_usage_counts_the_held_hosts_of_the_group() {
        let cluster = ("cluster.x-k8s.io/cluster-name", "lab");
        let hosts = [
            host(
                "a",
                &[cluster, (FAILURE_DOMAIN_LABEL, "rack-1")],
                Some("m1"),
            ),
            host(
                "b",
                &[cluster, (FAILURE_DOMAIN_LABEL, "rack-1")],
                Some("m2"),
            ),
            host("c", &[cluster], Some("m3")),
            host("d", &[(FAILURE_DOMAIN_LABEL, "rack-1")], Some("other")),
            host("e", &[cluster, (FAILURE_DOMAIN_LABEL, "rack-2")], None),
        ];
        let group = BTreeMap::from([(cluster.0.to_owned(), cluster.1.to_owned())]);

        let usage = domain_usage(&hosts, &group);

        assert_eq!(
            usage,
            BTreeMap::from([("".to_owned(), 1), ("rack-1".to_owned(), 2)])
        );
        assert!(domain_usage(&hosts, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_waiting_message_names_the_first_refusals() {
        let rejected: Vec<(String, String)> = (0..5)
            .map(|i| (format!("h{i}"), "fewer than 8 CPUs".to_owned()))
            .collect();

        assert_eq!(rejection_summary(&[]), "");
        assert_eq!(
            rejection_summary(&rejected),
            " (h0: fewer than 8 CPUs; h1: fewer than 8 CPUs; h2: fewer than 8 CPUs; and 2 more)"
        );
    }
}
