//! Turns for reconciles: at most a set number run at once, and the others wait in the order
//! they became due.
//!
//! kube's controller can bound its concurrency itself, but it is not fair when saturated.
//! While its workers are all busy, every object that falls due goes into an unordered set, and
//! a free worker takes the first object of that set in hash order. When the objects due keep
//! outnumbering what the workers can reconcile (hosts that ask to be looked at every second,
//! a fleet that registers at once), the same objects win every time and the rest are never
//! reconciled. Seen with kube-runtime 5.0.0: after a restart of the operator, 65 hosts of 200
//! were reconciled 39 times a second while 135 were not reconciled once in five minutes.
//!
//! A controller that runs with [`Turns`] leaves kube's concurrency unbounded, so every object
//! due is started at once, and has each reconcile wait for a turn first. Turns are handed out
//! first come, first served.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The turns of one controller. Clones share the turns.
#[derive(Clone)]
pub struct Turns {
    permits: Arc<Semaphore>,
}

/// A turn, held until it is dropped.
pub type Turn = OwnedSemaphorePermit;

impl Turns {
    /// Turns for `workers` reconciles at once (at least one).
    pub fn new(workers: u16) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(usize::from(workers.max(1)))),
        }
    }

    /// Waits for a turn; `None` once the turns are closed, when the controller stops.
    pub async fn take(&self) -> Option<Turn> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Ends every wait for a turn: a stopping controller then finishes the reconciles under
    /// way without starting the ones still waiting.
    pub fn close(&self) {
        self.permits.close();
    }

    /// `shutdown`, which also closes the turns when it resolves: the controller's own signal
    /// to stop.
    pub fn close_on<S>(&self, shutdown: S) -> impl Future<Output = ()> + Send + Sync + use<S>
    where
        S: Future<Output = ()> + Send + Sync,
    {
        let turns = self.clone();
        async move {
            shutdown.await;
            turns.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_go_in_the_order_they_were_asked_for() {
        let turns = Turns::new(1);
        let first = turns.take().await;
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();

        let waiters: Vec<_> = (0..5)
            .map(|waiter| {
                let (turns, order) = (turns.clone(), order_tx.clone());
                tokio::spawn(async move {
                    let _turn = turns.take().await;
                    order.send(waiter).ok();
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        for waiting in waiters {
            waiting.await.ok();
        }

        let order: Vec<i32> = std::iter::from_fn(|| order_rx.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn closing_ends_the_waits() {
        let turns = Turns::new(1);
        let _held = turns.take().await;
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take().await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;

        turns.close();

        assert!(
            waiting.await.unwrap_or(false),
            "the wait ended without a turn"
        );
    }
}
