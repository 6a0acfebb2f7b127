//! Key packets of the file header: tag 3 + tag 11 (passphrase-wrapped FEK), tag 1
//! (public-key-wrapped FEK), and their length encoding (spec §2.1–§2.6).

use crate::cipher::{cipher_for_code, CipherError};
use crate::kdf::{Salt, Sig};

pub const TAG_1: u8 = 0x01;
pub const TAG_3: u8 = 0x8c;
pub const TAG_11: u8 = 0xed;
/// Longest body the 1-/2-byte length forms can carry.
pub const MAX_PACKET_LEN: usize = 8383;
/// Longest EFEK the kernel takes in a tag 3 (ECRYPTFS_MAX_KEY_BYTES).
pub const MAX_TAG3_EFEK: usize = 64;
/// Longest EFEK in a tag 1 (ECRYPTFS_MAX_ENCRYPTED_KEY_BYTES).
pub const MAX_TAG1_EFEK: usize = 512;
/// Tag 3 S2K iteration byte: 65536 in RFC 2440 coding (descriptive only, §10.2).
const TAG3_ITERATIONS: u8 = 0x60;
const TAG11_FILENAME: &[u8; 8] = b"_CONSOLE";

/// Errors of the packet codec. Offsets are relative to the start of the packet set.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PacketError {
    #[error("packet data ends early (at byte {0})")]
    Truncated(usize),
    #[error("unsupported packet length form 0x{0:02x} (only 1- and 2-byte lengths exist)")]
    LengthForm(u8),
    #[error("packet body of {0} bytes cannot be encoded (at most 8383)")]
    TooLong(usize),
    #[error("tag 0x{tag:02x} packet at byte {at}: {what}")]
    Malformed {
        tag: u8,
        at: usize,
        what: &'static str,
    },
    #[error("tag 3 packet at byte {at}: {len}-byte wrapped key is longer than 64 bytes")]
    EfekTooLong { at: usize, len: usize },
    #[error("tag 3 packet at byte {at}: {source}")]
    Cipher { at: usize, source: CipherError },
    #[error("tag 11 packet at byte {0} without the tag 3 it belongs to")]
    OrphanTag11(usize),
    #[error("the header holds no key packet")]
    NoKeyPackets,
}

/// One wrapped copy of the file's FEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPacket {
    /// Tag 3 + tag 11: FEK ECB-encrypted with the SKEK of the passphrase token `sig`.
    /// `cipher_code` is the file contents cipher; `salt` is descriptive only.
    Passphrase {
        sig: Sig,
        cipher_code: u8,
        salt: Salt,
        efek: Vec<u8>,
    },
    /// Tag 1: `cipher_code || FEK || checksum` encrypted with the public key `sig`.
    PublicKey { sig: Sig, efek: Vec<u8> },
}

impl KeyPacket {
    pub fn sig(&self) -> Sig {
        match self {
            KeyPacket::Passphrase { sig, .. } | KeyPacket::PublicKey { sig, .. } => *sig,
        }
    }
}

/// Appends the length of a packet body (spec §2.1).
pub fn encode_len(len: usize, out: &mut Vec<u8>) -> Result<(), PacketError> {
    if len < 192 {
        out.push(len as u8);
    } else if len <= MAX_PACKET_LEN {
        let l = len - 192;
        out.push(((l >> 8) + 192) as u8);
        out.push((l & 0xff) as u8);
    } else {
        return Err(PacketError::TooLong(len));
    }
    Ok(())
}

/// Reads a body length: `(length, bytes used)`.
pub fn decode_len(buf: &[u8]) -> Result<(usize, usize), PacketError> {
    match *buf {
        [] => Err(PacketError::Truncated(0)),
        [b0, ..] if b0 < 192 => Ok((b0 as usize, 1)),
        [b0, b1, ..] if b0 < 224 => Ok((((b0 as usize - 192) << 8) + b1 as usize + 192, 2)),
        [b0] if b0 < 224 => Err(PacketError::Truncated(1)),
        [b0, ..] => Err(PacketError::LengthForm(b0)),
    }
}

/// Splits `tag, length, body` at `at`; returns the body and the offset after it.
fn split_packet(buf: &[u8], at: usize) -> Result<(&[u8], usize), PacketError> {
    let (len, used) = decode_len(&buf[at + 1..]).map_err(|e| match e {
        PacketError::Truncated(n) => PacketError::Truncated(at + 1 + n),
        e => e,
    })?;
    let start = at + 1 + used;
    let end = start + len;
    if end > buf.len() {
        return Err(PacketError::Truncated(buf.len()));
    }
    Ok((&buf[start..end], end))
}

fn sig_at(b: &[u8]) -> Sig {
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[..8]);
    Sig(s)
}

