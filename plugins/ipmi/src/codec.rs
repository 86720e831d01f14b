//! RMCP+ (IPMI v2.0 LAN) packet framing and IPMI message encoding.
//!
//! ```text
//! RMCP 06 00 FF 07 | auth 06 | payload type | session id LE32 | seq LE32 | len LE16 | payload
//!                  [ | FF pad | pad len | 07 | integrity code ]   (authenticated packets)
//! ```
//! The integrity code covers everything from the auth type to the next
//! header byte. Decoding never trusts a length field: every slice is checked.

use crate::transport::SessionKeys;

const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
const SESSION_HEADER_LEN: usize = 12;
const NEXT_HEADER: u8 = 0x07;
const ENCRYPTED: u8 = 0x80;
const AUTHENTICATED: u8 = 0x40;

/// Responder address of the BMC.
const BMC_ADDRESS: u8 = 0x20;
/// Requester address of a remote console (software ID 0x40, bit 0 set).
const CONSOLE_ADDRESS: u8 = 0x81;

/// RMCP+ payload types.
pub mod payload_type {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// RMCP+ Open Session Request.
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    /// RAKP message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP message 4.
    pub const RAKP4: u8 = 0x15;
}

/// A decoded RMCP+ packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Payload type without the encryption/authentication bits.
    pub payload_type: u8,
    /// Session ID the packet is addressed to.
    pub session_id: u32,
    /// Session sequence number.
    pub sequence: u32,
    /// Payload, decrypted when it was encrypted.
    pub payload: Vec<u8>,
}

/// Encodes a packet outside a session (the handshake messages).
pub fn encode_plain(payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(RMCP_HEADER.len() + SESSION_HEADER_LEN + payload.len());
    packet.extend_from_slice(&RMCP_HEADER);
    push_session_header(&mut packet, payload_type, 0, 0, payload.len());
    packet.extend_from_slice(payload);
    packet
}

/// Encodes an encrypted and authenticated IPMI message of a session.
pub fn encode_session(
    keys: &dyn SessionKeys,
    session_id: u32,
    sequence: u32,
    message: &[u8],
) -> Vec<u8> {
    let encrypted = keys.encrypt(message);
    let mut packet =
        Vec::with_capacity(RMCP_HEADER.len() + SESSION_HEADER_LEN + encrypted.len() + 40);
    packet.extend_from_slice(&RMCP_HEADER);
    push_session_header(
        &mut packet,
        payload_type::IPMI | ENCRYPTED | AUTHENTICATED,
        session_id,
        sequence,
        encrypted.len(),
    );
    packet.extend_from_slice(&encrypted);

    // Pad so that auth type .. next header is a multiple of four bytes.
    let covered = packet.len() - RMCP_HEADER.len();
    let pad = (4 - (covered + 2) % 4) % 4;
    packet.extend(std::iter::repeat_n(0xFF, pad));
    packet.push(u8::try_from(pad).unwrap_or(0));
    packet.push(NEXT_HEADER);
    let code = keys.integrity_mac(&packet[RMCP_HEADER.len()..]);
    packet.extend_from_slice(&code);
    packet
}

fn push_session_header(
    packet: &mut Vec<u8>,
    payload_type: u8,
    session_id: u32,
    sequence: u32,
    len: usize,
) {
    packet.push(AUTH_TYPE_RMCP_PLUS);
    packet.push(payload_type);
    packet.extend_from_slice(&session_id.to_le_bytes());
    packet.extend_from_slice(&sequence.to_le_bytes());
    // Payloads here are a few hundred bytes at most.
    packet.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
}

/// Decodes a datagram, checking integrity and decrypting with `keys` when
/// the packet says it is protected.
///
/// # Errors
/// A description of what is wrong with the datagram.
pub fn decode(datagram: &[u8], keys: Option<&dyn SessionKeys>) -> Result<Packet, String> {
    let header_end = RMCP_HEADER.len() + SESSION_HEADER_LEN;
    if datagram.len() < header_end {
        return Err(format!(
            "datagram of {} bytes is shorter than the RMCP+ headers",
            datagram.len()
        ));
    }
    if datagram[0] != RMCP_HEADER[0] || datagram[3] != RMCP_HEADER[3] {
        return Err("not an RMCP IPMI-class datagram".to_owned());
    }
    if datagram[4] != AUTH_TYPE_RMCP_PLUS {
        return Err(format!("auth type {:#04x} is not RMCP+", datagram[4]));
    }
    let type_byte = datagram[5];
    let session_id = le_u32(&datagram[6..10]);
    let sequence = le_u32(&datagram[10..14]);
    let len = usize::from(u16::from_le_bytes([datagram[14], datagram[15]]));
    let payload_end = header_end + len;
    let payload = datagram.get(header_end..payload_end).ok_or_else(|| {
        format!(
            "payload length {len} runs past the {}-byte datagram",
            datagram.len()
        )
    })?;

    if type_byte & AUTHENTICATED != 0 {
        let keys = keys.ok_or("authenticated packet outside a session")?;
        check_integrity(datagram, keys)?;
    }
    let payload = if type_byte & ENCRYPTED != 0 {
        let keys = keys.ok_or("encrypted packet outside a session")?;
        keys.decrypt(payload)?
    } else {
        payload.to_vec()
    };
    Ok(Packet {
        payload_type: type_byte & 0x3F,
        session_id,
        sequence,
        payload,
    })
}

