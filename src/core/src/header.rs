//! The file header: size field, marker, flags, header extent counts and the key
//! packet set, at the front of the lower file or in the `user.ecryptfs` xattr
//! (spec §1).

use crate::extent::EXTENT_SIZE;
use crate::packet::{parse_packet_set_len, write_packet_set, KeyPacket, PacketError};

pub const XATTR_NAME: &str = "user.ecryptfs";
/// Header size written on 4 KiB-page systems (`max(8192, PAGE_SIZE)`).
pub const MIN_METADATA_SIZE: u64 = 8192;
/// The kernel parses the header from this many bytes only (file or xattr).
pub const HEADER_READ_SIZE: usize = 4096;
pub const MAGIC_MARKER: u32 = 0x3c81_b7f5;
/// Highest file format version read; the one written.
pub const VERSION: u8 = 3;

pub const FLAG_HMAC: u32 = 0x01;
pub const FLAG_ENCRYPTED: u32 = 0x02;
pub const FLAG_METADATA_IN_XATTR: u32 = 0x04;
pub const FLAG_ENCRYPT_FILENAMES: u32 = 0x08;

/// Largest metadata size this code writes (64 KiB-page kernels use 65536).
const MAX_WRITE_METADATA: u64 = 1 << 20;

/// Errors reading or writing a header.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("not an eCryptfs file (no valid header marker)")]
    NotEcryptfs,
    #[error("eCryptfs header cut short ({0} bytes)")]
    TooShort(usize),
    #[error("unsupported eCryptfs file version {0} (at most 3)")]
    UnsupportedVersion(u8),
    #[error("bad key packets in the header: {0}")]
    Packet(#[from] PacketError),
    #[error("header size {0} overlaps the key packets or is unreasonably large")]
    BadMetadataSize(u64),
    #[error("key packets need {0} bytes, more than the 4096 bytes the kernel reads")]
    TooLarge(usize),
}

/// A parsed (or to-be-written) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Plaintext size of the file.
    pub size: u64,
    pub version: u8,
    /// Flag bits, the low 24 bits of the flags word.
    pub flags: u32,
    /// Bytes reserved before the data in header-in-file mode (8192 for new files).
    pub metadata_size: u64,
    pub packets: Vec<KeyPacket>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn marker_ok(buf: &[u8]) -> bool {
    buf.len() >= 16 && be32(&buf[8..12]) ^ MAGIC_MARKER == be32(&buf[12..16])
}

/// Offset of the packet set for a given version.
fn packets_offset(version: u8) -> usize {
    if version == 0 {
        20
    } else {
        26
    }
}

impl Header {
    /// A header for a new, empty file (version 3, 8192 bytes of metadata).
    pub fn new(packets: Vec<KeyPacket>, xattr: bool, encrypt_filenames: bool) -> Header {
        let mut flags = FLAG_ENCRYPTED;
        if xattr {
            flags |= FLAG_METADATA_IN_XATTR;
        }
        if encrypt_filenames {
            flags |= FLAG_ENCRYPT_FILENAMES;
        }
        Header {
            size: 0,
            version: VERSION,
            flags,
            metadata_size: MIN_METADATA_SIZE,
            packets,
        }
    }

    /// Parses the first 4096 bytes of a lower file, or an xattr value.
    pub fn parse(buf: &[u8]) -> Result<Header, HeaderError> {
        let buf = &buf[..buf.len().min(HEADER_READ_SIZE)];
        if !marker_ok(buf) {
            return Err(HeaderError::NotEcryptfs);
        }
        if buf.len() < 20 {
            return Err(HeaderError::TooShort(buf.len()));
        }
        let size = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
        let version = buf[16];
        if version > VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let flags = be32(&buf[16..20]) & 0x00ff_ffff;
        let at = packets_offset(version);
        if buf.len() < at {
            return Err(HeaderError::TooShort(buf.len()));
        }
        let metadata_size = if version == 0 {
            MIN_METADATA_SIZE
        } else {
            u64::from(be32(&buf[20..24])) * u64::from(u16::from_be_bytes([buf[24], buf[25]]))
        };
        let (packets, used) = parse_packet_set_len(&buf[at..])?;
        // The kernel only logs a small size; refuse one that would put data on the packets.
        if flags & FLAG_METADATA_IN_XATTR == 0 && metadata_size < (at + used) as u64 {
            return Err(HeaderError::BadMetadataSize(metadata_size));
        }
        Ok(Header {
            size,
            version,
            flags,
            metadata_size,
            packets,
        })
    }

