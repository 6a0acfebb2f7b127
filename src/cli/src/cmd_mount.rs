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
use strongroom_core::kdf::{Passphrase, Salt, Sig, DEFAULT_SALT};
use strongroom_core::keyring::{self, KeyringLookup, Ring};
use strongroom_core::keys::WrappingKey;
use strongroom_core::options::{KeySpec, MountOptions, SecretSource, Warning};
use strongroom_core::packet::KeyPacket;
use strongroom_core::pubkey::PubkeyError;
use strongroom_core::token::AuthToken;
use strongroom_vault::context::{CryptoContext, FilenameEncryption, KeyType};
use strongroom_vault::keysource::{
    self, read_passphrase_file, KeyMaterial, KeySourceError, VaultTokens,
};

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
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    pub passphrase_file: Option<PathBuf>,
    /// Use this OpenSSL RSA private key (PEM, from `strongroomctl keygen`) instead of a
    /// passphrase.
    #[arg(long, value_name = "PEM")]
    pub keyfile: Option<PathBuf>,
    /// The PEM key's passphrase, from this file (else asked on the terminal).
    #[arg(long, value_name = "FILE", requires = "keyfile")]
    pub key_passphrase_file: Option<PathBuf>,
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
    /// Mount options as `mount.ecryptfs` takes them, e.g.
    /// `key=passphrase:passfile=F,ecryptfs_cipher=aes,ecryptfs_key_bytes=32` or
    /// `key=openssl:keyfile=K.pem,passwd_file=F`; also the kernel's `ecryptfs_sig=`
    /// (keys already in the keyring), `allow_other`, `nonempty`, `keyring=session`.
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
    /// On unmount, remove the keys from this keyring (`ecryptfs_unlink_sigs`).
    #[arg(long, value_enum)]
    pub unlink_sigs_from: Option<TargetRing>,
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
    key: KeyChoice,
    /// `ecryptfs_sig=`s other than the key's own: tokens already in the keyring that
    /// also wrap new files' keys.
    extra_sigs: Vec<Sig>,
    fnek: Fnek,
    xattr: bool,
    passthrough: bool,
    read_only: bool,
    encrypted_view: bool,
    allow_other: bool,
    nonempty: bool,
    unlink_sigs: bool,
    keyring: TargetRing,
}

