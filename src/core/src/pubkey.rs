//! RSA key pairs of the eCryptfs `openssl` key module (spec §8): PEM files, the key
//! signature, RSA-OAEP wrapping of the tag 66/65 payload, and the private-key token
//! blob (PEM path + PEM passphrase) that puts such a key into the keyring.
//!
//! OpenSSL itself does the RSA and PEM work so that key files stay interchangeable
//! with the ones ecryptfs-utils (also OpenSSL) writes and reads.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use openssl::pkey::{Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::symm::Cipher as PemCipher;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::atomic::write_atomic;
use crate::kdf::{Passphrase, Sig};
use crate::keys::{KeyError, KeyLookup, PrivateKeyUnwrap, PublicKeyWrap};
use crate::token::PrivateKeyToken;

/// Default modulus size for new keys. NIST SP 800-57 Part 1 Rev. 5 rates RSA-2048
/// at 112-bit security, acceptable only through 2030; 3072 bits (128-bit security)
/// is the smallest size it accepts beyond 2030, and files encrypted today outlive
/// that. (ecryptfs-utils generated 1024-bit keys; those remain readable.)
pub const DEFAULT_BITS: u32 = 3072;
/// Sizes offered for new keys.
pub const ALLOWED_BITS: [u32; 4] = [1024, 2048, 3072, 4096];
/// The public exponent ecryptfs-utils uses.
const EXPONENT: u32 = 65537;
/// Key module alias stored in private-key tokens.
pub const MODULE_ALIAS: &str = "openssl";
/// OAEP with SHA-1 takes at most RSA_size - 42 bytes.
const OAEP_OVERHEAD: usize = 42;

/// Errors of RSA key handling. The caller names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubkeyError {
    #[error("RSA key size {0} is not offered (choose 1024, 2048, 3072 or 4096)")]
    BadBits(u32),
    #[error("wrong passphrase for the private key, or not an RSA private key PEM file")]
    BadPrivateKey,
    #[error("not an RSA public key PEM file")]
    BadPublicKey,
    #[error("cannot read the key file: {0}")]
    Read(#[source] std::io::Error),
    #[error("cannot write the key file: {0}")]
    Write(#[source] std::io::Error),
    #[error("the key file read back differs from the key written (sig {written} vs {read})")]
    VerifyFailed { written: Sig, read: Sig },
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("payload of {len} bytes is too long for this {bits}-bit key (at most {max})")]
    PayloadTooLong { len: usize, bits: u32, max: usize },
    #[error("RSA-OAEP decryption failed (wrong key or damaged data)")]
    DecryptFailed,
    #[error("malformed openssl key-module blob")]
    BadBlob,
}

/// The eCryptfs sig of an RSA key: SHA-1 over an OpenPGP-v4-style public-key packet
/// with timestamp 0, first 8 bytes.
pub fn rsa_sig(n: &[u8], e: &[u8]) -> Sig {
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|&x| x == 0).collect() };
    let (n, e) = (strip(n), strip(e));
    let bits = |b: &[u8]| -> u16 {
        match b.first() {
            Some(&top) => ((b.len() - 1) * 8) as u16 + (8 - top.leading_zeros() as u16),
            None => 0,
        }
    };
    let len = (10 + n.len() + e.len()) as u16;
    let mut h = Sha1::new();
    h.update([0x99]);
    h.update(len.to_be_bytes());
    h.update([0x04, 0, 0, 0, 0, 0x02]);
    h.update(bits(&n).to_be_bytes());
    h.update(&n);
    h.update(bits(&e).to_be_bytes());
    h.update(&e);
    let d = h.finalize();
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    Sig(s)
}

/// An RSA public key (what files are encrypted to).
#[derive(Clone)]
pub struct RsaPublicKey {
    rsa: Rsa<Public>,
    sig: Sig,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaPublicKey({} bits, sig {})",
            self.rsa.size() * 8,
            self.sig
        )
    }
}

