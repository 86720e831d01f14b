//! Publishes hosts' events as `events.k8s.io/v1` Events. An event that repeats one published
//! in the last few minutes (same host, type, reason, note and related object) is counted in
//! that Event's series instead of creating another object, as Kubernetes recommends.
//!
//! kube's own `Recorder` does the same, but it keeps a copy of every Event of the last six
//! minutes and scans them all on every publish. At 10,000 hosts that scan was the operator's
//! busiest function (14 % of its CPU samples), and the copies grew with the fleet. Here a
//! repeat costs one map lookup. Only an Event's name and count are kept, and expired entries
//! leave from the front of a queue ordered by time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How long after its last occurrence a repeat is still counted in the same Event.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Who publishes: the controller's name and this operator instance.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// The controller, e.g. `ingot-baremetalhost`.
    pub controller: String,
    /// This instance of it, e.g. the pod name.
    pub instance: String,
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// A CamelCase reason, also used as the action.
    pub reason: String,
    /// The human-readable message.
    pub note: String,
    /// The object the event is about.
    pub regarding: ObjectReference,
    /// A second object involved, such as the host's consumer.
    pub related: Option<ObjectReference>,
}

/// What makes two occurrences the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    type_: &'static str,
    reason: String,
    note: String,
    regarding: ReferenceKey,
    related: Option<ReferenceKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReferenceKey {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for ReferenceKey {
    fn from(reference: &ObjectReference) -> Self {
        Self {
            kind: reference.kind.clone(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }
}

/// An Event already published, as much as a repeat needs.
#[derive(Debug)]
struct Published {
    name: String,
    count: i32,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Recent {
    by_key: HashMap<EventKey, Published>,
    /// When each key was last seen, oldest first; a key seen again is queued again, and its
    /// older entry is skipped when it reaches the front.
    seen: VecDeque<(Instant, EventKey)>,
}

impl Recent {
    fn forget_expired(&mut self, now: Instant) {
        while let Some((seen, key)) = self.seen.front() {
            if now.duration_since(*seen) < SERIES_WINDOW {
                return;
            }
            let expired = self
                .by_key
                .get(key)
                .is_some_and(|published| now.duration_since(published.last_seen) >= SERIES_WINDOW);
            if expired {
                self.by_key.remove(key);
            }
            self.seen.pop_front();
        }
    }

    /// Counts a repeat of `key` and returns its Event's name and new count, or `None` when the
    /// event is new.
    fn repeat(&mut self, key: &EventKey, now: Instant) -> Option<(String, i32)> {
        let published = self.by_key.get_mut(key)?;
        published.count += 1;
        published.last_seen = now;
        let repeat = (published.name.clone(), published.count);
        self.seen.push_back((now, key.clone()));
        Some(repeat)
    }

    fn remember(&mut self, key: EventKey, name: String, now: Instant) {
        self.seen.push_back((now, key.clone()));
        self.by_key.insert(
            key,
            Published {
                name,
                count: 1,
                last_seen: now,
            },
        );
    }
}

/// Publishes events, counting repeats in series.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

impl EventRecorder {
    /// A recorder publishing as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Publishes `occurrence`: a new Event, or one more in the series of the same event.
    ///
    /// # Errors
    /// The API server's answer when it refused the Event.
    pub async fn publish(&self, occurrence: &Occurrence) -> Result<(), kube::Error> {
        let key = EventKey {
            type_: occurrence.type_,
            reason: occurrence.reason.clone(),
            note: occurrence.note.clone(),
            regarding: ReferenceKey::from(&occurrence.regarding),
            related: occurrence.related.as_ref().map(ReferenceKey::from),
        };
        let now = Instant::now();
        let repeat = {
            let mut recent = self.recent();
            recent.forget_expired(now);
            recent.repeat(&key, now)
        };

        let events = self.api(&occurrence.regarding);
        if let Some((name, count)) = repeat {
            match count_repeat(&events, &name, count).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                counted => return counted,
            }
        }
        let created = events
            .create(&PostParams::default(), &self.new_event(occurrence))
            .await?;
        let name = created.metadata.name.unwrap_or_default();
        self.recent().remember(key, name, now);
        Ok(())
    }

    fn new_event(&self, occurrence: &Occurrence) -> Event {
        let regarding = &occurrence.regarding;
        Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", regarding.name.as_deref().unwrap_or("event"))),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            type_: Some(occurrence.type_.to_owned()),
            reason: Some(occurrence.reason.clone()),
            action: Some(occurrence.reason.clone()),
            note: Some(occurrence.note.clone()),
            regarding: Some(regarding.clone()),
            related: occurrence.related.clone(),
            event_time: Some(MicroTime(Timestamp::now())),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone()),
            ..Event::default()
        }
    }

    fn api(&self, regarding: &ObjectReference) -> Api<Event> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::namespaced(self.client.clone(), namespace)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn count_repeat(events: &Api<Event>, name: &str, count: i32) -> Result<(), kube::Error> {
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(Timestamp::now()),
    };
    events
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "series": series })),
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> EventKey {
        EventKey {
            type_: "Normal",
            reason: reason.to_owned(),
            note: String::new(),
            regarding: ReferenceKey::from(&ObjectReference::default()),
            related: None,
        }
    }

    #[test]
    fn a_repeat_within_the_window_is_counted_and_keeps_its_event_alive() {
        let start = Instant::now();
        let mut recent = Recent::default();
        recent.remember(key("Registered"), "host.1".into(), start);

        let later = start + SERIES_WINDOW / 2;
        recent.forget_expired(later);
        assert_eq!(
            recent.repeat(&key("Registered"), later),
            Some(("host.1".into(), 2))
        );

        // Past the first sighting's window but within the repeat's: still the same event.
        let after_first_window = start + SERIES_WINDOW + Duration::from_secs(1);
        recent.forget_expired(after_first_window);
        assert_eq!(
            recent.repeat(&key("Registered"), after_first_window),
            Some(("host.1".into(), 3))
        );
        assert_eq!(recent.repeat(&key("Inspected"), after_first_window), None);
    }

    #[test]
    fn events_not_seen_for_the_window_are_forgotten() {
        let start = Instant::now();
        let mut recent = Recent::default();
        for (index, reason) in ["A", "B", "C"].into_iter().enumerate() {
            recent.remember(key(reason), format!("host.{index}"), start);
        }
        let fresh = start + SERIES_WINDOW - Duration::from_secs(1);
        recent.remember(key("D"), "host.3".into(), fresh);

        recent.forget_expired(start + SERIES_WINDOW);

        assert_eq!(recent.by_key.len(), 1);
        assert_eq!(recent.seen.len(), 1);
        assert!(recent.by_key.contains_key(&key("D")));
    }
}
