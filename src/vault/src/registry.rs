//! The vault registry: `$XDG_CONFIG_HOME/strongroom/vaults.toml`.
//!
//! Every change is lock → re-read → modify → write a temp file → fsync → rename →
//! fsync the directory, under an exclusive `flock` on a separate lock file, so two
//! processes (the app and the CLI, say) never lose each other's changes. A file that
//! does not parse is reported with its path and line and is never written over: every
//! modification starts by reading it, and fails there.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::context::VaultConfig;

/// Version of the file layout written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Longest vault name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: the vault registry is damaged: {message} (the file was left as it is; fix or move it)", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: written by a newer Strongroom (format {found}, this one knows {FORMAT_VERSION}); not touched", path.display())]
    TooNew { path: PathBuf, found: u32 },
    #[error("no vault named {0:?}")]
    NotFound(String),
    #[error("a vault named {0:?} already exists")]
    Exists(String),
    #[error("invalid vault name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("cannot find the configuration directory: neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigDir,
    #[error("cannot encode the registry: {0}")]
    Encode(#[from] toml::ser::Error),
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultsFile {
    #[serde(default = "current_version")]
    pub version: u32,
    #[serde(default, rename = "vault")]
    pub vaults: Vec<VaultConfig>,
}

fn current_version() -> u32 {
    FORMAT_VERSION
}

impl VaultsFile {
    pub fn get(&self, name: &str) -> Option<&VaultConfig> {
        self.vaults.iter().find(|v| v.name == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut VaultConfig> {
        self.vaults.iter_mut().find(|v| v.name == name)
    }
}

/// Handle on one registry file.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
}

/// `$XDG_CONFIG_HOME/strongroom` (or `~/.config/strongroom`).
pub fn config_dir() -> Result<PathBuf, RegistryError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").ok_or(RegistryError::NoConfigDir)?)
            .join(".config"),
    };
    Ok(base.join("strongroom"))
}

/// Checks a vault name: it names files (journals, Secret Service items) and appears in
/// menus, so keep it to one printable path component.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bad = |reason| {
        Err(RegistryError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("longer than 64 bytes");
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return bad("reserved");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return bad("contains '/' or a control character");
    }
    Ok(())
}

impl Registry {
    /// The user's registry.
    pub fn user() -> Result<Registry, RegistryError> {
        Ok(Registry::at(config_dir()?.join("vaults.toml")))
    }

    /// A registry at an explicit path (tests, `--config`).
    pub fn at(path: impl Into<PathBuf>) -> Registry {
        Registry { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> RegistryError + 'a {
        move |source| RegistryError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn lock(&self, exclusive: bool) -> Result<Flock<File>, RegistryError> {
        let dir = self.dir();
        fs::create_dir_all(dir).map_err(Self::io("create", dir))?;
        let lp = self.lock_path();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            .map_err(Self::io("open", &lp))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| RegistryError::Io {
            action: "lock",
            path: lp,
            source: e.into(),
        })
    }

    /// Reads the file without locking (callers hold the lock). Missing = empty.
    fn read_unlocked(&self) -> Result<VaultsFile, RegistryError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(VaultsFile::default()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return Err(RegistryError::Corrupt {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    message: "not UTF-8 text".into(),
                })
            }
            Err(e) => return Err(Self::io("read", &self.path)(e)),
        };
        let file: VaultsFile = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            RegistryError::Corrupt {
                path: self.path.clone(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        if file.version > FORMAT_VERSION {
            return Err(RegistryError::TooNew {
                path: self.path.clone(),
                found: file.version,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for v in &file.vaults {
            let at = |message: String| RegistryError::Corrupt {
                path: self.path.clone(),
                line: find_line(&text, &v.name),
                column: 1,
                message,
            };
            validate_name(&v.name).map_err(|e| at(e.to_string()))?;
            if !seen.insert(v.name.as_str()) {
                return Err(at(format!("the vault name {:?} appears twice", v.name)));
            }
        }
        Ok(file)
    }

    /// A consistent snapshot of the registry.
    pub fn load(&self) -> Result<VaultsFile, RegistryError> {
        let _guard = self.lock(false)?;
        self.read_unlocked()
    }

    /// Lock, re-read, apply `f`, write atomically. `f`'s error aborts without writing.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut VaultsFile) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let _guard = self.lock(true)?;
        let mut file = self.read_unlocked()?;
        let out = f(&mut file)?;
        file.version = FORMAT_VERSION;
        let text = toml::to_string_pretty(&file)?;
        self.write_atomic(text.as_bytes())?;
        Ok(out)
    }

    fn write_atomic(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        strongroom_core::atomic::write_atomic(&self.path, bytes)
            .map_err(Self::io("write", &self.path))
    }

    /// One vault by name.
    pub fn get(&self, name: &str) -> Result<VaultConfig, RegistryError> {
        self.load()?
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// Adds a vault; fails if the name is taken.
    pub fn add(&self, vault: VaultConfig) -> Result<(), RegistryError> {
        validate_name(&vault.name)?;
        self.update(|f| {
            if f.get(&vault.name).is_some() {
                return Err(RegistryError::Exists(vault.name.clone()));
            }
            f.vaults.push(vault);
            Ok(())
        })
    }

    /// Changes one vault in place.
    pub fn modify<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut VaultConfig) -> T,
    ) -> Result<T, RegistryError> {
        self.update(|file| {
            let v = file
                .get_mut(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            Ok(f(v))
        })
    }

    /// Forgets a vault (its files are not touched).
    pub fn remove(&self, name: &str) -> Result<VaultConfig, RegistryError> {
        self.update(|f| {
            let i = f
                .vaults
                .iter()
                .position(|v| v.name == name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            Ok(f.vaults.remove(i))
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Line of the `name = "..."` entry of a vault (for errors found after parsing).
fn find_line(text: &str, name: &str) -> usize {
    let quoted = toml::Value::String(name.to_owned()).to_string();
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("name") && l.contains(&quoted)
        })
        .map_or(1, |i| i + 1)
}
