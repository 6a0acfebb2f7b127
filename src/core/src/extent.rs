//! File contents: 4096-byte extents, each CBC-encrypted under the FEK with its own
//! MD5-derived IV (spec §4.2, §4.3).

use std::fmt;

use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::cipher::{Cipher, CipherError, CipherSpec, KeyedCipher};

/// Data extent size, fixed by the kernel whatever the header says.
pub const EXTENT_SIZE: usize = 4096;
/// Longest FEK the kernel handles (ECRYPTFS_MAX_KEY_BYTES).
pub const MAX_KEY_BYTES: usize = 64;

/// Errors making a file key.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ExtentError {
    #[error(transparent)]
    Cipher(#[from] CipherError),
    #[error("des3_ede key is weak (two equal DES sub-keys); the kernel refuses it")]
    WeakKey,
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// A file's FEK with everything derived from it: cipher, root IV and the key
/// schedule (computed once; this is the FUSE hot path). Wiped on drop.
pub struct FileKey {
    spec: CipherSpec,
    fek: Zeroizing<Vec<u8>>,
    root_iv: Zeroizing<[u8; 16]>,
    cipher: KeyedCipher,
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileKey({}-{}, <key redacted>)",
            self.spec.cipher, self.spec.key_bytes
        )
    }
}

/// The kernel sets CRYPTO_TFM_REQ_FORBID_WEAK_KEYS: des3_ede then rejects keys whose
/// first and second, or second and third, DES keys are equal (`des3_ede_verify_key`).
fn is_weak(spec: CipherSpec, fek: &[u8]) -> bool {
    spec.cipher == Cipher::Des3Ede
        && fek.len() == 24
        && (fek[0..8] == fek[8..16] || fek[8..16] == fek[16..24])
}

impl FileKey {
    /// A fresh random FEK, as the kernel makes one for every new file.
    pub fn generate(spec: CipherSpec) -> Result<FileKey, ExtentError> {
        let mut fek = Zeroizing::new(vec![0u8; spec.key_bytes]);
        loop {
            getrandom::getrandom(&mut fek).map_err(|e| ExtentError::Random(e.to_string()))?;
            if !is_weak(spec, &fek) {
                return Self::from_fek(spec, &fek);
            }
        }
    }

    /// Rebuilds the key of an existing file (after unwrapping it).
    pub fn from_fek(spec: CipherSpec, fek: &[u8]) -> Result<FileKey, ExtentError> {
        if is_weak(spec, fek) {
            return Err(ExtentError::WeakKey);
        }
        let cipher = KeyedCipher::new(spec, fek)?;
        let mut root_iv = Zeroizing::new([0u8; 16]);
        root_iv.copy_from_slice(&Md5::digest(fek));
        Ok(FileKey {
            spec,
            fek: Zeroizing::new(fek.to_vec()),
            root_iv,
            cipher,
        })
    }

    pub fn spec(&self) -> CipherSpec {
        self.spec
    }

    pub fn fek(&self) -> &[u8] {
        &self.fek
    }

    /// MD5 of the FEK.
    pub fn root_iv(&self) -> [u8; 16] {
        *self.root_iv
    }

    /// IV of extent `index`: MD5(root IV || decimal index NUL-padded to 16 bytes).
    /// The kernel formats with `snprintf(.., 16, "%lld")`, so at most 15 digits.
    pub fn extent_iv(&self, index: u64) -> [u8; 16] {
        let mut src = [0u8; 32];
        src[..16].copy_from_slice(&*self.root_iv);
        // Decimal digits without allocating (this runs once per extent).
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut v = index;
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let n = (digits.len() - at).min(15);
        src[16..16 + n].copy_from_slice(&digits[at..at + n]);
        Md5::digest(src).into()
    }

    /// Encrypts one plaintext extent in place.
    ///
    /// # Panics
    /// If `data.len() != EXTENT_SIZE` (a caller bug, never a property of file data).
    pub fn encrypt_extent(&self, index: u64, data: &mut [u8]) {
        assert_eq!(data.len(), EXTENT_SIZE, "extents are 4096 bytes");
        // Cannot fail: 4096 is a multiple of every block size.
        let _ = self.cipher.cbc_encrypt(&self.extent_iv(index), data);
    }

