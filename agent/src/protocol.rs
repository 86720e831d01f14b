//! Wire protocol between the deploy agent and the operator's agent API.
//!
//! The operator owns the authoritative state. Every command carries an id chosen by the
//! operator; the agent remembers the outcome of each id it ran and answers a repeated
//! delivery with that outcome instead of running the command again. This lets an operator
//! that restarted in the middle of a step simply deliver the same command again.
//!
//! Endpoints (all under the agent API base URL, authenticated with
//! `Authorization: Bearer <per-host token>`):
//! - `POST /v1/hosts/{host}/hello` with [`Hello`], answered with [`Welcome`];
//! - `GET /v1/hosts/{host}/commands/next?wait=<seconds>` long-polls for the next
//!   [`CommandEnvelope`] (`204 No Content` when none arrived in time);
//! - `POST /v1/hosts/{host}/commands/{id}/report` with a [`Report`].

use serde::{Deserialize, Serialize};

use crate::hints::RootDeviceHints;
use crate::inventory::HardwareDetails;

/// Version of this protocol; the agent sends it and the API refuses versions it does not speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifier of a command, chosen by the operator and unique per host.
pub type CommandId = String;

/// First message of an agent after boot: who it is and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Protocol version spoken by the agent.
    pub version: u32,
    /// MAC addresses of every network interface the agent sees, lower case.
    pub macs: Vec<String>,
    /// Version string of the agent build, for diagnostics.
    pub agent_version: String,
}

/// Answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// Protocol version the API will use.
    pub version: u32,
    /// How long the agent should wait between polls when long-polling is not possible.
    pub poll_interval_seconds: u64,
}

/// A command delivered to one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEnvelope {
    /// Operator-chosen id; repeated deliveries of the same id are answered from the agent's ledger.
    pub id: CommandId,
    /// What to do.
    pub command: Command,
}

/// Work the agent can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Command {
    /// Collect the hardware inventory.
    Inventory,
    /// Remove partition tables and filesystem signatures from every disk.
    EraseMetadata,
    /// Write an operating system image to the root disk.
    WriteImage(Box<WriteImage>),
    /// Flush every disk write to stable storage.
    Sync,
}

/// Parameters of [`Command::WriteImage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteImage {
    /// Where to download the image from (`http` or `https`).
    pub url: String,
    /// Image format; `auto` looks at the first bytes.
    #[serde(default)]
    pub format: ImageFormat,
    /// Expected checksum; `None` skips verification.
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// Which disk receives the image.
    #[serde(default)]
    pub root_device_hints: RootDeviceHints,
    /// Config drive appended after the image, for cloud-init.
    #[serde(default)]
    pub config_drive: Option<ConfigDrive>,
}

/// Image formats the agent writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageFormat {
    /// Decide from the image's first bytes.
    #[default]
    Auto,
    /// A disk image written byte for byte.
    Raw,
    /// A QEMU copy-on-write image, converted while writing.
    Qcow2,
}

/// Checksum algorithms accepted for images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChecksumAlgorithm {
    /// Chosen from the length of the expected digest.
    #[default]
    Auto,
    /// MD5 (legacy, accepted for compatibility).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

/// Expected checksum of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// Digest algorithm.
    #[serde(default)]
    pub algorithm: ChecksumAlgorithm,
    /// Either the hex digest itself or the URL of a checksum file.
    pub value: ChecksumSource,
}

/// Where the expected digest comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChecksumSource {
    /// The hex digest.
    Digest(String),
    /// URL of a file in `sha256sum` or BSD format listing the image's digest.
    Url(String),
}

/// Contents of the `config-2` drive read by cloud-init.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDrive {
    /// `openstack/latest/user_data`, passed through verbatim.
    #[serde(default)]
    pub user_data: Option<String>,
    /// `openstack/latest/meta_data.json`.
    #[serde(default)]
    pub meta_data: serde_json::Value,
    /// `openstack/latest/network_data.json`.
    #[serde(default)]
    pub network_data: Option<serde_json::Value>,
}

/// What the agent tells the operator about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Report {
    /// The command is running.
    Running {
        /// How far it got.
        progress: Progress,
    },
    /// The command finished successfully.
    Succeeded {
        /// Its result.
        result: Box<CommandResult>,
    },
    /// The command failed; the message is meant for people.
    Failed {
        /// Human readable cause.
        error: String,
    },
}

/// Progress of a running command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Current step, e.g. `download`, `checksum`, `configDrive`, `sync`.
    pub step: String,
    /// Bytes processed so far in this step.
    pub done_bytes: u64,
    /// Total bytes of this step when known.
    pub total_bytes: Option<u64>,
}

/// Result of a successful command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CommandResult {
    /// Result of [`Command::Inventory`].
    Inventory {
        /// Hardware in the `HardwareData` shape.
        hardware: Box<HardwareDetails>,
    },
    /// Result of [`Command::EraseMetadata`].
    Erased {
        /// Disks whose metadata was removed.
        disks: Vec<String>,
    },
    /// Result of [`Command::WriteImage`].
    ImageWritten(ImageWritten),
    /// Result of [`Command::Sync`].
    Synced,
}

/// Details of a written image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageWritten {
    /// The disk that received the image.
    pub device: String,
    /// Format that was written.
    pub format: ImageFormat,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Size of the disk content produced (the virtual size for qcow2).
    pub image_bytes: u64,
    /// Verified digest, `algorithm:hex`, when a checksum was given.
    pub verified_checksum: Option<String>,
    /// Start of the config drive partition in bytes, when one was written.
    pub config_drive_offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_image_command_round_trips_through_json() {
        let envelope = CommandEnvelope {
            id: "provision-1".into(),
            command: Command::WriteImage(Box::new(WriteImage {
                url: "http://images/ubuntu.qcow2".into(),
                format: ImageFormat::Qcow2,
                checksum: Some(Checksum {
                    algorithm: ChecksumAlgorithm::Sha256,
                    value: ChecksumSource::Url("http://images/ubuntu.qcow2.sha256sum".into()),
                }),
                root_device_hints: RootDeviceHints {
                    serial_number: Some("S1".into()),
                    ..RootDeviceHints::default()
                },
                config_drive: None,
            })),
        };

        let json = serde_json::to_value(&envelope).unwrap_or_default();

        assert_eq!(json["command"]["type"], "writeImage");
        assert_eq!(json["command"]["rootDeviceHints"]["serialNumber"], "S1");
        let back: CommandEnvelope = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, envelope);
    }

    #[test]
    fn unit_commands_are_tagged_objects() {
        let json = serde_json::to_string(&Command::EraseMetadata).unwrap_or_default();
        assert_eq!(json, r#"{"type":"eraseMetadata"}"#);
    }
}
