//! The six kernel block ciphers, their RFC 2440 codes (spec §2.2) and the two modes
//! eCryptfs uses: ECB (key wrapping, names, spec §10.1) and CBC (file extents, §4).

use std::fmt;

use cipher::block_padding::NoPadding;
use cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit,
};

/// Errors about cipher names, codes, key sizes and block alignment.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum CipherError {
    #[error("unknown cipher {0:?} (expected aes, blowfish, des3_ede, cast5, cast6 or twofish)")]
    UnknownName(String),
    #[error("unknown cipher code 0x{0:02x}")]
    UnknownCode(u8),
    #[error("{cipher} does not work with a {key_bytes}-byte key")]
    BadKeySize {
        cipher: &'static str,
        key_bytes: usize,
    },
    #[error("key is {got} bytes, expected {expected}")]
    KeyLength { expected: usize, got: usize },
    #[error("{len} bytes is not a multiple of the {block}-byte cipher block")]
    NotBlockAligned { len: usize, block: usize },
    #[error("{len} bytes cannot be split into {count} equal messages")]
    UnevenMessages { len: usize, count: usize },
}

/// A block cipher the kernel's eCryptfs can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes,
    Blowfish,
    Des3Ede,
    Cast5,
    Cast6,
    Twofish,
}

impl Cipher {
    pub const ALL: [Cipher; 6] = [
        Cipher::Aes,
        Cipher::Blowfish,
        Cipher::Des3Ede,
        Cipher::Cast5,
        Cipher::Cast6,
        Cipher::Twofish,
    ];

    /// Kernel crypto API name (case-sensitive, as in `ecryptfs_cipher=`).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes => "aes",
            Cipher::Blowfish => "blowfish",
            Cipher::Des3Ede => "des3_ede",
            Cipher::Cast5 => "cast5",
            Cipher::Cast6 => "cast6",
            Cipher::Twofish => "twofish",
        }
    }

    pub fn from_name(s: &str) -> Result<Cipher, CipherError> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| CipherError::UnknownName(s.to_owned()))
    }

    pub fn block_size(self) -> usize {
        match self {
            Cipher::Aes | Cipher::Cast6 | Cipher::Twofish => 16,
            Cipher::Blowfish | Cipher::Des3Ede | Cipher::Cast5 => 8,
        }
    }

    /// Key sizes the tools offer (mount.ecryptfs's list, spec §6.2); what new files use.
    pub fn key_sizes(self) -> &'static [usize] {
        match self {
            Cipher::Aes => &[16, 24, 32],
            Cipher::Blowfish => &[16, 32, 56],
            Cipher::Des3Ede => &[24],
            Cipher::Cast5 => &[16],
            Cipher::Cast6 | Cipher::Twofish => &[16, 32],
        }
    }

    /// Key sizes that work end to end in the kernel (spec §2.2, §10.4): a superset of
    /// `key_sizes`, accepted when reading files written with unusual options.
    fn key_size_works(self, n: usize) -> bool {
        match self {
            Cipher::Aes => matches!(n, 16 | 24 | 32),
            Cipher::Blowfish => n.is_multiple_of(8) && (8..=56).contains(&n),
            Cipher::Des3Ede => n == 24,
            Cipher::Cast5 => matches!(n, 8 | 16),
            Cipher::Cast6 | Cipher::Twofish => matches!(n, 16 | 32),
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cipher together with its key length: what a file or a name is encrypted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CipherSpec {
    pub cipher: Cipher,
    pub key_bytes: usize,
}

impl CipherSpec {
    /// Accepts every (cipher, key size) pair the kernel can use end to end.
    pub fn new(cipher: Cipher, key_bytes: usize) -> Result<Self, CipherError> {
        if !cipher.key_size_works(key_bytes) {
            return Err(CipherError::BadKeySize {
                cipher: cipher.name(),
                key_bytes,
            });
        }
        Ok(CipherSpec { cipher, key_bytes })
    }

    /// RFC 2440 code written in tag 3 / tag 70 packets (AES's depends on the key size).
    pub fn code(&self) -> u8 {
        match self.cipher {
            Cipher::Aes => match self.key_bytes {
                24 => 0x08,
                32 => 0x09,
                _ => 0x07,
            },
            Cipher::Blowfish => 0x04,
            Cipher::Des3Ede => 0x02,
            Cipher::Cast5 => 0x03,
            Cipher::Cast6 => 0x0b,
            Cipher::Twofish => 0x0a,
        }
    }

    /// The cipher named by a packet code. Like the kernel, the code only names the
    /// algorithm: the key size comes from elsewhere (EFEK length, mount option), so
    /// e.g. code 0x07 with a 32-byte key is AES-256.
    pub fn from_code(code: u8, key_bytes: usize) -> Result<Self, CipherError> {
        Self::new(cipher_for_code(code)?, key_bytes)
    }
}

/// Code -> algorithm (`ecryptfs_cipher_code_to_string`).
pub fn cipher_for_code(code: u8) -> Result<Cipher, CipherError> {
    Ok(match code {
        0x07..=0x09 => Cipher::Aes,
        0x04 => Cipher::Blowfish,
        0x02 => Cipher::Des3Ede,
        0x03 => Cipher::Cast5,
        0x0b => Cipher::Cast6,
        0x0a => Cipher::Twofish,
        _ => return Err(CipherError::UnknownCode(code)),
    })
}

/// A key schedule computed once; every algorithm keeps its parallel block backend.
/// Blowfish's 4 KiB state stays inline: one per open file, no pointer chase per block.
#[allow(clippy::large_enum_variant)]
enum Schedule {
    Aes128(aes::Aes128),
    Aes192(aes::Aes192),
    Aes256(aes::Aes256),
    Blowfish(blowfish::Blowfish),
    Des3Ede(des::TdesEde3),
    Cast5(cast5::Cast5),
    Cast6(cast6::Cast6),
    Twofish(crate::twofish::Twofish),
}

/// Runs `$body` with `$c` bound to the concrete cipher of a `Schedule`.
macro_rules! with_schedule {
    ($s:expr, $c:ident => $body:expr) => {
        match $s {
            Schedule::Aes128($c) => $body,
            Schedule::Aes192($c) => $body,
            Schedule::Aes256($c) => $body,
            Schedule::Blowfish($c) => $body,
            Schedule::Des3Ede($c) => $body,
            Schedule::Cast5($c) => $body,
            Schedule::Cast6($c) => $body,
            Schedule::Twofish($c) => $body,
        }
    };
}

/// A cipher keyed once, usable from many threads (all schedules are plain data).
/// The cipher crates wipe their schedules on drop (`zeroize` features), as does
/// [`crate::twofish`].
pub struct KeyedCipher {
    spec: CipherSpec,
    schedule: Schedule,
}

impl fmt::Debug for KeyedCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyedCipher({}-{})",
            self.spec.cipher, self.spec.key_bytes
        )
    }
}

