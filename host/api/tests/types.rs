//! Reading older objects and defaulting through the generated CRDs.

use ingot_api::metal3::{AutomatedCleaningMode, BareMetalHost, ProvisioningState};
use ingot_api::{crds, schema, validation};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Value, json};

fn storage_schema(kind: &str) -> JSONSchemaProps {
    let crd = crds::all()
        .expect("CRDs build")
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("kind registered");
    let version = crd
        .spec
        .versions
        .iter()
        .find(|version| version.storage)
        .expect("a storage version");
    version
        .schema
        .clone()
        .and_then(|schema| schema.open_api_v3_schema)
        .expect("schema")
}

#[test]
fn the_deprecated_ready_state_is_read_and_means_available() {
    let host: BareMetalHost = serde_json::from_value(json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "old", "namespace": "metal3"},
        "spec": {"online": true},
        "status": {"provisioning": {"state": "ready", "ID": ""}, "operationalStatus": "OK", "errorMessage": "", "poweredOn": true}
    }))
    .expect("old hosts decode");
    let state = host
        .status
        .as_ref()
        .map(|status| status.provisioning.state)
        .expect("status");
    assert_eq!(state, ProvisioningState::Ready);
    assert_eq!(state.canonical(), ProvisioningState::Available);
    let written = serde_json::to_value(&host).expect("encodes");
    assert_eq!(
        written.pointer("/status/provisioning/state"),
        Some(&json!("ready"))
    );
}

#[test]
fn removed_driver_schemes_load_but_are_refused_by_admission() {
    let host: BareMetalHost = serde_json::from_value(json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "dell", "namespace": "metal3"},
        "spec": {"online": true, "bmc": {"address": "idrac://10.0.0.5", "credentialsName": "dell-bmc"}}
    }))
    .expect("hosts with removed drivers decode");
    let errors = validation::validate_create(&host);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("use idrac-redfish or idrac-virtualmedia")
    );
}

#[test]
fn the_host_crd_defaults_the_cleaning_mode_to_metadata() {
    let schema = storage_schema("BareMetalHost");
    let mut object = json!({"spec": {"online": false}});
    schema::apply_defaults(&mut object, &schema);
    assert_eq!(
        object.pointer("/spec/automatedCleaningMode"),
        Some(&json!("metadata"))
    );

    let host_spec: ingot_api::metal3::BareMetalHostSpec =
        serde_json::from_value(object["spec"].clone()).expect("defaulted spec decodes");
    assert_eq!(
        host_spec.automated_cleaning_mode,
        Some(AutomatedCleaningMode::Metadata)
    );

    let mut explicit_null = json!({"spec": {"online": false, "automatedCleaningMode": null}});
    schema::apply_defaults(&mut explicit_null, &schema);
    assert_eq!(
        explicit_null.pointer("/spec/automatedCleaningMode"),
        Some(&json!(null)),
        "nullable fields keep an explicit null"
    );
}

#[test]
fn the_template_crd_defaults_node_reuse_to_false() {
    let schema = storage_schema("Metal3MachineTemplate");
    let mut object = json!({"spec": {"template": {"spec": {}}}});
    schema::apply_defaults(&mut object, &schema);
    assert_eq!(object.pointer("/spec/nodeReuse"), Some(&Value::Bool(false)));
}

#[test]
fn status_fields_default_to_zero_values() {
    let schema = storage_schema("BareMetalHost");
    let status = schema
        .properties
        .as_ref()
        .and_then(|properties| properties.get("status"))
        .expect("status schema");
    let error_count = status
        .properties
        .as_ref()
        .and_then(|properties| properties.get("errorCount"))
        .expect("errorCount");
    assert_eq!(
        error_count
            .default
            .as_ref()
            .map(|default| default.0.clone()),
        Some(json!(0))
    );
    let required = status.required.clone().unwrap_or_default();
    for field in [
        "errorCount",
        "errorMessage",
        "operationalStatus",
        "poweredOn",
        "provisioning",
        "provisioningFailCount",
    ] {
        assert!(
            required.iter().any(|name| name == field),
            "{field} should be required"
        );
    }
}

#[test]
fn crds_carry_short_names_printer_columns_and_the_status_subresource() {
    let crd = crds::all()
        .expect("CRDs build")
        .into_iter()
        .find(|crd| crd.spec.names.kind == "BareMetalHost")
        .expect("host CRD");
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["bmh".to_string(), "bmhost".to_string()])
    );
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Status", "State", "Consumer", "BMC", "Online", "Error", "Age"
        ]
    );
    assert!(
        version
            .subresources
            .as_ref()
            .is_some_and(|subresources| subresources.status.is_some())
    );

    let machines = crds::all()
        .expect("CRDs build")
        .into_iter()
        .find(|crd| crd.spec.names.kind == "Metal3Machine")
        .expect("m3m");
    let served: Vec<(&str, bool)> = machines
        .spec
        .versions
        .iter()
        .map(|version| (version.name.as_str(), version.storage))
        .collect();
    assert_eq!(served, [("v1beta2", true), ("v1beta1", false)]);
    assert_eq!(
        machines
            .spec
            .conversion
            .as_ref()
            .map(|conversion| conversion.strategy.as_str()),
        Some("Webhook")
    );
}
