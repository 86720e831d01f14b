//! Streaming qcow2 (version 2 and 3) to raw conversion.
//!
//! The image arrives as a byte stream. Each host range the stream will carry is classified as
//! soon as the metadata naming it has been seen: the L1 table names L2 tables, L2 tables name
//! data clusters (plain or deflate-compressed) and their guest offsets, the refcount table
//! names refcount blocks. A range is processed when its last byte arrives, so an image whose
//! metadata precedes its data (what `qemu-img convert` and `qemu-img create` produce) is
//! written to the disk while it downloads, in whatever guest order the clusters come.
//!
//! Bytes that arrive before anything names them are appended to a temporary spill file. When
//! a table later points back at them they are read from there. An image laid out in the
//! opposite order therefore ends up downloaded to a temporary file and converted from it; in
//! both cases memory stays bounded by a few clusters plus one bit per guest cluster.
//!
//! Guest clusters that are unallocated or flagged as zero are zeroed on the disk at the end,
//! so the disk reads exactly like `qemu-img convert -O raw` output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::disk::{self, Disk};

/// First bytes of every qcow2 image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes of the header needed before anything else can be decided.
const HEADER_PREFIX: u64 = 512;

/// Largest metadata table accepted; real images stay far below.
const MAX_TABLE_BYTES: u64 = 64 << 20;

/// Mask of the host offset in L1 and standard L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED_FLAG: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;

/// Incompatible feature bits (qcow2 version 3).
const FEATURE_DIRTY: u64 = 1;
const FEATURE_CORRUPT: u64 = 1 << 1;
const FEATURE_EXTERNAL_DATA: u64 = 1 << 2;
const FEATURE_COMPRESSION_TYPE: u64 = 1 << 3;
const FEATURE_EXTENDED_L2: u64 = 1 << 4;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The header is not a qcow2 header we can read.
    #[error("invalid qcow2 header: {0}")]
    InvalidHeader(String),
    /// The image uses a qcow2 feature this converter does not implement.
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    /// The image's metadata is inconsistent.
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    /// A compressed cluster could not be inflated.
    #[error("compressed cluster for guest offset {guest} does not inflate to a full cluster")]
    Inflate {
        /// Guest offset of the cluster.
        guest: u64,
    },
    /// The virtual disk is larger than the target disk.
    #[error("the image's virtual size is {virtual_size} bytes but the disk holds only {disk}")]
    TooLarge {
        /// Virtual size from the header.
        virtual_size: u64,
        /// Disk size.
        disk: u64,
    },
    /// The temporary spill file failed.
    #[error("temporary file in {dir} failed")]
    Spill {
        /// Directory of the spill file.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk failed.
    #[error(transparent)]
    Disk(#[from] disk::Error),
}

/// The fields of the qcow2 header this converter uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
}

