//! Changing a vault's passphrase honestly: every file's FEK is re-wrapped under the new
//! key and every encrypted name is re-encrypted with the new FNEK, so the old
//! passphrase stops opening anything (tools that only re-wrap a master passphrase
//! leave the old key working).
//!
//! Crash safety. The vault is locked while this runs, and a journal next to the
//! registry records the old and new sigs plus, for the one file being rewritten, a copy
//! of its original header block. Each step is independently checkable by parsing:
//! a header carrying the new sig is done, one carrying the old sig is to do, and a
//! header that does not parse can only be the file in flight (a torn write after power
//! loss), which is restored from the journal's copy and redone. Names are renamed one by
//! one (rename is atomic); a name that decrypts with the new FNEK is done. So the run
//! can be killed anywhere and resumed with both passphrases, and no file is ever left
//! readable by neither key.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::read_header;
use strongroom_core::filename::{FilenameKey, FNEK_PREFIX};
use strongroom_core::header::{Header, HEADER_READ_SIZE, XATTR_NAME};
use strongroom_core::kdf::{Passphrase, Salt, Sig};
use strongroom_core::keys::{unwrap_fek, wrap_fek, KeySet, WrappingKey};
use strongroom_core::packet::KeyPacket;
use strongroom_core::token::AuthToken;

use crate::context::{CryptoContext, KeyType};
use crate::journal::{self, JournalError};
use crate::keysource::{derive_tokens, tokens_for, KeyMaterial, KeySourceError};

/// Temporary names used while replacing encrypted symlinks.
const TMP_PREFIX: &str = ".strongroom-passwd-tmp-";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    #[error(transparent)]
    Key(#[from] KeySourceError),
    #[error("only passphrase vaults can change their passphrase this way")]
    NotPassphraseVault,
    #[error("the new passphrase gives the same key as the old one")]
    SamePassphrase,
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not readable with the old key nor the new one ({reason}); nothing was changed in it", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("journal {}: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
    #[error("cipher: {0}")]
    Cipher(#[from] strongroom_core::cipher::CipherError),
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> PasswdError + 'a {
    move |source| PasswdError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

/// One step of progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Files or names handled so far in this phase.
    pub done: u64,
    pub total: u64,
    pub phase: Phase,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Headers,
    Names,
}

/// What the journal holds (no key material: sigs and one original header block).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Journal {
    pub lower: PathBuf,
    pub old_sig: String,
    pub new_sig: String,
    pub old_fnek_sig: Option<String>,
    pub new_fnek_sig: Option<String>,
    /// The file whose header is being rewritten, with its original first block (hex)
    /// or, in xattr mode, its original `user.ecryptfs` value.
    pub inflight: Option<Inflight>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inflight {
    pub path: PathBuf,
    pub xattr: bool,
    pub original_hex: String,
}

impl Journal {
    pub fn load(path: &Path) -> Result<Option<Journal>, PasswdError> {
        journal::load(path)
    }

    fn save(&self, path: &Path) -> Result<(), PasswdError> {
        journal::save(path, self)
    }
}

impl JournalError for PasswdError {
    fn journal(path: PathBuf, reason: String) -> Self {
        PasswdError::Journal { path, reason }
    }
    fn io(path: PathBuf, what: &'static str, source: std::io::Error) -> Self {
        PasswdError::Io { path, what, source }
    }
}

/// The keys of both sides.
struct Sides {
    old: Sig,
    new: Sig,
    lookup: KeySet,
    wrap_new: WrappingKey,
    old_fnek: Option<FilenameKey>,
    new_fnek: Option<FilenameKey>,
}

fn passphrase_parts(t: &AuthToken) -> Option<(strongroom_core::kdf::Skek, Salt)> {
    match t {
        AuthToken::Passphrase { skek, salt } => Some((skek.clone(), *salt)),
        _ => None,
    }
}

/// The vault's sigs after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSigs {
    pub sig: Sig,
    pub fnek_sig: Option<Sig>,
}