fn keyed<C: KeyInit>(key: &[u8], spec: CipherSpec) -> Result<C, CipherError> {
    C::new_from_slice(key).map_err(|_| CipherError::BadKeySize {
        cipher: spec.cipher.name(),
        key_bytes: key.len(),
    })
}

fn check_aligned(len: usize, block: usize) -> Result<(), CipherError> {
    if !len.is_multiple_of(block) {
        return Err(CipherError::NotBlockAligned { len, block });
    }
    Ok(())
}

fn cbc_encrypt_with<C: BlockEncrypt + BlockCipher>(c: &C, iv: &[u8], data: &mut [u8]) {
    let len = data.len();
    let enc = cbc::Encryptor::<&C>::inner_iv_slice_init(c, iv).expect("iv is one block");
    enc.encrypt_padded_mut::<NoPadding>(data, len)
        .expect("length checked by caller");
}

/// CBC-encrypts `ivs.len()` equal segments of `data` side by side: block j of up to
/// `LANES` segments goes through the cipher in one parallel call, hiding the latency
/// that makes a single CBC chain slow (each block waits for the previous one).
fn cbc_encrypt_lanes_with<C: BlockEncrypt + BlockCipher>(c: &C, ivs: &[[u8; 16]], data: &mut [u8]) {
    const LANES: usize = 8;
    let b = C::block_size();
    let seg = data.len() / ivs.len();
    for (group, ivs) in data.chunks_mut(seg * LANES).zip(ivs.chunks(LANES)) {
        let lanes = ivs.len();
        let mut prev: [cipher::Block<C>; LANES] = Default::default();
        let mut work: [cipher::Block<C>; LANES] = Default::default();
        for (p, iv) in prev.iter_mut().zip(ivs) {
            p.copy_from_slice(&iv[..b]);
        }
        for j in (0..seg).step_by(b) {
            for k in 0..lanes {
                let src = &group[k * seg + j..k * seg + j + b];
                for ((w, s), p) in work[k].iter_mut().zip(src).zip(prev[k].iter()) {
                    *w = s ^ p;
                }
            }
            c.encrypt_blocks(&mut work[..lanes]);
            for k in 0..lanes {
                group[k * seg + j..k * seg + j + b].copy_from_slice(&work[k]);
                prev[k].copy_from_slice(&work[k]);
            }
        }
    }
}

