//! The FUSE operations over the lower directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustc_hash::FxHashMap;
use rustix::fs::OFlags;
use strongroom_core::extent::FileKey;
use strongroom_core::header::{Header, FLAG_METADATA_IN_XATTR, MIN_METADATA_SIZE, XATTR_NAME};
use strongroom_core::kdf::{Sig, Skek};
use strongroom_core::keys::{unwrap_fek, wrap_fek, KeyError, KeyLookup, WrappingKey};
use zeroize::Zeroizing;

use crate::ahead::{self, ReadAhead};
use crate::cryptfile::CryptFile;
use crate::inode::{Inodes, NodeHint, ROOT};
use crate::listing::{DirEntry, DirStamp, Edit, Listings, Seen};
use crate::lower::{self, At, Meta, Reaper};
use crate::names::{NameCodec, LOWER_NAME_MAX};
use crate::sizes::{Prefetcher, SizeCache};
use crate::{sys, MountError, Options};

/// How long the kernel may trust attributes and names it got from us. We are the only
/// writer of the lower directory while mounted (as with the kernel's eCryptfs, which
/// keeps lower dentries until evicted), and the kernel itself updates or invalidates
/// what our own operations change; 30 s as securefs (gocryptfs: 1 s). Saves a LOOKUP
/// per name for each pass over a tree after the first (`stat`, `cat`, `rm -rf`, renames).
const TTL: Duration = Duration::from_secs(30);
const MAX_WRITE: u32 = 1 << 20;
/// Lower bytes read ahead when a file is opened (header + first extents).
const OPEN_READAHEAD: usize = 64 * 1024;
/// READDIRPLUS entries whose headers are read together.
const PLUS_BATCH: usize = 64;
/// About the most entries one READDIRPLUS reply holds: 32 KiB, as `readdir(3)` asks for,
/// of entries of at least 152 bytes.
const PLUS_REPLY_MAX: usize = 256;
/// Directory fds kept open (by node id), cleared when full; a miss re-opens the
/// directory from its nearest cached ancestor, one component at a time.
pub(crate) const DIR_FDS_MAX: usize = 4096;

type Res<T> = Result<T, Errno>;

/// Renames `from` to `to` with the `renameat2` `flags`, and returns what `to` was
/// before (`None` if nothing). Unless asked to exchange, the rename is tried as
/// `RENAME_NOREPLACE` first: the target rarely exists (the kernel has just looked it
/// up in vain), and then that one call replaces a `stat` of it and the rename.
fn rename_lower(from: &At, to: &At, flags: u32) -> io::Result<Option<Meta>> {
    if flags & libc::RENAME_EXCHANGE == 0 {
        match from.rename_to(to, flags | libc::RENAME_NOREPLACE) {
            Ok(()) => return Ok(None),
            // EINVAL: a lower filesystem without RENAME_NOREPLACE.
            Err(e)
                if flags & libc::RENAME_NOREPLACE == 0
                    && matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EINVAL)) => {}
            Err(e) => return Err(e),
        }
    }
    let dst = to.stat().ok();
    from.rename_to(to, flags)?;
    Ok(dst)
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// The mount's own keys first, then the key source: like the kernel, which checks the
/// mount's `ecryptfs_sig` tokens before searching the keyring. Saves a keyring search
/// per open.
struct MountKeys<'a>(&'a Options);

impl KeyLookup for MountKeys<'_> {
    fn skek(&self, sig: &Sig) -> Option<Skek> {
        self.0
            .wrapping
            .iter()
            .find_map(|k| match k {
                WrappingKey::Passphrase { skek, .. } if skek.sig() == *sig => Some(skek.clone()),
                _ => None,
            })
            .or_else(|| self.0.lookup.skek(sig))
    }

    fn pk_decrypt(&self, sig: &Sig, efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        self.0.lookup.pk_decrypt(sig, efek)
    }
}

/// An open regular file: shared per inode so every handle sees one size and key.
type Shared = Arc<RwLock<CryptFile>>;

#[derive(Debug)]
enum Handle {
    Crypt {
        ino: u64,
        file: Shared,
    },
    /// Plaintext passthrough, or the encrypted view (raw lower bytes after `prefix`).
    Raw {
        file: File,
        prefix: Vec<u8>,
    },
    Dir {
        entries: Arc<Vec<DirEntry>>,
        /// Sizes of some of its files were known at opendir: walked before (see
        /// `readdirplus`).
        walked: bool,
        /// The inode table's epoch at opendir, when the kernel may copy the listing
        /// (CACHE_DIR) from this open's replies.
        copy: Option<u64>,
    },
}

/// The file system. Every method takes `&self`; state is behind fine-grained locks so
/// that fuser's worker threads run requests in parallel.
#[derive(Debug)]
pub struct EcryptFs {
    opts: Options,
    names: Arc<NameCodec>,
    /// New files get header flag 0x08 (the mount encrypts names).
    encrypt_names: bool,
    inodes: RwLock<Inodes>,
    handles: RwLock<FxHashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Open regular files by node id, with their open count.
    open: Mutex<FxHashMap<u64, (Shared, usize)>>,
    sizes: Arc<SizeCache>,
    /// Background header reads of listed directories.
    prefetch: Prefetcher,
    /// Listings kept between opens, edited by our own changes.
    listings: Listings,
    /// Listings of the directories a walk opens next.
    ahead: ReadAhead,
    /// Frees unlinked lower files after the reply.
    reaper: Reaper,
    /// The lower root directory (`O_PATH`) and the root as a name in its parent.
    root_fd: Arc<OwnedFd>,
    root_at: At,
    /// `O_PATH` fds of directories by node id (see [`EcryptFs::dir_fd`]).
    dirs: Mutex<FxHashMap<u64, Arc<OwnedFd>>>,
    as_root: bool,
}

/// Write-only opens bypass the page cache (FOPEN_DIRECT_IO): such a file can be
/// neither read nor mapped, so the cache has nothing to serve, and the writes reach us
/// as the caller made them. Through the cache, the kernel splits a write that starts
/// inside a page in two requests, and asks for `security.capability` before the first
/// write of every file; direct writes carry the set-ID kill flag instead. `tar -x` of
/// 5000 files: 7800 fewer requests of 42000. Readers of the same file see the writes:
/// each one drops the kernel's attributes of the file, so the next cached read checks
/// the mtime and drops stale pages (FUSE_AUTO_INVAL_DATA).
///
/// They get no FLUSH either (FOPEN_NOFLUSH): there is nothing cached to write back, and
/// a small file's size is already recorded by each write (`cryptfile::EAGER_SIZE_MAX`);
/// a larger one's final size is recorded at RELEASE, right after the close. One round
/// trip fewer per file written.
fn write_only_io(open_flags: i32) -> FopenFlags {
    if open_flags & libc::O_ACCMODE == libc::O_WRONLY {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
    } else {
        FopenFlags::empty()
    }
}

