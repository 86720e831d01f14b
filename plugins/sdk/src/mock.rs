//! A native mock of the host, so plugin logic is unit-tested with plain
//! `cargo test`.
//!
//! The mock is strict: an HTTP request, datagram or agent command that the
//! test did not script fails the test with a message naming the call. The
//! clock is fixed and only moves when the test says so. Every log record and
//! every host call is recorded for assertions.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use hmac::{Hmac, Mac};

use crate::host::{
    AgentCommand, AgentError, BmcHost, CommandStatus, ControlError, Credentials, Host, HttpRequest,
    HttpResponse, KvError, KvStore, Level, MacAlgorithm, SecretError, SessionKeys, StepHost,
    TransportError,
};
use crate::types::{BootDevice, PowerAction, PowerState, Progress, VirtualMedia};

/// Fixed start time of the mock clock: 2026-01-01T00:00:00Z.
pub const MOCK_EPOCH_MS: u64 = 1_767_225_600_000;

/// Cap of one value in the mock key-value store, matching the host default.
pub const KV_VALUE_CAP: usize = 1 << 20;

/// One log record emitted by the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// Message.
    pub message: String,
    /// Structured fields.
    pub fields: Vec<(String, String)>,
}

/// One host call, recorded in order.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCall {
    /// An HTTP request to the BMC.
    Http(HttpRequest),
    /// A login request.
    Login(HttpRequest),
    /// A datagram sent to the BMC.
    Datagram(Vec<u8>),
    /// A power change through the host's driver.
    SetPower(PowerAction),
    /// A boot device change through the host's driver.
    SetBootDevice(BootDevice),
    /// Virtual media inserted through the host's driver.
    InsertMedia(VirtualMedia),
    /// Virtual media ejected through the host's driver.
    EjectMedia,
    /// A command sent to the deploy agent.
    AgentSend(AgentCommand),
}

/// Simulates the BMC end of the datagram transport.
type DatagramResponder = Box<dyn FnMut(&Vec<u8>) -> Option<Vec<u8>>>;

/// A scripted HTTP exchange: the request it expects and the answer.
struct HttpExchange {
    method: String,
    path: String,
    answer: Result<HttpResponse, TransportError>,
}

/// The mock host. Build it with the `with_*` and `expect_*` methods, run the
/// plugin logic against it, then assert on [`MockHost::logs`],
/// [`MockHost::calls`] and call [`MockHost::assert_done`].
pub struct MockHost {
    now_ms: Cell<u64>,
    deadline_ms: Cell<u64>,
    config: BTreeMap<String, String>,
    kv: RefCell<BTreeMap<String, Vec<u8>>>,
    logs: RefCell<Vec<LogRecord>>,
    calls: RefCell<Vec<HostCall>>,
    http: RefCell<VecDeque<HttpExchange>>,
    session_token: RefCell<Option<String>>,
    datagram_responder: RefCell<Option<DatagramResponder>>,
    datagram_inbox: RefCell<VecDeque<Vec<u8>>>,
    username: Option<String>,
    password: Option<String>,
    power: Cell<PowerState>,
    control_progress: RefCell<VecDeque<Result<Progress, ControlError>>>,
    agent_connected: Cell<bool>,
    agent_status: RefCell<BTreeMap<String, VecDeque<CommandStatus>>>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    /// A host with a fixed clock, a 1 s deadline, no config and nothing scripted.
    pub fn new() -> Self {
        Self {
            now_ms: Cell::new(MOCK_EPOCH_MS),
            deadline_ms: Cell::new(1_000),
            config: BTreeMap::new(),
            kv: RefCell::new(BTreeMap::new()),
            logs: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
            http: RefCell::new(VecDeque::new()),
            session_token: RefCell::new(None),
            datagram_responder: RefCell::new(None),
            datagram_inbox: RefCell::new(VecDeque::new()),
            username: None,
            password: None,
            power: Cell::new(PowerState::Off),
            control_progress: RefCell::new(VecDeque::new()),
            agent_connected: Cell::new(false),
            agent_status: RefCell::new(BTreeMap::new()),
        }
    }

