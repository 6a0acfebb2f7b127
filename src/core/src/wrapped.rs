//! Wrapped-passphrase files (`~/.ecryptfs/wrapped-passphrase`, spec §7): the mount
//! passphrase encrypted with AES-128-ECB under a key derived from a wrapping (login)
//! passphrase. Version 2 is read and written; legacy version 1 is read.

use std::io;
use std::path::Path;

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use zeroize::Zeroizing;

use crate::kdf::{derive_skek, Passphrase, Salt, Sig, MAX_PASSPHRASE_BYTES};

const BLOCK: usize = 16;
const V2_HEADER: usize = 26;
const V1_HEADER: usize = 16;

/// Errors of wrapped-passphrase files. The caller names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WrappedError {
    /// The file is well formed but was wrapped with another passphrase (the key
    /// signature stored in the file does not match).
    #[error("wrong wrapping passphrase")]
    WrongPassphrase,
    #[error("not a valid wrapped-passphrase file: {0}")]
    Corrupt(&'static str),
    #[error("wrapped-passphrase file version {0} is not supported (only 1 and 2)")]
    UnsupportedVersion(u8),
    #[error("cannot read the wrapped-passphrase file: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write the wrapped-passphrase file: {0}")]
    Write(#[source] io::Error),
    #[error("cannot get random bytes for the salt: {0}")]
    Random(getrandom::Error),
}

/// Format version of a wrapped-passphrase file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `sig(16 hex) || ciphertext`; the salt comes from `~/.ecryptfsrc` or the default.
    V1,
    /// `':' 0x02 || salt(8) || sig(16 hex) || ciphertext`.
    V2,
}

/// A parsed wrapped-passphrase file.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedPassphrase {
    version: Version,
    /// Stored salt (v2 only).
    salt: Option<Salt>,
    wrapping_sig: Sig,
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedPassphrase")
            .field("version", &self.version)
            .field("salt", &self.salt)
            .field("wrapping_sig", &self.wrapping_sig)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

fn cipher_for(wrapping: &Passphrase, salt: &Salt) -> (Aes128, Sig) {
    let skek = derive_skek(wrapping, salt);
    let key = GenericArray::from_slice(&skek.as_bytes()[..16]);
    (Aes128::new(key), skek.sig())
}

impl WrappedPassphrase {
    /// Wraps `secret` in a version 2 file with a fresh random salt.
    pub fn wrap(secret: &Passphrase, wrapping: &Passphrase) -> Result<Self, WrappedError> {
        let mut salt = [0u8; 8];
        getrandom::getrandom(&mut salt).map_err(WrappedError::Random)?;
        Ok(Self::wrap_with_salt(secret, wrapping, Salt(salt)))
    }