/// Where the mount's main key comes from.
#[derive(Debug)]
enum KeyChoice {
    Passphrase {
        secret: SecretSource,
        salt: Salt,
    },
    OpenSsl {
        keyfile: PathBuf,
        secret: SecretSource,
    },
    /// Kernel dialect (`ecryptfs_sig=` only): the tokens are already in the keyring.
    Keyring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fnek {
    Off,
    SameKey,
    Separate,
    /// `ecryptfs_fnek_sig=`: a token in the keyring (or one of the mount's own).
    Sig(Sig),
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    fail(exit::USAGE, e.to_string())
}

/// Splits off the FUSE-side options (not eCryptfs's, so not core's business) and
/// parses the rest with core's eCryptfs option parser. Without `key=`, key
/// sub-options such as `passfile=` (usual in fstab lines) mean `key=passphrase`.
fn parse_options(strings: &[String], p: &mut Plan) -> Result<Option<MountOptions>> {
    let mut ecryptfs = Vec::new();
    for item in strings.iter().flat_map(|s| s.split(',')).map(str::trim) {
        match item.split_once('=').unwrap_or((item, "")) {
            ("", _) => {}
            ("allow_other", "") => p.allow_other = true,
            // allow_other always brings the kernel's permission checks.
            ("default_permissions", "") => {}
            ("nonempty", "") => p.nonempty = true,
            ("keyring", "user") => p.keyring = TargetRing::User,
            ("keyring", "session") => p.keyring = TargetRing::Session,
            ("keyring", _) => return Err(usage("keyring= takes user or session")),
            _ => ecryptfs.push(item),
        }
    }
    if ecryptfs.is_empty() {
        return Ok(None);
    }
    let explicit_key = ecryptfs.iter().any(|i| i.starts_with("key="));
    if !explicit_key {
        ecryptfs.insert(0, "key=passphrase");
    }
    let mut o = MountOptions::parse(&ecryptfs.join(","))
        .map_err(|e| usage(format!("mount options: {e}")))?;
    let implied = KeySpec::Passphrase {
        secret: SecretSource::Prompt,
        salt: None,
    };
    if !explicit_key && o.key.as_ref() == Some(&implied) {
        o.key = None;
    }
    Ok(Some(o))
}

fn plan(a: &MountArgs) -> Result<Plan> {
    let mut p = Plan {
        spec: CipherSpec::new(Cipher::Aes, 16)?,
        key: KeyChoice::Keyring,
        extra_sigs: Vec::new(),
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
        unlink_sigs: false,
        keyring: a.keyring,
    };
    let o = parse_options(&a.options, &mut p)?.unwrap_or_default();
    if let Some(w) = o.warnings.iter().find_map(|w| match w {
        Warning::SecretOnCommandLine(name) => Some(name),
        _ => None,
    }) {
        return Err(usage(format!(
            "{w}=: never put a passphrase into mount options (other users can read them); use passfile= / passwd_file= or the terminal"
        )));
    }
    let cipher = match (&a.cipher, o.cipher) {
        (Some(name), from_opts) => {
            let c = Cipher::from_name(name).map_err(usage)?;
            if from_opts.is_some_and(|o| o != c) {
                return Err(usage("--cipher and ecryptfs_cipher= disagree"));
            }
            c
        }
        (None, c) => c.unwrap_or(Cipher::Aes),
    };
    if a.key_bytes.is_some() && o.key_bytes.is_some() && a.key_bytes != o.key_bytes {
        return Err(usage("--key-bytes and ecryptfs_key_bytes= disagree"));
    }
    let kb = a
        .key_bytes
        .or(o.key_bytes)
        .unwrap_or_else(|| cipher.key_sizes()[0]);
    p.spec = CipherSpec::new(cipher, kb).map_err(usage)?;
    if o.fn_cipher.is_some_and(|c| c != cipher) || o.fn_key_bytes.is_some_and(|k| k != kb) {
        return Err(usage(
            "a file-name cipher other than the content cipher is not supported by the userspace backend",
        ));
    }
    p.passthrough |= o.passthrough;
    p.xattr |= o.xattr_metadata;
    p.encrypted_view |= o.encrypted_view;
    p.read_only |= o.read_only == Some(true);
    p.unlink_sigs = o.unlink_sigs;
    match (o.filename_crypto, o.fnek_sig) {
        (_, Some(sig)) => p.fnek = Fnek::Sig(sig),
        (Some(true), None) if p.fnek == Fnek::Off => p.fnek = Fnek::SameKey,
        (Some(false), None) => p.fnek = Fnek::Off,
        _ => {}
    }
    p.key = match (&a.keyfile, &a.passphrase_file, o.key.clone()) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(usage(
                "the key is given twice (a key option and key= in the mount options)",
            ))
        }
        (Some(k), _, None) => KeyChoice::OpenSsl {
            keyfile: k.clone(),
            secret: file_or_prompt(&a.key_passphrase_file),
        },
        (None, Some(f), None) => KeyChoice::Passphrase {
            secret: SecretSource::File(f.clone()),
            salt: DEFAULT_SALT,
        },
        (None, None, Some(KeySpec::Passphrase { secret, salt })) => KeyChoice::Passphrase {
            secret,
            salt: salt.unwrap_or(DEFAULT_SALT),
        },
        (None, None, Some(KeySpec::OpenSsl { keyfile, secret })) => {
            KeyChoice::OpenSsl { keyfile, secret }
        }
        (None, None, Some(_)) => return Err(usage("unsupported key= module")),
        (None, None, None) if !o.sigs.is_empty() => KeyChoice::Keyring,
        (None, None, None) => KeyChoice::Passphrase {
            secret: SecretSource::Prompt,
            salt: DEFAULT_SALT,
        },
    };
    p.extra_sigs = o.sigs;
    Ok(p)
}

