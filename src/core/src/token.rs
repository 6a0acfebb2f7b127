//! The keyring payload `struct ecryptfs_auth_tok` (spec §3.3): 740 bytes for a
//! passphrase token, byte-identical to what `ecryptfs-add-passphrase` adds, and
//! 740 + blob bytes for a private-key (public-key module) token.
//!
//! The struct is a raw C struct in host byte order; eCryptfs only runs on
//! little-endian machines that matter here, and the kernel reads it with the host's
//! order, so we write host order too (`to_ne_bytes`).

use std::fmt;

use zeroize::Zeroizing;

use crate::kdf::{derive_skek, Passphrase, Salt, Sig, Skek};

/// Size of `struct ecryptfs_auth_tok`.
pub const TOKEN_SIZE: usize = 740;
/// `version` = major 0, minor 4; the kernel accepts nothing else.
const VERSION: u16 = 0x0004;
const TYPE_PASSWORD: u16 = 0;
const TYPE_PRIVATE_KEY: u16 = 1;
/// PGP hash id of SHA-512, stored (descriptively) in passphrase tokens.
const HASH_ALGO_SHA512: u32 = 10;
/// `ECRYPTFS_SESSION_KEY_ENCRYPTION_KEY_SET`: without it the kernel wraps FEKs with
/// uninitialised memory (spec §10.16), so it is required on read as well.
const FLAG_SKEK_SET: u32 = 0x02;
const SKEK_BYTES: u32 = 64;
/// `ECRYPTFS_MAX_KEY_MOD_NAME_BYTES`; ecryptfs-utils stores it as `key_size`.
const KEY_MOD_NAME_BYTES: usize = 16;
/// Largest blob we accept: a `user` key holds at most 32767 bytes.
pub const MAX_BLOB_BYTES: usize = 32767 - TOKEN_SIZE;

// Field offsets (spec §3.3).
const OFF_VERSION: usize = 0;
const OFF_TYPE: usize = 2;
const OFF_PW_HASH_ALGO: usize = 632;
const OFF_PW_SKEK_BYTES: usize = 640;
const OFF_PW_FLAGS: usize = 644;
const OFF_PW_SKEK: usize = 648;
const OFF_PW_SIG: usize = 712;
const OFF_PW_SALT: usize = 729;
const OFF_PK_KEY_SIZE: usize = 628;
const OFF_PK_DATA_LEN: usize = 632;
const OFF_PK_SIG: usize = 636;
const OFF_PK_ALIAS: usize = 653;
const OFF_PK_DATA: usize = 670;

/// Errors of token parsing and construction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("auth token is {0} bytes; an eCryptfs token has at least 740")]
    TooShort(usize),
    #[error("auth token version {0:#06x}; eCryptfs tokens have version 0x0004")]
    BadVersion(u16),
    #[error("auth token type {0}; expected 0 (passphrase) or 1 (private key)")]
    BadType(u16),
    #[error("passphrase token without a session-key encryption key (flags {flags:#x}, {bytes} key bytes)")]
    NoSkek { flags: u32, bytes: u32 },
    #[error("token signature field is not 16 hex characters and a NUL")]
    BadSigField,
    #[error("token signature {stored} does not match its key ({computed})")]
    SigMismatch { stored: Sig, computed: Sig },
    #[error("private-key token blob length {0} does not fit the payload")]
    BadBlobLength(usize),
    #[error("key module alias {0:?} is empty, longer than 16 bytes or not printable")]
    BadAlias(String),
    #[error("private-key token blob is {0} bytes; a keyring key holds at most {MAX_BLOB_BYTES}")]
    BlobTooLarge(usize),
}

/// A private-key token: which key module ("openssl") and its opaque blob (for the
/// openssl module: PEM path and PEM passphrase, see pubkey.rs).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyToken {
    sig: Sig,
    alias: String,
    blob: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PrivateKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKeyToken(sig {}, module {:?}, <{} blob bytes redacted>)",
            self.sig,
            self.alias,
            self.blob.len()
        )
    }
}

impl PrivateKeyToken {
    pub fn alias(&self) -> &str {
        &self.alias
    }
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// One eCryptfs keyring token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthToken {
    Passphrase { skek: Skek, salt: Salt },
    PrivateKey(PrivateKeyToken),
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthToken::Passphrase { salt, .. } => {
                write!(f, "AuthToken::Passphrase(sig {}, {salt:?})", self.sig())
            }
            AuthToken::PrivateKey(p) => write!(f, "AuthToken::{p:?}"),
        }
    }
}

impl AuthToken {
    /// The token `ecryptfs-add-passphrase` makes for this passphrase and salt.
    pub fn from_passphrase(passphrase: &Passphrase, salt: &Salt) -> Self {
        AuthToken::Passphrase {
            skek: derive_skek(passphrase, salt),
            salt: *salt,
        }
    }

