//! Sandboxed WebAssembly plugin runtime.
pub mod bindings;
pub mod bmc;
pub mod cache;
pub mod calls;
pub mod drivers;
pub mod error;
pub mod guard;
pub mod hardware;
pub mod inspect;
pub mod kv;
pub mod limits;
pub mod pool;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod secret;
pub mod source;
pub mod state;
pub mod transport;
pub mod world;

pub use error::CallError;
