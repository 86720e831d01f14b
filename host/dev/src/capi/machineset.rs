//! MachineSet: replicas into Machines (with their cloned Metal3Machines), surplus deleted in
//! upstream order, replica counts and selector in the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ingot_api::capi::v1beta2::{ContractReference, Machine, MachineSet, MachineSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::{
    CLONED_FROM_GROUP_KIND_ANNOTATION, CLONED_FROM_NAME_ANNOTATION, CLUSTER_NAME_LABEL,
    DELETE_MACHINE_ANNOTATION, Error, SET_NAME_LABEL, metal3_machine_resource,
    metal3_machine_template_resource,
};

/// Random characters appended to the set's name to name a Machine, as upstream does.
const NAME_SUFFIX_LENGTH: usize = 5;
/// How many names are tried before giving up on collisions.
const NAME_ATTEMPTS: usize = 8;
/// Kind the stand-in knows how to clone.
const TEMPLATE_KIND: &str = "Metal3MachineTemplate";

pub async fn run(
    client: Arc<Client>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let sets: Api<MachineSet> = Api::all((*client).clone());
    let machines: Api<Machine> = Api::all((*client).clone());
    Controller::new(sets, watcher::Config::default())
        .owns(machines, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, client)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error, "machineset stand-in event");
            }
        })
        .await;
}