    /// Wraps with a given salt (deterministic; for tests and vectors).
    pub fn wrap_with_salt(secret: &Passphrase, wrapping: &Passphrase, salt: Salt) -> Self {
        let (aes, wrapping_sig) = cipher_for(wrapping, &salt);
        // Zero-padded to whole blocks; a 16/32/48/64-byte secret gets no extra block.
        let padded = secret.as_bytes().len().div_ceil(BLOCK) * BLOCK;
        let mut buf = Zeroizing::new(vec![0u8; padded]);
        buf[..secret.as_bytes().len()].copy_from_slice(secret.as_bytes());
        for block in buf.chunks_exact_mut(BLOCK) {
            aes.encrypt_block(GenericArray::from_mut_slice(block));
        }
        WrappedPassphrase {
            version: Version::V2,
            salt: Some(salt),
            wrapping_sig,
            ciphertext: buf.to_vec(),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Signature of the wrapping key stored in the file.
    pub fn wrapping_sig(&self) -> Sig {
        self.wrapping_sig
    }

    /// Parses a file's bytes (spec §7.3 version detection).
    pub fn parse(b: &[u8]) -> Result<Self, WrappedError> {
        let (version, salt, rest) = match b.first() {
            Some(b':') => {
                let v = *b
                    .get(1)
                    .ok_or(WrappedError::Corrupt("truncated after the version marker"))?;
                if v != 2 {
                    return Err(WrappedError::UnsupportedVersion(v));
                }
                if b.len() < V2_HEADER {
                    return Err(WrappedError::Corrupt("truncated header"));
                }
                let mut s = [0u8; 8];
                s.copy_from_slice(&b[2..10]);
                (Version::V2, Some(Salt(s)), &b[10..])
            }
            Some(_) => (Version::V1, None, b),
            None => return Err(WrappedError::Corrupt("empty file")),
        };
        if rest.len() < V1_HEADER || !rest[..16].iter().all(u8::is_ascii_hexdigit) {
            return Err(WrappedError::Corrupt("no key signature"));
        }
        // Hex digits are ASCII, so this is valid UTF-8 and 16 characters long.
        let wrapping_sig: Sig = std::str::from_utf8(&rest[..16])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(WrappedError::Corrupt("no key signature"))?;
        let ciphertext = &rest[16..];
        if ciphertext.is_empty()
            || ciphertext.len() % BLOCK != 0
            || ciphertext.len() > MAX_PASSPHRASE_BYTES
        {
            return Err(WrappedError::Corrupt(
                "encrypted passphrase is not 16, 32, 48 or 64 bytes",
            ));
        }
        Ok(WrappedPassphrase {
            version,
            salt,
            wrapping_sig,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Self, WrappedError> {
        let b = std::fs::read(path).map_err(WrappedError::Read)?;
        Self::parse(&b)
    }

    /// The file bytes (version 1 files are written back as read).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(V2_HEADER + self.ciphertext.len());
        if let (Version::V2, Some(salt)) = (self.version, self.salt) {
            out.extend_from_slice(&[b':', 2]);
            out.extend_from_slice(&salt.0);
        }
        out.extend_from_slice(self.wrapping_sig.to_hex().as_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Recovers the wrapped passphrase. `v1_salt` is used for version 1 files only
    /// (the `~/.ecryptfsrc` salt or the default, as the tools do).
    pub fn unwrap(
        &self,
        wrapping: &Passphrase,
        v1_salt: &Salt,
    ) -> Result<Passphrase, WrappedError> {
        let salt = self.salt.unwrap_or(*v1_salt);
        let (aes, sig) = cipher_for(wrapping, &salt);
        if sig != self.wrapping_sig {
            return Err(WrappedError::WrongPassphrase);
        }
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        for block in buf.chunks_exact_mut(BLOCK) {
            aes.decrypt_block(GenericArray::from_mut_slice(block));
        }
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        Passphrase::new(&buf[..end])
            .map_err(|_| WrappedError::Corrupt("decrypted passphrase is empty"))
    }

    /// Writes the file atomically: a temporary file in the same directory (mode 0600
    /// from creation), fsync, rename over `path`, fsync of the directory. Either the
    /// old or the new file is there after a crash, never a torn one.
    pub fn write(&self, path: &Path) -> Result<(), WrappedError> {
        crate::atomic::write_atomic(path, &self.to_bytes()).map_err(WrappedError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::DEFAULT_SALT;
    use std::os::unix::fs::PermissionsExt;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).unwrap()
    }

    /// Spec V5: written by ecryptfs-wrap-passphrase (mysecretpassphrase / loginpw).
    const V5: &str = "3a027e377e9febc2b40537386332663530663661376265346534\
                      a9351094c8415d3038c85bb433677418fbf559c31e1f4d385a9aa647454c7246";
    /// Spec V6: version 1, accepted by ecryptfs-unwrap-passphrase.
    const V6: &str = "62616235616533306538303838373763\
                      62bebb597d0959842da0f0c4aa319fad48ae387f7d2cd6e3ea1d508dd746990d";

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    #[test]
    fn v5_real_tool_v2_file() {
        let bytes = unhex(V5);
        assert_eq!(bytes.len(), 58);
        let w = WrappedPassphrase::parse(&bytes).unwrap();
        assert_eq!(w.version(), Version::V2);
        assert_eq!(w.wrapping_sig().to_hex(), "78c2f50f6a7be4e4");
        assert_eq!(
            w.unwrap(&pass("loginpw"), &DEFAULT_SALT)
                .unwrap()
                .as_bytes(),
            b"mysecretpassphrase"
        );
        assert!(matches!(
            w.unwrap(&pass("wrongpw"), &DEFAULT_SALT),
            Err(WrappedError::WrongPassphrase)
        ));
        // Re-wrapping with the file's salt reproduces the tool's bytes exactly.
        let salt = Salt(bytes[2..10].try_into().unwrap());
        let again =
            WrappedPassphrase::wrap_with_salt(&pass("mysecretpassphrase"), &pass("loginpw"), salt);
        assert_eq!(again.to_bytes(), bytes);
    }

    #[test]
    fn v6_v1_file() {
        let bytes = unhex(V6);
        let w = WrappedPassphrase::parse(&bytes).unwrap();
        assert_eq!(w.version(), Version::V1);
        assert_eq!(w.wrapping_sig().to_hex(), "bab5ae30e808877c");
        assert_eq!(
            w.unwrap(&pass("loginpw"), &DEFAULT_SALT)
                .unwrap()
                .as_bytes(),
            b"mysecretpassphrase"
        );
        let other: Salt = "0102030405060708".parse().unwrap();
        assert!(matches!(
            w.unwrap(&pass("loginpw"), &other),
            Err(WrappedError::WrongPassphrase)
        ));
        assert_eq!(w.to_bytes(), bytes);
    }

    #[test]
    fn corrupt_files_are_not_wrong_passphrases() {
        let good = unhex(V5);
        for (bytes, what) in [
            (vec![], "empty"),
            (good[..20].to_vec(), "truncated"),
            (good[..26].to_vec(), "no ciphertext"),
            (good[..50].to_vec(), "partial block"),
            ([&good[..], &[0u8; 48][..]].concat(), "too long"),
            (b"zzzzzzzzzzzzzzzz0123456789abcdef".to_vec(), "not hex"),
        ] {
            assert!(
                matches!(
                    WrappedPassphrase::parse(&bytes),
                    Err(WrappedError::Corrupt(_))
                ),
                "{what}"
            );
        }
        let mut v3 = good.clone();
        v3[1] = 3;
        assert!(matches!(
            WrappedPassphrase::parse(&v3),
            Err(WrappedError::UnsupportedVersion(3))
        ));
    }

    #[test]
    fn lengths_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wrapped-passphrase");
        for (len, size) in [(1, 42), (16, 42), (17, 58), (48, 74), (64, 90)] {
            let secret = pass(&"s".repeat(len));
            let w = WrappedPassphrase::wrap(&secret, &pass("pw")).unwrap();
            w.write(&path).unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.len(), meta.permissions().mode() & 0o777),
                (size, 0o600)
            );
            let back = WrappedPassphrase::read(&path).unwrap();
            assert_eq!(back.unwrap(&pass("pw"), &DEFAULT_SALT).unwrap(), secret);
        }
        // Only the final file remains: no temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let a = WrappedPassphrase::wrap(&pass("x"), &pass("pw")).unwrap();
        let b = WrappedPassphrase::wrap(&pass("x"), &pass("pw")).unwrap();
        assert_ne!(
            a.to_bytes()[2..10],
            b.to_bytes()[2..10],
            "salt must be random"
        );
    }
}
