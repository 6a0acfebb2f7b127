//! Migrations between a plain folder and a vault, in place and crash-safe.
//!
//! *Encrypt*: the files of FOLDER become a new vault whose mount point is FOLDER (the
//! user's paths work again once it is unlocked) and whose lower directory is a sibling,
//! `.FOLDER.strongroom` by default. *Decrypt*: a vault's files are written out to a
//! plain directory, and optionally the vault is removed afterwards.
//!
//! Crash safety, with the shape of `passwd.rs`: every step can be recognised by looking
//! at the disk, so a run killed anywhere is finished by running it again.
//! Per file (encrypt): ciphertext goes to a temporary name in the lower directory, is
//! fsync'ed, decrypted back and compared (SHA-256) with what was read, gets the file's
//! mode and times, and only then is renamed to its final (encrypted) name; the
//! directory is fsync'ed and only then the plaintext is unlinked, after checking that
//! its size, mtime and inode did not change meanwhile. A file therefore always exists
//! as plaintext, or as verified ciphertext, or both (killed between rename and unlink:
//! the resumed run checks the ciphertext against the plaintext again and unlinks, or
//! redoes it if the plaintext changed). Never neither.
//! The journal (next to the registry's state) records what cannot be read back from
//! the disk: the request, and the mode and times of directories being emptied (their
//! mtime changes as we go).
//!
//! The plaintext is unlinked, not overwritten: on SSDs (wear levelling), copy-on-write
//! and journalling file systems (btrfs, ZFS, ext4 data=journal) and with snapshots, an
//! overwrite in place is not guaranteed to hit the blocks that held the data, so
//! "shredding" would promise what it cannot keep. Users who need that must encrypt on
//! a fresh file system, or use full-disk encryption / TRIM.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::{decrypt_file, encrypt_file, WriteContext};
use strongroom_core::filename::{FilenameKey, NameError};
use strongroom_core::header::{lower_size_for, Header, HEADER_READ_SIZE, XATTR_NAME};
use strongroom_core::keys::{KeySet, WrappingKey};
use strongroom_core::pubkey::RsaKeyPair;

use crate::context::{BackendKind, CryptoContext, FilenameEncryption, KeyType};
use crate::journal::{self, JournalError};
use crate::keysource::{tokens_for, KeyMaterial, KeySourceError};
use crate::manager::{blocking, CreateRequest, VaultError, VaultManager, VaultState};
use crate::registry::{validate_name, RegistryError};
use strongroom_core::kdf::DEFAULT_SALT;

