//! Why the controllers reconcile: a tracing layer that counts every reconcile kube-runtime
//! starts, by the kind reconciled and what set it off, exported as
//! `ingot_reconcile_triggers_total{kind, trigger}`.
//!
//! When a larger fleet costs more per host, the count of reconciles per host is what grows;
//! these counts say which trigger grows: the object's own changes, a related object's (a BMC
//! Secret), requeues the reconciles asked for, retries after errors, or wakes from the backend.
//!
//! kube-runtime gives the trigger in one place only: the `reconciling object` span it opens
//! for each reconcile, with the object and the reason as fields. The layer reads that span,
//! whatever the log filter lets through.

use std::fmt::Debug;
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Labels of one count: `kind` and `trigger`.
pub type Labels = Vec<(String, String)>;

/// The name kube-runtime gives the span of one reconcile.
const RECONCILE_SPAN: &str = "reconciling object";

/// The counts of the process: a tracing layer is process-wide, and so are they.
static TRIGGERS: LazyLock<Family<Labels, Counter>> = LazyLock::new(Family::default);

/// The counts, to register in a metrics registry (a handle: they keep counting).
pub fn counts() -> Family<Labels, Counter> {
    TRIGGERS.clone()
}

/// The layer to add to the process's tracing subscriber. It sees only reconcile spans.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let is_reconcile =
        |metadata: &Metadata<'_>| metadata.is_span() && metadata.name() == RECONCILE_SPAN;
    // kube-runtime opens the span at INFO: the hint keeps more verbose callsites off when the
    // log filter is quieter.
    let filter = FilterFn::new(is_reconcile).with_max_level_hint(LevelFilter::INFO);
    TriggerCounter.with_filter(filter)
}

/// Counts each reconcile span it is shown.
pub struct TriggerCounter;

impl<S: Subscriber> Layer<S> for TriggerCounter {
    fn on_new_span(&self, attributes: &Attributes<'_>, _id: &Id, _context: Context<'_, S>) {
        let mut fields = ReconcileFields::default();
        attributes.record(&mut fields);
        TRIGGERS.get_or_create(&fields.labels()).inc();
    }
}

/// The fields of a reconcile span, as kube-runtime displays them.
#[derive(Default)]
struct ReconcileFields {
    object: String,
    reason: String,
}

impl Visit for ReconcileFields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "object.ref" => self.object = format!("{value:?}"),
            "object.reason" => self.reason = format!("{value:?}"),
            _ => {}
        }
    }
}

impl ReconcileFields {
    /// Bounded labels: the kind, never the object's name.
    fn labels(&self) -> Labels {
        vec![
            ("kind".to_owned(), kind_of(&self.object).to_owned()),
            ("trigger".to_owned(), trigger_of(&self.reason)),
        ]
    }
}

/// The kind of an object reference displayed as `Kind.version.group/name.namespace`.
fn kind_of(object: &str) -> &str {
    object.split('.').next().unwrap_or_default()
}

/// A short name for one of kube-runtime's reconcile reasons; a related object's reason keeps
/// the related kind only.
fn trigger_of(reason: &str) -> String {
    let (reason, detail) = reason.split_once(": ").unwrap_or((reason, ""));
    match reason {
        "object updated" => "changed".to_owned(),
        "related object updated" => format!("{} changed", kind_of(detail)),
        "reconciler requested retry" => "requeue".to_owned(),
        "error policy requested retry" => "retry after error".to_owned(),
        "unknown" => "wake".to_owned(),
        "bulk reconcile requested" => "bulk".to_owned(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn reasons_become_bounded_triggers() {
        let cases = [
            ("object updated", "changed"),
            (
                "related object updated: Secret.v1./bmc-secret-7.lab",
                "Secret changed",
            ),
            ("reconciler requested retry", "requeue"),
            ("error policy requested retry", "retry after error"),
            ("unknown", "wake"),
            ("bulk reconcile requested", "bulk"),
            ("custom reason: host-12 looked at", "other"),
        ];
        for (reason, trigger) in cases {
            assert_eq!(trigger_of(reason), trigger, "{reason}");
        }
        assert_eq!(
            kind_of("BareMetalHost.v1alpha1.metal3.io/host-1.lab"),
            "BareMetalHost"
        );
    }

    #[test]
    fn a_reconcile_span_is_counted_even_when_the_log_filter_drops_it() {
        let quiet_logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
        let subscriber = tracing_subscriber::registry()
            .with(quiet_logs)
            .with(layer());
        let labels = vec![
            ("kind".to_owned(), "Probe".to_owned()),
            ("trigger".to_owned(), "requeue".to_owned()),
        ];
        let before = counts().get_or_create(&labels).get();

        tracing::subscriber::with_default(subscriber, || {
            let _ignored = tracing::info_span!("some other span", object.reason = "unknown");
            let _reconcile = tracing::info_span!(
                "reconciling object",
                "object.ref" = %"Probe.v1.example.org/probe-1.lab",
                object.reason = %"reconciler requested retry"
            );
        });

        assert_eq!(counts().get_or_create(&labels).get(), before + 1);
    }
}
