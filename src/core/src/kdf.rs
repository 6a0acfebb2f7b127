//! Passphrase -> session-key-encryption key (SKEK) -> signature, as ecryptfs-utils'
//! `generate_passphrase_sig` does it (spec §3.1).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Longest passphrase ecryptfs-utils accepts, in bytes.
pub const MAX_PASSPHRASE_BYTES: usize = 64;
/// SHA-512 invocations of the KDF.
pub const KDF_ITERATIONS: u32 = 65536;
/// `ECRYPTFS_DEFAULT_SALT_HEX` decoded.
pub const DEFAULT_SALT: Salt = Salt([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
/// ecryptfs-utils passes the string "9988776655443322" without hex-decoding it, so the
/// FNEK salt is its first 8 ASCII bytes (spec §3.2, confirmed by kernel-made names).
pub const FNEK_SALT: Salt = Salt(*b"99887766");

/// Errors of the key-derivation types.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfError {
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("the passphrase is {0} bytes long; eCryptfs accepts at most 64")]
    PassphraseTooLong(usize),
    #[error("the passphrase contains a NUL byte")]
    PassphraseHasNul,
    #[error("not a key signature (expected 16 hexadecimal characters): {0:?}")]
    BadSig(String),
    #[error("not a salt (expected 16 hexadecimal characters): {0:?}")]
    BadSalt(String),
}

/// A mount or wrapping passphrase: 1..=64 bytes, no NUL, wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    /// Validates the length rules of ecryptfs-utils.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, KdfError> {
        let p = Passphrase(bytes.into());
        if p.0.is_empty() {
            return Err(KdfError::EmptyPassphrase);
        }
        if p.0.len() > MAX_PASSPHRASE_BYTES {
            return Err(KdfError::PassphraseTooLong(p.0.len()));
        }
        if p.0.contains(&0) {
            return Err(KdfError::PassphraseHasNul);
        }
        Ok(p)
    }

    /// Reads a passphrase the way the tools read files and stdin: up to the first
    /// newline (a trailing `\r` is kept, as ecryptfs-utils keeps it).
    pub fn from_first_line(text: &[u8]) -> Result<Self, KdfError> {
        let end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
        Self::new(&text[..end])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Passphrase(<{} bytes redacted>)", self.0.len())
    }
}

/// An 8-byte salt.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt(pub [u8; 8]);

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", hex::encode(self.0))
    }
}

impl FromStr for Salt {
    type Err = KdfError;
    fn from_str(s: &str) -> Result<Self, KdfError> {
        let mut out = [0u8; 8];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KdfError::BadSalt(s.to_owned()))?;
        Ok(Salt(out))
    }
}

/// Key signature: 8 bytes, shown as 16 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sig(pub [u8; 8]);

impl Sig {
    /// The keyring description and mount-option form (lower case, spec §10.15).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({})", self.to_hex())
    }
}

impl FromStr for Sig {
    type Err = KdfError;
    /// Accepts upper case too, but always prints lower case.
    fn from_str(s: &str) -> Result<Self, KdfError> {
        let mut out = [0u8; 8];
        if s.len() != 16 {
            return Err(KdfError::BadSig(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| KdfError::BadSig(s.to_owned()))?;
        Ok(Sig(out))
    }
}

/// The 64-byte session-key encryption key held in a passphrase auth token.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Skek([u8; 64]);

impl Skek {
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Skek(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// `hex(SHA512(SKEK)[0..8])`.
    pub fn sig(&self) -> Sig {
        let d = Sha512::digest(self.0);
        let mut s = [0u8; 8];
        s.copy_from_slice(&d[..8]);
        Sig(s)
    }
}

impl fmt::Debug for Skek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Skek(sig {})", self.sig())
    }
}

/// SHA-512(salt || passphrase), then 65535 more SHA-512 rounds.
pub fn derive_skek(passphrase: &Passphrase, salt: &Salt) -> Skek {
    let mut h = Sha512::new();
    h.update(salt.0);
    h.update(passphrase.as_bytes());
    let mut state = Zeroizing::new([0u8; 64]);
    state.copy_from_slice(&h.finalize());
    for _ in 1..KDF_ITERATIONS {
        let next = Sha512::digest(&state[..]);
        state.copy_from_slice(&next);
    }
    Skek(*state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(pass: &str, salt: &Salt) -> String {
        derive_skek(&Passphrase::new(pass).unwrap(), salt)
            .sig()
            .to_hex()
    }

    #[test]
    fn spec_v1_v2_sigs() {
        assert_eq!(sig("test123", &DEFAULT_SALT), "2a97418edca01eb9");
        assert_eq!(sig("test123", &FNEK_SALT), "33a5d5e39463d53f");
        assert_eq!(sig("Test", &DEFAULT_SALT), "3515cca9baaea1f4");
        assert_eq!(sig("Test", &FNEK_SALT), "37b7af1b2b2ef27a");
        assert_eq!(sig("test", &FNEK_SALT), "be877764c5918621");
        assert_eq!(
            sig("kernel-oracle test vectors", &DEFAULT_SALT),
            "c0aa74b88cbc562f"
        );
        assert_eq!(
            sig("kernel-oracle test vectors", &FNEK_SALT),
            "5e96f49bf0caf1dd"
        );
    }

    #[test]
    fn spec_v3_skek_and_v4_salt() {
        let skek = derive_skek(&Passphrase::new("test123").unwrap(), &DEFAULT_SALT);
        assert_eq!(
            hex::encode(skek.as_bytes()),
            "648eecb6ebfeab9555c92628b892a2b215b85b619bc7cd53dd4b9415c0a7f861\
             81087fa8258d9d9adaa78ae648429fe379db612ccd610bf9834bf644ae60d3f6"
        );
        let salt: Salt = "0102030405060708".parse().unwrap();
        assert_eq!(sig("test123", &salt), "0d9993251d8e81f0");
    }

    #[test]
    fn spec_v10_length_limits() {
        assert_eq!(sig(&"a".repeat(64), &DEFAULT_SALT), "0e3b6f146f248ef0");
        assert_eq!(
            Passphrase::new("a".repeat(65)),
            Err(KdfError::PassphraseTooLong(65))
        );
        assert_eq!(Passphrase::new(""), Err(KdfError::EmptyPassphrase));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let p = Passphrase::new("hunter22").unwrap();
        assert!(!format!("{p:?}").contains("hunter22"));
        let k = derive_skek(&p, &DEFAULT_SALT);
        let dbg = format!("{k:?}");
        assert!(dbg.starts_with("Skek(sig "), "{dbg}");
    }

    #[test]
    fn sig_parsing() {
        let s: Sig = "2A97418EDCA01EB9".parse().unwrap();
        assert_eq!(s.to_string(), "2a97418edca01eb9");
        assert!("2a97418edca01eb".parse::<Sig>().is_err());
        assert!("zz97418edca01eb9".parse::<Sig>().is_err());
    }
}