    /// Encrypts consecutive extents `first, first + 1, ...` in place, interleaving
    /// their CBC chains (several times faster than one extent at a time).
    ///
    /// # Panics
    /// If `data.len()` is not a multiple of `EXTENT_SIZE`.
    pub fn encrypt_extents(&self, first: u64, data: &mut [u8]) {
        assert!(data.len().is_multiple_of(EXTENT_SIZE), "whole extents only");
        let n = (data.len() / EXTENT_SIZE) as u64;
        let ivs: Vec<[u8; 16]> = (first..first + n).map(|i| self.extent_iv(i)).collect();
        let _ = self.cipher.cbc_encrypt_many(&ivs, data);
    }

    /// Decrypts consecutive extents `first, first + 1, ...` in place.
    ///
    /// # Panics
    /// If `data.len()` is not a multiple of `EXTENT_SIZE`.
    pub fn decrypt_extents(&self, first: u64, data: &mut [u8]) {
        assert!(data.len().is_multiple_of(EXTENT_SIZE), "whole extents only");
        for (i, ext) in data.chunks_mut(EXTENT_SIZE).enumerate() {
            self.decrypt_extent(first + i as u64, ext);
        }
    }

    /// Decrypts one lower extent in place (the CBC decryption runs the cipher's
    /// parallel block backend, e.g. 8 AES-NI blocks at a time).
    ///
    /// # Panics
    /// If `data.len() != EXTENT_SIZE`.
    pub fn decrypt_extent(&self, index: u64, data: &mut [u8]) {
        assert_eq!(data.len(), EXTENT_SIZE, "extents are 4096 bytes");
        let _ = self.cipher.cbc_decrypt(&self.extent_iv(index), data);
    }
}

/// Lower offset of extent `index` (spec §4.2).
pub fn extent_offset(data_offset: u64, index: u64) -> u64 {
    data_offset + index * EXTENT_SIZE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_example_key() -> FileKey {
        let fek = hex::decode("d8c8dcec9c511399fb6acb32f28d89e2").unwrap();
        FileKey::from_fek(CipherSpec::new(Cipher::Aes, 16).unwrap(), &fek).unwrap()
    }

    /// Spec §4.3 worked example (kernel-made aes-16.raw).
    #[test]
    fn spec_4_3_ivs() {
        let k = spec_example_key();
        assert_eq!(hex::encode(k.root_iv()), "dc7ad27937b255fc59c959d3162ea07c");
        assert_eq!(
            hex::encode(k.extent_iv(0)),
            "8f4f3411dacaa96027fc8662abd77f1c"
        );
        assert_eq!(
            hex::encode(k.extent_iv(1)),
            "3f0395fee13a45dfa4648efd325e1950"
        );
        assert_eq!(
            hex::encode(k.extent_iv(10)),
            "71777bcc41b994ea14b14ed3de8d0682"
        );
    }

    /// Spec §4.3: extent 0 of aes-16.raw begins 38bb59b82fa4464d and holds
    /// "Hello World\n" followed by zeros. Encrypting that plaintext must give it.
    #[test]
    fn spec_4_3_extent() {
        let k = spec_example_key();
        let mut ext = vec![0u8; EXTENT_SIZE];
        ext[..12].copy_from_slice(b"Hello World\n");
        let plain = ext.clone();
        k.encrypt_extent(0, &mut ext);
        assert_eq!(hex::encode(&ext[..8]), "38bb59b82fa4464d");
        k.decrypt_extent(0, &mut ext);
        assert_eq!(ext, plain);
    }

    #[test]
    fn weak_des3_is_refused() {
        let spec = CipherSpec::new(Cipher::Des3Ede, 24).unwrap();
        let mut k = [7u8; 24];
        assert_eq!(
            FileKey::from_fek(spec, &k).unwrap_err(),
            ExtentError::WeakKey
        );
        k[16..].fill(1);
        k[..8].fill(2);
        assert!(FileKey::from_fek(spec, &k).is_ok());
        assert!(FileKey::generate(spec).is_ok());
    }

    #[test]
    fn key_is_send_sync_and_hidden() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FileKey>();
        let k = spec_example_key();
        assert!(!format!("{k:?}").contains("d8c8"));
    }

    #[test]
    fn long_indices_use_15_digits() {
        let k = spec_example_key();
        assert_eq!(
            k.extent_iv(1_234_567_890_123_456),
            k.extent_iv(123_456_789_012_345)
        );
    }
}
