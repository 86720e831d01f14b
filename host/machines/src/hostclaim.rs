//! The HostClaim controller: the front door for sites without Cluster API. A HostClaim asks
//! for one host by selector and failure domain and says what it should run and whether it is
//! powered on; it goes through the same claim engine and release steps as a Metal3Machine.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use ingot_api::METAL3_GROUP;
use ingot_api::metal3::{
    BareMetalHost, HostClaim, HostClaimStatus, NamespacedName, ProvisioningState,
};
use ingot_operator::turns::Turns;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};

use crate::claim::{Claim, ClaimRequest, Releasing, consumers_to_wake};
use crate::conditions::{self, Desired, Severity};
use crate::eligibility::{Consumer, Wanted, state};
use crate::hostspec::{Deployment, ReleaseOptions, deployment_patch};
use crate::labels::LabelQuery;
use crate::metal3machine::{
    Context, Error, WAITING_FOR_AVAILABLE_HOST, WAITING_FOR_HOST_PROVISIONING, in_turn,
};
use crate::objects::{add_finalizer, remove_finalizer, write_status};

/// Finalizer on every HostClaim, released once its host is clean.
pub const FINALIZER: &str = "hostclaim.metal3.io";
/// Condition: a host is bound to the claim.
pub const ASSOCIATED: &str = "Associated";
/// Condition: the host runs what the claim asks for.
pub const READY: &str = "Ready";
/// Reason: the claim's spec can never be satisfied.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Reason: the host is being cleaned before the claim goes.
pub const DELETING: &str = "Deleting";

fn api_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api { action, source }
}

/// The consumer identity of a HostClaim.
pub fn consumer(claim: &HostClaim) -> Consumer {
    Consumer {
        group: METAL3_GROUP.to_owned(),
        api_version: HostClaim::api_version(&()).into_owned(),
        kind: HostClaim::kind(&()).into_owned(),
        namespace: claim.namespace().unwrap_or_default(),
        name: claim.name_any(),
        uid: claim.uid(),
    }
}

struct Pass {
    claim: Arc<HostClaim>,
    api: Api<HostClaim>,
    consumer: Consumer,
    status: HostClaimStatus,
}

impl Pass {
    fn condition(&mut self, desired: &Desired) {
        conditions::set_standard(
            &mut self.status.conditions,
            desired,
            self.claim.metadata.generation,
        );
    }

    async fn finish(mut self, action: Action) -> Result<Action, Error> {
        self.status.last_updated = Some(Time(jiff::Timestamp::now()));
        write_status(
            &self.api,
            &self.claim.name_any(),
            self.claim.status.as_ref(),
            &self.status,
        )
        .await
        .map_err(api_error("writing HostClaim status"))?;
        Ok(action)
    }
}

/// Reconciles one HostClaim.
pub async fn reconcile(claim: Arc<HostClaim>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let mut pass = Pass {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        consumer: consumer(&claim),
        status: claim.status.clone().unwrap_or_default(),
        claim,
    };

    if pass.claim.metadata.deletion_timestamp.is_some() {
        return delete(pass, &ctx).await;
    }
    add_finalizer(&pass.api, pass.claim.as_ref(), FINALIZER)
        .await
        .map_err(api_error("adding the HostClaim finalizer"))?;

    let query = match check_spec(&pass.claim) {
        Ok(query) => query,
        Err(problem) => {
            let invalid = Desired::not(ASSOCIATED, INVALID_SPEC, Severity::Error, problem);
            pass.condition(&invalid);
            pass.condition(&Desired {
                kind: READY,
                ..invalid
            });
            return pass.finish(Action::await_change()).await;
        }
    };

    let request = ClaimRequest {
        consumer: pass.consumer.clone(),
        wanted: Wanted {
            query,
            reuse_group: None,
        },
        labels: pass.claim.labels().clone(),
        failure_domain: pass.claim.spec.failure_domain.clone(),
        host_labels: BTreeMap::new(),
    };
    let host = match ctx.engine.claim(&request).await? {
        Claim::Held(host) => *host,
        Claim::Waiting(reason) => {
            let waiting = Desired::not(
                ASSOCIATED,
                WAITING_FOR_AVAILABLE_HOST,
                Severity::Info,
                reason,
            );
            pass.condition(&waiting);
            pass.condition(&Desired {
                kind: READY,
                ..waiting
            });
            return pass
                .finish(Action::requeue(ctx.settings.wait_for_host))
                .await;
        }
    };
    pass.condition(&Desired::ok(ASSOCIATED));
    pass.status.bare_metal_host = Some(NamespacedName {
        name: host.name_any(),
        namespace: host.namespace(),
    });

    let Some(host) = deploy(&pass, host, &ctx).await? else {
        return pass.finish(Action::requeue(ctx.settings.retry)).await;
    };
    report(pass, &host, &ctx).await
}

