//! What the benchmark measures about the process and the operator's API traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use ingot_operator::metrics::Metrics;

/// Requests the operator's client sent, and how many of them change something (not GET).
/// Writes are also counted by method and resource, to show what they are spent on.
#[derive(Default)]
pub struct Traffic {
    requests: AtomicU64,
    writes: AtomicU64,
    writes_by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Traffic {
    /// Requests and writes so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }

    /// Writes so far per method and resource, e.g. `PATCH baremetalhosts/status`.
    pub fn writes_by_kind(&self) -> BTreeMap<String, u64> {
        self.writes_by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count_write(&self, method: &http::Method, path: &str) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let kind = format!("{method} {}", resource_of(path));
        let mut by_kind = self
            .writes_by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *by_kind.entry(kind).or_default() += 1;
    }
}

/// The resource (and subresource) a request path names: `/apis/metal3.io/v1alpha1/namespaces/
/// default/baremetalhosts/host-1/status` gives `baremetalhosts/status`.
fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let after_namespace = segments
        .iter()
        .position(|segment| *segment == "namespaces")
        .map_or(0, |index| index + 2);
    let resource = segments.get(after_namespace).copied().unwrap_or("?");
    match segments.get(after_namespace + 2) {
        Some(subresource) => format!("{resource}/{subresource}"),
        None => resource.to_string(),
    }
}

/// A client layer that counts every request into a [`Traffic`].
pub struct CountTraffic(pub Arc<Traffic>);

/// The service [`CountTraffic`] wraps around the client's transport.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> tower::Layer<S> for CountTraffic {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            traffic: self.0.clone(),
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        if request.method() != http::Method::GET {
            self.traffic
                .count_write(request.method(), request.uri().path());
        }
        self.inner.call(request)
    }
}

/// CPU time used so far by every thread of this process.
pub fn process_cpu() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or_default(),
        u32::try_from(time.tv_nsec).unwrap_or_default(),
    )
}

/// The peak resident set of this process in KiB (`VmHWM`), if the kernel reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Restarts the peak resident set from the current one, so that each run reports its own peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Reconciles done so far and the seconds they took, from the operator's Prometheus metrics.
pub fn reconciles(metrics: &Metrics) -> (f64, f64) {
    let text = metrics.render();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<f64>().ok())
            .unwrap_or_default()
    };
    (
        value("ingot_reconcile_duration_seconds_count"),
        value("ingot_reconcile_duration_seconds_sum"),
    )
}

/// What one phase cost, as differences between two [`Meter`] readings.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// Wall time from the start of the phase until every host reached the wanted state.
    pub wall: Duration,
    /// Requests the operator sent to the API server.
    pub requests: u64,
    /// Requests that changed something.
    pub writes: u64,
    /// Reconciles the host controller ran.
    pub reconciles: f64,
    /// Seconds those reconciles took in total.
    pub reconcile_seconds: f64,
    /// CPU time of the whole process.
    pub cpu: Duration,
    /// Writes per method and resource.
    pub writes_by_kind: BTreeMap<String, u64>,
}

/// One reading of every counter, taken at the start of a phase.
pub struct Meter {
    started: std::time::Instant,
    traffic: (u64, u64),
    writes_by_kind: BTreeMap<String, u64>,
    reconciles: (f64, f64),
    cpu: Duration,
}

impl Meter {
    /// Reads every counter now.
    pub fn start(traffic: &Traffic, metrics: &Metrics) -> Self {
        Meter {
            started: std::time::Instant::now(),
            traffic: traffic.snapshot(),
            writes_by_kind: traffic.writes_by_kind(),
            reconciles: reconciles(metrics),
            cpu: process_cpu(),
        }
    }

    /// What happened since [`Meter::start`].
    pub fn finish(&self, traffic: &Traffic, metrics: &Metrics) -> Cost {
        let (requests, writes) = traffic.snapshot();
        let (count, seconds) = reconciles(metrics);
        let mut writes_by_kind = traffic.writes_by_kind();
        for (kind, count) in &mut writes_by_kind {
            *count =
                count.saturating_sub(self.writes_by_kind.get(kind).copied().unwrap_or_default());
        }
        writes_by_kind.retain(|_, count| *count > 0);
        Cost {
            wall: self.started.elapsed(),
            requests: requests - self.traffic.0,
            writes: writes - self.traffic.1,
            reconciles: count - self.reconciles.0,
            reconcile_seconds: seconds - self.reconciles.1,
            cpu: process_cpu().saturating_sub(self.cpu),
            writes_by_kind,
        }
    }
}
