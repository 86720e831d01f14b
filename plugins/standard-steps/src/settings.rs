//! The plugin's configuration: how long each kind of wait may last.
//!
//! | key                              | default | bounds                                              |
//! |----------------------------------|---------|-----------------------------------------------------|
//! | `agent-boot-timeout-seconds`     | 600     | booting the deploy media until the agent checks in  |
//! | `agent-command-timeout-seconds`  | 7200    | one deploy agent command, e.g. writing an image     |
//! | `driver-timeout-seconds`         | 600     | one driver operation (power, media, boot device)    |
//! | `soft-power-off-timeout-seconds` | 180     | a graceful shutdown before power is cut             |

use ingot_plugin_sdk::host::Host;
use ingot_plugin_sdk::steps::StepError;

/// Config key bounding the wait for the deploy agent after booting the
/// deploy media.
pub const AGENT_BOOT_TIMEOUT: &str = "agent-boot-timeout-seconds";

/// Config key bounding the wait for one deploy agent command.
pub const AGENT_COMMAND_TIMEOUT: &str = "agent-command-timeout-seconds";

/// Config key bounding the wait for one driver operation.
pub const DRIVER_TIMEOUT: &str = "driver-timeout-seconds";

/// Config key bounding a graceful shutdown before power is cut.
pub const SOFT_POWER_OFF_TIMEOUT: &str = "soft-power-off-timeout-seconds";

/// Longest timeout accepted: a day.
const MAX_SECONDS: u64 = 86_400;

/// Timeouts of the steps, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// From starting to boot the deploy media until the agent checks in.
    pub agent_boot_timeout_ms: u64,
    /// For one deploy agent command to finish.
    pub agent_command_timeout_ms: u64,
    /// For one driver operation to complete.
    pub driver_timeout_ms: u64,
    /// For a graceful shutdown, before power is cut.
    pub soft_power_off_timeout_ms: u64,
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A timeout that is not a whole number of seconds in range.
    #[error(
        "config {key} is {value:?}: expected a whole number of seconds from 1 to {MAX_SECONDS}"
    )]
    NotSeconds {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
}

impl From<SettingsError> for StepError {
    fn from(error: SettingsError) -> Self {
        Self::InvalidInput(error.to_string())
    }
}

impl Settings {
    /// Reads the configuration, with defaults for unset keys.
    pub fn load(host: &impl Host) -> Result<Self, SettingsError> {
        Ok(Self {
            agent_boot_timeout_ms: timeout_ms(host, AGENT_BOOT_TIMEOUT, 600)?,
            agent_command_timeout_ms: timeout_ms(host, AGENT_COMMAND_TIMEOUT, 7_200)?,
            driver_timeout_ms: timeout_ms(host, DRIVER_TIMEOUT, 600)?,
            soft_power_off_timeout_ms: timeout_ms(host, SOFT_POWER_OFF_TIMEOUT, 180)?,
        })
    }
}

fn timeout_ms(
    host: &impl Host,
    key: &'static str,
    default_seconds: u64,
) -> Result<u64, SettingsError> {
    let Some(value) = host.config(key) else {
        return Ok(default_seconds * 1_000);
    };

    match value.trim().parse::<u64>() {
        Ok(seconds) if (1..=MAX_SECONDS).contains(&seconds) => Ok(seconds * 1_000),
        _ => Err(SettingsError::NotSeconds { key, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingot_plugin_sdk::mock::MockHost;

    #[test]
    fn unset_keys_take_their_defaults() {
        let settings = Settings::load(&MockHost::new());

        assert_eq!(
            settings,
            Ok(Settings {
                agent_boot_timeout_ms: 600_000,
                agent_command_timeout_ms: 7_200_000,
                driver_timeout_ms: 600_000,
                soft_power_off_timeout_ms: 180_000,
            })
        );
    }

    #[test]
    fn configured_timeouts_are_read_in_seconds() {
        let host = MockHost::new()
            .with_config(AGENT_BOOT_TIMEOUT, "1200")
            .with_config(AGENT_COMMAND_TIMEOUT, "3600")
            .with_config(DRIVER_TIMEOUT, " 30 ")
            .with_config(SOFT_POWER_OFF_TIMEOUT, "5");

        let settings = Settings::load(&host).expect("valid config");

        assert_eq!(settings.agent_boot_timeout_ms, 1_200_000);
        assert_eq!(settings.agent_command_timeout_ms, 3_600_000);
        assert_eq!(settings.driver_timeout_ms, 30_000);
        assert_eq!(settings.soft_power_off_timeout_ms, 5_000);
    }

    #[test]
    fn timeouts_out_of_range_or_not_numbers_are_refused() {
        for value in ["0", "-5", "ten", "86401", "1.5"] {
            let host = MockHost::new().with_config(AGENT_BOOT_TIMEOUT, value);

            let error = Settings::load(&host).expect_err(value);

            assert_eq!(
                error.to_string(),
                format!(
                    "config agent-boot-timeout-seconds is {value:?}: expected a whole number of seconds from 1 to 86400"
                )
            );
        }
    }
}
