//! The filesystem backends as the vault manager drives them.
//!
//! Userspace: the FUSE daemon `strongroomctl serve` (strongroom-fuse), started as the
//! user; it reads the tokens from the keyring by sig, so no secret crosses its command
//! line. Kernel: the root helper's `Helper1.Mount` on the system bus, given descriptors of
//! the two directories, the token bytes and a typed option dictionary.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use zbus::zvariant::Fd;
use zeroize::Zeroizing;

use crate::busy::{self, Holder};
use crate::keysource::VaultTokens;
use strongroom_dbus::backend::{self as choice, Backend, BackendRequest, Reason, VaultNeeds};
use strongroom_dbus::options::OptionError;
use strongroom_dbus::{
    Helper1Proxy, KernelSupport, MountInfo, MountOptions, TokenInfo, UnmountOptions,
};

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

/// The backend that serves a vault, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// [`BackendKind::Kernel`] or [`BackendKind::Userspace`], never `Auto`.
    pub backend: BackendKind,
    /// Shown to the user (translated by the UI); serialized as its text.
    #[serde(serialize_with = "as_text")]
    pub reason: Reason,
}

fn as_text<S: serde::Serializer>(r: &Reason, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

/// `--backend auto|kernel|userspace` for this vault; `kernel` is what the helper
/// reported (None: unreachable). `Auto` is decided here, at every unlock.
pub fn select(
    request: BackendKind,
    ctx: &CryptoContext,
    kernel: Option<&KernelSupport>,
) -> Result<Selection, BackendError> {
    let request = match request {
        BackendKind::Userspace => BackendRequest::Userspace,
        BackendKind::Kernel => BackendRequest::Kernel,
        BackendKind::Auto => BackendRequest::Auto,
    };
    let c = choice::choose(request, &needs(ctx), kernel).map_err(BackendError::Choice)?;
    Ok(Selection {
        backend: match c.backend {
            Backend::Kernel => BackendKind::Kernel,
            _ => BackendKind::Userspace,
        },
        reason: c.reason,
    })
}

/// Bound on asking the helper what the kernel offers.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// The helper's proxy on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` if set).
pub async fn helper() -> Result<Helper1Proxy<'static>, BackendError> {
    let unreachable = |e: zbus::Error| BackendError::HelperUnreachable(e.to_string());
    let conn = zbus::Connection::system().await.map_err(unreachable)?;
    Helper1Proxy::new(&conn).await.map_err(unreachable)
}

