//! What a consumer writes on the host it holds, and how it lets the host go.
//!
//! The machine loop only writes the host's spec and reads its status; the host controller
//! does the provisioning. Every write here carries the `resourceVersion` of the host it was
//! computed from, after checking that the host's `consumerRef` still names the consumer, so a
//! consumer can never write over a host someone else holds.
//!
//! # Release
//!
//! 1. Clear image, custom deploy, user, meta and network data and set the power (off unless
//!    the host must stay on) in one patch: the host controller deprovisions and cleans.
//! 2. Wait until the host is back to `available` (or powered off, for an externally
//!    provisioned host).
//! 3. Drop `consumerRef` (or book the host for the machine group's reuse), the cluster label
//!    and a pause this loop set. Only then may the consumer's finalizer go, so its owner stays
//!    in deletion until the host is clean.

use ingot_api::metal3::{
    AutomatedCleaningMode, BareMetalHost, CustomDeploy, Image, ProvisioningState,
};
use k8s_openapi::api::core::v1::{ObjectReference, SecretReference};
use kube::ResourceExt;
use serde_json::{Map, Value, json};

use crate::eligibility::{Consumer, NODE_REUSE_LABEL, PAUSED_ANNOTATION, state};

/// Label naming the Cluster API cluster a host serves.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Value of [`PAUSED_ANNOTATION`] when this loop paused the host (a cluster move); a pause
/// with any other value was set by someone else and is left alone.
pub const PAUSED_BY_MACHINE_LOOP: &str = "metal3.io/capm3";

/// What a consumer wants its host to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployment {
    /// Image to write.
    pub image: Option<Image>,
    /// Custom deploy step instead of an image.
    pub custom_deploy: Option<CustomDeploy>,
    /// User data Secret (in the host's namespace).
    pub user_data: Option<SecretReference>,
    /// Meta data Secret.
    pub meta_data: Option<SecretReference>,
    /// Network data Secret.
    pub network_data: Option<SecretReference>,
    /// Cleaning mode to set on the host, when the consumer has an opinion.
    pub automated_cleaning_mode: Option<AutomatedCleaningMode>,
    /// Desired power state.
    pub online: bool,
}

/// The patch bringing `host` to `deployment`, or `None` when it is already there.
///
/// The image and data are written only while the host has none: an imaged host is never
/// re-imaged in place (changing the image means replacing the consumer). Power and cleaning
/// mode are asserted on every call.
pub fn deployment_patch(host: &BareMetalHost, deployment: &Deployment) -> Option<Value> {
    let mut spec = Map::new();
    let namespace = host.namespace().unwrap_or_default();
    let has_payload = host.spec.image.is_some() || host.spec.custom_deploy.is_some();
    let wants_payload = deployment.image.is_some() || deployment.custom_deploy.is_some();

    if !has_payload && wants_payload {
        insert(&mut spec, "image", &deployment.image);
        insert(&mut spec, "customDeploy", &deployment.custom_deploy);
        for (field, secret) in [
            ("userData", &deployment.user_data),
            ("metaData", &deployment.meta_data),
            ("networkData", &deployment.network_data),
        ] {
            insert(
                &mut spec,
                field,
                &secret
                    .clone()
                    .map(|secret| in_namespace(secret, &namespace)),
            );
        }
    }

    if let Some(mode) = deployment.automated_cleaning_mode
        && host.spec.automated_cleaning_mode != Some(mode)
    {
        insert(&mut spec, "automatedCleaningMode", &Some(mode));
    }
    if host.spec.online != deployment.online {
        spec.insert("online".to_owned(), Value::Bool(deployment.online));
    }

    (!spec.is_empty()).then(|| guarded(host, json!({ "spec": spec })))
}

fn insert<T: serde::Serialize>(spec: &mut Map<String, Value>, field: &str, value: &Option<T>) {
    if let Some(value) = value
        && let Ok(value) = serde_json::to_value(value)
    {
        spec.insert(field.to_owned(), value);
    }
}

fn in_namespace(mut secret: SecretReference, namespace: &str) -> SecretReference {
    secret.namespace = Some(namespace.to_owned());
    secret
}

/// Adds the host's `resourceVersion` to `patch`, so it applies only to that version.
fn guarded(host: &BareMetalHost, mut patch: Value) -> Value {
    patch["metadata"]["resourceVersion"] = json!(host.resource_version());
    patch
}

/// How a release stands after one step.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseStep {
    /// The host's image and data were cleared just now; look again soon.
    Cleared,
    /// The host is still being deprovisioned or powered off.
    Waiting(ProvisioningState),
    /// The host no longer names the consumer; the consumer may go.
    Released,
}

/// How a host is handed back.
#[derive(Debug, Clone, Default)]
pub struct ReleaseOptions {
    /// Keep hosts powered on after deprovisioning so the next provisioning starts faster
    /// (skipped when cleaning is disabled, as there is nothing to keep the agent up for).
    pub fast_track: bool,
    /// Book the host for the consumer's machine group instead of freeing it.
    pub reuse: Option<Reservation>,
}