impl RsaPublicKey {
    /// Reads a `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Self, PubkeyError> {
        let rsa = Rsa::public_key_from_pem(pem)
            .or_else(|_| Rsa::public_key_from_pem_pkcs1(pem))
            .map_err(|_| PubkeyError::BadPublicKey)?;
        let sig = rsa_sig(&rsa.n().to_vec(), &rsa.e().to_vec());
        Ok(RsaPublicKey { rsa, sig })
    }

    pub fn load(path: &Path) -> Result<Self, PubkeyError> {
        Self::from_pem(&std::fs::read(path).map_err(PubkeyError::Read)?)
    }

    pub fn sig(&self) -> Sig {
        self.sig
    }

    pub fn bits(&self) -> u32 {
        self.rsa.size() * 8
    }

    /// Largest FEK this key can wrap: the tag 66 payload (cipher code, FEK,
    /// 2-byte checksum) must fit OAEP. Same as ecryptfs-utils' `RSA_size - 41 - 3`
    /// offer, minus the byte its bound is off by.
    pub fn max_key_bytes(&self) -> usize {
        (self.rsa.size() as usize).saturating_sub(OAEP_OVERHEAD + 3)
    }

    /// RSAES-OAEP (SHA-1, MGF1-SHA-1, empty label) of `payload`.
    pub fn encrypt_payload(&self, payload: &[u8]) -> Result<Vec<u8>, PubkeyError> {
        let size = self.rsa.size() as usize;
        let max = size - OAEP_OVERHEAD;
        if payload.len() > max {
            return Err(PubkeyError::PayloadTooLong {
                len: payload.len(),
                bits: self.bits(),
                max,
            });
        }
        let mut out = vec![0u8; size];
        let n = self
            .rsa
            .public_encrypt(payload, &mut out, Padding::PKCS1_OAEP)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn to_pem(&self) -> Result<Vec<u8>, PubkeyError> {
        Ok(self.rsa.public_key_to_pem()?)
    }
}

impl PublicKeyWrap for RsaPublicKey {
    fn sig(&self) -> Sig {
        self.sig
    }
    fn encrypt(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.encrypt_payload(payload)
            .map_err(|e| pk_error(self.sig, e))
    }
}

/// FEK-wrapping errors carry RSA failures as text naming the key.
fn pk_error(sig: Sig, reason: impl std::fmt::Display) -> KeyError {
    KeyError::PublicKey {
        sig,
        reason: reason.to_string(),
    }
}

/// An RSA key pair.
pub struct RsaKeyPair {
    rsa: Rsa<Private>,
    public: RsaPublicKey,
}

impl std::fmt::Debug for RsaKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaKeyPair({} bits, sig {}, private part redacted)",
            self.public.bits(),
            self.public.sig
        )
    }
}

impl RsaKeyPair {
    /// A new key with e = 65537.
    pub fn generate(bits: u32) -> Result<Self, PubkeyError> {
        if !ALLOWED_BITS.contains(&bits) {
            return Err(PubkeyError::BadBits(bits));
        }
        let e = openssl::bn::BigNum::from_u32(EXPONENT)?;
        Self::from_rsa(Rsa::generate_with_e(bits, &e)?)
    }

    fn from_rsa(rsa: Rsa<Private>) -> Result<Self, PubkeyError> {
        let public = Rsa::from_public_components(rsa.n().to_owned()?, rsa.e().to_owned()?)?;
        let sig = rsa_sig(&rsa.n().to_vec(), &rsa.e().to_vec());
        Ok(RsaKeyPair {
            rsa,
            public: RsaPublicKey { rsa: public, sig },
        })
    }

    pub fn sig(&self) -> Sig {
        self.public.sig
    }