/// The in-flight name in each directory being written (never an encrypted name, and
/// refused as a plain name in the folder being migrated).
pub const TMP_NAME: &str = ".strongroom-migrate.tmp";
/// Longest lower name (NAME_MAX of every Linux file system that can hold a vault).
const NAME_MAX: usize = 255;
/// Kept free beyond the largest file, for directories and the journal.
const SPACE_MARGIN: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error(transparent)]
    Key(#[from] KeySourceError),
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A precondition does not hold; nothing was changed.
    #[error("{}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    /// The file changed while it was being encrypted: its plaintext is kept, its
    /// ciphertext dropped. Close the program writing it and run again.
    #[error("{}: changed while being migrated; it was left as it is (close the programs using it and run the same command again to continue)", path.display())]
    Changed { path: PathBuf },
    /// Reading back did not give what was written: nothing was removed.
    #[error("{}: verification failed ({reason}); the original is kept", path.display())]
    Verify { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Crypto { path: PathBuf, reason: String },
    #[error("journal {}: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
}

impl JournalError for MigrateError {
    fn journal(path: PathBuf, reason: String) -> Self {
        MigrateError::Journal { path, reason }
    }
    fn io(path: PathBuf, what: &'static str, source: std::io::Error) -> Self {
        MigrateError::Io { path, what, source }
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> MigrateError + 'a {
    move |source| MigrateError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

fn refused(path: &Path, reason: impl Into<String>) -> MigrateError {
    MigrateError::Refused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn crypto(path: &Path, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Crypto {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Encrypt,
    Decrypt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigratePhase {
    /// Files are being converted.
    Files,
    /// Everything is verified; the vault is being removed (decrypt --remove-vault).
    RemovingVault,
}

/// Progress of a migration, as broadcast on the manager's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateProgress {
    pub direction: Direction,
    pub phase: MigratePhase,
    /// Regular files and symlinks handled in this run, of `files_total`.
    pub files_done: u64,
    pub files_total: u64,
    /// Plaintext bytes handled in this run, of `bytes_total`.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateSummary {
    pub vault: String,
    pub lower: PathBuf,
    /// Encrypt: the folder (now the vault's mount point). Decrypt: the output directory.
    pub target: PathBuf,
    pub files: u64,
    pub symlinks: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Files already done by an earlier, interrupted run (found and checked).
    pub already_done: u64,
    /// Names of multiply linked plain files that were linked to the file's already
    /// encrypted name: hard links are kept (unless a run was killed between encrypting
    /// one name and recording it in the journal; that name then becomes a copy).
    pub hard_links_kept: u64,
    /// Decrypt: the vault's lower directory and registry entry were removed.
    pub vault_removed: bool,
}

/// How the vault to be created looks (kept in the journal so a resumed run that died
/// before the registry entry was written can create it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultPlan {
    pub cipher: String,
    pub key_bytes: Option<usize>,
    pub filename_encryption: FilenameEncryption,
    pub xattr: bool,
    pub backend: BackendKind,
}

/// Mode and times of a directory, taken before anything in it was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub atime: i64,
    pub atime_nsec: i64,
}

impl DirMeta {
    fn of(m: &fs::Metadata) -> DirMeta {
        DirMeta {
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            atime: m.atime(),
            atime_nsec: m.atime_nsec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateJournal {
    pub direction: Direction,
    pub vault: String,
    /// Encrypt: the plain folder. Decrypt: the output directory.
    pub target: PathBuf,
    pub lower: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<VaultPlan>,
    #[serde(default)]
    pub remove_vault: bool,
    /// Set once every file is verified and the vault is being removed.
    #[serde(default)]
    pub removing: bool,
    /// Encrypt: directories being emptied, by hex of their path relative to the folder.
    #[serde(default)]
    pub dirs: BTreeMap<String, DirMeta>,
    /// Encrypt: multiply linked plain files already encrypted, "dev:ino" → hex of the
    /// ciphertext's path relative to the lower directory (to link the other names).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

impl MigrateJournal {
    pub fn load(path: &Path) -> Result<Option<MigrateJournal>, MigrateError> {
        journal::load(path)
    }

    pub fn save(&self, path: &Path) -> Result<(), MigrateError> {
        journal::save(path, self)
    }

    pub fn remove(path: &Path) -> Result<(), MigrateError> {
        fs::remove_file(path).map_err(io(path, "cannot remove the journal"))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// The keys of a vault, in memory: to write files, to read them back, and for names.
pub struct VaultKeys {
    write: WriteContext,
    lookup: KeySet,
    names: Option<FilenameKey>,
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys")
            .field("spec", &self.write.spec)
            .field("names", &self.names.is_some())
            .finish_non_exhaustive()
    }
}

impl VaultKeys {
    /// Checks `m` against the vault's sigs and loads its keys.
    pub fn new(ctx: &CryptoContext, m: &KeyMaterial) -> Result<VaultKeys, MigrateError> {
        let tokens = tokens_for(ctx, m)?;
        let bad = |e: &dyn std::fmt::Display| crypto(Path::new("vault key"), e);
        let spec = Cipher::from_name(&ctx.cipher)
            .and_then(|c| CipherSpec::new(c, ctx.key_bytes))
            .map_err(|e| bad(&e))?;
        let mut lookup = KeySet::new();
        let wrap = match m {
            KeyMaterial::Passphrase(_) => {
                let skek = tokens
                    .main
                    .skek()
                    .cloned()
                    .ok_or_else(|| bad(&"not a passphrase token"))?;
                lookup.add_passphrase(skek.clone());
                WrappingKey::Passphrase {
                    skek,
                    salt: ctx.salt,
                }
            }
            KeyMaterial::PemKey {
                keyfile,
                passphrase,
            } => {
                let pair = RsaKeyPair::load(keyfile, passphrase).map_err(|e| bad(&e))?;
                let public = WrappingKey::PublicKey(Arc::new(pair.public().clone()));
                lookup.add_private(Arc::new(pair));
                public
            }
        };
        let names = match tokens.fnek.as_ref().and_then(|t| t.skek()) {
            Some(skek) => Some(FilenameKey::new(skek.clone(), spec).map_err(|e| bad(&e))?),
            None => None,
        };
        Ok(VaultKeys {
            write: WriteContext {
                spec,
                keys: vec![wrap],
                xattr: ctx.xattr_metadata,
                fnek: names.is_some(),
            },
            lookup,
            names,
        })
    }

    fn encrypt_name(&self, plain: &OsStr, at: &Path) -> Result<OsString, MigrateError> {
        let lower = match &self.names {
            Some(k) => OsString::from_vec(k.encrypt(plain.as_bytes()).map_err(|e| crypto(at, e))?),
            None => plain.to_owned(),
        };
        if lower.len() > NAME_MAX {
            return Err(refused(
                at,
                format!(
                    "the name is too long to encrypt ({} bytes encrypted, at most {NAME_MAX}); shorten it",
                    lower.len()
                ),
            ));
        }
        Ok(lower)
    }

    fn decrypt_name(&self, lower: &OsStr, at: &Path) -> Result<OsString, MigrateError> {
        match &self.names {
            Some(k) => match k.decrypt(lower.as_bytes()) {
                Ok(p) => Ok(OsString::from_vec(p)),
                // A plain name in a vault with encrypted names is shown as it is.
                Err(NameError::NotEncrypted) => Ok(lower.to_owned()),
                Err(e) => Err(crypto(at, e)),
            },
            None => Ok(lower.to_owned()),
        }
    }
}

/// SHA-256 of everything that passes through.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    fn finish(self) -> ([u8; 32], u64) {
        (self.hash.finalize().into(), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hash_file(path: &Path) -> Result<([u8; 32], u64), MigrateError> {
    let f = File::open(path).map_err(io(path, "cannot open"))?;
    let mut h = Hashing::new(BufReader::with_capacity(1 << 16, f));
    std::io::copy(&mut h, &mut std::io::sink()).map_err(io(path, "cannot read"))?;
    Ok(h.finish())
}

/// Decrypts a lower file; its plaintext hash and size.
fn hash_lower(path: &Path, keys: &KeySet) -> Result<([u8; 32], u64), MigrateError> {
    let mut f = File::open(path).map_err(io(path, "cannot open"))?;
    let x = xattr::get(path, XATTR_NAME).ok().flatten();
    let mut h = Hashing::new(std::io::sink());
    decrypt_file(&mut f, x.as_deref(), keys, &mut h).map_err(|e| crypto(path, e))?;
    Ok(h.finish())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot sync the directory"))
}

fn timespec(sec: i64, nsec: i64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(sec, nsec)
}

/// Sets mode (not for symlinks), times and, as root, owner of `path` without following
/// a symlink.
fn set_attrs(path: &Path, m: &fs::Metadata) -> Result<(), MigrateError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(m.uid()), Some(m.gid()))
            .map_err(io(path, "cannot set the owner"))?;
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io(path, "cannot set the mode"))?;
    }
    utimensat(
        None,
        path,
        &timespec(m.atime(), m.atime_nsec()),
        &timespec(m.mtime(), m.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io(path, "cannot set the times")(e.into()))
}

fn set_dir_attrs(path: &Path, d: &DirMeta) -> Result<(), MigrateError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    fs::set_permissions(path, fs::Permissions::from_mode(d.mode))
        .map_err(io(path, "cannot set the mode"))?;
    utimensat(
        None,
        path,
        &timespec(d.atime, d.atime_nsec),
        &timespec(d.mtime, d.mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io(path, "cannot set the times")(e.into()))
}

/// What must not change between reading a file and unlinking it.
fn identity(m: &fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())
}

fn same_time(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec())
}

/// Sorted entries of a directory (deterministic order, reproducible runs).
fn entries(dir: &Path) -> Result<Vec<(OsString, fs::Metadata)>, MigrateError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir, "cannot list"))? {
        let e = e.map_err(io(dir, "cannot list"))?;
        let p = e.path();
        let m = fs::symlink_metadata(&p).map_err(io(&p, "cannot stat"))?;
        v.push((e.file_name(), m));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn free_bytes(path: &Path) -> Result<u64, MigrateError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| io(path, "statvfs")(e.into()))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Totals of a tree walk.
#[derive(Debug, Default)]
struct Scan {
    files: u64,
    bytes: u64,
    largest: u64,
}

/// Walks FOLDER before anything is changed: refuses what cannot be migrated.
fn scan_plain(dir: &Path, keys: &VaultKeys, s: &mut Scan) -> Result<(), MigrateError> {
    for (name, m) in entries(dir)? {
        let p = dir.join(&name);
        if name == TMP_NAME {
            if m.is_file() {
                // Ours: a decrypt-out of another run? Not in a folder to encrypt.
                return Err(refused(
                    &p,
                    "a leftover temporary file of a migration; remove it",
                ));
            }
            return Err(refused(
                &p,
                "this name is reserved for migrations; rename it",
            ));
        }
        keys.encrypt_name(&name, &p)?;
        let ft = m.file_type();
        if ft.is_dir() {
            scan_plain(&p, keys, s)?;
        } else if ft.is_file() {
            s.files += 1;
            s.bytes += m.len();
            s.largest = s.largest.max(m.len());
        } else if ft.is_symlink() {
            s.files += 1;
            let target = fs::read_link(&p).map_err(io(&p, "cannot read the link"))?;
            keys.encrypt_name(target.as_os_str(), &p)?;
        } else {
            return Err(refused(
                &p,
                "not a regular file, directory or symlink (a device, FIFO or socket cannot be encrypted); move it elsewhere first",
            ));
        }
    }
    Ok(())
}

/// Throttled progress reporting.
struct Reporter<'a> {
    p: MigrateProgress,
    last: Instant,
    sink: &'a mut dyn FnMut(&MigrateProgress),
}

impl<'a> Reporter<'a> {
    /// A reporter for a run over `scan`, announcing its start at once.
    fn start(direction: Direction, scan: &Scan, sink: &'a mut dyn FnMut(&MigrateProgress)) -> Self {
        let rep = Reporter {
            p: MigrateProgress {
                direction,
                phase: MigratePhase::Files,
                files_done: 0,
                files_total: scan.files,
                bytes_done: 0,
                bytes_total: scan.bytes,
            },
            last: Instant::now(),
            sink,
        };
        (rep.sink)(&rep.p);
        rep
    }

    fn step(&mut self, bytes: u64) {
        self.p.files_done += 1;
        self.p.bytes_done += bytes;
        if self.last.elapsed() >= Duration::from_millis(50)
            || self.p.files_done == self.p.files_total
        {
            self.last = Instant::now();
            (self.sink)(&self.p);
        }
    }
}

fn hex_key(rel: &Path) -> String {
    hex::encode(rel.as_os_str().as_bytes())
}

/// Checks the places of an in-place encryption (both canonical): a folder that is
/// not a mount point, a lower directory outside it on the same file system.
pub fn check_encrypt_paths(folder: &Path, lower: &Path) -> Result<(), MigrateError> {
    let fm = fs::symlink_metadata(folder).map_err(io(folder, "cannot stat"))?;
    if !fm.is_dir() {
        return Err(refused(folder, "not a directory"));
    }
    let parent = folder.parent().unwrap_or(Path::new("/"));
    let pm = fs::metadata(parent).map_err(io(parent, "cannot stat"))?;
    if pm.dev() != fm.dev() || pm.ino() == fm.ino() || crate::backend::is_mounted(folder) {
        return Err(refused(
            folder,
            "is a mount point (an unlocked vault, a drive...); migrate a folder, not a whole file system",
        ));
    }
    if lower.starts_with(folder) || folder.starts_with(lower) {
        return Err(refused(
            lower,
            "the lower directory and the folder must not contain each other",
        ));
    }
    let lower_fs = match fs::metadata(lower) {
        Ok(m) => m.dev(),
        Err(_) => {
            let lp = lower.parent().unwrap_or(Path::new("/"));
            fs::metadata(lp).map_err(io(lp, "cannot stat"))?.dev()
        }
    };
    if lower_fs != fm.dev() {
        return Err(refused(
            lower,
            "is on another file system than the folder: migrating in place frees each file's space as it goes, which only works on one file system (use `strongroomctl encrypt` to copy to another one)",
        ));
    }
    Ok(())
}

/// Everything that can be checked before a file is touched: entry kinds, name
/// lengths, free space for the largest file (`lower` or, before it exists, its parent).
fn preflight(folder: &Path, lower: &Path, keys: &VaultKeys) -> Result<Scan, MigrateError> {
    let mut scan = Scan::default();
    scan_plain(folder, keys, &mut scan)?;
    let at = if lower.exists() {
        lower
    } else {
        lower.parent().unwrap_or(Path::new("/"))
    };
    let free = free_bytes(at)?;
    let need = lower_size_for(scan.largest, 8192) + SPACE_MARGIN;
    if scan.files > 0 && free < need {
        return Err(refused(
            lower,
            format!(
                "not enough free space: the largest file needs {need} bytes while encrypted, {free} are free"
            ),
        ));
    }
    Ok(scan)
}

/// Encrypts every entry of `folder` into `lower` (both exist; the vault is registered
/// and locked; `journal` holds the request). Resumes whatever an earlier run left.
pub fn encrypt_folder(
    folder: &Path,
    lower: &Path,
    keys: &VaultKeys,
    j: &mut MigrateJournal,
    journal: &Path,
    progress: &mut dyn FnMut(&MigrateProgress),
) -> Result<MigrateSummary, MigrateError> {
    let scan = preflight(folder, lower, keys)?;
    let mut sum = MigrateSummary {
        vault: j.vault.clone(),
        lower: lower.to_owned(),
        target: folder.to_owned(),
        ..Default::default()
    };
    let mut rep = Reporter::start(Direction::Encrypt, &scan, progress);
    let mut w = EncWalk {
        lower_root: lower,
        keys,
        j,
        journal,
        folder,
        sum: &mut sum,
        rep: &mut rep,
    };
    w.dir(folder, lower, Path::new(""))?;
    sync_dir(lower)?;
    Ok(sum)
}

struct EncWalk<'a, 'r> {
    lower_root: &'a Path,
    keys: &'a VaultKeys,
    j: &'a mut MigrateJournal,
    journal: &'a Path,
    folder: &'a Path,
    sum: &'a mut MigrateSummary,
    rep: &'a mut Reporter<'r>,
}

impl EncWalk<'_, '_> {
    /// Migrates the contents of `plain` into the existing `lower`, then gives `lower`
    /// the directory's original mode and times.
    fn dir(&mut self, plain: &Path, lower: &Path, rel: &Path) -> Result<(), MigrateError> {
        let key = hex_key(rel);
        let meta = match self.j.dirs.get(&key) {
            Some(d) => *d,
            None => {
                let m = fs::symlink_metadata(plain).map_err(io(plain, "cannot stat"))?;
                let d = DirMeta::of(&m);
                self.j.dirs.insert(key.clone(), d);
                self.j.save(self.journal)?;
                d
            }
        };
        // The plaintext is removed from it as we go, whatever its mode says.
        fs::set_permissions(plain, fs::Permissions::from_mode(meta.mode | 0o700))
            .map_err(io(plain, "cannot make the directory writable"))?;
        fs::set_permissions(lower, fs::Permissions::from_mode(0o700))
            .map_err(io(lower, "cannot make the directory writable"))?;
        let tmp = lower.join(TMP_NAME);
        match fs::remove_file(&tmp) {
            Ok(()) => log::info!(
                "{}: removed the leftover of an interrupted run",
                tmp.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&tmp, "cannot remove")(e)),
        }
        for (name, m) in entries(plain)? {
            let p = plain.join(&name);
            let l = lower.join(self.keys.encrypt_name(&name, &p)?);
            let ft = m.file_type();
            if ft.is_dir() {
                match fs::create_dir(&l) {
                    Ok(()) => sync_dir(lower)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(&l, "cannot create the directory")(e)),
                }
                self.dir(&p, &l, &rel.join(&name))?;
                fs::remove_dir(&p).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                        MigrateError::Changed { path: p.clone() }
                    } else {
                        io(&p, "cannot remove the emptied directory")(e)
                    }
                })?;
                sync_dir(plain)?;
                self.sum.dirs += 1;
            } else if ft.is_file() {
                self.file(&p, &l, &m)?;
                self.sum.files += 1;
                self.sum.bytes += m.len();
                self.rep.step(m.len());
            } else if ft.is_symlink() {
                self.symlink(&p, &l, &m)?;
                self.sum.symlinks += 1;
                self.rep.step(0);
            }
        }
        set_dir_attrs(lower, &meta)?;
        if plain != self.folder {
            self.j.dirs.remove(&key);
            // Saved lazily: a stale entry is harmless (the directory is gone).
        } else {
            // The folder stays (as the mount point): give it its own mode back.
            fs::set_permissions(plain, fs::Permissions::from_mode(meta.mode))
                .map_err(io(plain, "cannot restore the mode"))?;
            self.j.dirs.clear();
            self.j.save(self.journal)?;
        }
        Ok(())
    }

    fn file(
        &mut self,
        plain: &Path,
        lower: &Path,
        before: &fs::Metadata,
    ) -> Result<(), MigrateError> {
        let dir = lower.parent().unwrap_or(Path::new("/"));
        if let Ok(lm) = fs::symlink_metadata(lower) {
            // Killed after the rename and before the unlink: the ciphertext was
            // verified then; check it against the plaintext as it is now.
            let same = lm.is_file()
                && same_time(&lm, before)
                && hash_lower(lower, &self.keys.lookup).ok() == Some(hash_file(plain)?);
            if same {
                self.record_link(lower, before)?;
                return self.unlink_plain(plain, before, true);
            }
            fs::remove_file(lower).map_err(io(lower, "cannot remove a stale copy"))?;
            sync_dir(dir)?;
        }
        if before.nlink() > 1 && self.link_to_earlier(plain, lower, before)? {
            return Ok(());
        }
        let tmp = dir.join(TMP_NAME);
        let src = File::open(plain).map_err(io(plain, "cannot open"))?;
        let mut input = Hashing::new(BufReader::with_capacity(1 << 16, src));
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "cannot create"))?;
        let x = encrypt_file(&self.keys.write, &mut input, &mut out).map_err(|e| match e {
            strongroom_core::file::FileError::Io(source) => MigrateError::Io {
                path: plain.to_owned(),
                what: "cannot encrypt",
                source,
            },
            e => crypto(plain, e),
        })?;
        if let Some(v) = x {
            xattr::set(&tmp, XATTR_NAME, &v).map_err(io(&tmp, "cannot set the header xattr"))?;
        }
        out.sync_all().map_err(io(&tmp, "cannot sync"))?;
        drop(out);
        let wrote = input.finish();
        let back = hash_lower(&tmp, &self.keys.lookup)?;
        if back != wrote {
            let _ = fs::remove_file(&tmp);
            return Err(MigrateError::Verify {
                path: plain.to_owned(),
                reason: "the ciphertext does not decrypt to what was read".into(),
            });
        }
        set_attrs(&tmp, before)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp, "cannot sync"))?;
        fs::rename(&tmp, lower).map_err(io(lower, "cannot rename into place"))?;
        sync_dir(dir)?;
        self.record_link(lower, before)?;
        self.unlink_plain(plain, before, false).inspect_err(|e| {
            if matches!(e, MigrateError::Changed { .. }) {
                // The new content is still in the plaintext; drop the old copy.
                let _ = fs::remove_file(lower).and_then(|_| File::open(dir)?.sync_all());
            }
        })
    }

    fn inode_key(m: &fs::Metadata) -> String {
        format!("{}:{}", m.dev(), m.ino())
    }

    /// Remembers the ciphertext of a multiply linked file, so that its other names
    /// become hard links of it.
    fn record_link(&mut self, lower: &Path, m: &fs::Metadata) -> Result<(), MigrateError> {
        let key = Self::inode_key(m);
        if m.nlink() > 1 && !self.j.links.contains_key(&key) {
            let rel = lower.strip_prefix(self.lower_root).unwrap_or(lower);
            self.j.links.insert(key, hex_key(rel));
            self.j.save(self.journal)?;
        }
        Ok(())
    }

    /// Another name of an already encrypted file: a hard link to its ciphertext, once
    /// that is checked to decrypt to this very content. False if there is none.
    fn link_to_earlier(
        &mut self,
        plain: &Path,
        lower: &Path,
        before: &fs::Metadata,
    ) -> Result<bool, MigrateError> {
        let Some(first) = self.j.links.get(&Self::inode_key(before)) else {
            return Ok(false);
        };
        let first = hex::decode(first).map_err(|e| MigrateError::Journal {
            path: self.journal.to_owned(),
            reason: format!("damaged link entry: {e}"),
        })?;
        let first = self.lower_root.join(OsStr::from_bytes(&first));
        let Ok(fm) = fs::symlink_metadata(&first) else {
            return Ok(false);
        };
        if !fm.is_file()
            || !same_time(&fm, before)
            || hash_lower(&first, &self.keys.lookup).ok() != Some(hash_file(plain)?)
        {
            return Ok(false);
        }
        let dir = lower.parent().unwrap_or(Path::new("/"));
        fs::hard_link(&first, lower).map_err(io(lower, "cannot link"))?;
        sync_dir(dir)?;
        self.unlink_plain(plain, before, false)
            .inspect_err(|_| drop(fs::remove_file(lower)))?;
        self.sum.hard_links_kept += 1;
        Ok(true)
    }

    fn unlink_plain(
        &mut self,
        plain: &Path,
        before: &fs::Metadata,
        resumed: bool,
    ) -> Result<(), MigrateError> {
        let now = fs::symlink_metadata(plain).map_err(io(plain, "cannot stat"))?;
        if identity(&now) != identity(before) {
            return Err(MigrateError::Changed {
                path: plain.to_owned(),
            });
        }
        fs::remove_file(plain).map_err(io(plain, "cannot remove the plaintext"))?;
        sync_dir(plain.parent().unwrap_or(Path::new("/")))?;
        if resumed {
            self.sum.already_done += 1;
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        plain: &Path,
        lower: &Path,
        m: &fs::Metadata,
    ) -> Result<(), MigrateError> {
        let target = fs::read_link(plain).map_err(io(plain, "cannot read the link"))?;
        let dir = lower.parent().unwrap_or(Path::new("/"));
        if let Ok(t) = fs::read_link(lower) {
            if self.keys.decrypt_name(t.as_os_str(), lower).ok().as_deref()
                == Some(target.as_os_str())
            {
                return self.unlink_plain(plain, m, true);
            }
            fs::remove_file(lower).map_err(io(lower, "cannot remove a stale link"))?;
        }
        let tmp = dir.join(TMP_NAME);
        let lt = self.keys.encrypt_name(target.as_os_str(), plain)?;
        std::os::unix::fs::symlink(&lt, &tmp).map_err(io(&tmp, "cannot create the link"))?;
        set_attrs(&tmp, m)?;
        let back = fs::read_link(&tmp).map_err(io(&tmp, "cannot read the link"))?;
        if self.keys.decrypt_name(back.as_os_str(), &tmp)? != target.as_os_str() {
            let _ = fs::remove_file(&tmp);
            return Err(MigrateError::Verify {
                path: plain.to_owned(),
                reason: "the link target does not decrypt back".into(),
            });
        }
        fs::rename(&tmp, lower).map_err(io(lower, "cannot rename into place"))?;
        sync_dir(dir)?;
        self.unlink_plain(plain, m, false)
    }
}

