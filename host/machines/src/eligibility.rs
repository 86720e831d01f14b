//! Which hosts a consumer may claim, by Metal3's rules.
//!
//! Every listed host gets one [`Verdict`], checked in Metal3's order:
//!
//! 1. a host whose `consumerRef` names this consumer is [`Verdict::Mine`], whatever its state
//!    or labels: the reference is the lock, and finding it again is how a claim interrupted
//!    half-way is completed (should a claim race have left two such hosts, every controller
//!    instance keeps the same one, see [`keep_order`]);
//! 2. the host selector must match;
//! 3. a host carrying the node-reuse label belongs to the machine group named by its value; a
//!    host without it but with any `consumerRef` is claimed by someone else;
//! 4. hosts being deleted, in error, paused, or marked unhealthy by remediation are skipped;
//! 5. a reserved host of this consumer's group is reusable in any state (the caller waits for
//!    it to become available); any other host must be `available` (or the older `ready`).

use std::collections::BTreeMap;
use std::fmt;

use ingot_api::metal3::{BareMetalHost, ProvisioningState};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;

use crate::labels::LabelQuery;

/// Label reserving a released host for the machine group named by its value
/// (`cp-<control plane>` or `md-<machine deployment>`).
pub const NODE_REUSE_LABEL: &str = "infrastructure.cluster.x-k8s.io/node-reuse";
/// Label placing a host in a failure domain.
pub const FAILURE_DOMAIN_LABEL: &str = "infrastructure.cluster.x-k8s.io/failure-domain";
/// Annotation pausing the host controller; any value.
pub const PAUSED_ANNOTATION: &str = "baremetalhost.metal3.io/paused";
/// Annotation set by remediation on a host that must not be claimed again until a person
/// removes it.
pub const UNHEALTHY_ANNOTATION: &str = "capm3.metal3.io/unhealthy";
/// The older spelling of [`UNHEALTHY_ANNOTATION`], still honoured.
pub const LEGACY_UNHEALTHY_ANNOTATION: &str = "capi.metal3.io/unhealthy";

/// The object claiming hosts: a Metal3Machine or a HostClaim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// API group, e.g. `infrastructure.cluster.x-k8s.io`.
    pub group: String,
    /// Full API version written into the host's `consumerRef`.
    pub api_version: String,
    /// Kind, e.g. `Metal3Machine`.
    pub kind: String,
    /// Namespace; hosts are claimed in the same namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, recorded in the reference for humans and tools; not used to match.
    pub uid: Option<String>,
}

impl Consumer {
    /// Whether `reference` names this consumer: same name, namespace, kind and API group
    /// (the version may differ, since a consumer can be read in several versions).
    pub fn is(&self, reference: &ObjectReference) -> bool {
        let group = reference
            .api_version
            .as_deref()
            .map(|version| version.rsplit_once('/').map_or("", |(group, _)| group));

        reference.name.as_deref() == Some(self.name.as_str())
            && reference.namespace.as_deref() == Some(self.namespace.as_str())
            && reference.kind.as_deref() == Some(self.kind.as_str())
            && group == Some(self.group.as_str())
    }

    /// Whether `host`'s `consumerRef` names this consumer: the host is held by it.
    pub fn is_named_by(&self, host: &BareMetalHost) -> bool {
        host.spec
            .consumer_ref
            .as_ref()
            .is_some_and(|reference| self.is(reference))
    }

    /// The reference written into a claimed host's `consumerRef`.
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }

    /// `namespace/name`, stable across retries; selectors break ties with it.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why a host cannot be claimed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Its labels do not satisfy the host selector.
    SelectorMismatch,
    /// Another consumer holds it.
    ClaimedByOther,
    /// It is reserved for another machine group's reuse.
    ReservedForOtherGroup,
    /// It is being deleted.
    Deleting,
    /// Its last operation failed.
    InError,
    /// The host controller is paused for it.
    Paused,
    /// Remediation gave up on it.
    Unhealthy,
    /// It is not in the `available` state.
    NotAvailable,
}

