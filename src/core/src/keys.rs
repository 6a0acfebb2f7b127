//! FEK wrapping glue: turns a [`FileKey`] into key packets and back, with keys from
//! any source (kernel keyring, in-memory set, RSA key) (spec §2.3, §2.5, §2.6).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::cipher::{ecb_decrypt, ecb_encrypt, Cipher, CipherError, CipherSpec};
use crate::extent::{ExtentError, FileKey, MAX_KEY_BYTES};
use crate::kdf::{Salt, Sig, Skek};
use crate::packet::KeyPacket;

/// Errors wrapping or unwrapping a file key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("no key available for signature(s) {}", sig_list(.sigs))]
    NoKey { sigs: Vec<Sig> },
    #[error("the key(s) {} did not decrypt the file key", sig_list(.sigs))]
    WrongKey { sigs: Vec<Sig> },
    #[error("wrapped file key: {0}")]
    Cipher(#[from] CipherError),
    #[error("file key: {0}")]
    Extent(#[from] ExtentError),
    #[error("malformed wrapped file key: {0}")]
    BadPayload(&'static str),
    #[error("no wrapping key given for the new file")]
    NoWrappingKey,
    /// Failures of a public-key implementation (RSA), as its own message.
    #[error("public key {sig}: {reason}")]
    PublicKey { sig: Sig, reason: String },
}

fn sig_list(sigs: &[Sig]) -> String {
    let v: Vec<String> = sigs.iter().map(Sig::to_hex).collect();
    v.join(", ")
}

/// Where the keys come from (the kernel keyring, an in-memory set, a PEM key...).
pub trait KeyLookup {
    /// The SKEK of the passphrase token `sig`.
    fn skek(&self, sig: &Sig) -> Option<Skek>;
    /// Decrypts a tag 1 EFEK into the tag 65 payload (`cipher_code || FEK ||
    /// checksum`); `None` if this source has no private key `sig`.
    fn pk_decrypt(&self, _sig: &Sig, _efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        None
    }
}

impl<T: KeyLookup + ?Sized> KeyLookup for &T {
    fn skek(&self, sig: &Sig) -> Option<Skek> {
        (**self).skek(sig)
    }
    fn pk_decrypt(&self, sig: &Sig, efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        (**self).pk_decrypt(sig, efek)
    }
}

/// Public-key wrapping (implemented by pubkey.rs with RSA-OAEP).
pub trait PublicKeyWrap: Send + Sync + fmt::Debug {
    fn sig(&self) -> Sig;
    /// Encrypts the tag 66 payload (see [`fek_payload`]) into a tag 1 EFEK.
    fn encrypt(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// The private half, for in-memory key sets.
pub trait PrivateKeyUnwrap: Send + Sync + fmt::Debug {
    fn sig(&self) -> Sig;
    fn decrypt(&self, efek: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}

/// A key a new file's FEK is wrapped with (one packet each, in order).
#[derive(Clone)]
pub enum WrappingKey {
    /// Tag 3 + 11; `salt` is recorded in the packet (descriptive only).
    Passphrase {
        skek: Skek,
        salt: Salt,
    },
    PublicKey(Arc<dyn PublicKeyWrap>),
}

impl WrappingKey {
    pub fn sig(&self) -> Sig {
        match self {
            WrappingKey::Passphrase { skek, .. } => skek.sig(),
            WrappingKey::PublicKey(k) => k.sig(),
        }
    }
}

impl fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrappingKey::Passphrase { skek, .. } => write!(f, "Passphrase({})", skek.sig()),
            WrappingKey::PublicKey(k) => write!(f, "PublicKey({})", k.sig()),
        }
    }
}

/// An in-memory [`KeyLookup`].
#[derive(Default, Debug)]
pub struct KeySet {
    skeks: HashMap<Sig, Skek>,
    private: Vec<Arc<dyn PrivateKeyUnwrap>>,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a passphrase token's SKEK; returns its sig.
    pub fn add_passphrase(&mut self, skek: Skek) -> Sig {
        let sig = skek.sig();
        self.skeks.insert(sig, skek);
        sig
    }

    pub fn add_private(&mut self, key: Arc<dyn PrivateKeyUnwrap>) -> Sig {
        let sig = key.sig();
        self.private.push(key);
        sig
    }
}

impl KeyLookup for KeySet {
    fn skek(&self, sig: &Sig) -> Option<Skek> {
        self.skeks.get(sig).cloned()
    }

    fn pk_decrypt(&self, sig: &Sig, efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        self.private
            .iter()
            .find(|k| k.sig() == *sig)
            .map(|k| k.decrypt(efek))
    }
}

/// FEK key size recorded by a tag 3: 24 for code 0x08, else the EFEK length (§2.3).
fn tag3_key_bytes(cipher_code: u8, efek_len: usize) -> usize {
    if cipher_code == 0x08 {
        24
    } else {
        efek_len
    }
}

/// `EFEK = ECB(cipher, SKEK[..key_bytes], FEK)`; AES-192 pads the FEK to 32 bytes.
fn wrap_tag3(key: &FileKey, skek: &Skek) -> Result<Vec<u8>, KeyError> {
    let spec = key.spec();
    let mut efek = Zeroizing::new(key.fek().to_vec());
    if spec.cipher == Cipher::Aes && spec.key_bytes == 24 {
        efek.resize(32, 0);
    }
    ecb_encrypt(spec, &skek.as_bytes()[..spec.key_bytes], &mut efek)?;
    Ok(efek.to_vec())
}

fn unwrap_tag3(skek: &Skek, cipher_code: u8, efek: &[u8]) -> Result<FileKey, KeyError> {
    let key_bytes = tag3_key_bytes(cipher_code, efek.len());
    if efek.len() < key_bytes || efek.len() > MAX_KEY_BYTES {
        return Err(KeyError::BadPayload(
            "wrapped key length does not fit the cipher",
        ));
    }
    let spec = CipherSpec::from_code(cipher_code, key_bytes)?;
    let mut fek = Zeroizing::new(efek.to_vec());
    ecb_decrypt(spec, &skek.as_bytes()[..key_bytes], &mut fek)?;
    Ok(FileKey::from_fek(spec, &fek[..key_bytes])?)
}

/// Wraps the FEK once per key, in order (the packet set of a new file).
pub fn wrap_fek(key: &FileKey, with: &[WrappingKey]) -> Result<Vec<KeyPacket>, KeyError> {
    if with.is_empty() {
        return Err(KeyError::NoWrappingKey);
    }
    with.iter()
        .map(|w| {
            Ok(match w {
                WrappingKey::Passphrase { skek, salt } => KeyPacket::Passphrase {
                    sig: skek.sig(),
                    cipher_code: key.spec().code(),
                    salt: *salt,
                    efek: wrap_tag3(key, skek)?,
                },
                WrappingKey::PublicKey(pk) => KeyPacket::PublicKey {
                    sig: pk.sig(),
                    efek: pk.encrypt(&fek_payload(key))?,
                },
            })
        })
        .collect()
}

/// Unwraps the FEK with the first packet whose key is available and works, as the
/// kernel tries candidates in order. `NoKey` lists the sigs nobody had; `WrongKey`
/// those whose key was found but failed.
pub fn unwrap_fek(packets: &[KeyPacket], keys: &dyn KeyLookup) -> Result<FileKey, KeyError> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut format_error = None;
    for p in packets {
        let sig = p.sig();
        let attempt = match p {
            KeyPacket::Passphrase {
                cipher_code, efek, ..
            } => match keys.skek(&sig) {
                None => None,
                // A lookup handing back a key of another sig is a wrong key, not a hit.
                Some(skek) if skek.sig() != sig => {
                    Some(Err(KeyError::WrongKey { sigs: vec![sig] }))
                }
                Some(skek) => Some(unwrap_tag3(&skek, *cipher_code, efek)),
            },
            KeyPacket::PublicKey { efek, .. } => keys.pk_decrypt(&sig, efek).map(|r| {
                let payload = r?;
                let (spec, fek) = parse_fek_payload(&payload)?;
                Ok(FileKey::from_fek(spec, &fek)?)
            }),
        };
        match attempt {
            None => missing.push(sig),
            Some(Ok(k)) => return Ok(k),
            Some(Err(e @ (KeyError::Cipher(_) | KeyError::BadPayload(_)))) if p.is_passphrase() => {
                format_error = Some(e)
            }
            Some(Err(_)) => wrong.push(sig),
        }
    }
    if !wrong.is_empty() {
        return Err(KeyError::WrongKey { sigs: wrong });
    }
    if let Some(e) = format_error {
        return Err(e);
    }
    Err(KeyError::NoKey { sigs: missing })
}

impl KeyPacket {
    fn is_passphrase(&self) -> bool {
        matches!(self, KeyPacket::Passphrase { .. })
    }
}

/// Tag 65/66 payload: `cipher_code || FEK || checksum16 BE` (sum of FEK bytes).
pub fn fek_payload(key: &FileKey) -> Zeroizing<Vec<u8>> {
    let fek = key.fek();
    let sum = fek.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
    let mut p = Zeroizing::new(Vec::with_capacity(fek.len() + 3));
    p.push(key.spec().code());
    p.extend_from_slice(fek);
    p.extend_from_slice(&sum.to_be_bytes());
    p
}

/// Inverse of [`fek_payload`]; a bad checksum means the private key was wrong.
pub fn parse_fek_payload(p: &[u8]) -> Result<(CipherSpec, Zeroizing<Vec<u8>>), KeyError> {
    if p.len() < 4 || p.len() - 3 > MAX_KEY_BYTES {
        return Err(KeyError::BadPayload(
            "decrypted key payload has a bad length",
        ));
    }
    let fek = &p[1..p.len() - 2];
    let sum = fek.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
    if sum.to_be_bytes() != p[p.len() - 2..] {
        return Err(KeyError::WrongKey { sigs: Vec::new() });
    }
    let spec = CipherSpec::from_code(p[0], fek.len())?;
    Ok((spec, Zeroizing::new(fek.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::{derive_skek, Passphrase, DEFAULT_SALT};

    fn test_skek() -> Skek {
        derive_skek(&Passphrase::new("Test").unwrap(), &DEFAULT_SALT)
    }

    /// Spec §1.1/§4.3: the annotated tag 3 unwraps to the worked-example FEK.
    #[test]
    fn spec_tag3_unwraps() {
        let skek = test_skek();
        assert_eq!(
            hex::encode(&skek.as_bytes()[..16]),
            "0f38a537ffd1804fb13c6ce714b09c7b"
        );
        let packet = KeyPacket::Passphrase {
            sig: skek.sig(),
            cipher_code: 7,
            salt: DEFAULT_SALT,
            efek: hex::decode("404811d3601cad796515bd4f09f7cac0").unwrap(),
        };
        let mut ks = KeySet::new();
        ks.add_passphrase(skek.clone());
        let key = unwrap_fek(std::slice::from_ref(&packet), &ks).unwrap();
        assert_eq!(hex::encode(key.fek()), "d8c8dcec9c511399fb6acb32f28d89e2");
        // And wrapping that FEK again gives the kernel's bytes (ECB is deterministic).
        let again = wrap_fek(
            &key,
            &[WrappingKey::Passphrase {
                skek,
                salt: DEFAULT_SALT,
            }],
        )
        .unwrap();
        assert_eq!(again, vec![packet]);
    }

    #[test]
    fn aes192_efek_is_32_bytes_and_every_cipher_roundtrips() {
        let skek = test_skek();
        let mut ks = KeySet::new();
        ks.add_passphrase(skek.clone());
        let with = [WrappingKey::Passphrase {
            skek,
            salt: DEFAULT_SALT,
        }];
        for c in Cipher::ALL {
            for &n in c.key_sizes() {
                let key = FileKey::generate(CipherSpec::new(c, n).unwrap()).unwrap();
                let packets = wrap_fek(&key, &with).unwrap();
                let KeyPacket::Passphrase {
                    efek, cipher_code, ..
                } = &packets[0]
                else {
                    panic!("tag 3 expected")
                };
                let want_len = if (c, n) == (Cipher::Aes, 24) { 32 } else { n };
                assert_eq!(efek.len(), want_len);
                assert_eq!(*cipher_code, key.spec().code());
                let back = unwrap_fek(&packets, &ks).unwrap();
                assert_eq!(back.fek(), key.fek());
                assert_eq!(back.spec(), key.spec());
            }
        }
    }

    #[test]
    fn missing_and_wrong_keys() {
        let skek = test_skek();
        let key = FileKey::generate(CipherSpec::new(Cipher::Aes, 16).unwrap()).unwrap();
        let packets = wrap_fek(
            &key,
            &[WrappingKey::Passphrase {
                skek: skek.clone(),
                salt: DEFAULT_SALT,
            }],
        )
        .unwrap();
        match unwrap_fek(&packets, &KeySet::new()) {
            Err(KeyError::NoKey { sigs }) => assert_eq!(sigs, vec![skek.sig()]),
            other => panic!("{other:?}"),
        }
        /// A lookup that answers every sig with the same (other) key.
        struct Liar(Skek);
        impl KeyLookup for Liar {
            fn skek(&self, _: &Sig) -> Option<Skek> {
                Some(self.0.clone())
            }
        }
        let other = Skek::from_bytes([1; 64]);
        assert!(matches!(
            unwrap_fek(&packets, &Liar(other)),
            Err(KeyError::WrongKey { .. })
        ));
        assert!(matches!(wrap_fek(&key, &[]), Err(KeyError::NoWrappingKey)));
    }

    #[test]
    fn payload_roundtrip_and_checksum() {
        let key = FileKey::generate(CipherSpec::new(Cipher::Aes, 32).unwrap()).unwrap();
        let mut p = fek_payload(&key);
        assert_eq!(p.len(), 35);
        assert_eq!(p[0], 0x09);
        let (spec, fek) = parse_fek_payload(&p).unwrap();
        assert_eq!((spec, &fek[..]), (key.spec(), key.fek()));
        p[5] ^= 1;
        assert!(matches!(
            parse_fek_payload(&p),
            Err(KeyError::WrongKey { .. })
        ));
        assert!(matches!(
            parse_fek_payload(&[7, 0]),
            Err(KeyError::BadPayload(_))
        ));
    }
}