fn file_or_prompt(f: &Option<PathBuf>) -> SecretSource {
    f.clone().map_or(SecretSource::Prompt, SecretSource::File)
}

/// Reads a passphrase from where the options say (never inline: refused in `plan`).
fn read_secret(s: &SecretSource, label: &str) -> Result<Passphrase> {
    let from = |path: &Path| {
        read_passphrase_file(path).map_err(|e| match e {
            KeySourceError::ReadFile { .. } => fail(exit::KEY_MISSING, e.to_string()),
            _ => usage(e),
        })
    };
    match s {
        SecretSource::File(f) => from(f),
        SecretSource::Fd(fd) => from(Path::new(&format!("/dev/fd/{fd}"))),
        SecretSource::Prompt => secret::prompt(label).map_err(|e| usage(format!("{e:#}"))),
        _ => Err(usage("unsupported passphrase source")),
    }
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

fn ring_name(t: TargetRing) -> &'static str {
    match t {
        TargetRing::User => "user",
        TargetRing::Session => "session",
    }
}

fn ring(t: TargetRing) -> Ring {
    match t {
        TargetRing::User => Ring::User,
        TargetRing::Session => Ring::Session,
    }
}

/// The tokens a mount puts into the keyring: from a passphrase or a PEM key, derived
/// by the vault code (the same tokens `strongroomctl unlock` makes), or none when the
/// options name keyring sigs only.
fn derive(p: &Plan) -> Result<Option<VaultTokens>> {
    let (key_type, material, salt) = match &p.key {
        KeyChoice::Keyring => return Ok(None),
        KeyChoice::Passphrase { secret, salt } => (
            KeyType::Passphrase,
            KeyMaterial::Passphrase(read_secret(secret, "Passphrase: ")?),
            *salt,
        ),
        KeyChoice::OpenSsl { keyfile, secret } => {
            if matches!(p.fnek, Fnek::SameKey | Fnek::Separate) {
                return Err(usage(
                    "file-name encryption needs a passphrase key (the kernel takes no OpenSSL FNEK); give ecryptfs_fnek_sig= of a passphrase token",
                ));
            }
            (
                KeyType::Openssl,
                KeyMaterial::PemKey {
                    keyfile: keyfile.clone(),
                    passphrase: read_secret(secret, "Key passphrase: ")?,
                },
                DEFAULT_SALT,
            )
        }
    };
    let ctx = CryptoContext {
        key_type,
        cipher: p.spec.cipher.name().to_owned(),
        key_bytes: p.spec.key_bytes,
        passthrough: p.passthrough,
        filename_encryption: match p.fnek {
            Fnek::SameKey => FilenameEncryption::SameToken,
            Fnek::Separate => FilenameEncryption::SeparateFnek,
            Fnek::Off | Fnek::Sig(_) => FilenameEncryption::None,
        },
        xattr_metadata: p.xattr,
        sigs: Vec::new(),
        fnek_sig: None,
        salt,
    };
    keysource::derive_tokens(&ctx, &material)
        .map(Some)
        .map_err(|e| {
            let code = match &e {
                KeySourceError::Pem {
                    source: PubkeyError::BadPrivateKey,
                    ..
                } => exit::BAD_KEY,
                KeySourceError::Pem {
                    source: PubkeyError::Read(_),
                    ..
                }
                | KeySourceError::ReadFile { .. } => exit::KEY_MISSING,
                _ => exit::USAGE,
            };
            fail(code, e.to_string())
        })
}

