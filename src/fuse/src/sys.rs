//! The few lower-file-system calls std does not offer (xattrs with flags, mknod,
//! utimensat without following symlinks, renameat2, statvfs). All unsafe code of the
//! crate is here; each call gets NUL-terminated paths and correctly sized buffers.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn path_c(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_len(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `lgetxattr`; `size == 0` asks for the length only.
pub fn getxattr(p: &Path, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let (p, n) = (path_c(p)?, cstr(name.as_bytes())?);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings; buf is `size` bytes long (null pointer when 0 asks the length).
    let r = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    };
    let len = check_len(r)?;
    if size == 0 {
        return Ok(vec![0; len]); // caller only wants the length
    }
    buf.truncate(len);
    Ok(buf)
}

/// `fgetxattr` of the whole value (up to 64 KiB, the Linux limit).
pub fn fgetxattr(f: &File, name: &str) -> io::Result<Vec<u8>> {
    let n = cstr(name.as_bytes())?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: open fd, valid C string, buffer of the given length.
    let r = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf.truncate(check_len(r)?);
    Ok(buf)
}

pub fn fsetxattr(f: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: open fd, valid C string, value slice with its length.
    check(unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

pub fn setxattr(p: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let (p, n) = (path_c(p)?, cstr(name.as_bytes())?);
    // SAFETY: valid C strings, value slice with its length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// `llistxattr`: the NUL-separated list.
pub fn listxattr(p: &Path) -> io::Result<Vec<u8>> {
    let p = path_c(p)?;
    loop {
        // SAFETY: valid C string; null buffer with size 0 asks for the length.
        let want = check_len(unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; want];
        // SAFETY: buffer of the given length.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_len(r) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The list grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn removexattr(p: &Path, name: &OsStr) -> io::Result<()> {
    let (p, n) = (path_c(p)?, cstr(name.as_bytes())?);
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
}

/// `access(2)` with the daemon's (real = effective) ids.
pub fn access(p: &Path, mask: i32) -> io::Result<()> {
    let p = path_c(p)?;
    // SAFETY: valid C string.
    check(unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), mask, libc::AT_SYMLINK_NOFOLLOW) })
}

/// `readahead(2)`: asks the lower file system to start reading a range into its page
/// cache in the background. Only a hint, so errors are ignored.
pub fn readahead(f: &File, off: u64, len: usize) {
    // SAFETY: open fd; the call reads no memory of ours.
    unsafe {
        libc::readahead(f.as_raw_fd(), off as libc::off64_t, len);
    }
}

pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let p = path_c(p)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, rdev) })
}

/// A time for `utimensat`: `None` leaves it, `Some(None)` is "now".
pub type TimeSpec = Option<Option<(i64, i64)>>;

pub fn utimens(p: &Path, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    let conv = |t: TimeSpec| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some((s, ns))) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    };
    let times = [conv(atime), conv(mtime)];
    let p = path_c(p)?;
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (f, t) = (path_c(from)?, path_c(to)?);
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}

pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let p = path_c(p)?;
    // SAFETY: zeroed POD struct filled by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a pointer to our struct.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Sets the process umask; the daemon uses 0 so lower modes equal what the kernel sent
/// (the kernel has already applied the caller's umask).
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

pub fn geteuid() -> u32 {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() }
}