fn check_spec(claim: &HostClaim) -> Result<LabelQuery, String> {
    let spec = &claim.spec;
    let namespace = claim.namespace().unwrap_or_default();

    for (field, secret) in [
        ("spec.userData", &spec.user_data),
        ("spec.metaData", &spec.meta_data),
        ("spec.networkData", &spec.network_data),
    ] {
        let elsewhere = secret
            .as_ref()
            .and_then(|secret| secret.namespace.as_ref())
            .is_some_and(|ns| *ns != namespace);
        if elsewhere {
            return Err(format!(
                "{field} must name a Secret in the claim's namespace {namespace}"
            ));
        }
    }

    LabelQuery::compile(spec.host_selector.as_ref()).map_err(|error| error.to_string())
}

async fn deploy(
    pass: &Pass,
    host: BareMetalHost,
    ctx: &Context,
) -> Result<Option<BareMetalHost>, Error> {
    let spec = &pass.claim.spec;
    let deployment = Deployment {
        image: spec.image.clone(),
        custom_deploy: spec.custom_deploy.clone(),
        user_data: spec.user_data.clone(),
        meta_data: spec.meta_data.clone(),
        network_data: spec.network_data.clone(),
        automated_cleaning_mode: None,
        online: spec.powered_on,
    };

    let Some(patch) = deployment_patch(&host, &deployment) else {
        return Ok(Some(host));
    };
    ctx.engine
        .write(&host, &patch)
        .await
        .map_err(api_error("writing the host spec"))
}

/// Ready once the host runs the requested image (or, without one, is simply held) and its
/// power matches the claim.
async fn report(mut pass: Pass, host: &BareMetalHost, ctx: &Context) -> Result<Action, Error> {
    let powered_on = host.status.as_ref().map(|status| status.powered_on);
    pass.status.powered_on = powered_on;

    let wants_image = pass.claim.spec.image.is_some() || pass.claim.spec.custom_deploy.is_some();
    let host_state = state(host);
    let deployed = !wants_image || host_state == ProvisioningState::Provisioned;
    let power_settled = powered_on == Some(pass.claim.spec.powered_on);

    if deployed && power_settled {
        pass.condition(&Desired::ok(READY));
        return pass.finish(Action::await_change()).await;
    }

    let message = format!(
        "host {} is {:?}, powered on: {}",
        host.name_any(),
        host_state,
        powered_on.unwrap_or(false)
    );
    pass.condition(&Desired::not(
        READY,
        WAITING_FOR_HOST_PROVISIONING,
        Severity::Info,
        message,
    ));
    pass.finish(Action::requeue(ctx.settings.poll_host)).await
}

async fn delete(mut pass: Pass, ctx: &Context) -> Result<Action, Error> {
    if !pass
        .claim
        .finalizers()
        .iter()
        .any(|finalizer| finalizer == FINALIZER)
    {
        return Ok(Action::await_change());
    }

    let options = ReleaseOptions {
        fast_track: ctx.settings.fast_track,
        reuse: None,
    };
    match ctx.engine.release(&pass.consumer, &options).await? {
        Releasing::Done => {}
        Releasing::Retry => return Ok(Action::requeue(ctx.settings.retry)),
        Releasing::Waiting(message) => {
            pass.condition(&Desired::not(READY, DELETING, Severity::Info, message));
            return pass.finish(Action::requeue(ctx.settings.poll_host)).await;
        }
    }

    remove_finalizer(&pass.api, pass.claim.as_ref(), FINALIZER)
        .await
        .map_err(api_error("removing the HostClaim finalizer"))?;
    Ok(Action::await_change())
}

fn error_policy(claim: Arc<HostClaim>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        return Action::requeue(ctx.settings.retry);
    }
    tracing::warn!(claim = %claim.name_any(), namespace = ?claim.namespace(), error = %error, "HostClaim reconcile failed");
    Action::requeue(ctx.settings.retry)
}

/// Runs the HostClaim controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let claims: Api<HostClaim> = Api::all(ctx.client.clone());
    let hosts: Api<BareMetalHost> = Api::all(ctx.client.clone());
    let controller = Controller::new(claims, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(0));
    let turns = Turns::new(ctx.settings.workers);
    let store = controller.store();

    controller
        .watches(hosts, watcher::Config::default(), move |host| {
            consumers_to_wake(&host, &store, |claim: &HostClaim| {
                claim
                    .status
                    .as_ref()
                    .is_none_or(|status| status.bare_metal_host.is_none())
            })
        })
        .graceful_shutdown_on(turns.close_on(shutdown))
        .run(
            move |object, ctx| in_turn(turns.clone(), ctx, object, reconcile),
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}