/// Plaintext size of a lower file from its header (no key needed).
fn plain_size(path: &Path) -> u64 {
    let mut buf = vec![0u8; HEADER_READ_SIZE];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    Header::peek_size(&buf[..n])
        .or_else(|| {
            let x = xattr::get(path, XATTR_NAME).ok().flatten()?;
            Header::parse(&x).ok().map(|h| h.size)
        })
        .unwrap_or(0)
}

fn scan_lower(dir: &Path, s: &mut Scan) -> Result<(), MigrateError> {
    for (name, m) in entries(dir)? {
        let p = dir.join(&name);
        if m.is_dir() {
            scan_lower(&p, s)?;
        } else if m.is_file() {
            let n = plain_size(&p);
            s.files += 1;
            s.bytes += n;
            s.largest = s.largest.max(n);
        } else if m.file_type().is_symlink() {
            s.files += 1;
        }
    }
    Ok(())
}

/// Checks the output directory of a decryption: new, or empty, or ours (resume).
pub fn check_decrypt_out(lower: &Path, out: &Path, resuming: bool) -> Result<(), MigrateError> {
    match fs::read_dir(out).map(|mut rd| rd.next().is_some()) {
        Ok(true) if !resuming => {
            return Err(refused(out, "is not empty; give a new or empty directory"))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io(out, "cannot create"))?
        }
        Err(e) => return Err(io(out, "cannot open")(e)),
    }
    let o = fs::canonicalize(out).map_err(io(out, "cannot resolve"))?;
    let l = fs::canonicalize(lower).map_err(io(lower, "cannot resolve"))?;
    if o.starts_with(&l) || l.starts_with(&o) {
        return Err(refused(
            out,
            "the output and the vault's lower directory must not contain each other",
        ));
    }
    Ok(())
}