    /// Sets a configuration entry.
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the BMC credentials: the user name the plugin may read and the
    /// password used by the secret-keyed MACs.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
        self
    }

    /// Sets the power state reported through host control.
    pub fn with_power_state(self, state: PowerState) -> Self {
        self.power.set(state);
        self
    }

    /// Marks the deploy agent as connected.
    pub fn with_agent_connected(self) -> Self {
        self.agent_connected.set(true);
        self
    }

    /// Advances the fixed clock.
    pub fn advance_clock(&self, millis: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(millis));
    }

    /// Sets the remaining call budget the plugin sees.
    pub fn set_deadline_remaining_ms(&self, millis: u64) {
        self.deadline_ms.set(millis);
    }

    /// Scripts the answer to the next HTTP request, which must have this
    /// method and path.
    pub fn expect_http(
        &self,
        method: &str,
        path: &str,
        answer: Result<HttpResponse, TransportError>,
    ) {
        self.http.borrow_mut().push_back(HttpExchange {
            method: method.to_owned(),
            path: path.to_owned(),
            answer,
        });
    }

    /// Simulates the BMC end of the datagram transport: every datagram the
    /// plugin sends goes to `responder`, whose answer (if any) becomes
    /// receivable.
    pub fn on_datagram(&self, responder: impl FnMut(&Vec<u8>) -> Option<Vec<u8>> + 'static) {
        *self.datagram_responder.borrow_mut() = Some(Box::new(responder));
    }

    /// Scripts the answer to the next host-control action.
    pub fn expect_control(&self, answer: Result<Progress, ControlError>) {
        self.control_progress.borrow_mut().push_back(answer);
    }

    /// Scripts the statuses an agent command reports, one per `status` call;
    /// the last one repeats.
    pub fn script_agent_command(&self, command_id: &str, statuses: Vec<CommandStatus>) {
        self.agent_status
            .borrow_mut()
            .insert(command_id.to_owned(), statuses.into());
    }

    /// Log records emitted so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.logs.borrow().clone()
    }

    /// Host calls made so far.
    pub fn calls(&self) -> Vec<HostCall> {
        self.calls.borrow().clone()
    }

    /// A value in the key-value store.
    pub fn kv_value(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.borrow().get(key).cloned()
    }

    /// Fails the test if a scripted HTTP exchange or control answer was not used.
    pub fn assert_done(&self) {
        let pending: Vec<String> = self
            .http
            .borrow()
            .iter()
            .map(|exchange| format!("{} {}", exchange.method, exchange.path))
            .collect();
        assert!(
            pending.is_empty(),
            "scripted HTTP requests never sent: {pending:?}"
        );
        assert!(
            self.control_progress.borrow().is_empty(),
            "scripted host-control answers never used"
        );
    }

    fn record(&self, call: HostCall) {
        self.calls.borrow_mut().push(call);
    }

    fn next_http(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let exchange = self.http.borrow_mut().pop_front();
        let Some(exchange) = exchange else {
            panic!(
                "unexpected HTTP request {} {}",
                request.method, request.path
            );
        };

        assert_eq!(
            (exchange.method.as_str(), exchange.path.as_str()),
            (request.method.as_str(), request.path.as_str()),
            "HTTP request differs from the scripted one"
        );

        exchange.answer
    }

    fn next_control(&self, what: &str) -> Result<Progress, ControlError> {
        let answer = self.control_progress.borrow_mut().pop_front();
        answer.unwrap_or_else(|| panic!("unexpected host-control call: {what}"))
    }

    fn password(&self) -> Result<&[u8], SecretError> {
        self.password
            .as_deref()
            .map(str::as_bytes)
            .ok_or(SecretError::NoCredentials)
    }
}

