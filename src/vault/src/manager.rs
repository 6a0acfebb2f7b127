//! [`VaultManager`]: the async API the CLI, app, tray and file-manager actions use.
//!
//! Every state change of a vault is broadcast as a [`VaultEvent`]; a GUI subscribes
//! once and refreshes its rows, tray menu and emblems from the stream. Blocking work
//! (the 65536-round KDF, RSA, file walks) runs on tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::kdf::{Passphrase, Sig, DEFAULT_SALT};
use strongroom_core::keyring::{self, KeyInfo, Ring};
use strongroom_core::token::AuthToken;
use strongroom_core::wrapped::WrappedPassphrase;
use tokio::sync::broadcast;

use crate::backend::{
    self as be, is_mounted, mounted_backend, BackendError, Backends, HelperView, Selection,
    UnmountMode,
};
use crate::context::*;
use crate::import::{self, ImportError};
use crate::keysource::{
    derive_tokens, tokens_for, KeyMaterial, KeySourceError, SigGuard, VaultTokens,
};
use crate::passwd::{self, NewSigs, PasswdError, Progress};
use crate::registry::{validate_name, Registry, RegistryError};
use crate::secret_store::{SecretError, SecretStore};

/// The state of one vault, as events report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum VaultState {
    Locked,
    Unlocking,
    Unlocked,
    Locking,
    /// The last operation failed; the vault is in the state the next event or a
    /// `status` call tells.
    Error(String),
    /// A migration (folder → vault or vault → folder) is running.
    Migrating(crate::migrate::MigrateProgress),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultEvent {
    pub vault: String,
    pub state: VaultState,
    /// With `Unlocked` after an unlock: the backend serving it and why it was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Selection>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Key(#[from] KeySourceError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Passwd(#[from] PasswdError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error("vault {vault:?} has an unfinished migration ({}); run `strongroomctl migrate resume {vault}` to finish it", journal.display())]
    MigratePending { vault: String, journal: PathBuf },
    #[error("keyring: {0}")]
    Keyring(#[from] keyring::KeyringError),
    #[error(transparent)]
    Wrapped(#[from] strongroom_core::wrapped::WrappedError),
    #[error("{0}")]
    Cipher(#[from] strongroom_core::cipher::CipherError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: &'static str },
    #[error("key {0} was never used on this account before: a mistyped passphrase? Confirm to use it (it is then remembered)")]
    UnknownSig(Sig),
    #[error("vault {0:?} is unlocked; lock it first")]
    Unlocked(String),
    #[error("vault {vault:?} has an unfinished passphrase change ({}); run the passphrase change again to finish it", journal.display())]
    PasswdPending { vault: String, journal: PathBuf },
    #[error("no passphrase is remembered for vault {0:?}")]
    NotRemembered(String),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Drive(#[from] crate::drives::DriveError),
    #[error(transparent)]
    KeyDrive(#[from] crate::keydrive::KeyDriveError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A vault and what is known about it right now.
#[derive(Debug, Clone, Serialize)]
pub struct VaultStatus {
    pub name: String,
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
    pub backend: &'static str,
    pub key_type: &'static str,
    pub cipher: String,
    pub key_bytes: usize,
    pub filename_encryption: FilenameEncryption,
    pub sigs: Vec<String>,
    pub unlocked: bool,
    /// The backend serving the mount now (from mountinfo): `kernel` for an `ecryptfs`
    /// mount, else `userspace`.
    pub active_backend: Option<BackendKind>,
    /// The helper lists this mount as one it made (`Helper1.ListMounts`).
    pub helper_mount: bool,
    /// Which of the vault's tokens the helper holds for this user (`Helper1.ListTokens`).
    pub helper_tokens: Vec<String>,
    /// What an unlock would use now, and why (`auto` decided against the helper's report).
    pub selection: Option<Selection>,
    /// Why no backend can serve the vault now, when none can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_error: Option<String>,
    /// Which of the vault's tokens are in the keyring.
    pub tokens_present: Vec<String>,
}

/// What `create` needs.
#[derive(Debug)]
pub struct CreateRequest {
    pub name: String,
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
    pub material: KeyMaterial,
    pub cipher: String,
    pub key_bytes: Option<usize>,
    pub filename_encryption: FilenameEncryption,
    pub passthrough: bool,
    pub xattr: bool,
    pub backend: BackendKind,
    pub key_drive: Option<KeyDrive>,
}

/// Unlock options.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnlockOptions {
    /// Store the passphrase in the Secret Service after a successful unlock.
    pub remember: bool,
    /// Accept a sig the typo guard has never seen (and remember it).
    pub accept_new_sig: bool,
    /// This time, instead of the vault's configured backend (`Auto` is decided now).
    pub backend: Option<BackendKind>,
}

/// A key as `keyctl show` sees it, tied to a vault where known.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub serial: i32,
    pub key_type: String,
    pub description: String,
    pub keyring: String,
    pub depth: usize,
    pub ecryptfs_token: bool,
    pub vault: Option<String>,
}

/// Where things live; tests point all of it at temporary places.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub registry: Registry,
    /// Keyring the tokens go to (`@u` in production, a private `@s` in tests).
    pub ring: Ring,
    pub sig_guard: SigGuard,
    pub secrets: SecretStore,
    pub backends: Backends,
    /// Passphrase-change journals.
    pub state_dir: PathBuf,
}

impl ManagerConfig {
    /// The user's real locations.
    pub fn user() -> Result<ManagerConfig, VaultError> {
        let home = PathBuf::from(std::env::var_os("HOME").ok_or(RegistryError::NoConfigDir)?);
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".local/state"))
            .join("strongroom");
        Ok(ManagerConfig {
            registry: Registry::user()?,
            ring: Ring::User,
            sig_guard: SigGuard::in_home(&home),
            secrets: SecretStore::default(),
            backends: Backends {
                ctl: crate::backend::locate_ctl(),
                log: state.join("fuse.log"),
            },
            state_dir: state,
        })
    }
}

#[derive(Debug, Clone)]
pub struct VaultManager {
    cfg: ManagerConfig,
    events: broadcast::Sender<VaultEvent>,
    /// polkit may ask the user to authenticate (a GUI with an agent, a CLI on a terminal).
    interactive: bool,
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VaultError::Task(e.to_string()))
}

