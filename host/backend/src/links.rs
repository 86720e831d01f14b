//! What a provisioning-steps plugin reaches through its imports: the host's BMC driver
//! (`host-control`) and the deploy agent on the host (`deploy-agent`).
//!
//! Both are bound to one host and, for the agent, to one step of one phase run: the command
//! ids the agent link hands out derive from the run and the step, so a step that sends the
//! same command again (for example after the operator restarted and lost the step's state)
//! finds the command it started before instead of starting it twice.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ingot_agent::protocol::{
    Checksum, ChecksumAlgorithm, ChecksumSource, Command, CommandResult, ConfigDrive, ImageFormat,
    WriteImage,
};
use ingot_agent_api::{AgentApi, CommandState};
use ingot_plugin_host::CallError;
use ingot_plugin_host::bindings::types::{
    BootDevice, PowerAction, PowerState, Progress, VirtualMedia,
};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::DomainError;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::state::{CallScope, DeployAgent, HostControl};
use serde::Deserialize;

use crate::records::Records;

type AgentError = ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::AgentError;
type AgentCommand = ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::Command;
type CommandStatus =
    ingot_plugin_host::bindings::imports::ingot::plugin::deploy_agent::CommandStatus;
type ControlError = ingot_plugin_host::bindings::imports::ingot::plugin::host_control::ControlError;

/// The host's BMC driver plugin, bound to the host's BMC.
#[derive(Clone)]
pub struct Driver {
    registry: Arc<Registry>,
    plugin: String,
    scope: CallScope,
}

/// A driver call that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DriverFailure(#[from] pub CallError);

impl DriverFailure {
    /// The BMC rejected the credentials.
    pub fn is_authentication(&self) -> bool {
        matches!(
            &self.0,
            CallError::Domain {
                error: DomainError::Driver(
                    ingot_plugin_host::bindings::driver::DriverError::AuthenticationFailed(_)
                ),
                ..
            }
        )
    }

    /// The driver cannot do this for this BMC.
    pub fn is_not_supported(&self) -> bool {
        matches!(
            &self.0,
            CallError::Domain {
                error: DomainError::Driver(
                    ingot_plugin_host::bindings::driver::DriverError::NotSupported(_)
                ),
                ..
            }
        )
    }

    /// The driver answered (the BMC or the request is at fault), as opposed to the plugin or
    /// the runtime failing.
    pub fn is_driver_answer(&self) -> bool {
        matches!(&self.0, CallError::Domain { .. })
    }
}

impl Driver {
    /// The driver `plugin` acting within `scope` (which names the host and its BMC).
    pub fn new(registry: Arc<Registry>, plugin: String, scope: CallScope) -> Self {
        Self {
            registry,
            plugin,
            scope,
        }
    }

    async fn call(&self, call: PluginCall) -> Result<PluginReply, DriverFailure> {
        Ok(self
            .registry
            .call(&self.plugin, call, self.scope.clone())
            .await?)
    }

    /// The power state.
    pub async fn power_state(&self) -> Result<PowerState, DriverFailure> {
        match self.call(PluginCall::GetPowerState).await? {
            PluginReply::PowerState(state) => Ok(state),
            other => Err(self.unexpected("get-power-state", &other)),
        }
    }

    /// Requests a power change.
    pub async fn set_power(&self, action: PowerAction) -> Result<Progress, DriverFailure> {
        self.progress("set-power", PluginCall::SetPower(action))
            .await
    }

    /// Reads the hardware out of band.
    pub async fn inventory(
        &self,
    ) -> Result<ingot_plugin_host::bindings::types::HardwareDetails, DriverFailure> {
        match self.call(PluginCall::Inventory).await? {
            PluginReply::Inventory(details) => Ok(*details),
            other => Err(self.unexpected("inventory", &other)),
        }
    }

    async fn progress(&self, function: &str, call: PluginCall) -> Result<Progress, DriverFailure> {
        match self.call(call).await? {
            PluginReply::Progress(progress) => Ok(progress),
            other => Err(self.unexpected(function, &other)),
        }
    }

    fn unexpected(&self, function: &str, reply: &PluginReply) -> DriverFailure {
        DriverFailure(CallError::Crashed {
            plugin: self.plugin.clone(),
            reason: format!("{function} answered with an unexpected reply: {reply:?}"),
        })
    }
}

fn control_error(failure: DriverFailure) -> ControlError {
    if failure.is_not_supported() {
        return ControlError::NotSupported(failure.to_string());
    }
    ControlError::Driver(failure.to_string())
}