impl SkipReason {
    /// Short phrase for condition messages, after a count ("3 claimed by other
    /// consumers").
    pub fn phrase(self) -> &'static str {
        match self {
            Self::SelectorMismatch => "not matching the host selector",
            Self::ClaimedByOther => "claimed by other consumers",
            Self::ReservedForOtherGroup => "reserved for another machine group",
            Self::Deleting => "being deleted",
            Self::InError => "in error",
            Self::Paused => "paused",
            Self::Unhealthy => "marked unhealthy",
            Self::NotAvailable => "not available yet",
        }
    }
}

/// What one host is to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its `consumerRef` names the consumer.
    Mine,
    /// It may be claimed.
    Available,
    /// It is reserved for the consumer's machine group; `ready` when it may be claimed now.
    Reusable {
        /// The host is available.
        ready: bool,
    },
    /// It cannot be claimed.
    Skipped(SkipReason),
}

/// What the consumer is looking for.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Host selector.
    pub query: LabelQuery,
    /// Value of [`NODE_REUSE_LABEL`] this consumer's group reserves hosts under, if any.
    pub reuse_group: Option<String>,
}

/// Judges one host for `consumer`.
pub fn judge(host: &BareMetalHost, consumer: &Consumer, wanted: &Wanted) -> Verdict {
    if consumer.is_named_by(host) {
        return Verdict::Mine;
    }

    if !wanted.query.matches(host.labels()) {
        return Verdict::Skipped(SkipReason::SelectorMismatch);
    }

    let reserved_for = host.labels().get(NODE_REUSE_LABEL);
    let reserved_for_us = reserved_for.is_some() && reserved_for == wanted.reuse_group.as_ref();
    if reserved_for.is_some() && !reserved_for_us {
        return Verdict::Skipped(SkipReason::ReservedForOtherGroup);
    }
    if reserved_for.is_none() && host.spec.consumer_ref.is_some() {
        return Verdict::Skipped(SkipReason::ClaimedByOther);
    }

    if let Some(reason) = unusable(host) {
        return Verdict::Skipped(reason);
    }

    let available = is_available(host);
    match (reserved_for_us, available) {
        (true, ready) => Verdict::Reusable { ready },
        (false, true) => Verdict::Available,
        (false, false) => Verdict::Skipped(SkipReason::NotAvailable),
    }
}

fn unusable(host: &BareMetalHost) -> Option<SkipReason> {
    let annotations = host.annotations();
    let in_error = host
        .status
        .as_ref()
        .is_some_and(|status| !status.error_message.is_empty());

    if host.metadata.deletion_timestamp.is_some() {
        Some(SkipReason::Deleting)
    } else if in_error {
        Some(SkipReason::InError)
    } else if annotations.contains_key(PAUSED_ANNOTATION) {
        Some(SkipReason::Paused)
    } else if annotations.contains_key(UNHEALTHY_ANNOTATION)
        || annotations.contains_key(LEGACY_UNHEALTHY_ANNOTATION)
    {
        Some(SkipReason::Unhealthy)
    } else {
        None
    }
}

/// The host's provisioning state, `None` before the host controller has seen it.
pub fn state(host: &BareMetalHost) -> ProvisioningState {
    host.status
        .as_ref()
        .map(|status| status.provisioning.state.canonical())
        .unwrap_or_default()
}

/// Whether the host is in the `available` state (or its older name, `ready`).
pub fn is_available(host: &BareMetalHost) -> bool {
    state(host) == ProvisioningState::Available
}

/// Orders the hosts naming one consumer so that the one to keep comes first.
///
/// A consumer holds one host, but two controller instances claiming for it at the same moment
/// can leave it named by two for a while. Every instance must then keep the same host and hand
/// back the others, whatever moment it looks: a host already given its deployment comes first
/// (only a host the consumer holds alone is given one, so there is at most one such host),
/// then the lowest name.
pub fn keep_order(held: &mut [BareMetalHost]) {
    held.sort_by_cached_key(|host| (!has_deployment(host), host.name_any()));
}

/// Whether the host was given an image or custom deployment to run.
pub fn has_deployment(host: &BareMetalHost) -> bool {
    host.spec.image.is_some() || host.spec.custom_deploy.is_some()
}

