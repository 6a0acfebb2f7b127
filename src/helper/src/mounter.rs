//! The mount system calls, behind a trait so the service logic is testable without root.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, statx, AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, CWD};
use sys_mount::{Mount, MountFlags, Unmount, UnmountFlags};

use strongroom_dbus::KernelSupport;

use crate::kernel::SysPaths;
use crate::paths::fd_path;

/// `s_magic` of eCryptfs.
pub const ECRYPTFS_MAGIC: i64 = 0xf15f;

/// What to mount. The directories are the caller's descriptors.
#[derive(Debug)]
pub struct MountRequest<'a> {
    pub lower: BorrowedFd<'a>,
    pub target: BorrowedFd<'a>,
    /// Resolved path of `target`, used only to find the new mount's root afterwards.
    pub target_path: &'a Path,
    /// Kernel options (no secrets: sigs and names only).
    pub options: &'a str,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("busy")]
    Busy,
    #[error("not supported by this kernel: {0}")]
    NotSupported(String),
    #[error("no such mount")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

pub trait Mounter: Send + Sync + 'static {
    /// Mount eCryptfs with `nosuid,nodev`; returns the new mount's id.
    fn mount(&self, req: &MountRequest<'_>) -> Result<u64, MountError>;
    /// Unmount the eCryptfs mount with this id (wherever it is now).
    fn unmount(&self, mnt_id: u64, lazy: bool) -> Result<(), MountError>;
    /// Whether a mount with this id still exists.
    fn is_live(&self, mnt_id: u64) -> bool;
    /// What the kernel this mounter drives offers.
    fn kernel_support(&self) -> KernelSupport;
}

/// The kernel's eCryptfs through `mount(2)` / `umount2(2)`; never runs `mount(8)`.
#[derive(Debug)]
pub struct KernelMounter {
    pub sys: SysPaths,
    /// Whether this helper answers `/dev/ecryptfs` (public-key tokens).
    pub serves_messaging: bool,
}

impl Default for KernelMounter {
    fn default() -> Self {
        KernelMounter {
            sys: SysPaths::host(),
            serves_messaging: false,
        }
    }
}

/// Mount flags of every vault. CVE-2012-3409: the setuid helper forgot nosuid/nodev;
/// CVE-2011-3145: it ran mount(8) with the caller's group. Here: always nosuid,nodev,
/// and the mount(2) system call directly.
pub fn mount_flags(read_only: bool) -> MountFlags {
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    flags
}

fn errno_to(e: std::io::Error) -> MountError {
    match e.raw_os_error() {
        Some(libc::EBUSY) => MountError::Busy,
        Some(libc::ENODEV) => {
            MountError::NotSupported("no ecryptfs file system in this kernel".into())
        }
        _ => MountError::Failed(e.to_string()),
    }
}

/// Open a path without following any symlink (magic links included).
fn open_no_symlinks(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    let how = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    Ok(openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )?)
}

fn mount_id(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    Ok(statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?.stx_mnt_id)
}

fn is_ecryptfs(fd: BorrowedFd<'_>) -> bool {
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(fd)
        .map(|s| s.f_type as i64 == ECRYPTFS_MAGIC)
        .unwrap_or(false)
}

/// Mount point of mount `id` from `/proc/self/mountinfo` (octal escapes decoded).
fn mount_point_of(id: u64) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(&id.to_string()))?;
    let field = line.split(' ').nth(4)?;
    Some(PathBuf::from(unescape_octal(field)))
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount mount `mnt_id` if it is still a file system with `magic`.
///
/// CVE-2011-1832: never unmount by a path someone else controls. The mount is found by
/// id; its parent directory is opened without following any link and pinned; the mount
/// root is checked (id, type) beneath that parent; then `umount2` goes through the
/// pinned parent (`/proc/self/fd/P/name`, `UMOUNT_NOFOLLOW`). A mount point cannot be
/// renamed or removed while mounted, so the name still leads to it. (A descriptor on
/// the mount root itself would keep the mount busy.)
pub fn unmount_verified(mnt_id: u64, lazy: bool, magic: i64) -> Result<(), MountError> {
    let path = mount_point_of(mnt_id).ok_or(MountError::Gone)?;
    let failed = |e: &dyn std::fmt::Display| MountError::Failed(format!("{}: {e}", path.display()));
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(failed(&"not a mount the helper unmounts"));
    };
    let parent_fd = open_no_symlinks(parent).map_err(|e| failed(&e))?;
    {
        let how = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::BENEATH;
        let root = openat2(
            &parent_fd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        )
        .map_err(|e| failed(&e))?;
        #[allow(clippy::unnecessary_cast)]
        let fs_magic = rustix::fs::fstatfs(&root)
            .map(|s| s.f_type as i64)
            .map_err(|e| failed(&e))?;
        if mount_id(root.as_fd()).map_err(errno_to)? != mnt_id || fs_magic != magic {
            return Err(failed(&"not the recorded mount"));
        }
    }
    let target = fd_path(parent_fd.as_fd()).join(name);
    let mut flags = rustix::mount::UnmountFlags::NOFOLLOW;
    if lazy {
        flags |= rustix::mount::UnmountFlags::DETACH;
    }
    rustix::mount::unmount(&target, flags).map_err(|e| errno_to(e.into()))
}

