//! Lower-file-system calls relative to a directory fd: no lower path longer than one
//! component is ever built (FNEK names make lower paths ~1.8x longer than upper ones,
//! beyond `PATH_MAX`), and no symlink inside the lower tree is ever followed
//! (`O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW` everywhere), so a lower symlink swapped in
//! between two calls cannot redirect an operation.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{mpsc, Arc};

use fuser::FileType;
use rustix::fs::{AtFlags, Mode, OFlags};

/// A lower file: a name (one component) in a directory opened with `O_PATH`.
#[derive(Debug, Clone)]
pub struct At {
    pub dir: Arc<OwnedFd>,
    pub name: OsString,
}

/// What the operations need of a lower `stat`.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl From<rustix::fs::Stat> for Meta {
    // Field widths differ between architectures; on some the casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    fn from(s: rustix::fs::Stat) -> Meta {
        Meta {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            rdev: s.st_rdev as u64,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks as u64,
            atime: (s.st_atime as i64, s.st_atime_nsec as i64),
            mtime: (s.st_mtime as i64, s.st_mtime_nsec as i64),
            ctime: (s.st_ctime as i64, s.st_ctime_nsec as i64),
        }
    }
}

impl Meta {
    /// The lower (dev, ino): the identity of a lower file.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    fn fmt(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.fmt() == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.fmt() == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.fmt() == libc::S_IFLNK
    }

    pub fn kind(&self) -> FileType {
        kind_of_mode(self.mode)
    }
}

pub fn kind_of_mode(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn nofollow() -> AtFlags {
    AtFlags::SYMLINK_NOFOLLOW
}

/// Opens a directory (path or not) for use as the base of further `*at` calls.
pub fn open_dir_path(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Closes the last references to unlinked lower files on a thread of its own. The
/// lower file system frees an unlinked file's blocks and inode when its last reference
/// goes, inside `unlinkat` when that is the last: ~80 µs per small file on ext4 here,
/// most of `rm -rf`. Holding an `O_PATH` fd across the unlink moves that work here,
/// after the reply, where it overlaps with the caller's next request (as XFS's
/// background inode reclaim does for its own callers). The free space shows a few
/// milliseconds later.
#[derive(Debug)]
pub struct Reaper {
    tx: Option<mpsc::SyncSender<File>>,
}

impl Reaper {
    /// Files waiting at most (fds: the limit is shared with the directory fds and open
    /// files); beyond that, the caller closes its own.
    pub(crate) const QUEUE: usize = 256;

    pub fn new() -> Reaper {
        let (tx, rx) = mpsc::sync_channel::<File>(Self::QUEUE);
        let spawned = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || rx.into_iter().for_each(drop));
        Reaper {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Closes `file` later (now if the queue is full).
    pub fn close(&self, file: File) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(file);
        }
    }
}

impl At {
    pub fn new(dir: Arc<OwnedFd>, name: OsString) -> At {
        At { dir, name }
    }

    pub fn stat(&self) -> io::Result<Meta> {
        Ok(rustix::fs::statat(&*self.dir, &*self.name, nofollow())?.into())
    }

    /// `openat` with `O_NOFOLLOW | O_CLOEXEC` added.
    pub fn open(&self, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &*self.dir,
            &*self.name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )?;
        Ok(File::from(fd))
    }

    /// An `O_PATH` fd of the file itself (symlinks included), for calls that have no
    /// `*at` form that leaves symlinks alone; see [`proc_path`].
    fn open_path(&self) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &*self.dir,
            &*self.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    pub fn readlink(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&*self.dir, &*self.name, Vec::new())?.into_bytes())
    }

    pub fn mkdir(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &*self.dir,
            &*self.name,
            Mode::from_raw_mode(mode & 0o7777),
        )?)
    }

    pub fn mknod(&self, mode: u32, rdev: u64) -> io::Result<()> {
        Ok(rustix::fs::mknodat(
            &*self.dir,
            &*self.name,
            rustix::fs::FileType::from_raw_mode(mode),
            Mode::from_raw_mode(mode & 0o7777),
            rdev,
        )?)
    }

    pub fn symlink(&self, target: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(
            OsStr::from_bytes(target),
            &*self.dir,
            &*self.name,
        )?)
    }

    pub fn unlink(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &*self.dir,
            &*self.name,
            AtFlags::empty(),
        )?)
    }

    pub fn rmdir(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &*self.dir,
            &*self.name,
            AtFlags::REMOVEDIR,
        )?)
    }

    pub fn rename_to(&self, to: &At, flags: u32) -> io::Result<()> {
        Ok(rustix::fs::renameat_with(
            &*self.dir,
            &*self.name,
            &*to.dir,
            &*to.name,
            rustix::fs::RenameFlags::from_bits_retain(flags),
        )?)
    }

    /// A hard link `to` of this file (the link itself when it is a symlink).
    pub fn link_to(&self, to: &At) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &*self.dir,
            &*self.name,
            &*to.dir,
            &*to.name,
            AtFlags::empty(),
        )?)
    }

    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        Ok(rustix::fs::chownat(
            &*self.dir,
            &*self.name,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            nofollow(),
        )?)
    }

    /// `chmod` that leaves symlinks alone (their mode means nothing on Linux).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        let fd = self.open_path()?;
        if Meta::from(rustix::fs::fstat(&fd)?).is_symlink() {
            return Ok(());
        }
        Ok(rustix::fs::chmod(
            proc_path(&fd),
            Mode::from_raw_mode(mode & 0o7777),
        )?)
    }

    pub fn utimens(&self, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
        let conv = |t: TimeSpec| match t {
            None => rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            Some(None) => rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
            Some(Some((s, ns))) => rustix::fs::Timespec {
                tv_sec: s,
                tv_nsec: ns as _,
            },
        };
        let times = rustix::fs::Timestamps {
            last_access: conv(atime),
            last_modification: conv(mtime),
        };
        Ok(rustix::fs::utimensat(
            &*self.dir,
            &*self.name,
            &times,
            nofollow(),
        )?)
    }

    /// `access(2)` with the daemon's (real = effective) ids.
    pub fn access(&self, mask: i32) -> io::Result<()> {
        Ok(rustix::fs::accessat(
            &*self.dir,
            &*self.name,
            rustix::fs::Access::from_bits_retain(mask as u32),
            nofollow(),
        )?)
    }

    pub fn getxattr(&self, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
        let fd = self.open_path()?;
        let p = proc_path(&fd);
        if size == 0 {
            // The caller only wants the length.
            return Ok(vec![0; rustix::fs::getxattr_query(&*p, name)?]);
        }
        let mut buf = Vec::with_capacity(size);
        rustix::fs::getxattr(&*p, name, rustix::buffer::spare_capacity(&mut buf))?;
        Ok(buf)
    }

    pub fn setxattr(&self, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let fd = self.open_path()?;
        Ok(rustix::fs::setxattr(
            &*proc_path(&fd),
            name,
            value,
            rustix::fs::XattrFlags::from_bits_retain(flags as _),
        )?)
    }

    /// The NUL-separated list.
    pub fn listxattr(&self) -> io::Result<Vec<u8>> {
        let fd = self.open_path()?;
        let p = proc_path(&fd);
        loop {
            let want = rustix::fs::listxattr_query(&*p)?;
            let mut buf = Vec::with_capacity(want);
            match rustix::fs::listxattr(&*p, rustix::buffer::spare_capacity(&mut buf)) {
                Ok(_) => return Ok(buf),
                // The list grew between the two calls: ask again.
                Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn removexattr(&self, name: &OsStr) -> io::Result<()> {
        let fd = self.open_path()?;
        Ok(rustix::fs::removexattr(&*proc_path(&fd), name)?)
    }
}

/// `/proc/self/fd/N`: following this magic link reaches the file an `O_PATH` fd refers
/// to, itself (even a symlink), never what a name resolves to now (as gocryptfs does
/// for calls without a `*at` form).
fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// A time for `utimensat`: `None` leaves it, `Some(None)` is "now".
pub type TimeSpec = Option<Option<(i64, i64)>>;

pub fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    Ok(rustix::fs::fstat(fd)?.into())
}

/// The mode after a write or truncate by someone without `CAP_FSETID`, as the kernel
/// computes it: set-user-ID cleared, set-group-ID too when group-executable or when
/// the writer is not in the file's group (`in_group`). `None` when nothing changes.
pub fn mode_killing_suidgid(meta: &Meta, in_group: impl FnOnce(u32) -> bool) -> Option<u32> {
    let mode = meta.mode & 0o7777;
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || !in_group(meta.gid)) {
        m &= !libc::S_ISGID;
    }
    (m != mode).then_some(m)
}