/// A node-reuse booking: the host stays referenced (by the cluster) so other consumers skip
/// it, and is labelled for the group that may claim it again.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Value of the node-reuse label.
    pub group: String,
    /// The object the host's `consumerRef` points at while booked (the Cluster).
    pub holder: ObjectReference,
}

/// The next release step for `host`, as a patch to send (if any) and the resulting step.
/// `host` must be held by `consumer`; a host held by someone else is already released.
pub fn release_step(
    host: &BareMetalHost,
    consumer: &Consumer,
    options: &ReleaseOptions,
) -> (Option<Value>, ReleaseStep) {
    if !consumer.is_named_by(host) {
        return (None, ReleaseStep::Released);
    }

    if let Some(patch) = clearing_patch(host, options) {
        return (Some(patch), ReleaseStep::Cleared);
    }

    if still_busy(host) {
        return (None, ReleaseStep::Waiting(state(host)));
    }

    (Some(unclaim_patch(host, options)), ReleaseStep::Released)
}

fn clearing_patch(host: &BareMetalHost, options: &ReleaseOptions) -> Option<Value> {
    let spec = &host.spec;
    let mut patch = Map::new();

    for (field, set) in [
        ("image", spec.image.is_some()),
        ("customDeploy", spec.custom_deploy.is_some()),
        ("userData", spec.user_data.is_some()),
        ("metaData", spec.meta_data.is_some()),
        ("networkData", spec.network_data.is_some()),
    ] {
        if set {
            patch.insert(field.to_owned(), Value::Null);
        }
    }

    let online = stays_on(host, options);
    if spec.online != online {
        patch.insert("online".to_owned(), Value::Bool(online));
    }

    (!patch.is_empty()).then(|| guarded(host, json!({ "spec": patch })))
}

/// Whether the host stays powered on once released.
fn stays_on(host: &BareMetalHost, options: &ReleaseOptions) -> bool {
    let cleaning = host.spec.automated_cleaning_mode.unwrap_or_default();

    host.spec.disable_power_off == Some(true)
        || (options.fast_track && cleaning != AutomatedCleaningMode::Disabled)
}

/// Whether the host controller is still working the host back from its last deployment.
fn still_busy(host: &BareMetalHost) -> bool {
    match state(host) {
        ProvisioningState::Preparing
        | ProvisioningState::Provisioning
        | ProvisioningState::Provisioned
        | ProvisioningState::Deprovisioning
        | ProvisioningState::PoweringOffBeforeDelete
        | ProvisioningState::Deleting => true,
        ProvisioningState::ExternallyProvisioned => {
            host.status.as_ref().is_some_and(|status| status.powered_on)
        }
        ProvisioningState::None
        | ProvisioningState::Unmanaged
        | ProvisioningState::Registering
        | ProvisioningState::MatchProfile
        | ProvisioningState::Ready
        | ProvisioningState::Available
        | ProvisioningState::Inspecting => false,
    }
}

