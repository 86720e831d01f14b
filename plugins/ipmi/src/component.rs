//! The `bmc-driver` export: adapts the host's imports to the driver's
//! traits and maps errors to the WIT `driver-error`.

use ingot_plugin_sdk::driver::{
    BiosAttribute, BmcDriver, BmcFault, DriverCapabilities, DriverContext, DriverError,
};
use ingot_plugin_sdk::host::{self as sdk, BmcHost};
use ingot_plugin_sdk::types::{
    BootDevice, BootMode, BootPersistence, BootTarget, HardwareDetails, Pending, PowerAction,
    PowerState, Progress, VirtualMedia,
};

use crate::chassis::{BootDeviceSelector, BootFlags};
use crate::driver::{Driver, Outcome, PowerGoal};
use crate::error::{ErrorKind, IpmiError};
use crate::session::Retransmit;
use crate::transport::{Datagram, MacAlgorithm, Secrets, SessionKeys};

/// Schemes this driver serves; bare `host[:port]` addresses arrive as `ipmi`.
pub const SCHEMES: [&str; 2] = ["ipmi", "libvirt"];

/// Delay the host waits before asking again while power changes.
const REQUEUE_AFTER_MS: u64 = 2_000;
/// Time kept in reserve for closing the session before the call deadline.
const CLOSE_RESERVE_MS: u64 = 1_000;

/// The IPMI driver as a `bmc-driver` plugin.
pub struct IpmiDriver;

struct HostDatagram<'h, H: BmcHost>(&'h H);

struct HostSecrets<'h, H: BmcHost> {
    host: &'h H,
    username: Option<String>,
}

struct HostKeys(Box<dyn sdk::SessionKeys>);

impl<H: BmcHost> Datagram for HostDatagram<'_, H> {
    fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        self.0
            .datagram_send(payload)
            .map_err(|error| format!("{error:?}"))
    }

    fn receive(&mut self, timeout_ms: u32) -> Result<Option<Vec<u8>>, String> {
        match self.0.datagram_receive(timeout_ms) {
            Ok(datagram) => Ok(datagram),
            // The host reports a timeout as an error on some paths; for the
            // retransmission logic it is plain silence.
            Err(sdk::TransportError::Timeout) => Ok(None),
            Err(error) => Err(format!("{error:?}")),
        }
    }
}

fn host_algorithm(algorithm: MacAlgorithm) -> sdk::MacAlgorithm {
    match algorithm {
        MacAlgorithm::HmacSha1 => sdk::MacAlgorithm::HmacSha1,
        MacAlgorithm::HmacSha256 => sdk::MacAlgorithm::HmacSha256,
    }
}

impl<H: BmcHost> Secrets for HostSecrets<'_, H> {
    fn username(&mut self) -> Result<String, String> {
        self.username
            .clone()
            .ok_or_else(|| "the host holds no BMC credentials for this host".to_owned())
    }

    fn password_mac(&mut self, algorithm: MacAlgorithm, message: &[u8]) -> Result<Vec<u8>, String> {
        self.host
            .password_mac(host_algorithm(algorithm), message)
            .map_err(|error| format!("{error:?}"))
    }

    fn derive(
        &mut self,
        algorithm: MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn SessionKeys>, String> {
        let keys = self
            .host
            .derive_session_keys(host_algorithm(algorithm), sik_input)
            .map_err(|error| format!("{error:?}"))?;
        Ok(Box::new(HostKeys(keys)))
    }
}

impl SessionKeys for HostKeys {
    fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
        self.0.sik_mac(message)
    }

    fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
        self.0.integrity_mac(message)
    }

    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        self.0.encrypt(plaintext)
    }

    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.0.decrypt(data).map_err(|error| format!("{error:?}"))
    }
}

fn random_bytes(buffer: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buffer).map_err(|error| error.to_string())
}

/// Retransmission fitted into the time left of this call: attempts whose
/// doubled waits would run past the deadline are dropped.
fn retransmit_within(host: &impl BmcHost) -> Retransmit {
    let mut retransmit = Retransmit::default();
    if let Some(timeout) = host.config("ipmi-timeout-ms").and_then(|v| v.parse().ok()) {
        retransmit.initial_timeout_ms = timeout;
    }
    if let Some(attempts) = host.config("ipmi-attempts").and_then(|v| v.parse().ok()) {
        retransmit.attempts = attempts;
    }
    let budget = host
        .deadline_remaining_ms()
        .saturating_sub(CLOSE_RESERVE_MS);
    let mut total = 0u64;
    let mut fitting = 0;
    let mut wait = u64::from(retransmit.initial_timeout_ms);
    while fitting < retransmit.attempts && total + wait <= budget {
        total += wait;
        wait *= 2;
        fitting += 1;
    }
    retransmit.attempts = fitting.max(1);
    retransmit
}

fn check_scheme(ctx: &DriverContext) -> Result<(), DriverError> {
    if SCHEMES.contains(&ctx.address.scheme.as_str()) {
        Ok(())
    } else {
        Err(DriverError::InvalidRequest(format!(
            "scheme {:?} is not served by the IPMI driver; expected one of {}",
            ctx.address.scheme,
            SCHEMES.join(", ")
        )))
    }
}

