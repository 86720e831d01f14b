//! The lab's image server and test image generator.
//!
//! The server streams files from a directory (`GET /images/{name}`), answers checksum files
//! for any image it holds (`{name}.md5sum`, `.sha256sum`, `.sha512sum`, computed when not on
//! disk), and accepts uploads (`PUT /images/{name}`), which is how an operator publishes the
//! small deploy documents that virtual media points to.
//!
//! The generator writes a small bootable-looking disk image: a GPT with an EFI system
//! partition and a root partition holding recognisable data, as raw and as qcow2 (converted
//! with `qemu-img`). It also writes tiny live ISOs: just the ISO 9660 volume descriptors the
//! lab's firmware looks for.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

const SECTOR: u64 = 512;
const GPT_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// EFI system partition and Linux filesystem type GUIDs.
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const LINUX_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/// Text at the start of the root partition, so tests can recognise a written image.
pub const ROOT_MARKER: &[u8] = b"INGOT-LAB-OS root filesystem";
/// ISO 9660 sector size, and the offset of the first volume descriptor (after the system area).
const ISO_SECTOR: usize = 2048;
const ISO_DESCRIPTORS: usize = 16 * ISO_SECTOR;
/// The identifier every ISO 9660 volume descriptor carries after its type byte.
const ISO_IDENTIFIER: &[u8] = b"CD001";

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the image failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The image is too small for its partitions.
    #[error("an image needs at least 64 MiB, {0} bytes were asked for")]
    TooSmall(u64),
    /// qemu-img could not convert the image.
    #[error("qemu-img failed to convert {path} to qcow2 (is qemu-utils installed?): {detail}")]
    QemuImg {
        /// The raw image.
        path: PathBuf,
        /// What qemu-img said.
        detail: String,
    },
}

/// Files of a generated image set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImages {
    /// The raw image.
    pub raw: PathBuf,
    /// The qcow2 image.
    pub qcow2: PathBuf,
}

/// The image server's directory, and how often each image was downloaded: started downloads
/// (each one image write begun by a deploy agent), and downloads served to the end per host,
/// the host named by the deploy agent's user agent.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    counts: Mutex<HashMap<String, ImageDownloads>>,
}

/// How often one image was downloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDownloads {
    /// Downloads started, in full or cut short.
    pub started: u64,
    /// Downloads whose last byte was sent, per host; clients that name no host count under "".
    pub completed_by_host: BTreeMap<String, u64>,
}

impl ImageStore {
    /// A store serving `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            counts: Mutex::default(),
        }
    }

    /// How many times the image `name` was served.
    pub fn downloads(&self, name: &str) -> u64 {
        self.lock().get(name).map_or(0, |counts| counts.started)
    }

    /// Downloads of the image `name`, started and completed per host.
    pub fn download_counts(&self, name: &str) -> ImageDownloads {
        self.lock().get(name).cloned().unwrap_or_default()
    }

    fn count_start(&self, name: &str) {
        self.lock().entry(name.to_owned()).or_default().started += 1;
    }

    fn count_completion(&self, name: &str, host: &str) {
        let mut counts = self.lock();
        let image = counts.entry(name.to_owned()).or_default();
        *image.completed_by_host.entry(host.to_owned()).or_default() += 1;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ImageDownloads>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Router serving the store under `/images`.
pub fn router(store: Arc<ImageStore>) -> axum::Router {
    axum::Router::new()
        .route("/images/{name}", get(serve).put(upload))
        .with_state(store)
}

/// The `len` bytes of `file`, counting a completed download of image `name` for `host` when
/// the last of them is handed over (the server stops reading the body there, so the count
/// cannot wait for its end); a download cut short never gets there and is not counted.
fn counted_stream(
    file: tokio::fs::File,
    len: u64,
    store: Arc<ImageStore>,
    name: &str,
    host: &str,
) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> + use<> {
    let (name, host) = (name.to_owned(), host.to_owned());
    let mut left = len;
    tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
        let Ok(chunk) = chunk else {
            return;
        };
        let was_left = left;
        left = left.saturating_sub(chunk.len() as u64);
        if was_left > 0 && left == 0 {
            store.count_completion(&name, &host);
        }
    })
}

