//! The filesystem backends as the vault manager drives them.
//!
//! Userspace: the FUSE daemon `strongroomctl serve` (strongroom-fuse), started as the
//! user; it reads the tokens from the keyring by sig, so no secret crosses its command
//! line. Kernel: through the root helper's D-Bus interface, once it lands.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::busy::{self, Holder};
use strongroom_dbus::backend::{self as choice, BackendRequest, Choice, VaultNeeds};
use strongroom_dbus::KernelSupport;

use crate::context::{BackendKind, CryptoContext, FilenameEncryption, KeyType, VaultConfig};

/// What a vault's context asks of a backend, in the helper contract's terms.
pub fn needs(ctx: &CryptoContext) -> VaultNeeds {
    VaultNeeds {
        public_key: ctx.key_type == KeyType::Openssl,
        filename_encryption: ctx.filename_encryption != FilenameEncryption::None,
        xattr_metadata: ctx.xattr_metadata,
        passthrough: ctx.passthrough,
        // No per-vault privacy setting exists yet; file modes guard a kernel mount.
        owner_only: false,
    }
}

/// `--backend auto|kernel|userspace` for this vault; `kernel` is what the helper
/// reported (None: unreachable). The [`Choice`]'s reason is shown to the user.
pub fn choose(
    request: BackendRequest,
    ctx: &CryptoContext,
    kernel: Option<&KernelSupport>,
) -> Result<Choice, choice::BackendError> {
    choice::choose(request, &needs(ctx), kernel)
}

/// Bound on asking the helper what the kernel offers.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the kernel offers, as the root helper reports it on the system bus; None when
/// the helper (or the bus) is not there or does not answer within `timeout`.
pub async fn kernel_support(timeout: Duration) -> Option<KernelSupport> {
    let ask = async {
        let conn = zbus::Connection::system().await.ok()?;
        let helper = strongroom_dbus::Helper1Proxy::new(&conn).await.ok()?;
        helper.kernel_support().await.ok()
    };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

/// How long a mount may take before the daemon is given up on.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("the {0} backend is not available: {1}")]
    Unavailable(BackendKind, &'static str),
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's own report (`ERROR <code> <message>`); `code` is a strongroomctl exit code.
    #[error("mount failed: {message}")]
    Mount { code: i32, message: String },
    #[error("the mount daemon did not report within {0:?}")]
    Timeout(Duration),
    #[error("{} is busy: {}", mountpoint.display(), describe(holders, *hidden))]
    Busy {
        mountpoint: PathBuf,
        holders: Vec<Holder>,
        hidden: usize,
    },
    #[error("cannot unmount {}: {message}", mountpoint.display())]
    Unmount {
        mountpoint: PathBuf,
        message: String,
    },
}

fn describe(holders: &[Holder], hidden: usize) -> String {
    let mut parts: Vec<String> = holders
        .iter()
        .map(|h| {
            let what: Vec<String> = h
                .uses
                .iter()
                .map(|(u, p)| format!("{u:?} {}", p.display()).to_lowercase())
                .collect();
            format!("{} (pid {}): {}", h.command, h.pid, what.join(", "))
        })
        .collect();
    if hidden > 0 {
        parts.push(format!(
            "{hidden} process(es) of other users could not be inspected"
        ));
    }
    if parts.is_empty() {
        "no process found holding it (try again, or lock with force)".into()
    } else {
        parts.join("; ")
    }
}

/// How hard to unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmountMode {
    /// Fails with [`BackendError::Busy`] naming the holders.
    #[default]
    Graceful,
    /// Detaches now (`umount -l`); the files stay readable by their holders until closed.
    Lazy,
}

/// Whether `mountpoint` is a mount point (from /proc/self/mountinfo).
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(mountpoint) else {
        return false;
    };
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape(mp) == canon.as_os_str().as_bytes())
    })
}

fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The `strongroomctl` that serves userspace mounts: `$STRONGROOMCTL`, else next to
/// the running program, else from `PATH`.
pub fn locate_ctl() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGROOMCTL") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let c = dir.join("strongroomctl");
            if c.is_file() {
                return c;
            }
        }
    }
    PathBuf::from("strongroomctl")
}

/// Drives mounts for the manager.
#[derive(Debug, Clone)]
pub struct Backends {
    pub ctl: PathBuf,
    /// Daemon stderr goes here.
    pub log: PathBuf,
}

impl Backends {
    pub async fn mount(&self, v: &VaultConfig) -> Result<(), BackendError> {
        match v.backend {
            BackendKind::Userspace => self.mount_userspace(v).await,
            BackendKind::Kernel => Err(BackendError::Unavailable(
                BackendKind::Kernel,
                "the root helper (strongroom-helper) is not part of this build yet; use the userspace backend",
            )),
        }
    }

    fn serve_args(v: &VaultConfig) -> Vec<std::ffi::OsString> {
        let c = &v.context;
        let mut a: Vec<std::ffi::OsString> = vec!["serve".into()];
        for s in &c.sigs {
            a.extend(["--sig".into(), s.to_hex().into()]);
        }
        if c.filename_encryption != FilenameEncryption::None {
            if let Some(f) = c.fnek_sig {
                a.extend(["--fnek-sig".into(), f.to_hex().into()]);
            }
        }
        a.extend([
            "--cipher".into(),
            c.cipher.clone().into(),
            "--key-bytes".into(),
            c.key_bytes.to_string().into(),
        ]);
        if c.xattr_metadata {
            a.push("--xattr".into());
        }
        if c.passthrough {
            a.push("--passthrough".into());
        }
        a.extend([
            "--notify".into(),
            "--".into(),
            v.lower.clone().into(),
            v.mountpoint.clone().into(),
        ]);
        a
    }

