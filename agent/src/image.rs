//! Writing an operating system image to the root disk.
//!
//! The download is streamed: an async task receives HTTP chunks and hands them over a
//! bounded channel to a blocking writer thread, which hashes every byte and writes it (raw)
//! or converts it (qcow2) to the disk. Download and disk I/O overlap, and memory is bounded by
//! the channel plus one write batch. If anything fails after the first byte reached the disk,
//! including a checksum mismatch, the start and end of the disk are zeroed so the machine
//! cannot boot a half-written or unverified image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::checksum::{self, Expected, Hasher};
use crate::configdrive;
use crate::disk::{self, Disk, MIB};
use crate::hardware::{self, Hardware};
use crate::hints;
use crate::protocol::{Checksum, ChecksumSource, ImageFormat, ImageWritten, Progress, WriteImage};
use crate::qcow2::{self, Qcow2Writer};

/// Chunks in flight between the download and the disk writer.
const CHANNEL_DEPTH: usize = 16;

/// The user agent of image downloads, naming the host so that image servers can tell whose
/// download each one is.
pub fn user_agent(host: &str) -> String {
    format!("ingot-agent/{} ({host})", env!("CARGO_PKG_VERSION"))
}

/// The host an image download is for, from a [`user_agent`] string.
pub fn host_of_user_agent(agent: &str) -> Option<&str> {
    agent
        .strip_prefix("ingot-agent/")?
        .split_once(" (")?
        .1
        .strip_suffix(')')
}