impl HostControl for Driver {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, ControlError>> {
        async move { Driver::power_state(self).await.map_err(control_error) }.boxed()
    }

    fn set_power(&self, action: PowerAction) -> BoxFuture<'_, Result<Progress, ControlError>> {
        async move { Driver::set_power(self, action).await.map_err(control_error) }.boxed()
    }

    fn set_boot_device(&self, device: BootDevice) -> BoxFuture<'_, Result<Progress, ControlError>> {
        async move {
            self.progress("set-boot-device", PluginCall::SetBootDevice(device))
                .await
                .map_err(control_error)
        }
        .boxed()
    }

    fn insert_media(&self, media: VirtualMedia) -> BoxFuture<'_, Result<Progress, ControlError>> {
        async move {
            self.progress("insert-media", PluginCall::InsertMedia(media))
                .await
                .map_err(control_error)
        }
        .boxed()
    }

    fn eject_media(&self) -> BoxFuture<'_, Result<Progress, ControlError>> {
        async move {
            self.progress("eject-media", PluginCall::EjectMedia)
                .await
                .map_err(control_error)
        }
        .boxed()
    }
}

/// What the host adds to an image write: the plugin names the image, the host the disk and
/// the config drive, so user data never passes through a plugin.
#[derive(Debug, Clone, Default)]
pub struct DeployExtras {
    /// Which disk receives the image.
    pub root_device_hints: ingot_agent::hints::RootDeviceHints,
    /// The config drive, when the host has user data, network data or metadata.
    pub config_drive: Option<ConfigDrive>,
}

/// The deploy agent of one host, as seen from one step of one phase run.
pub struct AgentLink {
    /// The agent API.
    pub agent: Arc<AgentApi>,
    /// The records, to keep the hardware an inventory reports.
    pub records: Arc<Records>,
    /// The host's UID: its name in the agent API and in the records.
    pub host: String,
    /// The host as people know it, `namespace/name`, for messages.
    pub host_name: String,
    /// Prefix of command ids: the run id and the step name.
    pub id_prefix: String,
    /// What the host adds to image writes.
    pub extras: Arc<DeployExtras>,
}

/// Arguments of `write-image` as a steps plugin sends them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteImageArgs {
    url: String,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    checksum_type: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

impl AgentLink {
    fn command(&self, command: &AgentCommand) -> Result<Command, AgentError> {
        match command.name.as_str() {
            "inventory" => Ok(Command::Inventory),
            "erase-metadata" => Ok(Command::EraseMetadata),
            "sync" => Ok(Command::Sync),
            "write-image" => self.write_image(&command.args_json),
            other => Err(AgentError::Unknown(format!(
                "the deploy agent has no command {other:?}; it knows inventory, erase-metadata, write-image and sync"
            ))),
        }
    }

    fn write_image(&self, args_json: &str) -> Result<Command, AgentError> {
        let args: WriteImageArgs = serde_json::from_str(args_json)
            .map_err(|e| AgentError::Other(format!("write-image arguments: {e}")))?;

        Ok(Command::WriteImage(Box::new(WriteImage {
            url: args.url,
            format: image_format(args.format.as_deref())?,
            checksum: args
                .checksum
                .map(|value| checksum(&value, args.checksum_type.as_deref()))
                .transpose()?,
            root_device_hints: self.extras.root_device_hints.clone(),
            config_drive: self.extras.config_drive.clone(),
        })))
    }

    fn remember_inventory(&self, result: &CommandResult) {
        let CommandResult::Inventory { hardware } = result else {
            return;
        };
        let details = serde_json::to_value(hardware)
            .and_then(serde_json::from_value::<ingot_api::metal3::HardwareDetails>);
        match details {
            Ok(details) => {
                let saved = self
                    .records
                    .update(&self.host, |record| record.inspected = Some(details));
                if let Err(error) = saved {
                    tracing::warn!(host = %self.host, error = %error, "cannot save the inspected hardware");
                }
            }
            Err(error) => {
                tracing::warn!(host = %self.host, error = %error, "the agent's inventory does not fit HardwareData");
            }
        }
    }
}

fn image_format(format: Option<&str>) -> Result<ImageFormat, AgentError> {
    match format.unwrap_or("auto") {
        "auto" | "" => Ok(ImageFormat::Auto),
        "raw" => Ok(ImageFormat::Raw),
        "qcow2" => Ok(ImageFormat::Qcow2),
        other => Err(AgentError::Other(format!(
            "the deploy agent cannot write {other:?} images; use raw or qcow2"
        ))),
    }
}

