//! BMC credentials: read from the host's Secret, trimmed and validated, and the Secret tied to
//! the host so that editing it wakes the host and deleting it waits for the host.
//!
//! Credentials are identified everywhere else (status, logs, events) by the Secret's name and
//! resource version, never by value.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, SecretReference};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use super::{Error, Next};
use crate::events::EventSink;
use crate::host::HostFacts;
use crate::model::{
    BareMetalHost, CredentialsStatus, ErrorType, OperationalStatus, ProvisioningState,
};
use crate::provisioner::{Credentials, HostConfig};

/// Label put on every Secret the operator uses; the Secret watch selects on it.
pub const SECRET_LABEL: &str = "environment.metal3.io";

/// The value of [`SECRET_LABEL`].
pub const SECRET_LABEL_VALUE: &str = "baremetal";

/// Finalizer that keeps a BMC Secret until its host no longer needs it.
pub const SECRET_FINALIZER: &str = "baremetalhost.metal3.io/secret";

/// How soon to look again when the BMC Secret does not exist (yet).
const MISSING_SECRET_DELAY: Duration = Duration::from_secs(10);

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `spec.bmc.address` is empty.
    #[error("missing BMC address")]
    EmptyAddress,
    /// `spec.bmc.credentialsName` is empty.
    #[error("missing BMC credentials: spec.bmc.credentialsName is empty")]
    EmptySecretName,
    /// The Secret does not exist.
    #[error("BMC CredentialsName secret doesn't exist: {name}")]
    MissingSecret {
        /// The Secret's name.
        name: String,
    },
    /// The Secret lacks a usable user name or password.
    #[error("BMC credentials secret {name} is invalid: {field} is missing or empty")]
    Invalid {
        /// The Secret's name.
        name: String,
        /// The key that is missing or blank.
        field: &'static str,
    },
    /// Reading or updating the Secret failed.
    #[error("cannot access the BMC credentials secret")]
    Api(#[source] Error),
}

/// Valid credentials and where they came from.
#[derive(Debug, Clone)]
pub struct Found {
    /// The trimmed user name and password.
    pub credentials: Credentials,
    /// The Secret by name, namespace and resource version.
    pub reference: CredentialsStatus,
}

/// Reads and validates the host's credentials. States that do not talk to the BMC get none;
/// a host being deleted continues without them when they are unusable.
pub async fn acquire(
    host: &BareMetalHost,
    client: &Client,
) -> Result<Option<Found>, CredentialsError> {
    if matches!(
        host.state(),
        ProvisioningState::None | ProvisioningState::Unmanaged
    ) {
        return Ok(None);
    }
    match fetch(host, client).await {
        Ok(found) => Ok(Some(found)),
        Err(error) if host.is_deleting() => {
            tracing::info!(error = %error, "continuing deletion without BMC credentials");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

async fn fetch(host: &BareMetalHost, client: &Client) -> Result<Found, CredentialsError> {
    let bmc = host.spec.bmc.clone().unwrap_or_default();
    if bmc.address.is_empty() {
        return Err(CredentialsError::EmptyAddress);
    }
    if bmc.credentials_name.is_empty() {
        return Err(CredentialsError::EmptySecretName);
    }

    let namespace = host.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get_opt(&bmc.credentials_name)
        .await
        .map_err(|source| {
            CredentialsError::Api(Error::Api {
                action: "get BMC secret",
                source,
            })
        })?
        .ok_or_else(|| CredentialsError::MissingSecret {
            name: bmc.credentials_name.clone(),
        })?;
    let secret = claim_secret(host, secret, &secrets).await?;

    let credentials = validate(&secret)?;
    let reference = CredentialsStatus {
        credentials: Some(SecretReference {
            name: Some(bmc.credentials_name),
            namespace: Some(namespace),
        }),
        credentials_version: secret.resource_version(),
    };
    Ok(Found {
        credentials,
        reference,
    })
}

/// Trims and checks the user name and password of a BMC Secret.
pub fn validate(secret: &Secret) -> Result<Credentials, CredentialsError> {
    let name = secret.name_any();
    let field = |key: &'static str| -> Result<String, CredentialsError> {
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone());
        let text = value
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CredentialsError::Invalid {
                name: name.clone(),
                field: key,
            });
        }
        Ok(trimmed.to_string())
    };
    Ok(Credentials {
        username: field("username")?,
        password: field("password")?,
    })
}

/// Adds the label, a non-controller owner reference to the host and the finalizer to the
/// Secret, writing only when something is missing.
async fn claim_secret(
    host: &BareMetalHost,
    mut secret: Secret,
    secrets: &Api<Secret>,
) -> Result<Secret, CredentialsError> {
    let mut changed = false;

    let labels = secret.labels_mut();
    if labels.get(SECRET_LABEL).map(String::as_str) != Some(SECRET_LABEL_VALUE) {
        labels.insert(SECRET_LABEL.to_string(), SECRET_LABEL_VALUE.to_string());
        changed = true;
    }

    if let Some(mut owner) = host.controller_owner_ref(&()) {
        owner.controller = None;
        owner.block_owner_deletion = None;
        let owners = secret.owner_references_mut();
        if !owners.iter().any(|existing| existing.uid == owner.uid) {
            owners.push(owner);
            changed = true;
        }
    }

    // A host being deleted must not take a new hold on its Secret.
    if host.state() != ProvisioningState::Deleting
        && !secret.finalizers().iter().any(|f| f == SECRET_FINALIZER)
    {
        secret.finalizers_mut().push(SECRET_FINALIZER.to_string());
        changed = true;
    }

    if !changed {
        return Ok(secret);
    }
    secrets
        .replace(&secret.name_any(), &PostParams::default(), &secret)
        .await
        .map_err(|source| {
            CredentialsError::Api(Error::Api {
                action: "claim BMC secret",
                source,
            })
        })
}