impl Header {
    /// Parses and validates a header from the first bytes of an image.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let be32 = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_be_bytes)
        };
        let be64 = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let short = || Error::InvalidHeader("shorter than 72 bytes".into());

        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(Error::InvalidHeader("missing the QFI\\xfb magic".into()));
        }
        let version = be32(4).ok_or_else(short)?;
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!(
                "version {version} (only 2 and 3 are read)"
            )));
        }
        if be64(8).ok_or_else(short)? != 0 {
            return Err(Error::Unsupported(
                "images with a backing file must be flattened first".into(),
            ));
        }
        let cluster_bits = be32(20).ok_or_else(short)?;
        if !(9..=21).contains(&cluster_bits) {
            return Err(Error::InvalidHeader(format!(
                "cluster_bits {cluster_bits} outside 9..=21"
            )));
        }
        if be32(32).ok_or_else(short)? != 0 {
            return Err(Error::Unsupported("encrypted images".into()));
        }
        if version == 3 {
            check_v3_features(&be32, &be64)?;
        }

        Ok(Self {
            version,
            cluster_bits,
            size: be64(24).ok_or_else(short)?,
            l1_size: be32(36).ok_or_else(short)?,
            l1_table_offset: be64(40).ok_or_else(short)?,
            refcount_table_offset: be64(48).ok_or_else(short)?,
            refcount_table_clusters: be32(56).ok_or_else(short)?,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

fn check_v3_features(
    be32: &dyn Fn(usize) -> Option<u32>,
    be64: &dyn Fn(usize) -> Option<u64>,
) -> Result<(), Error> {
    let short = || Error::InvalidHeader("version 3 header shorter than 104 bytes".into());
    let incompatible = be64(72).ok_or_else(short)?;
    let header_length = be32(100).ok_or_else(short)?;

    if incompatible & FEATURE_CORRUPT != 0 {
        return Err(Error::Corrupt(
            "the image is flagged corrupt; repair it with qemu-img check -r".into(),
        ));
    }
    if incompatible & FEATURE_EXTERNAL_DATA != 0 {
        return Err(Error::Unsupported("external data files".into()));
    }
    if incompatible & FEATURE_EXTENDED_L2 != 0 {
        return Err(Error::Unsupported(
            "extended L2 entries (subclusters)".into(),
        ));
    }
    if incompatible & FEATURE_COMPRESSION_TYPE != 0 && header_length > 104 {
        let kind = be32(104).ok_or_else(short)? >> 24;
        if kind != 0 {
            return Err(Error::Unsupported(
                "zstd compression; recompress with compression_type=zlib".into(),
            ));
        }
    }
    let known = FEATURE_DIRTY | FEATURE_COMPRESSION_TYPE;
    if incompatible & !known != 0 {
        return Err(Error::Unsupported(format!(
            "incompatible feature bits {incompatible:#x}"
        )));
    }
    Ok(())
}

/// What a host byte range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Header,
    L1Table,
    RefcountTable,
    /// Metadata that is not needed for conversion (refcount blocks, header extensions).
    Ignored,
    L2Table {
        l1_index: u64,
    },
    Data {
        guest: u64,
    },
    Compressed {
        guest: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    end: u64,
    content: Content,
}

/// Bytes that arrived before anything named them, kept in a temporary file.
struct Spill {
    dir: PathBuf,
    file: Option<File>,
    len: u64,
    /// host start → (length, offset in the spill file); contiguous pieces are merged.
    index: BTreeMap<u64, (u64, u64)>,
}

impl Spill {
    fn store(&mut self, host: u64, bytes: &[u8]) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let failed = |source| Error::Spill {
            dir: dir.clone(),
            source,
        };
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile_in(&self.dir).map_err(failed)?);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes).map_err(failed)?;
        }

        let len = bytes.len() as u64;
        match self.index.last_key_value() {
            Some((&start, &(piece_len, at)))
                if start + piece_len == host && at + piece_len == self.len =>
            {
                self.index.insert(start, (piece_len + len, at));
            }
            _ => {
                self.index.insert(host, (len, self.len));
            }
        }
        self.len += len;
        Ok(())
    }

    fn load(&self, host: u64, out: &mut [u8]) -> Result<(), Error> {
        let mut done = 0u64;
        while done < out.len() as u64 {
            let want = host + done;
            let found = self
                .index
                .range(..=want)
                .next_back()
                .filter(|(start, (len, _))| want < **start + *len);
            let (Some((&start, &(len, at))), Some(file)) = (found, self.file.as_ref()) else {
                return Err(Error::Corrupt(format!(
                    "host offset {want} is referenced but was never received as data"
                )));
            };
            let take = (start + len - want).min(out.len() as u64 - done);
            let slice = &mut out[done as usize..(done + take) as usize];
            file.read_exact_at(slice, at + (want - start))
                .map_err(|source| Error::Spill {
                    dir: self.dir.clone(),
                    source,
                })?;
            done += take;
        }
        Ok(())
    }
}

/// Summary of a finished conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Virtual size written to the disk.
    pub virtual_size: u64,
    /// Bytes that had to go through the spill file (zero when the image streamed).
    pub spilled_bytes: u64,
}

/// Converts a qcow2 stream onto a disk. Feed it the image bytes in order, then call
/// [`Qcow2Writer::finish`].
pub struct Qcow2Writer<'d> {
    disk: &'d mut Disk,
    header: Option<Header>,
    /// Stream position: bytes before it have been received.
    pos: u64,
    /// Received bytes from `window_start` to `pos` still needed by pending extents.
    window: Vec<u8>,
    window_start: u64,
    /// Bytes before this have been processed or spilled.
    classified: u64,
    pending: BTreeMap<u64, Vec<Extent>>,
    spill: Spill,
    written: Vec<u64>,
    inflater: flate2::Decompress,
    cluster: Vec<u8>,
}

