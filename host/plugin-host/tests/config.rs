//! Per-call configuration overrides reach the plugin merged over its own
//! configuration, as a `HostPolicy` binding's `config` does.

mod support;

use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::CallError;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::world::World;
use support::{candidate, claim, registry, spec};

const EXAMPLE: &str = "ingot-example-host-selection";

/// Rack A already holds one host of the group: with a high spread weight
/// the big host in rack B wins, with a spread weight of zero the smaller
/// host in rack A does.
fn spread_or_fit() -> PluginCall {
    let mut claim = claim("lab/m2", 4);
    claim.domain_usage = vec![("rack-a".into(), 1)];

    PluginCall::Select {
        claim,
        candidates: vec![
            candidate("fits-in-a", "rack-a", 8, 32),
            candidate("big-in-b", "rack-b", 64, 512),
        ],
    }
}

fn overrides(pairs: &[(&str, &str)]) -> CallScope {
    CallScope {
        config_overrides: pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..CallScope::default()
    }
}

fn chosen(reply: Result<PluginReply, CallError>) -> String {
    match reply {
        Ok(PluginReply::Choice(choice)) => choice
            .ranked
            .first()
            .map(|ranked| ranked.host.name.clone())
            .unwrap_or_default(),
        other => panic!("expected a choice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_replaces_the_plugin_value_for_one_call() {
    let registry = registry();
    let mut example = spec(EXAMPLE, World::HostSelector, Limits::for_selection());
    example.config = vec![
        ("spread-weight".into(), "1000000".into()),
        ("site".into(), "par1".into()),
    ];
    registry.load("site", example).await.expect("loads");

    let own = registry
        .call("site", spread_or_fit(), CallScope::default())
        .await;
    let overridden = registry
        .call(
            "site",
            spread_or_fit(),
            overrides(&[("spread-weight", "0")]),
        )
        .await;
    let after = registry
        .call("site", spread_or_fit(), CallScope::default())
        .await;

    assert_eq!(chosen(own), "big-in-b", "the plugin's own weight spreads");
    assert_eq!(chosen(overridden), "fits-in-a", "the override wins");
    assert_eq!(chosen(after), "big-in-b", "overrides last one call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reads_the_overridden_value_itself() {
    let registry = registry();
    registry
        .load(
            "site",
            spec(EXAMPLE, World::HostSelector, Limits::for_selection()),
        )
        .await
        .expect("loads");

    let error = registry
        .call(
            "site",
            spread_or_fit(),
            overrides(&[("spread-weight", "lots")]),
        )
        .await
        .expect_err("the plugin refuses a non-numeric weight");

    let text = error.to_string();
    assert!(matches!(error, CallError::Domain { .. }), "{text}");
    assert!(
        text.contains("spread-weight") && text.contains("lots"),
        "{text}"
    );
}
