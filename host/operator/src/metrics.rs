//! Prometheus metrics of the controller.
//!
//! Label values are bounded sets (states, error types, call names, event reasons); host names
//! are never labels, so the series count does not grow with the fleet.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::events::HostEvent;
use crate::model::{BareMetalHost, ErrorType, ProvisioningState};

type Labels = Vec<(String, String)>;

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    hosts: Family<Labels, Gauge>,
    errors: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    reconcile_duration: Histogram,
    reconcile_queue_wait: Histogram,
    reconcile_failures: Counter,
    provisioner_calls: Family<Labels, Histogram>,
    provisioner_failures: Family<Labels, Counter>,
    states: Mutex<HashMap<String, ProvisioningState>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ingot");
        let hosts = Family::<Labels, Gauge>::default();
        let errors = Family::<Labels, Counter>::default();
        let events = Family::<Labels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let reconcile_queue_wait = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let reconcile_failures = Counter::default();
        let provisioner_calls = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let provisioner_failures = Family::<Labels, Counter>::default();

        registry.register("hosts", "Hosts per provisioning state", hosts.clone());
        registry.register(
            "host_errors",
            "Host errors recorded, by error type",
            errors.clone(),
        );
        registry.register("host_events", "Events published, by reason", events.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one host reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_queue_wait_seconds",
            "Time from a host falling due to its reconcile starting",
            reconcile_queue_wait.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in a transient error",
            reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_triggers",
            "Reconciles started by every controller of the process, by kind and trigger",
            crate::triggers::counts(),
        );
        registry.register(
            "provisioner_call_duration_seconds",
            "Duration of provisioner calls",
            provisioner_calls.clone(),
        );
        registry.register(
            "provisioner_call_failures",
            "Provisioner calls that failed",
            provisioner_failures.clone(),
        );

        Metrics {
            registry,
            hosts,
            errors,
            events,
            reconcile_duration,
            reconcile_queue_wait,
            reconcile_failures,
            provisioner_calls,
            provisioner_failures,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Records the duration of one reconcile.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Records how long a host due for a reconcile waited for its turn.
    pub fn observe_queue_wait(&self, waited: Duration) {
        self.reconcile_queue_wait.observe(waited.as_secs_f64());
    }

    /// Counts a reconcile that ended in a transient error.
    pub fn reconcile_failed(&self) {
        self.reconcile_failures.inc();
    }

    /// Records the duration and result of one provisioner call.
    pub fn observe_provisioner_call(&self, call: &str, elapsed: Duration, failed: bool) {
        let labels = vec![("call".to_string(), call.to_string())];
        self.provisioner_calls
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if failed {
            self.provisioner_failures.get_or_create(&labels).inc();
        }
    }

    /// Counts a published event, and an error when the event reports one.
    pub fn observe_event(&self, event: &HostEvent) {
        self.events
            .get_or_create(&vec![("reason".to_string(), event.reason.clone())])
            .inc();
        if let Some(error_type) = error_type_of_reason(&event.reason) {
            self.errors
                .get_or_create(&vec![("type".to_string(), error_type.to_string())])
                .inc();
        }
    }

    /// Records the state a host is in now.
    pub fn observe_host(&self, host: &BareMetalHost) {
        let state = host
            .status
            .as_ref()
            .map(|status| status.provisioning.state.canonical())
            .unwrap_or_default();
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = states.insert(key(host), state);
        if previous != Some(state) {
            if let Some(previous) = previous {
                self.hosts.get_or_create(&state_labels(previous)).dec();
            }
            self.hosts.get_or_create(&state_labels(state)).inc();
        }
    }

    /// Forgets a host that was deleted.
    pub fn forget_host(&self, host: &BareMetalHost) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = states.remove(&key(host)) {
            self.hosts.get_or_create(&state_labels(previous)).dec();
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

fn key(host: &BareMetalHost) -> String {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let name = host.metadata.name.clone().unwrap_or_default();
    format!("{namespace}/{name}")
}

fn state_labels(state: ProvisioningState) -> Labels {
    let name = serde_json::to_value(state)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default();
    let name = if name.is_empty() {
        "none".to_string()
    } else {
        name
    };
    vec![("state".to_string(), name)]
}

/// The error type an event reason stands for, if it is an error event.
fn error_type_of_reason(reason: &str) -> Option<&'static str> {
    const TYPES: [(ErrorType, &str); 7] = [
        (
            ErrorType::ProvisionedRegistration,
            "provisioned registration error",
        ),
        (ErrorType::Registration, "registration error"),
        (ErrorType::Inspection, "inspection error"),
        (ErrorType::Preparation, "preparation error"),
        (ErrorType::Provisioning, "provisioning error"),
        (ErrorType::PowerManagement, "power management error"),
        (ErrorType::Servicing, "servicing error"),
    ];
    match reason {
        "DetachError" => Some("detach error"),
        "BMCCredentialError" => Some("registration error"),
        other => TYPES
            .iter()
            .find(|(error_type, _)| crate::state_machine::event_reason(*error_type) == other)
            .map(|(_, name)| *name),
    }
}