    /// The size field, if `buf` (at least the first 16 bytes of a file or xattr
    /// value) carries a valid marker. Needs no key (spec §1.4).
    pub fn peek_size(buf: &[u8]) -> Option<u64> {
        marker_ok(buf).then(|| u64::from_be_bytes(buf[..8].try_into().unwrap_or_default()))
    }

    pub fn in_xattr(&self) -> bool {
        self.flags & FLAG_METADATA_IN_XATTR != 0
    }

    pub fn encrypt_filenames(&self) -> bool {
        self.flags & FLAG_ENCRYPT_FILENAMES != 0
    }

    /// Where data extent 0 starts in the lower file.
    pub fn lower_data_offset(&self) -> u64 {
        if self.in_xattr() {
            0
        } else {
            self.metadata_size
        }
    }

    /// Size field, random marker, flags word, extent fields and packets.
    fn prefix_and_packets(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.size.to_be_bytes());
        let mut m1 = [0u8; 4];
        // A marker needs no cryptographic quality; fall back to a fixed word.
        if getrandom::getrandom(&mut m1).is_err() {
            m1 = [0x37, 0x88, 0x81, 0xcc];
        }
        let m1 = u32::from_be_bytes(m1);
        out.extend_from_slice(&m1.to_be_bytes());
        out.extend_from_slice(&(m1 ^ MAGIC_MARKER).to_be_bytes());
        let word = (u32::from(self.version) << 24) | (self.flags & 0x00ff_ffff);
        out.extend_from_slice(&word.to_be_bytes());
        if self.version != 0 {
            let extents = self.metadata_size / EXTENT_SIZE as u64;
            let extents = u16::try_from(extents)
                .map_err(|_| HeaderError::BadMetadataSize(self.metadata_size))?;
            out.extend_from_slice(&(EXTENT_SIZE as u32).to_be_bytes());
            out.extend_from_slice(&extents.to_be_bytes());
        }
        write_packet_set(&self.packets, &mut out)?;
        Ok(out)
    }

    /// The header region of a lower file: `metadata_size` bytes (packets, a 0x00
    /// terminator, zero fill). The packet set must end within the first 4096 bytes.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = self.prefix_and_packets()?;
        out.push(0);
        if out.len() > HEADER_READ_SIZE {
            return Err(HeaderError::TooLarge(out.len()));
        }
        if self.metadata_size < out.len() as u64
            || self.metadata_size > MAX_WRITE_METADATA
            || !self.metadata_size.is_multiple_of(EXTENT_SIZE as u64)
        {
            return Err(HeaderError::BadMetadataSize(self.metadata_size));
        }
        out.resize(self.metadata_size as usize, 0);
        Ok(out)
    }

    /// The `user.ecryptfs` value: the same bytes without terminator or fill.
    pub fn to_xattr_bytes(&self) -> Result<Vec<u8>, HeaderError> {
        let out = self.prefix_and_packets()?;
        if out.len() > HEADER_READ_SIZE {
            return Err(HeaderError::TooLarge(out.len()));
        }
        Ok(out)
    }
}