fn unclaim_patch(host: &BareMetalHost, options: &ReleaseOptions) -> Value {
    let mut labels = Map::new();
    if host.labels().contains_key(CLUSTER_NAME_LABEL) {
        labels.insert(CLUSTER_NAME_LABEL.to_owned(), Value::Null);
    }

    let consumer_ref = match &options.reuse {
        Some(reservation) => {
            labels.insert(NODE_REUSE_LABEL.to_owned(), json!(reservation.group));
            json!(reservation.holder)
        }
        None => Value::Null,
    };

    let mut metadata = json!({ "labels": labels });
    let paused_by_us = host
        .annotations()
        .get(PAUSED_ANNOTATION)
        .map(String::as_str)
        == Some(PAUSED_BY_MACHINE_LOOP);
    if paused_by_us {
        metadata["annotations"] = json!({ PAUSED_ANNOTATION: null });
    }

    guarded(
        host,
        json!({ "metadata": metadata, "spec": { "consumerRef": consumer_ref } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_api::metal3::{BareMetalHostSpec, BareMetalHostStatus, ProvisionStatus};

    fn consumer() -> Consumer {
        Consumer {
            group: "metal3.io".into(),
            api_version: "metal3.io/v1alpha1".into(),
            kind: "HostClaim".into(),
            namespace: "lab".into(),
            name: "c1".into(),
            uid: None,
        }
    }

    fn host(state: ProvisioningState) -> BareMetalHost {
        let mut host = BareMetalHost::new("h1", BareMetalHostSpec::default());
        host.metadata.namespace = Some("lab".into());
        host.metadata.resource_version = Some("42".into());
        host.spec.consumer_ref = Some(consumer().reference());
        host.status = Some(BareMetalHostStatus {
            provisioning: ProvisionStatus {
                state,
                ..ProvisionStatus::default()
            },
            ..BareMetalHostStatus::default()
        });
        host
    }

    fn deployment() -> Deployment {
        Deployment {
            image: Some(Image {
                url: "http://images.lab/os.qcow2".into(),
                checksum: Some("abc".into()),
                ..Image::default()
            }),
            user_data: Some(SecretReference {
                name: Some("bootstrap".into()),
                namespace: None,
            }),
            online: true,
            ..Deployment::default()
        }
    }

    #[test]
    fn deployment_is_written_once_with_the_version_it_was_computed_from() {
        let fresh = host(ProvisioningState::Available);

        let patch = deployment_patch(&fresh, &deployment()).expect("a patch");

        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["spec"]["image"]["url"], "http://images.lab/os.qcow2");
        assert_eq!(
            patch["spec"]["userData"],
            json!({"name": "bootstrap", "namespace": "lab"})
        );
        assert_eq!(patch["spec"]["online"], true);

        let mut imaged = fresh;
        imaged.spec.image = deployment().image;
        imaged.spec.online = true;
        let mut other_image = deployment();
        if let Some(image) = other_image.image.as_mut() {
            image.url = "http://images.lab/other.qcow2".into();
        }
        assert_eq!(
            deployment_patch(&imaged, &other_image),
            None,
            "never re-imaged in place"
        );
    }

    #[test]
    fn release_clears_then_waits_then_unclaims() {
        let mut provisioned = host(ProvisioningState::Provisioned);
        provisioned.spec.image = deployment().image;
        provisioned.spec.user_data = deployment().user_data;
        provisioned.spec.online = true;

        let (patch, step) = release_step(&provisioned, &consumer(), &ReleaseOptions::default());
        assert_eq!(step, ReleaseStep::Cleared);
        let patch = patch.expect("clearing patch");
        assert_eq!(
            patch["spec"],
            json!({"image": null, "userData": null, "online": false})
        );

        let mut cleared = host(ProvisioningState::Deprovisioning);
        cleared.spec.online = false;
        let (patch, step) = release_step(&cleared, &consumer(), &ReleaseOptions::default());
        assert_eq!(
            (patch, step),
            (
                None,
                ReleaseStep::Waiting(ProvisioningState::Deprovisioning)
            )
        );

        let mut clean = host(ProvisioningState::Available);
        clean
            .annotations_mut()
            .insert(PAUSED_ANNOTATION.into(), PAUSED_BY_MACHINE_LOOP.into());
        let (patch, step) = release_step(&clean, &consumer(), &ReleaseOptions::default());
        assert_eq!(step, ReleaseStep::Released);
        let patch = patch.expect("unclaim patch");
        assert_eq!(patch["spec"]["consumerRef"], Value::Null);
        assert_eq!(
            patch["metadata"]["annotations"][PAUSED_ANNOTATION],
            Value::Null
        );
    }

    #[test]
    fn power_after_release_follows_fast_track_cleaning_and_disable_power_off() {
        let fast = ReleaseOptions {
            fast_track: true,
            ..ReleaseOptions::default()
        };
        let mut on = host(ProvisioningState::Provisioned);
        on.spec.online = true;

        assert!(!stays_on(&on, &ReleaseOptions::default()));
        assert!(stays_on(&on, &fast));
        on.spec.automated_cleaning_mode = Some(AutomatedCleaningMode::Disabled);
        assert!(!stays_on(&on, &fast));
        on.spec.disable_power_off = Some(true);
        assert!(stays_on(&on, &ReleaseOptions::default()));
    }

    #[test]
    fn a_pause_set_by_someone_else_survives_release() {
        let mut clean = host(ProvisioningState::Available);
        clean
            .annotations_mut()
            .insert(PAUSED_ANNOTATION.into(), "operator-maintenance".into());

        let (patch, _) = release_step(&clean, &consumer(), &ReleaseOptions::default());

        assert!(
            patch.expect("unclaim patch")["metadata"]
                .get("annotations")
                .is_none()
        );
    }

    #[test]
    fn reuse_books_the_host_for_the_group() {
        let clean = host(ProvisioningState::Available);
        let holder = ObjectReference {
            kind: Some("Cluster".into()),
            name: Some("c".into()),
            ..ObjectReference::default()
        };
        let options = ReleaseOptions {
            reuse: Some(Reservation {
                group: "md-workers".into(),
                holder,
            }),
            ..ReleaseOptions::default()
        };

        let (patch, _) = release_step(&clean, &consumer(), &options);
        let patch = patch.expect("unclaim patch");

        assert_eq!(patch["metadata"]["labels"][NODE_REUSE_LABEL], "md-workers");
        assert_eq!(patch["spec"]["consumerRef"]["kind"], "Cluster");
    }

    #[test]
    fn externally_provisioned_hosts_wait_for_power_off_only() {
        let mut external = host(ProvisioningState::ExternallyProvisioned);
        if let Some(status) = external.status.as_mut() {
            status.powered_on = true;
        }
        assert!(still_busy(&external));
        if let Some(status) = external.status.as_mut() {
            status.powered_on = false;
        }
        assert!(!still_busy(&external));
    }
}