impl VaultManager {
    pub fn new(cfg: ManagerConfig) -> Self {
        let (events, _) = broadcast::channel(64);
        VaultManager {
            cfg,
            events,
            interactive: false,
        }
    }

    /// Lets polkit ask the user to authenticate for the helper's mounts and unmounts.
    pub fn with_interaction(mut self, interactive: bool) -> Self {
        self.interactive = interactive;
        self
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// State changes of every vault, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<VaultEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, vault: &str, state: VaultState) {
        self.emit_with(vault, state, None);
    }

    fn emit_with(&self, vault: &str, state: VaultState, backend: Option<Selection>) {
        // No subscriber is fine.
        let _ = self.events.send(VaultEvent {
            vault: vault.to_owned(),
            state,
            backend,
        });
    }

    /// The backend for `v` now: `over`, else its configured one (`Auto` asks the helper).
    pub async fn select_backend(
        &self,
        v: &VaultConfig,
        over: Option<BackendKind>,
    ) -> Result<Selection, BackendError> {
        let request = over.unwrap_or(v.backend);
        let support = match request {
            BackendKind::Userspace => None,
            _ => be::kernel_support(be::HELPER_TIMEOUT).await,
        };
        be::select(request, &v.context, support.as_ref())
    }

    pub fn journal_path(&self, vault: &str) -> PathBuf {
        self.cfg.state_dir.join(format!("passwd-{vault}.journal"))
    }

    pub async fn get(&self, name: &str) -> Result<VaultConfig, VaultError> {
        let reg = self.cfg.registry.clone();
        let name = name.to_owned();
        Ok(blocking(move || reg.get(&name)).await??)
    }