    async fn mount_userspace(&self, v: &VaultConfig) -> Result<(), BackendError> {
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let spawn_err = |source| BackendError::Spawn {
            program: self.ctl.clone(),
            source,
        };
        let mut child = Command::new(&self.ctl)
            .args(Self::serve_args(v))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group: a terminal's ^C must not take the mount down.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(spawn_err)?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| spawn_err(std::io::Error::other("no pipe")))?;
        let mut line = String::new();
        let mut reader = BufReader::new(out);
        let read = tokio::time::timeout(MOUNT_TIMEOUT, reader.read_line(&mut line)).await;
        match read {
            Err(_) => {
                let _ = child.start_kill();
                return Err(BackendError::Timeout(MOUNT_TIMEOUT));
            }
            Ok(Err(e)) => return Err(spawn_err(e)),
            Ok(Ok(_)) => {}
        }
        let line = line.trim_end();
        if line == "READY" {
            // The daemon lives on, serving the mount; reap it in the background.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(());
        }
        let _ = child.wait().await;
        let (code, message) = match line.strip_prefix("ERROR ") {
            Some(rest) => {
                let (c, m) = rest.split_once(' ').unwrap_or((rest, ""));
                (c.parse().unwrap_or(1), m.to_owned())
            }
            None => (
                1,
                format!(
                    "the mount daemon stopped without mounting; see {}",
                    self.log.display()
                ),
            ),
        };
        Err(BackendError::Mount { code, message })
    }

    pub async fn unmount(&self, v: &VaultConfig, mode: UnmountMode) -> Result<(), BackendError> {
        let mnt = &v.mountpoint;
        let mut cmd = match v.backend {
            BackendKind::Userspace => {
                let mut c = Command::new("fusermount3");
                c.arg("-u");
                if mode == UnmountMode::Lazy {
                    c.arg("-z");
                }
                c
            }
            BackendKind::Kernel => {
                return Err(BackendError::Unavailable(
                    BackendKind::Kernel,
                    "the root helper is not part of this build yet",
                ))
            }
        };
        cmd.arg(mnt);
        let out = cmd.output().await.map_err(|source| BackendError::Spawn {
            program: "fusermount3".into(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if message.contains("busy") {
            let (holders, hidden) = busy::holders(mnt);
            return Err(BackendError::Busy {
                mountpoint: mnt.clone(),
                holders,
                hidden,
            });
        }
        Err(BackendError::Unmount {
            mountpoint: mnt.clone(),
            message,
        })
    }
}

#[cfg(test)]
mod choice_tests {
    use super::*;
    use strongroom_dbus::backend::{Backend, Reason};

    fn ctx(key_type: KeyType, names: FilenameEncryption) -> CryptoContext {
        CryptoContext {
            key_type,
            cipher: "aes".into(),
            key_bytes: 16,
            passthrough: false,
            filename_encryption: names,
            xattr_metadata: false,
            sigs: vec![],
            fnek_sig: None,
            salt: strongroom_core::kdf::DEFAULT_SALT,
        }
    }

    fn kernel(bits: u32, messaging: bool) -> KernelSupport {
        KernelSupport {
            available: true,
            loadable: false,
            version_bits: bits,
            features: vec![],
            messaging,
        }
    }

    #[test]
    fn auto_takes_the_kernel_only_when_it_has_what_the_vault_needs() {
        let fnek = ctx(KeyType::Passphrase, FilenameEncryption::SeparateFnek);
        // 0x17f: everything but filename encryption (a pre-2.6.29 module).
        let c = choose(BackendRequest::Auto, &fnek, Some(&kernel(0x7f, false))).unwrap();
        assert_eq!(c.backend, Backend::Userspace);
        assert_eq!(c.reason, Reason::KernelLacks("filename-encryption"));
        let c = choose(BackendRequest::Auto, &fnek, Some(&kernel(0x17f, false))).unwrap();
        assert_eq!((c.backend, c.reason), (Backend::Kernel, Reason::KernelFits));
        let c = choose(BackendRequest::Auto, &fnek, None).unwrap();
        assert_eq!(c.reason, Reason::HelperUnavailable);
        assert_eq!(
            c.reason.to_string(),
            "strongroom-helper is not available on the system bus"
        );
    }

    #[test]
    fn openssl_vault_needs_kernel_messaging() {
        let rsa = ctx(KeyType::Openssl, FilenameEncryption::None);
        let e = choose(BackendRequest::Kernel, &rsa, Some(&kernel(0x17f, false))).unwrap_err();
        assert!(e.to_string().contains("devmisc"), "{e}");
        let c = choose(BackendRequest::Kernel, &rsa, Some(&kernel(0x17f, true))).unwrap();
        assert_eq!(c.backend, Backend::Kernel);
        let c = choose(BackendRequest::Userspace, &rsa, None).unwrap();
        assert_eq!(
            (c.backend, c.reason),
            (Backend::Userspace, Reason::Requested)
        );
    }
}
