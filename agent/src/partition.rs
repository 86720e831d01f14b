//! Reading MBR and GPT partition tables, and appending one partition after the last.
//!
//! Only what the agent needs: where partitions are (to wipe their signatures) and adding the
//! config drive partition after a freshly written image. Images are usually smaller than the
//! disk, so a GPT image's backup header sits in the middle of the disk; appending moves it to
//! the disk's last sector, as `sgdisk -e` would.

use crate::disk::{self, Disk, MIB};

/// Logical sector size assumed for partition tables.
pub const SECTOR: u64 = 512;

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const MBR_PROTECTIVE: u8 = 0xee;
const MBR_FAT16_LBA: u8 = 0x0e;
const MBR_TABLE: usize = 446;

/// GPT type "Microsoft basic data", in its on-disk byte order; cloud-init finds the config
/// drive by filesystem label, and this type makes the partition visible to every OS.
const BASIC_DATA_TYPE: [u8; 16] = [
    0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7,
];

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk carries no partition table.
    #[error(
        "the disk has no MBR or GPT partition table, so no partition can be added after the image"
    )]
    NoTable,
    /// The partition table has no free slot.
    #[error("the partition table has no free entry for another partition")]
    TableFull,
    /// The GPT header or entries are inconsistent.
    #[error("invalid GPT: {0}")]
    InvalidGpt(String),
    /// Not enough space after the last partition.
    #[error(
        "a partition of {wanted} bytes does not fit after offset {start} on a disk of {size} bytes"
    )]
    NoSpace {
        /// Requested partition size.
        wanted: u64,
        /// Where it would start.
        start: u64,
        /// Disk size.
        size: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Disk(#[from] disk::Error),
}

/// A partition's byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Kind of partition table found on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// DOS/MBR.
    Mbr,
    /// GUID partition table.
    Gpt,
}

/// The partitions of a disk, or `None` when it carries no table.
pub fn read_partitions(disk: &mut Disk) -> Result<Option<(TableKind, Vec<Span>)>, Error> {
    let mut mbr = [0u8; SECTOR as usize];
    disk.read_at(0, &mut mbr)?;
    if mbr[510..512] != MBR_SIGNATURE {
        return Ok(None);
    }
    let entries = mbr_entries(&mbr);
    if entries.iter().any(|e| e.kind == MBR_PROTECTIVE) {
        let gpt = Gpt::read(disk)?;
        return Ok(Some((TableKind::Gpt, gpt.spans())));
    }
    let spans = entries
        .iter()
        .filter(|e| e.kind != 0)
        .map(|e| e.span())
        .collect();
    Ok(Some((TableKind::Mbr, spans)))
}

/// Adds a partition of `len` bytes starting at the first MiB boundary after both `min_start`
/// and the end of the last existing partition. Returns its byte range.
pub fn append_partition(
    disk: &mut Disk,
    min_start: u64,
    len: u64,
    name: &str,
) -> Result<Span, Error> {
    let Some((kind, spans)) = read_partitions(disk)? else {
        return Err(Error::NoTable);
    };
    let last_end = spans
        .iter()
        .map(|s| s.start.saturating_add(s.len))
        .max()
        .unwrap_or(MIB);
    let start = min_start.max(last_end).next_multiple_of(MIB);
    let span = Span { start, len };

    match kind {
        TableKind::Mbr => append_mbr(disk, span)?,
        TableKind::Gpt => Gpt::read(disk)?.append(disk, span, name)?,
    }
    Ok(span)
}

struct MbrEntry {
    slot: usize,
    kind: u8,
    first_lba: u32,
    sectors: u32,
}

impl MbrEntry {
    fn span(&self) -> Span {
        Span {
            start: u64::from(self.first_lba) * SECTOR,
            len: u64::from(self.sectors) * SECTOR,
        }
    }
}

fn mbr_entries(mbr: &[u8]) -> Vec<MbrEntry> {
    (0..4)
        .map(|slot| {
            let at = MBR_TABLE + slot * 16;
            MbrEntry {
                slot,
                kind: mbr[at + 4],
                first_lba: le32(mbr, at + 8),
                sectors: le32(mbr, at + 12),
            }
        })
        .collect()
}

fn append_mbr(disk: &mut Disk, span: Span) -> Result<(), Error> {
    let no_space = || Error::NoSpace {
        wanted: span.len,
        start: span.start,
        size: disk.size(),
    };
    if span.start + span.len > disk.size() {
        return Err(no_space());
    }
    let first_lba = u32::try_from(span.start / SECTOR).map_err(|_| no_space())?;
    let sectors = u32::try_from(span.len / SECTOR).map_err(|_| no_space())?;

    let mut mbr = [0u8; SECTOR as usize];
    disk.read_at(0, &mut mbr)?;
    let slot = mbr_entries(&mbr)
        .into_iter()
        .find(|e| e.kind == 0)
        .ok_or(Error::TableFull)?
        .slot;
    let at = MBR_TABLE + slot * 16;
    let entry = &mut mbr[at..at + 16];
    entry.fill(0);
    // CHS fields set to the "use LBA" marker, as every modern tool does.
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = MBR_FAT16_LBA;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&first_lba.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk.write_at(0, &mbr)?;
    disk.flush()?;
    Ok(())
}

/// The primary GPT header and its entry array.
struct Gpt {
    header: Vec<u8>,
    entries: Vec<u8>,
}

