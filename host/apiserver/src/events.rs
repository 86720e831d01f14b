//! The two views of events: core/v1 `Event` (what `kubectl describe` reads)
//! and events.k8s.io/v1 `Event` (what kube-runtime's `Recorder` writes). Both
//! are stored in the core form; the events.k8s.io view is converted on the way
//! in and out, as the upstream server does.

use serde_json::{Map, Value};

/// (core field, events.k8s.io field) pairs that map one to one.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

const SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "eventTime",
    "related",
    "series",
    "reportingInstance",
];

/// Converts a stored core/v1 event to the events.k8s.io/v1 view.
pub fn to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".to_string(), Value::from("events.k8s.io/v1"));
    out.insert("kind".to_string(), Value::from("Event"));
    copy_fields(core, &mut out, RENAMED.iter().map(|(c, e)| (*c, *e)));
    copy_fields(core, &mut out, SHARED.iter().map(|f| (*f, *f)));
    Value::Object(out)
}

/// Converts an events.k8s.io/v1 event to the stored core/v1 form.
pub fn to_core(events_v1: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".to_string(), Value::from("v1"));
    out.insert("kind".to_string(), Value::from("Event"));
    copy_fields(events_v1, &mut out, RENAMED.iter().map(|(c, e)| (*e, *c)));
    copy_fields(events_v1, &mut out, SHARED.iter().map(|f| (*f, *f)));
    if !out.contains_key("source")
        && let Some(controller) = events_v1.get("reportingController").and_then(Value::as_str)
    {
        out.insert(
            "source".to_string(),
            serde_json::json!({"component": controller}),
        );
    }
    if !out.contains_key("count")
        && let Some(count) = events_v1.pointer("/series/count")
    {
        out.insert("count".to_string(), count.clone());
    }
    if let Some(last) = events_v1.pointer("/series/lastObservedTime") {
        out.insert("lastTimestamp".to_string(), truncate_micro(last));
    } else if !out.contains_key("lastTimestamp")
        && let Some(time) = events_v1.get("eventTime")
    {
        out.insert("lastTimestamp".to_string(), truncate_micro(time));
    }
    if !out.contains_key("firstTimestamp")
        && let Some(time) = events_v1.get("eventTime")
    {
        out.insert("firstTimestamp".to_string(), truncate_micro(time));
    }
    Value::Object(out)
}

/// `Time` fields carry seconds only; `MicroTime` values are cut to seconds.
fn truncate_micro(value: &Value) -> Value {
    match value
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(ts) => Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => value.clone(),
    }
}

fn copy_fields<'a>(
    from: &Value,
    to: &mut Map<String, Value>,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) {
    for (source, target) in pairs {
        if let Some(value) = from.get(source).filter(|v| !v.is_null()) {
            to.insert(target.to_string(), value.clone());
        }
    }
}

/// Field selectors the core events support (kubectl describe uses `involvedObject.*`).
pub const CORE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Field selectors of the events.k8s.io view.
pub const V1_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorder_event_shows_as_core_event() {
        let v1 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Widget", "name": "w1"},
            "note": "hello", "reason": "Tested", "type": "Normal", "reportingController": "ctl",
            "eventTime": "2026-01-01T00:00:00.123456Z", "action": "Test"});
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "w1");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["source"]["component"], "ctl");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:00:00Z");
        let back = to_events_v1(&core);
        assert_eq!(back["note"], "hello");
        assert_eq!(back["regarding"], v1["regarding"]);
    }
}
