//! Key sources → auth tokens: a passphrase (typed, from a file, from the Secret
//! Service, or unwrapped from an ecryptfs-utils wrapped-passphrase file) or an
//! OpenSSL RSA key pair on a USB drive. Also the sig-cache typo guard.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongroom_core::kdf::{Passphrase, Sig, FNEK_SALT};
use strongroom_core::pubkey::{self, RsaKeyPair, MODULE_ALIAS};
use strongroom_core::sigcache::SigCache;
use strongroom_core::token::AuthToken;
use zeroize::Zeroizing;

use crate::context::{CryptoContext, FilenameEncryption, KeyType};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeySourceError {
    #[error("cannot read passphrase file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("passphrase file {}: {source}", path.display())]
    BadPassphrase {
        path: PathBuf,
        #[source]
        source: strongroom_core::kdf::KdfError,
    },
    #[error(
        "wrong passphrase or key: it gives key {got}, the vault needs {}",
        list(expected)
    )]
    WrongKey { expected: Vec<Sig>, got: Sig },
    #[error("key file {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pubkey::PubkeyError,
    },
    #[error("the vault uses {need} keys, but a {given} was given")]
    WrongKind {
        need: &'static str,
        given: &'static str,
    },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("cannot build the key token: {0}")]
    Token(#[from] strongroom_core::token::TokenError),
    #[error("sig cache: {0}")]
    SigCache(#[from] strongroom_core::sigcache::SigCacheError),
}

fn list(sigs: &[Sig]) -> String {
    sigs.iter().map(Sig::to_hex).collect::<Vec<_>>().join(", ")
}

/// Reads a passphrase file the way `mount.ecryptfs` does: a `passphrase_passwd=P` (or
/// `passwd=P`) line anywhere wins; otherwise the first line without its newline.
pub fn read_passphrase_file(path: &Path) -> Result<Passphrase, KeySourceError> {
    let text = Zeroizing::new(
        std::fs::read(path).map_err(|source| KeySourceError::ReadFile {
            path: path.to_owned(),
            source,
        })?,
    );
    let keyed = text.split(|&b| b == b'\n').find_map(|line| {
        ["passphrase_passwd=", "passwd=", "openssl_passwd="]
            .iter()
            .find_map(|k| line.strip_prefix(k.as_bytes()))
    });
    match keyed {
        Some(value) => Passphrase::new(value),
        None => Passphrase::from_first_line(&text),
    }
    .map_err(|source| KeySourceError::BadPassphrase {
        path: path.to_owned(),
        source,
    })
}

/// What the user supplied at unlock or create time.
#[derive(Debug)]
pub enum KeyMaterial {
    /// The mount passphrase itself.
    Passphrase(Passphrase),
    /// An RSA private key file (absolute path) and its PEM passphrase.
    PemKey {
        keyfile: PathBuf,
        passphrase: Passphrase,
    },
}

impl KeyMaterial {
    fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Passphrase(_) => "passphrase",
            KeyMaterial::PemKey { .. } => "key file",
        }
    }
}

/// The tokens one vault puts into the keyring.
#[derive(Debug, Clone)]
pub struct VaultTokens {
    /// Wraps the FEKs (`ecryptfs_sig`).
    pub main: AuthToken,
    /// Encrypts the names (`ecryptfs_fnek_sig`), when names are encrypted.
    pub fnek: Option<AuthToken>,
    /// An OpenSSL vault's decrypted key pair: the kernel backend hands it to the helper,
    /// which answers the kernel's unwrap requests (the token only names the PEM file).
    pub key_pair: Option<Arc<RsaKeyPair>>,
}

impl VaultTokens {
    pub fn sigs(&self) -> Vec<Sig> {
        let mut v = vec![self.main.sig()];
        if let Some(f) = &self.fnek {
            if f.sig() != v[0] {
                v.push(f.sig());
            }
        }
        v
    }
}

/// Derives the tokens for `ctx` without checking them against its sigs.
pub fn derive_tokens(ctx: &CryptoContext, m: &KeyMaterial) -> Result<VaultTokens, KeySourceError> {
    ctx.key_type
        .support()
        .map_err(KeySourceError::Unsupported)?;
    match (ctx.key_type, m) {
        (KeyType::Passphrase, KeyMaterial::Passphrase(p)) => {
            let main = AuthToken::from_passphrase(p, &ctx.salt);
            let fnek = match ctx.filename_encryption {
                FilenameEncryption::None => None,
                FilenameEncryption::SameToken => Some(main.clone()),
                FilenameEncryption::SeparateFnek => Some(AuthToken::from_passphrase(p, &FNEK_SALT)),
            };
            Ok(VaultTokens {
                main,
                fnek,
                key_pair: None,
            })
        }
        (
            KeyType::Openssl,
            KeyMaterial::PemKey {
                keyfile,
                passphrase,
            },
        ) => {
            if ctx.filename_encryption != FilenameEncryption::None {
                // The kernel only accepts passphrase tokens as FNEKs (spec §5.6).
                return Err(KeySourceError::Unsupported(
                    "filename encryption needs a passphrase key; OpenSSL-key vaults keep names in plain text",
                ));
            }
            let keyfile =
                std::path::absolute(keyfile).map_err(|source| KeySourceError::ReadFile {
                    path: keyfile.clone(),
                    source,
                })?;
            let pem_err = |source| KeySourceError::Pem {
                path: keyfile.clone(),
                source,
            };
            let pair = RsaKeyPair::load(&keyfile, passphrase).map_err(pem_err)?;
            let blob = pubkey::token_blob(&keyfile, passphrase).map_err(pem_err)?;
            let main = AuthToken::private_key(pair.sig(), MODULE_ALIAS, blob)?;
            Ok(VaultTokens {
                main,
                fnek: None,
                key_pair: Some(Arc::new(pair)),
            })
        }
        (t, m) => Err(KeySourceError::WrongKind {
            need: t.name(),
            given: m.kind(),
        }),
    }
}

