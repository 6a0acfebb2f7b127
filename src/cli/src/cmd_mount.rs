//! `mount` / `umount` with the userspace backend (strongroom-fuse), and the hidden
//! `serve` command that is the mount daemon.
//!
//! `mount` derives the auth token from the passphrase, checks it against the lower
//! directory (a wrong passphrase is refused before anything is mounted), puts the
//! token into the keyring like `mount.ecryptfs`, then starts `strongroomctl serve` in
//! the background. The daemon reads the keys from the keyring by sig (no secret on its
//! command line or environment), mounts, and says `READY` on its stdout; `mount`
//! returns once it has. Errors come back the same way with their exit code.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::filename::{FilenameKey, FNEK_PREFIX};
use strongroom_core::header::{Header, XATTR_NAME};
use strongroom_core::kdf::{Salt, Sig, DEFAULT_SALT, FNEK_SALT};
use strongroom_core::keyring::{self, KeyringLookup, Ring};
use strongroom_core::keys::WrappingKey;
use strongroom_core::packet::KeyPacket;
use strongroom_core::token::AuthToken;

use crate::{exit, secret};

/// An error that carries its exit status (exit.rs).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Failure {
    pub code: i32,
    pub msg: String,
}

fn fail(code: i32, msg: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        msg: msg.into(),
    }
    .into()
}

/// The exit status for an error of this module.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<Failure>().map_or(exit::FAILED, |f| f.code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Strongroom's own FUSE file system, run as the user.
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetRing {
    /// The user keyring @u, linked into the session keyring (what mount.ecryptfs does).
    User,
    /// Only this session's keyring @s.
    Session,
}

/// Mount an eCryptfs lower directory (decrypted view at MOUNTPOINT).
#[derive(Debug, Args)]
pub struct MountArgs {
    #[arg(long, value_enum, default_value = "userspace")]
    pub backend: Backend,
    /// Read the passphrase from this file (first line, or a `passphrase_passwd=` line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Content cipher for new files (aes, blowfish, des3_ede, cast5, cast6, twofish).
    #[arg(long)]
    pub cipher: Option<String>,
    /// FEK size in bytes for new files.
    #[arg(long)]
    pub key_bytes: Option<usize>,
    /// Encrypt file names with the same key (mount.ecryptfs' default FNEK).
    #[arg(long, conflicts_with = "fnek_separate")]
    pub fnek: bool,
    /// Encrypt file names with the separate FNEK token of `ecryptfs-add-passphrase --fnek`.
    #[arg(long)]
    pub fnek_separate: bool,
    /// Keep headers in the `user.ecryptfs` xattr.
    #[arg(long)]
    pub xattr: bool,
    /// Show non-eCryptfs lower files as plaintext.
    #[arg(long)]
    pub passthrough: bool,
    #[arg(long)]
    pub read_only: bool,
    /// Read-only raw ciphertext view (for backups).
    #[arg(long)]
    pub encrypted_view: bool,
    /// Let other users in (allow_other + default_permissions; needs user_allow_other
    /// in /etc/fuse.conf when not root).
    #[arg(long)]
    pub allow_other: bool,
    /// Stay in the foreground (logs on stderr) until unmounted.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Keyring that receives the token.
    #[arg(long, value_enum, default_value = "user")]
    pub keyring: TargetRing,
    /// eCryptfs mount options, e.g. `key=passphrase:passfile=F,ecryptfs_cipher=aes,ecryptfs_key_bytes=32`.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
}

/// Unmount a Strongroom (or any FUSE) mount.
#[derive(Debug, Args)]
pub struct UmountArgs {
    pub mountpoint: PathBuf,
}

/// The mount daemon (started by `mount`; reads its keys from the keyring by sig).
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long = "sig", required = true)]
    pub sigs: Vec<Sig>,
    #[arg(long)]
    pub fnek_sig: Option<Sig>,
    #[arg(long)]
    pub cipher: String,
    #[arg(long)]
    pub key_bytes: usize,
    #[arg(long)]
    pub xattr: bool,
    #[arg(long)]
    pub passthrough: bool,
    #[arg(long)]
    pub read_only: bool,
    #[arg(long)]
    pub encrypted_view: bool,
    #[arg(long)]
    pub allow_other: bool,
    /// Report `READY` / `ERROR <code> <message>` on stdout.
    #[arg(long)]
    pub notify: bool,
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
}