/// The hosts of one listing, sorted by verdict.
#[derive(Debug, Default)]
pub struct Sorted {
    /// The host this consumer already holds.
    pub mine: Option<BareMetalHost>,
    /// Other hosts naming this consumer, to be handed back (see [`keep_order`]).
    pub extra: Vec<BareMetalHost>,
    /// Hosts that may be claimed.
    pub available: Vec<BareMetalHost>,
    /// Hosts reserved for this consumer's group, with whether each is ready.
    pub reusable: Vec<(BareMetalHost, bool)>,
    /// How many hosts were skipped, per reason.
    pub skipped: BTreeMap<SkipReason, usize>,
}

impl Sorted {
    /// Sorts `hosts` for `consumer`.
    pub fn new(hosts: Vec<BareMetalHost>, consumer: &Consumer, wanted: &Wanted) -> Self {
        let mut sorted = Self::default();
        let mut held = Vec::new();

        for host in hosts {
            match judge(&host, consumer, wanted) {
                Verdict::Mine => held.push(host),
                Verdict::Available => sorted.available.push(host),
                Verdict::Reusable { ready } => sorted.reusable.push((host, ready)),
                Verdict::Skipped(reason) => *sorted.skipped.entry(reason).or_default() += 1,
            }
        }

        keep_order(&mut held);
        let mut held = held.into_iter();
        sorted.mine = held.next();
        sorted.extra = held.collect();
        sorted
    }