fn with_driver<H: BmcHost, T>(
    host: &H,
    ctx: &DriverContext,
    operation: impl FnOnce(&mut Driver<'_>) -> Result<T, IpmiError>,
) -> Result<T, DriverError> {
    check_scheme(ctx)?;
    let mut datagram = HostDatagram(host);
    let mut secrets = HostSecrets {
        host,
        username: host.bmc_username(),
    };
    let mut random = random_bytes;
    let mut driver = Driver::new(
        &mut datagram,
        &mut secrets,
        &mut random,
        retransmit_within(host),
    );
    operation(&mut driver).map_err(|error| {
        host.log(
            sdk::Level::Warn,
            "IPMI operation failed",
            &[("error", &error.to_string())],
        );
        driver_error(&error)
    })
}

/// Maps a driver failure to the WIT error, keeping its class.
pub fn driver_error(error: &IpmiError) -> DriverError {
    let detail = error.to_string();
    let message_id = match error {
        IpmiError::Completion { code, .. } | IpmiError::SessionRefused { status: code, .. } => {
            Some(format!("{code:#04x}"))
        }
        _ => None,
    };
    match error.kind() {
        ErrorKind::Unsupported => DriverError::NotSupported(detail),
        ErrorKind::Unauthorized => DriverError::AuthenticationFailed(detail),
        ErrorKind::Unreachable => DriverError::Unreachable(detail),
        kind @ (ErrorKind::Transient | ErrorKind::Protocol) => DriverError::Bmc(BmcFault {
            http_status: None,
            message_id,
            detail,
            retryable: kind == ErrorKind::Transient,
        }),
    }
}

fn progress(outcome: Outcome) -> Progress {
    match outcome {
        Outcome::Done => Progress::Done,
        Outcome::Waiting(detail) => Progress::InProgress(Pending {
            requeue_after_ms: REQUEUE_AFTER_MS,
            detail: detail.to_owned(),
        }),
    }
}

fn not_supported(what: &str) -> DriverError {
    DriverError::NotSupported(format!("{what} is not available over IPMI"))
}

impl BmcDriver for IpmiDriver {
    fn capabilities(
        _host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<DriverCapabilities, DriverError> {
        check_scheme(ctx)?;
        Ok(DriverCapabilities {
            power: true,
            boot_once: true,
            boot_persistent: true,
            boot_targets: vec![BootTarget::Pxe, BootTarget::Disk, BootTarget::Cd],
            uefi: true,
            legacy: true,
            virtual_media: false,
            inventory: false,
            bios_attributes: false,
        })
    }

    fn power_state(host: &impl BmcHost, ctx: &DriverContext) -> Result<PowerState, DriverError> {
        let on = with_driver(host, ctx, |driver| driver.power_is_on())?;
        Ok(if on { PowerState::On } else { PowerState::Off })
    }

    fn set_power(
        host: &impl BmcHost,
        ctx: &DriverContext,
        action: PowerAction,
    ) -> Result<Progress, DriverError> {
        let goal = match action {
            PowerAction::On => PowerGoal::On,
            PowerAction::OffSoft => PowerGoal::OffSoft,
            PowerAction::OffHard => PowerGoal::OffHard,
            PowerAction::RebootHard => PowerGoal::ResetHard,
            PowerAction::RebootSoft => return Err(not_supported("a graceful restart")),
        };
        with_driver(host, ctx, |driver| driver.set_power(goal)).map(progress)
    }

    fn set_boot_device(
        host: &impl BmcHost,
        ctx: &DriverContext,
        device: BootDevice,
    ) -> Result<Progress, DriverError> {
        let selector = match device.target {
            BootTarget::Pxe => BootDeviceSelector::Pxe,
            BootTarget::Disk => BootDeviceSelector::Disk,
            BootTarget::Cd => BootDeviceSelector::Cd,
            BootTarget::UefiHttp => return Err(not_supported("UEFI HTTP boot")),
        };
        let flags = BootFlags {
            device: selector,
            persistent: device.persistence == BootPersistence::Persistent,
            efi: device.mode == BootMode::Uefi,
        };
        with_driver(host, ctx, |driver| driver.set_boot_flags(flags))?;
        Ok(Progress::Done)
    }

    fn insert_media(
        _host: &impl BmcHost,
        ctx: &DriverContext,
        _media: VirtualMedia,
    ) -> Result<Progress, DriverError> {
        check_scheme(ctx)?;
        Err(not_supported("virtual media"))
    }

    fn eject_media(_host: &impl BmcHost, ctx: &DriverContext) -> Result<Progress, DriverError> {
        check_scheme(ctx)?;
        Err(not_supported("virtual media"))
    }

    fn inventory(
        _host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<HardwareDetails, DriverError> {
        check_scheme(ctx)?;
        Err(not_supported("out-of-band inventory"))
    }

    fn bios_attributes(
        _host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<Vec<BiosAttribute>, DriverError> {
        check_scheme(ctx)?;
        Err(not_supported("reading BIOS attributes"))
    }
}

ingot_plugin_sdk::export_bmc_driver!(IpmiDriver);
