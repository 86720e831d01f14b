//! Metadata erase: removes partition tables and filesystem signatures, like Ironic's
//! metadata cleaning, without the cost of overwriting whole disks.
//!
//! Signatures live near the start of a device (MBR, primary GPT, most superblocks, LVM and
//! md 1.1/1.2 headers, ISO 9660 at 32 KiB, btrfs at 64 KiB), near its end (backup GPT, md
//! 0.90/1.0, ZFS labels) and in a few fixed places (btrfs's first backup superblock at
//! 64 MiB). Each partition is wiped the same way before the disk itself, so recreating the
//! same table later cannot bring old filesystems back.

use crate::disk::{self, Disk, MIB};
use crate::partition::{self, Span};

/// Bytes cleared at each end of a device or partition.
const EDGE: u64 = MIB;

/// Offset and size of btrfs's first backup superblock.
const BTRFS_BACKUP: (u64, u64) = (64 * MIB, 4096);

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Clearing a range failed.
    #[error("cannot clear metadata")]
    Disk(#[from] disk::Error),
}

/// Erases the metadata of one disk; returns the partitions that were wiped.
pub fn erase_disk(disk: &mut Disk) -> Result<Vec<Span>, Error> {
    // A damaged table must not stop the wipe: the whole-disk pass below still clears it.
    let partitions = match partition::read_partitions(disk) {
        Ok(Some((_, spans))) => spans,
        Ok(None) => Vec::new(),
        Err(error) => {
            tracing::warn!(error = %error, "partition table unreadable; wiping the disk edges only");
            Vec::new()
        }
    };

    let whole = Span {
        start: 0,
        len: disk.size(),
    };
    for span in partitions.iter().chain(std::iter::once(&whole)) {
        let Some(span) = clamp(*span, disk.size()) else {
            continue;
        };
        wipe_span(disk, span)?;
    }
    disk.sync()?;
    Ok(partitions)
}

fn clamp(span: Span, size: u64) -> Option<Span> {
    let end = span.start.saturating_add(span.len).min(size);
    (end > span.start).then(|| Span {
        start: span.start,
        len: end - span.start,
    })
}

fn wipe_span(disk: &mut Disk, span: Span) -> Result<(), Error> {
    if span.len <= 2 * EDGE {
        disk.zero_range(span.start, span.len)?;
        return Ok(());
    }
    disk.zero_range(span.start, EDGE)?;
    disk.zero_range(span.start + span.len - EDGE, EDGE)?;
    let (backup_at, backup_len) = BTRFS_BACKUP;
    if span.len > backup_at + backup_len + EDGE {
        disk.zero_range(span.start + backup_at, backup_len)?;
    }
    Ok(())
}
