//! The RMCP+ session: Open Session, RAKP 1–4, then encrypted and
//! authenticated IPMI commands, with retransmission and backoff.
//!
//! Cipher suite 17 (SHA-256) is tried first and suite 3 (SHA-1) second; the
//! algorithms the BMC says it chose are checked, because some BMCs answer a
//! suite 17 request with suite 3 algorithms and a status of success. Every
//! use of the password happens in the host behind [`Secrets`].

use crate::codec::{self, Packet, payload_type};
use crate::error::IpmiError;
use crate::transport::{Datagram, MacAlgorithm, Secrets, SessionKeys};

/// Requested role: administrator, with name-only lookup.
const ROLE_ADMIN_NAME_ONLY: u8 = 0x14;
const PRIVILEGE_ADMIN: u8 = 0x04;
const NET_FN_APP: u8 = 0x06;
const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3B;
const CMD_CLOSE_SESSION: u8 = 0x3C;
/// Junk datagrams tolerated while waiting for one answer.
const RECEIVES_PER_ATTEMPT: u32 = 4;

/// A cipher suite this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    /// Suite number.
    pub id: u8,
    auth: u8,
    integrity: u8,
    confidentiality: u8,
    mac: MacAlgorithm,
    rakp4_len: usize,
}

/// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
pub const SUITE_17: CipherSuite = CipherSuite {
    id: 17,
    auth: 0x03,
    integrity: 0x04,
    confidentiality: 0x01,
    mac: MacAlgorithm::HmacSha256,
    rakp4_len: 16,
};

/// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
pub const SUITE_3: CipherSuite = CipherSuite {
    id: 3,
    auth: 0x01,
    integrity: 0x01,
    confidentiality: 0x01,
    mac: MacAlgorithm::HmacSha1,
    rakp4_len: 12,
};

/// Retransmission policy: the first wait, doubled after each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Wait for the first answer, in milliseconds.
    pub initial_timeout_ms: u32,
    /// Datagrams sent per request, including the first.
    pub attempts: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            initial_timeout_ms: 500,
            attempts: 4,
        }
    }
}

/// An open, authenticated RMCP+ session.
pub struct Session<'d> {
    datagram: &'d mut dyn Datagram,
    keys: Box<dyn SessionKeys>,
    retransmit: Retransmit,
    console_id: u32,
    managed_id: u32,
    sequence: u32,
    request_sequence: u8,
    /// The cipher suite in use.
    pub suite: CipherSuite,
}

/// Fills a buffer with random bytes (session IDs, console random number).
pub type RandomSource<'r> = &'r mut dyn FnMut(&mut [u8]) -> Result<(), String>;

struct Handshake<'a> {
    datagram: &'a mut dyn Datagram,
    secrets: &'a mut dyn Secrets,
    retransmit: Retransmit,
    random: RandomSource<'a>,
    tag: u8,
}

impl<'d> Session<'d> {
    /// Opens a session with administrator privilege.
    ///
    /// # Errors
    /// No answer, a refused handshake, a wrong password, or undecodable
    /// answers.
    pub fn open(
        datagram: &'d mut dyn Datagram,
        secrets: &mut dyn Secrets,
        retransmit: Retransmit,
        random: RandomSource<'_>,
    ) -> Result<Self, IpmiError> {
        let mut handshake = Handshake {
            datagram: &mut *datagram,
            secrets,
            retransmit,
            random,
            tag: 0,
        };
        let established = handshake.run()?;

        let mut session = Self {
            datagram,
            keys: established.keys,
            retransmit,
            console_id: established.console_id,
            managed_id: established.managed_id,
            sequence: 0,
            request_sequence: 0,
            suite: established.suite,
        };
        session.command(
            "Set Session Privilege Level",
            NET_FN_APP,
            CMD_SET_SESSION_PRIVILEGE,
            &[PRIVILEGE_ADMIN],
        )?;
        Ok(session)
    }

