//! `strongroom-fuse`: Strongroom's userspace backend. An eCryptfs lower directory
//! mounted with FUSE, as the user, byte-compatible with the kernel's eCryptfs in both
//! directions (same headers, extents, IVs, encrypted names).
//!
//! The file system itself is [`EcryptFs`]; [`mount`] starts it on a mount point and
//! returns a running [`Mounted`] session. Key material comes in through
//! [`Options`]: the wrapping keys for new files, a [`KeyLookup`] for existing ones
//! (the kernel keyring by sig, or an in-memory key set) and the optional FNEK.

mod ahead;
mod cryptfile;
mod fs;
mod inode;
mod listing;
mod lower;
mod names;
mod sizes;
mod sys;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fs::EcryptFs;
use strongroom_core::cipher::CipherSpec;
use strongroom_core::filename::FilenameKey;
use strongroom_core::keys::{KeyLookup, WrappingKey};

pub use cryptfile::SIZE_UPDATE_INTERVAL;

/// Everything a mount needs. Secrets stay inside the key types (zeroized on drop).
pub struct Options {
    /// The lower (encrypted) directory.
    pub lower: PathBuf,
    /// Keys that wrap the FEK of every new file (the mount's `ecryptfs_sig`s).
    pub wrapping: Vec<WrappingKey>,
    /// Finds the key for the sigs in existing files' headers.
    pub lookup: Arc<dyn KeyLookup + Send + Sync>,
    /// Content cipher and FEK size for new files.
    pub spec: CipherSpec,
    /// Filename encryption key (`ecryptfs_fnek_sig`), if names are encrypted.
    pub fnek: Option<FilenameKey>,
    /// New files keep their header in the `user.ecryptfs` xattr; xattr-only headers accepted.
    pub xattr_metadata: bool,
    /// Lower files without a usable header are shown as plaintext.
    pub passthrough: bool,
    pub read_only: bool,
    /// Read-only raw ciphertext view (for backups); implies xattr metadata.
    pub encrypted_view: bool,
    /// Let other users in (`allow_other` + `default_permissions`, kernel permission checks).
    pub allow_other: bool,
    /// Request threads (0 = twice the CPUs, at least 8).
    pub threads: usize,
    /// What `/proc/mounts` shows as the source.
    pub fsname: String,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("lower", &self.lower)
            .field(
                "wrapping_sigs",
                &self
                    .wrapping
                    .iter()
                    .map(|k| k.sig().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("spec", &self.spec)
            .field("fnek", &self.fnek.as_ref().map(|k| k.sig().to_string()))
            .field("xattr_metadata", &self.xattr_metadata)
            .field("passthrough", &self.passthrough)
            .field("read_only", &self.read_only)
            .field("encrypted_view", &self.encrypted_view)
            .field("allow_other", &self.allow_other)
            .finish_non_exhaustive()
    }
}

/// Errors before the file system is up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("cannot use the lower directory {path}: {source}")]
    Lower { path: PathBuf, source: io::Error },
    #[error("no key to encrypt new files with (give at least one key)")]
    NoWrappingKey,
    #[error("cannot mount on {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
}

/// A mounted file system whose requests are served by background threads.
#[derive(Debug)]
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Unmounts (if still mounted) and waits for the request threads. Retries for a
    /// moment while the mount is busy (the kernel releases closed files asynchronously).
    pub fn unmount(self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..50 {
            match std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-q")
                .arg(&self.mountpoint)
                .output()
            {
                Ok(o) if o.status.success() => return self.session.join(),
                Ok(o) => last = Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                Err(e) => last = Some(e.to_string()),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(io::Error::other(format!(
            "cannot unmount {}: {}",
            self.mountpoint.display(),
            last.unwrap_or_default()
        )))
    }

    /// Waits until the file system is unmounted from outside (`fusermount3 -u`).
    pub fn wait(self) -> io::Result<()> {
        self.session.join()
    }
}

/// The fuser configuration for these options.
fn fuser_config(opts: &Options) -> fuser::Config {
    use fuser::MountOption as M;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        M::FSName(opts.fsname.clone()),
        M::Subtype("strongroom".into()),
        M::NoDev,
        M::NoSuid,
    ];
    if opts.read_only || opts.encrypted_view {
        cfg.mount_options.push(M::RO);
    }
    if opts.allow_other {
        cfg.mount_options.push(M::DefaultPermissions);
        cfg.acl = fuser::SessionACL::All;
    }
    // Threads mostly wait in read(2) on /dev/fuse; more waiting readers shorten a
    // request's wake-up (measured on 2 vCPUs: `ls -l` of 10000 cold entries, 30000
    // requests one after another, 0.45 s with 4 threads, 0.34 s with 8 or 12).
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_mul(2)
            .max(8)
    } else {
        opts.threads
    };
    cfg.n_threads = Some(threads);
    cfg.clone_fd = true;
    cfg
}

/// Directory fds are cached (up to 4096) besides open files: lift the soft fd limit
/// (often 1024) to the hard one, as Go does for gocryptfs. Best effort.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            log::info!("cannot raise the open file limit: {e}");
        }
    }
}

/// File descriptors the daemon may hold at once, with room to spare: the cached lower
/// directories and the files awaiting the reaper, rounded up to the kernel's next table
/// size (8192), which leaves the rest for open files.
pub const FDS_RESERVED: u64 = (fs::DIR_FDS_MAX + lower::Reaper::QUEUE).next_power_of_two() as u64;

/// Grows the fd table once, at mount, to hold [`FDS_RESERVED`] descriptors. The kernel
/// grows it by doubling whenever a new fd passes its size, and in a multithreaded
/// process each growth waits for an RCU grace period (`expand_fdtable`) while every
/// other thread that opens an fd waits with it: a cold `find` stalled 12 ms in the
/// `openat` that took the daemon past 64 fds, both CPUs idle (sched and syscall trace).
/// The table never shrinks, so once is enough; the duplicate is closed at once. Best
/// effort.
fn reserve_fds() {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(FDS_RESERVED);
    // At most 8191: fits an fd number.
    let top = limit.min(FDS_RESERVED).saturating_sub(1) as i32;
    let reserved =
        std::fs::File::open("/").and_then(|f| Ok(rustix::io::fcntl_dupfd_cloexec(&f, top)?));
    if let Err(e) = reserved {
        log::info!("cannot reserve {top} file descriptors: {e}");
    }
}

/// Mounts `opts.lower` on `mountpoint` and serves it from background threads until
/// unmounted. Sets the process umask to 0 (the kernel applies the caller's umask).
pub fn mount(opts: Options, mountpoint: &Path) -> Result<Mounted, MountError> {
    let cfg = fuser_config(&opts);
    // Before the file system's thread pools start: a single-threaded process grows its
    // fd table without waiting.
    raise_fd_limit();
    reserve_fds();
    let fs = EcryptFs::new(opts)?;
    sys::set_umask(0);
    let session = fuser::Session::new(fs, mountpoint, &cfg)
        .and_then(fuser::Session::spawn)
        .map_err(|source| MountError::Mount {
            path: mountpoint.to_owned(),
            source,
        })?;
    Ok(Mounted {
        session,
        mountpoint: mountpoint.to_owned(),
    })
}
