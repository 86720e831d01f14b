//! Replacing a plugin while it is being called: no call fails, and every
//! call that starts after the swap is answered by the new version.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ingot_plugin_host::calls::PluginReply;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use support::{registry, select, spec};

const CALLERS: usize = 8;
const CALLS_AFTER_SWAP: usize = 20;

/// Which version answered, from the reasons each one gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Default,
    Example,
}

fn version(reply: &PluginReply) -> Version {
    let PluginReply::Choice(choice) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    let reasons = choice.ranked[0].reasons.join(" ");

    if reasons.contains("spread by claim identity") {
        Version::Default
    } else if reasons.contains("above the request") {
        Version::Example
    } else {
        panic!("reply from an unknown version: {reasons}")
    }
}

/// Calls until `CALLS_AFTER_SWAP` calls started after the swap have been
/// answered; returns (answers by the old version, answers by the new one).
async fn caller(registry: Arc<Registry>, swapped: Arc<AtomicBool>, index: usize) -> (usize, usize) {
    let (mut old, mut new) = (0, 0);
    let mut after_swap = 0;

    while after_swap < CALLS_AFTER_SWAP {
        let started_after_swap = swapped.load(Ordering::SeqCst);
        let reply = registry
            .call(
                "site-selector",
                select(&format!("lab/m{index}")),
                CallScope::default(),
            )
            .await
            .unwrap_or_else(|error| {
                panic!("caller {index}: a call failed during the swap: {error}")
            });

        match version(&reply) {
            Version::Default => {
                assert!(
                    !started_after_swap,
                    "caller {index}: a call started after the swap got the old version"
                );
                old += 1;
            }
            Version::Example => new += 1,
        }

        if started_after_swap {
            after_swap += 1;
        }
    }

    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_load_loses_no_call() {
    let registry = Arc::new(registry());
    registry
        .load(
            "site-selector",
            spec(
                "ingot-default-selector",
                World::HostSelector,
                Limits::for_selection(),
            ),
        )
        .await
        .expect("first version loads");

    let swapped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|index| {
            let (registry, swapped, started) = (registry.clone(), swapped.clone(), started.clone());
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                caller(registry, swapped, index).await
            })
        })
        .collect();

    while started.load(Ordering::SeqCst) < CALLERS {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let summary = registry
        .load(
            "site-selector",
            spec(
                "ingot-example-host-selection",
                World::HostSelector,
                Limits::for_selection(),
            ),
        )
        .await
        .expect("second version loads");
    swapped.store(true, Ordering::SeqCst);

    let mut old_total = 0;
    for caller in callers {
        let (old, new) = caller.await.expect("caller finished");
        assert!(
            new >= CALLS_AFTER_SWAP,
            "every caller was answered by the new version"
        );
        old_total += old;
    }

    assert!(
        old_total > 0,
        "calls ran on the old version before the swap"
    );
    assert_eq!(
        registry
            .current("site-selector")
            .map(|plugin| plugin.digest.to_string()),
        Some(summary.digest)
    );
}
