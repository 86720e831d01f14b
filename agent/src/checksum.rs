//! Image checksums: choosing the algorithm, reading checksum files, hashing while writing.

use md5::Digest as _;

use crate::protocol::ChecksumAlgorithm;

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The digest is not hexadecimal or has a length no supported algorithm produces.
    #[error("checksum {digest:?} is not a hex md5, sha256 or sha512 digest")]
    UnknownDigest {
        /// The digest as given.
        digest: String,
    },
    /// The digest length does not fit the algorithm that was asked for.
    #[error("checksum {digest:?} is not a valid {algorithm} digest")]
    WrongLength {
        /// Algorithm that was asked for.
        algorithm: &'static str,
        /// The digest as given.
        digest: String,
    },
    /// The checksum file has no line for the image.
    #[error("checksum file lists no digest for {file:?}")]
    NotListed {
        /// File name of the image.
        file: String,
    },
}

/// A concrete digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// Lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// A digest the image must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Algorithm to compute.
    pub algorithm: Algorithm,
    /// Lower-case hex digest.
    pub digest: String,
}

impl Expected {
    /// Validates a hex digest against the requested algorithm (`auto` picks it by length).
    pub fn new(algorithm: ChecksumAlgorithm, digest: &str) -> Result<Self, Error> {
        let digest = digest.trim().to_lowercase();
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::UnknownDigest { digest });
        }
        let algorithm = match algorithm {
            ChecksumAlgorithm::Auto => match digest.len() {
                32 => Algorithm::Md5,
                64 => Algorithm::Sha256,
                128 => Algorithm::Sha512,
                _ => return Err(Error::UnknownDigest { digest }),
            },
            ChecksumAlgorithm::Md5 => Algorithm::Md5,
            ChecksumAlgorithm::Sha256 => Algorithm::Sha256,
            ChecksumAlgorithm::Sha512 => Algorithm::Sha512,
        };
        if digest.len() != algorithm.hex_len() {
            return Err(Error::WrongLength {
                algorithm: algorithm.name(),
                digest,
            });
        }
        Ok(Self { algorithm, digest })
    }
}

/// Finds the digest of `file_name` in a checksum file.
///
/// Accepts the GNU format (`<hex>  <name>` or `<hex> *<name>`), the BSD format
/// (`SHA256 (<name>) = <hex>`), and a file holding a single bare digest.
pub fn find_in_checksum_file(contents: &str, file_name: &str) -> Result<String, Error> {
    let lines: Vec<&str> = contents
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();

    for line in &lines {
        if let Some((left, digest)) = line.rsplit_once(" = ")
            && left.ends_with(&format!("({file_name})"))
        {
            return Ok(digest.trim().to_owned());
        }
        let mut fields = line.split_whitespace();
        if let (Some(digest), Some(name)) = (fields.next(), fields.next()) {
            let name = name.trim_start_matches('*');
            if name == file_name || name.rsplit('/').next() == Some(file_name) {
                return Ok(digest.to_owned());
            }
        }
    }

    match lines.as_slice() {
        [single] if !single.contains(char::is_whitespace) => Ok((*single).to_owned()),
        _ => Err(Error::NotListed {
            file: file_name.to_owned(),
        }),
    }
}

/// Incremental hasher for one of the supported algorithms.
pub enum Hasher {
    /// MD5 state.
    Md5(md5::Md5),
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Starts hashing with `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Md5 => Self::Md5(md5::Md5::new()),
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// Lower-case hex digest of everything fed so far.
    pub fn finish(self) -> String {
        match self {
            Self::Md5(h) => hex::encode(h.finalize()),
            Self::Sha256(h) => hex::encode(h.finalize()),
            Self::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_algorithm_from_the_digest_length() {
        let pick = |digest: &str| {
            Expected::new(ChecksumAlgorithm::Auto, digest)
                .map(|e| e.algorithm)
                .ok()
        };
        assert_eq!(pick(&"a".repeat(32)), Some(Algorithm::Md5));
        assert_eq!(pick(&"B".repeat(64)), Some(Algorithm::Sha256));
        assert_eq!(pick(&"c".repeat(128)), Some(Algorithm::Sha512));
        assert_eq!(pick(&"c".repeat(40)), None);
        assert_eq!(pick(&"z".repeat(64)), None);
    }

    #[test]
    fn an_explicit_algorithm_rejects_a_digest_of_the_wrong_length() {
        let error = Expected::new(ChecksumAlgorithm::Sha512, &"a".repeat(64))
            .err()
            .map(|e| e.to_string());
        assert!(error.unwrap_or_default().contains("sha512"));
    }

    #[test]
    fn checksum_files_in_gnu_bsd_and_bare_form_are_understood() {
        let gnu = "1111  other.img\n2222 *disk.qcow2\n";
        let bsd = "SHA256 (other.img) = 1111\nSHA256 (disk.qcow2) = 3333\n";

        assert_eq!(
            find_in_checksum_file(gnu, "disk.qcow2").ok().as_deref(),
            Some("2222")
        );
        assert_eq!(
            find_in_checksum_file(bsd, "disk.qcow2").ok().as_deref(),
            Some("3333")
        );
        assert_eq!(
            find_in_checksum_file("4444\n", "disk.qcow2")
                .ok()
                .as_deref(),
            Some("4444")
        );
        assert!(find_in_checksum_file(gnu, "missing.img").is_err());
    }

    #[test]
    fn hashers_match_known_digests() {
        let digest = |algorithm| {
            let mut hasher = Hasher::new(algorithm);
            hasher.update(b"ab");
            hasher.update(b"c");
            hasher.finish()
        };
        assert_eq!(digest(Algorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            digest(Algorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(digest(Algorithm::Sha512).starts_with("ddaf35a193617aba"));
    }
}