/// Decrypts every file of `lower` into `out` (which exists). Entries already in `out`
/// are finished ones: each is renamed into place only after it was verified.
pub fn decrypt_vault(
    lower: &Path,
    out: &Path,
    keys: &VaultKeys,
    vault: &str,
    progress: &mut dyn FnMut(&MigrateProgress),
) -> Result<MigrateSummary, MigrateError> {
    let mut scan = Scan::default();
    scan_lower(lower, &mut scan)?;
    let free = free_bytes(out)?;
    if scan.bytes + SPACE_MARGIN > free {
        return Err(refused(
            out,
            format!(
                "not enough free space: the vault holds {} bytes of files, {free} are free",
                scan.bytes
            ),
        ));
    }
    let mut sum = MigrateSummary {
        vault: vault.to_owned(),
        lower: lower.to_owned(),
        target: out.to_owned(),
        ..Default::default()
    };
    let mut rep = Reporter::start(Direction::Decrypt, &scan, progress);
    decrypt_dir(lower, out, keys, &mut sum, &mut rep, &mut HashMap::new())?;
    Ok(sum)
}

fn decrypt_dir(
    lower: &Path,
    out: &Path,
    keys: &VaultKeys,
    sum: &mut MigrateSummary,
    rep: &mut Reporter<'_>,
    // Multiply linked lower files already written out: their other names are linked.
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), MigrateError> {
    let dm = fs::metadata(lower).map_err(io(lower, "cannot stat"))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o700))
        .map_err(io(out, "cannot make the directory writable"))?;
    let tmp = out.join(TMP_NAME);
    let _ = fs::remove_file(&tmp);
    for (name, m) in entries(lower)? {
        let l = lower.join(&name);
        if name == TMP_NAME {
            // An interrupted encryption's leftover: not a file of the vault.
            continue;
        }
        let o = out.join(keys.decrypt_name(&name, &l)?);
        if m.is_dir() {
            match fs::create_dir(&o) {
                Ok(()) => sync_dir(out)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&o, "cannot create the directory")(e)),
            }
            decrypt_dir(&l, &o, keys, sum, rep, links)?;
            sum.dirs += 1;
            continue;
        }
        let done = fs::symlink_metadata(&o).is_ok();
        let inode = (m.dev(), m.ino());
        let earlier = links.get(&inode).filter(|_| m.is_file() && m.nlink() > 1);
        if done {
            sum.already_done += 1;
        } else if let Some(first) = earlier.filter(|f| f.is_file()) {
            fs::hard_link(first, &o).map_err(io(&o, "cannot link"))?;
            sync_dir(out)?;
            sum.hard_links_kept += 1;
        } else if m.is_file() {
            let mut src = File::open(&l).map_err(io(&l, "cannot open"))?;
            let x = xattr::get(&l, XATTR_NAME).ok().flatten();
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp, "cannot create"))?;
            let mut w = Hashing::new(std::io::BufWriter::with_capacity(1 << 16, f));
            decrypt_file(&mut src, x.as_deref(), &keys.lookup, &mut w)
                .map_err(|e| crypto(&l, e))?;
            let (hash, n) = (w.hash.clone().finalize().into(), w.bytes);
            let f = w
                .inner
                .into_inner()
                .map_err(|e| io(&tmp, "cannot write")(e.into_error()))?;
            f.sync_all().map_err(io(&tmp, "cannot sync"))?;
            drop(f);
            if hash_file(&tmp)? != (hash, n) {
                let _ = fs::remove_file(&tmp);
                return Err(MigrateError::Verify {
                    path: l,
                    reason: "the written file does not read back as decrypted".into(),
                });
            }
            set_attrs(&tmp, &m)?;
            fs::rename(&tmp, &o).map_err(io(&o, "cannot rename into place"))?;
            sync_dir(out)?;
        } else if m.file_type().is_symlink() {
            let t = fs::read_link(&l).map_err(io(&l, "cannot read the link"))?;
            let plain = keys.decrypt_name(t.as_os_str(), &l)?;
            std::os::unix::fs::symlink(&plain, &tmp).map_err(io(&tmp, "cannot create the link"))?;
            set_attrs(&tmp, &m)?;
            fs::rename(&tmp, &o).map_err(io(&o, "cannot rename into place"))?;
            sync_dir(out)?;
        } else {
            return Err(refused(&l, "not a regular file, directory or symlink"));
        }
        if m.is_file() {
            if m.nlink() > 1 {
                links.entry(inode).or_insert(o.clone());
            }
            sum.files += 1;
            let n = plain_size(&l);
            sum.bytes += n;
            rep.step(n);
        } else {
            sum.symlinks += 1;
            rep.step(0);
        }
    }
    set_dir_attrs(out, &DirMeta::of(&dm))?;
    Ok(())
}