    /// Why nothing could be claimed, e.g. "no available host among 20: 20 claimed by other
    /// consumers".
    pub fn explain(&self) -> String {
        let total: usize = self.skipped.values().sum();
        if total == 0 {
            return "no BareMetalHost exists in the namespace".to_owned();
        }

        let reasons: Vec<String> = self
            .skipped
            .iter()
            .map(|(reason, count)| format!("{count} {}", reason.phrase()))
            .collect();
        format!("no available host among {total}: {}", reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_api::metal3::{BareMetalHostSpec, BareMetalHostStatus, ProvisionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn consumer(name: &str) -> Consumer {
        Consumer {
            group: "infrastructure.cluster.x-k8s.io".into(),
            api_version: "infrastructure.cluster.x-k8s.io/v1beta1".into(),
            kind: "Metal3Machine".into(),
            namespace: "lab".into(),
            name: name.into(),
            uid: None,
        }
    }

    fn host(state: ProvisioningState) -> BareMetalHost {
        let mut host = BareMetalHost::new("h", BareMetalHostSpec::default());
        host.metadata.namespace = Some("lab".into());
        host.status = Some(BareMetalHostStatus {
            provisioning: ProvisionStatus {
                state,
                ..ProvisionStatus::default()
            },
            ..BareMetalHostStatus::default()
        });
        host
    }

    fn with_consumer(mut host: BareMetalHost, reference: ObjectReference) -> BareMetalHost {
        host.spec.consumer_ref = Some(reference);
        host
    }

    #[test]
    fn only_available_hosts_are_claimable() {
        let wanted = Wanted::default();
        let me = consumer("m1");

        assert_eq!(
            judge(&host(ProvisioningState::Available), &me, &wanted),
            Verdict::Available
        );
        assert_eq!(
            judge(&host(ProvisioningState::Ready), &me, &wanted),
            Verdict::Available
        );
        for state in [
            ProvisioningState::None,
            ProvisioningState::Registering,
            ProvisioningState::Inspecting,
            ProvisioningState::Preparing,
            ProvisioningState::Provisioning,
            ProvisioningState::Provisioned,
            ProvisioningState::ExternallyProvisioned,
            ProvisioningState::Deprovisioning,
            ProvisioningState::Deleting,
        ] {
            assert_eq!(
                judge(&host(state), &me, &wanted),
                Verdict::Skipped(SkipReason::NotAvailable),
                "{state:?}"
            );
        }
    }

    #[test]
    fn of_two_hosts_naming_a_consumer_every_look_keeps_the_deployed_one_then_the_first_name() {
        let me = consumer("m1");
        let named = |name: &str| {
            let mut held = with_consumer(host(ProvisioningState::Available), me.reference());
            held.metadata.name = Some(name.into());
            held
        };
        let mut deployed = named("host-b");
        deployed.spec.image = Some(ingot_api::metal3::Image {
            url: "http://images.lab/os.img".into(),
            ..Default::default()
        });

        let both_bare = Sorted::new(
            vec![named("host-b"), named("host-a")],
            &me,
            &Wanted::default(),
        );
        let one_deployed = Sorted::new(vec![named("host-a"), deployed], &me, &Wanted::default());

        let names = |sorted: &Sorted| {
            let extra: Vec<String> = sorted.extra.iter().map(ResourceExt::name_any).collect();
            (sorted.mine.as_ref().map(ResourceExt::name_any), extra)
        };
        assert_eq!(
            names(&both_bare),
            (Some("host-a".into()), vec!["host-b".into()])
        );
        assert_eq!(
            names(&one_deployed),
            (Some("host-b".into()), vec!["host-a".into()])
        );
    }

    #[test]
    fn own_claim_is_found_in_any_state_and_version() {
        let me = consumer("m1");
        let mut reference = me.reference();
        reference.api_version = Some("infrastructure.cluster.x-k8s.io/v1beta2".into());
        let claimed = with_consumer(host(ProvisioningState::Provisioning), reference);

        assert_eq!(judge(&claimed, &me, &Wanted::default()), Verdict::Mine);
        assert_eq!(
            judge(&claimed, &consumer("m2"), &Wanted::default()),
            Verdict::Skipped(SkipReason::ClaimedByOther)
        );
    }

    #[test]
    fn same_name_of_another_kind_is_not_mine() {
        let me = consumer("m1");
        let mut reference = me.reference();
        reference.kind = Some("HostClaim".into());
        reference.api_version = Some("metal3.io/v1alpha1".into());
        let claimed = with_consumer(host(ProvisioningState::Available), reference);

        assert_eq!(
            judge(&claimed, &me, &Wanted::default()),
            Verdict::Skipped(SkipReason::ClaimedByOther)
        );
    }

    #[test]
    fn deleting_errored_paused_and_unhealthy_hosts_are_skipped() {
        let me = consumer("m1");
        let wanted = Wanted::default();

        let mut deleting = host(ProvisioningState::Available);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut errored = host(ProvisioningState::Available);
        if let Some(status) = errored.status.as_mut() {
            status.error_message = "power failed".into();
        }
        let mut paused = host(ProvisioningState::Available);
        paused
            .annotations_mut()
            .insert(PAUSED_ANNOTATION.into(), String::new());
        let mut unhealthy = host(ProvisioningState::Available);
        unhealthy
            .annotations_mut()
            .insert(LEGACY_UNHEALTHY_ANNOTATION.into(), "x".into());

        let verdicts = [&deleting, &errored, &paused, &unhealthy].map(|h| judge(h, &me, &wanted));
        assert_eq!(
            verdicts,
            [
                SkipReason::Deleting,
                SkipReason::InError,
                SkipReason::Paused,
                SkipReason::Unhealthy
            ]
            .map(Verdict::Skipped)
        );
    }

    #[test]
    fn reserved_hosts_go_to_their_group_only() {
        let me = consumer("m1");
        let cluster_ref = ObjectReference {
            api_version: Some("cluster.x-k8s.io/v1beta1".into()),
            kind: Some("Cluster".into()),
            name: Some("c1".into()),
            namespace: Some("lab".into()),
            ..ObjectReference::default()
        };
        let mut reserved = with_consumer(host(ProvisioningState::Deprovisioning), cluster_ref);
        reserved
            .labels_mut()
            .insert(NODE_REUSE_LABEL.into(), "md-workers".into());

        let ours = Wanted {
            reuse_group: Some("md-workers".into()),
            ..Wanted::default()
        };
        let theirs = Wanted {
            reuse_group: Some("cp-control".into()),
            ..Wanted::default()
        };

        assert_eq!(
            judge(&reserved, &me, &ours),
            Verdict::Reusable { ready: false }
        );
        assert_eq!(
            judge(&reserved, &me, &theirs),
            Verdict::Skipped(SkipReason::ReservedForOtherGroup)
        );
    }

    #[test]
    fn explanation_counts_each_reason() {
        let me = consumer("m1");
        let claimed = with_consumer(
            host(ProvisioningState::Provisioned),
            consumer("m2").reference(),
        );
        let hosts = vec![
            claimed.clone(),
            claimed,
            host(ProvisioningState::Inspecting),
        ];

        let sorted = Sorted::new(hosts, &me, &Wanted::default());

        assert!(sorted.available.is_empty());
        assert_eq!(
            sorted.explain(),
            "no available host among 3: 2 claimed by other consumers, 1 not available yet"
        );
    }
}
