//! Password-keyed MACs and RMCP+ session keys, computed host-side.
//!
//! The plugin hands over messages; the keys (password, `Kg`, SIK, K1, K2)
//! never leave this module.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use hmac::{Hmac, Mac};
use rand::RngCore;

use crate::bindings::imports::ingot::plugin::bmc_secret::{MacAlgorithm, SecretError};

/// Keys of one RMCP+ session. Lives in the call's resource table.
pub struct SessionKeys {
    algorithm: MacAlgorithm,
    sik: Vec<u8>,
    k1: Vec<u8>,
    cipher_key: [u8; 16],
}

impl SessionKeys {
    /// Derives SIK from the seed (`Kg` or password) and the SIK input, then
    /// K1 and K2 from SIK.
    pub fn derive(algorithm: MacAlgorithm, seed: &[u8], sik_input: &[u8]) -> Self {
        let sik = hmac(algorithm, seed, sik_input);
        let k1 = hmac(algorithm, &sik, &[0x01; 20]);
        let k2 = hmac(algorithm, &sik, &[0x02; 20]);

        let mut cipher_key = [0_u8; 16];
        cipher_key.copy_from_slice(&k2[..16]);

        Self {
            algorithm,
            sik,
            k1,
            cipher_key,
        }
    }

    /// HMAC keyed by SIK.
    pub fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
        hmac(self.algorithm, &self.sik, message)
    }

    /// HMAC keyed by K1, truncated to the integrity code length.
    pub fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = hmac(self.algorithm, &self.k1, message);
        mac.truncate(integrity_len(self.algorithm));
        mac
    }

    /// AES-CBC-128 with a random IV and IPMI padding; IV then ciphertext.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0_u8; 16];
        rand::rng().fill_bytes(&mut iv);

        let cipher = cbc::Encryptor::<aes::Aes128>::new(&self.cipher_key.into(), &iv.into());
        let mut out = iv.to_vec();
        out.extend(cipher.encrypt_padded_vec_mut::<NoPadding>(&ipmi_pad(plaintext)));
        out
    }

    /// Reverses [`SessionKeys::encrypt`].
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, SecretError> {
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(SecretError::InvalidInput(format!(
                "{} bytes is not an IV followed by whole AES blocks",
                data.len()
            )));
        }

        let (iv, ciphertext) = data.split_at(16);
        let cipher = cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.cipher_key, iv)
            .map_err(|error| SecretError::InvalidInput(error.to_string()))?;
        let padded = cipher
            .decrypt_padded_vec_mut::<NoPadding>(ciphertext)
            .map_err(|error| SecretError::InvalidInput(error.to_string()))?;

        ipmi_unpad(padded)
    }
}

/// HMAC of `message` under `key`.
pub fn hmac(algorithm: MacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        MacAlgorithm::HmacSha1 => keyed::<Hmac<sha1::Sha1>>(key, message),
        MacAlgorithm::HmacSha256 => keyed::<Hmac<sha2::Sha256>>(key, message),
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of every length, so this never fails; an empty MAC
    // would never verify anyway.
    let Ok(mut mac) = <M as Mac>::new_from_slice(key) else {
        return Vec::new();
    };

    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA1-96 or HMAC-SHA256-128.
fn integrity_len(algorithm: MacAlgorithm) -> usize {
    match algorithm {
        MacAlgorithm::HmacSha1 => 12,
        MacAlgorithm::HmacSha256 => 16,
    }
}

/// IPMI confidentiality pad: `01 02 ...`, then the pad length, up to a
/// multiple of the AES block size.
fn ipmi_pad(plaintext: &[u8]) -> Vec<u8> {
    let pad_len = (16 - (plaintext.len() + 1) % 16) % 16;
    let mut padded = plaintext.to_vec();
    padded.extend((1..=pad_len as u8).collect::<Vec<u8>>());
    padded.push(pad_len as u8);
    padded
}

fn ipmi_unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    let pad_len = usize::from(padded.pop().unwrap_or(0));

    if pad_len > 15 || pad_len > padded.len() {
        return Err(SecretError::InvalidInput(format!(
            "pad length {pad_len} is invalid"
        )));
    }

    padded.truncate(padded.len() - pad_len);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202_case_2() {
        let mac = hmac(
            MacAlgorithm::HmacSha1,
            b"Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mac = hmac(
            MacAlgorithm::HmacSha256,
            b"Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn encrypt_round_trips_with_ipmi_padding() {
        let keys = SessionKeys::derive(MacAlgorithm::HmacSha256, b"password", b"sik input");

        for len in [0, 1, 15, 16, 17, 40] {
            let plaintext: Vec<u8> = (0..len).map(|byte| byte as u8).collect();
            let sealed = keys.encrypt(&plaintext);

            assert_eq!(sealed.len() % 16, 0);
            assert_ne!(&sealed[16..], plaintext.as_slice());
            assert_eq!(keys.decrypt(&sealed).expect("decrypts"), plaintext);
        }
    }

    #[test]
    fn integrity_codes_are_truncated_per_algorithm() {
        let sha1 = SessionKeys::derive(MacAlgorithm::HmacSha1, b"pw", b"in");
        let sha256 = SessionKeys::derive(MacAlgorithm::HmacSha256, b"pw", b"in");

        assert_eq!(sha1.integrity_mac(b"packet").len(), 12);
        assert_eq!(sha256.integrity_mac(b"packet").len(), 16);
        assert_eq!(sha1.sik_mac(b"rakp4").len(), 20);
    }

    #[test]
    fn decrypt_rejects_partial_blocks() {
        let keys = SessionKeys::derive(MacAlgorithm::HmacSha1, b"pw", b"in");
        assert!(matches!(
            keys.decrypt(&[0; 20]),
            Err(SecretError::InvalidInput(_))
        ));
    }
}
