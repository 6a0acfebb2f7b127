//! Vault commands over `strongroom-vault`: create, import, list, status, unlock, lock,
//! keygen, passwd, export-passphrase, forget.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use strongroom_core::keyring::Ring;
use strongroom_core::pubkey::{RsaKeyPair, ALLOWED_BITS, DEFAULT_BITS};
use strongroom_core::wrapped::WrappedError;
use strongroom_vault::backend::{BackendError, Selection, UnmountMode};
use strongroom_vault::context::{BackendKind, FilenameEncryption, KeySourceConfig};
use strongroom_vault::keysource::{read_passphrase_file, KeyMaterial, KeySourceError};
use strongroom_vault::manager::{
    CreateRequest, ManagerConfig, UnlockOptions, VaultError, VaultEvent, VaultManager, VaultState,
};
use strongroom_vault::migrate::MigrateError;
use strongroom_vault::registry::RegistryError;
use strongroom_vault::secret_store::SecretError;
use strongroom_vault::strength;

use crate::keyfile::KeyFileArgs;
use crate::{exit, secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RingArg {
    /// The user keyring @u (linked into the session keyring), as ecryptfs-utils does.
    User,
    /// Only this session's keyring @s.
    Session,
}

/// Options every vault command shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keyring that receives and loses the vault's tokens.
    #[arg(long, value_enum, default_value = "user", global = true)]
    pub keyring: RingArg,
}

pub(crate) fn manager(c: &Common) -> Result<VaultManager> {
    let mut cfg = ManagerConfig::user()?;
    cfg.ring = match c.keyring {
        RingArg::User => Ring::User,
        RingArg::Session => Ring::Session,
    };
    // polkit may ask for a password only where someone can type it.
    Ok(VaultManager::new(cfg).with_interaction(std::io::stdin().is_terminal()))
}

pub(crate) fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn say(text: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Exit status for a vault error anywhere in the chain.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(v) = cause.downcast_ref::<VaultError>() {
            return match v {
                VaultError::Key(KeySourceError::WrongKey { .. }) | VaultError::UnknownSig(_) => {
                    exit::BAD_KEY
                }
                VaultError::Key(KeySourceError::Pem { .. })
                | VaultError::Wrapped(WrappedError::WrongPassphrase) => exit::BAD_KEY,
                VaultError::Key(KeySourceError::ReadFile { .. }) => exit::USAGE,
                VaultError::Registry(
                    RegistryError::NotFound(_)
                    | RegistryError::Exists(_)
                    | RegistryError::BadName { .. },
                ) => exit::USAGE,
                VaultError::Backend(
                    BackendError::Busy { .. }
                    | BackendError::HelperBusy { .. }
                    | BackendError::AlreadyMounted(_)
                    | BackendError::RateLimited(_),
                ) => exit::BUSY,
                VaultError::Backend(BackendError::Mount { code, .. }) => *code,
                VaultError::Backend(
                    BackendError::NotAuthorized { .. }
                    | BackendError::Dismissed(_)
                    | BackendError::AuthorityUnavailable(_),
                ) => exit::NOT_AUTHORIZED,
                VaultError::Backend(
                    BackendError::Choice(_)
                    | BackendError::HelperUnreachable(_)
                    | BackendError::KernelRefused(_)
                    | BackendError::Unavailable(..),
                ) => exit::UNSUPPORTED,
                VaultError::Backend(BackendError::NotMounted(_)) => exit::NOT_MOUNTED,
                VaultError::Keyring(_) => exit::KEY_MISSING,
                VaultError::NotRemembered(_) => exit::KEY_MISSING,
                VaultError::Secret(
                    SecretError::Unavailable | SecretError::Locked | SecretError::Timeout(_),
                ) => exit::KEY_MISSING,
                VaultError::BadPath { .. } => exit::NOT_EMPTY,
                VaultError::Migrate(MigrateError::Refused { .. }) => exit::USAGE,
                VaultError::Migrate(MigrateError::Key(KeySourceError::WrongKey { .. })) => {
                    exit::BAD_KEY
                }
                VaultError::Drive(_) | VaultError::KeyDrive(_) => exit::KEY_MISSING,
                _ => exit::FAILED,
            };
        }
        if cause.downcast_ref::<KeySourceError>().is_some() {
            return exit::USAGE;
        }
        if cause
            .downcast_ref::<strongroom_vault::drives::DriveError>()
            .is_some()
        {
            return exit::KEY_MISSING;
        }
    }
    exit::FAILED
}

