//! A BMC driver that tries to reach addresses other than its BMC through the
//! host's HTTP transport. Each operation tries one escape and reports the
//! transport's answer as a domain error, so tests see what the plugin saw.
//!
//! - `get-power-state`: an absolute URL to the address in config `target`.
//! - `inventory`: a scheme-relative `//host:port/` path to the same address.
//! - `capabilities`: a well-behaved request to the BMC itself.

use ingot_plugin_sdk::driver::{
    BiosAttribute, BmcDriver, DriverCapabilities, DriverContext, DriverError,
};
use ingot_plugin_sdk::host::{BmcHost, Credentials, HttpRequest};
use ingot_plugin_sdk::types::{
    BootDevice, HardwareDetails, PowerAction, PowerState, Progress, VirtualMedia,
};

/// The escaping driver.
pub struct BmcEscape;

fn get(host: &impl BmcHost, path: String) -> DriverError {
    let request = HttpRequest {
        method: "GET".into(),
        path,
        headers: Vec::new(),
        body: Vec::new(),
        credentials: Credentials::Basic,
    };

    match host.http_send(&request) {
        Ok(response) => DriverError::Other(format!("reached it: status {}", response.status)),
        Err(error) => DriverError::Other(format!("transport refused: {error:?}")),
    }
}

fn target(host: &impl BmcHost) -> String {
    host.config("target")
        .unwrap_or_else(|| "127.0.0.1:9".to_owned())
}

fn unsupported() -> DriverError {
    DriverError::NotSupported("escape fixture".into())
}

impl BmcDriver for BmcEscape {
    fn capabilities(
        host: &impl BmcHost,
        _ctx: &DriverContext,
    ) -> Result<DriverCapabilities, DriverError> {
        Err(get(host, "/redfish/v1/".into()))
    }

    fn power_state(host: &impl BmcHost, _ctx: &DriverContext) -> Result<PowerState, DriverError> {
        Err(get(host, format!("http://{}/redfish/v1/", target(host))))
    }

    fn set_power(
        _host: &impl BmcHost,
        _ctx: &DriverContext,
        _action: PowerAction,
    ) -> Result<Progress, DriverError> {
        Err(unsupported())
    }

    fn set_boot_device(
        _host: &impl BmcHost,
        _ctx: &DriverContext,
        _device: BootDevice,
    ) -> Result<Progress, DriverError> {
        Err(unsupported())
    }

    fn insert_media(
        _host: &impl BmcHost,
        _ctx: &DriverContext,
        _media: VirtualMedia,
    ) -> Result<Progress, DriverError> {
        Err(unsupported())
    }

    fn eject_media(_host: &impl BmcHost, _ctx: &DriverContext) -> Result<Progress, DriverError> {
        Err(unsupported())
    }

    fn inventory(
        host: &impl BmcHost,
        _ctx: &DriverContext,
    ) -> Result<HardwareDetails, DriverError> {
        Err(get(host, format!("//{}/redfish/v1/", target(host))))
    }

    fn bios_attributes(
        _host: &impl BmcHost,
        _ctx: &DriverContext,
    ) -> Result<Vec<BiosAttribute>, DriverError> {
        Err(unsupported())
    }
}

ingot_plugin_sdk::export_bmc_driver!(BmcEscape);
