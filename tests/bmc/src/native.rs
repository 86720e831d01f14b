//! Native stand-ins for the host's BMC imports, so the drivers' protocol
//! logic can be exercised against real peers without Wasm: HTTP with
//! credential substitution, UDP datagrams, and password-keyed cryptography
//! that keeps keys out of the driver.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use hmac::{Hmac, Mac};
use ingot_plugin_ipmi::transport as ipmi;
use ingot_plugin_redfish::transport::{
    BmcHttp, Credentials, Environment, PASSWORD_PLACEHOLDER, Request, Response, TransportError,
    USERNAME_PLACEHOLDER,
};

/// HTTP to one BMC origin with the credentials kept here, not in the driver.
pub struct NativeHttp {
    client: reqwest::blocking::Client,
    origin: String,
    username: String,
    password: String,
    token: Option<String>,
    /// Every request path sent, in order, for assertions.
    pub sent: Vec<String>,
}

impl NativeHttp {
    /// A transport to `origin` (e.g. `http://127.0.0.1:8000`).
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(
        origin: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            origin: origin.trim_end_matches('/').to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            token: None,
            sent: Vec::new(),
        })
    }

    fn execute(&mut self, request: &Request, body: Vec<u8>) -> Result<Response, TransportError> {
        self.sent
            .push(format!("{} {}", request.method, request.path));
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|error| TransportError::Denied(error.to_string()))?;
        let mut builder = self
            .client
            .request(method, format!("{}{}", self.origin, request.path))
            .body(body);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        match request.credentials {
            Credentials::None => {}
            Credentials::Basic => {
                let pair = format!("{}:{}", self.username, self.password);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                builder = builder.header("Authorization", format!("Basic {encoded}"));
            }
            Credentials::Session => {
                let token = self
                    .token
                    .clone()
                    .ok_or_else(|| TransportError::NoCredentials("no session token".to_owned()))?;
                builder = builder.header("X-Auth-Token", token);
            }
        }
        let response = builder.send().map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.bytes().map_err(classify)?.to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn classify(error: reqwest::Error) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Connect(error.to_string())
    }
}

fn json_escaped(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

impl BmcHttp for NativeHttp {
    fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        self.execute(request, request.body.clone())
    }

    fn login(&mut self, request: &Request, token_header: &str) -> Result<Response, TransportError> {
        let body = String::from_utf8_lossy(&request.body)
            .replace(USERNAME_PLACEHOLDER, &json_escaped(&self.username))
            .replace(PASSWORD_PLACEHOLDER, &json_escaped(&self.password));
        let mut anonymous = request.clone();
        anonymous.credentials = Credentials::None;
        let mut response = self.execute(&anonymous, body.into_bytes())?;
        if response.is_success() {
            self.token = response.header(token_header).map(str::to_owned);
        }
        response
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(token_header));
        Ok(response)
    }

    fn forget_session(&mut self) {
        self.token = None;
    }
}

/// Key-value store, wall clock and configuration held in memory.
#[derive(Debug, Default)]
pub struct NativeEnv {
    /// Stored values.
    pub store: BTreeMap<String, Vec<u8>>,
    /// Configuration values.
    pub config: BTreeMap<String, String>,
}