/// Re-keys every file and name under `ctx`'s lower directory `lower` from `old` to `new`
/// (or resumes a run recorded in `journal`). The vault must be locked. On success the
/// journal is removed and the caller records [`NewSigs`] in the registry.
pub fn change_passphrase(
    lower: &Path,
    ctx: &CryptoContext,
    old: &Passphrase,
    new: &Passphrase,
    journal: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<NewSigs, PasswdError> {
    if ctx.key_type != KeyType::Passphrase {
        return Err(PasswdError::NotPassphraseVault);
    }
    let old_t = tokens_for(ctx, &KeyMaterial::Passphrase(old.clone()))?;
    let new_t = derive_tokens(ctx, &KeyMaterial::Passphrase(new.clone()))?;
    if old_t.main.sig() == new_t.main.sig() {
        return Err(PasswdError::SamePassphrase);
    }
    let spec = CipherSpec::new(Cipher::from_name(&ctx.cipher)?, ctx.key_bytes)?;
    let fnek = |t: &Option<AuthToken>| -> Result<Option<FilenameKey>, PasswdError> {
        match t.as_ref().and_then(passphrase_parts) {
            Some((skek, _)) => Ok(Some(FilenameKey::new(skek, spec).map_err(|e| {
                PasswdError::Unreadable {
                    path: lower.to_owned(),
                    reason: e.to_string(),
                }
            })?)),
            None => Ok(None),
        }
    };
    let (old_skek, _) = passphrase_parts(&old_t.main).ok_or(PasswdError::NotPassphraseVault)?;
    let (new_skek, new_salt) =
        passphrase_parts(&new_t.main).ok_or(PasswdError::NotPassphraseVault)?;
    let mut lookup = KeySet::new();
    lookup.add_passphrase(old_skek);
    lookup.add_passphrase(new_skek.clone());
    let sides = Sides {
        old: old_t.main.sig(),
        new: new_t.main.sig(),
        lookup,
        wrap_new: WrappingKey::Passphrase {
            skek: new_skek,
            salt: new_salt,
        },
        old_fnek: fnek(&old_t.fnek)?,
        new_fnek: fnek(&new_t.fnek)?,
    };

    let mut j = Journal {
        lower: lower.to_owned(),
        old_sig: sides.old.to_hex(),
        new_sig: sides.new.to_hex(),
        old_fnek_sig: old_t.fnek.as_ref().map(|t| t.sig().to_hex()),
        new_fnek_sig: new_t.fnek.as_ref().map(|t| t.sig().to_hex()),
        inflight: None,
    };
    if let Some(prev) = Journal::load(journal)? {
        if (prev.lower.as_path(), &prev.old_sig, &prev.new_sig) != (lower, &j.old_sig, &j.new_sig) {
            return Err(PasswdError::Journal {
                path: journal.to_owned(),
                reason: format!(
                    "an interrupted change from key {} to {} is pending; resume it with those passphrases",
                    prev.old_sig, prev.new_sig
                ),
            });
        }
        if let Some(inf) = &prev.inflight {
            restore_if_torn(inf, &sides)?;
        }
    }
    j.save(journal)?;

    let files = walk(lower)?;
    let total = files.iter().filter(|(_, t)| t.is_file()).count() as u64;
    let mut done = 0;
    for (path, ft) in &files {
        if !ft.is_file() {
            continue;
        }
        rekey_file(path, ctx.passthrough, &sides, &mut j, journal)?;
        done += 1;
        progress(&Progress {
            done,
            total,
            phase: Phase::Headers,
            path: path.clone(),
        });
    }
    // Every header is done: nothing is in flight once names start moving files around.
    j.inflight = None;
    j.save(journal)?;
    if let (Some(of), Some(nf)) = (&sides.old_fnek, &sides.new_fnek) {
        if of.sig() != nf.sig() {
            rename_all(lower, of, nf, progress)?;
        }
    }
    std::fs::remove_file(journal).map_err(io(journal, "cannot remove the journal"))?;
    if let Some(dir) = journal.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(NewSigs {
        sig: sides.new,
        fnek_sig: new_t.fnek.map(|t| t.sig()),
    })
}

/// Every entry below `root` (not following symlinks), parents before children.
fn walk(root: &Path) -> Result<Vec<(PathBuf, std::fs::FileType)>, PasswdError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io(&dir, "cannot list"))?;
        for ent in rd {
            let ent = ent.map_err(io(&dir, "cannot list"))?;
            let ft = ent.file_type().map_err(io(&ent.path(), "cannot stat"))?;
            if ft.is_dir() {
                stack.push(ent.path());
            }
            out.push((ent.path(), ft));
        }
    }
    Ok(out)
}

fn first_block(f: &File, path: &Path) -> Result<Vec<u8>, PasswdError> {
    let mut buf = vec![0u8; HEADER_READ_SIZE];
    let mut n = 0;
    while n < buf.len() {
        let k = f
            .read_at(&mut buf[n..], n as u64)
            .map_err(io(path, "cannot read"))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    buf.truncate(n);
    Ok(buf)
}

fn xattr_of(path: &Path) -> Option<Vec<u8>> {
    xattr::get(path, XATTR_NAME).ok().flatten()
}

/// Which side a header belongs to.
fn side_of(h: &Header, s: &Sides) -> (bool, bool) {
    let has = |sig: Sig| h.packets.iter().any(|p| p.sig() == sig);
    (has(s.old), has(s.new))
}

fn restore_if_torn(inf: &Inflight, s: &Sides) -> Result<(), PasswdError> {
    let path = &inf.path;
    let original = hex::decode(&inf.original_hex).map_err(|e| PasswdError::Journal {
        path: path.clone(),
        reason: format!("damaged header copy: {e}"),
    })?;
    if inf.xattr {
        // setxattr replaces the value atomically: either old or new is there.
        return Ok(());
    }
    let f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "cannot open")(e)),
    };
    let block = first_block(&f, path)?;
    let intact = Header::parse(&block)
        .map(|h| side_of(&h, s))
        .is_ok_and(|(o, n)| o || n)
        && Header::parse(&block).is_ok_and(|h| unwrap_fek(&h.packets, &s.lookup).is_ok());
    if !intact {
        log::warn!(
            "{}: header torn by an interruption; restoring the saved copy",
            path.display()
        );
        f.write_all_at(&original, 0)
            .map_err(io(path, "cannot restore the header"))?;
        f.sync_all().map_err(io(path, "cannot sync"))?;
    }
    Ok(())
}