/// Everything decided for one mount.
#[derive(Debug)]
struct Plan {
    spec: CipherSpec,
    passphrase_file: Option<PathBuf>,
    salt: Salt,
    fnek: Fnek,
    xattr: bool,
    passthrough: bool,
    read_only: bool,
    encrypted_view: bool,
    allow_other: bool,
    nonempty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fnek {
    Off,
    SameKey,
    Separate,
}

fn plan(a: &MountArgs) -> Result<Plan> {
    let mut p = Plan {
        spec: CipherSpec::new(Cipher::Aes, 16)?,
        passphrase_file: a.passphrase_file.clone(),
        salt: DEFAULT_SALT,
        fnek: if a.fnek_separate {
            Fnek::Separate
        } else if a.fnek {
            Fnek::SameKey
        } else {
            Fnek::Off
        },
        xattr: a.xattr,
        passthrough: a.passthrough,
        read_only: a.read_only,
        encrypted_view: a.encrypted_view,
        allow_other: a.allow_other,
        nonempty: false,
    };
    let mut cipher = a.cipher.clone();
    let mut key_bytes = a.key_bytes;
    for opts in &a.options {
        apply_options(opts, &mut p, &mut cipher, &mut key_bytes)?;
    }
    let c = match &cipher {
        Some(name) => Cipher::from_name(name).map_err(|e| fail(exit::USAGE, e.to_string()))?,
        None => Cipher::Aes,
    };
    let kb = key_bytes.unwrap_or_else(|| c.key_sizes()[0]);
    p.spec = CipherSpec::new(c, kb).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    Ok(p)
}

/// `-o` strings: the eCryptfs kernel and mount.ecryptfs options that matter here.
fn apply_options(
    s: &str,
    p: &mut Plan,
    cipher: &mut Option<String>,
    key_bytes: &mut Option<usize>,
) -> Result<()> {
    let yes = |v: &str| matches!(v, "y" | "yes" | "1" | "true" | "");
    for opt in s.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
        match name {
            "key" => {
                let mut parts = value.split(':');
                match parts.next() {
                    Some("passphrase") => {}
                    Some(other) => {
                        return Err(fail(
                            exit::USAGE,
                            format!(
                                "key module {other:?} is not supported by the userspace mount yet"
                            ),
                        ))
                    }
                    None => {}
                }
                for kv in parts {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    match k {
                        "passphrase_passwd_file" | "passfile" => p.passphrase_file = Some(PathBuf::from(v)),
                        "passphrase_salt" | "salt" => {
                            p.salt = v.parse().map_err(|_| fail(exit::USAGE, format!("bad salt {v:?} (16 hex digits)")))?
                        }
                        "passphrase_passwd" | "passwd" | "passphrase_passwd_fd" | "passfd" => {
                            return Err(fail(exit::USAGE, "give the passphrase in a file (passfile=) or on the terminal, never in the options"))
                        }
                        _ => return Err(fail(exit::USAGE, format!("unknown key option {k:?}"))),
                    }
                }
            }
            "ecryptfs_cipher" | "cipher" => *cipher = Some(value.to_owned()),
            "ecryptfs_key_bytes" => {
                *key_bytes =
                    Some(value.parse().map_err(|_| {
                        fail(exit::USAGE, format!("bad ecryptfs_key_bytes {value:?}"))
                    })?)
            }
            "ecryptfs_passthrough" | "passthrough" => p.passthrough = yes(value),
            "ecryptfs_xattr" | "ecryptfs_xattr_metadata" | "xattr" => p.xattr = yes(value),
            "ecryptfs_encrypted_view" | "encrypted_view" => p.encrypted_view = yes(value),
            "ecryptfs_enable_filename_crypto" => {
                if yes(value) && p.fnek == Fnek::Off {
                    p.fnek = Fnek::SameKey;
                } else if !yes(value) {
                    p.fnek = Fnek::Off;
                }
            }
            "ro" => p.read_only = true,
            "rw" => p.read_only = false,
            "allow_other" => p.allow_other = true,
            "nonempty" => p.nonempty = true,
            // Accepted and meaningless here: the keyring is always used, no prompts.
            "no_sig_cache"
            | "verbosity"
            | "verbose"
            | "ecryptfs_unlink_sigs"
            | "no_prompt"
            | "wild_ass_guess"
            | "ecryptfs_sig"
            | "ecryptfs_fnek_sig"
            | "user"
            | "noauto"
            | "defaults"
            | "nofail"
            | "_netdev" => {}
            _ => return Err(fail(exit::USAGE, format!("unknown mount option {name:?}"))),
        }
    }
    Ok(())
}

