//! A provisioner whose calls are timed into the operator's metrics
//! (`ingot_provisioner_call_duration_seconds` and `ingot_provisioner_call_failures`, by call),
//! so a slow or failing backend shows without reading logs.

use std::time::Instant;

use crate::metrics::Metrics;
use crate::provisioner::{
    AdoptRequest, DeprovisionRequest, HardwareState, Health, InspectRequest, Inspection,
    PowerOffRequest, PowerOnRequest, Preparation, PrepareRequest, Progress, ProvisionRequest,
    Provisioner, ProvisionerError, RegisterRequest, Registration,
};

/// `inner`, with each call that can fail measured. Power-failure and health reads cannot fail
/// and come from what the backend already holds, so they are not measured.
pub struct Metered<'a, P> {
    inner: P,
    metrics: &'a Metrics,
}

impl<'a, P: Provisioner> Metered<'a, P> {
    /// Measures the calls of `inner` into `metrics`.
    pub fn new(inner: P, metrics: &'a Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn measure<T>(
        &self,
        call: &str,
        work: impl Future<Output = Result<T, ProvisionerError>>,
    ) -> Result<T, ProvisionerError> {
        let started = Instant::now();
        let result = work.await;
        self.metrics
            .observe_provisioner_call(call, started.elapsed(), result.is_err());
        result
    }
}

impl<P: Provisioner> Provisioner for Metered<'_, P> {
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ProvisionerError> {
        self.measure("register", self.inner.register(request)).await
    }

    async fn inspect(&self, request: &InspectRequest) -> Result<Inspection, ProvisionerError> {
        self.measure("inspect", self.inner.inspect(request)).await
    }

    async fn hardware_state(&self) -> Result<HardwareState, ProvisionerError> {
        self.measure("hardware_state", self.inner.hardware_state())
            .await
    }

    async fn adopt(&self, request: &AdoptRequest) -> Result<Progress, ProvisionerError> {
        self.measure("adopt", self.inner.adopt(request)).await
    }

    async fn prepare(&self, request: &PrepareRequest) -> Result<Preparation, ProvisionerError> {
        self.measure("prepare", self.inner.prepare(request)).await
    }

    async fn provision(&self, request: &ProvisionRequest) -> Result<Progress, ProvisionerError> {
        self.measure("provision", self.inner.provision(request))
            .await
    }

    async fn deprovision(
        &self,
        request: &DeprovisionRequest,
    ) -> Result<Progress, ProvisionerError> {
        self.measure("deprovision", self.inner.deprovision(request))
            .await
    }

    async fn delete(&self) -> Result<Progress, ProvisionerError> {
        self.measure("delete", self.inner.delete()).await
    }

    async fn detach(&self, force: bool) -> Result<Progress, ProvisionerError> {
        self.measure("detach", self.inner.detach(force)).await
    }

    async fn power_on(&self, request: &PowerOnRequest) -> Result<Progress, ProvisionerError> {
        self.measure("power_on", self.inner.power_on(request)).await
    }

    async fn power_off(&self, request: &PowerOffRequest) -> Result<Progress, ProvisionerError> {
        self.measure("power_off", self.inner.power_off(request))
            .await
    }

    async fn has_capacity(&self) -> Result<bool, ProvisionerError> {
        self.measure("has_capacity", self.inner.has_capacity())
            .await
    }

    fn wakes_hosts_given_capacity(&self) -> bool {
        self.inner.wakes_hosts_given_capacity()
    }

    async fn has_power_failure(&self) -> bool {
        self.inner.has_power_failure().await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }
}