/// After a verified decryption: removes the lower directory (no file in it is the only
/// copy any more).
pub fn remove_lower(lower: &Path) -> Result<(), MigrateError> {
    match fs::remove_dir_all(lower) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(lower, "cannot remove the vault's lower directory")(e)),
    }
    if let Some(p) = lower.parent() {
        sync_dir(p)?;
    }
    Ok(())
}

/// The default lower directory of an in-place encryption: `.NAME.strongroom` beside it.
pub fn default_lower(folder: &Path) -> Option<PathBuf> {
    let name = folder.file_name()?;
    let mut n = OsString::from(".");
    n.push(name);
    n.push(".strongroom");
    Some(folder.with_file_name(n))
}

/// What `migrate encrypt` needs.
#[derive(Debug)]
pub struct EncryptRequest {
    pub name: String,
    pub folder: PathBuf,
    /// The lower directory; `.FOLDER.strongroom` beside the folder when `None`.
    pub lower: Option<PathBuf>,
    pub material: KeyMaterial,
    pub plan: VaultPlan,
}

fn dup(m: &KeyMaterial) -> KeyMaterial {
    match m {
        KeyMaterial::Passphrase(p) => KeyMaterial::Passphrase(p.clone()),
        KeyMaterial::PemKey {
            keyfile,
            passphrase,
        } => KeyMaterial::PemKey {
            keyfile: keyfile.clone(),
            passphrase: passphrase.clone(),
        },
    }
}