/// Tag 3 body: version, cipher, S2K, hash, salt, iterations, EFEK.
fn parse_tag3(body: &[u8], at: usize) -> Result<(u8, Salt, Vec<u8>), PacketError> {
    let bad = |what| PacketError::Malformed {
        tag: TAG_3,
        at,
        what,
    };
    if body.len() < 13 {
        return Err(bad("body shorter than 13 bytes"));
    }
    let efek = &body[13..];
    if efek.len() > MAX_TAG3_EFEK {
        return Err(PacketError::EfekTooLong {
            at,
            len: efek.len(),
        });
    }
    if body[0] != 0x04 {
        return Err(bad("version is not 4"));
    }
    cipher_for_code(body[1]).map_err(|source| PacketError::Cipher { at, source })?;
    if body[2] != 0x03 {
        return Err(bad("S2K specifier is not 3"));
    }
    if body[3] != 0x01 {
        return Err(bad("hash id is not 1 (MD5)"));
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&body[4..12]);
    Ok((body[1], Salt(salt), efek.to_vec()))
}

/// Tag 11 body: 'b', 8, "_CONSOLE", date, 8-byte sig.
fn parse_tag11(body: &[u8], at: usize) -> Result<Sig, PacketError> {
    let bad = |what| PacketError::Malformed {
        tag: TAG_11,
        at,
        what,
    };
    if body.len() != 14 + 8 {
        return Err(bad("contents are not an 8-byte key signature"));
    }
    if body[0] != 0x62 {
        return Err(bad("format is not 'b'"));
    }
    if body[1] != 0x08 {
        return Err(bad("file name length is not 8"));
    }
    Ok(sig_at(&body[14..]))
}

/// Tag 1 body: version 3, key id, algorithm (ignored), EFEK.
fn parse_tag1(body: &[u8], at: usize) -> Result<KeyPacket, PacketError> {
    let bad = |what| PacketError::Malformed {
        tag: TAG_1,
        at,
        what,
    };
    if body.len() < 10 {
        return Err(bad("body shorter than 10 bytes"));
    }
    if body.len() - 10 > MAX_TAG1_EFEK {
        return Err(bad("wrapped key longer than 512 bytes"));
    }
    if body[0] != 0x03 {
        return Err(bad("version is not 3"));
    }
    Ok(KeyPacket::PublicKey {
        sig: sig_at(&body[1..9]),
        efek: body[10..].to_vec(),
    })
}

/// Parses the packet set at the start of `buf` like `ecryptfs_parse_packet_set`:
/// stops at the first byte that starts no known packet (normally the 0x00
/// terminator, or the end of `buf` for an xattr value). Returns the packets and the
/// number of bytes they use. A set without packets is an error.
pub fn parse_packet_set_len(buf: &[u8]) -> Result<(Vec<KeyPacket>, usize), PacketError> {
    let mut packets = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match buf[at] {
            TAG_3 => {
                let (body, next) = split_packet(buf, at)?;
                let (cipher_code, salt, efek) = parse_tag3(body, at)?;
                if buf.get(next) != Some(&TAG_11) {
                    return Err(PacketError::Malformed {
                        tag: TAG_3,
                        at,
                        what: "not followed by a tag 11 packet",
                    });
                }
                let (body11, after) = split_packet(buf, next)?;
                let sig = parse_tag11(body11, next)?;
                packets.push(KeyPacket::Passphrase {
                    sig,
                    cipher_code,
                    salt,
                    efek,
                });
                at = after;
            }
            TAG_1 => {
                let (body, next) = split_packet(buf, at)?;
                packets.push(parse_tag1(body, at)?);
                at = next;
            }
            TAG_11 => return Err(PacketError::OrphanTag11(at)),
            _ => break,
        }
    }
    if packets.is_empty() {
        return Err(PacketError::NoKeyPackets);
    }
    Ok((packets, at))
}

/// [`parse_packet_set_len`] without the length.
pub fn parse_packet_set(buf: &[u8]) -> Result<Vec<KeyPacket>, PacketError> {
    parse_packet_set_len(buf).map(|(p, _)| p)
}

fn push_packet(tag: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), PacketError> {
    out.push(tag);
    encode_len(body.len(), out)?;
    out.extend_from_slice(body);
    Ok(())
}