/// Records a credentials problem on the host (a registration error) and decides when to look
/// again: soon for a missing Secret, otherwise only when the host or the Secret changes.
pub async fn record_problem(
    host: &mut BareMetalHost,
    hosts: &Api<BareMetalHost>,
    problem: CredentialsError,
    events: &EventSink,
) -> Result<Next, Error> {
    let problem = match problem {
        CredentialsError::Api(error) => return Err(error),
        other => other,
    };
    let message = problem.to_string();
    tracing::warn!(problem = %message, "BMC credentials unusable");
    events.warning("BMCCredentialError", message.clone());

    let status = host.status.get_or_insert_default();
    status.operational_status = OperationalStatus::Error;
    status.error_type = Some(ErrorType::Registration);
    status.error_message = message;
    status.error_count += 1;
    super::writes::save_status(host, hosts).await?;

    Ok(match problem {
        CredentialsError::MissingSecret { .. } => Some(MISSING_SECRET_DELAY),
        _ => None,
    })
}

/// Lets go of the BMC Secret once the host is gone from the provisioner.
pub async fn release(host: &BareMetalHost, client: &Client) -> Result<(), Error> {
    let Some(name) = host
        .spec
        .bmc
        .as_ref()
        .map(|bmc| bmc.credentials_name.clone())
        .filter(|name| !name.is_empty())
    else {
        return Ok(());
    };
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), &host.namespace().unwrap_or_default());
    let Some(mut secret) = secrets
        .get_opt(&name)
        .await
        .map_err(Error::api("get BMC secret"))?
    else {
        return Ok(());
    };
    if !secret
        .finalizers()
        .iter()
        .any(|finalizer| finalizer == SECRET_FINALIZER)
    {
        return Ok(());
    }
    secret
        .finalizers_mut()
        .retain(|finalizer| finalizer != SECRET_FINALIZER);
    secrets
        .replace(&name, &PostParams::default(), &secret)
        .await
        .map_err(Error::api("release BMC secret"))?;
    Ok(())
}

/// Reads the user data, network data and metadata Secrets for the config drive. A Secret
/// holds its content under the key named like the field, or under `value`.
pub async fn load_host_config(host: &BareMetalHost, client: &Client) -> Result<HostConfig, Error> {
    let namespace = host.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let network_fallback = host
        .spec
        .preprovisioning_network_data_name
        .clone()
        .map(|name| SecretReference {
            name: Some(name),
            namespace: None,
        });

    Ok(HostConfig {
        user_data: read_config_secret(
            &secrets,
            host.spec.user_data.as_ref(),
            "userData",
            &namespace,
        )
        .await?,
        network_data: read_config_secret(
            &secrets,
            host.spec
                .network_data
                .as_ref()
                .or(network_fallback.as_ref()),
            "networkData",
            &namespace,
        )
        .await?,
        meta_data: read_config_secret(
            &secrets,
            host.spec.meta_data.as_ref(),
            "metaData",
            &namespace,
        )
        .await?,
    })
}

async fn read_config_secret(
    secrets: &Api<Secret>,
    reference: Option<&SecretReference>,
    key: &str,
    host_namespace: &str,
) -> Result<Option<String>, Error> {
    let Some(name) = reference.and_then(|reference| reference.name.clone()) else {
        return Ok(None);
    };
    // Another namespace's Secret is never read, even if admission let the reference through.
    if reference
        .and_then(|reference| reference.namespace.as_deref())
        .is_some_and(|ns| !ns.is_empty() && ns != host_namespace)
    {
        return Ok(None);
    }
    let Some(secret) = secrets
        .get_opt(&name)
        .await
        .map_err(Error::api("get config data secret"))?
    else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let bytes = data
        .get(key)
        .or_else(|| data.get("value"))
        .map(|bytes| bytes.0.clone());
    Ok(bytes.and_then(|bytes| String::from_utf8(bytes).ok()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(username: &str, password: &str) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(
            "username".to_string(),
            ByteString(username.as_bytes().to_vec()),
        );
        data.insert(
            "password".to_string(),
            ByteString(password.as_bytes().to_vec()),
        );
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_are_trimmed() {
        let credentials = validate(&secret("admin\n", "  s3cret \n")).expect("valid credentials");

        assert_eq!(credentials.username, "admin");
        assert_eq!(credentials.password, "s3cret");
    }

    #[test]
    fn blank_credentials_are_rejected_by_field() {
        let error = validate(&secret("admin", " \n")).expect_err("blank password");

        assert!(matches!(
            error,
            CredentialsError::Invalid {
                field: "password",
                ..
            }
        ));
        assert!(
            !format!("{error:?}").contains("admin"),
            "no secret material in errors"
        );
    }

    #[test]
    fn password_never_appears_in_debug_output() {
        let credentials = validate(&secret("admin", "hunter2")).expect("valid credentials");

        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
