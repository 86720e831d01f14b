//! `ingot dev`: the whole provisioning flow on one machine, with nothing but the repository.
//!
//! A dev session starts the embedded API server, installs the CRDs, starts the virtual lab
//! (simulated machines with BMCs, and the image server), the BareMetalHost operator with the
//! bundled plugins and the Metal3Machine controllers, applies the manifests of
//! `examples/dev/`, and shows the fleet live. Because no Cluster API controllers run in the
//! embedded default, [`capi`] stands in for Cluster API core's MachineSet and Machine
//! behaviour.
//!
//! ```text
//!   kubectl ──▶ apiserver ◀──┬── capi stand-in (MachineSet → Machine → Metal3Machine)
//!                            ├── machine controllers (Metal3Machine → BareMetalHost claim)
//!                            ├── operator (BareMetalHost lifecycle, plugins) ──▶ lab BMCs
//!                            └── fleet view (watch BareMetalHosts, print)
//! ```

pub mod capi;
pub mod cluster;
pub mod fleet;
pub mod session;
