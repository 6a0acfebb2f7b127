//! Detecting the cryptographic context of an existing lower directory from its headers
//! and names, and reading an `ecryptfs-setup-private` setup (`~/.Private`,
//! `~/.ecryptfs/{Private.sig,Private.mnt,wrapped-passphrase}`).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strongroom_core::cipher::CipherSpec;
use strongroom_core::file::read_header;
use strongroom_core::filename::{decode, FNEK_PREFIX};
use strongroom_core::header::{HEADER_READ_SIZE, XATTR_NAME};
use strongroom_core::kdf::{Sig, DEFAULT_SALT};
use strongroom_core::packet::{decode_len, KeyPacket};

use crate::context::{CryptoContext, FilenameEncryption, KeyType};

/// Files examined at most (headers are read one block each).
pub const MAX_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Bad { path: PathBuf, reason: String },
}

/// What the lower tree shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    /// Content cipher of the passphrase packets (`None` when only public-key packets
    /// were seen: their cipher is inside the RSA payload).
    pub spec: Option<CipherSpec>,
    pub sigs: Vec<Sig>,
    pub key_type: Option<KeyType>,
    pub xattr_metadata: bool,
    /// FNEK sig of the encrypted names, if any.
    pub fnek_sig: Option<Sig>,
    pub encrypted_files: usize,
    /// Regular files with no eCryptfs header (passthrough candidates).
    pub plain_files: usize,
    pub encrypted_names: usize,
}

impl Detected {
    /// The context this implies; `fnek_mode` decides how a FNEK sig that differs from
    /// the content sig is interpreted (ecryptfs-setup-private's separate FNEK).
    pub fn context(&self) -> CryptoContext {
        let spec = self.spec;
        let filename_encryption = match self.fnek_sig {
            None => FilenameEncryption::None,
            Some(f) if self.sigs.contains(&f) => FilenameEncryption::SameToken,
            Some(_) => FilenameEncryption::SeparateFnek,
        };
        CryptoContext {
            key_type: self.key_type.unwrap_or(KeyType::Passphrase),
            cipher: spec.map_or("aes", |s| s.cipher.name()).to_owned(),
            key_bytes: spec.map_or(16, |s| s.key_bytes),
            passthrough: self.plain_files > 0,
            filename_encryption,
            xattr_metadata: self.xattr_metadata,
            sigs: self.sigs.clone(),
            fnek_sig: self.fnek_sig,
            salt: DEFAULT_SALT,
        }
    }
}

/// The FNEK sig inside an encrypted lower name (tag 70: 0x46, length, sig, ...).
fn name_sig(name: &[u8]) -> Option<Sig> {
    let packet = decode(name.strip_prefix(FNEK_PREFIX.as_bytes())?);
    if packet.first() != Some(&0x46) {
        return None;
    }
    let (_, used) = decode_len(&packet[1..]).ok()?;
    let at = 1 + used;
    Some(Sig(packet.get(at..at + 8)?.try_into().ok()?))
}

/// Scans `lower` (not following symlinks).
pub fn detect(lower: &Path) -> Result<Detected, ImportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ImportError::Io { path, source }
    };
    let mut d = Detected::default();
    let mut stack = vec![lower.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for ent in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let ent = ent.map_err(io(&dir))?;
            let name = ent.file_name();
            if let Some(sig) = name_sig(name.as_bytes()) {
                d.encrypted_names += 1;
                d.fnek_sig.get_or_insert(sig);
            }
            let ft = ent.file_type().map_err(io(&ent.path()))?;
            if ft.is_dir() {
                stack.push(ent.path());
                continue;
            }
            if !ft.is_file() || seen >= MAX_FILES {
                continue;
            }
            seen += 1;
            let path = ent.path();
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            let mut buf = vec![0u8; HEADER_READ_SIZE];
            let n = f.read_at(&mut buf, 0).map_err(io(&path))?;
            let xv = xattr::get(&path, XATTR_NAME).ok().flatten();
            match read_header(&buf[..n], xv.as_deref()) {
                Ok(h) => {
                    d.encrypted_files += 1;
                    if h.in_xattr() {
                        d.xattr_metadata = true;
                    }
                    for p in &h.packets {
                        if !d.sigs.contains(&p.sig()) {
                            d.sigs.push(p.sig());
                        }
                        match p {
                            KeyPacket::Passphrase {
                                cipher_code, efek, ..
                            } => {
                                d.key_type.get_or_insert(KeyType::Passphrase);
                                // AES-192 is the one code whose EFEK length is not the key size.
                                let kb = if *cipher_code == 0x08 { 24 } else { efek.len() };
                                if d.spec.is_none() {
                                    d.spec = CipherSpec::from_code(*cipher_code, kb).ok();
                                }
                            }
                            KeyPacket::PublicKey { .. } => {
                                d.key_type.get_or_insert(KeyType::Openssl);
                            }
                        }
                    }
                }
                Err(_) => d.plain_files += 1,
            }
        }
    }
    Ok(d)
}

/// An `ecryptfs-setup-private` installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateSetup {
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
    pub sig: Sig,
    pub fnek_sig: Option<Sig>,
    pub wrapped_passphrase: Option<PathBuf>,
}

/// Reads `~/.ecryptfs` of `home` (spec §7.6).
pub fn private_setup(home: &Path) -> Result<PrivateSetup, ImportError> {
    let conf = home.join(".ecryptfs");
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|source| ImportError::Io {
            path: p.clone(),
            source,
        })
    };
    let sig_path = conf.join("Private.sig");
    let sigs_text = read(sig_path.clone())?;
    let mut sigs = sigs_text.lines().filter(|l| !l.is_empty()).map(|l| {
        l.trim().parse::<Sig>().map_err(|e| ImportError::Bad {
            path: sig_path.clone(),
            reason: e.to_string(),
        })
    });
    let sig = sigs.next().ok_or_else(|| ImportError::Bad {
        path: sig_path.clone(),
        reason: "no signature in the file".into(),
    })??;
    let fnek_sig = sigs.next().transpose()?;
    let mountpoint = match read(conf.join("Private.mnt")) {
        Ok(t) => PathBuf::from(t.lines().next().unwrap_or_default()),
        Err(_) => home.join("Private"),
    };
    // Homes encrypted at install time keep the lower tree under /home/.ecryptfs/USER.
    let lower = std::fs::canonicalize(&conf)
        .ok()
        .and_then(|c| c.parent().map(|p| p.join(".Private")))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| home.join(".Private"));
    let wp = conf.join("wrapped-passphrase");
    Ok(PrivateSetup {
        lower,
        mountpoint,
        sig,
        fnek_sig,
        wrapped_passphrase: wp.is_file().then_some(wp),
    })
}