fn check_integrity(datagram: &[u8], keys: &dyn SessionKeys) -> Result<(), String> {
    let code_len = keys.integrity_mac(&[]).len();
    let covered_end = datagram
        .len()
        .checked_sub(code_len)
        .filter(|end| *end > RMCP_HEADER.len() + SESSION_HEADER_LEN)
        .ok_or("authenticated packet too short for its integrity code")?;
    let expected = keys.integrity_mac(&datagram[RMCP_HEADER.len()..covered_end]);
    if expected.as_slice() == &datagram[covered_end..] {
        Ok(())
    } else {
        Err("integrity code does not match".to_owned())
    }
}

/// Reads a little-endian u32 from a 4-byte slice (callers check the length).
pub fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    for (slot, byte) in word.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    u32::from_le_bytes(word)
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
        .wrapping_neg()
}

/// Encodes an IPMI request message for the BMC.
pub fn ipmi_request(net_fn: u8, command: u8, request_sequence: u8, data: &[u8]) -> Vec<u8> {
    let header = [BMC_ADDRESS, net_fn << 2];
    let mut message = Vec::with_capacity(7 + data.len());
    message.extend_from_slice(&header);
    message.push(checksum(&header));
    let body_start = message.len();
    message.push(CONSOLE_ADDRESS);
    message.push(request_sequence << 2);
    message.push(command);
    message.extend_from_slice(data);
    let sum = checksum(&message[body_start..]);
    message.push(sum);
    message
}

/// A decoded IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    /// Response network function (request's + 1).
    pub net_fn: u8,
    /// Request sequence number echoed by the BMC.
    pub request_sequence: u8,
    /// Command code.
    pub command: u8,
    /// Completion code.
    pub completion_code: u8,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

/// Decodes an IPMI response message and verifies both checksums.
///
/// # Errors
/// A description of what is wrong with the message.
pub fn ipmi_response(message: &[u8]) -> Result<IpmiResponse, String> {
    if message.len() < 8 {
        return Err(format!(
            "IPMI response of {} bytes is too short",
            message.len()
        ));
    }
    if checksum(&message[..2]) != message[2] {
        return Err("IPMI header checksum mismatch".to_owned());
    }
    let last = message.len() - 1;
    if checksum(&message[3..last]) != message[last] {
        return Err("IPMI body checksum mismatch".to_owned());
    }
    Ok(IpmiResponse {
        net_fn: message[1] >> 2,
        request_sequence: message[4] >> 2,
        command: message[5],
        completion_code: message[6],
        data: message[7..last].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorKeys;

    impl SessionKeys for XorKeys {
        fn sik_mac(&self, message: &[u8]) -> Vec<u8> {
            message.iter().take(4).copied().collect()
        }

        fn integrity_mac(&self, message: &[u8]) -> Vec<u8> {
            let sum = message.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
            vec![sum; 12]
        }

        fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
            plaintext.iter().map(|b| b ^ 0x5A).collect()
        }

        fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, String> {
            Ok(data.iter().map(|b| b ^ 0x5A).collect())
        }
    }

    #[test]
    fn session_packets_round_trip_and_are_padded() {
        let message = ipmi_request(0x00, 0x01, 3, &[]);
        let packet = encode_session(&XorKeys, 0xAABB_CCDD, 7, &message);
        assert_eq!(
            (packet.len() - 4 - 12) % 4,
            0,
            "trailer keeps 4-byte alignment"
        );
        let decoded = decode(&packet, Some(&XorKeys));
        assert_eq!(
            decoded,
            Ok(Packet {
                payload_type: payload_type::IPMI,
                session_id: 0xAABB_CCDD,
                sequence: 7,
                payload: message,
            })
        );
    }

    #[test]
    fn tampered_and_truncated_packets_are_rejected() {
        let message = ipmi_request(0x06, 0x01, 1, &[]);
        let mut packet = encode_session(&XorKeys, 1, 1, &message);
        let last = packet.len() - 1;
        packet[last] ^= 1;
        assert!(decode(&packet, Some(&XorKeys)).is_err());
        for cut in 0..packet.len() {
            assert!(
                decode(&packet[..cut], Some(&XorKeys)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn ipmi_messages_carry_valid_checksums() {
        let request = ipmi_request(0x06, 0x3B, 5, &[0x04]);
        assert_eq!(request[..3], [0x20, 0x18, 0xC8]);
        let response = [0x81, 0x1C, 0x63, 0x20, 5 << 2, 0x3B, 0x00, 0x04, 0];
        let mut response = response.to_vec();
        let last = response.len() - 1;
        response[last] = checksum(&response[3..last]);
        let decoded = ipmi_response(&response);
        assert_eq!(
            decoded.map(|r| (r.net_fn, r.request_sequence, r.data)),
            Ok((0x07, 5, vec![0x04]))
        );
    }
}