fn error_policy(set: Arc<MachineSet>, error: &Error, _client: Arc<Client>) -> Action {
    tracing::warn!(machineset = %set.name_any(), error = %error, "machineset reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(set: Arc<MachineSet>, client: Arc<Client>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let machines: Api<Machine> = Api::namespaced((*client).clone(), &namespace);

    let owned = owned_machines(&machines, &set).await?;
    let desired = usize::try_from(set.spec.replicas.unwrap_or(1).max(0)).unwrap_or_default();
    if owned.len() < desired {
        for _ in owned.len()..desired {
            create_machine(&client, &set).await?;
        }
    } else {
        for machine in deletion_order(&owned)
            .into_iter()
            .take(owned.len() - desired)
        {
            delete_machine(&machines, &namespace, machine).await?;
        }
    }

    let owned = owned_machines(&machines, &set).await?;
    write_status(&client, &set, &owned).await?;
    tracing::debug!(machineset = %name, desired, current = owned.len(), "machineset reconciled");
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Machines controlled by `set`.
async fn owned_machines(machines: &Api<Machine>, set: &MachineSet) -> Result<Vec<Machine>, Error> {
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    let labelled = ListParams::default().labels(&format!("{SET_NAME_LABEL}={name}"));
    let list = machines
        .list(&labelled)
        .await
        .map_err(Error::api("list", "Machine", &namespace, &name))?;
    Ok(list
        .items
        .into_iter()
        .filter(|machine| {
            machine
                .owner_references()
                .iter()
                .any(|owner| owner.uid == uid && owner.controller == Some(true))
        })
        .collect())
}

/// The order upstream deletes Machines in on scale-down: Machines already being deleted,
/// then Machines annotated for deletion, then the rest (none has a Node here, so all rank as
/// unhealthy alike); ties broken by name.
pub fn deletion_order(machines: &[Machine]) -> Vec<&Machine> {
    let priority = |machine: &Machine| {
        if machine.metadata.deletion_timestamp.is_some() {
            100
        } else if machine
            .annotations()
            .contains_key(DELETE_MACHINE_ANNOTATION)
        {
            80
        } else {
            50
        }
    };
    let mut ordered: Vec<&Machine> = machines.iter().collect();
    ordered.sort_by(|a, b| {
        priority(b)
            .cmp(&priority(a))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    ordered
}

async fn delete_machine(
    machines: &Api<Machine>,
    namespace: &str,
    machine: &Machine,
) -> Result<(), Error> {
    if machine.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let name = machine.name_any();
    tracing::info!(machine = %name, "scaling down: deleting machine");
    match machines.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::api("delete", "Machine", namespace, &name)(source)),
    }
}

/// Creates one Machine from the set's template, then its Metal3Machine.
async fn create_machine(client: &Client, set: &MachineSet) -> Result<(), Error> {
    let namespace = set.namespace().unwrap_or_default();
    let set_name = set.name_any();
    let template = infrastructure_template(client, set).await?;
    let machines: Api<Machine> = Api::namespaced(client.clone(), &namespace);
    for _ in 0..NAME_ATTEMPTS {
        let name = format!("{set_name}-{}", random_suffix());
        match machines
            .create(&PostParams::default(), &machine_from_template(set, &name))
            .await
        {
            Ok(machine) => {
                tracing::info!(machine = %name, machineset = %set_name, "scaling up: created machine");
                return create_metal3_machine(client, &machine, &template).await;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => return Err(Error::api("create", "Machine", &namespace, &name)(source)),
        }
    }
    Err(Error::NameCollisions { set: set_name })
}

/// The Metal3MachineTemplate the set's machine template references.
async fn infrastructure_template(
    client: &Client,
    set: &MachineSet,
) -> Result<DynamicObject, Error> {
    let namespace = set.namespace().unwrap_or_default();
    let reference = &set.spec.template.spec.infrastructure_ref;
    if reference.kind != TEMPLATE_KIND {
        return Err(Error::UnsupportedInfrastructure {
            set: set.name_any(),
            kind: reference.kind.clone(),
        });
    }
    let templates: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &metal3_machine_template_resource(),
    );
    templates
        .get_opt(&reference.name)
        .await
        .map_err(Error::api(
            "read",
            "Metal3MachineTemplate",
            &namespace,
            &reference.name,
        ))?
        .ok_or_else(|| Error::MissingTemplate {
            namespace: namespace.clone(),
            name: reference.name.clone(),
            set: set.name_any(),
        })
}

/// Five lowercase letters and digits, different on every call.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut bits = hasher.finish();
    let mut suffix = String::with_capacity(NAME_SUFFIX_LENGTH);
    for _ in 0..NAME_SUFFIX_LENGTH {
        let index = usize::try_from(bits % ALPHABET.len() as u64).unwrap_or_default();
        suffix.push(char::from(ALPHABET[index]));
        bits /= ALPHABET.len() as u64;
    }
    suffix
}

/// A new Machine named `name` from the set's template, whose infrastructure is the
/// Metal3Machine of the same name.
pub fn machine_from_template(set: &MachineSet, name: &str) -> Machine {
    let set_name = set.name_any();
    let template_meta = set.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(SET_NAME_LABEL.to_string(), set_name.clone());
    labels.insert(
        CLUSTER_NAME_LABEL.to_string(),
        set.spec.cluster_name.clone(),
    );

    let mut spec: MachineSpec = set.spec.template.spec.clone();
    spec.cluster_name = set.spec.cluster_name.clone();
    spec.provider_id = None;
    spec.infrastructure_ref = ContractReference {
        api_group: ingot_api::CAPM3_GROUP.to_string(),
        kind: "Metal3Machine".to_string(),
        name: name.to_string(),
    };
    Machine {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: set.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Clones the template's Metal3Machine under the Machine's name, owned by the Machine, and
/// points the Machine's infrastructureRef at it.
async fn create_metal3_machine(
    client: &Client,
    machine: &Machine,
    template: &DynamicObject,
) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    let resource = metal3_machine_resource();
    let spec = template.data["spec"]["template"]["spec"].clone();
    let mut labels: BTreeMap<String, String> = machine.labels().clone();
    labels.remove(SET_NAME_LABEL);
    let object = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                CLONED_FROM_NAME_ANNOTATION: template.name_any(),
                CLONED_FROM_GROUP_KIND_ANNOTATION: format!("{TEMPLATE_KIND}.{}", ingot_api::CAPM3_GROUP),
            },
            "ownerReferences": [machine_owner(machine)],
        },
        "spec": spec,
    });
    let object: DynamicObject =
        serde_json::from_value(object).map_err(|source| Error::Encoding {
            what: "Metal3Machine",
            source,
        })?;
    let metal3_machines: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &resource);
    match metal3_machines
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::api("create", "Metal3Machine", &namespace, &name)(
            source,
        )),
    }
}