fn check_paths(lower: &Path, mnt: &Path, p: &Plan) -> Result<()> {
    let lm = std::fs::metadata(lower).map_err(|e| {
        fail(
            exit::USAGE,
            format!("lower directory {}: {e}", lower.display()),
        )
    })?;
    if !lm.is_dir() {
        return Err(fail(
            exit::USAGE,
            format!("lower directory {} is not a directory", lower.display()),
        ));
    }
    let mm = std::fs::metadata(mnt)
        .map_err(|e| fail(exit::USAGE, format!("mount point {}: {e}", mnt.display())))?;
    if !mm.is_dir() {
        return Err(fail(
            exit::USAGE,
            format!("mount point {} is not a directory", mnt.display()),
        ));
    }
    if strongroom_vault::backend::is_mounted(mnt) {
        return Err(fail(
            exit::BUSY,
            format!("{} is already a mount point", mnt.display()),
        ));
    }
    if !p.nonempty && std::fs::read_dir(mnt)?.next().is_some() {
        return Err(fail(
            exit::NOT_EMPTY,
            format!(
                "mount point {} is not empty (hidden files would be shadowed)",
                mnt.display()
            ),
        ));
    }
    if !(p.read_only || p.encrypted_view) && lower_read_only(lower) {
        return Err(fail(
            exit::READ_ONLY_FS,
            format!(
                "lower directory {} is on a read-only file system; mount with --read-only",
                lower.display()
            ),
        ));
    }
    Ok(())
}

fn lower_read_only(lower: &Path) -> bool {
    // statvfs would need unsafe here; a probe file tells the same (and catches EACCES too).
    let probe = lower.join(format!(".strongroom-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(e) => e.raw_os_error() == Some(libc::EROFS),
    }
}

/// Sigs of the passphrase packets in the first eCryptfs headers found in `lower`
/// (breadth-first, bounded), so a wrong passphrase is caught before mounting.
fn existing_sigs(lower: &Path, xattr: bool) -> Vec<Vec<Sig>> {
    let mut found = Vec::new();
    let mut dirs = vec![lower.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            seen += 1;
            if seen > 2000 || found.len() >= 8 {
                return found;
            }
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_dir() {
                dirs.push(ent.path());
            } else if ft.is_file() {
                if let Some(h) = header_of(&ent.path(), xattr) {
                    let sigs = h
                        .packets
                        .iter()
                        .map(|p| match p {
                            KeyPacket::Passphrase { sig, .. }
                            | KeyPacket::PublicKey { sig, .. } => *sig,
                        })
                        .collect();
                    found.push(sigs);
                }
            }
        }
    }
    found
}

fn header_of(path: &Path, xattr: bool) -> Option<Header> {
    let f = File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0).ok()?;
    if let Ok(h) = Header::parse(&buf[..n]) {
        return Some(h);
    }
    if xattr {
        let v = xattr_value(path)?;
        return Header::parse(&v).ok();
    }
    None
}

fn xattr_value(path: &Path) -> Option<Vec<u8>> {
    xattr::get(path, XATTR_NAME).ok().flatten()
}

/// An encrypted lower name in `lower` (to check the FNEK against).
fn some_encrypted_name(lower: &Path) -> Option<Vec<u8>> {
    let rd = std::fs::read_dir(lower).ok()?;
    rd.flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .find(|n| n.starts_with(FNEK_PREFIX.as_bytes()))
}

fn ring(t: TargetRing) -> Ring {
    match t {
        TargetRing::User => Ring::User,
        TargetRing::Session => Ring::Session,
    }
}