impl Environment for NativeEnv {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.store.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &str) {
        self.store.remove(key);
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn config(&mut self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

/// A UDP socket connected to one BMC.
pub struct NativeDatagram {
    socket: UdpSocket,
}

impl NativeDatagram {
    /// A socket connected to 127.0.0.1:`port`.
    ///
    /// # Errors
    /// The socket could not be bound or connected.
    pub fn connect(port: u16) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(("127.0.0.1", port))?;
        Ok(Self { socket })
    }
}

impl ipmi::Datagram for NativeDatagram {
    fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        self.socket
            .send(payload)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    fn receive(&mut self, timeout_ms: u32) -> Result<Option<Vec<u8>>, String> {
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
        self.socket
            .set_read_timeout(Some(timeout))
            .map_err(|error| error.to_string())?;
        let mut buffer = vec![0u8; 2048];
        match self.socket.recv(&mut buffer) {
            Ok(len) => {
                buffer.truncate(len);
                Ok(Some(buffer))
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            // An ICMP port-unreachable shows up as a refused receive: treat
            // it as silence so that retransmission decides.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(timeout);
                Ok(None)
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Username and password held outside the driver.
pub struct NativeSecrets {
    username: String,
    password: String,
}

impl NativeSecrets {
    /// Secrets for one BMC account.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

fn hmac(algorithm: ipmi::MacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        ipmi::MacAlgorithm::HmacSha1 => Hmac::<sha1::Sha1>::new_from_slice(key)
            .map(|mac| mac.chain_update(message).finalize().into_bytes().to_vec())
            .unwrap_or_default(),
        ipmi::MacAlgorithm::HmacSha256 => Hmac::<sha2::Sha256>::new_from_slice(key)
            .map(|mac| mac.chain_update(message).finalize().into_bytes().to_vec())
            .unwrap_or_default(),
    }
}

impl ipmi::Secrets for NativeSecrets {
    fn username(&mut self) -> Result<String, String> {
        Ok(self.username.clone())
    }

    fn password_mac(
        &mut self,
        algorithm: ipmi::MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, String> {
        Ok(hmac(algorithm, self.password.as_bytes(), message))
    }

    fn derive(
        &mut self,
        algorithm: ipmi::MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn ipmi::SessionKeys>, String> {
        let sik = hmac(algorithm, self.password.as_bytes(), sik_input);
        let k1 = hmac(algorithm, &sik, &[0x01; 20]);
        let k2 = hmac(algorithm, &sik, &[0x02; 20]);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(k2.get(..16).ok_or("K2 shorter than 16 bytes")?);
        let integrity_len = match algorithm {
            ipmi::MacAlgorithm::HmacSha1 => 12,
            ipmi::MacAlgorithm::HmacSha256 => 16,
        };
        Ok(Box::new(NativeKeys {
            algorithm,
            sik,
            k1,
            aes_key,
            integrity_len,
        }))
    }
}

struct NativeKeys {
    algorithm: ipmi::MacAlgorithm,
    sik: Vec<u8>,
    k1: Vec<u8>,
    aes_key: [u8; 16],
    integrity_len: usize,
}

type AesCbcEnc = cbc::Encryptor<aes::Aes128>;
type AesCbcDec = cbc::Decryptor<aes::Aes128>;

impl ipmi::SessionKeys for NativeKeys {
    fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
        hmac(self.algorithm, &self.sik, message)
    }

    fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
        let mut code = hmac(self.algorithm, &self.k1, message);
        code.truncate(self.integrity_len);
        code
    }

    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        let _ = getrandom::fill(&mut iv);
        let mut data = plaintext.to_vec();
        let pad = (16 - (plaintext.len() + 1) % 16) % 16;
        data.extend((1..=pad).map(|byte| u8::try_from(byte).unwrap_or(0)));
        data.push(u8::try_from(pad).unwrap_or(0));
        let len = data.len();
        let encrypted = AesCbcEnc::new(&self.aes_key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut data, len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut out = iv.to_vec();
        out.extend_from_slice(&encrypted);
        out
    }

    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(format!(
                "{} bytes is not an IV plus whole AES blocks",
                data.len()
            ));
        }
        let (iv, ciphertext) = data.split_at(16);
        let mut buffer = ciphertext.to_vec();
        let mut iv_block = [0u8; 16];
        iv_block.copy_from_slice(iv);
        let plain = AesCbcDec::new(&self.aes_key.into(), &iv_block.into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .map_err(|_| "AES-CBC decryption failed".to_owned())?;
        let pad = usize::from(*plain.last().ok_or("empty plaintext")?);
        let end = plain
            .len()
            .checked_sub(pad + 1)
            .ok_or("pad longer than the payload")?;
        Ok(plain[..end].to_vec())
    }
}

/// Random bytes for the IPMI driver.
///
/// # Errors
/// The operating system's generator failed.
pub fn random(buffer: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buffer).map_err(|error| error.to_string())
}