/// Appends one packet (tag 3 + tag 11, or tag 1), without terminator.
pub fn write_packet(p: &KeyPacket, out: &mut Vec<u8>) -> Result<(), PacketError> {
    match p {
        KeyPacket::Passphrase {
            sig,
            cipher_code,
            salt,
            efek,
        } => {
            if efek.len() > MAX_TAG3_EFEK {
                return Err(PacketError::EfekTooLong {
                    at: out.len(),
                    len: efek.len(),
                });
            }
            let mut body = Vec::with_capacity(13 + efek.len());
            body.extend_from_slice(&[0x04, *cipher_code, 0x03, 0x01]);
            body.extend_from_slice(&salt.0);
            body.push(TAG3_ITERATIONS);
            body.extend_from_slice(efek);
            push_packet(TAG_3, &body, out)?;
            let mut body = Vec::with_capacity(22);
            body.extend_from_slice(&[0x62, 0x08]);
            body.extend_from_slice(TAG11_FILENAME);
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&sig.0);
            push_packet(TAG_11, &body, out)
        }
        KeyPacket::PublicKey { sig, efek } => {
            if efek.len() > MAX_TAG1_EFEK {
                return Err(PacketError::Malformed {
                    tag: TAG_1,
                    at: out.len(),
                    what: "wrapped key longer than 512 bytes",
                });
            }
            let mut body = Vec::with_capacity(10 + efek.len());
            body.push(0x03);
            body.extend_from_slice(&sig.0);
            body.push(0x01);
            body.extend_from_slice(efek);
            push_packet(TAG_1, &body, out)
        }
    }
}

/// Appends the packets in order (no terminator: the header adds it in file mode).
pub fn write_packet_set(packets: &[KeyPacket], out: &mut Vec<u8>) -> Result<(), PacketError> {
    if packets.is_empty() {
        return Err(PacketError::NoKeyPackets);
    }
    packets.iter().try_for_each(|p| write_packet(p, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::DEFAULT_SALT;

    #[test]
    fn length_forms() {
        for (len, enc) in [
            (0usize, &[0u8][..]),
            (191, &[191]),
            (192, &[192, 0]),
            (266, &[0xc0, 0x4a]), // spec §2.5: RSA-2048 tag 1 body
            (8383, &[223, 255]),
        ] {
            let mut v = Vec::new();
            encode_len(len, &mut v).unwrap();
            assert_eq!(v, enc, "{len}");
            assert_eq!(decode_len(enc), Ok((len, enc.len())));
        }
        assert_eq!(
            encode_len(8384, &mut Vec::new()),
            Err(PacketError::TooLong(8384))
        );
        assert_eq!(
            decode_len(&[0xff, 0, 0, 0, 0]),
            Err(PacketError::LengthForm(0xff))
        );
        assert_eq!(decode_len(&[0xe0, 0]), Err(PacketError::LengthForm(0xe0)));
        assert_eq!(decode_len(&[0xc5]), Err(PacketError::Truncated(1)));
    }

    /// Spec §1.1 annotated tag 3 + tag 11 bytes (pecryptfs aes-16.raw).
    const SPEC_PACKETS: &str = "8c1d0407030100112233445566776040\
                                4811d3601cad796515bd4f09f7cac0ed\
                                1662085f434f4e534f4c45000000003515cca9baaea1f4";

    #[test]
    fn spec_1_1_packets() {
        let mut bytes = hex::decode(SPEC_PACKETS).unwrap();
        bytes.push(0);
        let (packets, used) = parse_packet_set_len(&bytes).unwrap();
        assert_eq!(used, 31 + 24);
        let want = KeyPacket::Passphrase {
            sig: "3515cca9baaea1f4".parse().unwrap(),
            cipher_code: 0x07,
            salt: DEFAULT_SALT,
            efek: hex::decode("404811d3601cad796515bd4f09f7cac0").unwrap(),
        };
        assert_eq!(packets, vec![want]);
        let mut out = Vec::new();
        write_packet_set(&packets, &mut out).unwrap();
        assert_eq!(out, bytes[..used]);
    }

    #[test]
    fn tag1_roundtrip_and_limits() {
        let p = KeyPacket::PublicKey {
            sig: Sig([1, 2, 3, 4, 5, 6, 7, 8]),
            efek: vec![0xab; 256],
        };
        let mut out = Vec::new();
        write_packet_set(std::slice::from_ref(&p), &mut out).unwrap();
        assert_eq!(&out[..3], &[0x01, 0xc0, 0x4a]);
        assert_eq!(parse_packet_set(&out).unwrap(), vec![p]);
        let big = KeyPacket::PublicKey {
            sig: Sig([0; 8]),
            efek: vec![0; 513],
        };
        assert!(write_packet(&big, &mut Vec::new()).is_err());
    }

    #[test]
    fn bad_sets() {
        assert_eq!(parse_packet_set(&[0]), Err(PacketError::NoKeyPackets));
        assert_eq!(
            parse_packet_set(&[0xed, 0x16]),
            Err(PacketError::OrphanTag11(0))
        );
        let mut b = hex::decode(SPEC_PACKETS).unwrap();
        b.truncate(40);
        assert!(matches!(
            parse_packet_set(&b),
            Err(PacketError::Truncated(_))
        ));
        let mut b = hex::decode(SPEC_PACKETS).unwrap();
        b[3] = 0x05;
        assert!(matches!(
            parse_packet_set(&b),
            Err(PacketError::Cipher { .. })
        ));
    }
}
