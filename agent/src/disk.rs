//! Positioned, batched writes to a disk (block device or sparse file).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use rustix::fs::FallocateFlags;

/// Size of the write batches: large and aligned, so the kernel sees few, big requests.
pub const WRITE_BATCH: usize = 4 << 20;

/// One mebibyte, the unit of alignment for partitions and wipes.
pub const MIB: u64 = 1 << 20;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to the disk failed.
    #[error("writing {len} bytes at offset {offset} failed")]
    Write {
        /// Offset of the failed write.
        offset: u64,
        /// Length of the failed write.
        len: usize,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading from the disk failed.
    #[error("reading {len} bytes at offset {offset} failed")]
    Read {
        /// Offset of the failed read.
        offset: u64,
        /// Length of the failed read.
        len: usize,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk size could not be determined.
    #[error("cannot determine the disk size")]
    Size(#[source] std::io::Error),
    /// Flushing to stable storage failed.
    #[error("flushing the disk to stable storage failed")]
    Sync(#[source] std::io::Error),
    /// The content does not fit on the disk.
    #[error("the image needs {needed} bytes but the disk holds only {size}")]
    TooSmall {
        /// Bytes needed.
        needed: u64,
        /// Disk size.
        size: u64,
    },
}

/// A disk with a write buffer that coalesces sequential writes into [`WRITE_BATCH`] requests.
pub struct Disk {
    file: File,
    size: u64,
    pending: Vec<u8>,
    pending_offset: u64,
}

impl Disk {
    /// Wraps an open disk.
    pub fn new(mut file: File) -> Result<Self, Error> {
        let size = file.seek(SeekFrom::End(0)).map_err(Error::Size)?;
        Ok(Self {
            file,
            size,
            pending: Vec::with_capacity(WRITE_BATCH),
            pending_offset: 0,
        })
    }

    /// Capacity in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `data` at `offset`, batching it with the previous write when contiguous.
    pub fn write_at(&mut self, offset: u64, mut data: &[u8]) -> Result<(), Error> {
        self.check_fits(offset, data.len() as u64)?;
        if self.pending_offset + self.pending.len() as u64 != offset {
            self.flush()?;
            self.pending_offset = offset;
        }

        while !data.is_empty() {
            let room = WRITE_BATCH - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == WRITE_BATCH {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered bytes to the disk.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let offset = self.pending_offset;
        self.file
            .write_all_at(&self.pending, offset)
            .map_err(|source| Error::Write {
                offset,
                len: self.pending.len(),
                source,
            })?;
        self.pending_offset += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros, deallocating them where the device allows.
    pub fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        if len == 0 {
            return Ok(());
        }
        self.flush()?;
        self.check_fits(offset, len)?;
        let punched = rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
        if punched.is_ok() {
            return Ok(());
        }

        // Devices without hole punching get explicit zeros, one batch at a time.
        let zeros = vec![0u8; WRITE_BATCH.min(usize::try_from(len).unwrap_or(WRITE_BATCH))];
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(zeros.len() as u64) as usize;
            let at = offset + done;
            self.file
                .write_all_at(&zeros[..chunk], at)
                .map_err(|source| Error::Write {
                    offset: at,
                    len: chunk,
                    source,
                })?;
            done += chunk as u64;
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, after flushing pending writes.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.flush()?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| Error::Read {
                offset,
                len: buf.len(),
                source,
            })
    }

    /// Flushes buffers and asks the kernel to put everything on stable storage.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.file.sync_all().map_err(Error::Sync)
    }

    fn check_fits(&self, offset: u64, len: u64) -> Result<(), Error> {
        let needed = offset.saturating_add(len);
        if needed > self.size {
            return Err(Error::TooSmall {
                needed,
                size: self.size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_of(size: u64) -> (tempfile::NamedTempFile, Disk) {
        let file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        file.as_file()
            .set_len(size)
            .unwrap_or_else(|e| panic!("{e}"));
        let disk = Disk::new(file.reopen().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        (file, disk)
    }

    #[test]
    fn scattered_writes_and_zeroing_land_where_asked() {
        let (file, mut disk) = disk_of(16 * MIB);

        disk.write_at(10, b"hello")
            .unwrap_or_else(|e| panic!("{e}"));
        disk.write_at(15, b" world")
            .unwrap_or_else(|e| panic!("{e}"));
        disk.write_at(8 * MIB, &[7u8; 3 * WRITE_BATCH / 2])
            .unwrap_or_else(|e| panic!("{e}"));
        disk.zero_range(8 * MIB + 1, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        disk.sync().unwrap_or_else(|e| panic!("{e}"));

        let bytes = std::fs::read(file.path()).unwrap_or_default();
        assert_eq!(&bytes[10..21], b"hello world");
        assert_eq!(bytes[8 * MIB as usize], 7);
        assert_eq!(
            &bytes[8 * MIB as usize + 1..8 * MIB as usize + 11],
            &[0u8; 10]
        );
        assert_eq!(bytes[8 * MIB as usize + 11], 7);
    }

    #[test]
    fn writes_past_the_end_are_refused() {
        let (_file, mut disk) = disk_of(MIB);
        let error = disk
            .write_at(MIB - 2, b"abc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("disk holds only 1048576"), "{error}");
    }
}