/// What the kernel offers, as the root helper reports it on the system bus; None when
/// the helper (or the bus) is not there or does not answer within `timeout`.
pub async fn kernel_support(timeout: Duration) -> Option<KernelSupport> {
    let ask = async { helper().await.ok()?.kernel_support().await.ok() };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

/// What the helper reports to this user, for status views.
#[derive(Debug, Clone, Default)]
pub struct HelperView {
    /// None when the helper cannot be asked.
    pub kernel: Option<KernelSupport>,
    /// The mounts the helper made for this user (`ListMounts`).
    pub mounts: Vec<MountInfo>,
    /// The tokens it holds for this user (`ListTokens`).
    pub tokens: Vec<TokenInfo>,
}

impl HelperView {
    /// Asks the helper, within `timeout`; an unreachable helper gives an empty view.
    pub async fn ask(timeout: Duration) -> HelperView {
        let ask = async {
            let h = helper().await.ok()?;
            let none = HashMap::new();
            Some(HelperView {
                kernel: Some(h.kernel_support().await.ok()?),
                mounts: h.list_mounts(&none).await.unwrap_or_default(),
                tokens: h.list_tokens(&none).await.unwrap_or_default(),
            })
        };
        tokio::time::timeout(timeout, ask)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

/// The `Mount` options for a vault's context (validated before anything is sent).
/// `interactive`: polkit may ask the user to authenticate.
pub fn mount_options(ctx: &CryptoContext, interactive: bool) -> Result<MountOptions, BackendError> {
    let mut o = MountOptions::new(ctx.sigs.iter().map(|s| s.to_hex()).collect());
    if ctx.filename_encryption != FilenameEncryption::None {
        o.fnek_sig = ctx.fnek_sig.map(|s| s.to_hex());
    }
    o.cipher = ctx.cipher.clone();
    o.key_bytes = u32::try_from(ctx.key_bytes).unwrap_or(u32::MAX);
    o.passthrough = ctx.passthrough;
    o.xattr_metadata = ctx.xattr_metadata;
    o.no_user_interaction = !interactive;
    o.validate().map_err(BackendError::Options)?;
    Ok(o)
}

/// The vault's passphrase tokens as `Mount` takes them: each sig once, content tokens
/// first. A private-key token only names a PEM file for ecryptfs-utils' daemon: the
/// helper makes its own from the key `MountWithKeys` carries.
pub fn token_bytes(tokens: &VaultTokens) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out: Vec<(strongroom_core::kdf::Sig, Zeroizing<Vec<u8>>)> = Vec::new();
    for t in std::iter::once(&tokens.main).chain(tokens.fnek.iter()) {
        if t.skek().is_some() && !out.iter().any(|(s, _)| *s == t.sig()) {
            out.push((t.sig(), t.to_bytes()));
        }
    }
    out.into_iter().map(|(_, b)| b).collect()
}

/// What went wrong on the helper's side, as the vault reports it. `at` is the mount point.
pub fn from_helper(e: strongroom_dbus::Error, at: &Path) -> BackendError {
    use strongroom_dbus::Error as E;
    match e {
        E::NotAuthorized(m) => BackendError::NotAuthorized {
            can_obtain: false,
            message: m,
        },
        E::NotAuthorizedCanObtain(m) => BackendError::NotAuthorized {
            can_obtain: true,
            message: m,
        },
        E::Dismissed(m) => BackendError::Dismissed(m),
        E::AuthorityUnavailable(m) => BackendError::AuthorityUnavailable(m),
        E::AlreadyMounted(_) => BackendError::AlreadyMounted(at.to_owned()),
        E::NotMounted(_) => BackendError::NotMounted(at.to_owned()),
        E::Busy(message) => {
            let (holders, hidden) = busy::holders(at);
            BackendError::HelperBusy {
                mountpoint: at.to_owned(),
                message,
                holders,
                hidden,
            }
        }
        E::RateLimited(m) => BackendError::RateLimited(m),
        E::NotSupported(m) => BackendError::KernelRefused(m),
        E::InvalidArgument(m) => BackendError::Helper {
            kind: "invalid argument",
            message: m,
        },
        E::Failed(m) => BackendError::Helper {
            kind: "failed",
            message: m,
        },
        E::ZBus(zbus::Error::MethodError(name, _, _))
            if matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
            ) =>
        {
            BackendError::HelperUnreachable(format!("{name}"))
        }
        other => BackendError::Helper {
            kind: "D-Bus",
            message: other.to_string(),
        },
    }
}

/// A directory as the helper takes it: `O_PATH|O_DIRECTORY|O_NOFOLLOW`, so what is
/// checked and mounted is what was named here, not what a path resolves to later.
fn open_dir(p: &Path) -> Result<OwnedFd, BackendError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|source| BackendError::Open {
            path: p.to_owned(),
            source,
        })
}

