//! The few libc calls neither std nor `lower.rs` (rustix) covers: xattrs of open files,
//! readahead, early writeback, umask. All unsafe code of the crate is here; each call gets
//! NUL-terminated names and correctly sized buffers.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
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

/// `readahead(2)`: asks the lower file system to start reading a range into its page
/// cache in the background. Only a hint, so errors are ignored.
pub fn readahead(f: &File, off: u64, len: usize) {
    // SAFETY: open fd; the call reads no memory of ours.
    unsafe {
        libc::readahead(f.as_raw_fd(), off as libc::off64_t, len);
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writeback of a range without
/// waiting for it. Only a hint (durability still comes from fsync), so errors are ignored.
pub fn start_writeback(f: &File, off: u64, len: u64) {
    // SAFETY: open fd; the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
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

/// Puts the calling thread in the idle I/O class (`ioprio_set`, `IOPRIO_CLASS_IDLE`):
/// its reads wait while anything else reads the disk (with schedulers that honour I/O
/// classes, e.g. BFQ; mq-deadline does not). For the size prefetch, so that it yields
/// to the walk or the reads going on beside it. A hint; errors ignored.
pub fn idle_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: u32 = 13;
    // SAFETY: plain syscall on this thread (who = 0), no memory passed.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
}

/// `pwritev` of all of `bufs` at `off`, continuing after short writes.
pub fn write_all_vectored_at(
    f: &File,
    mut bufs: &mut [io::IoSlice<'_>],
    mut off: u64,
) -> io::Result<()> {
    while !bufs.is_empty() {
        match rustix::io::pwritev(f, bufs, off) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                off += n as u64;
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