pub fn mount(a: MountArgs) -> Result<i32> {
    let Backend::Userspace = a.backend;
    let p = plan(&a)?;
    check_paths(&a.lower, &a.mountpoint, &p)?;
    let pass = secret::obtain(p.passphrase_file.as_deref(), "Passphrase: ")
        .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
    let token = AuthToken::from_passphrase(&pass, &p.salt);
    let sig = token.sig();
    let xattr_headers = p.xattr || p.encrypted_view;
    let headers = existing_sigs(&a.lower, xattr_headers);
    if !headers.is_empty() && !headers.iter().any(|s| s.contains(&sig)) {
        return Err(fail(
            exit::BAD_KEY,
            format!(
                "wrong passphrase: files in {} are encrypted with key {}, this passphrase gives {sig}",
                a.lower.display(),
                headers[0].iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let fnek_token = match p.fnek {
        Fnek::Off => None,
        Fnek::SameKey => Some(token.clone()),
        Fnek::Separate => Some(AuthToken::from_passphrase(&pass, &FNEK_SALT)),
    };
    drop(pass);
    if let (Some(t), Some(name)) = (&fnek_token, some_encrypted_name(&a.lower)) {
        let skek = t
            .skek()
            .ok_or_else(|| anyhow!("FNEK token without a key"))?;
        let fk =
            FilenameKey::new(skek.clone(), p.spec).map_err(|e| fail(exit::USAGE, e.to_string()))?;
        if fk.decrypt(&name).is_err() {
            return Err(fail(exit::BAD_KEY, "wrong passphrase or FNEK convention: the encrypted file names do not decrypt (try --fnek / --fnek-separate)"));
        }
    }
    let target = ring(a.keyring);
    keyring::add_token(target, &token).map_err(|e| {
        fail(
            exit::KEY_MISSING,
            format!("cannot add the key to the keyring: {e}"),
        )
    })?;
    if let Some(t) = &fnek_token {
        keyring::add_token(target, t).map_err(|e| {
            fail(
                exit::KEY_MISSING,
                format!("cannot add the FNEK to the keyring: {e}"),
            )
        })?;
    }
    let serve = ServeArgs {
        sigs: vec![sig],
        fnek_sig: fnek_token.as_ref().map(AuthToken::sig),
        cipher: p.spec.cipher.name().to_owned(),
        key_bytes: p.spec.key_bytes,
        xattr: p.xattr,
        passthrough: p.passthrough,
        read_only: p.read_only,
        encrypted_view: p.encrypted_view,
        allow_other: p.allow_other,
        notify: true,
        lower: a.lower.clone(),
        mountpoint: a.mountpoint.clone(),
    };
    if a.foreground {
        return serve_now(serve, false);
    }
    spawn_daemon(&serve)
}

fn serve_argv(s: &ServeArgs) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["serve".into()];
    for sig in &s.sigs {
        v.push("--sig".into());
        v.push(sig.to_string().into());
    }
    if let Some(f) = s.fnek_sig {
        v.push("--fnek-sig".into());
        v.push(f.to_string().into());
    }
    v.extend([
        "--cipher".into(),
        s.cipher.clone().into(),
        "--key-bytes".into(),
        s.key_bytes.to_string().into(),
    ]);
    for (on, flag) in [
        (s.xattr, "--xattr"),
        (s.passthrough, "--passthrough"),
        (s.read_only, "--read-only"),
        (s.encrypted_view, "--encrypted-view"),
        (s.allow_other, "--allow-other"),
        (true, "--notify"),
    ] {
        if on {
            v.push(flag.into());
        }
    }
    v.push("--".into());
    v.push(s.lower.clone().into());
    v.push(s.mountpoint.clone().into());
    v
}

/// `$XDG_STATE_HOME/strongroom/` (or `~/.local/state/strongroom/`).
fn log_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            home.join(".local/state")
        });
    base.join("strongroom")
}