    /// A private-key token for key module `alias` (e.g. "openssl").
    pub fn private_key(
        sig: Sig,
        alias: &str,
        blob: Zeroizing<Vec<u8>>,
    ) -> Result<Self, TokenError> {
        if alias.is_empty()
            || alias.len() > KEY_MOD_NAME_BYTES
            || !alias.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TokenError::BadAlias(alias.to_owned()));
        }
        if blob.len() > MAX_BLOB_BYTES {
            return Err(TokenError::BlobTooLarge(blob.len()));
        }
        Ok(AuthToken::PrivateKey(PrivateKeyToken {
            sig,
            alias: alias.to_owned(),
            blob,
        }))
    }

    /// The keyring description of the token.
    pub fn sig(&self) -> Sig {
        match self {
            AuthToken::Passphrase { skek, .. } => skek.sig(),
            AuthToken::PrivateKey(p) => p.sig,
        }
    }

    pub fn skek(&self) -> Option<&Skek> {
        match self {
            AuthToken::Passphrase { skek, .. } => Some(skek),
            AuthToken::PrivateKey(_) => None,
        }
    }

    /// The keyring payload.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let blob_len = match self {
            AuthToken::Passphrase { .. } => 0,
            AuthToken::PrivateKey(p) => p.blob.len(),
        };
        let mut b = Zeroizing::new(vec![0u8; TOKEN_SIZE + blob_len]);
        put_u16(&mut b, OFF_VERSION, VERSION);
        match self {
            AuthToken::Passphrase { skek, salt } => {
                put_u16(&mut b, OFF_TYPE, TYPE_PASSWORD);
                put_u32(&mut b, OFF_PW_HASH_ALGO, HASH_ALGO_SHA512);
                put_u32(&mut b, OFF_PW_SKEK_BYTES, SKEK_BYTES);
                put_u32(&mut b, OFF_PW_FLAGS, FLAG_SKEK_SET);
                b[OFF_PW_SKEK..OFF_PW_SKEK + 64].copy_from_slice(skek.as_bytes());
                b[OFF_PW_SIG..OFF_PW_SIG + 16].copy_from_slice(skek.sig().to_hex().as_bytes());
                b[OFF_PW_SALT..OFF_PW_SALT + 8].copy_from_slice(&salt.0);
            }
            AuthToken::PrivateKey(p) => {
                put_u16(&mut b, OFF_TYPE, TYPE_PRIVATE_KEY);
                put_u32(&mut b, OFF_PK_KEY_SIZE, KEY_MOD_NAME_BYTES as u32);
                // Bounded by MAX_BLOB_BYTES at construction.
                put_u32(&mut b, OFF_PK_DATA_LEN, p.blob.len() as u32);
                b[OFF_PK_SIG..OFF_PK_SIG + 16].copy_from_slice(p.sig.to_hex().as_bytes());
                b[OFF_PK_ALIAS..OFF_PK_ALIAS + p.alias.len()].copy_from_slice(p.alias.as_bytes());
                b[OFF_PK_DATA..OFF_PK_DATA + p.blob.len()].copy_from_slice(&p.blob);
            }
        }
        b
    }

    /// Parses and validates a keyring payload: version, type, the key-set flag and
    /// that the stored signature belongs to the stored key.
    pub fn from_bytes(b: &[u8]) -> Result<Self, TokenError> {
        if b.len() < TOKEN_SIZE {
            return Err(TokenError::TooShort(b.len()));
        }
        let version = get_u16(b, OFF_VERSION);
        if version != VERSION {
            return Err(TokenError::BadVersion(version));
        }
        match get_u16(b, OFF_TYPE) {
            TYPE_PASSWORD => {
                let flags = get_u32(b, OFF_PW_FLAGS);
                let bytes = get_u32(b, OFF_PW_SKEK_BYTES);
                if flags & FLAG_SKEK_SET == 0 || bytes != SKEK_BYTES {
                    return Err(TokenError::NoSkek { flags, bytes });
                }
                let mut k = Zeroizing::new([0u8; 64]);
                k.copy_from_slice(&b[OFF_PW_SKEK..OFF_PW_SKEK + 64]);
                let skek = Skek::from_bytes(*k);
                let stored = sig_field(&b[OFF_PW_SIG..OFF_PW_SIG + 17])?;
                if stored != skek.sig() {
                    return Err(TokenError::SigMismatch {
                        stored,
                        computed: skek.sig(),
                    });
                }
                let mut salt = [0u8; 8];
                salt.copy_from_slice(&b[OFF_PW_SALT..OFF_PW_SALT + 8]);
                Ok(AuthToken::Passphrase {
                    skek,
                    salt: Salt(salt),
                })
            }
            TYPE_PRIVATE_KEY => {
                let len = get_u32(b, OFF_PK_DATA_LEN) as usize;
                if len > MAX_BLOB_BYTES || OFF_PK_DATA + len > b.len() {
                    return Err(TokenError::BadBlobLength(len));
                }
                let sig = sig_field(&b[OFF_PK_SIG..OFF_PK_SIG + 17])?;
                let raw = &b[OFF_PK_ALIAS..OFF_PK_ALIAS + KEY_MOD_NAME_BYTES + 1];
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                let alias = String::from_utf8_lossy(&raw[..end]).into_owned();
                let blob = Zeroizing::new(b[OFF_PK_DATA..OFF_PK_DATA + len].to_vec());
                AuthToken::private_key(sig, &alias, blob)
            }
            other => Err(TokenError::BadType(other)),
        }
    }
}