/// The context `create` will give the vault (without its sigs).
fn planned_context(plan: &VaultPlan, m: &KeyMaterial) -> Result<CryptoContext, MigrateError> {
    let bad = |e: &dyn std::fmt::Display| crypto(Path::new("--cipher"), e);
    let cipher = Cipher::from_name(&plan.cipher).map_err(|e| bad(&e))?;
    let key_bytes = plan.key_bytes.unwrap_or(cipher.key_sizes()[0]);
    CipherSpec::new(cipher, key_bytes).map_err(|e| bad(&e))?;
    Ok(CryptoContext {
        key_type: match m {
            KeyMaterial::Passphrase(_) => KeyType::Passphrase,
            KeyMaterial::PemKey { .. } => KeyType::Openssl,
        },
        cipher: cipher.name().to_owned(),
        key_bytes,
        passthrough: false,
        filename_encryption: plan.filename_encryption,
        xattr_metadata: plan.xattr,
        sigs: vec![],
        fnek_sig: None,
        salt: DEFAULT_SALT,
    })
}

fn pending(j: &MigrateJournal, path: &Path) -> MigrateError {
    MigrateError::Journal {
        path: path.to_owned(),
        reason: format!(
            "an interrupted {} of vault {:?} ({} and {}) is pending; finish it with `strongroomctl migrate resume {}`",
            match j.direction {
                Direction::Encrypt => "encryption",
                Direction::Decrypt => "decryption",
            },
            j.vault,
            j.target.display(),
            j.lower.display(),
            j.vault
        ),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, MigrateError> {
    // Resolve symlinks too: the checks compare real places.
    match fs::canonicalize(p) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = p
                .file_name()
                .ok_or_else(|| refused(p, "not a usable path"))?;
            Ok(fs::canonicalize(parent)
                .map_err(io(parent, "cannot resolve"))?
                .join(name))
        }
        Err(e) => Err(io(p, "cannot resolve")(e)),
    }
}

