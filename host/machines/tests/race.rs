//! Fifty machines racing for twenty hosts through three controller instances (as three
//! operator processes without leader election would): the host's consumerRef is the only
//! lock, and it holds.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use common::{
    ConsumerWatch, Lab, consumer_of, describe_hosts, eventually, eventually_showing, machine_spec,
    quick_settings,
};
use ingot_machines::Selectors;
use ingot_machines::metal3machine::{ASSOCIATE_BMH, WAITING_FOR_AVAILABLE_HOST};
use kube::ResourceExt;
use kube::api::ListParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_machines_racing_for_twenty_hosts_never_double_book() {
    let mut lab = Lab::start().await;
    lab.hosts_available(20, |_| BTreeMap::new()).await;
    lab.cluster().await;
    // Freed hosts wake waiting machines at once; the periodic look is only a fallback.
    let settings = ingot_machines::Settings {
        wait_for_host: std::time::Duration::from_secs(3),
        poll_host: std::time::Duration::from_secs(2),
        ..quick_settings()
    };
    for _ in 0..3 {
        lab.start_controllers(Selectors::default(), settings.clone())
            .await;
    }
    let double = lab.start_host_double();
    lab.cluster_infrastructure_ready().await;
    let watch = ConsumerWatch::start(&lab.client).await;

    let names: Vec<String> = (0..50).map(|index| format!("racer-{index:02}")).collect();
    for name in &names {
        lab.add_replica(name, machine_spec()).await;
    }

    let ready = |lab: &Lab| {
        let machines = lab.metal3machines();
        async move {
            let list = machines
                .list(&ListParams::default())
                .await
                .expect("list machines")
                .items;
            list.into_iter()
                .filter(|m| m.status.as_ref().and_then(|s| s.ready) == Some(true))
                .map(|m| m.name_any())
                .collect::<BTreeSet<_>>()
        }
    };
    eventually_showing(
        "20 machines ready",
        || async { ready(&lab).await.len() == 20 },
        || describe_hosts(lab.hosts()),
    )
    .await;

    let winners = ready(&lab).await;
    let losers: Vec<&String> = names
        .iter()
        .filter(|name| !winners.contains(*name))
        .collect();
    assert_eq!(losers.len(), 30);
    eventually("the 30 others wait with a clear condition", || async {
        let mut waiting = 0;
        for loser in &losers {
            let machine = lab.metal3machines().get(loser).await.expect("machine");
            let condition = machine
                .status
                .and_then(|status| status.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.condition_type == ASSOCIATE_BMH);
            let clear = condition.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(WAITING_FOR_AVAILABLE_HOST)
                    && c.message.as_deref()
                        == Some("no available host among 20: 20 claimed by other consumers")
            });
            waiting += usize::from(clear);
        }
        waiting == 30
    })
    .await;

    let released: Vec<String> = winners.iter().take(10).cloned().collect();
    for name in &released {
        lab.delete_replica(name).await;
    }
    eventually_showing(
        "10 waiting machines take the freed hosts",
        || async { ready(&lab).await.len() == 20 },
        || describe_hosts(lab.hosts()),
    )
    .await;

    let history = watch.finish();
    let provisionings = double.provisionings();
    let pairs: BTreeSet<&(String, String)> = provisionings.iter().collect();
    assert_eq!(
        provisionings.len(),
        30,
        "20 first provisionings and 10 after release"
    );
    assert_eq!(
        pairs.len(),
        30,
        "no host imaged twice for the same machine: {provisionings:?}"
    );
    // Served means imaged: a claim handed back at once (two controller instances claimed for
    // the same machine at the same moment) shows in the history but never reached the host.
    let mut served: BTreeMap<&String, usize> = BTreeMap::new();
    for (host, _) in &provisionings {
        *served.entry(host).or_default() += 1;
    }
    let reused = served.values().filter(|count| **count == 2).count();
    assert_eq!(
        reused, 10,
        "ten hosts served two machines, one after the other: {served:?} {history:?}"
    );

    let hosts = lab
        .hosts()
        .list(&ListParams::default())
        .await
        .expect("hosts")
        .items;
    let consumers: Vec<String> = hosts.iter().filter_map(consumer_of).collect();
    let distinct: BTreeSet<&String> = consumers.iter().collect();
    assert_eq!((consumers.len(), distinct.len()), (20, 20));
    lab.stop().await;
}
