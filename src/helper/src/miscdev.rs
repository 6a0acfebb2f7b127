//! The `/dev/ecryptfs` side for public-key (tag 1) tokens: the message codec
//! (spec §2.7). The kernel hands a tag 64 ("decrypt this EFEK") or tag 66 ("encrypt
//! this FEK") packet to the daemon holding the device open; the daemon answers with
//! tag 65 / tag 67, or `tag, 0xFF` on failure.
//!
//! Framing, both directions: `type u8` (100 HELO, 101 QUIT, 102 REQUEST, 103 RESPONSE),
//! `sequence u32` big-endian, then for REQUEST/RESPONSE a §2.1 length and
//! `struct ecryptfs_message { u32 index; u32 data_len; u8 data[] }` in host byte order.
//! A response echoes the request's sequence and index.
//!
//! The daemon that serves the device with these is `crate::pkd`.

use std::fmt;

use strongroom_core::kdf::Sig;
use strongroom_core::keys::parse_fek_payload;
use strongroom_core::packet::{decode_len, encode_len};
use zeroize::Zeroizing;

pub const MSG_HELO: u8 = 100;
pub const MSG_QUIT: u8 = 101;
pub const MSG_REQUEST: u8 = 102;
pub const MSG_RESPONSE: u8 = 103;

pub const TAG_DECRYPT_REQUEST: u8 = 64;
pub const TAG_DECRYPT_REPLY: u8 = 65;
pub const TAG_ENCRYPT_REQUEST: u8 = 66;
pub const TAG_ENCRYPT_REPLY: u8 = 67;

/// Largest EFEK the kernel accepts (`ECRYPTFS_MAX_ENCRYPTED_KEY_BYTES`).
pub const MAX_EFEK: usize = 512;
/// cipher code, at most 64 key bytes, 2 checksum bytes.
const MAX_FEK_PAYLOAD: usize = 1 + 64 + 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MiscError {
    #[error("message truncated")]
    Truncated,
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("bad length field")]
    Length,
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("unexpected packet tag {0:#x}")]
    Tag(u8),
    #[error("bad sig in request")]
    Sig,
    #[error("field too large ({0} bytes)")]
    TooLarge(usize),
    #[error("bad key payload")]
    Payload,
}

/// One message on `/dev/ecryptfs`.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    Helo {
        seq: u32,
    },
    Quit {
        seq: u32,
    },
    Request {
        seq: u32,
        index: u32,
        data: Vec<u8>,
    },
    Response {
        seq: u32,
        index: u32,
        data: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Helo { seq } => write!(f, "Helo({seq})"),
            Message::Quit { seq } => write!(f, "Quit({seq})"),
            Message::Request { seq, index, data } => {
                write!(f, "Request({seq}, {index}, {} bytes)", data.len())
            }
            // Replies to tag 66/64 carry the FEK: never printed.
            Message::Response { seq, index, data } => {
                write!(f, "Response({seq}, {index}, {} bytes)", data.len())
            }
        }
    }
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], MiscError> {
    if buf.len() < n {
        return Err(MiscError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u32(buf: &mut &[u8], be: bool) -> Result<u32, MiscError> {
    let b: [u8; 4] = take(buf, 4)?.try_into().map_err(|_| MiscError::Truncated)?;
    Ok(if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_ne_bytes(b)
    })
}

fn take_len(buf: &mut &[u8]) -> Result<usize, MiscError> {
    let (len, used) = decode_len(buf).map_err(|_| MiscError::Length)?;
    take(buf, used)?;
    Ok(len)
}

fn put_len(len: usize, out: &mut Vec<u8>) -> Result<(), MiscError> {
    encode_len(len, out).map_err(|_| MiscError::TooLarge(len))
}

impl Message {
    /// Parse one message as read from the device.
    pub fn decode(mut buf: &[u8]) -> Result<Message, MiscError> {
        let kind = take(&mut buf, 1)?[0];
        let seq = take_u32(&mut buf, true)?;
        let msg = match kind {
            MSG_HELO => Message::Helo { seq },
            MSG_QUIT => Message::Quit { seq },
            MSG_REQUEST | MSG_RESPONSE => {
                let len = take_len(&mut buf)?;
                let mut body = take(&mut buf, len)?;
                let index = take_u32(&mut body, false)?;
                let data_len = take_u32(&mut body, false)? as usize;
                if data_len != body.len() {
                    return Err(MiscError::Length);
                }
                if kind == MSG_REQUEST {
                    Message::Request {
                        seq,
                        index,
                        data: body.to_vec(),
                    }
                } else {
                    Message::Response {
                        seq,
                        index,
                        data: Zeroizing::new(body.to_vec()),
                    }
                }
            }
            other => return Err(MiscError::Type(other)),
        };
        if !buf.is_empty() {
            return Err(MiscError::Trailing(buf.len()));
        }
        Ok(msg)
    }

    /// The bytes to write to the device.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, MiscError> {
        let mut out = Zeroizing::new(Vec::new());
        let (kind, seq, body) = match self {
            Message::Helo { seq } => (MSG_HELO, *seq, None),
            Message::Quit { seq } => (MSG_QUIT, *seq, None),
            Message::Request { seq, index, data } => {
                (MSG_REQUEST, *seq, Some((*index, data.as_slice())))
            }
            Message::Response { seq, index, data } => {
                (MSG_RESPONSE, *seq, Some((*index, data.as_slice())))
            }
        };
        out.push(kind);
        out.extend_from_slice(&seq.to_be_bytes());
        if let Some((index, data)) = body {
            put_len(8 + data.len(), &mut out)?;
            out.extend_from_slice(&index.to_ne_bytes());
            out.extend_from_slice(&(data.len() as u32).to_ne_bytes());
            out.extend_from_slice(data);
        }
        Ok(out)
    }
}

/// What the kernel asks for.
#[derive(Clone, PartialEq, Eq)]
pub enum KernelRequest {
    /// Tag 64: unwrap `efek` with the private key named `sig`.
    Decrypt { sig: Sig, efek: Vec<u8> },
    /// Tag 66: wrap `payload` (cipher code, FEK, checksum) with the key named `sig`.
    Encrypt {
        sig: Sig,
        payload: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for KernelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelRequest::Decrypt { sig, efek } => {
                write!(f, "Decrypt({sig}, {} bytes)", efek.len())
            }
            KernelRequest::Encrypt { sig, .. } => write!(f, "Encrypt({sig}, <key redacted>)"),
        }
    }
}

