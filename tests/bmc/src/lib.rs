//! Test support for the BMC driver plugins: third-party emulators started
//! on 127.0.0.1 ephemeral ports, native stand-ins for the host's BMC
//! imports, and fault-injecting servers.
//!
//! The conformance and fault tests live in `tests/`; the benchmark is
//! `cargo bench -p ingot-bmc-tests`.

pub mod http_stub;
pub mod native;
pub mod peers;
pub mod plugin;