    /// Sends one IPMI command and returns the response data after the
    /// completion code.
    ///
    /// # Errors
    /// No answer, undecodable answers, or a non-zero completion code.
    pub fn command(
        &mut self,
        name: &'static str,
        net_fn: u8,
        command: u8,
        data: &[u8],
    ) -> Result<Vec<u8>, IpmiError> {
        self.request_sequence = (self.request_sequence + 1) & 0x3F;
        let message = codec::ipmi_request(net_fn, command, self.request_sequence, data);
        let mut last_problem = None;
        let mut timeout = self.retransmit.initial_timeout_ms;

        for _ in 0..self.retransmit.attempts {
            self.sequence = self.sequence.wrapping_add(1).max(1);
            let packet =
                codec::encode_session(self.keys.as_ref(), self.managed_id, self.sequence, &message);
            send(self.datagram, name, &packet)?;

            for _ in 0..RECEIVES_PER_ATTEMPT {
                let Some(datagram) = receive(self.datagram, name, timeout)? else {
                    break;
                };
                match self.match_response(&datagram, net_fn, command) {
                    Ok(response) if response.completion_code == 0 => return Ok(response.data),
                    Ok(response) => {
                        return Err(IpmiError::Completion {
                            command: name,
                            code: response.completion_code,
                        });
                    }
                    Err(problem) => last_problem = Some(problem),
                }
            }
            timeout = timeout.saturating_mul(2);
        }
        Err(give_up(name, self.retransmit.attempts, last_problem))
    }

    fn match_response(
        &self,
        datagram: &[u8],
        net_fn: u8,
        command: u8,
    ) -> Result<codec::IpmiResponse, String> {
        let packet = codec::decode(datagram, Some(self.keys.as_ref()))?;
        if packet.payload_type != payload_type::IPMI || packet.session_id != self.console_id {
            return Err("answer for another session or payload".to_owned());
        }
        let response = codec::ipmi_response(&packet.payload)?;
        let same_request = response.request_sequence == self.request_sequence
            && response.command == command
            && response.net_fn == net_fn + 1;
        if same_request {
            Ok(response)
        } else {
            Err("answer to another request".to_owned())
        }
    }

    /// Closes the session. Failures are ignored: the BMC times idle
    /// sessions out, and the caller's result matters more.
    pub fn close(mut self) {
        self.retransmit.attempts = 1;
        let id = self.managed_id.to_le_bytes();
        let _ = self.command("Close Session", NET_FN_APP, CMD_CLOSE_SESSION, &id);
    }
}

struct Established {
    keys: Box<dyn SessionKeys>,
    console_id: u32,
    managed_id: u32,
    suite: CipherSuite,
}