fn cbc_decrypt_with<C: BlockDecrypt + BlockCipher>(c: &C, iv: &[u8], data: &mut [u8]) {
    let dec = cbc::Decryptor::<&C>::inner_iv_slice_init(c, iv).expect("iv is one block");
    dec.decrypt_padded_mut::<NoPadding>(data)
        .expect("length checked by caller");
}

impl KeyedCipher {
    /// `key.len()` must equal `spec.key_bytes`.
    pub fn new(spec: CipherSpec, key: &[u8]) -> Result<Self, CipherError> {
        if key.len() != spec.key_bytes {
            return Err(CipherError::KeyLength {
                expected: spec.key_bytes,
                got: key.len(),
            });
        }
        let schedule = match (spec.cipher, key.len()) {
            (Cipher::Aes, 16) => Schedule::Aes128(keyed(key, spec)?),
            (Cipher::Aes, 24) => Schedule::Aes192(keyed(key, spec)?),
            (Cipher::Aes, _) => Schedule::Aes256(keyed(key, spec)?),
            (Cipher::Blowfish, _) => Schedule::Blowfish(keyed(key, spec)?),
            (Cipher::Des3Ede, _) => Schedule::Des3Ede(keyed(key, spec)?),
            (Cipher::Cast5, _) => Schedule::Cast5(keyed(key, spec)?),
            (Cipher::Cast6, _) => Schedule::Cast6(keyed(key, spec)?),
            (Cipher::Twofish, _) => Schedule::Twofish(keyed(key, spec)?),
        };
        Ok(KeyedCipher { spec, schedule })
    }

    pub fn spec(&self) -> CipherSpec {
        self.spec
    }

    pub fn block_size(&self) -> usize {
        self.spec.cipher.block_size()
    }

    pub fn ecb_encrypt(&self, data: &mut [u8]) -> Result<(), CipherError> {
        check_aligned(data.len(), self.block_size())?;
        let len = data.len();
        with_schedule!(&self.schedule, c => {
            c.encrypt_padded::<NoPadding>(data, len).map(|_| ()).map_err(|_| CipherError::NotBlockAligned { len, block: self.block_size() })
        })
    }

    pub fn ecb_decrypt(&self, data: &mut [u8]) -> Result<(), CipherError> {
        check_aligned(data.len(), self.block_size())?;
        let len = data.len();
        with_schedule!(&self.schedule, c => {
            c.decrypt_padded::<NoPadding>(data).map(|_| ()).map_err(|_| CipherError::NotBlockAligned { len, block: self.block_size() })
        })
    }

    /// CBC with the first `block_size` bytes of `iv` (spec §4.3: 8-byte-block ciphers
    /// use the first half of the 16-byte MD5 IV).
    pub fn cbc_encrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), CipherError> {
        let b = self.block_size();
        check_aligned(data.len(), b)?;
        with_schedule!(&self.schedule, c => cbc_encrypt_with(c, &iv[..b], data));
        Ok(())
    }

    /// Several independent CBC messages of equal length (one per IV) in `data`,
    /// encrypted together; same result as [`Self::cbc_encrypt`] on each, faster.
    pub fn cbc_encrypt_many(&self, ivs: &[[u8; 16]], data: &mut [u8]) -> Result<(), CipherError> {
        let b = self.block_size();
        if ivs.is_empty() {
            return check_aligned(data.len(), b);
        }
        let seg = data.len() / ivs.len();
        if seg * ivs.len() != data.len() {
            return Err(CipherError::UnevenMessages {
                len: data.len(),
                count: ivs.len(),
            });
        }
        check_aligned(seg, b)?;
        with_schedule!(&self.schedule, c => cbc_encrypt_lanes_with(c, ivs, data));
        Ok(())
    }

    pub fn cbc_decrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), CipherError> {
        let b = self.block_size();
        check_aligned(data.len(), b)?;
        with_schedule!(&self.schedule, c => cbc_decrypt_with(c, &iv[..b], data));
        Ok(())
    }
}

/// One-shot ECB encryption in place (`key.len() == spec.key_bytes`).
pub fn ecb_encrypt(spec: CipherSpec, key: &[u8], data: &mut [u8]) -> Result<(), CipherError> {
    KeyedCipher::new(spec, key)?.ecb_encrypt(data)
}

