//! Machine: bootstrap data, providerID and addresses copied from the Metal3Machine, and the
//! upstream deletion order (infrastructure first, then bootstrap data, then the finalizer).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ingot_api::capi::v1beta2::Machine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::{
    BOOTSTRAP_SECRET_SUFFIX, CLUSTER_NAME_LABEL, Error, INFRASTRUCTURE_POLL, MACHINE_FINALIZER,
    metal3_machine_resource,
};

/// Secret type Cluster API bootstrap providers write.
const BOOTSTRAP_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";

pub async fn run(
    client: Arc<Client>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let machines: Api<Machine> = Api::all((*client).clone());
    let resource = metal3_machine_resource();
    let infrastructure: Api<DynamicObject> = Api::all_with((*client).clone(), &resource);
    Controller::new(machines, watcher::Config::default())
        .watches_with(
            infrastructure,
            resource,
            watcher::Config::default(),
            owning_machine,
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, client)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %error, "machine stand-in event");
            }
        })
        .await;
}

fn owning_machine(object: DynamicObject) -> Option<ObjectRef<Machine>> {
    let namespace = object.namespace()?;
    object
        .owner_references()
        .iter()
        .find(|owner| {
            owner.kind == "Machine" && owner.api_version.starts_with(ingot_api::CAPI_GROUP)
        })
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
}

fn error_policy(machine: Arc<Machine>, error: &Error, _client: Arc<Client>) -> Action {
    tracing::warn!(machine = %machine.name_any(), error = %error, "machine reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(machine: Arc<Machine>, client: Arc<Client>) -> Result<Action, Error> {
    if machine.metadata.deletion_timestamp.is_some() {
        return delete(&client, &machine).await;
    }
    if !machine.finalizers().iter().any(|f| f == MACHINE_FINALIZER) {
        add_finalizer(&client, &machine).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    if machine.spec.bootstrap.data_secret_name.is_none()
        && machine.spec.bootstrap.config_ref.is_none()
    {
        write_bootstrap_data(&client, &machine).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    copy_from_infrastructure(&client, &machine).await
}

fn machines_api(client: &Client, machine: &Machine) -> Api<Machine> {
    Api::namespaced(client.clone(), &machine.namespace().unwrap_or_default())
}

fn metal3_machines_api(client: &Client, machine: &Machine) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        &machine.namespace().unwrap_or_default(),
        &metal3_machine_resource(),
    )
}

async fn add_finalizer(client: &Client, machine: &Machine) -> Result<(), Error> {
    let mut finalizers = machine.finalizers().to_vec();
    finalizers.push(MACHINE_FINALIZER.to_string());
    patch_machine(
        client,
        machine,
        "add the finalizer to",
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": machine.resource_version()}}),
    )
    .await
}

async fn patch_machine(
    client: &Client,
    machine: &Machine,
    action: &'static str,
    patch: Value,
) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    machines_api(client, machine)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::api(action, "Machine", &namespace, &name))?;
    Ok(())
}

/// Name of the bootstrap Secret written for `machine`.
pub fn bootstrap_secret_name(machine: &Machine) -> String {
    format!("{}{BOOTSTRAP_SECRET_SUFFIX}", machine.name_any())
}

/// The Secret a bootstrap provider would write: cloud-config user data under `value`.
pub fn bootstrap_secret(machine: &Machine) -> Secret {
    let name = machine.name_any();
    let user_data = format!(
        "#cloud-config\nhostname: {name}\nfqdn: {name}.{}.ingot.local\nruncmd:\n  - echo provisioned by ingot dev for machine {name}\n",
        machine.spec.cluster_name
    );
    let owner = machine.controller_owner_ref(&());
    Secret {
        metadata: ObjectMeta {
            name: Some(bootstrap_secret_name(machine)),
            namespace: machine.namespace(),
            labels: Some(
                [(
                    CLUSTER_NAME_LABEL.to_string(),
                    machine.spec.cluster_name.clone(),
                )]
                .into(),
            ),
            owner_references: owner.map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(BOOTSTRAP_SECRET_TYPE.to_string()),
        string_data: Some(
            [
                ("value".to_string(), user_data),
                ("format".to_string(), "cloud-config".to_string()),
            ]
            .into(),
        ),
        ..Secret::default()
    }
}

async fn write_bootstrap_data(client: &Client, machine: &Machine) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let secret_name = bootstrap_secret_name(machine);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    match secrets
        .create(&PostParams::default(), &bootstrap_secret(machine))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => {
            return Err(Error::api("create", "Secret", &namespace, &secret_name)(
                source,
            ));
        }
    }
    let patch = json!({
        "spec": {"bootstrap": {"dataSecretName": secret_name}},
    });
    patch_machine(client, machine, "set the bootstrap data of", patch).await?;
    let status = json!({"status": {
        "initialization": {"bootstrapDataSecretCreated": true},
        "phase": "Pending",
    }});
    patch_status(client, machine, status).await
}

async fn patch_status(client: &Client, machine: &Machine, status: Value) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    machines_api(client, machine)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(Error::api(
            "write the status of",
            "Machine",
            &namespace,
            &name,
        ))?;
    Ok(())
}

/// Whether a Metal3Machine reports its infrastructure provisioned (either contract).
pub fn infrastructure_provisioned(metal3_machine: &DynamicObject) -> bool {
    let status = &metal3_machine.data["status"];
    status["initialization"]["provisioned"] == json!(true) || status["ready"] == json!(true)
}