impl Host for MockHost {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs.borrow_mut().push(LogRecord {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        });
    }

    fn now_unix_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn deadline_remaining_ms(&self) -> u64 {
        self.deadline_ms.get()
    }

    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn config_entries(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

impl KvStore for MockHost {
    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv_value(key)
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if value.len() > KV_VALUE_CAP {
            return Err(KvError::TooLarge(KV_VALUE_CAP as u64));
        }

        self.kv.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn kv_delete(&self, key: &str) {
        self.kv.borrow_mut().remove(key);
    }
}

impl BmcHost for MockHost {
    fn http_send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.record(HostCall::Http(request.clone()));

        if request.credentials == Credentials::Session && self.session_token.borrow().is_none() {
            return Err(TransportError::NoCredentials(
                "no session: log in first".to_owned(),
            ));
        }

        self.next_http(request)
    }

    fn http_login(
        &self,
        request: &HttpRequest,
        token_header: &str,
    ) -> Result<HttpResponse, TransportError> {
        self.record(HostCall::Login(request.clone()));
        let mut response = self.next_http(request)?;

        let token_at = response
            .headers
            .iter()
            .position(|(name, _)| name.eq_ignore_ascii_case(token_header));

        if (200..300).contains(&response.status)
            && let Some(index) = token_at
        {
            let (_, token) = response.headers.remove(index);
            *self.session_token.borrow_mut() = Some(token);
        }

        Ok(response)
    }

    fn http_forget_session(&self) {
        *self.session_token.borrow_mut() = None;
    }

    fn datagram_send(&self, payload: &[u8]) -> Result<(), TransportError> {
        self.record(HostCall::Datagram(payload.to_vec()));
        let mut responder = self.datagram_responder.borrow_mut();
        let Some(responder) = responder.as_mut() else {
            panic!(
                "unexpected datagram of {} bytes: no responder scripted",
                payload.len()
            );
        };

        if let Some(reply) = responder(&payload.to_vec()) {
            self.datagram_inbox.borrow_mut().push_back(reply);
        }

        Ok(())
    }

    fn datagram_receive(&self, timeout_ms: u32) -> Result<Option<Vec<u8>>, TransportError> {
        let reply = self.datagram_inbox.borrow_mut().pop_front();

        if reply.is_none() {
            self.advance_clock(u64::from(timeout_ms));
        }

        Ok(reply)
    }

    fn bmc_username(&self) -> Option<String> {
        self.username.clone()
    }

    fn password_mac(
        &self,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        Ok(hmac(algorithm, self.password()?, message))
    }

    fn derive_session_keys(
        &self,
        algorithm: MacAlgorithm,
        sik_input: &[u8],
    ) -> Result<Box<dyn SessionKeys>, SecretError> {
        let sik = hmac(algorithm, self.password()?, sik_input);
        Ok(Box::new(MockSessionKeys::derive(algorithm, sik)))
    }
}

impl StepHost for MockHost {
    fn power_state(&self) -> Result<PowerState, ControlError> {
        Ok(self.power.get())
    }

    fn set_power(&self, action: PowerAction) -> Result<Progress, ControlError> {
        self.record(HostCall::SetPower(action));
        self.next_control("set-power")
    }

    fn set_boot_device(&self, device: &BootDevice) -> Result<Progress, ControlError> {
        self.record(HostCall::SetBootDevice(*device));
        self.next_control("set-boot-device")
    }

    fn insert_media(&self, media: &VirtualMedia) -> Result<Progress, ControlError> {
        self.record(HostCall::InsertMedia(media.clone()));
        self.next_control("insert-media")
    }

    fn eject_media(&self) -> Result<Progress, ControlError> {
        self.record(HostCall::EjectMedia);
        self.next_control("eject-media")
    }

    fn agent_connected(&self) -> bool {
        self.agent_connected.get()
    }

    fn agent_send(&self, command: &AgentCommand) -> Result<String, AgentError> {
        self.record(HostCall::AgentSend(command.clone()));

        if !self.agent_connected.get() {
            return Err(AgentError::NotConnected);
        }

        let sent = self
            .calls
            .borrow()
            .iter()
            .filter(|call| matches!(call, HostCall::AgentSend(_)))
            .count();
        Ok(format!("command-{sent}"))
    }

    fn agent_status(&self, command_id: &str) -> Result<CommandStatus, AgentError> {
        let mut scripted = self.agent_status.borrow_mut();
        let Some(statuses) = scripted.get_mut(command_id) else {
            return Err(AgentError::Unknown(command_id.to_owned()));
        };

        match statuses.len() {
            0 => Err(AgentError::Unknown(command_id.to_owned())),
            1 => Ok(statuses[0].clone()),
            _ => Ok(statuses
                .pop_front()
                .unwrap_or(CommandStatus::Running(String::new()))),
        }
    }
}

/// Session keys computed natively with the RMCP+ derivation.
struct MockSessionKeys {
    algorithm: MacAlgorithm,
    sik: Vec<u8>,
    k1: Vec<u8>,
    k2: Vec<u8>,
}

impl MockSessionKeys {
    fn derive(algorithm: MacAlgorithm, sik: Vec<u8>) -> Self {
        let k1 = hmac(algorithm, &sik, &[0x01; 20]);
        let k2 = hmac(algorithm, &sik, &[0x02; 20]);
        Self {
            algorithm,
            sik,
            k1,
            k2,
        }
    }

    fn cipher_key(&self) -> [u8; 16] {
        let mut key = [0_u8; 16];
        key.copy_from_slice(&self.k2[..16]);
        key
    }
}

