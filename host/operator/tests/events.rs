//! The event recorder against the embedded API server: a repeated event is counted in one
//! Event's series, a different message is an Event of its own, and an Event deleted meanwhile
//! is created again instead of failing the publish.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};

use ingot_apiserver::ApiServerBuilder;
use ingot_operator::controller::{EventRecorder, Occurrence, Reporter};

const NAMESPACE: &str = "default";

fn occurrence(note: &str) -> Occurrence {
    Occurrence {
        type_: "Warning",
        reason: "RegistrationError".into(),
        note: note.into(),
        regarding: ObjectReference {
            api_version: Some("metal3.io/v1alpha1".into()),
            kind: Some("BareMetalHost".into()),
            name: Some("node-0".into()),
            namespace: Some(NAMESPACE.into()),
            uid: Some("uid-node-0".into()),
            ..ObjectReference::default()
        },
        related: None,
    }
}

/// (note, series count) of every Event, sorted.
async fn events(api: &Api<Event>) -> Vec<(String, i32)> {
    let list = api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing events: {e}"));
    let mut seen: Vec<(String, i32)> = list
        .items
        .into_iter()
        .map(|event| {
            let count = event.series.map_or(1, |series| series.count);
            (event.note.unwrap_or_default(), count)
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test]
async fn repeats_are_counted_in_one_event_and_a_deleted_event_comes_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = ApiServerBuilder::new(dir.path())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start API server: {e}"));
    let client = server
        .client()
        .await
        .unwrap_or_else(|e| panic!("client: {e}"));
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let recorder = EventRecorder::new(
        client,
        Reporter {
            controller: "ingot-test".into(),
            instance: "test-0".into(),
        },
    );
    let publish = |note: &'static str| {
        let recorder = &recorder;
        async move {
            recorder
                .publish(&occurrence(note))
                .await
                .unwrap_or_else(|e| panic!("publish: {e}"));
        }
    };

    publish("BMC unreachable").await;
    publish("BMC unreachable").await;
    publish("BMC unreachable").await;
    publish("credentials rejected").await;
    assert_eq!(
        events(&api).await,
        [
            ("BMC unreachable".to_owned(), 3),
            ("credentials rejected".to_owned(), 1)
        ]
    );

    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting events: {e}"));
    publish("BMC unreachable").await;
    assert_eq!(events(&api).await, [("BMC unreachable".to_owned(), 1)]);
}
