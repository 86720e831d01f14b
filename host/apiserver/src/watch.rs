//! Watch streams: chunked HTTP/1.1 with one JSON event per line.
//!
//! A watch either starts with synthetic `ADDED` events for the current
//! objects (`resourceVersion` absent or `0`, or `sendInitialEvents=true`,
//! which ends the initial burst with a bookmark annotated
//! `k8s.io/initial-events-end`) or resumes after a resourceVersion. Both the
//! initial events and the changes show only durable writes. A
//! resourceVersion older than the retained history is answered with HTTP 200
//! and an `ERROR` event with code 410, which makes clients re-list. Selectors
//! apply to transitions: an object that stops matching is sent as `DELETED`
//! and one that starts matching as `ADDED`. The stream stays open until
//! `timeoutSeconds`, because clients re-watch at once when it ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::{Api, ApiRequest, Target};
use crate::error::ApiError;
use crate::http::{self, Body, Format};
use crate::registry::Builtin;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind, StoredObject};
use crate::table;

/// Default stream lifetime when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often a bookmark is sent when bookmarks are allowed.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

struct Watch {
    api: Arc<Api>,
    target: Target,
    format: Format,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    columns_sent: bool,
    /// When the stream ends (`timeoutSeconds`), whether or not the client keeps reading.
    deadline: Instant,
}

/// Starts a watch and returns the streaming response.
pub fn start(
    api: Arc<Api>,
    target: &Target,
    request: &ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let format = http::negotiate(&request.accept)?;
    let (labels, fields) = api.selectors(target, &request.query)?;
    let query = &request.query;
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let requested = query.get("resourceVersion").unwrap_or_default();
    let start_rv: u64 = match requested {
        "" => 0,
        rv => rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
    };
    let send_initial = query.get("sendInitialEvents") == Some("true") || start_rv == 0;
    let end_marker = query.get("sendInitialEvents") == Some("true");

    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let watch = Watch {
        api,
        target: target.clone(),
        format,
        labels,
        fields,
        bookmarks: query.flag("allowWatchBookmarks"),
        columns_sent: false,
        deadline: Instant::now() + timeout,
    };
    tokio::spawn(watch.run(sender, start_rv, send_initial, end_marker));

    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    let content_type = if format == Format::Table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    Response::builder()
        .status(200)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private")
        .body(StreamBody::new(stream).boxed())
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn line(kind: &str, object: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
}

/// Counts a watch as open for as long as its task lives.
struct OpenWatch(Arc<AtomicUsize>);

impl OpenWatch {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch {
    async fn run(
        mut self,
        sender: mpsc::Sender<Bytes>,
        start_rv: u64,
        send_initial: bool,
        end_marker: bool,
    ) {
        let _open = OpenWatch::new(&self.api.open_watches);
        let mut published = self.api.store.subscribe();
        let mut last = start_rv;
        if send_initial {
            match self.initial_events(&sender, end_marker).await {
                Some(rv) => last = rv,
                None => return,
            }
        }
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            let changes = match self.api.store.changes_after(last) {
                Ok(changes) => changes,
                Err(expired) => {
                    let status = ApiError::expired(expired.to_string()).to_status();
                    self.deliver(&sender, line("ERROR", &status.to_string()))
                        .await;
                    return;
                }
            };
            for change in changes {
                last = last.max(change.rv);
                if let Some(event) = self.event_for(&change)
                    && !self.deliver(&sender, event).await
                {
                    return;
                }
            }
            tokio::select! {
                changed = published.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = ticker.tick(), if self.bookmarks && self.format != Format::Table => {
                    if !self.deliver(&sender, self.bookmark(last, false)).await {
                        return;
                    }
                }
                _ = sender.closed() => return,
            }
        }
    }

    async fn initial_events(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        end_marker: bool,
    ) -> Option<u64> {
        let store = &self.api.store;
        let namespace = self
            .target
            .namespace
            .clone()
            .filter(|_| self.target.def.namespaced);
        let key = self.target.def.storage_key();
        let durable = store.durable_list(&key, namespace.as_deref());
        let (rv, objects) = tokio::time::timeout_at(self.deadline, durable)
            .await
            .ok()??;
        for object in objects {
            if self.matches(&object)
                && let Some(event) = self.render("ADDED", &object, None)
                && !self.deliver(sender, event).await
            {
                return None;
            }
        }
        if end_marker && self.bookmarks && !self.deliver(sender, self.bookmark(rv, true)).await {
            return None;
        }
        Some(rv)
    }

    /// Queues one event for the client; false once the client is gone or the
    /// stream's deadline has passed. A client that stops reading fills the
    /// queue, and without the deadline its watch would stay open (holding a
    /// task and the changes it has yet to send) for as long as it stalls.
    async fn deliver(&self, sender: &mpsc::Sender<Bytes>, event: Bytes) -> bool {
        matches!(
            tokio::time::timeout_at(self.deadline, sender.send(event)).await,
            Ok(Ok(()))
        )
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = match self.format {
            Format::Metadata => (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            ),
            _ => (
                self.target.def.kind.clone(),
                self.target.def.api_version(&self.target.version),
            ),
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}).to_string(),
        )
    }

    fn matches(&self, object: &StoredObject) -> bool {
        if !self.labels.matches(&object.labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let value = object.value();
        let value = if self.fields.only_identity() {
            value
        } else {
            match self
                .api
                .present(&self.target.def, &self.target.version, value)
            {
                Ok(v) => v,
                Err(_) => return false,
            }
        };
        self.fields.matches_object(&value)
    }

    fn event_for(&mut self, change: &Change) -> Option<Bytes> {
        if change.key != self.target.def.storage_key() {
            return None;
        }
        if let Some(ns) = self
            .target
            .namespace
            .as_deref()
            .filter(|_| self.target.def.namespaced)
            && change.namespace != ns
        {
            return None;
        }
        let now = self.matches(&change.object);
        match change.kind {
            ChangeKind::Added => now
                .then(|| self.render("ADDED", &change.object, None))
                .flatten(),
            ChangeKind::Deleted => now
                .then(|| self.render("DELETED", &change.object, None))
                .flatten(),
            ChangeKind::Modified => {
                let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => self.render("MODIFIED", &change.object, None),
                    (false, true) => self.render("ADDED", &change.object, None),
                    (true, false) => change
                        .previous
                        .as_ref()
                        .and_then(|p| self.render("DELETED", p, Some(change.rv))),
                    (false, false) => None,
                }
            }
        }
    }

    /// Renders an event; `at` overrides the object's resourceVersion (selector exits).
    fn render(&mut self, kind: &str, object: &StoredObject, at: Option<u64>) -> Option<Bytes> {
        let def = &self.target.def;
        let raw_ok = self.format == Format::Json
            && at.is_none()
            && match def.builtin {
                None => def.storage_version == self.target.version,
                Some(Builtin::EventsV1) => false,
                Some(_) => true,
            };
        if raw_ok {
            return Some(line(kind, &object.json));
        }
        let mut value = object.value();
        if let Some(rv) = at {
            value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        }
        let value = match self.api.present(def, &self.target.version, value) {
            Ok(v) => v,
            Err(err) => return Some(line("ERROR", &err.to_status().to_string())),
        };
        let rendered = match self.format {
            Format::Json => value,
            Format::Metadata => table::partial_metadata(&value),
            Format::Table => {
                let with_columns = !self.columns_sent;
                self.columns_sent = true;
                table::table(def, &self.target.version, &[value], None, with_columns)
            }
        };
        Some(line(kind, &rendered.to_string()))
    }
}
