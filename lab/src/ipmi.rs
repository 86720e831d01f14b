//! IPMI 2.0 (RMCP+) for a lab machine, on its own UDP port.
//!
//! Implements what `ipmitool -I lanplus` needs for power and boot-device management: channel
//! authentication capabilities, the RMCP+ open session and RAKP 1-4 exchange (cipher suites
//! 3 and 17: HMAC-SHA1 or HMAC-SHA256 authentication and integrity, AES-CBC-128
//! confidentiality), privilege level, close session, Get Device ID, and the chassis commands
//! Get Chassis Status, Chassis Control and Get/Set System Boot Options.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use hmac::{Hmac, Mac};

use crate::machine::{BootOverride, Machine, PowerState};

const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
const AUTH_RMCP_PLUS: u8 = 0x06;
const PAYLOAD_IPMI: u8 = 0x00;
const PAYLOAD_OPEN_REQUEST: u8 = 0x10;
const PAYLOAD_OPEN_RESPONSE: u8 = 0x11;
const PAYLOAD_RAKP1: u8 = 0x12;
const PAYLOAD_RAKP2: u8 = 0x13;
const PAYLOAD_RAKP3: u8 = 0x14;
const PAYLOAD_RAKP4: u8 = 0x15;
const ENCRYPTED: u8 = 0x80;
const AUTHENTICATED: u8 = 0x40;
const BMC_ADDRESS: u8 = 0x20;

/// Authentication/integrity hash of a cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length; an empty code would simply fail every comparison.
            let Ok(mut mac) = <M as Mac>::new_from_slice(key) else {
                return Vec::new();
            };
            parts.iter().for_each(|part| mac.update(part));
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }

    /// Length of the truncated integrity code (HMAC-SHA1-96 or HMAC-SHA256-128).
    fn integrity_len(self) -> usize {
        match self {
            Self::Sha1 => 12,
            Self::Sha256 => 16,
        }
    }
}

struct Session {
    console_id: u32,
    hash: Hash,
    encrypted: bool,
    console_random: [u8; 16],
    bmc_random: [u8; 16],
    role: u8,
    username: Vec<u8>,
    k1: Vec<u8>,
    k2: Vec<u8>,
    active: bool,
}