/// One-shot ECB decryption in place (`key.len() == spec.key_bytes`).
pub fn ecb_decrypt(spec: CipherSpec, key: &[u8], data: &mut [u8]) -> Result<(), CipherError> {
    KeyedCipher::new(spec, key)?.ecb_decrypt(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_roundtrip() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Ok(c));
            for &k in c.key_sizes() {
                let s = CipherSpec::new(c, k).unwrap();
                assert_eq!(CipherSpec::from_code(s.code(), k), Ok(s));
            }
        }
        assert_eq!(CipherSpec::new(Cipher::Aes, 24).unwrap().code(), 0x08);
        assert!(Cipher::from_name("AES").is_err());
        assert_eq!(cipher_for_code(0x05), Err(CipherError::UnknownCode(5)));
        assert!(CipherSpec::new(Cipher::Twofish, 24).is_err());
        assert!(CipherSpec::new(Cipher::Cast6, 20).is_err());
        assert!(CipherSpec::new(Cipher::Blowfish, 12).is_err());
    }

    /// FIPS-197 C.1 / C.3 single-block vectors through the ECB helper.
    #[test]
    fn aes_known_answers() {
        let pt = hex::decode("00112233445566778899aabbccddeeff").unwrap();
        let k128 = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let mut b = pt.clone();
        ecb_encrypt(CipherSpec::new(Cipher::Aes, 16).unwrap(), &k128, &mut b).unwrap();
        assert_eq!(hex::encode(&b), "69c4e0d86a7b0430d8cdb78070b4c55a");
        let k256: Vec<u8> = (0u8..32).collect();
        let spec = CipherSpec::new(Cipher::Aes, 32).unwrap();
        let mut b = pt.clone();
        ecb_encrypt(spec, &k256, &mut b).unwrap();
        assert_eq!(hex::encode(&b), "8ea2b7ca516745bfeafc49904b496089");
        ecb_decrypt(spec, &k256, &mut b).unwrap();
        assert_eq!(b, pt);
    }

    /// Published single-block vectors for the ciphers the spec had no kernel data for:
    /// Twofish paper (128-bit zero key) and RFC 2612 (CAST-256, 128-bit key).
    #[test]
    fn twofish_and_cast6_known_answers() {
        let mut b = [0u8; 16];
        ecb_encrypt(
            CipherSpec::new(Cipher::Twofish, 16).unwrap(),
            &[0; 16],
            &mut b,
        )
        .unwrap();
        assert_eq!(hex::encode(b), "9f589f5cf6122c32b6bfec2f2ae8c35a");
        let key = hex::decode("2342bb9efa38542c0af75647f29f615d").unwrap();
        let mut b = [0u8; 16];
        ecb_encrypt(CipherSpec::new(Cipher::Cast6, 16).unwrap(), &key, &mut b).unwrap();
        assert_eq!(hex::encode(b), "c842a08972b43d20836c91d1b7530f6b");
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let spec = CipherSpec::new(Cipher::Aes, 16).unwrap();
        let mut b = [0u8; 15];
        assert_eq!(
            ecb_encrypt(spec, &[0; 16], &mut b),
            Err(CipherError::NotBlockAligned { len: 15, block: 16 })
        );
        assert_eq!(
            ecb_encrypt(spec, &[0; 24], &mut [0; 16]),
            Err(CipherError::KeyLength {
                expected: 16,
                got: 24
            })
        );
    }

    #[test]
    fn every_cipher_and_size_roundtrips_cbc() {
        for c in Cipher::ALL {
            for &k in c.key_sizes() {
                let spec = CipherSpec::new(c, k).unwrap();
                let key: Vec<u8> = (0..k as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
                let kc = KeyedCipher::new(spec, &key).unwrap();
                let plain: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
                let mut d = plain.clone();
                kc.cbc_encrypt(&[9; 16], &mut d).unwrap();
                assert_ne!(d, plain);
                // Lanes give the same bytes as one chain per segment (11 = 8 + 3 lanes).
                let ivs: Vec<[u8; 16]> = (0..11u8).map(|i| [i; 16]).collect();
                let mut many: Vec<u8> = plain.iter().cycle().take(11 * 256).copied().collect();
                let want: Vec<u8> = many
                    .chunks(256)
                    .zip(&ivs)
                    .flat_map(|(m, iv)| {
                        let mut m = m.to_vec();
                        kc.cbc_encrypt(iv, &mut m).unwrap();
                        m
                    })
                    .collect();
                kc.cbc_encrypt_many(&ivs, &mut many).unwrap();
                assert!(many == want, "{c} {k}");
                kc.cbc_decrypt(&[9; 16], &mut d).unwrap();
                assert_eq!(d, plain, "{c} {k}");
            }
        }
    }
}