fn rekey_file(
    path: &Path,
    passthrough: bool,
    s: &Sides,
    j: &mut Journal,
    journal: &Path,
) -> Result<(), PasswdError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path, "cannot open"))?;
    let block = first_block(&f, path)?;
    let xv = xattr_of(path);
    let header = match read_header(&block, xv.as_deref()) {
        Ok(h) => h,
        // Plain files live in passthrough vaults; empty files get a header when opened.
        Err(_) if passthrough || block.is_empty() => return Ok(()),
        Err(e) => {
            return Err(PasswdError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    let (has_old, has_new) = side_of(&header, s);
    if !has_old {
        if has_new {
            return Ok(());
        }
        // A file of another key (e.g. copied in): leave it, but say so.
        return Err(PasswdError::Unreadable {
            path: path.to_owned(),
            reason: format!(
                "its key is {}",
                header
                    .packets
                    .iter()
                    .map(|p| p.sig().to_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let key = unwrap_fek(&header.packets, &s.lookup).map_err(|e| PasswdError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let fresh =
        wrap_fek(&key, std::slice::from_ref(&s.wrap_new)).map_err(|e| PasswdError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    // Keep other keys' packets (multi-key vaults); the old key's packets go.
    let mut packets: Vec<KeyPacket> = fresh;
    packets.extend(
        header
            .packets
            .iter()
            .filter(|p| p.sig() != s.old && p.sig() != s.new)
            .cloned(),
    );
    let new_header = Header {
        packets,
        ..header.clone()
    };
    let in_xattr = header.in_xattr() && Header::parse(&block).is_err();
    j.inflight = Some(Inflight {
        path: path.to_owned(),
        xattr: in_xattr,
        original_hex: hex::encode(if in_xattr {
            xv.as_deref().unwrap_or_default()
        } else {
            &block[..]
        }),
    });
    j.save(journal)?;
    let bad = |e: strongroom_core::header::HeaderError| PasswdError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if in_xattr {
        let v = new_header.to_xattr_bytes().map_err(bad)?;
        xattr::set(path, XATTR_NAME, &v).map_err(io(path, "cannot write the header xattr"))?;
    } else {
        let bytes = new_header.to_file_bytes().map_err(bad)?;
        let n = block.len().min(bytes.len());
        f.write_all_at(&bytes[..n], 0)
            .map_err(io(path, "cannot write the header"))?;
    }
    f.sync_all().map_err(io(path, "cannot sync"))?;
    Ok(())
}

/// Re-encrypts every encrypted name (and symlink target), deepest entries first.
fn rename_all(
    lower: &Path,
    old: &FilenameKey,
    new: &FilenameKey,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(), PasswdError> {
    // Leftovers of an interrupted symlink replacement.
    let entries = walk(lower)?;
    for (p, _) in &entries {
        if p.file_name()
            .is_some_and(|n| n.as_bytes().starts_with(TMP_PREFIX.as_bytes()))
        {
            let _ = std::fs::remove_file(p);
        }
    }
    let mut entries: Vec<_> = walk(lower)?;
    // Deepest first, so a directory is renamed after everything inside it.
    entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    let total = entries.len() as u64;
    for (i, (path, ft)) in entries.iter().enumerate() {
        let Some(name) = path.file_name() else {
            continue;
        };
        let dir = path.parent().unwrap_or(lower);
        if ft.is_symlink() {
            retarget_symlink(path, dir, old, new)?;
        }
        if let Some(plain) = recode(name.as_bytes(), old, new) {
            let to = dir.join(OsStr::from_bytes(&plain));
            std::fs::rename(path, &to).map_err(io(path, "cannot rename"))?;
        }
        progress(&Progress {
            done: i as u64 + 1,
            total,
            phase: Phase::Names,
            path: path.clone(),
        });
    }
    Ok(())
}

/// The name re-encrypted with `new`, or `None` if it is not an old-FNEK name.
fn recode(lower_name: &[u8], old: &FilenameKey, new: &FilenameKey) -> Option<Vec<u8>> {
    if !lower_name.starts_with(FNEK_PREFIX.as_bytes()) || new.decrypt(lower_name).is_ok() {
        return None;
    }
    let plain = old.decrypt(lower_name).ok()?;
    new.encrypt(&plain).ok()
}

fn retarget_symlink(
    path: &Path,
    dir: &Path,
    old: &FilenameKey,
    new: &FilenameKey,
) -> Result<(), PasswdError> {
    let target = std::fs::read_link(path).map_err(io(path, "cannot read link"))?;
    let Some(fresh) = recode(target.as_os_str().as_bytes(), old, new) else {
        return Ok(());
    };
    let tmp = dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(OsString::from_vec(fresh), &tmp)
        .map_err(io(&tmp, "cannot create link"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "cannot replace link"))
}
