//! Key files on a vault's key drive: paths stored relative to the drive's file system,
//! found again through udisks by the drive's identity ([`KeyDrive`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use strongroom_core::kdf::Passphrase;

use crate::context::{KeyDrive, VaultConfig};
use crate::drives::{DriveError, MountedKeyDrive, Udisks};
use crate::keysource::{read_passphrase_file, KeyMaterial, KeySourceError};

/// A key drive we mounted for an unlock; [`HeldDrive::release`] unmounts it.
#[derive(Debug)]
pub struct HeldDrive {
    udisks: Udisks,
    mounted: MountedKeyDrive,
}

impl HeldDrive {
    pub fn mounted_by_us(&self) -> bool {
        self.mounted.mounted_by_us
    }

    pub async fn release(self) -> Result<(), DriveError> {
        self.mounted.release(&self.udisks).await
    }
}

fn key_drive_of(v: &VaultConfig, rel: &Path) -> Result<KeyDrive, DriveError> {
    v.key_drive.clone().ok_or_else(|| DriveError::NotOnDrive {
        path: rel.to_owned(),
        reason: format!(
            "a relative key path, but vault {:?} has no key drive recorded",
            v.name
        ),
    })
}

/// Finds the key drive and mounts it if needed.
pub async fn open(key: &KeyDrive) -> Result<HeldDrive, DriveError> {
    let udisks = Udisks::system().await?;
    let mounted = udisks.open_key_drive(key).await?;
    Ok(HeldDrive { udisks, mounted })
}

/// Turns a PEM key path relative to the key drive into the absolute path on the
/// mounted drive. Absolute paths and passphrases pass through.
pub async fn resolve_material(
    v: &VaultConfig,
    material: KeyMaterial,
) -> Result<(KeyMaterial, Option<HeldDrive>), DriveError> {
    match material {
        KeyMaterial::PemKey {
            keyfile,
            passphrase,
        } if keyfile.is_relative() => {
            let held = open(&key_drive_of(v, &keyfile)?).await?;
            let keyfile = held.mounted.path(&keyfile);
            Ok((
                KeyMaterial::PemKey {
                    keyfile,
                    passphrase,
                },
                Some(held),
            ))
        }
        m => Ok((m, None)),
    }
}

/// Reads a passphrase file stored relative to the key drive, unmounting the drive
/// afterwards if it was mounted for this.
pub async fn read_passphrase(v: &VaultConfig, rel: &Path) -> Result<Passphrase, KeyDriveError> {
    let held = open(&key_drive_of(v, rel)?).await?;
    let path = held.mounted.path(rel);
    let read = tokio::task::spawn_blocking(move || read_passphrase_file(&path))
        .await
        .map_err(|e| KeyDriveError::Task(e.to_string()))?;
    held.release().await?;
    Ok(read?)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyDriveError {
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Key(#[from] KeySourceError),
    #[error("a background task failed: {0}")]
    Task(String),
}

fn marker(state_dir: &Path, vault: &str) -> PathBuf {
    state_dir.join(format!("keydrive-{vault}.mounted"))
}

/// Notes that the vault's key drive was mounted by its unlock (lock unmounts it).
pub fn remember_mounted(state_dir: &Path, vault: &str) -> Result<(), DriveError> {
    let m = marker(state_dir, vault);
    std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::write(&m, b""))
        .map_err(|source| DriveError::Io { path: m, source })
}

/// Unmounts the key drive if the vault's unlock mounted it and it is still mounted.
pub async fn release_remembered(state_dir: &Path, v: &VaultConfig) -> Result<(), DriveError> {
    let m = marker(state_dir, &v.name);
    if !m.exists() {
        return Ok(());
    }
    if let Some(key) = &v.key_drive {
        let udisks = Udisks::system().await?;
        match key.find(&udisks.drives().await?) {
            Ok((_, vol)) if !vol.mount_points.is_empty() => udisks.unmount(vol).await?,
            // Unplugged or unmounted meanwhile: nothing to do.
            _ => {}
        }
    }
    std::fs::remove_file(&m).map_err(|source| DriveError::Io { path: m, source })
}

/// The mount point of the file system holding `path`: the topmost ancestor on the
/// same device.
pub fn fs_root(path: &Path) -> Result<PathBuf, DriveError> {
    let io = |source| DriveError::Io {
        path: path.to_owned(),
        source,
    };
    let path = std::fs::canonicalize(path).map_err(io)?;
    let dev = std::fs::metadata(&path).map_err(io)?.dev();
    let mut root = path.as_path();
    while let Some(parent) = root.parent() {
        match std::fs::metadata(parent) {
            Ok(m) if m.dev() == dev => root = parent,
            _ => break,
        }
    }
    Ok(root.to_owned())
}

/// `path` relative to the root of its file system (how a key on a key drive is stored).
pub fn relative_to_fs(path: &Path) -> Result<PathBuf, DriveError> {
    let canon = std::fs::canonicalize(path).map_err(|source| DriveError::Io {
        path: path.to_owned(),
        source,
    })?;
    let root = fs_root(&canon)?;
    Ok(canon.strip_prefix(&root).unwrap_or(&canon).to_owned())
}

/// The removable drive holding `path`, if udisks knows one: `Ok(None)` for a file on
/// a fixed disk, an error when udisks cannot be asked.
pub async fn identify(path: &Path) -> Result<Option<(KeyDrive, String)>, DriveError> {
    let udisks = Udisks::system().await?;
    match udisks.locate(path).await {
        Ok((d, v, _)) if d.is_removable() => Ok(Some((KeyDrive::of(&d, &v), d.describe()))),
        Ok(_) | Err(DriveError::NotOnDrive { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_file_system_root() {
        // /proc is its own file system on every Linux: /proc/self/status → self/status
        // (canonicalised: /proc/<pid>/status).
        let rel = relative_to_fs(Path::new("/proc/self/status")).unwrap();
        assert_eq!(rel, PathBuf::from(format!("{}/status", std::process::id())));
        assert_eq!(
            fs_root(Path::new("/proc/self/status")).unwrap(),
            Path::new("/proc")
        );
    }
}
