//! SDK for writing ingot plugins as WebAssembly components.
//!
//! A plugin crate is a `cdylib` that enables exactly one world feature and
//! exports one implementation:
//!
//! | feature              | implement                          | export with                     |
//! |----------------------|------------------------------------|---------------------------------|
//! | `host-selector`      | [`selector::HostSelector`]         | [`export_host_selector!`]       |
//! | `bmc-driver`         | [`driver::BmcDriver`]              | [`export_bmc_driver!`]          |
//! | `provisioning-steps` | [`steps::ProvisioningSteps`]       | [`export_provisioning_steps!`]  |
//!
//! Plugin logic reaches the host through the traits in [`host`]. Inside the
//! component they are backed by [`host::ComponentHost`]; in native unit
//! tests by [`mock::MockHost`], so `cargo test` exercises the logic without
//! building a component. Build the component with
//! `cargo build --target wasm32-wasip2 --profile plugin`.
//!
//! Only one world feature may be enabled per component build: each world's
//! exports are recorded in the component type information of any component
//! built with its feature on.

pub mod bindings;
pub mod host;
#[cfg(not(target_family = "wasm"))]
pub mod mock;

#[cfg(feature = "bmc-driver")]
pub mod driver;
#[cfg(feature = "host-selector")]
pub mod selector;
#[cfg(feature = "provisioning-steps")]
pub mod steps;

pub use bindings::imports::ingot::plugin::types;
pub use wit_bindgen;
