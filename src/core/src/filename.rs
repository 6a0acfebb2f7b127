//! Filename (and symlink target) encryption: tag 70 packets, ECB under the FNEK,
//! written in the kernel's 64-character alphabet after `ECRYPTFS_FNEK_ENCRYPTED.`
//! (spec §5).

use std::fmt;

use md5::{Digest, Md5};

use crate::cipher::{cipher_for_code, CipherError, CipherSpec, KeyedCipher};
use crate::kdf::{Sig, Skek};
use crate::packet::{decode_len, encode_len};

pub const FNEK_PREFIX: &str = "ECRYPTFS_FNEK_ENCRYPTED.";
pub const TAG_70: u8 = 0x46;
/// Kernel alphabet, in ASCII order so encoded names sort like their packets.
const ALPHABET: &[u8; 64] = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Minimum prefix: 16 pseudo-random bytes and a NUL separator.
const MIN_PREFIX: usize = 17;
/// The kernel refuses decrypted names of PATH_MAX bytes or more.
const PATH_MAX: usize = 4096;
/// Longest prefix: 16 + (block - 1) padding bytes, plus the separator.
const MAX_PREFIX: usize = MIN_PREFIX + 15;

/// Why a lower name could not be turned into a plaintext name.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum NameError {
    /// No `ECRYPTFS_FNEK_ENCRYPTED.` prefix: a plain name (e.g. `lost+found`).
    #[error("not an encrypted name")]
    NotEncrypted,
    #[error("corrupt encrypted name: {0}")]
    Corrupt(&'static str),
    /// A well-formed name for another FNEK (or another FNEK cipher setting).
    #[error("name is encrypted with filename key {sig}, which is not the one in use")]
    WrongKey { sig: Sig },
    #[error("an empty name cannot be encrypted")]
    Empty,
    #[error("a {0}-byte name is too long to encrypt")]
    TooLong(usize),
    #[error("filename cipher: {0}")]
    Cipher(#[from] CipherError),
}

/// The mount's filename key: FNEK token SKEK, its sig, cipher and key size.
pub struct FilenameKey {
    sig: Sig,
    skek: Skek,
    cipher: KeyedCipher,
    /// The deterministic "random" prefix stream (spec §5.2), long enough for any block.
    prefix: [u8; MAX_PREFIX - 1],
}

impl fmt::Debug for FilenameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.cipher.spec();
        write!(f, "FilenameKey({}, {}-{})", self.sig, s.cipher, s.key_bytes)
    }
}

/// `h = MD5(SKEK)`, then bytes `h[j % 16]` with `h = MD5(h)` after every 16, NUL -> 0x42.
fn prefix_stream(skek: &Skek) -> [u8; MAX_PREFIX - 1] {
    let mut out = [0u8; MAX_PREFIX - 1];
    let mut h: [u8; 16] = Md5::digest(skek.as_bytes()).into();
    for (j, b) in out.iter_mut().enumerate() {
        *b = if h[j % 16] == 0 { 0x42 } else { h[j % 16] };
        if j % 16 == 15 {
            h = Md5::digest(h).into();
        }
    }
    out
}

/// Prefix length (including the separator) for a name of `len` bytes.
fn prefix_len(len: usize, block: usize) -> usize {
    let r = MIN_PREFIX;
    r + (block - (r + len) % block) % block
}

impl FilenameKey {
    /// `spec` is `ecryptfs_fn_cipher` / `ecryptfs_fn_key_bytes`.
    pub fn new(skek: Skek, spec: CipherSpec) -> Result<Self, NameError> {
        let key = skek
            .as_bytes()
            .get(..spec.key_bytes)
            .ok_or(CipherError::KeyLength {
                expected: spec.key_bytes,
                got: 64,
            })?;
        let cipher = KeyedCipher::new(spec, key)?;
        Ok(FilenameKey {
            sig: skek.sig(),
            prefix: prefix_stream(&skek),
            skek,
            cipher,
        })
    }

    pub fn sig(&self) -> Sig {
        self.sig
    }

    pub fn spec(&self) -> CipherSpec {
        self.cipher.spec()
    }