/// The inode number a listing reply gives an entry: its node id if the kernel holds it,
/// else the lower one, a guess a later lookup may contradict (`guessed` is then set).
fn listed_ino(nodes: &Inodes, e: &DirEntry, guessed: &mut bool) -> INodeNo {
    INodeNo(nodes.known_hinted(e.lower_id, &e.node).unwrap_or_else(|| {
        *guessed = true;
        e.lower_id.1
    }))
}

fn attr_of(ino: u64, meta: &Meta, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks,
        atime: time(meta.atime.0, meta.atime.1),
        mtime: time(meta.mtime.0, meta.mtime.1),
        ctime: time(meta.ctime.0, meta.ctime.1),
        crtime: UNIX_EPOCH,
        kind: meta.kind(),
        perm: (meta.mode & 0o7777) as u16,
        nlink: meta.nlink as u32,
        uid: meta.uid,
        gid: meta.gid,
        rdev: meta.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The entry of a name that is not there (node id 0; the kernel reads nothing else).
const NO_ENTRY: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
};

/// Whether the calling process is in group `gid` (its group or a supplementary one, as
/// `in_group_p` in the kernel).
fn caller_in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", req.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

fn time(s: i64, ns: i64) -> SystemTime {
    let ns = ns.clamp(0, 999_999_999) as u32;
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns)
    } else {
        UNIX_EPOCH - Duration::new(s.unsigned_abs(), 0) + Duration::new(0, ns)
    }
}

fn timespec(t: TimeOrNow) -> Option<(i64, i64)> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => Some(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                (s, ns)
            }
        }),
    }
}

impl EcryptFs {
    pub fn new(mut opts: Options) -> Result<EcryptFs, MountError> {
        let lower_err = |source| MountError::Lower {
            path: opts.lower.clone(),
            source,
        };
        let root = std::fs::canonicalize(&opts.lower).map_err(lower_err)?;
        let root_fd = lower::open_dir_path(rustix::fs::CWD, root.as_os_str())
            .map(Arc::new)
            .map_err(lower_err)?;
        let meta = lower::fstat(&*root_fd).map_err(lower_err)?;
        // The root as a name in its parent, for the calls that take one (stat, chmod...).
        let root_at = match (root.parent(), root.file_name()) {
            (Some(parent), Some(name)) => At::new(
                lower::open_dir_path(rustix::fs::CWD, parent.as_os_str())
                    .map(Arc::new)
                    .map_err(lower_err)?,
                name.to_owned(),
            ),
            _ => At::new(root_fd.clone(), ".".into()),
        };
        if opts.wrapping.is_empty() && !(opts.read_only || opts.encrypted_view) {
            return Err(MountError::NoWrappingKey);
        }
        let fnek = opts.fnek.take();
        let encrypt_names = fnek.is_some();
        let names = Arc::new(match fnek {
            Some(k) if !opts.encrypted_view => NameCodec::Fnek(Box::new(k)),
            _ => NameCodec::Plain,
        });
        let sizes = Arc::new(SizeCache::new(opts.encrypted_view, opts.xattr_metadata));
        Ok(EcryptFs {
            ahead: ReadAhead::new(names.clone()),
            reaper: Reaper::new(),
            names,
            encrypt_names,
            inodes: RwLock::new(Inodes::new(meta.id())),
            handles: RwLock::default(),
            next_fh: AtomicU64::new(1),
            open: Mutex::default(),
            sizes: sizes.clone(),
            prefetch: Prefetcher::new(sizes),
            listings: Listings::new(TTL),
            as_root: sys::geteuid() == 0,
            root_fd,
            root_at,
            dirs: Mutex::default(),
            opts,
        })
    }

    fn read_only(&self) -> bool {
        self.opts.read_only || self.opts.encrypted_view
    }

    fn writable(&self) -> Res<()> {
        if self.read_only() {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The `O_PATH` fd of a directory node: cached, else opened from its nearest
    /// cached ancestor one component at a time (`O_NOFOLLOW`). An fd follows its
    /// directory through renames, so entries stay valid until the node is forgotten
    /// or its directory removed.
    fn dir_fd(&self, ino: u64) -> Res<Arc<OwnedFd>> {
        if ino == ROOT {
            return Ok(self.root_fd.clone());
        }
        let cached = |i: u64| -> Res<Option<Arc<OwnedFd>>> {
            Ok(self.dirs.lock().map_err(|_| Errno::EIO)?.get(&i).cloned())
        };
        if let Some(fd) = cached(ino)? {
            return Ok(fd);
        }
        // Names from `ino` up to the first ancestor with an fd.
        let mut chain = Vec::new();
        let mut cur = ino;
        let mut fd = loop {
            if cur == ROOT {
                break self.root_fd.clone();
            }
            if let Some(fd) = cached(cur)? {
                break fd;
            }
            let (parent, name) = self
                .inodes
                .read()
                .map_err(|_| Errno::EIO)?
                .link(cur)
                .ok_or(Errno::ENOENT)?;
            chain.push((cur, name));
            cur = parent;
            if chain.len() > 8192 {
                return Err(Errno::ELOOP); // a cycle would be a bug; never loop forever
            }
        };
        for (node, name) in chain.into_iter().rev() {
            fd = Arc::new(lower::open_dir_path(&*fd, &name).map_err(errno)?);
            let mut dirs = self.dirs.lock().map_err(|_| Errno::EIO)?;
            if dirs.len() >= DIR_FDS_MAX {
                dirs.clear();
            }
            dirs.insert(node, fd.clone());
        }
        Ok(fd)
    }

    /// Forgets the cached fd of a directory node (forgotten or removed).
    fn drop_dir_fd(&self, ino: u64) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.remove(&ino);
        }
    }

    /// The lower file of a node, as a name in its parent directory.
    fn at(&self, ino: u64) -> Res<At> {
        if ino == ROOT {
            return Ok(self.root_at.clone());
        }
        let (parent, name) = self
            .inodes
            .read()
            .map_err(|_| Errno::EIO)?
            .link(ino)
            .ok_or(Errno::ENOENT)?;
        Ok(At::new(self.dir_fd(parent)?, name))
    }