impl<'d> Qcow2Writer<'d> {
    /// Starts a conversion onto `disk`, spilling out-of-order bytes to files in `spill_dir`.
    pub fn new(disk: &'d mut Disk, spill_dir: &Path) -> Self {
        let mut pending = BTreeMap::new();
        pending.insert(
            0,
            vec![Extent {
                end: HEADER_PREFIX,
                content: Content::Header,
            }],
        );
        Self {
            disk,
            header: None,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            classified: 0,
            pending,
            spill: Spill {
                dir: spill_dir.to_owned(),
                file: None,
                len: 0,
                index: BTreeMap::new(),
            },
            written: Vec::new(),
            inflater: flate2::Decompress::new(false),
            cluster: Vec::new(),
        }
    }

    /// Consumes the next bytes of the image.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        self.window.extend_from_slice(data);
        self.pos += data.len() as u64;
        self.process_ready()?;
        self.trim_window()
    }

    /// Processes what remains after the last byte, zeroes unallocated guest clusters and
    /// flushes the disk buffer.
    pub fn finish(mut self) -> Result<Converted, Error> {
        // Ranges cut off by the end of the file read as zeros, as in qemu.
        while let Some((start, extent)) = self.pop_first() {
            let mut bytes = self.collect(start, extent.end.min(self.pos).max(start))?;
            bytes.resize((extent.end - start) as usize, 0);
            self.handle(start, extent.content, &bytes)?;
        }
        let header = self
            .header
            .clone()
            .ok_or_else(|| Error::InvalidHeader("the image is empty".into()))?;
        self.zero_unwritten(&header)?;
        self.disk.flush()?;
        Ok(Converted {
            virtual_size: header.size,
            spilled_bytes: self.spill.len,
        })
    }

    fn pop_first(&mut self) -> Option<(u64, Extent)> {
        let mut entry = self.pending.first_entry()?;
        let start = *entry.key();
        let extent = entry.get_mut().pop();
        if entry.get().is_empty() {
            entry.remove();
        }
        extent.map(|e| (start, e))
    }

    /// Handles every pending extent whose bytes have all arrived, in host order.
    fn process_ready(&mut self) -> Result<(), Error> {
        loop {
            let ready = self
                .pending
                .first_key_value()
                .and_then(|(start, extents)| extents.last().map(|e| (*start, e.end)))
                .filter(|(_, end)| *end <= self.pos);
            let Some((start, end)) = ready else {
                return Ok(());
            };
            let Some((_, extent)) = self.pop_first() else {
                return Ok(());
            };

            self.spill_unclassified(start)?;
            let bytes = self.collect(start, end)?;
            self.classified = self.classified.max(end);
            self.handle(start, extent.content, &bytes)?;
        }
    }

    /// Copies `[start, end)` out of the spill file and the window.
    fn collect(&self, start: u64, end: u64) -> Result<Vec<u8>, Error> {
        let mut bytes = vec![0u8; (end - start) as usize];
        let split = self.window_start.clamp(start, end);
        let (spilled, received) = bytes.split_at_mut((split - start) as usize);
        self.spill.load(start, spilled)?;
        if split < end {
            let window_range =
                (split - self.window_start) as usize..(end - self.window_start) as usize;
            let window = self.window.get(window_range).ok_or_else(|| {
                Error::Corrupt(format!(
                    "range {start}..{end} reaches past the received bytes"
                ))
            })?;
            received.copy_from_slice(window);
        }
        Ok(bytes)
    }

    /// Sends received bytes before `upto` that nothing has claimed to the spill file.
    fn spill_unclassified(&mut self, upto: u64) -> Result<(), Error> {
        let upto = upto.min(self.pos);
        if upto <= self.classified {
            return Ok(());
        }
        let from = (self.classified - self.window_start) as usize;
        let to = (upto - self.window_start) as usize;
        self.spill.store(self.classified, &self.window[from..to])?;
        self.classified = upto;
        Ok(())
    }

    /// Drops window bytes no pending extent can need any more.
    fn trim_window(&mut self) -> Result<(), Error> {
        let keep_from = self
            .pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.pos)
            .min(self.pos);
        self.spill_unclassified(keep_from)?;
        if keep_from > self.window_start {
            self.window
                .drain(..(keep_from - self.window_start) as usize);
            self.window_start = keep_from;
        }
        Ok(())
    }

    fn add_extent(&mut self, start: u64, len: u64, content: Content) -> Result<(), Error> {
        if len > MAX_TABLE_BYTES {
            return Err(Error::Corrupt(format!(
                "a table of {len} bytes at {start} is implausibly large"
            )));
        }
        self.pending.entry(start).or_default().push(Extent {
            end: start + len,
            content,
        });
        Ok(())
    }

    fn handle(&mut self, start: u64, content: Content, bytes: &[u8]) -> Result<(), Error> {
        match content {
            Content::Header => self.handle_header(bytes),
            Content::L1Table => self.handle_l1(bytes),
            Content::RefcountTable => self.handle_refcount_table(bytes),
            Content::Ignored => Ok(()),
            Content::L2Table { l1_index } => self.handle_l2(l1_index, bytes),
            Content::Data { guest } => self.write_guest(guest, bytes),
            Content::Compressed { guest } => self.handle_compressed(guest, start, bytes),
        }
    }

    fn header(&self) -> Result<&Header, Error> {
        self.header
            .as_ref()
            .ok_or_else(|| Error::InvalidHeader("tables before the header".into()))
    }

    fn handle_header(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let header = Header::parse(bytes)?;
        if header.size > self.disk.size() {
            return Err(Error::TooLarge {
                virtual_size: header.size,
                disk: self.disk.size(),
            });
        }
        let cluster = header.cluster_size();
        let guest_clusters = header.size.div_ceil(cluster);
        self.written = vec![0; guest_clusters.div_ceil(64) as usize];

        self.add_extent(
            HEADER_PREFIX,
            cluster.saturating_sub(HEADER_PREFIX),
            Content::Ignored,
        )?;
        // The table's clusters are claimed whole, so their padding is not taken for data.
        self.add_extent(
            header.l1_table_offset,
            (u64::from(header.l1_size) * 8).next_multiple_of(cluster),
            Content::L1Table,
        )?;
        let refcount_bytes = u64::from(header.refcount_table_clusters) * cluster;
        self.add_extent(
            header.refcount_table_offset,
            refcount_bytes,
            Content::RefcountTable,
        )?;
        self.header = Some(header);
        Ok(())
    }

    fn handle_l1(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let header = self.header()?;
        let (cluster, entries) = (header.cluster_size(), header.l1_size as usize);
        for (index, entry) in be_entries(bytes).take(entries).enumerate() {
            let offset = entry & OFFSET_MASK;
            if offset != 0 {
                self.add_extent(
                    offset,
                    cluster,
                    Content::L2Table {
                        l1_index: index as u64,
                    },
                )?;
            }
        }
        self.process_ready()
    }

    fn handle_refcount_table(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let cluster = self.header()?.cluster_size();
        for entry in be_entries(bytes) {
            let offset = entry & !0x1ff;
            if offset != 0 {
                self.add_extent(offset, cluster, Content::Ignored)?;
            }
        }
        self.process_ready()
    }

    fn handle_l2(&mut self, l1_index: u64, bytes: &[u8]) -> Result<(), Error> {
        let header = self.header()?.clone();
        let cluster = header.cluster_size();
        let guest_base = l1_index
            .checked_mul((cluster / 8) * cluster)
            .filter(|base| *base < header.size)
            .ok_or_else(|| {
                Error::Corrupt(format!("L1 entry {l1_index} lies beyond the virtual size"))
            })?;
        let compressed_offset_bits = 62 - (header.cluster_bits - 8);

        for (index, entry) in be_entries(bytes).enumerate() {
            let guest = guest_base + index as u64 * cluster;
            if guest >= header.size {
                break;
            }
            if entry & COMPRESSED_FLAG != 0 {
                let offset = entry & ((1 << compressed_offset_bits) - 1);
                let sectors = (entry & !COMPRESSED_FLAG & !(1 << 63)) >> compressed_offset_bits;
                let end = (offset & !511) + (sectors + 1) * 512;
                self.add_extent(offset, end - offset, Content::Compressed { guest })?;
                continue;
            }
            let zero = header.version >= 3 && entry & ZERO_FLAG != 0;
            let offset = entry & OFFSET_MASK;
            if offset != 0 && !zero {
                self.add_extent(offset, cluster, Content::Data { guest })?;
            }
        }
        self.process_ready()
    }

    fn handle_compressed(&mut self, guest: u64, start: u64, bytes: &[u8]) -> Result<(), Error> {
        let cluster = self.header()?.cluster_size() as usize;
        self.cluster.resize(cluster, 0);
        self.inflater.reset(false);
        let status =
            self.inflater
                .decompress(bytes, &mut self.cluster, flate2::FlushDecompress::Finish);
        let complete = self.inflater.total_out() == cluster as u64;
        if status.is_err() || !complete {
            tracing::debug!(guest, host = start, "compressed cluster failed to inflate");
            return Err(Error::Inflate { guest });
        }
        let data = std::mem::take(&mut self.cluster);
        let result = self.write_guest(guest, &data);
        self.cluster = data;
        result
    }

    fn write_guest(&mut self, guest: u64, bytes: &[u8]) -> Result<(), Error> {
        let header = self.header()?;
        let len = (header.size - guest).min(bytes.len() as u64) as usize;
        let index = guest >> header.cluster_bits;
        self.disk.write_at(guest, &bytes[..len])?;
        if let Some(word) = self.written.get_mut((index / 64) as usize) {
            *word |= 1 << (index % 64);
        }
        Ok(())
    }

    fn zero_unwritten(&mut self, header: &Header) -> Result<(), Error> {
        let cluster = header.cluster_size();
        let clusters = header.size.div_ceil(cluster);
        let is_written = |index: u64| {
            self.written
                .get((index / 64) as usize)
                .is_some_and(|w| w & (1 << (index % 64)) != 0)
        };

        let mut runs = Vec::new();
        let mut index = 0;
        while index < clusters {
            if is_written(index) {
                index += 1;
                continue;
            }
            let first = index;
            while index < clusters && !is_written(index) {
                index += 1;
            }
            let start = first * cluster;
            runs.push((start, (index * cluster).min(header.size) - start));
        }
        for (start, len) in runs {
            self.disk.zero_range(start, len)?;
        }
        Ok(())
    }
}