/// The cryptographic context of a new vault (`create`, `migrate encrypt`).
#[derive(Debug, Args)]
pub struct ContextArgs {
    #[arg(long, default_value = "aes")]
    pub cipher: String,
    #[arg(long)]
    pub key_bytes: Option<usize>,
    /// Encrypt names with the content key (mount.ecryptfs' default). Default for passphrase vaults.
    #[arg(long, group = "names")]
    pub fnek: bool,
    /// Encrypt names with a separate FNEK (ecryptfs-setup-private's convention).
    #[arg(long, group = "names")]
    pub fnek_separate: bool,
    /// Keep names in plain text (always so for OpenSSL keys).
    #[arg(long, group = "names")]
    pub no_fnek: bool,
    /// Keep headers in the `user.ecryptfs` xattr.
    #[arg(long)]
    pub xattr: bool,
}

impl ContextArgs {
    /// Names are encrypted unless asked otherwise, except under an OpenSSL key (the
    /// kernel takes only passphrase FNEKs) where they must be asked for.
    pub fn filename_encryption(&self, public_key: bool) -> FilenameEncryption {
        if self.fnek_separate {
            FilenameEncryption::SeparateFnek
        } else if self.no_fnek || (public_key && !self.fnek) {
            FilenameEncryption::None
        } else {
            FilenameEncryption::SameToken
        }
    }
}

/// Create a new vault (an empty lower directory) and register it.
#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long, value_name = "DIR")]
    pub lower: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub mountpoint: PathBuf,
    /// The vault passphrase, from a file (first line or a `passphrase_passwd=` line).
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub key: KeyFileArgs,
    #[command(flatten)]
    pub context: ContextArgs,
    #[arg(long)]
    pub passthrough: bool,
    #[arg(long, value_enum, default_value = "userspace")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Strongroom's FUSE file system, running as you.
    Userspace,
    /// The kernel's eCryptfs, mounted by strongroom-helper (polkit decides).
    Kernel,
    /// Decided at each unlock: the kernel when the helper reports an eCryptfs with all
    /// the vault needs, else userspace (the reason is shown).
    Auto,
}

impl From<BackendArg> for BackendKind {
    fn from(a: BackendArg) -> BackendKind {
        match a {
            BackendArg::Userspace => BackendKind::Userspace,
            BackendArg::Kernel => BackendKind::Kernel,
            BackendArg::Auto => BackendKind::Auto,
        }
    }
}

/// The key of a new vault: the key file's (with its passphrase), or a new passphrase,
/// with a warning when it is weak.
pub(crate) fn new_material(
    pem: Option<(&std::path::Path, strongroom_core::kdf::Passphrase)>,
    passphrase_file: Option<&std::path::Path>,
) -> Result<KeyMaterial> {
    if let Some((keyfile, passphrase)) = pem {
        return Ok(KeyMaterial::PemKey {
            keyfile: keyfile.to_owned(),
            passphrase,
        });
    }
    let p = secret::obtain(passphrase_file, "New vault passphrase: ")?;
    let s = strength::assess(&p);
    if s.verdict <= strength::Verdict::Weak {
        eprintln!(
            "strongroomctl: warning: weak passphrase ({} bits): {}",
            s.bits,
            s.hints.join("; ")
        );
    }
    Ok(KeyMaterial::Passphrase(p))
}