fn machine_owner(machine: &Machine) -> OwnerReference {
    OwnerReference {
        api_version: Machine::api_version(&()).into_owned(),
        kind: Machine::kind(&()).into_owned(),
        name: machine.name_any(),
        uid: machine.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The label selector in its serialized form (`a=b,c in (d)`), as `status.selector` carries it.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.clone().unwrap_or_default().join(",");
        terms.push(match requirement.operator.as_str() {
            "In" => format!("{} in ({values})", requirement.key),
            "NotIn" => format!("{} notin ({values})", requirement.key),
            "Exists" => requirement.key.clone(),
            _ => format!("!{}", requirement.key),
        });
    }
    terms.join(",")
}

async fn write_status(client: &Client, set: &MachineSet, owned: &[Machine]) -> Result<(), Error> {
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let count = |predicate: &dyn Fn(&Machine) -> bool| {
        i32::try_from(owned.iter().filter(|m| predicate(m)).count()).unwrap_or(i32::MAX)
    };
    let ready = count(&|m| {
        m.spec
            .provider_id
            .as_deref()
            .is_some_and(|id| !id.is_empty())
    });
    let status = json!({"status": {
        "replicas": count(&|_| true),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "upToDateReplicas": count(&|_| true),
        "selector": selector_string(&set.spec.selector),
        "observedGeneration": set.metadata.generation,
    }});
    let sets: Api<MachineSet> = Api::namespaced(client.clone(), &namespace);
    sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(Error::api(
            "write the status of",
            "MachineSet",
            &namespace,
            &name,
        ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    fn machine(name: &str) -> Machine {
        let mut machine = Machine::new(name, MachineSpec::default());
        machine.metadata.name = Some(name.to_string());
        machine
    }

    #[test]
    fn deletion_prefers_deleting_then_annotated_then_name() {
        let mut deleting = machine("workers-zzz");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut annotated = machine("workers-yyy");
        annotated.metadata.annotations =
            Some([(DELETE_MACHINE_ANNOTATION.to_string(), String::new())].into());
        let machines = vec![
            machine("workers-bbb"),
            annotated,
            machine("workers-aaa"),
            deleting,
        ];
        let names: Vec<String> = deletion_order(&machines)
            .iter()
            .map(|m| m.name_any())
            .collect();
        assert_eq!(
            names,
            ["workers-zzz", "workers-yyy", "workers-aaa", "workers-bbb"]
        );
    }

    #[test]
    fn selector_serializes_like_upstream() {
        let selector = LabelSelector {
            match_labels: Some([("pool".to_string(), "workers".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert_eq!(selector_string(&selector), "pool=workers,zone in (a,b)");
    }

    #[test]
    fn machines_inherit_template_labels_and_set_identity() {
        let set: MachineSet = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
            "metadata": {"name": "workers", "namespace": "default", "uid": "u-1"},
            "spec": {"clusterName": "dev", "replicas": 1,
                "selector": {"matchLabels": {"pool": "workers"}},
                "template": {"metadata": {"labels": {"pool": "workers"}},
                    "spec": {"clusterName": "dev", "bootstrap": {},
                        "infrastructureRef": {"apiGroup": ingot_api::CAPM3_GROUP,
                            "kind": "Metal3MachineTemplate", "name": "workers"}}}}
        }))
        .expect("machineset");
        let machine = machine_from_template(&set, "workers-b2c4d");
        assert_eq!(machine.spec.infrastructure_ref.name, "workers-b2c4d");
        assert_eq!(machine.spec.infrastructure_ref.kind, "Metal3Machine");
        let labels = machine.labels();
        assert_eq!(labels.get("pool").map(String::as_str), Some("workers"));
        assert_eq!(
            labels.get(SET_NAME_LABEL).map(String::as_str),
            Some("workers")
        );
        assert_eq!(
            labels.get(CLUSTER_NAME_LABEL).map(String::as_str),
            Some("dev")
        );
        let owner = &machine.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("MachineSet", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
    }
}

#[cfg(test)]
mod naming_tests {
    use super::random_suffix;

    #[test]
    fn suffixes_are_short_lowercase_and_vary() {
        let first = random_suffix();
        assert_eq!(first.len(), 5);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!((0..20).map(|_| random_suffix()).any(|other| other != first));
    }
}