/// Metal3 puts either a digest or the URL of a checksum file in `checksum`.
fn checksum(value: &str, algorithm: Option<&str>) -> Result<Checksum, AgentError> {
    let algorithm = match algorithm.unwrap_or("auto") {
        "auto" | "" => ChecksumAlgorithm::Auto,
        "md5" => ChecksumAlgorithm::Md5,
        "sha256" => ChecksumAlgorithm::Sha256,
        "sha512" => ChecksumAlgorithm::Sha512,
        other => {
            return Err(AgentError::Other(format!(
                "unknown checksum type {other:?}; use md5, sha256, sha512 or auto"
            )));
        }
    };
    let source = if value.starts_with("http://") || value.starts_with("https://") {
        ChecksumSource::Url(value.to_owned())
    } else {
        ChecksumSource::Digest(value.to_owned())
    };
    Ok(Checksum {
        algorithm,
        value: source,
    })
}

/// What a lost command tells the step that waits for it.
fn lost_message(host_name: &str, command: &str, silent_seconds: u64, limit: Duration) -> String {
    format!(
        "the agent on {host_name} stopped responding during {command}: nothing heard from it for \
         {silent_seconds} s, more than the {} s allowed (--agent-silence-timeout-seconds); it \
         crashed, hung or lost its network",
        limit.as_secs()
    )
}

fn command_status(state: CommandState, lost: impl FnOnce(u64) -> String) -> CommandStatus {
    match state {
        CommandState::Pending => CommandStatus::Running("queued for the agent".into()),
        CommandState::Delivered => CommandStatus::Running("delivered to the agent".into()),
        CommandState::Running { progress } => CommandStatus::Running(progress_note(&progress)),
        CommandState::Succeeded { result } => {
            CommandStatus::Succeeded(serde_json::to_string(&result).unwrap_or_default())
        }
        CommandState::Failed { error } => CommandStatus::Failed(error),
        CommandState::Lost { silent_seconds } => CommandStatus::Failed(lost(silent_seconds)),
    }
}

fn progress_note(progress: &ingot_agent::protocol::Progress) -> String {
    match progress.total_bytes {
        Some(total) if total > 0 => format!(
            "{}: {}%",
            progress.step,
            progress.done_bytes.saturating_mul(100) / total
        ),
        _ => format!("{}: {} bytes", progress.step, progress.done_bytes),
    }
}

impl DeployAgent for AgentLink {
    fn connected(&self) -> BoxFuture<'_, bool> {
        async move { self.agent.connected(&self.host) }.boxed()
    }

    fn send(&self, command: AgentCommand) -> BoxFuture<'_, Result<String, AgentError>> {
        async move {
            let agent_command = self.command(&command)?;
            let id = format!("{}.{}", self.id_prefix, command.name);
            self.agent
                .enqueue(&self.host, &id, agent_command)
                .map_err(|e| AgentError::Other(e.to_string()))?;
            Ok(id)
        }
        .boxed()
    }

    fn status(&self, command_id: String) -> BoxFuture<'_, Result<CommandStatus, AgentError>> {
        async move {
            let Some(command) = command_id.strip_prefix(&format!("{}.", self.id_prefix)) else {
                return Err(AgentError::Unknown(format!(
                    "command {command_id} does not belong to this step"
                )));
            };
            let state = self
                .agent
                .status(&self.host, &command_id)
                .map_err(|e| AgentError::Unknown(e.to_string()))?;
            if let CommandState::Succeeded { result } = &state {
                self.remember_inventory(result);
            }
            let limit = self.agent.silence_limit();
            Ok(command_status(state, |silent_seconds| {
                lost_message(&self.host_name, command, silent_seconds, limit)
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_command_fails_naming_the_host_the_command_and_the_limit() {
        let status = command_status(CommandState::Lost { silent_seconds: 61 }, |silent| {
            lost_message(
                "metal3/node-7",
                "write-image",
                silent,
                Duration::from_secs(60),
            )
        });

        assert_eq!(
            status,
            CommandStatus::Failed(
                "the agent on metal3/node-7 stopped responding during write-image: nothing \
                 heard from it for 61 s, more than the 60 s allowed \
                 (--agent-silence-timeout-seconds); it crashed, hung or lost its network"
                    .into()
            )
        );
    }

    #[test]
    fn unfinished_commands_read_as_running_with_a_progress_note() {
        let progress = ingot_agent::protocol::Progress {
            step: "writing".into(),
            done_bytes: 50,
            total_bytes: Some(200),
        };

        let status = command_status(CommandState::Running { progress }, |_| String::new());

        assert_eq!(status, CommandStatus::Running("writing: 25%".into()));
    }
}
