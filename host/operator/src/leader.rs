//! Leader election through a coordination.k8s.io Lease, so that only one operator replica
//! reconciles hosts at a time.
//!
//! The leader renews the Lease well within its duration; a candidate takes it over only once
//! the holder has let it expire. Every write carries the resource version it was computed
//! from, so two candidates racing for an expired Lease cannot both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Failures talking to the API about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading or writing the Lease failed.
    #[error("cannot {action} the leader Lease")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Renewal kept failing for longer than the Lease lasts: another replica may lead now.
    #[error("leadership lost: the Lease could not be renewed in time")]
    Lost,
}

/// One candidate for leadership.
#[derive(Clone)]
pub struct LeaderElection {
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElection {
    /// A candidate named `identity` for the Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElection {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease once; returns whether this candidate now leads.
    pub async fn try_acquire(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current = self
            .leases
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaderError::Api {
                action: "read",
                source,
            })?;
        let Some(mut lease) = current else {
            return self.create(now).await;
        };

        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !self.expired(spec, now) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
            tracing::info!(previous = %holder, identity = %self.identity, "taking over the leader Lease");
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.duration_seconds());
        self.write(|leases, params| async move {
            leases
                .replace(
                    &lease.metadata.name.clone().unwrap_or_default(),
                    &params,
                    &lease,
                )
                .await
        })
        .await
    }

    /// Waits until this candidate leads, trying every third of the Lease duration.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            if self.try_acquire().await? {
                tracing::info!(identity = %self.identity, "leading");
                return Ok(());
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease for as long as possible; returns once leadership is lost.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return LeaderError::Lost,
                Err(error) if last_renewal.elapsed() >= self.duration => {
                    tracing::warn!(error = %error, "cannot renew the leader Lease");
                    return LeaderError::Lost;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "leader Lease renewal failed; retrying")
                }
            }
        }
    }

    /// Gives the Lease up so another replica can lead at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let current = self
            .leases
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaderError::Api {
                action: "read",
                source,
            })?;
        let Some(mut lease) = current else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|source| LeaderError::Api {
                action: "release",
                source,
            })?;
        Ok(())
    }

    async fn create(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        self.write(|leases, params| async move { leases.create(&params, &lease).await })
            .await
    }

    /// Runs one write; losing a race (conflict or already exists) means not leading.
    async fn write<F, Fut>(&self, write: F) -> Result<bool, LeaderError>
    where
        F: FnOnce(Api<Lease>, PostParams) -> Fut,
        Fut: std::future::Future<Output = Result<Lease, kube::Error>>,
    {
        match write(self.leases.clone(), PostParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Api {
                action: "write",
                source,
            }),
        }
    }

    fn expired(&self, spec: &LeaseSpec, now: Timestamp) -> bool {
        let duration = spec
            .lease_duration_seconds
            .map_or(self.duration, |seconds| {
                Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
            });
        let Some(renewed) = spec.renew_time.as_ref() else {
            return true;
        };
        let Ok(span) = jiff::SignedDuration::try_from(duration) else {
            return true;
        };
        renewed
            .0
            .checked_add(span)
            .map_or(true, |deadline| deadline < now)
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn retry_period(&self) -> Duration {
        self.duration / 3
    }
}