impl KernelRequest {
    /// Parse the data of a REQUEST message.
    pub fn parse(data: &[u8]) -> Result<KernelRequest, MiscError> {
        let mut buf = data;
        let tag = take(&mut buf, 1)?[0];
        if tag != TAG_DECRYPT_REQUEST && tag != TAG_ENCRYPT_REQUEST {
            return Err(MiscError::Tag(tag));
        }
        let sig_len = take_len(&mut buf)?;
        if sig_len != 16 {
            return Err(MiscError::Sig);
        }
        let sig_text = std::str::from_utf8(take(&mut buf, 16)?).map_err(|_| MiscError::Sig)?;
        if !sig_text
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(MiscError::Sig);
        }
        let sig: Sig = sig_text.parse().map_err(|_| MiscError::Sig)?;
        let len = take_len(&mut buf)?;
        let field = take(&mut buf, len)?;
        if !buf.is_empty() {
            return Err(MiscError::Trailing(buf.len()));
        }
        if tag == TAG_DECRYPT_REQUEST {
            if len == 0 || len > MAX_EFEK {
                return Err(MiscError::TooLarge(len));
            }
            Ok(KernelRequest::Decrypt {
                sig,
                efek: field.to_vec(),
            })
        } else {
            parse_fek_payload(field).map_err(|_| MiscError::Payload)?;
            Ok(KernelRequest::Encrypt {
                sig,
                payload: Zeroizing::new(field.to_vec()),
            })
        }
    }
}