/// Callback receiving progress; it must be cheap, it runs for every chunk.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inventory needed to choose the disk failed.
    #[error("cannot list disks")]
    Inventory(#[source] hardware::Error),
    /// No disk matches the root device hints.
    #[error(transparent)]
    SelectDisk(#[from] hints::Error),
    /// The root disk could not be opened.
    #[error("cannot open the root disk")]
    OpenDisk(#[source] hardware::Error),
    /// The expected checksum is malformed or missing from the checksum file.
    #[error("invalid checksum")]
    Checksum(#[from] checksum::Error),
    /// An HTTP request failed.
    #[error("downloading {url} failed")]
    Download {
        /// URL without credentials.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url} failed with HTTP status {status}")]
    HttpStatus {
        /// URL without credentials.
        url: String,
        /// Status code.
        status: u16,
    },
    /// The image does not have the expected digest.
    #[error(
        "{algorithm} checksum mismatch: expected {expected}, the image has {actual}; the disk was marked unbootable"
    )]
    ChecksumMismatch {
        /// Algorithm name.
        algorithm: &'static str,
        /// Expected digest.
        expected: String,
        /// Digest of the received image.
        actual: String,
    },
    /// The image was declared qcow2 but is not.
    #[error("the image was declared qcow2 but does not start with the qcow2 magic")]
    NotQcow2,
    /// The qcow2 conversion failed.
    #[error("qcow2 conversion failed")]
    Qcow2(#[from] qcow2::Error),
    /// Writing to the disk failed.
    #[error("writing the disk failed")]
    Disk(#[from] disk::Error),
    /// The config drive could not be written.
    #[error("writing the config drive failed")]
    ConfigDrive(#[from] configdrive::Error),
    /// The writer thread stopped unexpectedly.
    #[error("the disk writer stopped unexpectedly")]
    WriterLost,
}

/// Settings shared by every image write.
#[derive(Clone)]
pub struct ImageWriter {
    /// HTTP client for images and checksum files.
    pub client: reqwest::Client,
    /// Directory for qcow2 spill files.
    pub spill_dir: PathBuf,
}

/// What the writer thread produced.
struct Consumed {
    format: ImageFormat,
    image_bytes: u64,
    downloaded: u64,
    digest: Option<String>,
}

impl ImageWriter {
    /// Downloads, verifies and writes an image as `request` describes.
    pub async fn write(
        &self,
        hardware: &dyn Hardware,
        request: &WriteImage,
        progress: ProgressFn,
    ) -> Result<ImageWritten, Error> {
        let inventory = hardware.inventory().map_err(Error::Inventory)?;
        let root = hints::select_root_disk(&inventory.storage, &request.root_device_hints)?;
        let device = root.name.clone();
        let file = hardware.open_disk(root).map_err(Error::OpenDisk)?;
        let disk = Disk::new(file)?;
        let expected = self
            .expected_checksum(&request.url, request.checksum.as_ref())
            .await?;
        tracing::info!(device = %device, url = %redact(&request.url), "writing image");

        let (disk, consumed) = self
            .stream_to_disk(disk, request, expected.as_ref(), &progress)
            .await;
        let mut disk = disk.ok_or(Error::WriterLost)?;
        let consumed = match consumed.and_then(|c| verify(c, expected.as_ref())) {
            Ok(consumed) => consumed,
            Err(error) => {
                mark_unbootable(&mut disk);
                return Err(error);
            }
        };

        let config_drive_offset = match &request.config_drive {
            Some(drive) => {
                progress(Progress {
                    step: "configDrive".into(),
                    ..Progress::default()
                });
                Some(configdrive::write(&mut disk, consumed.image_bytes, drive)?.start)
            }
            None => None,
        };
        progress(Progress {
            step: "sync".into(),
            ..Progress::default()
        });
        disk.sync()?;

        Ok(ImageWritten {
            device,
            format: consumed.format,
            downloaded_bytes: consumed.downloaded,
            image_bytes: consumed.image_bytes,
            verified_checksum: expected.map(|e| format!("{}:{}", e.algorithm.name(), e.digest)),
            config_drive_offset,
        })
    }

    async fn expected_checksum(
        &self,
        image_url: &str,
        checksum: Option<&Checksum>,
    ) -> Result<Option<Expected>, Error> {
        let Some(checksum) = checksum else {
            return Ok(None);
        };
        let digest = match &checksum.value {
            ChecksumSource::Digest(digest) => digest.clone(),
            ChecksumSource::Url(url) => {
                let text = self
                    .get(url)
                    .await?
                    .text()
                    .await
                    .map_err(|e| download_error(url, e))?;
                let file_name = image_url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                checksum::find_in_checksum_file(&text, file_name)?
            }
        };
        Ok(Some(Expected::new(checksum.algorithm, &digest)?))
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, Error> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| download_error(url, e))?;
        if !response.status().is_success() {
            return Err(Error::HttpStatus {
                url: redact(url),
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// Runs the download and the writer thread; always gives the disk back when it can.
    async fn stream_to_disk(
        &self,
        mut disk: Disk,
        request: &WriteImage,
        expected: Option<&Expected>,
        progress: &ProgressFn,
    ) -> (Option<Disk>, Result<Consumed, Error>) {
        let response = match self.get(&request.url).await {
            Ok(response) => response,
            Err(error) => return (Some(disk), Err(error)),
        };
        let total = response.content_length();
        let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let format = request.format;
        let algorithm = expected.map(|e| e.algorithm);
        let spill_dir = self.spill_dir.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let consumed = consume(&mut disk, receiver, format, algorithm, &spill_dir);
            (disk, consumed)
        });

        let download = forward(response, &request.url, sender, total, progress).await;
        let Ok((disk, consumed)) = writer.await else {
            return (None, Err(Error::WriterLost));
        };
        // A writer error explains a download cut short, so it takes precedence.
        let result = match (consumed, download) {
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
            (Ok(consumed), Ok(())) => Ok(consumed),
        };
        (Some(disk), result)
    }
}

async fn forward(
    response: reqwest::Response,
    url: &str,
    sender: mpsc::Sender<Bytes>,
    total: Option<u64>,
    progress: &ProgressFn,
) -> Result<(), Error> {
    let mut stream = response.bytes_stream();
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| download_error(url, e))?;
        done += chunk.len() as u64;
        if sender.send(chunk).await.is_err() {
            // The writer stopped; its own error is reported.
            return Ok(());
        }
        progress(Progress {
            step: "download".into(),
            done_bytes: done,
            total_bytes: total,
        });
    }
    Ok(())
}

/// The writer thread: hashes and writes every chunk.
fn consume(
    disk: &mut Disk,
    mut receiver: mpsc::Receiver<Bytes>,
    format: ImageFormat,
    algorithm: Option<checksum::Algorithm>,
    spill_dir: &Path,
) -> Result<Consumed, Error> {
    let mut hasher = algorithm.map(Hasher::new);
    let mut head = Vec::new();
    while head.len() < qcow2::MAGIC.len() {
        let Some(chunk) = receiver.blocking_recv() else {
            break;
        };
        head.extend_from_slice(&chunk);
    }
    let is_qcow2 = head.starts_with(&qcow2::MAGIC);
    let format = match format {
        ImageFormat::Auto if is_qcow2 => ImageFormat::Qcow2,
        ImageFormat::Auto => ImageFormat::Raw,
        ImageFormat::Qcow2 if !is_qcow2 => return Err(Error::NotQcow2),
        declared => declared,
    };

    let mut downloaded = 0u64;
    let mut feed = |bytes: &[u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>| {
        downloaded += bytes.len() as u64;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(bytes);
        }
        sink(bytes)
    };

    let image_bytes = if format == ImageFormat::Qcow2 {
        let mut writer = Qcow2Writer::new(disk, spill_dir);
        let mut sink = |bytes: &[u8]| writer.feed(bytes).map_err(Error::from);
        feed(&head, &mut sink)?;
        while let Some(chunk) = receiver.blocking_recv() {
            feed(&chunk, &mut sink)?;
        }
        let converted = writer.finish()?;
        tracing::info!(
            virtual_size = converted.virtual_size,
            spilled_bytes = converted.spilled_bytes,
            "qcow2 converted"
        );
        converted.virtual_size
    } else {
        let mut offset = 0u64;
        let mut sink = |bytes: &[u8]| {
            disk.write_at(offset, bytes)?;
            offset += bytes.len() as u64;
            Ok(())
        };
        feed(&head, &mut sink)?;
        while let Some(chunk) = receiver.blocking_recv() {
            feed(&chunk, &mut sink)?;
        }
        disk.flush()?;
        offset
    };

    Ok(Consumed {
        format,
        image_bytes,
        downloaded,
        digest: hasher.map(Hasher::finish),
    })
}

fn verify(consumed: Consumed, expected: Option<&Expected>) -> Result<Consumed, Error> {
    match (expected, consumed.digest.as_deref()) {
        (Some(expected), Some(actual)) if actual != expected.digest => {
            Err(Error::ChecksumMismatch {
                algorithm: expected.algorithm.name(),
                expected: expected.digest.clone(),
                actual: actual.to_owned(),
            })
        }
        _ => Ok(consumed),
    }
}

/// Zeroes the first and last MiB: boot sector, both GPT copies and most boot loaders.
fn mark_unbootable(disk: &mut Disk) {
    let size = disk.size();
    let edge = MIB.min(size);
    let cleared = disk
        .zero_range(0, edge)
        .and_then(|()| disk.zero_range(size - edge, edge))
        .and_then(|()| disk.sync());
    if let Err(error) = cleared {
        tracing::error!(error = %error, "could not mark the disk unbootable after a failed write");
    }
}

fn download_error(url: &str, source: reqwest::Error) -> Error {
    Error::Download {
        url: redact(url),
        source: source.without_url(),
    }
}

/// The URL without user name, password or query string, which may carry credentials.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<invalid url>".into();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_download_user_agent_names_the_host() {
        let agent = user_agent("default/host-7");
        assert!(agent.starts_with("ingot-agent/"), "{agent}");
        assert_eq!(host_of_user_agent(&agent), Some("default/host-7"));
    }

    #[test]
    fn other_user_agents_name_no_host() {
        assert_eq!(host_of_user_agent("curl/8.5.0"), None);
        assert_eq!(host_of_user_agent("ingot-agent/0.1.0"), None);
    }
}