    /// The lower file for the upper `name` in `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> Res<At> {
        let lower = self.names.to_lower(name)?;
        Ok(At::new(self.dir_fd(parent)?, lower))
    }

    fn handle(&self, fh: FileHandle) -> Res<Arc<Handle>> {
        self.handles
            .read()
            .map_err(|_| Errno::EIO)?
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.handles.write() {
            map.insert(fh, Arc::new(h));
        }
        FileHandle(fh)
    }

    fn shared(&self, ino: u64) -> Option<Shared> {
        self.open.lock().ok()?.get(&ino).map(|(f, _)| f.clone())
    }

    // ----- sizes -----

    /// The upper size of a lower file (regular: header size field; symlink: the
    /// decrypted target length).
    fn upper_size(&self, ino: Option<u64>, at: &At, meta: &Meta) -> u64 {
        if meta.is_symlink() {
            if let NameCodec::Fnek(_) = *self.names {
                if let Ok(t) = at.readlink() {
                    if let Ok(up) = self.names.target_to_upper(&t) {
                        return up.len() as u64;
                    }
                }
            }
            return meta.size;
        }
        if !meta.is_file() {
            return meta.size;
        }
        if let Some(f) = ino.and_then(|i| self.shared(i)) {
            if let Ok(f) = f.read() {
                return f.size();
            }
        }
        self.sizes.get_or_read(at, meta)
    }

    fn attr(&self, ino: u64, at: &At, meta: &Meta) -> FileAttr {
        attr_of(ino, meta, self.upper_size(Some(ino), at, meta))
    }

    /// Looks up a lower entry, registers one kernel reference and returns its attributes.
    fn entry(&self, parent: u64, at: &At) -> Res<FileAttr> {
        let meta = at.stat().map_err(errno)?;
        self.entry_with(parent, at, &meta, None)
    }

    /// [`Self::entry`] for a stat'ed file, whose upper size may be known (a new file:
    /// no header read).
    fn entry_with(&self, parent: u64, at: &At, meta: &Meta, size: Option<u64>) -> Res<FileAttr> {
        let ino = self
            .inodes
            .write()
            .map_err(|_| Errno::EIO)?
            .lookup(parent, &at.name, meta.id());
        Ok(match size {
            Some(s) => attr_of(ino, meta, s),
            None => self.attr(ino, at, meta),
        })
    }

    /// New lower objects belong to the caller when the daemon runs as root (allow_other).
    fn set_owner(&self, req: &Request, at: &At) -> Res<()> {
        if !self.as_root || req.uid() == 0 && req.gid() == 0 {
            return Ok(());
        }
        // A set-gid directory hands its group down, as on any POSIX file system.
        let gid = match lower::fstat(&*at.dir) {
            Ok(m) if m.mode & libc::S_ISGID != 0 => m.gid,
            _ => req.gid(),
        };
        at.chown(Some(req.uid()), Some(gid)).map_err(errno)
    }

    // ----- encrypted files -----

    fn new_header(&self) -> Res<(FileKey, Header)> {
        let key = FileKey::generate(self.opts.spec).map_err(|e| {
            log::error!("cannot make a file key: {e}");
            Errno::EIO
        })?;
        let packets = wrap_fek(&key, &self.opts.wrapping).map_err(|e| {
            log::error!("cannot wrap a new file key: {e}");
            Errno::EIO
        })?;
        Ok((
            key,
            Header::new(packets, self.opts.xattr_metadata, self.encrypt_names),
        ))
    }

    /// Opens the lower file read-write when possible (read-modify-write needs reads even
    /// for write-only opens), else read-only.
    fn open_lower(&self, at: &At) -> Res<File> {
        if !self.read_only() {
            match at.open(OFlags::RDWR, 0) {
                Ok(f) => return Ok(f),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EROFS)
                    ) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        at.open(OFlags::RDONLY, 0).map_err(errno)
    }

    /// Parses the header of an open lower file; `Ok(None)` when it has none.
    fn read_header(&self, file: &File) -> Res<Option<Header>> {
        let mut first = vec![0u8; 4096];
        let mut got = 0;
        while got < first.len() {
            match file.read_at(&mut first[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        first.truncate(got);
        if let Ok(h) = Header::parse(&first) {
            return Ok(Some(h));
        }
        if self.opts.xattr_metadata || self.opts.encrypted_view {
            if let Ok(x) = sys::fgetxattr(file, XATTR_NAME) {
                if let Ok(h) = Header::parse(&x) {
                    return Ok(Some(h));
                }
            }
        }
        Ok(None)
    }

    /// What an open of a lower regular file yields.
    fn open_file(&self, ino: u64, at: &At) -> Res<Handle> {
        if self.opts.encrypted_view {
            return self.open_view(at);
        }
        let mut open = self.open.lock().map_err(|_| Errno::EIO)?;
        if let Some((f, n)) = open.get_mut(&ino) {
            *n += 1;
            return Ok(Handle::Crypt {
                ino,
                file: f.clone(),
            });
        }
        let file = self.open_lower(at)?;
        // One lower read for the header and the first data (small files are often read
        // whole right after opening), instead of two.
        sys::readahead(&file, 0, OPEN_READAHEAD);
        let crypt = match self.read_header(&file)? {
            Some(header) => match unwrap_fek(&header.packets, &MountKeys(&self.opts)) {
                Ok(key) => CryptFile::new(file, key, header),
                Err(e) if self.opts.passthrough => {
                    log::info!("{:?}: {e}; shown as it is (passthrough)", at.name);
                    return Ok(Handle::Raw {
                        file,
                        prefix: Vec::new(),
                    });
                }
                Err(e) => {
                    log::warn!("{:?}: {e}", at.name);
                    return Err(Errno::EIO);
                }
            },
            None if self.opts.passthrough => {
                return Ok(Handle::Raw {
                    file,
                    prefix: Vec::new(),
                })
            }
            // An empty lower file is an empty encrypted file (the kernel writes a header on
            // open; we write it with the first data, or never on a read-only mount).
            None if !self.opts.xattr_metadata && lower::fstat(&file).map_err(errno)?.size == 0 => {
                if self.read_only() {
                    return Ok(Handle::Raw {
                        file,
                        prefix: Vec::new(),
                    });
                }
                let (key, header) = self.new_header()?;
                CryptFile::create(file, key, header).map_err(errno)?
            }
            None => {
                log::warn!("{:?}: not an eCryptfs file (no valid header)", at.name);
                return Err(Errno::EIO);
            }
        };
        let shared = Arc::new(RwLock::new(crypt));
        open.insert(ino, (shared.clone(), 1));
        Ok(Handle::Crypt { ino, file: shared })
    }

    /// Encrypted view: the lower bytes, with a synthesized in-file header in front of
    /// files whose header is in the xattr.
    fn open_view(&self, at: &At) -> Res<Handle> {
        let file = at.open(OFlags::RDONLY, 0).map_err(errno)?;
        let mut head = [0u8; 16];
        if file.read_exact_at(&mut head, 0).is_ok() && Header::peek_size(&head).is_some() {
            return Ok(Handle::Raw {
                file,
                prefix: Vec::new(),
            });
        }
        let prefix = match sys::fgetxattr(&file, XATTR_NAME)
            .ok()
            .and_then(|x| Header::parse(&x).ok())
        {
            Some(mut h) => {
                h.flags &= !FLAG_METADATA_IN_XATTR;
                h.metadata_size = MIN_METADATA_SIZE;
                h.to_file_bytes().unwrap_or_default()
            }
            None => Vec::new(),
        };
        Ok(Handle::Raw { file, prefix })
    }

    /// Drops one open of a shared file; the last one closes it. Sizes are recorded by
    /// the caller (`release`; `truncate` records its own).
    fn close_file(&self, ino: u64) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if let Some((_, n)) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
            }
        }
    }

    fn truncate(&self, ino: u64, fh: Option<FileHandle>, at: &At, size: u64) -> Res<()> {
        self.writable()?;
        let handle = match fh.map(|fh| self.handle(fh)) {
            Some(Ok(h)) => h,
            _ => {
                let h = Arc::new(self.open_file(ino, at)?);
                let r = self.truncate_handle(&h, size);
                if let Handle::Crypt { ino, .. } = &*h {
                    self.close_file(*ino);
                }
                return r;
            }
        };
        self.truncate_handle(&handle, size)
    }

    fn truncate_handle(&self, h: &Handle, size: u64) -> Res<()> {
        match h {
            Handle::Crypt { file, .. } => file
                .write()
                .map_err(|_| Errno::EIO)?
                .truncate(size)
                .map_err(errno),
            Handle::Raw { file, .. } => file.set_len(size).map_err(errno),
            Handle::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Creates an encrypted regular file; returns its open handle when `keep_open`.
    fn create_file(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Res<(FileAttr, CryptFile)> {
        self.writable()?;
        let at = self.child(parent, name)?;
        let file = at
            .open(OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, mode)
            .map_err(errno)?;
        // Header and owner first: the attributes the kernel caches must be final.
        let result = (|| {
            let (key, header) = self.new_header()?;
            let crypt = CryptFile::create(file, key, header).map_err(errno)?;
            self.set_owner(req, &at)?;
            let meta = lower::fstat(crypt.lower()).map_err(errno)?;
            let attr = self.entry_with(parent, &at, &meta, Some(0))?;
            self.listed_put(parent, name, &at, &meta);
            Ok((attr, crypt))
        })();
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = at.unlink();
                Err(e)
            }
        }
    }
}

