//! What a directory descriptor from a caller refers to, and whether it may take part
//! in a mount. The helper never resolves a caller's path string: the descriptor pins
//! the directory, so swapping a symlink in afterwards changes nothing
//! (CVE-2011-1831/1833 were races between such a check and the mount).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{statx, AtFlags, FileType, StatxAttributes, StatxFlags};

/// Why a directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("the descriptor does not refer to a directory")]
    NotDirectory,
    #[error("the directory has been deleted")]
    Deleted,
    #[error("the directory is not reachable from the helper's root")]
    Unreachable,
    #[error("{0} is a system path")]
    SystemPath(String),
    #[error("{0} is on a pseudo file system")]
    PseudoFs(String),
    #[error("cannot inspect the descriptor: {0}")]
    Io(String),
}

/// A directory as the helper saw it through the caller's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInfo {
    pub path: PathBuf,
    pub uid: u32,
    pub dev: (u32, u32),
    pub ino: u64,
    /// It is the root of a mount (something is already mounted there).
    pub mount_root: bool,
}

/// Path of a descriptor through procfs, usable as a mount source or target: the kernel
/// follows the magic link to exactly the object the descriptor pins.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Inspect a caller's directory descriptor.
pub fn inspect(fd: BorrowedFd<'_>) -> Result<DirInfo, PathError> {
    let st = statx(
        fd.as_fd(),
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE | StatxFlags::UID | StatxFlags::INO,
    )
    .map_err(|e| PathError::Io(e.to_string()))?;
    if FileType::from_raw_mode(st.stx_mode.into()) != FileType::Directory {
        return Err(PathError::NotDirectory);
    }
    let link =
        rustix::fs::readlink(fd_path(fd), Vec::new()).map_err(|e| PathError::Io(e.to_string()))?;
    let text = link
        .to_str()
        .map_err(|_| PathError::Io("path is not UTF-8".into()))?;
    if text.ends_with(" (deleted)") {
        return Err(PathError::Deleted);
    }
    if !text.starts_with('/') {
        // "anon_inode:…" or a path outside our root (another mount namespace or chroot).
        return Err(PathError::Unreachable);
    }
    let path = PathBuf::from(text);
    check_system_path(&path)?;
    check_fs_type(fd, &path)?;
    let mount_root = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    Ok(DirInfo {
        path,
        uid: st.stx_uid,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mount_root,
    })
}

/// Trees nobody mounts a vault into, not even an administrator through polkit.
const FORBIDDEN_TREES: [&str; 14] = [
    "/proc", "/sys", "/dev", "/etc", "/usr", "/boot", "/efi", "/bin", "/sbin", "/lib", "/lib32",
    "/lib64", "/libx32", "/run",
];
/// Directories that must not be covered themselves (their subdirectories may hold vaults).
const FORBIDDEN_EXACT: [&str; 13] = [
    "/",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/tmp",
    "/home",
    "/root",
    "/tmp",
    "/srv",
    "/opt",
    "/mnt",
    "/media",
];
/// Exceptions inside `/run`: removable drives and per-user runtime directories.
const RUN_ALLOWED: [&str; 2] = ["/run/media/", "/run/user/"];

/// Refuse system paths (CVE-2011-1831: a setuid helper mounting over arbitrary places).
pub fn check_system_path(path: &Path) -> Result<(), PathError> {
    let text = path.to_str().unwrap_or("");
    let refused = || PathError::SystemPath(text.to_owned());
    if FORBIDDEN_EXACT.contains(&text) {
        return Err(refused());
    }
    for tree in FORBIDDEN_TREES {
        if path.starts_with(tree) {
            let exempt = RUN_ALLOWED.iter().any(|allowed| {
                // /run/user/<uid> itself stays allowed; /run/user and /run/media do not.
                text.starts_with(allowed) && text.len() > allowed.len()
            });
            if !exempt {
                return Err(refused());
            }
        }
    }
    Ok(())
}

/// Pseudo file systems whose stacking has crashed kernels (CVE-2016-1583: eCryptfs over
/// procfs) or that make no sense under a vault. Magic numbers from `linux/magic.h`.
const PSEUDO_FS: [(i64, &str); 11] = [
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0xf15f, "ecryptfs"),
    (0x1cd1, "devpts"),
    (0x6367_7270, "cgroup2"),
    (0x0027_e0eb, "cgroup"),
    (0x7363_6673, "securityfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x4249_4e4d, "binfmt_misc"),
];

fn check_fs_type(fd: BorrowedFd<'_>, path: &Path) -> Result<(), PathError> {
    let fs = rustix::fs::fstatfs(fd).map_err(|e| PathError::Io(e.to_string()))?;
    #[allow(clippy::unnecessary_cast)]
    let magic = fs.f_type as i64;
    match PSEUDO_FS.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Err(PathError::PseudoFs(format!("{} ({name})", path.display()))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn open_path(p: &Path) -> OwnedFd {
        use rustix::fs::{open, Mode, OFlags};
        open(
            p,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn system_paths() {
        for p in [
            "/",
            "/etc",
            "/etc/ssl",
            "/usr",
            "/usr/local/x",
            "/proc/1",
            "/sys/fs",
            "/dev/shm",
            "/boot",
            "/lib64",
            "/run",
            "/run/dbus",
            "/run/user",
            "/run/media",
            "/var",
            "/var/lib",
            "/home",
            "/tmp",
        ] {
            assert!(check_system_path(Path::new(p)).is_err(), "{p}");
        }
        for p in [
            "/home/alice/Private",
            "/var/lib/vault",
            "/run/media/alice/usb/v",
            "/run/user/1000/v",
            "/tmp/x",
            "/etcetera",
            "/srv/v",
        ] {
            assert_eq!(check_system_path(Path::new(p)), Ok(()), "{p}");
        }
    }

    #[test]
    fn inspects_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let info = inspect(open_path(dir.path()).as_fd()).unwrap();
        assert_eq!(info.path, dir.path().canonicalize().unwrap());
        assert!(!info.mount_root);
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            inspect(open_path(&file).as_fd()),
            Err(PathError::NotDirectory)
        );
        // O_PATH|O_NOFOLLOW on a symlink pins the link itself, never its target.
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert_eq!(
            inspect(open_path(&link).as_fd()),
            Err(PathError::NotDirectory)
        );
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let fd = open_path(&gone);
        std::fs::remove_dir(&gone).unwrap();
        assert_eq!(inspect(fd.as_fd()), Err(PathError::Deleted));
        assert!(matches!(
            inspect(open_path(Path::new("/proc/1")).as_fd()),
            Err(PathError::SystemPath(_))
        ));
        assert!(
            inspect(open_path(Path::new("/")).as_fd()).unwrap_err()
                == PathError::SystemPath("/".into())
        );
    }
}