impl VaultManager {
    /// The journal of an unfinished migration of `vault`.
    pub fn migrate_journal_path(&self, vault: &str) -> PathBuf {
        self.config()
            .state_dir
            .join(format!("migrate-{vault}.journal"))
    }

    /// The unfinished migration of `vault`, if any.
    pub fn pending_migration(&self, vault: &str) -> Result<Option<MigrateJournal>, VaultError> {
        Ok(MigrateJournal::load(&self.migrate_journal_path(vault))?)
    }

    /// Encrypts a folder in place into a new vault mounted on that folder (or resumes
    /// the same request). Progress is broadcast as [`VaultState::Migrating`].
    pub async fn migrate_encrypt(&self, req: EncryptRequest) -> Result<MigrateSummary, VaultError> {
        validate_name(&req.name)?;
        let folder = absolute(&req.folder)?;
        let lower = match &req.lower {
            Some(l) => absolute(l)?,
            None => {
                default_lower(&folder).ok_or_else(|| refused(&folder, "not a usable folder"))?
            }
        };
        let jpath = self.migrate_journal_path(&req.name);
        let j = match MigrateJournal::load(&jpath)? {
            Some(j) => {
                if (j.direction, &j.target, &j.lower) != (Direction::Encrypt, &folder, &lower) {
                    return Err(pending(&j, &jpath).into());
                }
                j
            }
            None => {
                // The name must be free before anything is written.
                match self.get(&req.name).await {
                    Ok(_) => return Err(RegistryError::Exists(req.name.clone()).into()),
                    Err(VaultError::Registry(RegistryError::NotFound(_))) => {}
                    Err(e) => return Err(e),
                }
                check_encrypt_paths(&folder, &lower)?;
                // Refusals leave nothing behind: check everything before the journal.
                let ctx = planned_context(&req.plan, &req.material)?;
                let m = dup(&req.material);
                let (f, l) = (folder.clone(), lower.clone());
                blocking(move || -> Result<(), MigrateError> {
                    preflight(&f, &l, &VaultKeys::new(&ctx, &m)?).map(drop)
                })
                .await??;
                if fs::read_dir(&lower).is_ok_and(|mut rd| rd.next().is_some()) {
                    return Err(
                        refused(&lower, "exists and is not empty; choose another --lower").into(),
                    );
                }
                let j = MigrateJournal {
                    direction: Direction::Encrypt,
                    vault: req.name.clone(),
                    target: folder,
                    lower,
                    plan: Some(req.plan.clone()),
                    remove_vault: false,
                    removing: false,
                    dirs: BTreeMap::new(),
                    links: BTreeMap::new(),
                };
                j.save(&jpath)?;
                j
            }
        };
        self.finish(j, req.material, false).await
    }