    fn status_of(&self, v: &VaultConfig, helper: &HelperView) -> VaultStatus {
        let selection = be::select(v.backend, &v.context, helper.kernel.as_ref());
        let canon = std::fs::canonicalize(&v.mountpoint).ok();
        let helper_mount = helper
            .mounts
            .iter()
            .any(|m| canon.as_deref() == Some(Path::new(&m.mount_point)));
        let sigs: Vec<String> = v.context.all_sigs().iter().map(Sig::to_hex).collect();
        let helper_tokens = helper
            .tokens
            .iter()
            .filter(|t| sigs.contains(&t.sig))
            .map(|t| t.sig.clone())
            .collect();
        let present = v
            .context
            .all_sigs()
            .into_iter()
            .filter(|s| matches!(keyring::find(self.cfg.ring, s), Ok(Some(_))))
            .map(|s| s.to_hex())
            .collect();
        VaultStatus {
            name: v.name.clone(),
            lower: v.lower.clone(),
            mountpoint: v.mountpoint.clone(),
            backend: v.backend.name(),
            key_type: v.context.key_type.name(),
            cipher: v.context.cipher.clone(),
            key_bytes: v.context.key_bytes,
            filename_encryption: v.context.filename_encryption,
            sigs: v.context.all_sigs().iter().map(Sig::to_hex).collect(),
            unlocked: is_mounted(&v.mountpoint),
            active_backend: mounted_backend(&v.mountpoint),
            helper_mount,
            helper_tokens,
            selection_error: selection.as_ref().err().map(ToString::to_string),
            selection: selection.ok(),
            tokens_present: present,
        }
    }

    pub async fn list(&self) -> Result<Vec<VaultStatus>, VaultError> {
        let reg = self.cfg.registry.clone();
        let file = blocking(move || reg.load()).await??;
        let helper = HelperView::ask(be::HELPER_TIMEOUT).await;
        Ok(file
            .vaults
            .iter()
            .map(|v| self.status_of(v, &helper))
            .collect())
    }

    pub async fn status(&self, name: &str) -> Result<VaultStatus, VaultError> {
        let v = self.get(name).await?;
        Ok(self.status_of(&v, &HelperView::ask(be::HELPER_TIMEOUT).await))
    }