impl SessionKeys for MockSessionKeys {
    fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
        hmac(self.algorithm, &self.sik, message)
    }

    fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = hmac(self.algorithm, &self.k1, message);
        mac.truncate(integrity_len(self.algorithm));
        mac
    }

    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};

        let iv: [u8; 16] = std::array::from_fn(|index| (self.sik.len() + index) as u8);
        let padded = ipmi_pad(plaintext);
        let cipher = cbc::Encryptor::<aes::Aes128>::new(&self.cipher_key().into(), &iv.into());
        let mut out = iv.to_vec();
        out.extend(cipher.encrypt_padded_vec_mut::<NoPadding>(&padded));
        out
    }

    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, SecretError> {
        use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};

        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(SecretError::InvalidInput(format!(
                "{} bytes is not an IV plus whole AES blocks",
                data.len()
            )));
        }

        let (iv, ciphertext) = data.split_at(16);
        let cipher = cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.cipher_key(), iv)
            .map_err(|error| SecretError::Other(error.to_string()))?;
        let padded = cipher
            .decrypt_padded_vec_mut::<NoPadding>(ciphertext)
            .map_err(|error| SecretError::InvalidInput(error.to_string()))?;
        ipmi_unpad(padded)
    }
}

/// Length of the truncated integrity code: HMAC-SHA1-96 or HMAC-SHA256-128.
fn integrity_len(algorithm: MacAlgorithm) -> usize {
    match algorithm {
        MacAlgorithm::HmacSha1 => 12,
        MacAlgorithm::HmacSha256 => 16,
    }
}

fn hmac(algorithm: MacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        MacAlgorithm::HmacSha1 => keyed::<Hmac<sha1::Sha1>>(key, message),
        MacAlgorithm::HmacSha256 => keyed::<Hmac<sha2::Sha256>>(key, message),
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// IPMI confidentiality padding: `01 02 ...` then the pad length, to a
/// multiple of 16 bytes.
fn ipmi_pad(plaintext: &[u8]) -> Vec<u8> {
    let pad_len = (16 - (plaintext.len() + 1) % 16) % 16;
    let mut padded = plaintext.to_vec();
    padded.extend((1..=pad_len).map(|byte| byte as u8));
    padded.push(pad_len as u8);
    padded
}

fn ipmi_unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    let pad_len = usize::from(padded.pop().unwrap_or(0));

    if pad_len > padded.len() || pad_len > 15 {
        return Err(SecretError::InvalidInput(format!(
            "pad length {pad_len} is invalid"
        )));
    }

    padded.truncate(padded.len() - pad_len);
    Ok(padded)
}

/// Builders for the inputs plugin tests need most.
pub mod fixtures {
    use crate::types::{Cpu, HardwareDetails, HostRef, KeyValue};

    /// A host in namespace `lab` whose UID is `uid-<name>`.
    pub fn host_ref(name: &str) -> HostRef {
        HostRef {
            namespace: "lab".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    /// An x86_64 machine with `cpus` CPUs and `ram_gib` GiB of memory.
    pub fn hardware(cpus: u32, ram_gib: u64) -> HardwareDetails {
        HardwareDetails {
            system_vendor: None,
            bios: None,
            ram_mebibytes: ram_gib * 1024,
            nics: Vec::new(),
            storage: Vec::new(),
            cpu: Some(Cpu {
                arch: "x86_64".into(),
                model: "fixture".into(),
                clock_megahertz: 2000.0,
                flags: Vec::new(),
                count: cpus,
            }),
            hostname: None,
        }
    }

    /// Labels from pairs.
    pub fn labels(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).into(), (*value).into()))
            .collect()
    }

    /// A candidate host with the given labels, failure domain and size.
    #[cfg(feature = "host-selector")]
    pub fn candidate(
        name: &str,
        label_pairs: &[(&str, &str)],
        failure_domain: Option<&str>,
        cpus: u32,
        ram_gib: u64,
    ) -> crate::selector::Candidate {
        crate::selector::Candidate {
            host: host_ref(name),
            labels: labels(label_pairs),
            failure_domain: failure_domain.map(Into::into),
            hardware: Some(hardware(cpus, ram_gib)),
        }
    }

    /// A claim with an empty selector and no requirements.
    #[cfg(feature = "host-selector")]
    pub fn claim(identity: &str) -> crate::selector::Claim {
        use crate::selector::{Claim, LabelSelector, Requirements};

        Claim {
            identity: identity.into(),
            labels: Vec::new(),
            selector: LabelSelector {
                match_labels: Vec::new(),
                match_expressions: Vec::new(),
            },
            requirements: Requirements {
                cpu_arch: None,
                min_cpus: None,
                min_ram_mebibytes: None,
                min_disk_bytes: None,
                min_nics: None,
                extra: Vec::new(),
            },
            failure_domain: None,
            domain_usage: Vec::new(),
        }
    }
}
