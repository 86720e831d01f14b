//! Running the operator as a process: endpoints, leader election, then the controller until
//! shutdown or until leadership is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;

use crate::controller::{self, Context};
use crate::http::{Endpoints, HttpError, Readiness};
use crate::leader::{LeaderElection, LeaderError};
use crate::metrics::Metrics;
use crate::provisioner::ProvisionerFactory;
use crate::state_machine::Settings;

/// The name of the Lease replicas compete for.
pub const LEASE_NAME: &str = "ingot-operator";

/// How the operator process runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// This replica's name, in events and in the Lease.
    pub identity: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub endpoints: SocketAddr,
    /// The namespace of the leader Lease; `None` disables leader election.
    pub lease_namespace: Option<String>,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// Hosts reconciled at the same time.
    pub concurrency: u16,
    /// State-machine settings.
    pub settings: Settings,
    /// An upper bound on every requeue delay (for the lab; `None` in production).
    pub max_requeue: Option<Duration>,
}

/// Failures that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The endpoints could not be served.
    #[error("cannot serve the health and metrics endpoints")]
    Endpoints(#[from] HttpError),
    /// Leader election failed.
    #[error("leader election failed")]
    Leader(#[from] LeaderError),
}

/// Runs the operator until `shutdown` resolves (returns `Ok`) or leadership is lost (returns
/// the error, so the process restarts and competes again).
pub async fn run<F: ProvisionerFactory>(
    client: Client,
    factory: F,
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_with(client, factory, config, |_, _| async {}, shutdown).await
}

/// Future handed to a companion of the host controller: completes when the controller stops
/// (shutdown or lost leadership).
pub type Stop = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Like [`run`], with `companion` running next to the host controller under the same
/// leadership: it is started once this replica leads, with a client and a [`Stop`] future,
/// and the process returns only after it has finished too.
pub async fn run_with<F, C, Fut>(
    client: Client,
    factory: F,
    config: RunConfig,
    companion: C,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError>
where
    F: ProvisionerFactory,
    C: FnOnce(Client, Stop) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let endpoints = Endpoints::bind(config.endpoints, metrics.clone(), readiness.clone()).await?;
    tracing::info!(address = ?endpoints.local_address(), "serving health and metrics endpoints");
    let endpoint_task = tokio::spawn(endpoints.serve());

    let election = config.lease_namespace.as_ref().map(|namespace| {
        LeaderElection::new(
            client.clone(),
            namespace,
            LEASE_NAME,
            &config.identity,
            config.lease_duration,
        )
    });
    let mut shutdown = shutdown.boxed().shared();
    if let Some(election) = &election {
        tokio::select! {
            acquired = election.acquire() => acquired?,
            () = shutdown.clone() => {
                endpoint_task.abort();
                return Ok(());
            }
        }
    }

    let companion_client = client.clone();
    let mut context = Context::new(client, factory, config.settings, metrics, &config.identity);
    context.max_requeue = config.max_requeue;
    readiness.set(true);

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<LeaderError>();
    let holder = election.clone().map(|election| {
        tokio::spawn(async move {
            let _ = lost_tx.send(election.hold().await);
        })
    });
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                // Without leader election the sender is dropped at once: only a sent loss
                // stops the controller, a closed channel disables this branch.
                Ok(_) = lost_rx => {}
            }
        }
    }
    .boxed()
    .shared();
    tokio::join!(
        controller::run(Arc::new(context), config.concurrency, stop.clone()),
        companion(companion_client, stop),
    );
    readiness.set(false);

    if let Some(holder) = holder {
        holder.abort();
    }
    endpoint_task.abort();
    let shut_down = (&mut shutdown).now_or_never().is_some();
    if let Some(election) = &election {
        if !shut_down {
            return Err(RunError::Leader(LeaderError::Lost));
        }
        election.release().await?;
    }
    Ok(())
}