/// Derives the tokens and checks them against the vault's recorded sigs (a wrong
/// passphrase is caught here, before anything is mounted).
pub fn tokens_for(ctx: &CryptoContext, m: &KeyMaterial) -> Result<VaultTokens, KeySourceError> {
    let t = derive_tokens(ctx, m)?;
    if !ctx.sigs.is_empty() && !ctx.sigs.contains(&t.main.sig()) {
        return Err(KeySourceError::WrongKey {
            expected: ctx.sigs.clone(),
            got: t.main.sig(),
        });
    }
    if let (Some(want), Some(f)) = (ctx.fnek_sig, &t.fnek) {
        if f.sig() != want {
            return Err(KeySourceError::WrongKey {
                expected: vec![want],
                got: f.sig(),
            });
        }
    }
    Ok(t)
}

/// The typo guard of `mount.ecryptfs`: a sig never used before on this account is
/// probably a mistyped passphrase.
#[derive(Debug, Clone)]
pub struct SigGuard {
    cache: SigCache,
}

impl SigGuard {
    /// `~/.ecryptfs/sig-cache.txt`, shared with ecryptfs-utils.
    pub fn in_home(home: &Path) -> Self {
        SigGuard {
            cache: SigCache::in_home(home),
        }
    }

    pub fn at(path: impl Into<PathBuf>) -> Self {
        SigGuard {
            cache: SigCache::at(path),
        }
    }

    pub fn seen(&self, sig: &Sig) -> Result<bool, KeySourceError> {
        Ok(self.cache.contains(sig)?)
    }

    pub fn remember(&self, sig: &Sig) -> Result<(), KeySourceError> {
        if !self.seen(sig)? {
            self.cache.append(sig)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::kdf::DEFAULT_SALT;

    fn ctx(fn_mode: FilenameEncryption) -> CryptoContext {
        CryptoContext {
            key_type: KeyType::Passphrase,
            cipher: "aes".into(),
            key_bytes: 16,
            passthrough: false,
            filename_encryption: fn_mode,
            xattr_metadata: false,
            sigs: vec![],
            fnek_sig: None,
            salt: DEFAULT_SALT,
        }
    }

    #[test]
    fn passphrase_tokens_match_the_spec_vectors() {
        // Spec §9 V1/V2: test123 → 2a97418edca01eb9, FNEK 33a5d5e39463d53f.
        let m = KeyMaterial::Passphrase(Passphrase::new("test123").unwrap());
        let t = derive_tokens(&ctx(FilenameEncryption::SeparateFnek), &m).unwrap();
        assert_eq!(t.main.sig().to_hex(), "2a97418edca01eb9");
        assert_eq!(t.fnek.as_ref().unwrap().sig().to_hex(), "33a5d5e39463d53f");
        let t = derive_tokens(&ctx(FilenameEncryption::SameToken), &m).unwrap();
        assert_eq!(t.sigs(), vec![t.main.sig()]);
        assert!(derive_tokens(&ctx(FilenameEncryption::None), &m)
            .unwrap()
            .fnek
            .is_none());

        let mut c = ctx(FilenameEncryption::SeparateFnek);
        c.sigs = vec!["3515cca9baaea1f4".parse().unwrap()];
        match tokens_for(&c, &m) {
            Err(KeySourceError::WrongKey { got, .. }) => {
                assert_eq!(got.to_hex(), "2a97418edca01eb9")
            }
            other => panic!("{other:?}"),
        }
        c.key_type = KeyType::Pkcs11;
        assert!(matches!(
            derive_tokens(&c, &m),
            Err(KeySourceError::Unsupported(_))
        ));
    }

    #[test]
    fn passphrase_files_like_mount_ecryptfs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "# usb key\npassphrase_passwd=s3cret\n").unwrap();
        assert_eq!(read_passphrase_file(&f).unwrap().as_bytes(), b"s3cret");
        std::fs::write(&f, "plain line\nnext").unwrap();
        assert_eq!(read_passphrase_file(&f).unwrap().as_bytes(), b"plain line");
        std::fs::write(&f, "").unwrap();
        assert!(matches!(
            read_passphrase_file(&f),
            Err(KeySourceError::BadPassphrase { .. })
        ));
        assert!(matches!(
            read_passphrase_file(&dir.path().join("nope")),
            Err(KeySourceError::ReadFile { .. })
        ));
    }

    #[test]
    fn sig_guard_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = SigGuard::in_home(dir.path());
        let s: Sig = "2a97418edca01eb9".parse().unwrap();
        assert!(!g.seen(&s).unwrap());
        g.remember(&s).unwrap();
        g.remember(&s).unwrap();
        assert!(g.seen(&s).unwrap());
        let text = std::fs::read_to_string(dir.path().join(".ecryptfs/sig-cache.txt")).unwrap();
        assert_eq!(
            text, "2a97418edca01eb9\n",
            "17-byte records like ecryptfs-utils"
        );
    }
}
