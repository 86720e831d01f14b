//! Raw bindings generated from the `ingot:plugin@0.1.0` WIT package.
//!
//! `imports` holds every host interface and the shared types; each world
//! module adds only its exported interface and reuses those types, so a
//! record such as `HardwareDetails` is the same Rust type in every world.

/// Host imports and shared types, common to every world.
pub mod imports {
    wit_bindgen::generate!({
        inline: "
            package ingot:sdk;

            world imports {
                import ingot:plugin/types@0.1.0;
                import ingot:plugin/log@0.1.0;
                import ingot:plugin/clock@0.1.0;
                import ingot:plugin/config@0.1.0;
                import ingot:plugin/kv@0.1.0;
                import ingot:plugin/bmc-http@0.1.0;
                import ingot:plugin/bmc-datagram@0.1.0;
                import ingot:plugin/bmc-secret@0.1.0;
                import ingot:plugin/bmc-account@0.1.0;
                import ingot:plugin/host-control@0.1.0;
                import ingot:plugin/deploy-agent@0.1.0;
            }
        ",
        path: "../../wit",
        world: "ingot:sdk/imports",
        generate_unused_types: true,
        generate_all,

        additional_derives: [Clone, PartialEq],
    });
}

/// Generates one world's bindings, mapping the listed shared interfaces to
/// the `imports` module so only the world's exported interface is generated.
macro_rules! world_bindings {
    ($world:literal, $macro_name:literal, $module:literal, { $($interface:literal: $shared:ident),* $(,)? }) => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: $world,
            with: {
                $($interface: crate::bindings::imports::ingot::plugin::$shared,)*
            },
            additional_derives: [Clone, PartialEq],
            pub_export_macro: true,
            export_macro_name: $macro_name,
            default_bindings_module: $module,
        });
    };
}
#[allow(unused_imports, reason = "unused when no world feature is enabled")]
pub(crate) use world_bindings;

/// The `bmc-driver` world: exports `ingot:plugin/driver`.
#[cfg(feature = "bmc-driver")]
pub mod bmc_driver {
    super::world_bindings!(
        "ingot:plugin/bmc-driver@0.1.0",
        "__export_bmc_driver_world",
        "ingot_plugin_sdk::bindings::bmc_driver",
        {
            "ingot:plugin/types@0.1.0": types,
            "ingot:plugin/log@0.1.0": log,
            "ingot:plugin/clock@0.1.0": clock,
            "ingot:plugin/config@0.1.0": config,
            "ingot:plugin/kv@0.1.0": kv,
            "ingot:plugin/transport-types@0.1.0": transport_types,
            "ingot:plugin/bmc-http@0.1.0": bmc_http,
            "ingot:plugin/bmc-datagram@0.1.0": bmc_datagram,
            "ingot:plugin/bmc-secret@0.1.0": bmc_secret,
            "ingot:plugin/bmc-account@0.1.0": bmc_account,
        }
    );
}

/// The `host-selector` world: exports `ingot:plugin/selection`.
#[cfg(feature = "host-selector")]
pub mod host_selector {
    super::world_bindings!(
        "ingot:plugin/host-selector@0.1.0",
        "__export_host_selector_world",
        "ingot_plugin_sdk::bindings::host_selector",
        {
            "ingot:plugin/types@0.1.0": types,
            "ingot:plugin/log@0.1.0": log,
            "ingot:plugin/clock@0.1.0": clock,
            "ingot:plugin/config@0.1.0": config,
        }
    );
}

/// The `provisioning-steps` world: exports `ingot:plugin/steps`.
#[cfg(feature = "provisioning-steps")]
pub mod provisioning_steps {
    super::world_bindings!(
        "ingot:plugin/provisioning-steps@0.1.0",
        "__export_provisioning_steps_world",
        "ingot_plugin_sdk::bindings::provisioning_steps",
        {
            "ingot:plugin/types@0.1.0": types,
            "ingot:plugin/log@0.1.0": log,
            "ingot:plugin/clock@0.1.0": clock,
            "ingot:plugin/config@0.1.0": config,
            "ingot:plugin/kv@0.1.0": kv,
            "ingot:plugin/host-control@0.1.0": host_control,
            "ingot:plugin/deploy-agent@0.1.0": deploy_agent,
        }
    );
}
