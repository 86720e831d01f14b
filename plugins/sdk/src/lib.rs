//! SDK for writing ingot plugins as WebAssembly components.
//!
//! Enable exactly one world feature (`bmc-driver`, `host-selector` or
//! `provisioning-steps`) in a plugin crate. [`bindings`] holds the raw
//! bindings generated from the `ingot:plugin@0.1.0` WIT package.

pub mod bindings;

pub use wit_bindgen;