pub fn create(a: CreateArgs) -> Result<i32> {
    let material = new_material(a.key.material()?, a.passphrase_file.as_deref())?;
    let filename_encryption = a.context.filename_encryption(a.key.keyfile.is_some());
    let req = CreateRequest {
        name: a.name,
        lower: a.lower,
        mountpoint: a.mountpoint,
        material,
        cipher: a.context.cipher,
        key_bytes: a.context.key_bytes,
        filename_encryption,
        passthrough: a.passthrough,
        xattr: a.context.xattr,
        backend: a.backend.into(),
        key_drive: match &a.key.keyfile {
            Some(k) => crate::cmd_drives::key_drive_of(k)?.map(|(kd, desc)| {
                eprintln!(
                    "strongroomctl: the key is on key drive {desc} (file system {})",
                    kd.partition_uuid
                );
                kd
            }),
            None => None,
        },
    };
    let m = manager(&a.common)?;
    let v = rt()?.block_on(m.create(req))?;
    if a.common.json {
        print_json(&rt()?.block_on(m.status(&v.name))?)?;
    } else {
        say(&format!(
            "created vault {} (key {})",
            v.name,
            v.context
                .all_sigs()
                .iter()
                .map(|s| s.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    Ok(exit::OK)
}

/// Register an existing eCryptfs directory; the context is detected from its headers and names.
#[derive(Debug, Args)]
pub struct ImportArgs {
    pub name: String,
    /// The lower directory; with --private, taken from ~/.ecryptfs instead.
    #[arg(long, value_name = "DIR", required_unless_present = "private")]
    pub lower: Option<PathBuf>,
    #[arg(long, value_name = "DIR", required_unless_present = "private")]
    pub mountpoint: Option<PathBuf>,
    /// The ecryptfs-utils wrapped-passphrase file that unlocks it.
    #[arg(long, value_name = "FILE")]
    pub wrapped_passphrase: Option<PathBuf>,
    /// Import the `ecryptfs-setup-private` setup of this home (~/.Private, ~/.ecryptfs).
    #[arg(long, value_name = "HOME")]
    pub private: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

pub fn import(a: ImportArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let rt = rt()?;
    let v = match (&a.private, &a.lower, &a.mountpoint) {
        (Some(home), _, _) => rt.block_on(m.import_private(&a.name, home))?,
        (None, Some(l), Some(mp)) => {
            rt.block_on(m.import(&a.name, l, mp, a.wrapped_passphrase.clone()))?
        }
        _ => anyhow::bail!("give --lower and --mountpoint, or --private HOME"),
    };
    let st = rt.block_on(m.status(&v.name))?;
    if a.common.json {
        print_json(&st)?;
    } else {
        say(&format!(
            "imported vault {}: {} {}-byte keys, names {:?}, key(s) {}",
            st.name,
            st.cipher,
            st.key_bytes,
            st.filename_encryption,
            st.sigs.join(", ")
        ))?;
    }
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
}

pub fn list(a: ListArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let all = rt()?.block_on(m.list())?;
    if a.common.json {
        print_json(&all)?;
    } else {
        for v in &all {
            say(&format!(
                "{:<16} {:<8} {} -> {}",
                v.name,
                if v.unlocked { "unlocked" } else { "locked" },
                v.lower.display(),
                v.mountpoint.display()
            ))?;
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let st = rt()?.block_on(m.status(&a.name))?;
    if a.common.json {
        print_json(&st)?;
    } else {
        let serving = match (st.active_backend, &st.selection, &st.selection_error) {
            (Some(b), _, _) => format!(
                "served by the {b} backend{}",
                if st.helper_mount {
                    " (mounted by strongroom-helper)"
                } else {
                    ""
                }
            ),
            (None, Some(sel), _) => format!("would unlock with the {}", describe(sel)),
            (None, None, Some(e)) => format!("cannot unlock now: {e}"),
            (None, None, None) => String::new(),
        };
        say(&format!(
            "{}: {}, {serving}\n  lower {}\n  mount point {}\n  {} key, {} {} bytes, names {:?}, backend {}\n  keys {} (in keyring: {})",
            st.name,
            if st.unlocked { "unlocked" } else { "locked" },
            st.lower.display(),
            st.mountpoint.display(),
            st.key_type,
            st.cipher,
            st.key_bytes,
            st.filename_encryption,
            st.backend,
            st.sigs.join(", "),
            if st.tokens_present.is_empty() { "none".into() } else { st.tokens_present.join(", ") }
        ))?;
    }
    Ok(exit::OK)
}

/// Unlock a vault: key into the keyring, then mount.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    pub name: String,
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The PEM key's passphrase, for OpenSSL-key vaults.
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// Remember the passphrase in the Secret Service (gnome-keyring, KWallet...).
    #[arg(long)]
    pub remember: bool,
    /// Use the passphrase remembered in the Secret Service.
    #[arg(long, conflicts_with_all = ["passphrase_file", "remember"])]
    pub from_keyring: bool,
    /// Accept a key never used on this account before (the sig-cache typo guard).
    #[arg(long)]
    pub new_key: bool,
    /// This time, instead of the vault's configured backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    #[command(flatten)]
    pub common: Common,
}

/// "kernel backend (the kernel's eCryptfs has everything this vault needs)".
fn describe(s: &Selection) -> String {
    format!("{} backend ({})", s.backend, s.reason)
}

/// Reports which backend the unlock used and why, from the manager's events.
fn report_unlock(
    name: &str,
    events: &mut tokio::sync::broadcast::Receiver<VaultEvent>,
    json: bool,
) -> Result<i32> {
    let mut selection = None;
    while let Ok(e) = events.try_recv() {
        if e.vault == name && e.state == VaultState::Unlocked {
            selection = e.backend.or(selection);
        }
    }
    if json {
        print_json(&serde_json::json!({"vault": name, "unlocked": true, "selection": selection}))?;
    } else {
        match selection {
            Some(s) => say(&format!("unlocked {name} with the {}", describe(&s)))?,
            None => say(&format!("{name} was already unlocked"))?,
        }
    }
    Ok(exit::OK)
}

pub fn unlock(a: UnlockArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let rt = rt()?;
    let mut events = m.subscribe();
    let json = a.common.json;
    let over = a.backend.map(BackendKind::from);
    if a.from_keyring {
        rt.block_on(m.unlock_remembered_with(&a.name, over))?;
        return report_unlock(&a.name, &mut events, json);
    }
    let v = rt.block_on(m.get(&a.name))?;
    let no_source = a.passphrase_file.is_none() && a.key_passphrase_file.is_none();
    let remembered_first = no_source
        && !a.remember
        && matches!(
            v.key_source,
            KeySourceConfig::Prompt
                | KeySourceConfig::SecretService
                | KeySourceConfig::WrappedPassphrase { .. }
        );
    if remembered_first {
        // Nothing given on the command line: the Secret Service is tried before any prompt.
        match rt.block_on(m.unlock_remembered_with(&a.name, over)) {
            Ok(()) => return report_unlock(&a.name, &mut events, json),
            Err(e @ (VaultError::NotRemembered(_) | VaultError::Secret(_))) => {
                if !std::io::stdin().is_terminal() {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot unlock vault {:?} without a passphrase: none is remembered in the Secret Service usable now, and there is no terminal to ask (give --passphrase-file)",
                        a.name
                    )));
                }
                eprintln!("strongroomctl: {e}; asking instead");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let material = match &v.key_source {
        KeySourceConfig::PemKey {
            keyfile,
            passphrase_file,
        } => {
            // A relative path is on the key drive: the manager finds and mounts it.
            let keyfile = keyfile.clone();
            let file = a
                .key_passphrase_file
                .as_deref()
                .or(passphrase_file.as_deref());
            KeyMaterial::PemKey {
                keyfile,
                passphrase: secret::obtain(file, "Key passphrase: ")?,
            }
        }
        KeySourceConfig::WrappedPassphrase { path } if a.passphrase_file.is_none() => {
            let login = secret::obtain(a.key_passphrase_file.as_deref(), "Login passphrase: ")?;
            KeyMaterial::Passphrase(rt.block_on(m.unwrap_passphrase(path, login))?)
        }
        KeySourceConfig::PassphraseFile { path } if a.passphrase_file.is_none() => {
            KeyMaterial::Passphrase(if path.is_relative() {
                rt.block_on(strongroom_vault::keydrive::read_passphrase(&v, path))
                    .map_err(VaultError::from)?
            } else {
                read_passphrase_file(path)?
            })
        }
        _ => KeyMaterial::Passphrase(secret::obtain(
            a.passphrase_file.as_deref(),
            "Vault passphrase: ",
        )?),
    };
    let opts = UnlockOptions {
        remember: a.remember,
        accept_new_sig: a.new_key,
        backend: over,
    };
    rt.block_on(m.unlock(&a.name, material, opts))?;
    report_unlock(&a.name, &mut events, json)
}

/// Lock a vault: unmount, then remove its keys from the keyring.
#[derive(Debug, Args)]
pub struct LockArgs {
    pub name: String,
    /// Detach even if files are open (they stay readable until closed).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn lock(a: LockArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let mode = if a.force {
        UnmountMode::Lazy
    } else {
        UnmountMode::Graceful
    };
    rt()?.block_on(m.lock(&a.name, mode))?;
    Ok(exit::OK)
}

/// Print every vault's state, then each change as it happens, until interrupted:
/// unlocked and locked by any process with either backend, one line each (`--json`: one
/// JSON object per line).
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,
}

pub fn watch(a: WatchArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let mut events = m.subscribe();
    rt()?.block_on(async {
        let follow = m.follow_mounts();
        tokio::pin!(follow);
        loop {
            let event = tokio::select! {
                r = &mut follow => return r.map(|()| exit::OK).map_err(Into::into),
                e = events.recv() => match e {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return Ok(exit::OK),
                },
            };
            let line = if a.common.json {
                serde_json::to_string(&event)?
            } else {
                format!("{} {}", event.vault, state_word(&event.state))
            };
            let mut out = std::io::stdout().lock();
            // A reader that went away (`| head -1`) ends the watch quietly.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(exit::OK);
            }
        }
    })
}

fn state_word(s: &VaultState) -> String {
    match s {
        VaultState::Locked => "locked".into(),
        VaultState::Unlocking => "unlocking".into(),
        VaultState::Unlocked => "unlocked".into(),
        VaultState::Locking => "locking".into(),
        VaultState::Error(e) => format!("error: {e}"),
        VaultState::Migrating(_) => "migrating".into(),
    }
}

/// Forget the passphrase remembered in the Secret Service.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

pub fn forget(a: ForgetArgs) -> Result<i32> {
    let n = rt()?.block_on(manager(&a.common)?.forget(&a.name))?;
    say(&format!("forgot {n} remembered passphrase(s)"))?;
    Ok(exit::OK)
}

/// Generate an OpenSSL RSA key pair (e.g. onto a USB drive); prints its sig.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The private key file (PEM, AES-256-CBC encrypted, mode 0600). The public key is
    /// written beside it with `.pub` before the extension.
    #[arg(long, value_name = "PATH.pem")]
    pub out: PathBuf,
    /// Key size. 3072 bits is the default: NIST's 128-bit level, the floor for keys
    /// meant to outlive 2030. 1024-bit keys of the old tool stay readable.
    #[arg(long, default_value_t = DEFAULT_BITS)]
    pub bits: u32,
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn keygen(a: KeygenArgs) -> Result<i32> {
    if !ALLOWED_BITS.contains(&a.bits) {
        anyhow::bail!("--bits must be one of {ALLOWED_BITS:?}");
    }
    if a.out.exists() {
        anyhow::bail!("{} exists; not overwriting a key", a.out.display());
    }
    let pass = secret::obtain(a.passphrase_file.as_deref(), "Passphrase for the new key: ")?;
    let pair = RsaKeyPair::generate(a.bits)?;
    let stem = a.out.file_stem().unwrap_or_default().to_string_lossy();
    let public = a.out.with_file_name(format!("{stem}.pub.pem"));
    pair.save(&a.out, &public, &pass)?;
    let drive = crate::cmd_drives::key_drive_of(&a.out)?;
    if a.json {
        print_json(
            &serde_json::json!({"sig": pair.sig().to_hex(), "private": a.out, "public": public, "bits": a.bits,
                "key_drive": drive.as_ref().map(|(kd, _)| kd)}),
        )?;
    } else {
        say(&pair.sig().to_hex())?;
        if let Some((kd, desc)) = &drive {
            eprintln!(
                "strongroomctl: on key drive {desc} (file system {})",
                kd.partition_uuid
            );
        }
    }
    Ok(exit::OK)
}

/// Change a vault's passphrase: every file's key is re-wrapped (the old passphrase stops
/// working). Interrupted runs resume when run again with the same passphrases.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    pub name: String,
    #[arg(long, value_name = "FILE")]
    pub old_passphrase_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

pub fn passwd(a: PasswdArgs) -> Result<i32> {
    let old = secret::obtain(a.old_passphrase_file.as_deref(), "Current passphrase: ")?;
    let new = secret::obtain(a.new_passphrase_file.as_deref(), "New passphrase: ")?;
    let m = manager(&a.common)?;
    let json = a.common.json;
    let sigs = rt()?.block_on(m.change_passphrase(&a.name, old, new, move |p| {
        if !json && (p.done == p.total || p.done % 100 == 0) {
            eprintln!("{:?}: {}/{}", p.phase, p.done, p.total);
        }
    }))?;
    if json {
        print_json(
            &serde_json::json!({"sig": sigs.sig.to_hex(), "fnek_sig": sigs.fnek_sig.map(|s| s.to_hex())}),
        )?;
    } else {
        say(&format!("passphrase changed; new key {}", sigs.sig))?;
    }
    Ok(exit::OK)
}

/// Write the vault passphrase as an ecryptfs-utils wrapped-passphrase file (recovery).
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub name: String,
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The passphrase that will unwrap the file.
    #[arg(long, value_name = "FILE")]
    pub wrapping_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

pub fn export_passphrase(a: ExportArgs) -> Result<i32> {
    let p = secret::obtain(a.passphrase_file.as_deref(), "Vault passphrase: ")?;
    let w = secret::obtain(
        a.wrapping_passphrase_file.as_deref(),
        "Wrapping passphrase: ",
    )?;
    rt()?.block_on(manager(&a.common)?.export_passphrase(&a.name, p, w, &a.out))?;
    Ok(exit::OK)
}