    /// Decrypts a locked vault out into `out` (new or empty), optionally removing the
    /// vault once everything is verified (or resumes the same request).
    pub async fn migrate_decrypt(
        &self,
        name: &str,
        material: KeyMaterial,
        out: &Path,
        remove_vault: bool,
    ) -> Result<MigrateSummary, VaultError> {
        let out = absolute(out)?;
        let jpath = self.migrate_journal_path(name);
        let j = match MigrateJournal::load(&jpath)? {
            Some(j) => {
                if (j.direction, &j.target) != (Direction::Decrypt, &out) {
                    return Err(pending(&j, &jpath).into());
                }
                j
            }
            None => {
                let v = self.get(name).await?;
                // A mistyped passphrase must not leave a pending migration behind.
                let (ctx, m) = (v.context.clone(), dup(&material));
                blocking(move || VaultKeys::new(&ctx, &m).map(drop)).await??;
                check_decrypt_out(&v.lower, &out, false)?;
                let j = MigrateJournal {
                    direction: Direction::Decrypt,
                    vault: name.to_owned(),
                    target: out,
                    lower: v.lower,
                    plan: None,
                    remove_vault,
                    removing: false,
                    dirs: BTreeMap::new(),
                    links: BTreeMap::new(),
                };
                j.save(&jpath)?;
                j
            }
        };
        self.finish(j, material, remove_vault).await
    }

    /// Finishes the pending migration of `vault`, whichever direction.
    pub async fn migrate_resume(
        &self,
        vault: &str,
        material: KeyMaterial,
    ) -> Result<MigrateSummary, VaultError> {
        let j = self.pending_migration(vault)?.ok_or_else(|| {
            refused(
                &self.migrate_journal_path(vault),
                "no unfinished migration of this vault",
            )
        })?;
        self.finish(j, material, false).await
    }

    async fn finish(
        &self,
        j: MigrateJournal,
        material: KeyMaterial,
        remove_vault: bool,
    ) -> Result<MigrateSummary, VaultError> {
        let name = j.vault.clone();
        let r = match j.direction {
            Direction::Encrypt => self.run_encrypt(j, material).await,
            Direction::Decrypt => self.run_decrypt(j, material, remove_vault).await,
        };
        if let Err(e) = &r {
            self.emit(&name, VaultState::Error(e.to_string()));
        }
        if !r.as_ref().is_ok_and(|s| s.vault_removed) {
            self.emit(&name, VaultState::Locked);
        }
        r
    }

    async fn run_encrypt(
        &self,
        mut j: MigrateJournal,
        material: KeyMaterial,
    ) -> Result<MigrateSummary, VaultError> {
        let jpath = self.migrate_journal_path(&j.vault);
        check_encrypt_paths(&j.target, &j.lower)?;
        let v = match self.get(&j.vault).await {
            Ok(v) => v,
            Err(VaultError::Registry(RegistryError::NotFound(_))) => {
                // Interrupted before the vault was registered.
                let plan = j.plan.clone().ok_or_else(|| pending(&j, &jpath))?;
                self.create(CreateRequest {
                    name: j.vault.clone(),
                    lower: j.lower.clone(),
                    mountpoint: j.target.clone(),
                    material: dup(&material),
                    cipher: plan.cipher,
                    key_bytes: plan.key_bytes,
                    filename_encryption: plan.filename_encryption,
                    passthrough: false,
                    xattr: plan.xattr,
                    backend: plan.backend,
                    key_drive: None,
                })
                .await?
            }
            Err(e) => return Err(e),
        };
        if (&v.lower, &v.mountpoint) != (&j.lower, &j.target) {
            return Err(pending(&j, &jpath).into());
        }
        let m = self.clone();
        blocking(move || -> Result<MigrateSummary, VaultError> {
            let keys = VaultKeys::new(&v.context, &material)?;
            let (folder, lower) = (j.target.clone(), j.lower.clone());
            let mut emit = |p: &MigrateProgress| m.emit(&v.name, VaultState::Migrating(p.clone()));
            let sum = encrypt_folder(&folder, &lower, &keys, &mut j, &jpath, &mut emit)?;
            MigrateJournal::remove(&jpath)?;
            Ok(sum)
        })
        .await?
    }

    async fn run_decrypt(
        &self,
        mut j: MigrateJournal,
        material: KeyMaterial,
        remove_vault: bool,
    ) -> Result<MigrateSummary, VaultError> {
        let jpath = self.migrate_journal_path(&j.vault);
        if remove_vault && !j.remove_vault {
            j.remove_vault = true;
            j.save(&jpath)?;
        }
        let v = match self.get(&j.vault).await {
            Ok(v) => Some(v),
            // Interrupted after the registry entry went: only the rest of the removal is left.
            Err(VaultError::Registry(RegistryError::NotFound(_))) if j.removing => None,
            Err(e) => return Err(e),
        };
        if let Some(v) = &v {
            if crate::backend::is_mounted(&v.mountpoint) {
                return Err(VaultError::Unlocked(v.name.clone()));
            }
        }
        let m = self.clone();
        let reg = self.config().registry.clone();
        blocking(move || -> Result<MigrateSummary, VaultError> {
            let mut sum = MigrateSummary {
                vault: j.vault.clone(),
                lower: j.lower.clone(),
                target: j.target.clone(),
                ..Default::default()
            };
            if !j.removing {
                let v = v.as_ref().ok_or_else(|| pending(&j, &jpath))?;
                let keys = VaultKeys::new(&v.context, &material)?;
                check_decrypt_out(&j.lower, &j.target, true)?;
                let mut emit =
                    |p: &MigrateProgress| m.emit(&v.name, VaultState::Migrating(p.clone()));
                sum = decrypt_vault(&j.lower, &j.target, &keys, &j.vault, &mut emit)?;
            }
            if j.remove_vault {
                j.removing = true;
                j.save(&jpath)?;
                m.emit(
                    &j.vault,
                    VaultState::Migrating(MigrateProgress {
                        direction: Direction::Decrypt,
                        phase: MigratePhase::RemovingVault,
                        files_done: sum.files + sum.symlinks,
                        files_total: sum.files + sum.symlinks,
                        bytes_done: sum.bytes,
                        bytes_total: sum.bytes,
                    }),
                );
                remove_lower(&j.lower)?;
                if v.is_some() {
                    reg.remove(&j.vault)?;
                }
                sum.vault_removed = true;
            }
            MigrateJournal::remove(&jpath)?;
            Ok(sum)
        })
        .await?
    }
}