    /// The full lower name (prefix included) for `plain`.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, NameError> {
        if plain.is_empty() {
            return Err(NameError::Empty);
        }
        if plain.len() >= PATH_MAX {
            return Err(NameError::TooLong(plain.len()));
        }
        let r = prefix_len(plain.len(), self.cipher.block_size());
        let mut data = Vec::with_capacity(r + plain.len());
        data.extend_from_slice(&self.prefix[..r - 1]);
        data.push(0);
        data.extend_from_slice(plain);
        self.cipher.ecb_encrypt(&mut data)?;
        let mut packet = Vec::with_capacity(data.len() + 12);
        packet.push(TAG_70);
        encode_len(9 + data.len(), &mut packet).map_err(|_| NameError::TooLong(plain.len()))?;
        packet.extend_from_slice(&self.sig.0);
        packet.push(self.cipher.spec().code());
        packet.extend_from_slice(&data);
        let mut name = FNEK_PREFIX.as_bytes().to_vec();
        name.extend_from_slice(encode(&packet).as_bytes());
        Ok(name)
    }

    /// The plaintext of a lower name (`ecryptfs_decode_and_decrypt_filename`).
    pub fn decrypt(&self, lower: &[u8]) -> Result<Vec<u8>, NameError> {
        let encoded = match lower.strip_prefix(FNEK_PREFIX.as_bytes()) {
            Some(rest) if !rest.is_empty() => rest,
            _ => return Err(NameError::NotEncrypted),
        };
        let packet = decode(encoded);
        if packet.first() != Some(&TAG_70) {
            return Err(NameError::Corrupt("not a tag 70 packet"));
        }
        let (body_len, used) =
            decode_len(&packet[1..]).map_err(|_| NameError::Corrupt("bad packet length"))?;
        let body = packet
            .get(1 + used..1 + used + body_len)
            .ok_or(NameError::Corrupt("packet longer than the name"))?;
        if body.len() < 9 {
            return Err(NameError::Corrupt("packet too short"));
        }
        let sig = Sig(body[..8].try_into().unwrap_or_default());
        if sig != self.sig {
            return Err(NameError::WrongKey { sig });
        }
        let cipher = cipher_for_code(body[8]).map_err(|_| NameError::Corrupt("unknown cipher"))?;
        // The packet names the cipher; the key size is the mount's (spec §10.6).
        let other;
        let keyed = if cipher == self.cipher.spec().cipher {
            &self.cipher
        } else {
            let key_bytes = self.cipher.spec().key_bytes;
            let spec =
                CipherSpec::new(cipher, key_bytes).map_err(|_| NameError::WrongKey { sig })?;
            other = KeyedCipher::new(spec, &self.skek.as_bytes()[..key_bytes])?;
            &other
        };
        let mut data = body[9..].to_vec();
        if data.is_empty() || !data.len().is_multiple_of(keyed.block_size()) {
            return Err(NameError::Corrupt("ciphertext is not whole blocks"));
        }
        keyed.ecb_decrypt(&mut data)?;
        let sep = data
            .iter()
            .position(|&b| b == 0)
            .ok_or(NameError::Corrupt("no separator after the prefix"))?;
        let name = data.split_off(sep + 1);
        if name.is_empty() || name.len() >= PATH_MAX {
            return Err(NameError::Corrupt("empty name"));
        }
        Ok(name)
    }

    /// Longest plaintext whose lower name fits in `lower_name_max` bytes
    /// (143 for NAME_MAX 255, spec §5.5).
    pub fn max_plain_len(&self, lower_name_max: usize) -> usize {
        let b = self.cipher.block_size();
        (0..PATH_MAX)
            .take_while(|&l| encoded_name_len(l + 1, b) <= lower_name_max)
            .last()
            .map_or(0, |l| l + 1)
    }
}

/// Lower name length for a plaintext of `len` bytes and cipher block `block`.
pub fn encoded_name_len(len: usize, block: usize) -> usize {
    let body = 9 + prefix_len(len, block) + len;
    let packet = 1 + if body < 192 { 1 } else { 2 } + body;
    FNEK_PREFIX.len() + 4 * packet.div_ceil(3)
}