/// Serves IPMI for one machine until the task is aborted.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    machine: Arc<Machine>,
    username: String,
    password: String,
) {
    let mut server = Server {
        machine,
        username: username.into_bytes(),
        password: password.into_bytes(),
        sessions: HashMap::new(),
        next_id: 0x1000,
    };
    let mut buffer = vec![0u8; 2048];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some(reply) = server.handle(&buffer[..len], peer) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

struct Server {
    machine: Arc<Machine>,
    username: Vec<u8>,
    password: Vec<u8>,
    sessions: HashMap<u32, Session>,
    next_id: u32,
}

impl Server {
    fn handle(&mut self, packet: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        self.machine.count_bmc_request();
        let body = packet.strip_prefix(&RMCP_HEADER[..])?;
        match *body.first()? {
            0x00 => self.handle_v15(body),
            AUTH_RMCP_PLUS => self.handle_v20(body, peer),
            _ => None,
        }
    }

    /// Session-less IPMI 1.5 messages: only Get Channel Authentication Capabilities.
    fn handle_v15(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let length = *body.get(9)? as usize;
        let message = body.get(10..10 + length)?;
        let request = Request::parse(message)?;
        let response = self.dispatch(&request, false);
        let mut out = RMCP_HEADER.to_vec();
        out.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.push(response.len() as u8);
        out.extend_from_slice(&response);
        Some(out)
    }

    fn handle_v20(&mut self, body: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let payload_type = *body.get(1)?;
        let session_id = u32::from_le_bytes(body.get(2..6)?.try_into().ok()?);
        let length = u16::from_le_bytes(body.get(10..12)?.try_into().ok()?) as usize;
        let payload = body.get(12..12 + length)?;
        tracing::debug!(peer = %peer, payload_type, "IPMI packet");
        match payload_type & 0x3f {
            PAYLOAD_OPEN_REQUEST => self.open_session(payload),
            PAYLOAD_RAKP1 => self.rakp1(payload),
            PAYLOAD_RAKP3 => self.rakp3(payload),
            PAYLOAD_IPMI => self.session_message(body, payload_type, session_id, payload, length),
            _ => None,
        }
    }

    fn open_session(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let tag = *payload.first()?;
        let console_id = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
        let auth = *payload.get(12)?;
        let integrity = *payload.get(20)?;
        let confidentiality = *payload.get(28)?;
        let suite = match (auth, integrity, confidentiality) {
            (1, 1, 1) => Some((Hash::Sha1, true)),
            (1, 1, 0) => Some((Hash::Sha1, false)),
            (3, 4, 1) => Some((Hash::Sha256, true)),
            (3, 4, 0) => Some((Hash::Sha256, false)),
            _ => None,
        };
        let mut response = vec![tag];
        let Some((hash, encrypted)) = suite else {
            // Status 0x11: no matching integrity/cipher algorithm.
            response.extend_from_slice(&[0x11, 0, 0]);
            response.extend_from_slice(&console_id.to_le_bytes());
            return Some(v20_packet(PAYLOAD_OPEN_RESPONSE, 0, 0, &response));
        };
        self.next_id = self.next_id.wrapping_add(1);
        let bmc_id = self.next_id;
        let session = Session {
            console_id,
            hash,
            encrypted,
            console_random: [0; 16],
            bmc_random: random_bytes(),
            role: 0,
            username: Vec::new(),
            k1: Vec::new(),
            k2: Vec::new(),
            active: false,
        };
        self.sessions.insert(bmc_id, session);
        response.extend_from_slice(&[0x00, 0x04, 0x00]);
        response.extend_from_slice(&console_id.to_le_bytes());
        response.extend_from_slice(&bmc_id.to_le_bytes());
        response.extend_from_slice(&[0x00, 0, 0, 0x08, auth, 0, 0, 0]);
        response.extend_from_slice(&[0x01, 0, 0, 0x08, integrity, 0, 0, 0]);
        response.extend_from_slice(&[0x02, 0, 0, 0x08, confidentiality, 0, 0, 0]);
        Some(v20_packet(PAYLOAD_OPEN_RESPONSE, 0, 0, &response))
    }

    fn rakp1(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let tag = *payload.first()?;
        let bmc_id = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
        let console_random: [u8; 16] = payload.get(8..24)?.try_into().ok()?;
        let role = *payload.get(24)?;
        let name_len = *payload.get(27)? as usize;
        let username = payload.get(28..28 + name_len)?.to_vec();
        let guid = self.guid();
        let password = self.password.clone();
        let known_user = username == self.username;
        let session = self.sessions.get_mut(&bmc_id)?;
        session.console_random = console_random;
        session.role = role;
        session.username = username;

        let mut response = vec![tag, if known_user { 0x00 } else { 0x0d }, 0, 0];
        response.extend_from_slice(&session.console_id.to_le_bytes());
        if known_user {
            response.extend_from_slice(&session.bmc_random);
            response.extend_from_slice(&guid);
            let code = session.hash.mac(
                &password,
                &[
                    &session.console_id.to_le_bytes(),
                    &bmc_id.to_le_bytes(),
                    &session.console_random,
                    &session.bmc_random,
                    &guid,
                    &[session.role, session.username.len() as u8],
                    &session.username,
                ],
            );
            response.extend_from_slice(&code);
        }
        Some(v20_packet(PAYLOAD_RAKP2, 0, 0, &response))
    }

    fn rakp3(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let tag = *payload.first()?;
        let bmc_id = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
        let guid = self.guid();
        let password = self.password.clone();
        let session = self.sessions.get_mut(&bmc_id)?;
        let name_header = [session.role, session.username.len() as u8];
        let expected = session.hash.mac(
            &password,
            &[
                &session.bmc_random,
                &session.console_id.to_le_bytes(),
                &name_header,
                &session.username,
            ],
        );
        let presented = payload.get(8..)?;
        let valid = *payload.get(1)? == 0
            && presented.len() >= expected.len()
            && subtle_eq(&presented[..expected.len()], &expected);

        let mut response = vec![tag, if valid { 0x00 } else { 0x0f }, 0, 0];
        response.extend_from_slice(&session.console_id.to_le_bytes());
        if valid {
            let sik = session.hash.mac(
                &password,
                &[
                    &session.console_random,
                    &session.bmc_random,
                    &name_header,
                    &session.username,
                ],
            );
            // The key-derivation constants are 20 bytes for every hash, as clients implement them.
            session.k1 = session.hash.mac(&sik, &[&[0x01; 20]]);
            session.k2 = session.hash.mac(&sik, &[&[0x02; 20]]);
            session.active = true;
            let check = session.hash.mac(
                &sik,
                &[&session.console_random, &bmc_id.to_le_bytes(), &guid],
            );
            response.extend_from_slice(&check[..session.hash.integrity_len()]);
        } else {
            self.sessions.remove(&bmc_id);
        }
        Some(v20_packet(PAYLOAD_RAKP4, 0, 0, &response))
    }

    fn session_message(
        &mut self,
        body: &[u8],
        payload_type: u8,
        bmc_id: u32,
        payload: &[u8],
        length: usize,
    ) -> Option<Vec<u8>> {
        if bmc_id == 0 {
            let request = Request::parse(payload)?;
            let response = self.dispatch(&request, false);
            return Some(v20_packet(PAYLOAD_IPMI, 0, 0, &response));
        }
        let session = self.sessions.get(&bmc_id)?;
        if !session.active {
            return None;
        }
        if payload_type & AUTHENTICATED != 0 && !verify_integrity(session, body, length) {
            tracing::warn!(machine = %self.machine.id, "IPMI packet with a bad integrity code dropped");
            return None;
        }
        let message = if payload_type & ENCRYPTED != 0 {
            decrypt(&session.k2, payload)?
        } else {
            payload.to_vec()
        };
        let request = Request::parse(&message)?;
        let response = self.dispatch(&request, true);
        let session = self.sessions.get(&bmc_id)?;
        let (console_id, encrypted) = (session.console_id, session.encrypted);
        let payload = if encrypted {
            encrypt(&session.k2, &response)
        } else {
            response
        };
        let flags = AUTHENTICATED | if encrypted { ENCRYPTED } else { 0 };
        let mut packet = v20_packet(PAYLOAD_IPMI | flags, console_id, 1, &payload);
        sign(session, &mut packet);
        if request.netfn == 0x06 && request.cmd == 0x3c {
            self.sessions.remove(&bmc_id);
        }
        Some(packet)
    }

    fn guid(&self) -> [u8; 16] {
        uuid::Uuid::parse_str(&self.machine.uuid)
            .map(|u| u.to_bytes_le())
            .unwrap_or_default()
    }

    /// Runs one IPMI command; returns the response message.
    fn dispatch(&mut self, request: &Request, in_session: bool) -> Vec<u8> {
        let (code, data): (u8, Vec<u8>) = match (request.netfn, request.cmd) {
            (0x06, 0x38) => (0, vec![0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0]),
            (0x06, 0x01) => (
                0,
                vec![
                    0x20, 0x01, 0x01, 0x00, 0x02, 0xbf, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            (0x06, 0x3b) if in_session => (
                0,
                vec![request.data.first().copied().unwrap_or(4).max(1) & 0x0f],
            ),
            (0x06, 0x3c) if in_session => (0, vec![]),
            (0x00, 0x01) if in_session => (0, self.chassis_status()),
            (0x00, 0x02) if in_session => {
                self.chassis_control(request.data.first().copied().unwrap_or(0xff))
            }
            (0x00, 0x08) if in_session => self.set_boot_options(&request.data),
            (0x00, 0x09) if in_session => self.get_boot_options(&request.data),
            (_, _) if !in_session => (0xd4, vec![]),
            _ => (0xc1, vec![]),
        };
        request.response(code, &data)
    }

    fn chassis_status(&self) -> Vec<u8> {
        let on = matches!(
            self.machine.status().power,
            PowerState::On | PowerState::PoweringOn
        );
        vec![u8::from(on), 0x00, 0x40, 0x00]
    }

    fn chassis_control(&self, action: u8) -> (u8, Vec<u8>) {
        let reset = match action & 0x0f {
            0x00 | 0x05 => "ForceOff",
            0x01 => "On",
            0x02 => "PowerCycle",
            0x03 => "ForceRestart",
            _ => return (0xcc, vec![]),
        };
        match self.machine.reset(reset) {
            Ok(()) => (0, vec![]),
            Err(_) => (0xd5, vec![]),
        }
    }

    fn set_boot_options(&self, data: &[u8]) -> (u8, Vec<u8>) {
        let parameter = data.first().copied().unwrap_or(0) & 0x7f;
        if parameter != 5 {
            // Set-in-progress and acknowledge parameters are accepted and need no state.
            return (0, vec![]);
        }
        let (flags, device) = (
            data.get(1).copied().unwrap_or(0),
            data.get(2).copied().unwrap_or(0),
        );
        let target = match (device >> 2) & 0x0f {
            0x01 => "Pxe",
            0x02 => "Hdd",
            0x05 => "Cd",
            _ => "None",
        };
        let enabled = match (flags & 0x80 != 0, flags & 0x40 != 0) {
            (false, _) => "Disabled",
            (true, false) => "Once",
            (true, true) => "Continuous",
        };
        let mode = if flags & 0x20 != 0 { "UEFI" } else { "Legacy" };
        self.machine.set_boot(BootOverride {
            boot_source_override_target: target.into(),
            boot_source_override_enabled: enabled.into(),
            boot_source_override_mode: mode.into(),
        });
        (0, vec![])
    }

    fn get_boot_options(&self, data: &[u8]) -> (u8, Vec<u8>) {
        let parameter = data.first().copied().unwrap_or(0) & 0x7f;
        if parameter != 5 {
            return (0, vec![0x01, parameter, 0x00]);
        }
        let boot = self.machine.status().boot;
        let mut flags = match boot.boot_source_override_enabled.as_str() {
            "Once" => 0x80,
            "Continuous" => 0xc0,
            _ => 0x00,
        };
        if boot.boot_source_override_mode == "UEFI" {
            flags |= 0x20;
        }
        let device: u8 = match boot.boot_source_override_target.as_str() {
            "Pxe" => 0x01,
            "Hdd" => 0x02,
            "Cd" => 0x05,
            _ => 0x00,
        };
        (0, vec![0x01, 0x05, flags, device << 2, 0, 0, 0])
    }
}

/// One IPMI request message.
struct Request {
    netfn: u8,
    lun: u8,
    requester: u8,
    sequence: u8,
    cmd: u8,
    data: Vec<u8>,
}

impl Request {
    fn parse(message: &[u8]) -> Option<Self> {
        if message.len() < 7 {
            return None;
        }
        Some(Self {
            netfn: message[1] >> 2,
            lun: message[1] & 0x03,
            requester: message[3],
            sequence: message[4],
            cmd: message[5],
            data: message[6..message.len() - 1].to_vec(),
        })
    }

    fn response(&self, code: u8, data: &[u8]) -> Vec<u8> {
        let mut message = vec![
            self.requester,
            ((self.netfn + 1) << 2) | (self.sequence & 0x03),
            0,
        ];
        message[2] = checksum(&message[..2]);
        message.extend_from_slice(&[
            BMC_ADDRESS,
            (self.sequence & 0xfc) | self.lun,
            self.cmd,
            code,
        ]);
        message.extend_from_slice(data);
        message.push(checksum(&message[3..]));
        message
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

fn v20_packet(payload_type: u8, session_id: u32, sequence: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = RMCP_HEADER.to_vec();
    packet.extend_from_slice(&[AUTH_RMCP_PLUS, payload_type]);
    packet.extend_from_slice(&session_id.to_le_bytes());
    packet.extend_from_slice(&sequence.to_le_bytes());
    packet.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Appends the integrity trailer to an outgoing session packet.
fn sign(session: &Session, packet: &mut Vec<u8>) {
    let signed_len = packet.len() - RMCP_HEADER.len();
    let pad = (4 - (signed_len + 2) % 4) % 4;
    packet.extend(std::iter::repeat_n(0xff, pad));
    packet.extend_from_slice(&[pad as u8, 0x07]);
    let code = session
        .hash
        .mac(&session.k1, &[&packet[RMCP_HEADER.len()..]]);
    packet.extend_from_slice(&code[..session.hash.integrity_len()]);
}

fn verify_integrity(session: &Session, body: &[u8], payload_len: usize) -> bool {
    let signed_end = 12 + payload_len;
    let Some(pad) = body
        .get(signed_end..)
        .and_then(|rest| rest.iter().position(|b| *b != 0xff))
    else {
        return false;
    };
    let trailer_start = signed_end + pad + 2;
    let Some(code) = body.get(trailer_start..) else {
        return false;
    };
    let expected = session.hash.mac(&session.k1, &[&body[..trailer_start]]);
    code.len() >= session.hash.integrity_len()
        && subtle_eq(
            &code[..session.hash.integrity_len()],
            &expected[..session.hash.integrity_len()],
        )
}

type Encryptor = cbc::Encryptor<aes::Aes128>;
type Decryptor = cbc::Decryptor<aes::Aes128>;

fn encrypt(k2: &[u8], plain: &[u8]) -> Vec<u8> {
    let iv: [u8; 16] = random_bytes();
    let mut data = plain.to_vec();
    let pad = (16 - (data.len() + 1) % 16) % 16;
    data.extend((1..=pad as u8).collect::<Vec<u8>>());
    data.push(pad as u8);
    let key: [u8; 16] = k2
        .get(..16)
        .and_then(|k| k.try_into().ok())
        .unwrap_or_default();
    let len = data.len();
    let encrypted = Encryptor::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut data, len)
        .map(<[u8]>::to_vec);
    let mut out = iv.to_vec();
    out.extend_from_slice(&encrypted.unwrap_or_default());
    out
}

fn decrypt(k2: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let iv: [u8; 16] = payload.get(..16)?.try_into().ok()?;
    let key: [u8; 16] = k2.get(..16)?.try_into().ok()?;
    let mut data = payload.get(16..)?.to_vec();
    let plain = Decryptor::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .ok()?
        .to_vec();
    let pad = *plain.last()? as usize;
    plain
        .get(..plain.len().checked_sub(pad + 1)?)
        .map(<[u8]>::to_vec)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        tracing::error!("the system random source failed; IPMI sessions use weaker randomness");
        bytes
            .iter_mut()
            .zip(uuid::Uuid::new_v4().into_bytes().iter().cycle())
            .for_each(|(b, r)| *b = *r);
    }
    bytes
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