/// Clears the set-ID bits of an open lower file as [`mode_killing_suidgid`] says.
pub fn kill_suidgid(fd: impl AsFd, in_group: impl FnOnce(u32) -> bool) -> io::Result<()> {
    let meta = fstat(&fd)?;
    if let Some(m) = mode_killing_suidgid(&meta, in_group) {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m))?;
    }
    Ok(())
}

/// One entry of a lower directory listing.
#[derive(Debug)]
pub struct RawEntry {
    pub name: OsString,
    pub ino: u64,
    pub kind: FileType,
}

/// A readable descriptor of the directory an `O_PATH` fd refers to (`O_PATH` fds can be
/// neither listed nor synced).
fn opened(dir: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Lists the directory an `O_PATH` fd refers to (without `.` and `..`).
pub fn list(dir: &OwnedFd) -> io::Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::new(opened(dir)?)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match ent.file_type() {
            rustix::fs::FileType::Directory => FileType::Directory,
            rustix::fs::FileType::Symlink => FileType::Symlink,
            rustix::fs::FileType::Fifo => FileType::NamedPipe,
            rustix::fs::FileType::Socket => FileType::Socket,
            rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
            rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
            rustix::fs::FileType::RegularFile => FileType::RegularFile,
            // DT_UNKNOWN (some file systems): ask.
            _ => match rustix::fs::statat(dir, ent.file_name(), nofollow()) {
                Ok(s) => Meta::from(s).kind(),
                Err(_) => continue,
            },
        };
        out.push(RawEntry {
            name: OsStr::from_bytes(name).to_owned(),
            ino: ent.ino(),
            kind,
        });
    }
    Ok(out)
}

/// `fsync` of a directory given as an `O_PATH` fd.
pub fn fsync_dir(dir: &OwnedFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(opened(dir)?)?)
}