/// Rejects names that could leave the directory.
fn safe_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(name)
}

async fn serve(
    State(store): State<Arc<ImageStore>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let Some(name) = safe_name(&name) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let dir = &store.dir;
    let path = dir.join(name);
    if let Ok(file) = tokio::fs::File::open(&path).await {
        store.count_start(name);
        let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
        let host = headers
            .get(header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok())
            .and_then(ingot_agent::image::host_of_user_agent)
            .unwrap_or_default();
        let body = Body::from_stream(counted_stream(file, len, store.clone(), name, host));
        return ([(header::CONTENT_LENGTH, len.to_string())], body).into_response();
    }
    let Some((image, algorithm)) = checksum_request(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let image_path = dir.join(image);
    let image = image.to_owned();
    let digest = tokio::task::spawn_blocking(move || file_digest(&image_path, algorithm)).await;
    match digest {
        Ok(Ok(digest)) => format!("{digest}  {image}\n").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upload(
    State(store): State<Arc<ImageStore>>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let Some(name) = safe_name(&name) else {
        return StatusCode::BAD_REQUEST;
    };
    match tokio::fs::write(store.dir.join(name), &body).await {
        Ok(()) => StatusCode::CREATED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn checksum_request(name: &str) -> Option<(&str, &'static str)> {
    ["md5", "sha256", "sha512"]
        .into_iter()
        .find_map(|algorithm| {
            name.strip_suffix(&format!(".{algorithm}sum"))
                .map(|image| (image, algorithm))
        })
}

/// Hex digest of a file with `md5`, `sha256` or `sha512`.
pub fn file_digest(path: &Path, algorithm: &str) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = sha2::Sha512::new();
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        match algorithm {
            "md5" => md5.update(&buffer[..read]),
            "sha512" => sha512.update(&buffer[..read]),
            _ => sha256.update(&buffer[..read]),
        }
    }
    Ok(match algorithm {
        "md5" => hex::encode(md5.finalize()),
        "sha512" => hex::encode(sha512.finalize()),
        _ => hex::encode(sha256.finalize()),
    })
}

/// Writes `<name>.raw` and `<name>.qcow2` of `size` bytes into `dir`.
pub fn generate(dir: &Path, name: &str, size: u64) -> Result<GeneratedImages, Error> {
    let raw = dir.join(format!("{name}.raw"));
    let qcow2 = dir.join(format!("{name}.qcow2"));
    write_raw_image(&raw, size)?;
    let output = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .output()
        .map_err(|e| Error::QemuImg {
            path: raw.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::QemuImg {
            path: raw,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(GeneratedImages { raw, qcow2 })
}

/// A sparse raw disk image with a GPT, an EFI system partition and a root partition.
pub fn write_raw_image(path: &Path, size: u64) -> Result<(), Error> {
    if size < 64 << 20 {
        return Err(Error::TooSmall(size));
    }
    let write_error = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let size = size / SECTOR * SECTOR;
    let file = std::fs::File::create(path).map_err(write_error)?;
    file.set_len(size).map_err(write_error)?;

    let last_lba = size / SECTOR - 1;
    let entry_sectors = GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR;
    let last_usable = last_lba - entry_sectors - 1;
    let esp = (2048, 2048 + (32 << 20) / SECTOR - 1);
    let root = (esp.1 + 1, last_usable / 2048 * 2048 - 1);
    let entries = gpt_entries(&[(ESP_TYPE, esp, "EFI System"), (LINUX_TYPE, root, "root")]);
    let header = gpt_header(1, last_lba, 2, last_usable, &entries);
    let backup = gpt_header(last_lba, 1, last_lba - entry_sectors, last_usable, &entries);

    let writes: [(u64, &[u8]); 6] = [
        (0, &protective_mbr(last_lba)),
        (SECTOR, &header),
        (2 * SECTOR, &entries),
        ((last_lba - entry_sectors) * SECTOR, &entries),
        (last_lba * SECTOR, &backup),
        (root.0 * SECTOR, &root_contents()),
    ];
    for (offset, bytes) in writes {
        file.write_all_at(bytes, offset).map_err(write_error)?;
    }
    file.write_all_at(b"\xeb\x3c\x90mkfs.fat", esp.0 * SECTOR)
        .map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// The marker followed by 4 MiB of deterministic data, so images are not mostly zeros.
fn root_contents() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = ROOT_MARKER.to_vec();
    bytes.extend((0..4 << 20).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    bytes
}

fn protective_mbr(last_lba: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    entry[4] = 0xee;
    entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    entry[12..16].copy_from_slice(&u32::try_from(last_lba).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

fn gpt_entries(partitions: &[(&str, (u64, u64), &str)]) -> Vec<u8> {
    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    for ((type_guid, (first, last), name), entry) in partitions
        .iter()
        .zip(entries.chunks_exact_mut(GPT_ENTRY_SIZE as usize))
    {
        let type_guid = uuid::Uuid::parse_str(type_guid).unwrap_or_default();
        entry[..16].copy_from_slice(&type_guid.to_bytes_le());
        entry[16..32].copy_from_slice(&uuid::Uuid::new_v4().to_bytes_le());
        entry[32..40].copy_from_slice(&first.to_le_bytes());
        entry[40..48].copy_from_slice(&last.to_le_bytes());
        for (slot, unit) in name.encode_utf16().enumerate() {
            entry[56 + slot * 2..58 + slot * 2].copy_from_slice(&unit.to_le_bytes());
        }
    }
    entries
}

fn gpt_header(
    my_lba: u64,
    alternate_lba: u64,
    entries_lba: u64,
    last_usable: u64,
    entries: &[u8],
) -> Vec<u8> {
    let mut header = vec![0u8; 92];
    header[..8].copy_from_slice(b"EFI PART");
    header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[24..32].copy_from_slice(&my_lba.to_le_bytes());
    header[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    header[40..48].copy_from_slice(&34u64.to_le_bytes());
    header[48..56].copy_from_slice(&last_usable.to_le_bytes());
    header[56..72].copy_from_slice(uuid::Uuid::from_u128(0x1a2b_3c4d).as_bytes());
    header[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    header[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
    header[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
    header[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&header);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Writes a tiny ISO 9660 image labelled `label`: an empty system area, a primary volume
/// descriptor and the descriptor set terminator, which is all the lab's firmware reads.
pub fn write_live_iso(path: &Path, label: &str) -> Result<(), Error> {
    let mut image = vec![0u8; ISO_DESCRIPTORS + 2 * ISO_SECTOR];
    let (primary, terminator) = image[ISO_DESCRIPTORS..].split_at_mut(ISO_SECTOR);
    volume_descriptor(primary, 1);
    primary[8..72].fill(b' ');
    let label = label.as_bytes();
    let label = &label[..label.len().min(32)];
    primary[40..40 + label.len()].copy_from_slice(label);
    volume_descriptor(terminator, 255);

    std::fs::write(path, image).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

fn volume_descriptor(sector: &mut [u8], kind: u8) {
    sector[0] = kind;
    sector[1..6].copy_from_slice(ISO_IDENTIFIER);
    sector[6] = 1;
}

/// Whether `head`, the start of a medium, carries an ISO 9660 volume descriptor.
pub fn is_iso9660(head: &[u8]) -> bool {
    head.get(ISO_DESCRIPTORS + 1..ISO_DESCRIPTORS + 6) == Some(ISO_IDENTIFIER)
}