impl Gpt {
    fn read(disk: &mut Disk) -> Result<Self, Error> {
        let mut header = vec![0u8; SECTOR as usize];
        disk.read_at(SECTOR, &mut header)?;
        if &header[..8] != GPT_SIGNATURE {
            return Err(Error::InvalidGpt(
                "protective MBR without a GPT header at LBA 1".into(),
            ));
        }
        let header_size = le32(&header, 12) as usize;
        if !(92..=SECTOR as usize).contains(&header_size) {
            return Err(Error::InvalidGpt(format!("header size {header_size}")));
        }
        header.truncate(header_size);

        let count = u64::from(le32(&header, 80));
        let entry_size = u64::from(le32(&header, 84));
        if entry_size < 128 || count * entry_size > 4 * MIB {
            return Err(Error::InvalidGpt(format!(
                "{count} entries of {entry_size} bytes"
            )));
        }
        let mut entries = vec![0u8; (count * entry_size) as usize];
        disk.read_at(le64(&header, 72).saturating_mul(SECTOR), &mut entries)?;
        if crc32fast::hash(&entries) != le32(&header, 88) {
            return Err(Error::InvalidGpt(
                "partition entry array checksum mismatch".into(),
            ));
        }
        Ok(Self { header, entries })
    }

    fn entry_size(&self) -> usize {
        le32(&self.header, 84) as usize
    }

    fn spans(&self) -> Vec<Span> {
        self.entries
            .chunks_exact(self.entry_size())
            .filter(|entry| entry[..16].iter().any(|b| *b != 0))
            .map(|entry| {
                let first = le64(entry, 32);
                let last = le64(entry, 40);
                // Saturating: a corrupt table must not overflow, only look huge.
                Span {
                    start: first.saturating_mul(SECTOR),
                    len: last
                        .saturating_sub(first)
                        .saturating_add(1)
                        .saturating_mul(SECTOR),
                }
            })
            .collect()
    }

    fn append(mut self, disk: &mut Disk, span: Span, name: &str) -> Result<(), Error> {
        let no_space = || Error::NoSpace {
            wanted: span.len,
            start: span.start,
            size: disk.size(),
        };
        let last_lba = (disk.size() / SECTOR).checked_sub(1).ok_or_else(no_space)?;
        let entry_sectors = (self.entries.len() as u64).div_ceil(SECTOR);
        let backup_entries_lba = last_lba.checked_sub(entry_sectors).ok_or_else(no_space)?;
        let last_usable = backup_entries_lba.checked_sub(1).ok_or_else(no_space)?;
        let first = span.start / SECTOR;
        let last = (span.start + span.len) / SECTOR - 1;
        if last > last_usable {
            return Err(Error::NoSpace {
                wanted: span.len,
                start: span.start,
                size: disk.size(),
            });
        }

        let entry_size = self.entry_size();
        let free = self
            .entries
            .chunks_exact_mut(entry_size)
            .find(|e| e[..16].iter().all(|b| *b == 0));
        let entry = free.ok_or(Error::TableFull)?;
        entry.fill(0);
        entry[..16].copy_from_slice(&BASIC_DATA_TYPE);
        entry[16..32].copy_from_slice(&uuid_to_gpt_bytes(uuid::Uuid::new_v4()));
        entry[32..40].copy_from_slice(&first.to_le_bytes());
        entry[40..48].copy_from_slice(&last.to_le_bytes());
        for (slot, unit) in name.encode_utf16().take(36).enumerate() {
            entry[56 + slot * 2..58 + slot * 2].copy_from_slice(&unit.to_le_bytes());
        }

        let old_backup = le64(&self.header, 32);
        let entries_crc = crc32fast::hash(&self.entries);
        put64(&mut self.header, 32, last_lba);
        put64(&mut self.header, 48, last_usable);
        put32(&mut self.header, 88, entries_crc);
        let primary = with_crc(self.header.clone());

        let mut backup = self.header.clone();
        put64(&mut backup, 24, last_lba);
        put64(&mut backup, 32, 1);
        put64(&mut backup, 72, backup_entries_lba);
        let backup = with_crc(backup);

        // The image's own backup header would otherwise be found by tools scanning for GPTs.
        if old_backup != last_lba && old_backup > 1 && old_backup < last_lba {
            disk.write_at(old_backup * SECTOR, &[0u8; SECTOR as usize])?;
        }
        disk.write_at(le64(&primary, 72) * SECTOR, &self.entries)?;
        disk.write_at(SECTOR, &primary)?;
        disk.write_at(backup_entries_lba * SECTOR, &self.entries)?;
        disk.write_at(last_lba * SECTOR, &backup)?;
        disk.flush()?;
        Ok(())
    }
}

/// Header bytes with their CRC field recomputed.
fn with_crc(mut header: Vec<u8>) -> Vec<u8> {
    put32(&mut header, 16, 0);
    let crc = crc32fast::hash(&header);
    put32(&mut header, 16, crc);
    header
}

/// GPT stores the first three UUID fields little-endian.
fn uuid_to_gpt_bytes(id: uuid::Uuid) -> [u8; 16] {
    let (a, b, c, d) = id.as_fields();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.to_le_bytes());
    out[4..6].copy_from_slice(&b.to_le_bytes());
    out[6..8].copy_from_slice(&c.to_le_bytes());
    out[8..].copy_from_slice(d);
    out
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
