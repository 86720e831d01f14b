//! The `bmc-driver` export: adapts the host's imports to the driver's
//! traits and maps errors to the WIT `driver-error`.

use ingot_plugin_sdk::driver::{
    AttributeValue, BiosAttribute, BmcDriver, BmcFault, DriverCapabilities, DriverContext,
    DriverError,
};
use ingot_plugin_sdk::host::{self as sdk, BmcHost};

use crate::driver::Driver;
use crate::error::{ErrorKind, RedfishError};
use crate::model::{
    BootDevice, BootTarget, HardwareDetails, PowerAction, PowerState, Progress, VirtualMedia,
};
use crate::profile::{BootInterface, Profile};
use crate::transport::{BmcHttp, Credentials, Environment, Request, Response, TransportError};

/// The Redfish driver as a `bmc-driver` plugin.
pub struct RedfishDriver;

/// The host's `bmc-http` import behind [`BmcHttp`].
pub struct HostHttp<'h, H: BmcHost>(pub &'h H);

/// The host's `kv`, `clock` and `config` imports behind [`Environment`].
pub struct HostEnvironment<'h, H: BmcHost>(pub &'h H);

fn to_host_request(request: &Request) -> sdk::HttpRequest {
    sdk::HttpRequest {
        method: request.method.to_owned(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        credentials: match request.credentials {
            Credentials::None => sdk::Credentials::None,
            Credentials::Basic => sdk::Credentials::Basic,
            Credentials::Session => sdk::Credentials::Session,
        },
    }
}

fn from_host_response(response: sdk::HttpResponse) -> Response {
    Response {
        status: response.status,
        headers: response.headers,
        body: response.body,
    }
}

fn from_host_error(error: sdk::TransportError) -> TransportError {
    match error {
        sdk::TransportError::Denied(reason) => TransportError::Denied(reason),
        sdk::TransportError::Timeout => TransportError::Timeout,
        sdk::TransportError::Connect(reason) => TransportError::Connect(reason),
        sdk::TransportError::Tls(reason) => TransportError::Tls(reason),
        sdk::TransportError::TooLarge(cap) => TransportError::TooLarge(cap),
        sdk::TransportError::NoCredentials(reason) => TransportError::NoCredentials(reason),
        sdk::TransportError::Other(reason) => TransportError::Other(reason),
    }
}

impl<H: BmcHost> BmcHttp for HostHttp<'_, H> {
    fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        self.0
            .http_send(&to_host_request(request))
            .map(from_host_response)
            .map_err(from_host_error)
    }

    fn login(&mut self, request: &Request, token_header: &str) -> Result<Response, TransportError> {
        self.0
            .http_login(&to_host_request(request), token_header)
            .map(from_host_response)
            .map_err(from_host_error)
    }

    fn forget_session(&mut self) {
        self.0.http_forget_session();
    }
}

impl<H: BmcHost> Environment for HostEnvironment<'_, H> {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.kv_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0
            .kv_set(key, value)
            .map_err(|error| format!("{error:?}"))
    }

    fn delete(&mut self, key: &str) {
        self.0.kv_delete(key);
    }

    fn now_ms(&mut self) -> u64 {
        self.0.now_unix_ms()
    }

    fn config(&mut self, key: &str) -> Option<String> {
        self.0.config(key)
    }
}

/// Maps a driver failure to the WIT error, keeping its class.
pub fn driver_error(error: &RedfishError) -> DriverError {
    let detail = error.to_string();
    match (error, error.kind()) {
        (RedfishError::Address(_) | RedfishError::SystemSelection(_), _) => {
            DriverError::InvalidRequest(detail)
        }
        (_, ErrorKind::Unsupported) => DriverError::NotSupported(detail),
        (_, ErrorKind::Unauthorized) => DriverError::AuthenticationFailed(detail),
        (_, ErrorKind::Unreachable) => DriverError::Unreachable(detail),
        (_, kind @ (ErrorKind::Transient | ErrorKind::Protocol)) => DriverError::Bmc(BmcFault {
            http_status: error.http_status(),
            message_id: error.message_id(),
            detail,
            retryable: kind == ErrorKind::Transient,
        }),
    }
}