pub fn mount(a: MountArgs) -> Result<i32> {
    let Backend::Userspace = a.backend;
    let p = plan(&a)?;
    check_paths(&a.lower, &a.mountpoint, &p)?;
    let tokens = derive(&p)?;
    // New files are wrapped with the key's own sig first, then the extra ones.
    let mut sigs: Vec<Sig> = tokens.iter().map(|t| t.main.sig()).collect();
    for s in &p.extra_sigs {
        if !sigs.contains(s) {
            find_token(s)?;
            sigs.push(*s);
        }
    }
    let xattr_headers = p.xattr || p.encrypted_view;
    let headers = existing_sigs(&a.lower, xattr_headers);
    if !headers.is_empty() && !headers.iter().any(|h| sigs.iter().any(|s| h.contains(s))) {
        let what = match p.key {
            KeyChoice::OpenSsl { .. } => "wrong key",
            _ => "wrong passphrase",
        };
        return Err(fail(
            exit::BAD_KEY,
            format!(
                "{what}: files in {} are encrypted with key {}, this one is {}",
                a.lower.display(),
                join(&headers[0]),
                join(&sigs)
            ),
        ));
    }
    let fnek_token = match (p.fnek, &tokens) {
        (Fnek::Sig(s), Some(t)) if s == t.main.sig() => Some(t.main.clone()),
        (Fnek::Sig(s), _) => Some(find_token(&s)?),
        (_, Some(t)) => t.fnek.clone(),
        (_, None) => None,
    };
    if let (Some(t), Some(name)) = (&fnek_token, some_encrypted_name(&a.lower)) {
        let skek = t.skek().ok_or_else(|| {
            fail(
                exit::USAGE,
                format!("FNEK {} is not a passphrase key", t.sig()),
            )
        })?;
        let fk = FilenameKey::new(skek.clone(), p.spec).map_err(usage)?;
        if fk.decrypt(&name).is_err() {
            return Err(fail(exit::BAD_KEY, "wrong passphrase or FNEK convention: the encrypted file names do not decrypt (try --fnek / --fnek-separate)"));
        }
    }
    let target = ring(p.keyring);
    let new_tokens = tokens.iter().map(|t| &t.main).chain(&fnek_token);
    for t in new_tokens {
        keyring::add_token(target, t).map_err(|e| {
            fail(
                exit::KEY_MISSING,
                format!("cannot add key {} to the keyring: {e}", t.sig()),
            )
        })?;
    }
    let serve = ServeArgs {
        sigs,
        fnek_sig: fnek_token.as_ref().map(AuthToken::sig),
        cipher: p.spec.cipher.name().to_owned(),
        key_bytes: p.spec.key_bytes,
        xattr: p.xattr,
        passthrough: p.passthrough,
        read_only: p.read_only,
        encrypted_view: p.encrypted_view,
        allow_other: p.allow_other,
        unlink_sigs_from: p.unlink_sigs.then_some(p.keyring),
        notify: true,
        lower: a.lower.clone(),
        mountpoint: a.mountpoint.clone(),
    };
    if a.foreground {
        return serve_now(serve, false);
    }
    spawn_daemon(&serve)
}