impl Handshake<'_> {
    fn run(&mut self) -> Result<Established, IpmiError> {
        let username = self.secrets.username().map_err(IpmiError::Secret)?;
        for suite in [SUITE_17, SUITE_3] {
            let console_id = self.random_u32()?;
            if let Some(managed_id) = self.open_session(suite, console_id)? {
                return self.authenticate(suite, console_id, managed_id, username.as_bytes());
            }
        }
        Err(IpmiError::NoCipherSuite)
    }

    fn random_u32(&mut self) -> Result<u32, IpmiError> {
        let mut bytes = [0u8; 4];
        self.fill_random(&mut bytes)?;
        // Session ID zero means "no session".
        Ok(u32::from_le_bytes(bytes).max(1))
    }

    fn fill_random(&mut self, buffer: &mut [u8]) -> Result<(), IpmiError> {
        (self.random)(buffer).map_err(|reason| IpmiError::Transport {
            step: "random numbers",
            reason,
        })
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    /// Returns the managed system session ID, or `None` when the BMC does
    /// not take this suite.
    fn open_session(
        &mut self,
        suite: CipherSuite,
        console_id: u32,
    ) -> Result<Option<u32>, IpmiError> {
        let tag = self.next_tag();
        let mut request = vec![tag, PRIVILEGE_ADMIN, 0, 0];
        request.extend_from_slice(&console_id.to_le_bytes());
        for (kind, algorithm) in [
            (0x00, suite.auth),
            (0x01, suite.integrity),
            (0x02, suite.confidentiality),
        ] {
            request.extend_from_slice(&[kind, 0, 0, 0x08, algorithm, 0, 0, 0]);
        }

        let response = self.exchange(
            "Open Session",
            payload_type::OPEN_SESSION_REQUEST,
            &request,
            |packet| {
                packet.payload_type == payload_type::OPEN_SESSION_RESPONSE
                    && packet.payload.first() == Some(&tag)
            },
        )?;
        let payload = &response.payload;
        let status = payload.get(1).copied().unwrap_or(0xFF);
        if matches!(status, 0x04 | 0x05 | 0x06 | 0x11) {
            return Ok(None);
        }
        if status != 0 {
            return Err(IpmiError::SessionRefused {
                step: "Open Session",
                status,
            });
        }
        if payload.len() < 36 || codec::le_u32(&payload[4..8]) != console_id {
            return Err(IpmiError::Malformed {
                step: "Open Session",
                reason: format!(
                    "response of {} bytes for another console session",
                    payload.len()
                ),
            });
        }
        let chosen = (payload[16], payload[24], payload[32]);
        if chosen != (suite.auth, suite.integrity, suite.confidentiality) {
            return Ok(None);
        }
        Ok(Some(codec::le_u32(&payload[8..12])))
    }

    fn authenticate(
        &mut self,
        suite: CipherSuite,
        console_id: u32,
        managed_id: u32,
        username: &[u8],
    ) -> Result<Established, IpmiError> {
        let user_len = u8::try_from(username.len())
            .map_err(|_| IpmiError::Secret("user name longer than 255 bytes".to_owned()))?;
        let mut console_random = [0u8; 16];
        self.fill_random(&mut console_random)?;

        let rakp2 = self.rakp1(managed_id, &console_random, user_len, username)?;
        let bmc_random = &rakp2[8..24];
        let bmc_guid = &rakp2[24..40];

        let mut proof_input = Vec::new();
        proof_input.extend_from_slice(&console_id.to_le_bytes());
        proof_input.extend_from_slice(&managed_id.to_le_bytes());
        proof_input.extend_from_slice(&console_random);
        proof_input.extend_from_slice(bmc_random);
        proof_input.extend_from_slice(bmc_guid);
        proof_input.extend_from_slice(&[ROLE_ADMIN_NAME_ONLY, user_len]);
        proof_input.extend_from_slice(username);
        let expected = self
            .secrets
            .password_mac(suite.mac, &proof_input)
            .map_err(IpmiError::Secret)?;
        if expected.as_slice() != &rakp2[40..] {
            return Err(IpmiError::PasswordMismatch);
        }

        let mut sik_input = Vec::new();
        sik_input.extend_from_slice(&console_random);
        sik_input.extend_from_slice(bmc_random);
        sik_input.extend_from_slice(&[ROLE_ADMIN_NAME_ONLY, user_len]);
        sik_input.extend_from_slice(username);
        let keys = self
            .secrets
            .derive(suite.mac, &sik_input)
            .map_err(IpmiError::Secret)?;

        let mut rakp4_input = Vec::new();
        rakp4_input.extend_from_slice(&console_random);
        rakp4_input.extend_from_slice(&managed_id.to_le_bytes());
        rakp4_input.extend_from_slice(bmc_guid);
        let rakp4 = self.rakp3(
            suite, console_id, managed_id, bmc_random, user_len, username,
        )?;
        let check = keys.sik_mac(&rakp4_input);
        if check.get(..suite.rakp4_len) != rakp4.get(8..8 + suite.rakp4_len) {
            return Err(IpmiError::SessionCheckFailed);
        }
        Ok(Established {
            keys,
            console_id,
            managed_id,
            suite,
        })
    }

    fn rakp1(
        &mut self,
        managed_id: u32,
        console_random: &[u8; 16],
        user_len: u8,
        username: &[u8],
    ) -> Result<Vec<u8>, IpmiError> {
        let tag = self.next_tag();
        let mut request = vec![tag, 0, 0, 0];
        request.extend_from_slice(&managed_id.to_le_bytes());
        request.extend_from_slice(console_random);
        request.extend_from_slice(&[ROLE_ADMIN_NAME_ONLY, 0, 0, user_len]);
        request.extend_from_slice(username);

        let response = self.exchange("RAKP 1", payload_type::RAKP1, &request, |packet| {
            packet.payload_type == payload_type::RAKP2 && packet.payload.first() == Some(&tag)
        })?;
        let payload = response.payload;
        let status = payload.get(1).copied().unwrap_or(0xFF);
        if status != 0 {
            return Err(IpmiError::SessionRefused {
                step: "RAKP 1",
                status,
            });
        }
        if payload.len() < 40 {
            return Err(IpmiError::Malformed {
                step: "RAKP 1",
                reason: format!("RAKP 2 of {} bytes", payload.len()),
            });
        }
        Ok(payload)
    }

    fn rakp3(
        &mut self,
        suite: CipherSuite,
        console_id: u32,
        managed_id: u32,
        bmc_random: &[u8],
        user_len: u8,
        username: &[u8],
    ) -> Result<Vec<u8>, IpmiError> {
        let mut proof_input = bmc_random.to_vec();
        proof_input.extend_from_slice(&console_id.to_le_bytes());
        proof_input.extend_from_slice(&[ROLE_ADMIN_NAME_ONLY, user_len]);
        proof_input.extend_from_slice(username);
        let proof = self
            .secrets
            .password_mac(suite.mac, &proof_input)
            .map_err(IpmiError::Secret)?;

        let tag = self.next_tag();
        let mut request = vec![tag, 0, 0, 0];
        request.extend_from_slice(&managed_id.to_le_bytes());
        request.extend_from_slice(&proof);
        let response = self.exchange("RAKP 3", payload_type::RAKP3, &request, |packet| {
            packet.payload_type == payload_type::RAKP4 && packet.payload.first() == Some(&tag)
        })?;
        let payload = response.payload;
        let status = payload.get(1).copied().unwrap_or(0xFF);
        if status != 0 {
            return Err(IpmiError::SessionRefused {
                step: "RAKP 3",
                status,
            });
        }
        Ok(payload)
    }

    fn exchange(
        &mut self,
        step: &'static str,
        request_type: u8,
        request: &[u8],
        is_answer: impl Fn(&Packet) -> bool,
    ) -> Result<Packet, IpmiError> {
        let packet = codec::encode_plain(request_type, request);
        let mut timeout = self.retransmit.initial_timeout_ms;
        let mut last_problem = None;
        for _ in 0..self.retransmit.attempts {
            send(self.datagram, step, &packet)?;
            for _ in 0..RECEIVES_PER_ATTEMPT {
                let Some(datagram) = receive(self.datagram, step, timeout)? else {
                    break;
                };
                match codec::decode(&datagram, None) {
                    Ok(answer) if is_answer(&answer) => return Ok(answer),
                    Ok(_) => last_problem = Some("answer to another request".to_owned()),
                    Err(problem) => last_problem = Some(problem),
                }
            }
            timeout = timeout.saturating_mul(2);
        }
        Err(give_up(step, self.retransmit.attempts, last_problem))
    }
}

fn send(datagram: &mut dyn Datagram, step: &'static str, packet: &[u8]) -> Result<(), IpmiError> {
    datagram
        .send(packet)
        .map_err(|reason| IpmiError::Transport { step, reason })
}

fn receive(
    datagram: &mut dyn Datagram,
    step: &'static str,
    timeout_ms: u32,
) -> Result<Option<Vec<u8>>, IpmiError> {
    datagram
        .receive(timeout_ms)
        .map_err(|reason| IpmiError::Transport { step, reason })
}

/// Silence means unreachable; answers that never decode mean a protocol
/// problem.
fn give_up(step: &'static str, attempts: u32, last_problem: Option<String>) -> IpmiError {
    match last_problem {
        Some(reason) => IpmiError::Malformed { step, reason },
        None => IpmiError::NoAnswer { step, attempts },
    }
}