    /// Creates a new vault: an empty lower directory, the mount point, the registry entry.
    pub async fn create(&self, req: CreateRequest) -> Result<VaultConfig, VaultError> {
        validate_name(&req.name)?;
        let cipher = Cipher::from_name(&req.cipher)?;
        let key_bytes = req.key_bytes.unwrap_or(cipher.key_sizes()[0]);
        CipherSpec::new(cipher, key_bytes)?;
        let key_type = match req.material {
            KeyMaterial::Passphrase(_) => KeyType::Passphrase,
            KeyMaterial::PemKey { .. } => KeyType::Openssl,
        };
        let key_source = match &req.material {
            KeyMaterial::Passphrase(_) => KeySourceConfig::Prompt,
            // On a key drive the path is stored relative to its file system.
            KeyMaterial::PemKey { keyfile, .. } if req.key_drive.is_some() => {
                KeySourceConfig::PemKey {
                    keyfile: crate::keydrive::relative_to_fs(keyfile)?,
                    passphrase_file: None,
                }
            }
            KeyMaterial::PemKey { keyfile, .. } => KeySourceConfig::PemKey {
                keyfile: std::path::absolute(keyfile).map_err(io_err(keyfile))?,
                passphrase_file: None,
            },
        };
        let mut context = CryptoContext {
            key_type,
            cipher: cipher.name().to_owned(),
            key_bytes,
            passthrough: req.passthrough,
            filename_encryption: req.filename_encryption,
            xattr_metadata: req.xattr,
            sigs: vec![],
            fnek_sig: None,
            salt: DEFAULT_SALT,
        };
        if req.backend == BackendKind::Kernel {
            // `kernel` is a promise the vault can keep now; `auto` is decided at each unlock.
            let support = be::kernel_support(be::HELPER_TIMEOUT).await;
            be::select(BackendKind::Kernel, &context, support.as_ref())?;
        }
        let ctx = context.clone();
        let material = req.material;
        let tokens = blocking(move || derive_tokens(&ctx, &material)).await??;
        context.sigs = vec![tokens.main.sig()];
        context.fnek_sig = tokens.fnek.as_ref().map(AuthToken::sig);
        for (dir, must_be_empty) in [(&req.lower, true), (&req.mountpoint, false)] {
            match std::fs::read_dir(dir).map(|mut rd| rd.next().is_some()) {
                Ok(true) if must_be_empty => {
                    return Err(VaultError::BadPath {
                        path: dir.clone(),
                        reason: "is not empty (to encrypt existing files use migrate; to adopt an eCryptfs directory use import)",
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
                }
                Err(e) => return Err(io_err(dir)(e)),
            }
        }
        let v = VaultConfig {
            name: req.name,
            lower: std::path::absolute(&req.lower).map_err(io_err(&req.lower))?,
            mountpoint: std::path::absolute(&req.mountpoint).map_err(io_err(&req.mountpoint))?,
            backend: req.backend,
            context,
            key_source,
            key_drive: req.key_drive,
            lock: LockSettings::default(),
        };
        let reg = self.cfg.registry.clone();
        let guard = self.cfg.sig_guard.clone();
        let v2 = v.clone();
        blocking(move || -> Result<(), VaultError> {
            reg.add(v2.clone())?;
            for s in v2.context.all_sigs() {
                guard.remember(&s)?;
            }
            Ok(())
        })
        .await??;
        self.emit(&v.name, VaultState::Locked);
        Ok(v)
    }

    /// Adopts an existing eCryptfs lower directory, detecting its context. With
    /// `wrapped`, the key source is that wrapped-passphrase file.
    pub async fn import(
        &self,
        name: &str,
        lower: &Path,
        mountpoint: &Path,
        wrapped: Option<PathBuf>,
    ) -> Result<VaultConfig, VaultError> {
        validate_name(name)?;
        let l = lower.to_owned();
        let det = blocking(move || import::detect(&l)).await??;
        let context = det.context();
        let v = VaultConfig {
            name: name.to_owned(),
            lower: std::path::absolute(lower).map_err(io_err(lower))?,
            mountpoint: std::path::absolute(mountpoint).map_err(io_err(mountpoint))?,
            backend: BackendKind::Userspace,
            context,
            key_source: match wrapped {
                Some(path) => KeySourceConfig::WrappedPassphrase { path },
                None => KeySourceConfig::Prompt,
            },
            key_drive: None,
            lock: LockSettings::default(),
        };
        self.add(v).await
    }

    /// Adopts `~/.Private` as set up by `ecryptfs-setup-private` (AES-128, FNEK with the
    /// FNEK salt, mount passphrase wrapped with the login passphrase).
    pub async fn import_private(&self, name: &str, home: &Path) -> Result<VaultConfig, VaultError> {
        let h = home.to_owned();
        let setup = blocking(move || import::private_setup(&h)).await??;
        let l = setup.lower.clone();
        let det = blocking(move || import::detect(&l)).await??;
        let mut context = det.context();
        context.sigs = vec![setup.sig];
        context.fnek_sig = setup.fnek_sig;
        context.filename_encryption = if setup.fnek_sig.is_some() {
            FilenameEncryption::SeparateFnek
        } else {
            FilenameEncryption::None
        };
        let v = VaultConfig {
            name: name.to_owned(),
            lower: setup.lower,
            mountpoint: setup.mountpoint,
            backend: BackendKind::Userspace,
            context,
            key_source: match setup.wrapped_passphrase {
                Some(path) => KeySourceConfig::WrappedPassphrase { path },
                None => KeySourceConfig::Prompt,
            },
            key_drive: None,
            lock: LockSettings::default(),
        };
        self.add(v).await
    }

    async fn add(&self, v: VaultConfig) -> Result<VaultConfig, VaultError> {
        let reg = self.cfg.registry.clone();
        let v2 = v.clone();
        blocking(move || reg.add(v2)).await??;
        self.emit(&v.name, VaultState::Locked);
        Ok(v)
    }

    /// Unwraps a vault's wrapped-passphrase file with the login (wrapping) passphrase.
    pub async fn unwrap_passphrase(
        &self,
        file: &Path,
        wrapping: Passphrase,
    ) -> Result<Passphrase, VaultError> {
        let f = file.to_owned();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        blocking(move || -> Result<Passphrase, VaultError> {
            let w = WrappedPassphrase::read(&f)?;
            let salt = strongroom_core::rc::salt_or_default(&strongroom_core::rc::rc_path(&home))
                .unwrap_or(DEFAULT_SALT);
            Ok(w.unwrap(&wrapping, &salt)?)
        })
        .await?
    }

    /// key source → tokens → keyring → backend → events.
    pub async fn unlock(
        &self,
        name: &str,
        material: KeyMaterial,
        opts: UnlockOptions,
    ) -> Result<(), VaultError> {
        let r = self.unlock_inner(name, material, opts).await;
        if let Err(e) = &r {
            self.emit(name, VaultState::Error(e.to_string()));
            let v = self.get(name).await.ok();
            let st = if v.is_some_and(|v| is_mounted(&v.mountpoint)) {
                VaultState::Unlocked
            } else {
                VaultState::Locked
            };
            self.emit(name, st);
        }
        r
    }

    async fn unlock_inner(
        &self,
        name: &str,
        material: KeyMaterial,
        opts: UnlockOptions,
    ) -> Result<(), VaultError> {
        let v = self.get(name).await?;
        if self.journal_path(name).exists() {
            return Err(VaultError::PasswdPending {
                vault: name.to_owned(),
                journal: self.journal_path(name),
            });
        }
        if self.migrate_journal_path(name).exists() {
            return Err(VaultError::MigratePending {
                vault: name.to_owned(),
                journal: self.migrate_journal_path(name),
            });
        }
        if is_mounted(&v.mountpoint) {
            self.emit(name, VaultState::Unlocked);
            return Ok(());
        }
        if std::fs::read_dir(&v.mountpoint).is_ok_and(|mut d| d.next().is_some()) {
            return Err(VaultError::BadPath {
                path: v.mountpoint.clone(),
                reason: "is not empty: its files would be hidden while the vault is unlocked",
            });
        }
        self.emit(name, VaultState::Unlocking);
        let selection = self.select_backend(&v, opts.backend).await?;
        let remember = match (&material, opts.remember) {
            (KeyMaterial::Passphrase(p), true) => Some(p.clone()),
            _ => None,
        };
        let (material, drive) = crate::keydrive::resolve_material(&v, material).await?;
        let r = self
            .unlock_with(name, &v, material, opts, remember, selection)
            .await;
        // The PEM file is read again at mount and (kernel) at file opens: a drive we
        // mounted stays mounted while unlocked, and lock unmounts it.
        if let Some(d) = drive {
            if r.is_ok() && d.mounted_by_us() && is_mounted(&v.mountpoint) {
                crate::keydrive::remember_mounted(&self.cfg.state_dir, name)?;
            } else {
                let _ = d.release().await;
            }
        }
        r
    }

    async fn unlock_with(
        &self,
        name: &str,
        v: &VaultConfig,
        material: KeyMaterial,
        opts: UnlockOptions,
        remember: Option<Passphrase>,
        selection: Selection,
    ) -> Result<(), VaultError> {
        let ctx = v.context.clone();
        let tokens: VaultTokens = blocking(move || tokens_for(&ctx, &material)).await??;
        let sig = tokens.main.sig();
        if v.context.sigs.is_empty() {
            // A vault whose key is not yet known (imported empty): the typo guard decides.
            if !self.cfg.sig_guard.seen(&sig)? && !opts.accept_new_sig {
                return Err(VaultError::UnknownSig(sig));
            }
            self.cfg.sig_guard.remember(&sig)?;
            let fnek = tokens.fnek.as_ref().map(AuthToken::sig);
            let reg = self.cfg.registry.clone();
            let n = name.to_owned();
            blocking(move || {
                reg.modify(&n, |v| {
                    v.context.sigs = vec![sig];
                    if v.context.filename_encryption != FilenameEncryption::None {
                        v.context.fnek_sig = fnek;
                    }
                })
            })
            .await??;
        }
        let mut added = Vec::new();
        for t in std::iter::once(&tokens.main).chain(tokens.fnek.iter()) {
            if t.skek().is_none() && selection.backend == BackendKind::Kernel {
                // A private-key token carries the PEM passphrase for ecryptfs-utils'
                // daemon; the helper serves the kernel with the key itself instead.
                continue;
            }
            if let keyring::Added::New(_) = keyring::add_token(self.cfg.ring, t)? {
                added.push(t.sig());
            }
        }
        let v = self.get(name).await?;
        let mounted = match std::fs::create_dir_all(&v.mountpoint) {
            Ok(()) => self
                .cfg
                .backends
                .mount(&v, selection.backend, &tokens, self.interactive)
                .await
                .map_err(VaultError::from),
            Err(e) => Err(io_err(&v.mountpoint)(e)),
        };
        if let Err(e) = mounted {
            // A failed unlock leaves no key behind that it put there (one that was
            // already in the keyring stays: another mount may use it).
            for sig in &added {
                let _ = keyring::unlink(self.cfg.ring, sig);
            }
            return Err(e);
        }
        self.emit_with(name, VaultState::Unlocked, Some(selection));
        if let Some(p) = remember {
            // A keyring that is locked or absent must not undo a good unlock.
            if let Err(e) = self.cfg.secrets.remember(name, sig, &p).await {
                self.emit(
                    name,
                    VaultState::Error(format!(
                        "unlocked, but the passphrase was not remembered: {e}"
                    )),
                );
                self.emit_with(name, VaultState::Unlocked, Some(selection));
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Unlocks with the passphrase remembered in the Secret Service.
    pub async fn unlock_remembered(&self, name: &str) -> Result<(), VaultError> {
        self.unlock_remembered_with(name, None).await
    }

    /// [`Self::unlock_remembered`] with a backend for this time (`None`: the vault's own).
    pub async fn unlock_remembered_with(
        &self,
        name: &str,
        backend: Option<BackendKind>,
    ) -> Result<(), VaultError> {
        let v = self.get(name).await?;
        let sig = v
            .context
            .main_sig()
            .ok_or_else(|| VaultError::NotRemembered(name.to_owned()))?;
        let p = match self.cfg.secrets.lookup(name, sig).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(VaultError::NotRemembered(name.to_owned())),
            Err(e) => {
                self.emit(name, VaultState::Error(e.to_string()));
                return Err(e.into());
            }
        };
        let opts = UnlockOptions {
            backend,
            ..UnlockOptions::default()
        };
        self.unlock(name, KeyMaterial::Passphrase(p), opts).await
    }

    /// Forgets a remembered passphrase.
    pub async fn forget(&self, name: &str) -> Result<usize, VaultError> {
        Ok(self.cfg.secrets.forget(name).await?)
    }

    /// Unmount (through the helper for a kernel mount), then wipe the vault's tokens as
    /// configured: ours in the keyring and, after a kernel mount, the helper's.
    pub async fn lock(&self, name: &str, mode: UnmountMode) -> Result<(), VaultError> {
        let v = self.get(name).await?;
        self.emit(name, VaultState::Locking);
        let was = mounted_backend(&v.mountpoint);
        if was.is_some() {
            if let Err(e) = self.cfg.backends.unmount(&v, mode, self.interactive).await {
                self.emit(name, VaultState::Error(e.to_string()));
                self.emit(name, VaultState::Unlocked);
                return Err(e.into());
            }
        }
        if v.lock.wipe_tokens {
            self.wipe_tokens(&v)?;
            if was == Some(BackendKind::Kernel) {
                // Unmount already dropped the mount's tokens; this catches any left by
                // an earlier mount of the same key.
                if let Err(e) =
                    be::wipe_helper_tokens(&v.context.all_sigs(), self.interactive).await
                {
                    self.emit(name, VaultState::Error(e.to_string()));
                    self.emit(name, VaultState::Locked);
                    return Err(e.into());
                }
            }
        }
        if let Err(e) = crate::keydrive::release_remembered(&self.cfg.state_dir, &v).await {
            // The vault is locked; the drive merely stays mounted.
            self.emit(
                name,
                VaultState::Error(format!("locked, but the key drive stays mounted: {e}")),
            );
        }
        self.emit(name, VaultState::Locked);
        Ok(())
    }

    /// Whether each registered vault is mounted now.
    async fn mount_states(&self) -> Result<HashMap<String, bool>, VaultError> {
        let reg = self.cfg.registry.clone();
        let file = blocking(move || reg.load()).await??;
        Ok(file
            .vaults
            .iter()
            .map(|v| (v.name.clone(), is_mounted(&v.mountpoint)))
            .collect())
    }

    /// Follows every mount and unmount this mount namespace sees (the kernel flags
    /// `/proc/self/mountinfo` with POLLPRI on each change): a vault unlocked or locked
    /// anywhere — another process, the helper for another session, `fusermount3 -u`, a
    /// daemon that died — gets an `Unlocked`/`Locked` event, whichever backend serves
    /// it; first, every vault's state now. Waits without polling; runs until it fails
    /// (dropping the future stops it).
    pub async fn follow_mounts(&self) -> Result<(), VaultError> {
        const MOUNTINFO: &str = "/proc/self/mountinfo";
        let table = std::fs::File::open(MOUNTINFO).map_err(io_err(Path::new(MOUNTINFO)))?;
        let (tx, mut changed) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("mount-watch".into())
            .spawn(move || watch_mount_table(&table, &tx))
            .map_err(io_err(Path::new(MOUNTINFO)))?;
        let mut known = HashMap::new();
        let mut result = Ok(());
        loop {
            result.map_err(|e: nix::errno::Errno| io_err(Path::new(MOUNTINFO))(e.into()))?;
            let now = self.mount_states().await?;
            for (name, &mounted) in &now {
                if known.get(name) != Some(&mounted) {
                    let st = if mounted {
                        VaultState::Unlocked
                    } else {
                        VaultState::Locked
                    };
                    self.emit(name, st);
                }
            }
            known = now;
            match changed.recv().await {
                Some(r) => result = r,
                None => return Ok(()),
            }
        }
    }

    fn wipe_tokens(&self, v: &VaultConfig) -> Result<usize, VaultError> {
        let mut n = 0;
        for s in v.context.all_sigs() {
            n += keyring::unlink(self.cfg.ring, &s)?;
        }
        Ok(n)
    }

    /// Unlinks one vault's tokens (without unmounting).
    pub async fn wipe_vault_tokens(&self, name: &str) -> Result<usize, VaultError> {
        let v = self.get(name).await?;
        self.wipe_tokens(&v)
    }

    /// The keyrings as `keyctl show` sees them, eCryptfs tokens tied to their vaults.
    pub async fn keyring_view(&self) -> Result<Vec<KeyView>, VaultError> {
        let reg = self.cfg.registry.clone();
        let file = blocking(move || reg.load()).await??;
        let keys: Vec<KeyInfo> = blocking(keyring::list).await??;
        Ok(keys
            .into_iter()
            .map(|k| {
                let vault = k
                    .description
                    .parse::<Sig>()
                    .ok()
                    .filter(|_| k.is_ecryptfs_token)
                    .and_then(|s| {
                        file.vaults
                            .iter()
                            .find(|v| v.context.all_sigs().contains(&s))
                    })
                    .map(|v| v.name.clone());
                KeyView {
                    serial: k.serial,
                    key_type: k.key_type,
                    description: k.description,
                    keyring: k.keyring_description,
                    depth: k.depth,
                    ecryptfs_token: k.is_ecryptfs_token,
                    vault,
                }
            })
            .collect())
    }

    /// Changes the passphrase of a locked passphrase vault (resumes an interrupted
    /// change given the same two passphrases).
    pub async fn change_passphrase(
        &self,
        name: &str,
        old: Passphrase,
        new: Passphrase,
        mut progress: impl FnMut(&Progress) + Send + 'static,
    ) -> Result<NewSigs, VaultError> {
        let v = self.get(name).await?;
        if is_mounted(&v.mountpoint) {
            return Err(VaultError::Unlocked(name.to_owned()));
        }
        let journal = self.journal_path(name);
        let ctx = v.context.clone();
        let lower = v.lower.clone();
        let sigs = blocking(move || {
            passwd::change_passphrase(&lower, &ctx, &old, &new, &journal, &mut progress)
        })
        .await??;
        let reg = self.cfg.registry.clone();
        let n = name.to_owned();
        let s2 = sigs.clone();
        blocking(move || {
            reg.modify(&n, |v| {
                v.context.sigs = vec![s2.sig];
                v.context.fnek_sig = s2.fnek_sig;
            })
        })
        .await??;
        self.cfg.sig_guard.remember(&sigs.sig)?;
        // Tokens of the old passphrase are useless now.
        for s in v.context.all_sigs() {
            let _ = keyring::unlink(self.cfg.ring, &s);
        }
        // A remembered old passphrase would no longer open the vault.
        let _ = self.cfg.secrets.forget(name).await;
        Ok(sigs)
    }

    /// Writes the mount passphrase as an ecryptfs-utils wrapped-passphrase file (v2),
    /// after checking it really opens the vault.
    pub async fn export_passphrase(
        &self,
        name: &str,
        passphrase: Passphrase,
        wrapping: Passphrase,
        out: &Path,
    ) -> Result<(), VaultError> {
        let v = self.get(name).await?;
        let out = out.to_owned();
        blocking(move || -> Result<(), VaultError> {
            tokens_for(&v.context, &KeyMaterial::Passphrase(passphrase.clone()))?;
            WrappedPassphrase::wrap(&passphrase, &wrapping)?.write(&out)?;
            Ok(())
        })
        .await?
    }

    /// Forgets a vault (files untouched); refuses while unlocked.
    pub async fn remove(&self, name: &str) -> Result<VaultConfig, VaultError> {
        let v = self.get(name).await?;
        if is_mounted(&v.mountpoint) {
            return Err(VaultError::Unlocked(name.to_owned()));
        }
        let reg = self.cfg.registry.clone();
        let n = name.to_owned();
        Ok(blocking(move || reg.remove(&n)).await??)
    }
}

/// Tells `tx` of each change of the mount table `table` (`/proc/self/mountinfo`, which
/// poll(2) flags with POLLPRI) until the receiver goes. A wake-up already queued covers
/// the next change too. A thread of its own: poll(2) is safe through nix where tokio's
/// `AsyncFd` registration is not, and the crate has no unsafe code.
fn watch_mount_table(
    table: &std::fs::File,
    tx: &tokio::sync::mpsc::Sender<Result<(), nix::errno::Errno>>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    use tokio::sync::mpsc::error::TrySendError;
    while !tx.is_closed() {
        let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
        // Bounded, so the thread notices a receiver that went away.
        let r = match poll(&mut fds, PollTimeout::from(500u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let failed = r.is_err();
        if let Err(TrySendError::Closed(_)) = tx.try_send(r) {
            return;
        }
        if failed {
            return;
        }
    }
}