macro_rules! tryr {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $reply.error(e);
                return;
            }
        }
    };
}

impl Filesystem for EcryptFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let wanted = InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            // We clear set-ID bits on write and truncate (see `write`, `setattr`), so the
            // kernel need not ask for `security.capability` before every write.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let have = config.capabilities();
        let _ = config.add_capabilities(wanted & have);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Ok(open) = self.open.lock() {
            for (ino, (f, _)) in open.iter() {
                if let Ok(mut c) = f.write() {
                    if let Err(e) = c.persist(true) {
                        log::error!("cannot record the size of inode {ino}: {e}");
                    }
                }
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let at = tryr!(reply, self.child(parent.0, name));
        match self.entry(parent.0, &at) {
            Ok(attr) => {
                if attr.kind == FileType::RegularFile {
                    self.prefetch.start(parent.0);
                }
                reply.entry(&TTL, &attr, Generation(0));
            }
            // Node id 0 is ENOENT that the kernel may keep for the TTL (a negative dentry),
            // trusted as long as a name that is there: probes of missing names (`$PATH`,
            // Python's imports, build tools) cost one LOOKUP per TTL, not one each. The
            // kernel asks again before a create or a rename onto the name.
            Err(Errno::ENOENT) => reply.entry(&TTL, &NO_ENTRY, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let gone = self
            .inodes
            .write()
            .is_ok_and(|mut t| t.forget(ino.0, nlookup));
        if gone {
            self.drop_dir_fd(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // An open handle also works for files unlinked while open.
        if let Some(Ok(h)) = fh.map(|fh| self.handle(fh)) {
            let file_meta = match &*h {
                Handle::Crypt { file, .. } => file
                    .read()
                    .ok()
                    .map(|f| (lower::fstat(f.lower()), f.size())),
                Handle::Raw { file, prefix } => {
                    let m = lower::fstat(file);
                    let len = m.as_ref().map_or(0, |m| m.size + prefix.len() as u64);
                    Some((m, len))
                }
                Handle::Dir { .. } => None,
            };
            if let Some((Ok(meta), size)) = file_meta {
                reply.attr(&TTL, &attr_of(ino.0, &meta, size));
                return;
            }
        }
        let by_name = self
            .at(ino.0)
            .and_then(|at| at.stat().map(|m| (at, m)).map_err(errno));
        match by_name {
            Ok((at, meta)) => reply.attr(&TTL, &self.attr(ino.0, &at, &meta)),
            // stat(2) of a file unlinked while open comes without a handle.
            Err(e) => match self.shared(ino.0).and_then(|f| {
                let f = f.read().ok()?;
                Some((lower::fstat(f.lower()).ok()?, f.size()))
            }) {
                Some((meta, size)) => reply.attr(&TTL, &attr_of(ino.0, &meta, size)),
                None => reply.error(e),
            },
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let at = tryr!(reply, self.at(ino.0));
        if mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || size.is_some()
            || atime.is_some()
            || mtime.is_some()
        {
            tryr!(reply, self.writable());
        }
        if let Some(size) = size {
            tryr!(reply, self.truncate(ino.0, fh, &at, size));
            // HANDLE_KILLPRIV_V2: a truncate by someone without CAP_FSETID clears the
            // set-ID bits. fuser does not pass the kernel's FATTR_KILL_SUIDGID, so root
            // stands for CAP_FSETID; a daemon that is not root is cleared by the lower
            // file system itself.
            if req.uid() != 0 && mode.is_none() {
                let meta = tryr!(reply, at.stat().map_err(errno));
                let in_group = |gid| caller_in_group(req, gid);
                let killed = lower::mode_killing_suidgid(&meta, in_group);
                if let Some(m) = killed.filter(|_| meta.is_file()) {
                    tryr!(reply, at.chmod(m).map_err(errno));
                }
            }
        }
        if uid.is_some() || gid.is_some() {
            tryr!(reply, at.chown(uid, gid).map_err(errno));
        }
        if let Some(mode) = mode {
            tryr!(reply, at.chmod(mode & 0o7777).map_err(errno));
        }
        if atime.is_some() || mtime.is_some() {
            let a = atime.map(timespec);
            let m = mtime.map(timespec);
            tryr!(reply, at.utimens(a, m).map_err(errno));
        }
        let meta = tryr!(reply, at.stat().map_err(errno));
        reply.attr(&TTL, &self.attr(ino.0, &at, &meta));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let at = tryr!(reply, self.at(ino.0));
        let target = tryr!(reply, at.readlink().map_err(errno));
        let up = tryr!(reply, self.names.target_to_upper(&target));
        reply.data(&up);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT == libc::S_IFREG {
            let (attr, _) = tryr!(reply, self.create_file(req, parent.0, name, mode));
            reply.entry(&TTL, &attr, Generation(0));
            return;
        }
        tryr!(reply, self.writable());
        let at = tryr!(reply, self.child(parent.0, name));
        tryr!(reply, at.mknod(mode, u64::from(rdev)).map_err(errno));
        tryr!(reply, self.set_owner(req, &at));
        let attr = tryr!(reply, self.new_entry(parent.0, name, &at));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        tryr!(reply, self.writable());
        let at = tryr!(reply, self.child(parent.0, name));
        tryr!(reply, at.mkdir(mode & 0o7777).map_err(errno));
        tryr!(reply, self.set_owner(req, &at));
        let attr = tryr!(reply, self.new_entry(parent.0, name, &at));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tryr!(reply, self.writable());
        let at = tryr!(reply, self.child(parent.0, name));
        let meta = tryr!(reply, at.stat().map_err(errno));
        // The last link of a file with blocks: held across the unlink, so that the
        // reaper frees it after the reply (see `Reaper`).
        let hold = (meta.nlink <= 1 && meta.blocks > 0)
            .then(|| at.open(OFlags::PATH, 0).ok())
            .flatten();
        tryr!(reply, at.unlink().map_err(errno));
        self.listed_edit(parent.0, [Edit::Remove(&at.name)]);
        if let Ok(mut t) = self.inodes.write() {
            t.unlinked(meta.id(), parent.0, &at.name, meta.nlink <= 1);
        }
        reply.ok();
        if let Some(file) = hold {
            self.reaper.close(file);
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tryr!(reply, self.writable());
        let at = tryr!(reply, self.child(parent.0, name));
        let meta = tryr!(reply, at.stat().map_err(errno));
        tryr!(reply, at.rmdir().map_err(errno));
        self.listed_edit(parent.0, [Edit::Remove(&at.name)]);
        self.removed_dir(&meta);
        if let Ok(mut t) = self.inodes.write() {
            t.unlinked(meta.id(), parent.0, &at.name, true);
        }
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        tryr!(reply, self.writable());
        let at = tryr!(reply, self.child(parent.0, link_name));
        let lower_target = tryr!(
            reply,
            self.names.target_to_lower(target.as_os_str().as_bytes())
        );
        tryr!(reply, at.symlink(&lower_target).map_err(errno));
        tryr!(reply, self.set_owner(req, &at));
        let attr = tryr!(reply, self.new_entry(parent.0, link_name, &at));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        tryr!(reply, self.writable());
        let from = tryr!(reply, self.child(parent.0, name));
        let to = tryr!(reply, self.child(newparent.0, newname));
        let src = tryr!(reply, from.stat().map_err(errno));
        let bits = flags.bits();
        let dst = tryr!(reply, rename_lower(&from, &to, bits).map_err(errno));
        let exchange = bits & libc::RENAME_EXCHANGE != 0;
        if exchange {
            self.listings.forget(parent.0);
            self.listings.forget(newparent.0);
        } else if dst.as_ref().is_none_or(|d| d.id() != src.id()) {
            let moved = self.hinted(DirEntry {
                name: newname.to_owned(),
                lower_name: to.name.clone(),
                lower_id: src.id(),
                kind: src.kind(),
                node: NodeHint::default(),
            });
            if parent == newparent {
                self.listed_edit(parent.0, [Edit::Renamed(&from.name, moved)]);
            } else {
                self.listed_edit(parent.0, [Edit::Remove(&from.name)]);
                self.listed_edit(newparent.0, [Edit::Put(moved)]);
            }
        }
        if let Some(d) = dst.as_ref().filter(|d| d.is_dir() && !exchange) {
            if d.id() != src.id() {
                self.removed_dir(d);
            }
        }
        let Ok(mut t) = self.inodes.write() else {
            reply.error(Errno::EIO);
            return;
        };
        let from_name = (parent.0, from.name.as_os_str());
        let to_name = (newparent.0, to.name.as_os_str());
        match &dst {
            // Two names of one file: rename(2) does nothing.
            Some(d) if d.id() == src.id() => {}
            Some(d) if exchange => {
                t.moved(src.id(), from_name, to_name);
                t.moved(d.id(), to_name, from_name);
            }
            Some(d) => {
                t.unlinked(d.id(), newparent.0, &to.name, d.is_dir() || d.nlink <= 1);
                t.moved(src.id(), from_name, to_name);
            }
            None => t.moved(src.id(), from_name, to_name),
        }
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        tryr!(reply, self.writable());
        let from = tryr!(reply, self.at(ino.0));
        let to = tryr!(reply, self.child(newparent.0, newname));
        tryr!(reply, from.link_to(&to).map_err(errno));
        let attr = tryr!(reply, self.new_entry(newparent.0, newname, &to));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let read_only = flags.acc_mode() == fuser::OpenAccMode::O_RDONLY;
        if !read_only {
            tryr!(reply, self.writable());
        }
        let at = tryr!(reply, self.at(ino.0));
        let h = tryr!(reply, self.open_file(ino.0, &at));
        let fh = self.add_handle(h);
        // The kernel's page cache stays valid across opens; FUSE_AUTO_INVAL_DATA drops it
        // when the lower mtime or size changes.
        let mut open_flags = FopenFlags::FOPEN_KEEP_CACHE | write_only_io(flags.0);
        if read_only {
            // Closing a reader has nothing to write back: no FLUSH request per close
            // (`cat` of 5000 files: 5000 round trips fewer).
            open_flags |= FopenFlags::FOPEN_NOFLUSH;
        }
        reply.opened(fh, open_flags);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = tryr!(reply, self.handle(fh));
        match &*h {
            Handle::Crypt { file, .. } => {
                let f = tryr!(reply, file.read().map_err(|_| Errno::EIO));
                match f.read(offset, size, |d| reply.data(d)) {
                    Ok(()) => {}
                    Err(e) => log::error!("read failed after reply was consumed: {e}"),
                }
            }
            Handle::Raw { file, prefix } => {
                let mut buf = vec![0u8; size as usize];
                let mut got = 0usize;
                let mut off = offset;
                if (off as usize) < prefix.len() {
                    let n = (prefix.len() - off as usize).min(buf.len());
                    buf[..n].copy_from_slice(&prefix[off as usize..off as usize + n]);
                    got = n;
                    off += n as u64;
                }
                let lower_off = off - prefix.len() as u64;
                let mut pos = 0u64;
                while got < buf.len() {
                    match file.read_at(&mut buf[got..], lower_off + pos) {
                        Ok(0) => break,
                        Ok(n) => {
                            got += n;
                            pos += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            reply.error(errno(e));
                            return;
                        }
                    }
                }
                reply.data(&buf[..got]);
            }
            Handle::Dir { .. } => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        tryr!(reply, self.writable());
        let h = tryr!(reply, self.handle(fh));
        // HANDLE_KILLPRIV_V2: the kernel asks us to clear the set-ID bits.
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let in_group = |gid| caller_in_group(req, gid);
        match &*h {
            Handle::Crypt { file, .. } => {
                let mut f = tryr!(reply, file.write().map_err(|_| Errno::EIO));
                if kill {
                    tryr!(
                        reply,
                        lower::kill_suidgid(f.lower(), in_group).map_err(errno)
                    );
                }
                tryr!(reply, f.write(offset, data).map_err(errno));
            }
            Handle::Raw { file, .. } => {
                if kill {
                    tryr!(reply, lower::kill_suidgid(file, in_group).map_err(errno));
                }
                tryr!(reply, file.write_all_at(data, offset).map_err(errno))
            }
            Handle::Dir { .. } => {
                reply.error(Errno::EISDIR);
                return;
            }
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let h = tryr!(reply, self.handle(fh));
        if let Handle::Crypt { file, .. } = &*h {
            if !self.read_only() {
                let mut f = tryr!(reply, file.write().map_err(|_| Errno::EIO));
                tryr!(reply, f.persist(true).map_err(errno));
            }
        }
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.write().ok().and_then(|mut m| m.remove(&fh.0));
        if let Some(h) = h {
            if let Handle::Crypt { ino, file } = &*h {
                // Each close records the size (a write-only open had no FLUSH, see
                // `write_only_io`), also while other opens of the file remain. The
                // read lock first: closing a reader must not wait for a writer.
                let recorded = file.read().is_ok_and(|f| f.size_recorded());
                if !recorded {
                    if let Ok(mut f) = file.write() {
                        if let Err(e) = f.persist(true) {
                            log::error!("cannot record the size of inode {ino}: {e}");
                        }
                    }
                }
                self.close_file(*ino);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let h = tryr!(reply, self.handle(fh));
        match &*h {
            Handle::Crypt { file, .. } => {
                let mut f = tryr!(reply, file.write().map_err(|_| Errno::EIO));
                if self.read_only() {
                    tryr!(reply, f.lower().sync_all().map_err(errno));
                } else {
                    tryr!(reply, f.fsync(datasync).map_err(errno));
                }
            }
            Handle::Raw { file, .. } => tryr!(reply, file.sync_all().map_err(errno)),
            Handle::Dir { .. } => {}
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let dir = tryr!(reply, self.dir_fd(ino.0));
        let meta = tryr!(reply, lower::fstat(&*dir).map_err(errno));
        let stamp = DirStamp::of(&meta);
        let (entries, seen) = match self.listings.get(ino.0, stamp) {
            Some(kept) => kept,
            None => {
                let entries = match self.ahead.take(meta.id(), stamp) {
                    Some(entries) => entries,
                    None => tryr!(
                        reply,
                        ahead::list(&self.names, &dir, meta.dev).map_err(errno)
                    ),
                };
                self.read_ahead_after(ino.0);
                let entries = self.listings.put(ino.0, stamp, entries);
                self.ahead.listed(ino.0, &dir, &entries);
                (entries, Seen::New)
            }
        };
        // The kernel may keep a copy of the listing (CACHE_DIR) and serve later opens
        // from it (KEEP_CACHE), with no READDIR at all. Filling that copy costs the
        // kernel a page lookup per entry, as much as our READDIR replies: it is worth it
        // only for a listing read again unchanged. So the kernel copies a listing at its
        // second open without a change between, and serves it from the third on, if the
        // copy is exact: every entry known to the kernel when it was copied (a stat then
        // needs no attributes from us, and its inode number is that of the copy), and
        // no node gone from the table since (the number would be stale).
        let epoch = self.inodes.read().map_or(0, |t| t.epoch());
        let flags = match seen {
            Seen::New => FopenFlags::empty(),
            Seen::Copied(at) if at == epoch => {
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
            }
            Seen::Before | Seen::Copied(_) => FopenFlags::FOPEN_CACHE_DIR,
        };
        if flags == FopenFlags::FOPEN_CACHE_DIR {
            // The kernel drops its copy at this open and makes a new one.
            self.listings.copy_anew(ino.0);
        }
        let copy = flags.contains(FopenFlags::FOPEN_CACHE_DIR).then_some(epoch);
        let walked = self.prefetch.note_listing(ino.0, &dir, &entries);
        let fh = self.add_handle(Handle::Dir {
            entries,
            walked,
            copy,
        });
        reply.opened(fh, flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = tryr!(reply, self.handle(fh));
        let Handle::Dir { entries, copy, .. } = &*h else {
            reply.error(Errno::ENOTDIR);
            return;
        };
        self.read_to(ino.0, entries, *copy, offset);
        let mut idx = offset as usize;
        let mut guessed = false;
        // One lock per reply, not per entry.
        let Ok(nodes) = self.inodes.read() else {
            reply.error(Errno::EIO);
            return;
        };
        // Offsets 1 and 2 are "." and ".."; entry i has offset i + 3.
        while idx < entries.len() + 2 {
            let full = match idx {
                0 => reply.add(ino, 1, FileType::Directory, "."),
                1 => reply.add(ino, 2, FileType::Directory, ".."),
                i => {
                    let e = &entries[i - 2];
                    let d_ino = listed_ino(&nodes, e, &mut guessed);
                    reply.add(d_ino, i as u64 + 1, e.kind, &e.name)
                }
            };
            if full {
                break;
            }
            idx += 1;
        }
        drop(nodes);
        // Only a copying open's replies go into the kernel's copy.
        if guessed && copy.is_some() {
            self.listings.guessed(ino.0);
        }
        reply.ok();
    }

    /// With READDIRPLUS_AUTO the kernel asks for attributes on the first read of a
    /// directory, and on later reads only if the caller used the previous ones. A file's
    /// attributes need its header's size field, a disk read when cold, which a walk that
    /// wants only names (`find`) should not wait for. So on the first read of a directory
    /// not walked before, the reply ends at the first file whose size is unknown; the
    /// kernel reads the rest by READDIR while the listing's prefetch fetches the headers.
    /// Otherwise (`du`, `ls -l`, a second walk) the missing headers of the batch are read
    /// together, and the caller's `stat`s need no LOOKUP. When the kernel holds the
    /// entries of the reply already, their attributes would be a lower `stat` each for
    /// nothing: only "." and ".." then.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = tryr!(reply, self.handle(fh));
        let Handle::Dir {
            entries,
            walked,
            copy,
        } = &*h
        else {
            reply.error(Errno::ENOTDIR);
            return;
        };
        self.read_to(ino.0, entries, *copy, offset);
        let dir = tryr!(reply, self.dir_fd(ino.0));
        let dir_meta = tryr!(reply, lower::fstat(&*dir).map_err(errno));
        let dir_attr = attr_of(ino.0, &dir_meta, dir_meta.size);
        let mut idx = offset as usize;
        // The kernel takes no reference for "." and "..".
        if idx == 0 {
            if reply.add(ino, 1, ".", &TTL, &dir_attr, Generation(0)) {
                return reply.ok();
            }
            idx = 1;
        }
        if idx == 1 {
            if reply.add(INodeNo(0), 2, "..", &TTL, &dir_attr, Generation(0)) {
                return reply.ok();
            }
            idx = 2;
        }
        let rest = entries.get(idx - 2..).unwrap_or_default();
        if offset == 0 && self.kernel_holds(&rest[..rest.len().min(PLUS_REPLY_MAX)]) {
            return reply.ok();
        }
        if offset == 0 && !walked {
            // Attributes up to the first file of unknown size; after it, names only
            // (no dentry, as READDIR gives), except for directories, which need no
            // header and which the walk will enter.
            let mut names_only = false;
            let mut guessed = false;
            for e in rest {
                let at = At::new(dir.clone(), e.lower_name.clone());
                let stated = if names_only && e.kind != FileType::Directory {
                    None
                } else {
                    // Vanished since opendir: skip it.
                    let Ok(meta) = at.stat() else {
                        idx += 1;
                        continue;
                    };
                    names_only |= meta.is_file() && self.sizes.known(&meta).is_none();
                    Some(meta).filter(|m| !m.is_file() || !names_only)
                };
                let full = match stated {
                    Some(meta) => self.add_plus(&mut reply, ino.0, &at, &meta, idx, e),
                    None => {
                        let d_ino = match self.inodes.read() {
                            Ok(nodes) => listed_ino(&nodes, e, &mut guessed),
                            Err(_) => {
                                guessed = true;
                                INodeNo(e.lower_id.1)
                            }
                        };
                        reply.add_name(d_ino, idx as u64 + 1, e.kind, &e.name)
                    }
                };
                if full {
                    break;
                }
                idx += 1;
            }
            if guessed && copy.is_some() {
                self.listings.guessed(ino.0);
            }
            return reply.ok();
        }
        for batch in rest.chunks(PLUS_BATCH) {
            let stated: Vec<(At, Option<Meta>)> = batch
                .iter()
                .map(|e| {
                    let at = At::new(dir.clone(), e.lower_name.clone());
                    let meta = at.stat().ok();
                    (at, meta)
                })
                .collect();
            let files: Vec<(&At, &Meta)> = stated
                .iter()
                .filter_map(|(at, m)| m.as_ref().filter(|m| m.is_file()).map(|m| (at, m)))
                .collect();
            self.sizes.read_many(&files);
            for ((at, meta), e) in stated.iter().zip(batch) {
                // Vanished since opendir: skip it.
                if let Some(meta) = meta {
                    if self.add_plus(&mut reply, ino.0, at, meta, idx, e) {
                        return reply.ok();
                    }
                }
                idx += 1;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut m) = self.handles.write() {
            m.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let dir = tryr!(reply, self.dir_fd(ino.0));
        tryr!(reply, lower::fsync_dir(&dir).map_err(errno));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = tryr!(
            reply,
            rustix::fs::fstatvfs(&*self.root_fd)
                .map_err(io::Error::from)
                .map_err(errno)
        );
        let lower_max = (st.f_namemax as usize).min(LOWER_NAME_MAX);
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            self.names.name_max(lower_max) as u32,
            st.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        tryr!(reply, self.writable());
        if self.hidden_xattr(name) {
            reply.error(Self::hidden_xattr_errno(name, Errno::EPERM));
            return;
        }
        let at = tryr!(reply, self.at(ino.0));
        tryr!(reply, at.setxattr(name, value, flags).map_err(errno));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.hidden_xattr(name) {
            reply.error(Self::hidden_xattr_errno(name, Errno::ENODATA));
            return;
        }
        let at = tryr!(reply, self.at(ino.0));
        let v = tryr!(reply, at.getxattr(name, size as usize).map_err(errno));
        if size == 0 {
            reply.size(v.len() as u32);
        } else {
            reply.data(&v);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let at = tryr!(reply, self.at(ino.0));
        let raw = tryr!(reply, at.listxattr().map_err(errno));
        let mut list = Vec::with_capacity(raw.len());
        for n in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if !self.hidden_xattr(OsStr::from_bytes(n)) {
                list.extend_from_slice(n);
                list.push(0);
            }
        }
        if size == 0 {
            reply.size(list.len() as u32);
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&list);
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tryr!(reply, self.writable());
        if self.hidden_xattr(name) {
            reply.error(Self::hidden_xattr_errno(name, Errno::EPERM));
            return;
        }
        let at = tryr!(reply, self.at(ino.0));
        tryr!(reply, at.removexattr(name).map_err(errno));
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.bits() & libc::W_OK != 0 && self.read_only() {
            reply.error(Errno::EROFS);
            return;
        }
        let at = tryr!(reply, self.at(ino.0));
        tryr!(reply, at.access(mask.bits()).map_err(errno));
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = match self.create_file(req, parent.0, name, mode) {
            // The kernel held a negative entry for a name that has since appeared in the
            // lower directory (behind the mount's back). An open that may find an
            // existing file gets ESTALE, on which the kernel looks the name up afresh
            // and opens the file.
            Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => Err(Errno::ESTALE),
            r => r,
        };
        let (attr, crypt) = tryr!(reply, created);
        let shared = Arc::new(RwLock::new(crypt));
        let ino = attr.ino.0;
        if let Ok(mut open) = self.open.lock() {
            // A stale entry of a file unlinked while open under a reused node id: the
            // new file replaces it for new opens; old handles keep their own Arc.
            let count = open.get(&ino).map_or(0, |(_, n)| *n);
            open.insert(ino, (shared.clone(), count + 1));
        }
        let fh = self.add_handle(Handle::Crypt { ino, file: shared });
        let open_flags = FopenFlags::FOPEN_KEEP_CACHE | write_only_io(flags);
        reply.created(&TTL, &attr, Generation(0), fh, open_flags);
    }
}

impl EcryptFs {
    /// One READDIRPLUS entry, at position `idx` of the listing ("." and ".." are 0 and
    /// 1; the offset of each is its position + 1, as in `readdir`), with its attributes
    /// and a kernel reference; true when the reply is full (the entry did not fit, nor
    /// its reference).
    fn add_plus(
        &self,
        reply: &mut ReplyDirectoryPlus,
        dir: u64,
        at: &At,
        meta: &Meta,
        idx: usize,
        e: &DirEntry,
    ) -> bool {
        // The attributes first (an open file is a known node), then the node and the
        // entry under one hold of the table's lock: an entry that does not fit takes
        // its lookup back before anyone could see the node.
        let known = self.inodes.read().ok().and_then(|t| t.known(meta.id()));
        let mut attr = attr_of(0, meta, self.upper_size(known, at, meta));
        let Ok(mut t) = self.inodes.write() else {
            return false;
        };
        let ino = t.lookup(dir, &at.name, meta.id());
        attr.ino = INodeNo(ino);
        let full = reply.add(
            attr.ino,
            idx as u64 + 1,
            &e.name,
            &TTL,
            &attr,
            Generation(0),
        );
        if full {
            t.take_back(ino);
        }
        full
    }

    /// A new lower entry `at` (upper `name`) in `parent`: registers its node, puts it in
    /// the kept listing and returns its attributes.
    fn new_entry(&self, parent: u64, name: &OsStr, at: &At) -> Res<FileAttr> {
        let meta = at.stat().map_err(errno)?;
        let attr = self.entry_with(parent, at, &meta, None)?;
        self.listed_put(parent, name, at, &meta);
        Ok(attr)
    }

    fn listed_put(&self, parent: u64, name: &OsStr, at: &At, meta: &Meta) {
        let entry = DirEntry {
            name: name.to_owned(),
            lower_name: at.name.clone(),
            lower_id: meta.id(),
            kind: meta.kind(),
            node: NodeHint::default(),
        };
        self.listed_edit(parent, [Edit::Put(self.hinted(entry))]);
    }

    /// Our own change to `dir`'s entries, made in the lower directory: edits the kept
    /// listing and records the directory's new stamp.
    fn listed_edit<'a>(&self, dir: u64, edits: impl IntoIterator<Item = Edit<'a>>) {
        self.listings.edit(dir, edits, || {
            let fd = self.dir_fd(dir).ok()?;
            lower::fstat(&*fd).ok().map(|m| DirStamp::of(&m))
        });
    }

    /// Whether the kernel has a node for every entry of a listing.
    fn kernel_holds(&self, entries: &[DirEntry]) -> bool {
        self.inodes.read().is_ok_and(|t| {
            entries
                .iter()
                .all(|e| t.known_hinted(e.lower_id, &e.node).is_some())
        })
    }

    /// A READDIR(PLUS) of `dir` at `offset`: one at the end completes the kernel's copy
    /// of the listing, if it makes one.
    fn read_to(&self, dir: u64, entries: &Arc<Vec<DirEntry>>, copy: Option<u64>, offset: u64) {
        if let Some(epoch) = copy.filter(|_| offset as usize >= entries.len() + 2) {
            self.listings.copied(dir, entries, epoch);
        }
    }

    /// A new entry of a kept listing, with the node id the kernel knows it by (our own
    /// creations and renames are of files the kernel holds).
    fn hinted(&self, entry: DirEntry) -> DirEntry {
        if let Ok(t) = self.inodes.read() {
            t.known_hinted(entry.lower_id, &entry.node);
        }
        entry
    }

    /// A walk listed the directory `ino` afresh: the subdirectories after it in its
    /// parent's listing are read ahead (see [`ReadAhead`]).
    fn read_ahead_after(&self, ino: u64) {
        let Some((parent, name)) = self.inodes.read().ok().and_then(|t| t.link(ino)) else {
            return;
        };
        if let (Some(siblings), Ok(parent_fd)) = (self.listings.peek(parent), self.dir_fd(parent)) {
            self.ahead.opened(parent, &parent_fd, &siblings, &name);
        }
    }

    /// After a lower directory was removed (rmdir, replaced by a rename): its cached fd
    /// names a dead directory.
    fn removed_dir(&self, meta: &Meta) {
        let node = self.inodes.read().ok().and_then(|t| t.known(meta.id()));
        if let Some(node) = node {
            self.drop_dir_fd(node);
            self.listings.forget(node);
        }
    }

    /// The error for a hidden attribute: `user.ecryptfs` is `hidden` (it exists but is
    /// not the caller's); any other namespace is not supported. EOPNOTSUPP, not
    /// ENODATA, also for reads: `ls -l` then stops asking for `security.selinux` and
    /// `system.posix_acl_access` after the first file of the mount (coreutils marks
    /// the device unsupported), where ENODATA costs two requests per file.
    fn hidden_xattr_errno(name: &OsStr, hidden: Errno) -> Errno {
        if name.as_bytes().starts_with(b"user.") {
            hidden
        } else {
            Errno::EOPNOTSUPP
        }
    }

    /// Only `user.*` attributes pass through (as in gocryptfs): other namespaces of the
    /// lower file (security labels, ACLs, trusted.*) describe the lower file, not the
    /// plaintext one. `user.ecryptfs` carries the header in xattr mode: hidden and
    /// protected there.
    fn hidden_xattr(&self, name: &OsStr) -> bool {
        !name.as_bytes().starts_with(b"user.")
            || ((self.opts.xattr_metadata || self.opts.encrypted_view)
                && name.as_bytes() == XATTR_NAME.as_bytes())
    }
}