/// Tag 65: the unwrapped key payload (cipher code, FEK, checksum), checked first.
pub fn decrypt_reply(payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, MiscError> {
    if payload.len() > MAX_FEK_PAYLOAD {
        return Err(MiscError::TooLarge(payload.len()));
    }
    parse_fek_payload(payload).map_err(|_| MiscError::Payload)?;
    let mut out = Zeroizing::new(vec![TAG_DECRYPT_REPLY, 0x00]);
    put_len(payload.len(), &mut out)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Tag 67: the wrapped key.
pub fn encrypt_reply(efek: &[u8]) -> Result<Vec<u8>, MiscError> {
    if efek.is_empty() || efek.len() > MAX_EFEK {
        return Err(MiscError::TooLarge(efek.len()));
    }
    let mut out = vec![TAG_ENCRYPT_REPLY, 0x00];
    put_len(efek.len(), &mut out)?;
    out.extend_from_slice(efek);
    Ok(out)
}

/// The failure answer to a request with tag `request_tag` (what ecryptfsd sends).
pub fn failure_reply(request_tag: u8) -> Vec<u8> {
    vec![request_tag.wrapping_add(1), 0xFF]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "2a97418edca01eb9";

    /// Tag 64 for an RSA-2048 EFEK, written out from spec §2.7 and §2.1 by hand.
    fn tag64_2048() -> Vec<u8> {
        let mut v = vec![0x40, 0x10];
        v.extend_from_slice(SIG.as_bytes());
        v.extend_from_slice(&[0xc0, 0x40]); // 256 = 192 + 64: two-byte form
        v.extend(std::iter::repeat_n(0xab, 256));
        v
    }

    /// AES-128 key payload: code 7, 16 key bytes 0x01..=0x10, checksum 136 = 0x0088.
    fn aes_payload() -> Vec<u8> {
        let mut p = vec![7];
        p.extend(1u8..=16);
        p.extend_from_slice(&[0x00, 0x88]);
        p
    }

    #[test]
    fn framing_matches_the_kernel_layout() {
        assert_eq!(
            Message::Helo { seq: 7 }.encode().unwrap().as_slice(),
            [100, 0, 0, 0, 7]
        );
        assert_eq!(
            Message::decode(&[101, 0, 0, 1, 0]).unwrap(),
            Message::Quit { seq: 256 }
        );
        let data = tag64_2048();
        let req = Message::Request {
            seq: 0x01020304,
            index: 5,
            data: data.clone(),
        };
        let bytes = req.encode().unwrap();
        // type, BE sequence, §2.1 length of index+data_len+data (8 + 276 = 284 → c0 5c)
        assert_eq!(&bytes[..7], [102, 1, 2, 3, 4, 0xc0, 0x5c]);
        assert_eq!(&bytes[7..11], 5u32.to_ne_bytes());
        assert_eq!(&bytes[11..15], (data.len() as u32).to_ne_bytes());
        assert_eq!(&bytes[15..], data.as_slice());
        assert_eq!(Message::decode(&bytes).unwrap(), req);
        let resp = Message::Response {
            seq: 9,
            index: 5,
            data: Zeroizing::new(vec![1, 2, 3]),
        };
        assert_eq!(Message::decode(&resp.encode().unwrap()).unwrap(), resp);
        assert!(!format!("{resp:?}").contains("[1, 2, 3]"));
    }

    #[test]
    fn requests_and_replies() {
        let sig: Sig = SIG.parse().unwrap();
        assert_eq!(
            KernelRequest::parse(&tag64_2048()).unwrap(),
            KernelRequest::Decrypt {
                sig,
                efek: vec![0xab; 256]
            }
        );
        let mut tag66 = vec![0x42, 0x10];
        tag66.extend_from_slice(SIG.as_bytes());
        tag66.push(19);
        tag66.extend(aes_payload());
        match KernelRequest::parse(&tag66).unwrap() {
            KernelRequest::Encrypt { sig: s, payload } => {
                assert_eq!((s, payload.as_slice()), (sig, aes_payload().as_slice()))
            }
            other => panic!("{other:?}"),
        }
        let mut expect65 = vec![0x41, 0x00, 19];
        expect65.extend(aes_payload());
        assert_eq!(
            decrypt_reply(&aes_payload()).unwrap().as_slice(),
            expect65.as_slice()
        );
        let mut bad_sum = aes_payload();
        bad_sum[18] ^= 1;
        assert_eq!(decrypt_reply(&bad_sum), Err(MiscError::Payload));
        let mut expect67 = vec![0x43, 0x00, 0x80];
        expect67.extend([0x5a; 128]);
        assert_eq!(encrypt_reply(&[0x5a; 128]).unwrap(), expect67);
        assert_eq!(failure_reply(TAG_DECRYPT_REQUEST), [0x41, 0xff]);
        assert_eq!(failure_reply(TAG_ENCRYPT_REQUEST), [0x43, 0xff]);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let req = Message::Request {
            seq: 1,
            index: 2,
            data: tag64_2048(),
        }
        .encode()
        .unwrap();
        for cut in 0..req.len() {
            assert!(Message::decode(&req[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = req.to_vec();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(MiscError::Trailing(1)));
        assert_eq!(Message::decode(&[99, 0, 0, 0, 0]), Err(MiscError::Type(99)));
        assert_eq!(
            Message::decode(&[102, 0, 0, 0, 0, 0xff]),
            Err(MiscError::Length)
        );
        let data = tag64_2048();
        for cut in 0..data.len() {
            assert!(
                KernelRequest::parse(&data[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut upper = data.clone();
        upper[2] = b'A';
        assert_eq!(KernelRequest::parse(&upper), Err(MiscError::Sig));
        let mut wrong = data;
        wrong[0] = 0x41;
        assert_eq!(KernelRequest::parse(&wrong), Err(MiscError::Tag(0x41)));
        // Every byte value in every position of a short message: no panic.
        let base = Message::Request {
            seq: 1,
            index: 2,
            data: vec![0x40, 1, b'a'],
        }
        .encode()
        .unwrap();
        for i in 0..base.len() {
            for b in 0..=255u8 {
                let mut m = base.to_vec();
                m[i] = b;
                if let Ok(Message::Request { data, .. }) = Message::decode(&m) {
                    let _ = KernelRequest::parse(&data);
                }
            }
        }
        assert_eq!(encrypt_reply(&[0; 513]), Err(MiscError::TooLarge(513)));
    }
}
