//! Host-side bindings generated from the `ingot:plugin@0.1.0` WIT package.
//!
//! `imports` covers every host interface and the shared types once; the
//! three world modules reuse them, so a `HardwareDetails` or `HostRef` is the
//! same Rust type whichever world a plugin implements. Imports are async (the
//! transports do I/O and must stay cancellable by the call deadline) and
//! trappable (a host bug or a broken invariant ends the call instead of
//! answering the guest).

/// Every host import and the shared types.
pub mod imports {
    wasmtime::component::bindgen!({
        inline: "
            package ingot:host;

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
        world: "ingot:host/imports",
        imports: { default: async | trappable },
        with: {
            "ingot:plugin/bmc-secret.session-keys": crate::secret::SessionKeys,
        },
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}

macro_rules! world_bindings {
    ($world:literal, { $($interface:literal: $shared:ident),* $(,)? }) => {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: $world,
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                $($interface: crate::bindings::imports::ingot::plugin::$shared,)*
            },
            additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        });
    };
}

/// The `bmc-driver` world.
pub mod bmc_driver {
    world_bindings!("ingot:plugin/bmc-driver@0.1.0", {
        "ingot:plugin/types": types,
        "ingot:plugin/log": log,
        "ingot:plugin/clock": clock,
        "ingot:plugin/config": config,
        "ingot:plugin/kv": kv,
        "ingot:plugin/transport-types": transport_types,
        "ingot:plugin/bmc-http": bmc_http,
        "ingot:plugin/bmc-datagram": bmc_datagram,
        "ingot:plugin/bmc-secret": bmc_secret,
        "ingot:plugin/bmc-account": bmc_account,
    });
}

/// The `host-selector` world.
pub mod host_selector {
    world_bindings!("ingot:plugin/host-selector@0.1.0", {
        "ingot:plugin/types": types,
        "ingot:plugin/log": log,
        "ingot:plugin/clock": clock,
        "ingot:plugin/config": config,
    });
}

/// The `provisioning-steps` world.
pub mod provisioning_steps {
    world_bindings!("ingot:plugin/provisioning-steps@0.1.0", {
        "ingot:plugin/types": types,
        "ingot:plugin/log": log,
        "ingot:plugin/clock": clock,
        "ingot:plugin/config": config,
        "ingot:plugin/kv": kv,
        "ingot:plugin/host-control": host_control,
        "ingot:plugin/deploy-agent": deploy_agent,
    });
}

pub use bmc_driver::exports::ingot::plugin::driver;
pub use host_selector::exports::ingot::plugin::selection;
pub use imports::ingot::plugin::types;
pub use provisioning_steps::exports::ingot::plugin::steps;