fn be_entries(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|chunk| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        u64::from_be_bytes(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(version: u32, incompatible: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 112];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&version.to_be_bytes());
        bytes[20..24].copy_from_slice(&16u32.to_be_bytes());
        bytes[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        bytes[72..80].copy_from_slice(&incompatible.to_be_bytes());
        bytes[100..104].copy_from_slice(&112u32.to_be_bytes());
        bytes
    }

    #[test]
    fn headers_of_both_versions_parse() {
        for version in [2, 3] {
            let header = Header::parse(&header_bytes(version, 0)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (header.version, header.cluster_size(), header.size),
                (version, 65536, 1 << 30)
            );
        }
    }

    #[test]
    fn unsupported_features_are_named_in_the_error() {
        let message = |bytes: &[u8]| {
            Header::parse(bytes)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };

        let mut encrypted = header_bytes(3, 0);
        encrypted[35] = 2;
        let mut backed = header_bytes(2, 0);
        backed[15] = 200;
        let mut zstd = header_bytes(3, FEATURE_COMPRESSION_TYPE);
        zstd[104] = 1;

        assert!(message(&encrypted).contains("encrypted"));
        assert!(message(&backed).contains("backing file"));
        assert!(message(&zstd).contains("zstd"));
        assert!(message(&header_bytes(3, FEATURE_EXTENDED_L2)).contains("extended L2"));
        assert!(message(&header_bytes(3, FEATURE_CORRUPT)).contains("corrupt"));
        assert!(message(&header_bytes(4, 0)).contains("version 4"));
        assert!(message(b"not an image").contains("magic"));
    }

    #[test]
    fn an_image_larger_than_the_disk_is_refused_before_writing() {
        let file = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
        file.set_len(1 << 20).unwrap_or_else(|e| panic!("{e}"));
        let mut disk = Disk::new(file).unwrap_or_else(|e| panic!("{e}"));
        let mut header = header_bytes(3, 0);
        header.resize(512, 0);

        let mut writer = Qcow2Writer::new(&mut disk, Path::new("/tmp"));
        let error = writer
            .feed(&header)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();

        assert!(
            error.contains("virtual size is 1073741824 bytes but the disk holds only 1048576"),
            "{error}"
        );
    }
}