fn join(sigs: &[Sig]) -> String {
    sigs.iter().map(Sig::to_hex).collect::<Vec<_>>().join(", ")
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
    if let Some(r) = s.unlink_sigs_from {
        v.push("--unlink-sigs-from".into());
        v.push(ring_name(r).into());
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
    unmount_on_signals(s.mountpoint.clone())?;
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
    let ended = mounted.wait();
    log::info!("unmounted {}", s.mountpoint.display());
    if let Some(r) = s.unlink_sigs_from {
        for sig in s.sigs.iter().chain(&s.fnek_sig) {
            if let Err(e) = keyring::unlink(ring(r), sig) {
                log::warn!("cannot unlink key {sig}: {e}");
            }
        }
    }
    ended.context("the file system session ended with an error")?;
    Ok(exit::OK)
}

/// SIGTERM, SIGINT and SIGHUP (logout, `systemctl stop`, ^C in the foreground) end the
/// mount the way libfuse daemons do, with a lazy unmount: the session ends, the keys
/// are unlinked as after `umount`, and no dead mount is left behind answering
/// "Transport endpoint is not connected". Must run before the request threads start,
/// which inherit the blocked mask so that only the waiting thread takes the signals.
fn unmount_on_signals(mountpoint: PathBuf) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block()
        .context("cannot block the stop signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("{sig}: unmounting {}", mountpoint.display());
                let _ = std::process::Command::new("fusermount3")
                    .args(["-u", "-q", "-z"])
                    .arg(&mountpoint)
                    .status();
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
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
    use strongroom_vault::backend::{unmount_fuse, BackendError, UnmountMode};
    let rt = crate::cmd_vault::rt()?;
    match rt.block_on(unmount_fuse(&a.mountpoint, UnmountMode::Graceful)) {
        Ok(()) => Ok(exit::OK),
        Err(e @ BackendError::Busy { .. }) => Err(fail(exit::BUSY, e.to_string())),
        Err(e) => Err(fail(exit::FAILED, e.to_string())),
    }
}

/// The file system's name for mount(8): `mount -t fuse.strongroom LOWER MNT -o …` and
/// fstab lines run `/sbin/mount.fuse.strongroom` (util-linux looks for
/// `mount.<type>` helpers in /sbin only).
pub const HELPER_NAME: &str = "mount.fuse.strongroom";

/// Act as mount(8)'s helper: `LOWER MOUNTPOINT [-sfnvrw] [-N NS] [-o OPTIONS] [-t TYPE]`
/// (what strongroomctl does when called as `mount.fuse.strongroom`).
#[derive(Debug, Args)]
pub struct MountHelperArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

pub fn helper(args: Vec<std::ffi::OsString>) -> Result<i32> {
    let mut paths = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(flags) = arg
            .to_str()
            .and_then(|s| s.strip_prefix('-'))
            .filter(|f| !f.is_empty())
        else {
            paths.push(PathBuf::from(arg));
            continue;
        };
        let mut chars = flags.chars();
        while let Some(c) = chars.next() {
            match c {
                // sloppy, no mtab, verbose; ro/rw also come in -o.
                's' | 'n' | 'v' | 'r' | 'w' => {}
                'f' => fake = true,
                'o' | 't' | 'N' => {
                    let rest: String = chars.by_ref().collect();
                    let value = if rest.is_empty() {
                        it.next()
                            .and_then(|v| v.into_string().ok())
                            .ok_or_else(|| usage(format!("-{c} needs a value")))?
                    } else {
                        rest
                    };
                    match c {
                        'o' => options.push(value),
                        't' if matches!(value.as_str(), "fuse.strongroom" | "strongroom") => {}
                        't' => {
                            return Err(usage(format!("{HELPER_NAME} cannot mount type {value:?}")))
                        }
                        _ => return Err(usage("-N (mount in another namespace) is not supported")),
                    }
                }
                _ => return Err(usage(format!("{HELPER_NAME}: unknown flag -{c}"))),
            }
        }
    }
    let [lower, mountpoint] = <[PathBuf; 2]>::try_from(paths).map_err(|_| {
        usage(format!(
            "usage: {HELPER_NAME} LOWER MOUNTPOINT [-o OPTIONS]"
        ))
    })?;
    let a = MountArgs {
        backend: Backend::Userspace,
        passphrase_file: None,
        keyfile: None,
        key_passphrase_file: None,
        cipher: None,
        key_bytes: None,
        fnek: false,
        fnek_separate: false,
        xattr: false,
        passthrough: false,
        read_only: false,
        encrypted_view: false,
        allow_other: false,
        foreground: false,
        keyring: TargetRing::User,
        options,
        lower,
        mountpoint,
    };
    if fake {
        // mount -f: check everything that needs no key, mount nothing.
        let p = plan(&a)?;
        check_paths(&a.lower, &a.mountpoint, &p)?;
        return Ok(exit::OK);
    }
    mount(a)
}
