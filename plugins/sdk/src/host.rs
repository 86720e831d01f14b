//! The host's imports behind Rust traits.
//!
//! Plugin logic takes `&impl Host` (or [`BmcHost`], [`StepHost`]) instead of
//! calling the generated import functions directly, so the same code runs
//! inside the component with [`ComponentHost`] and in native unit tests with
//! [`crate::mock::MockHost`].

use crate::bindings::imports::ingot::plugin::{
    bmc_account, bmc_datagram, bmc_http, bmc_secret, clock, config, deploy_agent, host_control, kv,
    log,
};
use crate::types::{BootDevice, PowerAction, PowerState, Progress, VirtualMedia};

pub use bmc_http::{Credentials, Request as HttpRequest, Response as HttpResponse};
pub use bmc_secret::{MacAlgorithm, SecretError};
pub use deploy_agent::{AgentError, Command as AgentCommand, CommandStatus};
pub use host_control::ControlError;
pub use kv::KvError;
pub use log::Level;

pub use crate::bindings::imports::ingot::plugin::transport_types::TransportError;

/// Imports every world has: logging, time and configuration.
pub trait Host {
    /// Emits a log record; the host adds the plugin's identity.
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);

    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> u64;

    /// Milliseconds left before the host interrupts this call.
    fn deadline_remaining_ms(&self) -> u64;

    /// A configuration value.
    fn config(&self, key: &str) -> Option<String>;

    /// Every configuration entry, sorted by key.
    fn config_entries(&self) -> Vec<(String, String)>;
}

/// The key-value store scoped to this plugin and the current host.
pub trait KvStore {
    /// Reads a value.
    fn kv_get(&self, key: &str) -> Option<Vec<u8>>;

    /// Writes a value.
    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;

    /// Removes a value.
    fn kv_delete(&self, key: &str);
}

/// Keys of one RMCP+ session, held by the host.
pub trait SessionKeys {
    /// HMAC keyed by the session integrity key.
    fn sik_mac(&self, message: &[u8]) -> Vec<u8>;

    /// Truncated HMAC keyed by K1, for packet integrity.
    fn integrity_mac(&self, message: &[u8]) -> Vec<u8>;

    /// AES-CBC-128 encryption keyed by K2; returns IV followed by ciphertext.
    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8>;

    /// Reverses [`SessionKeys::encrypt`].
    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, SecretError>;
}

/// Imports of the `bmc-driver` world: transports to this host's BMC and
/// password-keyed MACs.
pub trait BmcHost: Host + KvStore {
    /// Sends one HTTP request to the BMC.
    fn http_send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError>;

    /// Logs in with the BMC credentials substituted by the host; see the WIT
    /// docs of `bmc-http.login`.
    fn http_login(
        &self,
        request: &HttpRequest,
        token_header: &str,
    ) -> Result<HttpResponse, TransportError>;

    /// Forgets the stored session token.
    fn http_forget_session(&self);

    /// Sends one datagram to the BMC.
    fn datagram_send(&self, payload: &[u8]) -> Result<(), TransportError>;

    /// Waits up to `timeout_ms` for one datagram from the BMC.
    fn datagram_receive(&self, timeout_ms: u32) -> Result<Option<Vec<u8>>, TransportError>;

    /// The BMC user name, or none when the host holds no credentials.
    fn bmc_username(&self) -> Option<String>;

    /// HMAC of `message` keyed by the BMC password.
    fn password_mac(&self, algorithm: MacAlgorithm, message: &[u8])
    -> Result<Vec<u8>, SecretError>;

    /// Derives RMCP+ session keys from the SIK input; the keys stay host-side.
    fn derive_session_keys(
        &self,
        algorithm: MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn SessionKeys>, SecretError>;
}

/// Imports of the `provisioning-steps` world: the host's driver and the
/// deploy agent.
pub trait StepHost: Host + KvStore {
    /// Current power state.
    fn power_state(&self) -> Result<PowerState, ControlError>;