    pub fn public(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Traditional `RSA PRIVATE KEY` PEM encrypted with AES-256-CBC, as the openssl
    /// key module writes (`PEM_write_bio_RSAPrivateKey`), so its readers accept it.
    pub fn private_pem(&self, passphrase: &Passphrase) -> Result<Zeroizing<Vec<u8>>, PubkeyError> {
        Ok(Zeroizing::new(self.rsa.private_key_to_pem_passphrase(
            PemCipher::aes_256_cbc(),
            passphrase.as_bytes(),
        )?))
    }

    /// Reads an encrypted (any PEM cipher) or unencrypted RSA private key PEM, in
    /// traditional or PKCS#8 form; ecryptfs-utils' 1024-bit keys included.
    pub fn from_private_pem(pem: &[u8], passphrase: &Passphrase) -> Result<Self, PubkeyError> {
        Self::checked(Rsa::private_key_from_pem_passphrase(
            pem,
            passphrase.as_bytes(),
        ))
    }

    /// Reads an unencrypted PKCS#1 `RSAPrivateKey` DER ([`Self::private_der`]).
    pub fn from_private_der(der: &[u8]) -> Result<Self, PubkeyError> {
        Self::checked(Rsa::private_key_from_der(der))
    }

    /// The private key as unencrypted PKCS#1 `RSAPrivateKey` DER: what the helper's
    /// `MountWithKeys` takes to answer the kernel's `/dev/ecryptfs` requests.
    pub fn private_der(&self) -> Result<Zeroizing<Vec<u8>>, PubkeyError> {
        Ok(Zeroizing::new(self.rsa.private_key_to_der()?))
    }

    /// A parsed private key after `RSA_check_key` (one gate for every way in).
    fn checked(rsa: Result<Rsa<Private>, openssl::error::ErrorStack>) -> Result<Self, PubkeyError> {
        let rsa = rsa.map_err(|_| PubkeyError::BadPrivateKey)?;
        if !rsa.check_key().unwrap_or(false) {
            return Err(PubkeyError::BadPrivateKey);
        }
        Self::from_rsa(rsa)
    }

    pub fn load(path: &Path, passphrase: &Passphrase) -> Result<Self, PubkeyError> {
        let pem = Zeroizing::new(std::fs::read(path).map_err(PubkeyError::Read)?);
        Self::from_private_pem(&pem, passphrase)
    }

    /// Saves the private key (encrypted PEM, mode 0600, written atomically and
    /// fsynced, then read back and checked) and the public key PEM. Missing parent
    /// directories are created 0700, as the openssl module does.
    pub fn save(
        &self,
        private: &Path,
        public: &Path,
        passphrase: &Passphrase,
    ) -> Result<(), PubkeyError> {
        for p in [private, public] {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(PubkeyError::Write)?;
            }
        }
        write_atomic(private, &self.private_pem(passphrase)?).map_err(PubkeyError::Write)?;
        let back = Self::load(private, passphrase)?;
        if back.sig() != self.sig() || back.rsa.d().to_vec() != self.rsa.d().to_vec() {
            return Err(PubkeyError::VerifyFailed {
                written: self.sig(),
                read: back.sig(),
            });
        }
        write_atomic(public, &self.public.to_pem()?).map_err(PubkeyError::Write)
    }

    /// Inverse of [`RsaPublicKey::encrypt_payload`].
    pub fn decrypt_payload(&self, efek: &[u8]) -> Result<Zeroizing<Vec<u8>>, PubkeyError> {
        let mut out = Zeroizing::new(vec![0u8; self.rsa.size() as usize]);
        let n = self
            .rsa
            .private_decrypt(efek, &mut out, Padding::PKCS1_OAEP)
            .map_err(|_| PubkeyError::DecryptFailed)?;
        out.truncate(n);
        Ok(out)
    }
}

/// A loaded key pair answers for its own sig.
impl KeyLookup for RsaKeyPair {
    fn skek(&self, _sig: &Sig) -> Option<crate::kdf::Skek> {
        None
    }
    fn pk_decrypt(&self, sig: &Sig, efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        (*sig == self.sig()).then(|| self.decrypt_payload(efek).map_err(|e| pk_error(*sig, e)))
    }
}

/// For in-memory key sets (`keys::KeySet`).
impl PrivateKeyUnwrap for RsaKeyPair {
    fn sig(&self) -> Sig {
        self.public.sig
    }
    fn decrypt(&self, efek: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.decrypt_payload(efek)
            .map_err(|e| pk_error(self.public.sig, e))
    }
}

/// The openssl module's token blob: `u16 LE len · path · NUL · u16 LE len ·
/// passphrase · NUL` (lengths include the NUL). The PEM passphrase is stored in the
/// keyring payload, as ecryptfs-utils does; the key file path must be absolute so
/// that any process can open it.
pub fn token_blob(
    pem_path: &Path,
    passphrase: &Passphrase,
) -> Result<Zeroizing<Vec<u8>>, PubkeyError> {
    use std::os::unix::ffi::OsStrExt;
    let path = pem_path.as_os_str().as_bytes();
    if !pem_path.is_absolute() || path.contains(&0) || path.len() + 1 > u16::MAX as usize {
        return Err(PubkeyError::BadBlob);
    }
    let mut b = Zeroizing::new(Vec::with_capacity(
        path.len() + passphrase.as_bytes().len() + 6,
    ));
    for field in [path, passphrase.as_bytes()] {
        b.extend_from_slice(&((field.len() + 1) as u16).to_le_bytes());
        b.extend_from_slice(field);
        b.push(0);
    }
    Ok(b)
}