/// Kernel `ecryptfs_encode_for_filename`: base64 bit order with the kernel alphabet,
/// a short last group padded with zero bytes (no `=`).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut g = [0u8; 3];
        g[..chunk.len()].copy_from_slice(chunk);
        let idx = [
            g[0] >> 2,
            ((g[0] & 0x03) << 4) | (g[1] >> 4),
            ((g[1] & 0x0f) << 2) | (g[2] >> 6),
            g[2] & 0x3f,
        ];
        out.extend(idx.iter().map(|&i| ALPHABET[i as usize] as char));
    }
    out
}

/// `ALPHABET` inverted; 0 for bytes outside it (as the kernel's table). Listing a
/// directory decodes every name: a table lookup instead of a search per character.
const DECODE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Kernel `ecryptfs_decode_from_filename`: unknown characters count as 0; emits
/// every completed byte (`floor(6n/8)`).
pub fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = u32::from(DECODE[c as usize]);
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::Cipher;
    use crate::kdf::{derive_skek, Passphrase, DEFAULT_SALT, FNEK_SALT};

    fn key(pass: &str, salt: &crate::kdf::Salt, c: Cipher, n: usize) -> FilenameKey {
        let skek = derive_skek(&Passphrase::new(pass).unwrap(), salt);
        FilenameKey::new(skek, CipherSpec::new(c, n).unwrap()).unwrap()
    }

    /// Spec §5.4 worked example, step by step.
    #[test]
    fn spec_5_4_worked_example() {
        let k = key("Test", &DEFAULT_SALT, Cipher::Aes, 16);
        assert_eq!(
            hex::encode(&k.prefix[..16]),
            "327329844f262b695a83a5d04109e381"
        );
        assert_eq!(hex::encode(&k.prefix[16..23]), "51fb13664296b4");
        assert_eq!(prefix_len(8, 16), 24);
        let name = k.encrypt(b"TestFile").unwrap();
        let want =
            "ECRYPTFS_FNEK_ENCRYPTED.FWYp3QmdieuVx-ReNM93cFJhZmQKb9S.7xyoDzbVOSbBh3ttRUURq5F-zE--";
        assert_eq!(String::from_utf8(name.clone()).unwrap(), want);
        let packet = decode(&name[24..]);
        assert_eq!(
            hex::encode(&packet[..43]),
            "46293515cca9baaea1f407\
             6a6582c5a1156d9727169cb78127dfb43ff9e169e9cdb45e7976081dd87440fd"
        );
        assert_eq!(k.decrypt(want.as_bytes()).unwrap(), b"TestFile");
    }

    /// Spec §9 V12: kernel-made names of "TestFile" for 8 cipher/key sizes.
    #[test]
    fn spec_v12_kernel_names() {
        let cases = [
            (
                Cipher::Aes,
                16,
                "FWYp3QmdieuVx-ReNM93cFJhZmQKb9S.7xyoDzbVOSbBh3ttRUURq5F-zE--",
            ),
            (
                Cipher::Aes,
                24,
                "FWYp3QmdieuVx-UP0Bp5ZhSV8z0l0qmRIVPgjmpEsGWRgxIcl0sTzLZcs---",
            ),
            (
                Cipher::Aes,
                32,
                "FWYp3QmdieuVx-aK6fArd1FkXCt3ijqL6Arsiu3IFxKKhksWZXxt2HR.i---",
            ),
            (
                Cipher::Blowfish,
                16,
                "FWYp3QmdieuVx-Fi4vCFunEkpmguVPgTV8O7OCI7gcIM0RzNtZOMT.ad8k--",
            ),
            (
                Cipher::Blowfish,
                32,
                "FWYp3QmdieuVx-Gcj-1XYP8.88HiL.Iqo1dD0FdJ43mOKINZrz4jr23Alk--",
            ),
            (
                Cipher::Blowfish,
                56,
                "FWYp3QmdieuVx-ENJPazcrf3HQ7pWVxijnxeY.TJuf5cmIawdVooB35qhU--",
            ),
            (
                Cipher::Des3Ede,
                24,
                "FWYp3QmdieuVx-7SUzZ0hbmbz5nk3WMwv4ZjYta1MzcS0Zfdls0zMhkKmk--",
            ),
            (
                Cipher::Cast5,
                16,
                "FWYp3QmdieuVx-CmuNOpVG2GsCd8MdmEh7ndp5ixhBAtzsKYxq46G0BYH---",
            ),
        ];
        let skek = derive_skek(&Passphrase::new("Test").unwrap(), &DEFAULT_SALT);
        for (c, n, enc) in cases {
            let k = FilenameKey::new(skek.clone(), CipherSpec::new(c, n).unwrap()).unwrap();
            let lower = format!("{FNEK_PREFIX}{enc}");
            assert_eq!(k.decrypt(lower.as_bytes()).unwrap(), b"TestFile", "{c}-{n}");
            assert_eq!(k.encrypt(b"TestFile").unwrap(), lower.as_bytes(), "{c}-{n}");
        }
    }

    /// Spec §9 V11: iqb/ecryptfs names, FNEK of "test" with the ASCII FNEK salt.
    #[test]
    fn spec_v11_iqb_names() {
        let k = key("test", &FNEK_SALT, Cipher::Aes, 32);
        assert_eq!(k.sig().to_hex(), "be877764c5918621");
        let a =
            "ECRYPTFS_FNEK_ENCRYPTED.FWayVrRYlN446EY.WUc7GBFqG9GB6qF3eRmJwLxTOkMu8UtE6MkSWHGsZE--";
        let b =
            "ECRYPTFS_FNEK_ENCRYPTED.FWayVrRYlN446EY.WUc7GBFqG9GB6qF3eRmJZ7NYS7ANeS4Gfi9c34ZDTU--";
        assert_eq!(k.decrypt(a.as_bytes()).unwrap(), b"test");
        assert_eq!(k.decrypt(b.as_bytes()).unwrap(), b"loremipsum.txt");
        assert_eq!(k.encrypt(b"test").unwrap(), a.as_bytes());
    }

    #[test]
    fn error_kinds() {
        let k = key("Test", &DEFAULT_SALT, Cipher::Aes, 16);
        let other = key("Test", &FNEK_SALT, Cipher::Aes, 16);
        assert_eq!(k.decrypt(b"lost+found"), Err(NameError::NotEncrypted));
        assert_eq!(
            k.decrypt(FNEK_PREFIX.as_bytes()),
            Err(NameError::NotEncrypted)
        );
        let theirs = other.encrypt(b"x").unwrap();
        assert_eq!(
            k.decrypt(&theirs),
            Err(NameError::WrongKey { sig: other.sig() })
        );
        let mut cut = k.encrypt(b"hello").unwrap();
        cut.truncate(40);
        assert!(matches!(k.decrypt(&cut), Err(NameError::Corrupt(_))));
        assert!(matches!(
            k.decrypt(b"ECRYPTFS_FNEK_ENCRYPTED.zzzz"),
            Err(NameError::Corrupt(_))
        ));
        assert_eq!(k.encrypt(b""), Err(NameError::Empty));
    }

    /// Spec §5.5: 143 bytes is the longest name for NAME_MAX 255, for both block sizes.
    #[test]
    fn spec_5_5_limits() {
        assert_eq!(encoded_name_len(143, 16), 252);
        assert_eq!(encoded_name_len(144, 16), 276);
        assert_eq!(encoded_name_len(144, 8), 264);
        assert_eq!(
            key("Test", &DEFAULT_SALT, Cipher::Aes, 16).max_plain_len(255),
            143
        );
        assert_eq!(
            key("Test", &DEFAULT_SALT, Cipher::Blowfish, 16).max_plain_len(255),
            143
        );
    }

    #[test]
    fn codec_shapes() {
        assert_eq!(encode(&[0xff]), "zk--");
        assert_eq!(decode(b"zk--"), vec![0xff, 0x00, 0x00]);
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(b"z"), Vec::<u8>::new());
    }
}