impl Mounter for KernelMounter {
    fn mount(&self, req: &MountRequest<'_>) -> Result<u64, MountError> {
        let mount = Mount::builder()
            .fstype("ecryptfs")
            .flags(mount_flags(req.read_only))
            .data(req.options)
            .mount(fd_path(req.lower), fd_path(req.target))
            .map_err(errno_to)?;
        // The new mount covers the target; find its root by path without symlinks and
        // check it is ours before recording it.
        let found = open_no_symlinks(req.target_path)
            .ok()
            .filter(|fd| is_ecryptfs(fd.as_fd()));
        match found.map(|fd| mount_id(fd.as_fd())) {
            Some(Ok(id)) => Ok(id),
            _ => {
                let _ = mount.unmount(UnmountFlags::DETACH);
                Err(MountError::Failed(
                    "the new mount could not be found at its mount point".into(),
                ))
            }
        }
    }

    fn unmount(&self, mnt_id: u64, lazy: bool) -> Result<(), MountError> {
        unmount_verified(mnt_id, lazy, ECRYPTFS_MAGIC)
    }

    fn is_live(&self, mnt_id: u64) -> bool {
        mount_point_of(mnt_id).is_some()
    }

    fn kernel_support(&self) -> KernelSupport {
        crate::kernel::probe(&self.sys, self.serves_messaging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_2012_3409_every_mount_is_nosuid_nodev() {
        for ro in [false, true] {
            let f = mount_flags(ro);
            assert!(f.contains(MountFlags::NOSUID | MountFlags::NODEV));
            assert_eq!(f.contains(MountFlags::RDONLY), ro);
            assert!(!f.intersects(MountFlags::BIND | MountFlags::REMOUNT | MountFlags::MOVE));
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal(r"/home/a\040b/v\134x"), "/home/a b/v\\x");
        assert_eq!(unescape_octal(r"/tail\04"), r"/tail\04");
    }

    #[test]
    fn finds_the_root_mount() {
        let root = std::fs::File::open("/").unwrap();
        let id = mount_id(root.as_fd()).unwrap();
        assert_eq!(mount_point_of(id), Some(PathBuf::from("/")));
        assert!(KernelMounter::default().is_live(id));
        assert!(!KernelMounter::default().is_live(u64::MAX));
        assert_eq!(
            KernelMounter::default().unmount(u64::MAX, false),
            Err(MountError::Gone)
        );
    }
}

/// A mounter that only records what the kernel would have been asked: for the test
/// suites (`--fake-mounts`). Descriptors are resolved the way the kernel resolves
/// `/proc/self/fd/N`, so tests see exactly which directories a real mount would use.
#[derive(Debug, Default)]
pub struct FakeMounter {
    state: std::sync::Mutex<FakeState>,
}

/// What a [`FakeMounter`] saw.
#[derive(Debug, Default, Clone)]
pub struct FakeState {
    next_id: u64,
    pub mounts: std::collections::BTreeMap<u64, FakeMount>,
    /// Calls of `mount` (successful or not).
    pub mount_calls: usize,
    /// Make `unmount` report busy.
    pub busy: bool,
    /// Make the next `mount` fail with this.
    pub fail_next: Option<MountError>,
    /// What the simulated kernel offers (default: eCryptfs loaded, Debian's 309 mask).
    pub support: Option<KernelSupport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMount {
    pub lower: PathBuf,
    pub target: PathBuf,
    pub options: String,
    pub read_only: bool,
}

impl FakeMounter {
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Mounter for FakeMounter {
    fn mount(&self, req: &MountRequest<'_>) -> Result<u64, MountError> {
        let resolve = |fd| {
            rustix::fs::readlink(fd_path(fd), Vec::new())
                .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
                .map_err(|e| MountError::Failed(e.to_string()))
        };
        let (lower, target) = (resolve(req.lower)?, resolve(req.target)?);
        self.with(|s| {
            s.mount_calls += 1;
            if let Some(e) = s.fail_next.take() {
                return Err(e);
            }
            s.next_id += 1;
            let m = FakeMount {
                lower,
                target,
                options: req.options.to_owned(),
                read_only: req.read_only,
            };
            s.mounts.insert(s.next_id, m);
            Ok(s.next_id)
        })
    }

    fn unmount(&self, mnt_id: u64, _lazy: bool) -> Result<(), MountError> {
        self.with(|s| {
            if s.busy {
                return Err(MountError::Busy);
            }
            s.mounts.remove(&mnt_id).map(|_| ()).ok_or(MountError::Gone)
        })
    }

    fn is_live(&self, mnt_id: u64) -> bool {
        self.with(|s| s.mounts.contains_key(&mnt_id))
    }

    fn kernel_support(&self) -> KernelSupport {
        self.with(|s| s.support.clone())
            .unwrap_or_else(|| KernelSupport {
                available: true,
                loadable: false,
                version_bits: 309,
                features: strongroom_dbus::types::feature_names(309),
                messaging: false,
            })
    }
}
