//! The `config-2` drive cloud-init reads on first boot.
//!
//! Laid out as OpenStack's config drive: a FAT filesystem labelled `config-2` holding
//! `openstack/latest/meta_data.json`, `user_data` and `network_data.json`, on a partition
//! appended after the image.

use crate::disk::{self, Disk, MIB};
use crate::fat::{self, Files};
use crate::partition::{self, Span};
use crate::protocol::ConfigDrive;

/// Filesystem label cloud-init looks for.
pub const LABEL: &str = "config-2";

/// Size of the config drive partition, as Ironic uses.
pub const SIZE: u64 = 64 * MIB;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The partition could not be added.
    #[error("cannot add the config drive partition")]
    Partition(#[from] partition::Error),
    /// The filesystem could not be written.
    #[error("cannot write the config drive filesystem")]
    Filesystem(#[from] fat::Error),
    /// The partition could not be cleared.
    #[error("cannot clear the config drive partition")]
    Disk(#[from] disk::Error),
}

/// The files of the drive.
pub fn files(drive: &ConfigDrive) -> Files {
    let json = |value: &serde_json::Value| {
        let value = if value.is_null() {
            serde_json::json!({})
        } else {
            value.clone()
        };
        serde_json::to_vec_pretty(&value).unwrap_or_default()
    };
    let mut files = Files::new();
    files.insert(
        "openstack/latest/meta_data.json".into(),
        json(&drive.meta_data),
    );
    if let Some(network) = &drive.network_data {
        files.insert("openstack/latest/network_data.json".into(), json(network));
    }
    if let Some(user_data) = &drive.user_data {
        files.insert(
            "openstack/latest/user_data".into(),
            user_data.clone().into_bytes(),
        );
    }
    files
}

/// Adds the config drive partition after `image_end` and writes its filesystem.
pub fn write(disk: &mut Disk, image_end: u64, drive: &ConfigDrive) -> Result<Span, Error> {
    let span = partition::append_partition(disk, image_end, SIZE, LABEL)?;
    disk.zero_range(span.start, span.len)?;
    fat::write_filesystem(disk, span.start, span.len, LABEL, &files(drive))?;
    Ok(span)
}