/// How long a mount may take before the daemon is given up on.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("the {0} backend is not available: {1}")]
    Unavailable(BackendKind, &'static str),
    /// The backend cannot serve this vault (the contract's reason).
    #[error(transparent)]
    Choice(choice::BackendError),
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
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vault's private key cannot be handed to the helper: {0}")]
    PrivateKey(#[source] strongroom_core::pubkey::PubkeyError),
    #[error("the vault's settings cannot be sent to the helper: {0}")]
    Options(OptionError),
    /// The system bus or strongroom-helper on it cannot be reached.
    #[error("strongroom-helper is not reachable on the system bus: {0}")]
    HelperUnreachable(String),
    /// polkit refused; `can_obtain`: authenticating (interactively) would have allowed it.
    #[error("not authorized{}: {message}", if *can_obtain { " without authentication" } else { "" })]
    NotAuthorized { can_obtain: bool, message: String },
    #[error("authentication was dismissed: {0}")]
    Dismissed(String),
    #[error("the helper cannot ask polkit and refuses: {0}")]
    AuthorityUnavailable(String),
    #[error("{} is already mounted", .0.display())]
    AlreadyMounted(PathBuf),
    #[error("{} is not mounted by the helper", .0.display())]
    NotMounted(PathBuf),
    #[error("{} is busy: {message}; {}", mountpoint.display(), describe(holders, *hidden))]
    HelperBusy {
        mountpoint: PathBuf,
        message: String,
        holders: Vec<Holder>,
        hidden: usize,
    },
    #[error("the helper is rate-limiting this user: {0}")]
    RateLimited(String),
    /// The kernel lacks eCryptfs or a feature (the helper's NotSupported).
    #[error("the kernel cannot mount this vault: {0}")]
    KernelRefused(String),
    #[error("the helper refused ({kind}): {message}")]
    Helper { kind: &'static str, message: String },
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
    mounted_fs(mountpoint).is_some()
}

/// The file system type mounted at `mountpoint` (the top mount there), if any.
pub fn mounted_fs(mountpoint: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(mountpoint).ok()?;
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    info.split(|&b| b == b'\n')
        .filter(|line| {
            line.split(|&b| b == b' ')
                .nth(4)
                .is_some_and(|mp| unescape(mp) == canon.as_os_str().as_bytes())
        })
        .filter_map(|line| {
            // Optional fields end at " - "; the file system type follows.
            let text = String::from_utf8_lossy(line);
            let (_, rest) = text.split_once(" - ")?;
            rest.split(' ').next().map(str::to_owned)
        })
        .next_back()
}

/// Which backend serves the mount at `mountpoint`: the kernel's `ecryptfs`, or FUSE.
pub fn mounted_backend(mountpoint: &Path) -> Option<BackendKind> {
    mounted_fs(mountpoint).map(|fs| {
        if fs == "ecryptfs" {
            BackendKind::Kernel
        } else {
            BackendKind::Userspace
        }
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
    /// Mounts `v` with the selected backend (`on` is Kernel or Userspace). The tokens
    /// are already in the user's keyring; the kernel backend hands them to the helper.
    pub async fn mount(
        &self,
        v: &VaultConfig,
        on: BackendKind,
        tokens: &VaultTokens,
        interactive: bool,
    ) -> Result<(), BackendError> {
        match on {
            BackendKind::Userspace => self.mount_userspace(v).await,
            BackendKind::Kernel => mount_kernel(v, tokens, interactive).await,
            BackendKind::Auto => Err(BackendError::Unavailable(
                BackendKind::Auto,
                "select a backend first",
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

    /// Unmounts with the backend that serves the mount now (whatever the vault's setting).
    pub async fn unmount(
        &self,
        v: &VaultConfig,
        mode: UnmountMode,
        interactive: bool,
    ) -> Result<(), BackendError> {
        let mnt = &v.mountpoint;
        if mounted_backend(mnt) == Some(BackendKind::Kernel) {
            return unmount_kernel(mnt, mode, interactive).await;
        }
        unmount_fuse(mnt, mode).await
    }
}

/// How long a graceful FUSE unmount retries while the mount is busy: a file closed an
/// instant ago can still pin it (a process between fork and exec holds copies of its
/// parent's descriptors; exiting processes drop theirs late).
const BUSY_GRACE: Duration = Duration::from_secs(2);

/// Unmounts a FUSE mount with `fusermount3` (as its owner may). Graceful: retried for
/// [`BUSY_GRACE`] while busy, then [`BackendError::Busy`] naming the holders.
pub async fn unmount_fuse(mnt: &Path, mode: UnmountMode) -> Result<(), BackendError> {
    let deadline = tokio::time::Instant::now() + BUSY_GRACE;
    loop {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if mode == UnmountMode::Lazy {
            cmd.arg("-z");
        }
        cmd.arg(mnt);
        let out = cmd.output().await.map_err(|source| BackendError::Spawn {
            program: "fusermount3".into(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !message.contains("busy") {
            return Err(BackendError::Unmount {
                mountpoint: mnt.to_owned(),
                message,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let (holders, hidden) = busy::holders(mnt);
            return Err(BackendError::Busy {
                mountpoint: mnt.to_owned(),
                holders,
                hidden,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// key source → token → `Helper1.Mount`; for an OpenSSL vault, the decrypted private
/// key → `Helper1.MountWithKeys` (the helper answers the kernel's unwrap requests with it).
async fn mount_kernel(
    v: &VaultConfig,
    tokens: &VaultTokens,
    interactive: bool,
) -> Result<(), BackendError> {
    let options = mount_options(&v.context, interactive)?.to_dict();
    let lower = open_dir(&v.lower)?;
    let target = open_dir(&v.mountpoint)?;
    let (lower, target) = (Fd::from(lower.as_fd()), Fd::from(target.as_fd()));
    let helper = helper().await?;
    let bytes = token_bytes(tokens);
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let sent = match &tokens.key_pair {
        Some(pair) => {
            let der = pair.private_der().map_err(BackendError::PrivateKey)?;
            helper
                .mount_with_keys(lower, target, &refs, &[der.as_slice()], &options)
                .await
        }
        None => helper.mount(lower, target, &refs, &options).await,
    };
    sent.map_err(|e| from_helper(e, &v.mountpoint))?;
    Ok(())
}

/// `Helper1.Unmount` of the mount at `mnt` (the helper also drops the mount's tokens).
async fn unmount_kernel(
    mnt: &Path,
    mode: UnmountMode,
    interactive: bool,
) -> Result<(), BackendError> {
    let path = std::fs::canonicalize(mnt).map_err(|source| BackendError::Open {
        path: mnt.to_owned(),
        source,
    })?;
    let opts = UnmountOptions {
        lazy: mode == UnmountMode::Lazy,
        keep_tokens: false,
        no_user_interaction: !interactive,
    };
    helper()
        .await?
        .unmount(&path.to_string_lossy(), &opts.to_dict())
        .await
        .map_err(|e| from_helper(e, mnt))
}

/// Removes the tokens with these sigs that the helper holds for this user.
pub async fn wipe_helper_tokens(
    sigs: &[strongroom_core::kdf::Sig],
    interactive: bool,
) -> Result<u32, BackendError> {
    let hex: Vec<String> = sigs.iter().map(|s| s.to_hex()).collect();
    let refs: Vec<&str> = hex.iter().map(String::as_str).collect();
    let mut opts = HashMap::new();
    if !interactive {
        opts.insert(
            strongroom_dbus::options::keys::NO_USER_INTERACTION.to_owned(),
            zbus::zvariant::Value::from(true),
        );
    }
    helper()
        .await?
        .wipe_tokens(&refs, &opts)
        .await
        .map_err(|e| from_helper(e, Path::new("/")))
}

#[cfg(test)]
mod choice_tests {
    use super::*;
    use std::collections::HashMap;
    use strongroom_core::kdf::{Passphrase, Sig, DEFAULT_SALT};
    use strongroom_core::token::AuthToken;
    use zbus::zvariant::OwnedValue;

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
            salt: DEFAULT_SALT,
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

    fn sel(backend: BackendKind, reason: Reason) -> Selection {
        Selection { backend, reason }
    }

    #[test]
    fn auto_takes_the_kernel_only_when_it_has_what_the_vault_needs() {
        let fnek = ctx(KeyType::Passphrase, FilenameEncryption::SeparateFnek);
        // 0x7f: everything but filename encryption (a pre-2.6.29 module).
        let c = select(BackendKind::Auto, &fnek, Some(&kernel(0x7f, false))).unwrap();
        assert_eq!(
            c,
            sel(
                BackendKind::Userspace,
                Reason::KernelLacks("filename-encryption")
            )
        );
        let c = select(BackendKind::Auto, &fnek, Some(&kernel(0x17f, false))).unwrap();
        assert_eq!(c, sel(BackendKind::Kernel, Reason::KernelFits));
        let c = select(BackendKind::Auto, &fnek, None).unwrap();
        assert_eq!(c, sel(BackendKind::Userspace, Reason::HelperUnavailable));
        assert_eq!(
            c.reason.to_string(),
            "strongroom-helper is not available on the system bus"
        );
        assert!(matches!(
            select(BackendKind::Kernel, &fnek, None),
            Err(BackendError::Choice(_))
        ));
    }

    #[test]
    fn openssl_vaults_need_the_kernels_messaging() {
        let rsa = ctx(KeyType::Openssl, FilenameEncryption::None);
        // The helper answers the kernel's /dev/ecryptfs requests: only a kernel built
        // with messaging (0x40 pubkey bits, the device) can ask.
        let full = kernel(0x17f, true);
        let c = select(BackendKind::Kernel, &rsa, Some(&full)).unwrap();
        assert_eq!(c, sel(BackendKind::Kernel, Reason::Requested));
        let c = select(BackendKind::Auto, &rsa, Some(&full)).unwrap();
        assert_eq!(c, sel(BackendKind::Kernel, Reason::KernelFits));
        let no_messaging = kernel(309, false);
        let c = select(BackendKind::Auto, &rsa, Some(&no_messaging)).unwrap();
        assert_eq!(c.backend, BackendKind::Userspace);
        assert!(matches!(c.reason, Reason::KernelLacks(_)), "{:?}", c.reason);
        assert!(matches!(
            select(BackendKind::Kernel, &rsa, Some(&no_messaging)),
            Err(BackendError::Choice(_))
        ));
        let c = select(BackendKind::Userspace, &rsa, None).unwrap();
        assert_eq!(c, sel(BackendKind::Userspace, Reason::Requested));
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::json!({"backend": "userspace", "reason": "requested"})
        );
    }

    fn owned(d: HashMap<String, zbus::zvariant::Value<'static>>) -> HashMap<String, OwnedValue> {
        d.into_iter()
            .map(|(k, v)| (k, OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    /// The option dictionary is what the helper parses back (its own validation), with
    /// each context field under its contract key; sigs from the spec's vectors (§9).
    #[test]
    fn option_dict_from_the_vault_context() {
        // "test123" → 2a97418edca01eb9 (default salt), the FNEK salt → 33a5d5e39463d53f.
        let p = Passphrase::new("test123").unwrap();
        let main = AuthToken::from_passphrase(&p, &DEFAULT_SALT);
        let fnek = AuthToken::from_passphrase(&p, &strongroom_core::kdf::FNEK_SALT);
        assert_eq!(main.sig().to_hex(), "2a97418edca01eb9");
        let mut c = ctx(KeyType::Passphrase, FilenameEncryption::SeparateFnek);
        c.sigs = vec![main.sig()];
        c.fnek_sig = Some(fnek.sig());
        c.cipher = "blowfish".into();
        c.key_bytes = 56;
        c.xattr_metadata = true;
        c.passthrough = true;
        let o = mount_options(&c, false).unwrap();
        let back = MountOptions::from_dict(&owned(o.to_dict())).unwrap();
        assert_eq!(back.sigs, ["2a97418edca01eb9"]);
        assert_eq!(back.fnek_sig.as_deref(), Some("33a5d5e39463d53f"));
        assert_eq!((back.cipher.as_str(), back.key_bytes), ("blowfish", 56));
        assert!(back.xattr_metadata && back.passthrough && back.no_user_interaction);
        assert!(!back.read_only && !back.encrypted_view && !back.mount_auth_tok_only);
        // Interactive: the key is left out, not sent as false.
        let d = mount_options(&c, true).unwrap().to_dict();
        assert!(!d.contains_key(strongroom_dbus::options::keys::NO_USER_INTERACTION));
        // Plain names: no FNEK sig even if one is recorded.
        c.filename_encryption = FilenameEncryption::None;
        assert_eq!(mount_options(&c, true).unwrap().fnek_sig, None);
        // A context the helper would refuse is refused here, before anything is sent.
        c.key_bytes = 17;
        assert!(matches!(
            mount_options(&c, true),
            Err(BackendError::Options(_))
        ));
        c.key_bytes = 56;
        c.sigs = vec![];
        assert!(matches!(
            mount_options(&c, true),
            Err(BackendError::Options(_))
        ));
    }

    #[test]
    fn tokens_are_sent_once_per_sig() {
        let p = Passphrase::new("test123").unwrap();
        let main = AuthToken::from_passphrase(&p, &DEFAULT_SALT);
        let same = VaultTokens {
            main: main.clone(),
            fnek: Some(main.clone()),
            key_pair: None,
        };
        let b = token_bytes(&same);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].len(), 740);
        assert_eq!(&b[0][712..728], b"2a97418edca01eb9");
        let sep = VaultTokens {
            main,
            fnek: Some(AuthToken::from_passphrase(
                &p,
                &strongroom_core::kdf::FNEK_SALT,
            )),
            key_pair: None,
        };
        let b = token_bytes(&sep);
        assert_eq!(b.len(), 2);
        assert_eq!(&b[1][712..728], b"33a5d5e39463d53f");
        let _: Sig = "33a5d5e39463d53f".parse().unwrap();
        // A private-key token (names a PEM file) is never sent: the key travels instead.
        let pk = VaultTokens {
            main: AuthToken::private_key(
                "0123456789abcdef".parse().unwrap(),
                "openssl",
                zeroize::Zeroizing::new(b"blob".to_vec()),
            )
            .unwrap(),
            fnek: None,
            key_pair: None,
        };
        assert!(token_bytes(&pk).is_empty());
    }

    #[test]
    fn helper_errors_map_to_typed_vault_errors() {
        use strongroom_dbus::Error as E;
        let at = Path::new("/nonexistent/mnt");
        let m = |e| from_helper(e, at);
        assert!(matches!(
            m(E::NotAuthorized("x".into())),
            BackendError::NotAuthorized {
                can_obtain: false,
                ..
            }
        ));
        assert!(matches!(
            m(E::NotAuthorizedCanObtain("x".into())),
            BackendError::NotAuthorized {
                can_obtain: true,
                ..
            }
        ));
        assert!(matches!(
            m(E::Dismissed("x".into())),
            BackendError::Dismissed(_)
        ));
        assert!(matches!(
            m(E::AuthorityUnavailable("x".into())),
            BackendError::AuthorityUnavailable(_)
        ));
        assert!(matches!(
            m(E::AlreadyMounted("x".into())),
            BackendError::AlreadyMounted(p) if p == at
        ));
        assert!(matches!(
            m(E::NotMounted("x".into())),
            BackendError::NotMounted(_)
        ));
        assert!(matches!(
            m(E::Busy("in use".into())),
            BackendError::HelperBusy { message, .. } if message == "in use"
        ));
        assert!(matches!(
            m(E::RateLimited("x".into())),
            BackendError::RateLimited(_)
        ));
        assert!(matches!(
            m(E::NotSupported("x".into())),
            BackendError::KernelRefused(_)
        ));
        assert!(matches!(
            m(E::InvalidArgument("x".into())),
            BackendError::Helper {
                kind: "invalid argument",
                ..
            }
        ));
    }
}