/// Lower file size for a plaintext size: the data offset plus whole extents.
pub fn lower_size_for(plain_size: u64, data_offset: u64) -> u64 {
    data_offset + plain_size.div_ceil(EXTENT_SIZE as u64) * EXTENT_SIZE as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::{Sig, DEFAULT_SALT};

    /// The spec §1.1 annotated kernel header, byte by byte.
    fn spec_header_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&hex::decode("000000000000000c").unwrap()); // size 12
        b.extend_from_slice(&hex::decode("378881cc0b093639").unwrap()); // marker
        b.extend_from_slice(&hex::decode("03000002").unwrap()); // v3, ENCRYPTED
        b.extend_from_slice(&hex::decode("000010000002").unwrap()); // 4096 x 2
        b.extend_from_slice(
            &hex::decode("8c1d04070301001122334455667760404811d3601cad796515bd4f09f7cac0").unwrap(),
        );
        b.extend_from_slice(
            &hex::decode("ed1662085f434f4e534f4c45000000003515cca9baaea1f4").unwrap(),
        );
        assert_eq!(b.len(), 81);
        b.resize(8192, 0);
        b
    }

    #[test]
    fn spec_1_1_raw_header() {
        let b = spec_header_bytes();
        assert_eq!(Header::peek_size(&b), Some(12));
        let h = Header::parse(&b[..4096]).unwrap();
        assert_eq!(
            h,
            Header {
                size: 12,
                version: 3,
                flags: FLAG_ENCRYPTED,
                metadata_size: 8192,
                packets: vec![KeyPacket::Passphrase {
                    sig: "3515cca9baaea1f4".parse::<Sig>().unwrap(),
                    cipher_code: 7,
                    salt: DEFAULT_SALT,
                    efek: hex::decode("404811d3601cad796515bd4f09f7cac0").unwrap(),
                }],
            }
        );
        assert!(!h.in_xattr() && !h.encrypt_filenames());
        assert_eq!(h.lower_data_offset(), 8192);
        // Rewriting gives the same bytes apart from the random marker.
        let w = h.to_file_bytes().unwrap();
        assert_eq!(w.len(), 8192);
        assert_eq!(w[..8], b[..8]);
        assert_eq!(w[16..], b[16..]);
        assert!(marker_ok(&w));
        let x = h.to_xattr_bytes().unwrap();
        assert_eq!(x.len(), 81);
        assert_eq!(x[16..], b[16..81]);
    }

    #[test]
    fn version_0_layout() {
        let b = spec_header_bytes();
        let mut v0 = b[..16].to_vec();
        v0.extend_from_slice(&[0, 0, 0, 2]);
        v0.extend_from_slice(&b[26..81]);
        v0.push(0);
        let h = Header::parse(&v0).unwrap();
        assert_eq!((h.version, h.metadata_size), (0, 8192));
        assert_eq!(h.packets.len(), 1);
    }

    #[test]
    fn rejects() {
        let b = spec_header_bytes();
        assert_eq!(Header::parse(&[0u8; 100]), Err(HeaderError::NotEcryptfs));
        assert_eq!(Header::parse(&b[..10]), Err(HeaderError::NotEcryptfs));
        assert_eq!(Header::parse(&b[..18]), Err(HeaderError::TooShort(18)));
        assert_eq!(Header::parse(&b[..24]), Err(HeaderError::TooShort(24)));
        let mut v4 = b.clone();
        v4[16] = 4;
        assert_eq!(Header::parse(&v4), Err(HeaderError::UnsupportedVersion(4)));
        let mut small = b.clone();
        small[25] = 0;
        assert_eq!(Header::parse(&small), Err(HeaderError::BadMetadataSize(0)));
        assert_eq!(Header::peek_size(&[0u8; 16]), None);
    }

    #[test]
    fn new_header_flags() {
        let h = Header::new(Vec::new(), true, true);
        assert_eq!(h.flags, 0x0e);
        assert_eq!(h.lower_data_offset(), 0);
        assert_eq!(
            h.to_xattr_bytes(),
            Err(HeaderError::Packet(PacketError::NoKeyPackets))
        );
    }

    #[test]
    fn lower_sizes() {
        assert_eq!(lower_size_for(0, 8192), 8192);
        assert_eq!(lower_size_for(12, 8192), 12288);
        assert_eq!(lower_size_for(4096, 0), 4096);
        assert_eq!(lower_size_for(4097, 0), 8192);
    }
}