async fn copy_from_infrastructure(client: &Client, machine: &Machine) -> Result<Action, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let infrastructure_name = &machine.spec.infrastructure_ref.name;
    let infrastructure = metal3_machines_api(client, machine)
        .get_opt(infrastructure_name)
        .await
        .map_err(Error::api(
            "read",
            "Metal3Machine",
            &namespace,
            infrastructure_name,
        ))?;
    let Some(infrastructure) = infrastructure else {
        set_phase(client, machine, "Pending").await?;
        return Ok(Action::requeue(INFRASTRUCTURE_POLL));
    };
    let provider_id = infrastructure.data["spec"]["providerID"]
        .as_str()
        .filter(|id| !id.is_empty());
    let Some(provider_id) = provider_id.filter(|_| infrastructure_provisioned(&infrastructure))
    else {
        set_phase(client, machine, "Provisioning").await?;
        return Ok(Action::requeue(INFRASTRUCTURE_POLL));
    };

    if machine.spec.provider_id.as_deref() != Some(provider_id) {
        tracing::info!(machine = %machine.name_any(), provider_id, "machine provisioned");
        patch_machine(
            client,
            machine,
            "set the providerID of",
            json!({"spec": {"providerID": provider_id}}),
        )
        .await?;
    }
    let status = json!({"status": {
        "initialization": {"infrastructureProvisioned": true},
        "addresses": infrastructure.data["status"]["addresses"],
        "phase": "Provisioned",
    }});
    if needs_status(machine, &status) {
        patch_status(client, machine, status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Whether writing `patch` would change the Machine's status.
fn needs_status(machine: &Machine, patch: &Value) -> bool {
    let current = serde_json::to_value(&machine.status).unwrap_or(Value::Null);
    patch["status"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(key, value)| !value.is_null() && current.get(key) != Some(value))
}

async fn set_phase(client: &Client, machine: &Machine, phase: &str) -> Result<(), Error> {
    let patch = json!({"status": {"phase": phase}});
    if needs_status(machine, &patch) {
        patch_status(client, machine, patch).await?;
    }
    Ok(())
}

/// Upstream order: the infrastructure object goes first and must be gone (the provider
/// deprovisions the host meanwhile), then the bootstrap data, then the finalizer.
async fn delete(client: &Client, machine: &Machine) -> Result<Action, Error> {
    if !machine.finalizers().iter().any(|f| f == MACHINE_FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = machine.namespace().unwrap_or_default();
    let infrastructure_name = machine.spec.infrastructure_ref.name.clone();
    set_phase(client, machine, "Deleting").await?;
    let metal3_machines = metal3_machines_api(client, machine);
    let present = metal3_machines
        .get_opt(&infrastructure_name)
        .await
        .map_err(Error::api(
            "read",
            "Metal3Machine",
            &namespace,
            &infrastructure_name,
        ))?;
    if let Some(infrastructure) = present {
        if infrastructure.metadata.deletion_timestamp.is_none() {
            tracing::info!(machine = %machine.name_any(), "deleting the machine's Metal3Machine");
            delete_ignoring_absent(&metal3_machines, &infrastructure_name)
                .await
                .map_err(Error::api(
                    "delete",
                    "Metal3Machine",
                    &namespace,
                    &infrastructure_name,
                ))?;
        }
        return Ok(Action::requeue(INFRASTRUCTURE_POLL));
    }

    if machine.spec.bootstrap.data_secret_name.as_deref()
        == Some(bootstrap_secret_name(machine).as_str())
    {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let secret_name = bootstrap_secret_name(machine);
        delete_ignoring_absent(&secrets, &secret_name)
            .await
            .map_err(Error::api("delete", "Secret", &namespace, &secret_name))?;
    }
    let finalizers: Vec<&String> = machine
        .finalizers()
        .iter()
        .filter(|f| *f != MACHINE_FINALIZER)
        .collect();
    patch_machine(
        client,
        machine,
        "remove the finalizer from",
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": machine.resource_version()}}),
    )
    .await?;
    tracing::info!(machine = %machine.name_any(), "machine deleted");
    Ok(Action::await_change())
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "workers-b2c4d", "namespace": "default", "uid": "m-1"},
            "spec": {"clusterName": "dev", "bootstrap": {},
                "infrastructureRef": {"apiGroup": ingot_api::CAPM3_GROUP, "kind": "Metal3Machine", "name": "workers-b2c4d"}}
        }))
        .expect("machine")
    }

    #[test]
    fn bootstrap_secret_is_cloud_config_owned_by_the_machine() {
        let secret = bootstrap_secret(&machine());
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("workers-b2c4d-bootstrap")
        );
        let data = secret.string_data.expect("data");
        assert!(data["value"].starts_with("#cloud-config\nhostname: workers-b2c4d\n"));
        assert_eq!(data["format"], "cloud-config");
        let owner = &secret.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Machine", "m-1")
        );
    }

    #[test]
    fn provisioned_in_either_contract() {
        let object = |status: Value| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "v", "kind": "Metal3Machine",
                "metadata": {"name": "m"}, "status": status}))
            .expect("object")
        };
        assert!(infrastructure_provisioned(&object(
            json!({"initialization": {"provisioned": true}})
        )));
        assert!(infrastructure_provisioned(&object(json!({"ready": true}))));
        assert!(!infrastructure_provisioned(&object(
            json!({"ready": false})
        )));
    }

    #[test]
    fn unchanged_status_is_not_rewritten() {
        let mut machine = machine();
        machine.status = serde_json::from_value(json!({"phase": "Provisioning"})).ok();
        assert!(!needs_status(
            &machine,
            &json!({"status": {"phase": "Provisioning"}})
        ));
        assert!(needs_status(
            &machine,
            &json!({"status": {"phase": "Provisioned"}})
        ));
    }
}