    /// Requests a power change.
    fn set_power(&self, action: PowerAction) -> Result<Progress, ControlError>;

    /// Sets the boot device.
    fn set_boot_device(&self, device: &BootDevice) -> Result<Progress, ControlError>;

    /// Inserts virtual media.
    fn insert_media(&self, media: &VirtualMedia) -> Result<Progress, ControlError>;

    /// Ejects all virtual media.
    fn eject_media(&self) -> Result<Progress, ControlError>;

    /// Whether the deploy agent is reachable.
    fn agent_connected(&self) -> bool;

    /// Starts an agent command and returns its id.
    fn agent_send(&self, command: &AgentCommand) -> Result<String, AgentError>;

    /// Reads the state of an agent command.
    fn agent_status(&self, command_id: &str) -> Result<CommandStatus, AgentError>;
}

/// The real host, reached through the component's imports.
///
/// Only usable inside a component: natively the generated import stubs abort.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComponentHost;

impl Host for ComponentHost {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        log::emit(level, message, &fields);
    }

    fn now_unix_ms(&self) -> u64 {
        clock::now_unix_ms()
    }

    fn deadline_remaining_ms(&self) -> u64 {
        clock::deadline_remaining_ms()
    }

    fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    fn config_entries(&self) -> Vec<(String, String)> {
        config::entries()
    }
}

impl KvStore for ComponentHost {
    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        kv::set(key, value)
    }

    fn kv_delete(&self, key: &str) {
        kv::delete(key);
    }
}

impl SessionKeys for bmc_secret::SessionKeys {
    fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
        bmc_secret::SessionKeys::sik_mac(self, message)
    }

    fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
        bmc_secret::SessionKeys::integrity_mac(self, message)
    }

    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        bmc_secret::SessionKeys::encrypt(self, plaintext)
    }

    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, SecretError> {
        bmc_secret::SessionKeys::decrypt(self, data)
    }
}

impl BmcHost for ComponentHost {
    fn http_send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        bmc_http::send(request)
    }

    fn http_login(
        &self,
        request: &HttpRequest,
        token_header: &str,
    ) -> Result<HttpResponse, TransportError> {
        bmc_http::login(request, token_header)
    }

    fn http_forget_session(&self) {
        bmc_http::forget_session();
    }

    fn datagram_send(&self, payload: &[u8]) -> Result<(), TransportError> {
        bmc_datagram::send(payload)
    }

    fn datagram_receive(&self, timeout_ms: u32) -> Result<Option<Vec<u8>>, TransportError> {
        bmc_datagram::receive(timeout_ms)
    }

    fn bmc_username(&self) -> Option<String> {
        bmc_account::username()
    }

    fn password_mac(
        &self,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        bmc_secret::password_mac(algorithm, message)
    }

    fn derive_session_keys(
        &self,
        algorithm: MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn SessionKeys>, SecretError> {
        let keys = bmc_secret::SessionKeys::derive(algorithm, sik_input)?;
        Ok(Box::new(keys))
    }
}

impl StepHost for ComponentHost {
    fn power_state(&self) -> Result<PowerState, ControlError> {
        host_control::get_power_state()
    }

    fn set_power(&self, action: PowerAction) -> Result<Progress, ControlError> {
        host_control::set_power(action)
    }

    fn set_boot_device(&self, device: &BootDevice) -> Result<Progress, ControlError> {
        host_control::set_boot_device(*device)
    }

    fn insert_media(&self, media: &VirtualMedia) -> Result<Progress, ControlError> {
        host_control::insert_media(media)
    }

    fn eject_media(&self) -> Result<Progress, ControlError> {
        host_control::eject_media()
    }

    fn agent_connected(&self) -> bool {
        deploy_agent::connected()
    }

    fn agent_send(&self, command: &AgentCommand) -> Result<String, AgentError> {
        deploy_agent::send(command)
    }

    fn agent_status(&self, command_id: &str) -> Result<CommandStatus, AgentError> {
        deploy_agent::status(command_id)
    }
}