/// 16 hex characters then a NUL.
fn sig_field(f: &[u8]) -> Result<Sig, TokenError> {
    if f[16] != 0 {
        return Err(TokenError::BadSigField);
    }
    let s = std::str::from_utf8(&f[..16]).map_err(|_| TokenError::BadSigField)?;
    s.parse().map_err(|_| TokenError::BadSigField)
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_ne_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::{DEFAULT_SALT, FNEK_SALT};
    use sha2::{Digest, Sha256};

    fn test123(salt: &Salt) -> AuthToken {
        AuthToken::from_passphrase(&Passphrase::new("test123").unwrap(), salt)
    }

    #[test]
    fn v3_token_bytes() {
        let t = test123(&DEFAULT_SALT);
        let b = t.to_bytes();
        assert_eq!(b.len(), 740);
        assert_eq!(
            hex::encode(Sha256::digest(&b[..])),
            "6d8162929de65fa480709c22acadd891f1ff8daaad2e096c93d47b5e872b1ff8"
        );
        // The dump lines of V3, independent of the hash.
        assert_eq!(&b[..2], &[0x04, 0x00]);
        assert!(b[2..632].iter().all(|&x| x == 0));
        assert_eq!(
            hex::encode(&b[0x2c4..0x2e0]),
            "ae60d3f6326139373431386564636130316562390000112233445566"
        );
        assert_eq!(t.sig().to_hex(), "2a97418edca01eb9");
    }

    #[test]
    fn round_trip_and_fnek_salt() {
        for salt in [DEFAULT_SALT, FNEK_SALT] {
            let t = test123(&salt);
            let back = AuthToken::from_bytes(&t.to_bytes()).unwrap();
            assert_eq!(back, t);
        }
        assert_eq!(test123(&FNEK_SALT).sig().to_hex(), "33a5d5e39463d53f");
    }

    #[test]
    fn rejects_bad_tokens() {
        let good = test123(&DEFAULT_SALT).to_bytes();
        assert_eq!(
            AuthToken::from_bytes(&good[..739]),
            Err(TokenError::TooShort(739))
        );
        let mut b = good.clone();
        b[0] = 3;
        assert_eq!(AuthToken::from_bytes(&b), Err(TokenError::BadVersion(3)));
        let mut b = good.clone();
        b[2] = 7;
        assert_eq!(AuthToken::from_bytes(&b), Err(TokenError::BadType(7)));
        let mut b = good.clone();
        b[OFF_PW_FLAGS] = 0;
        assert!(matches!(
            AuthToken::from_bytes(&b),
            Err(TokenError::NoSkek { .. })
        ));
        let mut b = good.clone();
        b[OFF_PW_SKEK] ^= 1;
        assert!(matches!(
            AuthToken::from_bytes(&b),
            Err(TokenError::SigMismatch { .. })
        ));
        let mut b = good.clone();
        b[OFF_PW_SIG + 16] = b'x';
        assert_eq!(AuthToken::from_bytes(&b), Err(TokenError::BadSigField));
    }

    #[test]
    fn private_key_layout() {
        let sig: Sig = "0123456789abcdef".parse().unwrap();
        let blob = Zeroizing::new(b"blob-bytes".to_vec());
        let t = AuthToken::private_key(sig, "openssl", blob).unwrap();
        let b = t.to_bytes();
        assert_eq!(b.len(), 740 + 10);
        assert_eq!(&b[..4], &[0x04, 0x00, 0x01, 0x00]);
        assert_eq!(&b[628..632], &16u32.to_le_bytes());
        assert_eq!(&b[632..636], &10u32.to_le_bytes());
        assert_eq!(&b[636..653], b"0123456789abcdef\0");
        assert_eq!(&b[653..661], b"openssl\0");
        assert_eq!(&b[670..680], b"blob-bytes");
        assert!(b[680..].iter().all(|&x| x == 0));
        assert_eq!(AuthToken::from_bytes(&b).unwrap(), t);
        let mut bad = b.clone();
        bad[632] = 200;
        assert_eq!(
            AuthToken::from_bytes(&bad),
            Err(TokenError::BadBlobLength(200))
        );
        assert!(AuthToken::private_key(sig, "", Zeroizing::new(vec![])).is_err());
        assert!(AuthToken::private_key(sig, "seventeen-bytes-x", Zeroizing::new(vec![])).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let t = test123(&DEFAULT_SALT);
        let d = format!("{t:?}");
        assert!(
            d.contains("2a97418edca01eb9") && !d.contains("648eecb6"),
            "{d}"
        );
    }
}