fn spawn_daemon(s: &ServeArgs) -> Result<i32> {
    let dir = log_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_path = dir.join("fuse.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut child = Command::new(exe)
        .args(serve_argv(s))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Out of the terminal's process group: ^C on the shell does not kill the mount.
        .process_group(0)
        .spawn()
        .context("cannot start the mount daemon")?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no daemon pipe"))?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("cannot read from the mount daemon")?;
    let line = line.trim_end();
    if line == "READY" {
        return Ok(exit::OK);
    }
    let _ = child.wait();
    if let Some(rest) = line.strip_prefix("ERROR ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(fail(code.parse().unwrap_or(exit::FAILED), msg.to_owned()));
    }
    Err(fail(
        exit::FAILED,
        format!(
            "the mount daemon stopped without mounting; see {}",
            log_path.display()
        ),
    ))
}

pub fn serve(s: ServeArgs) -> Result<i32> {
    let notify = s.notify;
    serve_now(s, notify)
}

/// Mounts and serves until unmounted; with `notify`, reports on stdout.
fn serve_now(s: ServeArgs, notify: bool) -> Result<i32> {
    let say = |text: &str| {
        if notify {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    };
    let mounted = match start(&s) {
        Ok(m) => m,
        Err(e) => {
            let code = exit_code(&e);
            say(&format!(
                "ERROR {code} {}",
                format!("{e:#}").replace('\n', " ")
            ));
            return Err(e);
        }
    };
    log::info!(
        "mounted {} on {}",
        s.lower.display(),
        s.mountpoint.display()
    );
    say("READY");
    mounted
        .wait()
        .context("the file system session ended with an error")?;
    log::info!("unmounted {}", s.mountpoint.display());
    Ok(exit::OK)
}

fn start(s: &ServeArgs) -> Result<strongroom_fuse::Mounted> {
    let cipher = Cipher::from_name(&s.cipher).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let spec =
        CipherSpec::new(cipher, s.key_bytes).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let lookup = KeyringLookup::default();
    let mut wrapping = Vec::new();
    for sig in &s.sigs {
        wrapping.push(wrapping_key(sig)?);
    }
    let fnek = match &s.fnek_sig {
        Some(sig) => match find_token(sig)? {
            AuthToken::Passphrase { skek, .. } => {
                Some(FilenameKey::new(skek, spec).map_err(|e| fail(exit::USAGE, e.to_string()))?)
            }
            _ => {
                return Err(fail(
                    exit::KEY_MISSING,
                    format!("FNEK {sig} is not a passphrase key"),
                ))
            }
        },
        None => None,
    };
    let opts = strongroom_fuse::Options {
        lower: s.lower.clone(),
        wrapping,
        lookup: Arc::new(lookup),
        spec,
        fnek,
        xattr_metadata: s.xattr || s.encrypted_view,
        passthrough: s.passthrough,
        read_only: s.read_only,
        encrypted_view: s.encrypted_view,
        allow_other: s.allow_other,
        threads: 0,
        fsname: s.lower.display().to_string(),
    };
    strongroom_fuse::mount(opts, &s.mountpoint).map_err(|e| fail(exit::FAILED, e.to_string()))
}

fn find_token(sig: &Sig) -> Result<AuthToken> {
    for r in [Ring::Thread, Ring::Process, Ring::Session, Ring::User] {
        if let Ok(Some(t)) = keyring::find(r, sig) {
            return Ok(t);
        }
    }
    Err(fail(
        exit::KEY_MISSING,
        format!("key {sig} is not in the keyring (add it with strongroomctl add-passphrase)"),
    ))
}

fn wrapping_key(sig: &Sig) -> Result<WrappingKey> {
    match find_token(sig)? {
        AuthToken::Passphrase { skek, salt } => Ok(WrappingKey::Passphrase { skek, salt }),
        // An openssl token names its PEM file; new files are wrapped with its public half.
        AuthToken::PrivateKey(pk) => {
            let (path, pass) = strongroom_core::pubkey::parse_token_blob(pk.blob())
                .map_err(|e| fail(exit::KEY_MISSING, format!("key {sig}: {e}")))?;
            let pair = strongroom_core::pubkey::RsaKeyPair::load(&path, &pass).map_err(|e| {
                fail(
                    exit::KEY_MISSING,
                    format!("key {sig} ({}): {e}", path.display()),
                )
            })?;
            Ok(WrappingKey::PublicKey(Arc::new(pair.public().clone())))
        }
        _ => Err(fail(
            exit::KEY_MISSING,
            format!("key {sig} is of an unknown kind"),
        )),
    }
}

pub fn umount(a: UmountArgs) -> Result<i32> {
    if !strongroom_vault::backend::is_mounted(&a.mountpoint) {
        return Err(fail(
            exit::NOT_MOUNTED,
            format!("{} is not mounted", a.mountpoint.display()),
        ));
    }
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&a.mountpoint)
        .output()
        .context("cannot run fusermount3")?;
    if out.status.success() {
        return Ok(exit::OK);
    }
    let mut err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if err.is_empty() {
        err = format!("fusermount3 failed ({})", out.status);
    }
    let code = if err.contains("busy") {
        exit::BUSY
    } else {
        exit::FAILED
    };
    Err(fail(code, err))
}
