//! What the IPMI client needs from its host: datagrams to the BMC and
//! cryptography keyed by the BMC password.
//!
//! The shapes mirror the `bmc-datagram` and `bmc-secret` imports of the
//! `ingot:plugin` WIT package. The password and every key derived from it
//! stay behind [`Secrets`] and [`SessionKeys`]: this crate only ever sees
//! MACs and ciphertext.

/// Hash function of an HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    /// HMAC-SHA1 (cipher suite 3).
    HmacSha1,
    /// HMAC-SHA256 (cipher suite 17).
    HmacSha256,
}

/// Datagrams to and from this host's BMC.
pub trait Datagram {
    /// Sends one datagram.
    ///
    /// # Errors
    /// The host could not send it; the text is for humans.
    fn send(&mut self, payload: &[u8]) -> Result<(), String>;

    /// Waits up to `timeout_ms` for one datagram; `None` on timeout.
    ///
    /// # Errors
    /// The host could not receive; the text is for humans.
    fn receive(&mut self, timeout_ms: u32) -> Result<Option<Vec<u8>>, String>;
}

/// Keys of one RMCP+ session, held by the host.
pub trait SessionKeys {
    /// Full HMAC keyed by the session integrity key (checks RAKP 4).
    fn sik_mac(&self, message: &[u8]) -> Vec<u8>;

    /// Truncated HMAC keyed by K1 (packet integrity).
    fn integrity_mac(&self, message: &[u8]) -> Vec<u8>;

    /// AES-CBC-128 keyed by K2 with a random IV and the IPMI pad; returns IV
    /// followed by ciphertext.
    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8>;

    /// Reverses [`SessionKeys::encrypt`].
    ///
    /// # Errors
    /// Data that is not IV plus whole blocks with a valid pad.
    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String>;
}

/// Password-keyed operations performed by the host.
pub trait Secrets {
    /// The BMC user name (not secret: it travels in clear in RAKP 1).
    ///
    /// # Errors
    /// The host has no credentials for this BMC.
    fn username(&mut self) -> Result<String, String>;

    /// HMAC of `message` keyed by the password (`Kuid`).
    ///
    /// # Errors
    /// The host has no credentials for this BMC.
    fn password_mac(&mut self, algorithm: MacAlgorithm, message: &[u8]) -> Result<Vec<u8>, String>;

    /// Derives the session keys from the SIK input.
    ///
    /// # Errors
    /// The host has no credentials for this BMC.
    fn derive(
        &mut self,
        algorithm: MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn SessionKeys>, String>;
}
