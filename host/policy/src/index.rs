//! Live in-memory lists of API objects for routing, with a signal once the
//! first full listing is in.
//!
//! Routing keeps its own lists rather than reading the controllers' stores:
//! a controller's store can signal readiness to one waiter only (kube-runtime
//! keeps a single waker, and the controller itself is that waiter), so
//! waiting on it from here could hang forever.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A live list of one kind's objects.
pub struct Index<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The objects.
    pub store: Store<K>,
    listed: watch::Receiver<bool>,
}

impl<K: Resource + Clone + 'static> Index<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Waits until the first full listing is in the store.
    ///
    /// Returns early only if the feed stopped (shutdown) before that.
    pub async fn listed(&mut self) {
        let _ = self.listed.wait_for(|listed| *listed).await;
    }
}

/// An index of `api`'s objects, and the feed that fills it: the index is
/// live while the feed runs. Watch errors are retried with backoff.
pub fn index<K>(api: Api<K>) -> (Index<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let (listed_tx, listed) = watch::channel(false);

    let feed = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::InitDone) => {
                listed_tx.send_replace(true);
            }
            Err(error) => {
                tracing::warn!(error = %error, "watch for routing failed; retrying");
            }
            Ok(_) => {}
        }
        futures::future::ready(())
    });

    (Index { store, listed }, feed)
}