/// Parses [`token_blob`] output.
pub fn parse_token_blob(blob: &[u8]) -> Result<(PathBuf, Passphrase), PubkeyError> {
    use std::os::unix::ffi::OsStrExt;
    let field = |at: usize| -> Result<(&[u8], usize), PubkeyError> {
        let len = u16::from_le_bytes([
            *blob.get(at).ok_or(PubkeyError::BadBlob)?,
            *blob.get(at + 1).ok_or(PubkeyError::BadBlob)?,
        ]) as usize;
        let body = blob.get(at + 2..at + 2 + len).ok_or(PubkeyError::BadBlob)?;
        match body.split_last() {
            Some((0, text)) if !text.contains(&0) => Ok((text, at + 2 + len)),
            _ => Err(PubkeyError::BadBlob),
        }
    };
    let (path, next) = field(0)?;
    let (pass, _) = field(next)?;
    let pass = Passphrase::new(pass).map_err(|_| PubkeyError::BadBlob)?;
    Ok((PathBuf::from(std::ffi::OsStr::from_bytes(path)), pass))
}

/// `pk_decrypt` for a private-key token found in the keyring (see keyring.rs).
pub(crate) fn decrypt_with_token(
    sig: Sig,
    token: &PrivateKeyToken,
    efek: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if token.alias() != MODULE_ALIAS {
        let reason = format!("key module {:?} is not supported", token.alias());
        return Err(pk_error(sig, reason));
    }
    let (path, pass) = parse_token_blob(token.blob()).map_err(|e| pk_error(sig, e))?;
    let pair = RsaKeyPair::load(&path, &pass)
        .map_err(|e| pk_error(sig, format!("{}: {e}", path.display())))?;
    if pair.sig() != sig {
        let reason = format!("{} holds key {}", path.display(), pair.sig());
        return Err(pk_error(sig, reason));
    }
    pair.decrypt_payload(efek).map_err(|e| pk_error(sig, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).unwrap()
    }

    /// The sig computed by the `openssl` command-line tool and a shell pipeline,
    /// independently of `rsa_sig`: modulus from `openssl rsa -modulus`, the §8
    /// packet assembled as hex text, SHA-1 by `openssl dgst`.
    fn sig_by_openssl_cli(pem: &Path, bits: u32) -> String {
        let script = format!(
            r#"set -e
n=$(openssl rsa -in "$1" -passin file:"$2" -noout -modulus | sed 's/^Modulus=//')
nbytes=$(( ${{#n}} / 2 ))
len=$(( 10 + nbytes + 3 ))
printf '99%04x040000000002%04x%s0011010001' "$len" {bits} "$n" | xxd -r -p | openssl dgst -sha1 -r | cut -c1-16"#
        );
        let dir = pem.parent().unwrap();
        let pf = dir.join("pw");
        std::fs::write(&pf, "pem secret").unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(pem)
            .arg(&pf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn generate_save_load_and_sig_matches_openssl_cli() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [1024, 2048] {
            let pair = RsaKeyPair::generate(bits).unwrap();
            let private = dir.path().join(format!("keys/k{bits}.pem"));
            let public = dir.path().join(format!("keys/k{bits}.pub.pem"));
            pair.save(&private, &public, &pass("pem secret")).unwrap();
            let pem = std::fs::read_to_string(&private).unwrap();
            assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,"), "{pem}");
            assert_eq!(
                std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                std::fs::metadata(private.parent().unwrap())
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );
            assert_eq!(pair.sig().to_hex(), sig_by_openssl_cli(&private, bits));
            let back = RsaKeyPair::load(&private, &pass("pem secret")).unwrap();
            assert_eq!(back.sig(), pair.sig());
            assert!(matches!(
                RsaKeyPair::load(&private, &pass("wrong")),
                Err(PubkeyError::BadPrivateKey)
            ));
            assert_eq!(RsaPublicKey::load(&public).unwrap().sig(), pair.sig());
        }
        assert!(matches!(
            RsaKeyPair::generate(1000),
            Err(PubkeyError::BadBits(1000))
        ));
    }

    #[test]
    fn reads_a_key_written_by_the_openssl_cli() {
        // A 1024-bit traditional AES-256-CBC key like ecryptfs-manager's.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("old.pem");
        let pf = dir.path().join("pw");
        std::fs::write(&pf, "pem secret").unwrap();
        let st = Command::new("sh")
            .arg("-c")
            .arg(r#"openssl genrsa -traditional -aes256 -passout file:"$2" -out "$1" 1024 2>/dev/null"#)
            .arg("sh")
            .arg(&key)
            .arg(&pf)
            .status()
            .unwrap();
        assert!(st.success());
        let pair = RsaKeyPair::load(&key, &pass("pem secret")).unwrap();
        assert_eq!(pair.public().bits(), 1024);
        assert_eq!(pair.public().max_key_bytes(), 83);
        assert_eq!(pair.sig().to_hex(), sig_by_openssl_cli(&key, 1024));
    }

    #[test]
    fn oaep_round_trip_and_limits() {
        let pair = RsaKeyPair::generate(1024).unwrap();
        // Tag 66 payload for an AES-256 FEK: code 0x09, 32 bytes, checksum.
        let mut payload = vec![0x09];
        payload.extend(1..=32u8);
        let sum: u16 = (1..=32u16).sum();
        payload.extend(sum.to_be_bytes());
        let efek = pair.public().encrypt_payload(&payload).unwrap();
        assert_eq!(efek.len(), 128);
        assert_eq!(&pair.decrypt_payload(&efek).unwrap()[..], &payload[..]);
        // OAEP is randomised.
        assert_ne!(efek, pair.public().encrypt_payload(&payload).unwrap());
        // Decrypting with the openssl CLI (OAEP default SHA-1) gives the payload too.
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("k.pem"), dir.path().join("c"));
        std::fs::write(&k, &*pair.private_pem(&pass("pw")).unwrap()).unwrap();
        std::fs::write(&c, &efek).unwrap();
        let out = Command::new("openssl")
            .args([
                "pkeyutl",
                "-decrypt",
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-passin",
                "pass:pw",
                "-inkey",
            ])
            .arg(&k)
            .arg("-in")
            .arg(&c)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, payload);

        assert!(matches!(
            pair.public().encrypt_payload(&[0u8; 87]),
            Err(PubkeyError::PayloadTooLong { .. })
        ));
        assert!(pair.public().encrypt_payload(&[0u8; 86]).is_ok());
        let mut bad = efek.clone();
        bad[5] ^= 1;
        assert!(matches!(
            pair.decrypt_payload(&bad),
            Err(PubkeyError::DecryptFailed)
        ));
        assert!(pair.pk_decrypt(&Sig([0; 8]), &efek).is_none());
        assert_eq!(
            &pair.pk_decrypt(&pair.sig(), &efek).unwrap().unwrap()[..],
            &payload[..]
        );
    }

    #[test]
    fn blob_layout() {
        let b = token_blob(Path::new("/usb/k.pem"), &pass("pw")).unwrap();
        assert_eq!(&b[..], b"\x0b\x00/usb/k.pem\x00\x03\x00pw\x00");
        let (p, pw) = parse_token_blob(&b).unwrap();
        assert_eq!(
            (p.as_path(), pw.as_bytes()),
            (Path::new("/usb/k.pem"), &b"pw"[..])
        );
        assert!(token_blob(Path::new("rel.pem"), &pass("pw")).is_err());
        for bad in [&b[..5], &b[..b.len() - 1], b"\xff\xff/x"] {
            assert!(parse_token_blob(bad).is_err());
        }
    }

    #[test]
    fn private_key_token_in_the_keyring_decrypts() {
        use crate::keyring::{add_token, tests::in_private_session, KeyringLookup, Ring};
        use crate::token::AuthToken;
        let dir = tempfile::tempdir().unwrap();
        let pair = RsaKeyPair::generate(1024).unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        pair.save(&private, &public, &pass("pem pw")).unwrap();
        let efek = pair
            .public()
            .encrypt_payload(b"\x07sixteen byte key\x06\x6b")
            .unwrap();
        let sig = pair.sig();
        let blob = token_blob(&private, &pass("pem pw")).unwrap();
        let token = AuthToken::private_key(sig, MODULE_ALIAS, blob).unwrap();
        let got = in_private_session(move || {
            add_token(Ring::Session, &token).unwrap();
            let lookup = KeyringLookup::new(vec![Ring::Session]);
            assert!(lookup.skek(&sig).is_none());
            assert!(lookup.pk_decrypt(&Sig([1; 8]), &efek).is_none());
            lookup.pk_decrypt(&sig, &efek).unwrap().unwrap().to_vec()
        });
        assert_eq!(got, b"\x07sixteen byte key\x06\x6b");
    }
}