fn with_driver<H: BmcHost, T>(
    host: &H,
    ctx: &DriverContext,
    operation: impl FnOnce(
        &mut crate::driver::Session<'_, '_, HostHttp<'_, H>, HostEnvironment<'_, H>>,
    ) -> Result<T, RedfishError>,
) -> Result<T, DriverError> {
    let mut http = HostHttp(host);
    let mut environment = HostEnvironment(host);
    let address = &ctx.address;
    let address_key = format!(
        "{}://{}:{}{}",
        address.scheme,
        address.host,
        address.port.unwrap_or(0),
        address.path
    );
    let result = Driver::new(
        &mut http,
        &mut environment,
        &address.scheme,
        &address.path,
        &address_key,
    )
    .and_then(|mut driver| driver.run(operation));
    result.map_err(|error| {
        host.log(
            sdk::Level::Warn,
            "Redfish operation failed",
            &[("error", &error.to_string()), ("scheme", &address.scheme)],
        );
        driver_error(&error)
    })
}

impl BmcDriver for RedfishDriver {
    fn capabilities(
        _host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<DriverCapabilities, DriverError> {
        let profile =
            Profile::for_scheme(&ctx.address.scheme).map_err(|error| driver_error(&error))?;
        let mut boot_targets = vec![BootTarget::Pxe, BootTarget::Disk, BootTarget::Cd];
        if profile.boot == BootInterface::UefiHttp {
            boot_targets.push(BootTarget::UefiHttp);
        }
        Ok(DriverCapabilities {
            power: true,
            boot_once: true,
            boot_persistent: true,
            boot_targets,
            uefi: true,
            legacy: true,
            virtual_media: profile.boot != BootInterface::Network,
            inventory: true,
            bios_attributes: true,
        })
    }

    fn power_state(host: &impl BmcHost, ctx: &DriverContext) -> Result<PowerState, DriverError> {
        with_driver(host, ctx, |session| Ok(session.power_state()))
    }

    fn set_power(
        host: &impl BmcHost,
        ctx: &DriverContext,
        action: PowerAction,
    ) -> Result<Progress, DriverError> {
        with_driver(host, ctx, |session| session.set_power(action))
    }

    fn set_boot_device(
        host: &impl BmcHost,
        ctx: &DriverContext,
        device: BootDevice,
    ) -> Result<Progress, DriverError> {
        with_driver(host, ctx, |session| session.set_boot_device(device))
    }

    fn insert_media(
        host: &impl BmcHost,
        ctx: &DriverContext,
        media: VirtualMedia,
    ) -> Result<Progress, DriverError> {
        let profile =
            Profile::for_scheme(&ctx.address.scheme).map_err(|error| driver_error(&error))?;
        if profile.boot == BootInterface::Network {
            // Metal3 semantics: only the virtual-media schemes boot from
            // virtual media; the others boot from the network.
            return Err(DriverError::NotSupported(format!(
                "the address scheme {} boots from the network; use a -virtualmedia scheme for virtual media",
                ctx.address.scheme
            )));
        }
        with_driver(host, ctx, |session| {
            session.insert_media(&media.image_url, media.kind)
        })
    }

    fn eject_media(host: &impl BmcHost, ctx: &DriverContext) -> Result<Progress, DriverError> {
        with_driver(host, ctx, |session| session.eject_media())
    }

    fn inventory(host: &impl BmcHost, ctx: &DriverContext) -> Result<HardwareDetails, DriverError> {
        with_driver(host, ctx, |session| session.inventory())
    }

    fn bios_attributes(
        host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<Vec<BiosAttribute>, DriverError> {
        let attributes = with_driver(host, ctx, |session| session.bios_attributes())?;
        Ok(attributes
            .into_iter()
            .map(|(name, value)| BiosAttribute {
                name,
                value: attribute_value(value),
            })
            .collect())
    }
}

fn attribute_value(value: serde_json::Value) -> AttributeValue {
    match value {
        serde_json::Value::Bool(flag) => AttributeValue::Boolean(flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => AttributeValue::Integer(integer),
            None => AttributeValue::Text(number.to_string()),
        },
        other => AttributeValue::Text(crate::json::scalar_text(&other)),
    }
}

ingot_plugin_sdk::export_bmc_driver!(RedfishDriver);
