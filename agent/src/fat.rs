//! A minimal FAT16 filesystem writer with long file names.
//!
//! Builds a fresh, read-mostly filesystem holding a small tree of files, which is all a config
//! drive needs. Only the metadata and the file contents are written; the caller zeroes the
//! partition first.

use std::collections::BTreeMap;

use crate::disk::{self, Disk};

const SECTOR: u64 = 512;
const SECTORS_PER_CLUSTER: u64 = 4;
const CLUSTER: u64 = SECTOR * SECTORS_PER_CLUSTER;
const RESERVED_SECTORS: u64 = 1;
const FAT_COUNT: u64 = 2;
const ROOT_ENTRIES: u64 = 512;
const ENTRY: usize = 32;
/// FAT16 needs at least this many clusters, or readers take it for FAT12.
const MIN_CLUSTERS: u64 = 4085;
const MAX_CLUSTERS: u64 = 65524;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME_LABEL: u8 = 0x08;
const ATTR_LONG_NAME: u8 = 0x0f;
/// 2020-01-01 in FAT date format, so listings show a sane date.
const FAT_DATE: u16 = (40 << 9) | (1 << 5) | 1;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The partition size does not give a valid FAT16 cluster count.
    #[error("a FAT16 filesystem cannot be {size} bytes large (2-128 MiB with 2 KiB clusters)")]
    BadSize {
        /// Requested size.
        size: u64,
    },
    /// The files do not fit.
    #[error("the files do not fit in the {size}-byte filesystem")]
    Full {
        /// Filesystem size.
        size: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Disk(#[from] disk::Error),
}

/// A file tree: path components separated by `/` mapped to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Writes a FAT16 filesystem of `size` bytes with `label` at `offset` on `disk`.
pub fn write_filesystem(
    disk: &mut Disk,
    offset: u64,
    size: u64,
    label: &str,
    files: &Files,
) -> Result<(), Error> {
    let layout = Layout::new(size)?;
    let mut builder = Builder {
        layout,
        fat: vec![0xfff8, 0xffff],
        data: Vec::new(),
    };
    let root = Directory::from_files(files);
    let root_entries = builder.directory_entries(&root, None, label)?;

    let mut boot = boot_sector(&builder.layout, offset, label);
    boot[510] = 0x55;
    boot[511] = 0xaa;
    disk.write_at(offset, &boot)?;

    let fat_bytes: Vec<u8> = builder
        .fat
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect();
    for copy in 0..FAT_COUNT {
        let at = offset + (RESERVED_SECTORS + copy * builder.layout.fat_sectors) * SECTOR;
        disk.write_at(at, &fat_bytes)?;
    }
    disk.write_at(offset + builder.layout.root_start() * SECTOR, &root_entries)?;
    for (cluster, bytes) in &builder.data {
        disk.write_at(offset + builder.layout.cluster_offset(*cluster), bytes)?;
    }
    disk.flush()?;
    Ok(())
}

struct Layout {
    total_sectors: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Layout {
    fn new(size: u64) -> Result<Self, Error> {
        let total_sectors = size / SECTOR;
        let root_sectors = ROOT_ENTRIES * ENTRY as u64 / SECTOR;
        let usable = total_sectors.saturating_sub(RESERVED_SECTORS + root_sectors);
        let rough_clusters = usable / SECTORS_PER_CLUSTER;
        let fat_sectors = ((rough_clusters + 2) * 2).div_ceil(SECTOR);
        let clusters = usable.saturating_sub(FAT_COUNT * fat_sectors) / SECTORS_PER_CLUSTER;
        if !(MIN_CLUSTERS..=MAX_CLUSTERS).contains(&clusters) {
            return Err(Error::BadSize { size });
        }
        Ok(Self {
            total_sectors,
            fat_sectors,
            clusters,
        })
    }

    fn root_start(&self) -> u64 {
        RESERVED_SECTORS + FAT_COUNT * self.fat_sectors
    }

    fn data_start(&self) -> u64 {
        self.root_start() + ROOT_ENTRIES * ENTRY as u64 / SECTOR
    }

    fn cluster_offset(&self, cluster: u16) -> u64 {
        (self.data_start() + (u64::from(cluster) - 2) * SECTORS_PER_CLUSTER) * SECTOR
    }
}

#[derive(Default)]
struct Directory {
    dirs: BTreeMap<String, Directory>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Directory {
    fn from_files(files: &Files) -> Self {
        let mut root = Self::default();
        for (path, contents) in files {
            let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some(file) = parts.pop() else { continue };
            let dir = parts.into_iter().fold(&mut root, |dir, part| {
                dir.dirs.entry(part.to_owned()).or_default()
            });
            dir.files.insert(file.to_owned(), contents.clone());
        }
        root
    }
}

struct Builder {
    layout: Layout,
    fat: Vec<u16>,
    /// Cluster contents to write, keyed by first cluster.
    data: Vec<(u16, Vec<u8>)>,
}

impl Builder {
    /// Reserves a contiguous chain for `len` bytes and returns its first cluster (0 when empty).
    fn allocate(&mut self, len: u64) -> Result<u16, Error> {
        let count = len.div_ceil(CLUSTER);
        if count == 0 {
            return Ok(0);
        }
        let first = self.fat.len() as u64;
        if first + count > self.layout.clusters + 2 {
            return Err(Error::Full {
                size: self.layout.total_sectors * SECTOR,
            });
        }
        for cluster in first..first + count {
            let next = if cluster + 1 == first + count {
                0xffff
            } else {
                cluster as u16 + 1
            };
            self.fat.push(next);
        }
        Ok(first as u16)
    }

    /// Lays out `dir` and everything below it; returns the bytes of its entry table.
    /// `location` is `(own cluster, parent cluster)` for subdirectories, `None` for the root.
    fn directory_entries(
        &mut self,
        dir: &Directory,
        location: Option<(u16, u16)>,
        label: &str,
    ) -> Result<Vec<u8>, Error> {
        let mut table = Vec::new();
        let mut short_names = ShortNames::default();
        match location {
            None => {
                table.extend_from_slice(&short_entry(&padded_label(label), ATTR_VOLUME_LABEL, 0, 0))
            }
            Some((own, parent)) => {
                table.extend_from_slice(&short_entry(b".          ", ATTR_DIRECTORY, own, 0));
                table.extend_from_slice(&short_entry(b"..         ", ATTR_DIRECTORY, parent, 0));
            }
        }
        let own_cluster = location.map_or(0, |(own, _)| own);

        for (name, child) in &dir.dirs {
            let size = entries_size(child);
            let cluster = self.allocate(size)?;
            let bytes = self.directory_entries(child, Some((cluster, own_cluster)), label)?;
            self.data.push((cluster, bytes));
            push_named(
                &mut table,
                name,
                &short_names.make(name),
                ATTR_DIRECTORY,
                cluster,
                0,
            );
        }
        for (name, contents) in &dir.files {
            let cluster = self.allocate(contents.len() as u64)?;
            if cluster != 0 {
                self.data.push((cluster, contents.clone()));
            }
            let size = u32::try_from(contents.len()).map_err(|_| Error::Full {
                size: contents.len() as u64,
            })?;
            push_named(
                &mut table,
                name,
                &short_names.make(name),
                ATTR_ARCHIVE,
                cluster,
                size,
            );
        }

        if location.is_none() && table.len() as u64 > ROOT_ENTRIES * ENTRY as u64 {
            return Err(Error::Full {
                size: self.layout.total_sectors * SECTOR,
            });
        }
        Ok(table)
    }
}

/// Bytes needed by the entry table of a subdirectory (dot entries plus named entries).
fn entries_size(dir: &Directory) -> u64 {
    let named = dir.dirs.keys().chain(dir.files.keys());
    let entries: u64 = named.map(|name| 1 + long_entry_count(name)).sum::<u64>() + 2;
    entries * ENTRY as u64
}

fn long_entry_count(name: &str) -> u64 {
    (name.encode_utf16().count() as u64).div_ceil(13)
}

fn padded_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (slot, byte) in out.iter_mut().zip(label.bytes()) {
        *slot = byte;
    }
    out
}

fn boot_sector(layout: &Layout, offset: u64, label: &str) -> [u8; SECTOR as usize] {
    let mut boot = [0u8; SECTOR as usize];
    boot[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    boot[3..11].copy_from_slice(b"INGOT   ");
    boot[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    boot[13] = SECTORS_PER_CLUSTER as u8;
    boot[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    boot[16] = FAT_COUNT as u8;
    boot[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
    boot[21] = 0xf8;
    boot[22..24].copy_from_slice(&(layout.fat_sectors as u16).to_le_bytes());
    boot[24..26].copy_from_slice(&63u16.to_le_bytes());
    boot[26..28].copy_from_slice(&255u16.to_le_bytes());
    boot[28..32].copy_from_slice(&u32::try_from(offset / SECTOR).unwrap_or(0).to_le_bytes());
    match u16::try_from(layout.total_sectors) {
        Ok(small) => boot[19..21].copy_from_slice(&small.to_le_bytes()),
        Err(_) => boot[32..36].copy_from_slice(&(layout.total_sectors as u32).to_le_bytes()),
    }
    boot[36] = 0x80;
    boot[38] = 0x29;
    boot[39..43].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..4]);
    boot[43..54].copy_from_slice(&padded_label(label));
    boot[54..62].copy_from_slice(b"FAT16   ");
    boot
}

/// Generates unique 8.3 aliases (`NAME~N.EXT`) for long names within one directory.
#[derive(Default)]
struct ShortNames {
    used: Vec<[u8; 11]>,
}

impl ShortNames {
    fn make(&mut self, name: &str) -> [u8; 11] {
        let clean = |s: &str, max: usize| -> Vec<u8> {
            s.bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| b.to_ascii_uppercase())
                .take(max)
                .collect()
        };
        let (base, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        let ext = clean(ext, 3);
        let mut counter = 1;
        loop {
            let suffix = format!("~{counter}");
            let mut short = [b' '; 11];
            let base = clean(base, 8 - suffix.len());
            short[..base.len()].copy_from_slice(&base);
            short[base.len()..base.len() + suffix.len()].copy_from_slice(suffix.as_bytes());
            short[8..8 + ext.len()].copy_from_slice(&ext);
            if !self.used.contains(&short) {
                self.used.push(short);
                return short;
            }
            counter += 1;
        }
    }
}

fn short_entry(name: &[u8; 11], attributes: u8, cluster: u16, size: u32) -> [u8; ENTRY] {
    let mut entry = [0u8; ENTRY];
    entry[..11].copy_from_slice(name);
    entry[11] = attributes;
    entry[16..18].copy_from_slice(&FAT_DATE.to_le_bytes());
    entry[18..20].copy_from_slice(&FAT_DATE.to_le_bytes());
    entry[24..26].copy_from_slice(&FAT_DATE.to_le_bytes());
    entry[26..28].copy_from_slice(&cluster.to_le_bytes());
    entry[28..32].copy_from_slice(&size.to_le_bytes());
    entry
}

/// Appends the long-name entries for `name` followed by its 8.3 entry.
fn push_named(
    table: &mut Vec<u8>,
    name: &str,
    short: &[u8; 11],
    attributes: u8,
    cluster: u16,
    size: u32,
) {
    let checksum = short
        .iter()
        .fold(0u8, |sum, byte| sum.rotate_right(1).wrapping_add(*byte));
    let mut units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(13);
    if !units.len().is_multiple_of(13) {
        units.push(0);
    }
    units.resize(count * 13, 0xffff);

    for sequence in (1..=count).rev() {
        let chunk = &units[(sequence - 1) * 13..sequence * 13];
        let mut entry = [0u8; ENTRY];
        entry[0] = sequence as u8 | if sequence == count { 0x40 } else { 0 };
        entry[11] = ATTR_LONG_NAME;
        entry[13] = checksum;
        let slots = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (slot, unit) in slots.zip(chunk) {
            entry[slot..slot + 2].copy_from_slice(&unit.to_le_bytes());
        }
        table.extend_from_slice(&entry);
    }
    table.extend_from_slice(&short_entry(short, attributes, cluster, size));
}
