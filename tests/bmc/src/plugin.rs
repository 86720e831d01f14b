//! Driving a BMC driver component through the real plugin runtime, and
//! classifying its failures into the classes the operator acts on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingot_plugin_host::CallError;
use ingot_plugin_host::bindings::driver::DriverError;
use ingot_plugin_host::bindings::types::{BmcAddress, HostRef, Progress};
use ingot_plugin_host::bmc::{BmcAccess, BmcCredentials};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::DomainError;
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::runtime::{LoadedPlugin, Runtime, RuntimeConfig};
use ingot_plugin_host::state::CallScope;

/// The class of a failed driver call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The BMC could not be reached in time.
    Unreachable,
    /// The BMC rejected the credentials.
    Unauthorized,
    /// The driver or BMC cannot do it.
    Unsupported,
    /// Retrying later may work.
    Transient,
    /// The BMC answered nonsense.
    Protocol,
    /// The address or request is wrong.
    InvalidRequest,
}

/// The class of a call's failure; `None` for failures of the plugin itself
/// (timeout, crash, resource exhaustion, denied capability). A BMC that
/// never answers is the driver's `Unreachable` error: the host ends BMC
/// exchanges ahead of the call deadline so the driver can report it.
pub fn error_class(error: &CallError) -> Option<ErrorClass> {
    match error {
        CallError::Domain {
            error: DomainError::Driver(driver),
            ..
        } => Some(driver_class(driver)),
        _ => None,
    }
}

fn driver_class(error: &DriverError) -> ErrorClass {
    match error {
        DriverError::NotSupported(_) => ErrorClass::Unsupported,
        DriverError::InvalidRequest(_) => ErrorClass::InvalidRequest,
        DriverError::Unreachable(_) => ErrorClass::Unreachable,
        DriverError::AuthenticationFailed(_) => ErrorClass::Unauthorized,
        DriverError::Bmc(fault) if fault.retryable => ErrorClass::Transient,
        DriverError::Bmc(_) | DriverError::Other(_) => ErrorClass::Protocol,
    }
}

/// Where `make plugins` puts a component, given a test's
/// `CARGO_TARGET_TMPDIR`.
pub fn component_path(target_tmpdir: &Path, crate_name: &str) -> PathBuf {
    let target_dir = target_tmpdir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    target_dir
        .join("wasm32-wasip2/plugin")
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Why a driver could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component was not built.
    #[error(
        "{path} is missing: run `make plugins` with the same CARGO_TARGET_DIR before the tests"
    )]
    Missing {
        /// Expected path.
        path: PathBuf,
    },

    /// The runtime failed to start.
    #[error("the plugin runtime did not start: {0}")]
    Runtime(String),

    /// The component was refused.
    #[error("the component was refused: {0}")]
    Prepare(String),
}

/// One driver component bound to one BMC.
pub struct DriverUnderTest {
    runtime: Arc<Runtime>,
    plugin: LoadedPlugin,
    access: BmcAccess,
}

/// A BMC address on 127.0.0.1.
pub fn address(scheme: &str, port: u16, path: &str) -> BmcAddress {
    BmcAddress {
        scheme: scheme.to_owned(),
        host: "127.0.0.1".to_owned(),
        port: Some(port),
        path: path.to_owned(),
        disable_certificate_verification: false,
    }
}

impl DriverUnderTest {
    /// Loads `crate_name`'s component and binds it to `address` with these
    /// credentials.
    ///
    /// # Errors
    /// A missing component, or a runtime that refuses it.
    pub fn load(
        target_tmpdir: &Path,
        crate_name: &str,
        address: BmcAddress,
        credentials: (&str, &str),
        limits: Limits,
    ) -> Result<Self, LoadError> {
        Self::load_with_config(
            target_tmpdir,
            crate_name,
            address,
            credentials,
            limits,
            Vec::new(),
        )
    }

    /// Like [`DriverUnderTest::load`], with plugin configuration.
    ///
    /// # Errors
    /// A missing component, or a runtime that refuses it.
    pub fn load_with_config(
        target_tmpdir: &Path,
        crate_name: &str,
        address: BmcAddress,
        credentials: (&str, &str),
        limits: Limits,
        config: Vec<(String, String)>,
    ) -> Result<Self, LoadError> {
        let path = component_path(target_tmpdir, crate_name);
        let wasm = std::fs::read(&path).map_err(|_| LoadError::Missing { path })?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(target_tmpdir.join("ingot-plugin-cache")),
            ..RuntimeConfig::default()
        })
        .map_err(|error| LoadError::Runtime(error.to_string()))?;
        let plugin = runtime
            .prepare(crate_name, &wasm, config, limits)
            .map_err(|error| LoadError::Prepare(format!("{error:?}")))?;
        let host = HostRef {
            namespace: "lab".to_owned(),
            name: "node-0".to_owned(),
            uid: "5d2c0f7e-0000-4000-8000-000000000001".to_owned(),
        };
        let access = BmcAccess {
            host,
            address,
            credentials: Some(Arc::new(BmcCredentials::new(credentials.0, credentials.1))),
            boot_mac_address: None,
        };
        Ok(Self {
            runtime: Arc::new(runtime),
            plugin,
            access,
        })
    }

    /// Makes one call.
    ///
    /// # Errors
    /// The call's failure.
    pub async fn call(&self, call: PluginCall) -> Result<PluginReply, CallError> {
        let scope = CallScope {
            host: Some(self.access.host.clone()),
            bmc: Some(self.access.clone()),
            ..CallScope::default()
        };
        self.runtime.call(&self.plugin, call, scope).await
    }

    /// Repeats a call while it reports progress, as the operator does, for
    /// at most `limit`; returns the last reply.
    ///
    /// # Errors
    /// The first failed call.
    pub async fn until_done(
        &self,
        call: PluginCall,
        limit: Duration,
    ) -> Result<PluginReply, CallError> {
        let started = Instant::now();
        loop {
            let reply = self.call(call.clone()).await?;
            let PluginReply::Progress(Progress::InProgress(pending)) = &reply else {
                return Ok(reply);
            };
            if started.elapsed() >= limit {
                return Ok(reply);
            }
            let pause = Duration::from_millis(pending.requeue_after_ms.min(500));
            tokio::time::sleep(pause).await;
        }
    }
}
