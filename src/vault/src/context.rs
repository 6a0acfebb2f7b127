//! A vault's cryptographic context and its other settings, as stored in the registry.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strongroom_core::kdf::{Salt, Sig, DEFAULT_SALT};

/// What kind of key protects the files' FEKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    Passphrase,
    Openssl,
    /// Listed so that an imported or hand-written entry is understood; not usable.
    Pkcs11,
    /// Listed so that an imported or hand-written entry is understood; not usable.
    Tpm,
}

impl KeyType {
    /// `Err(reason)` for the key modules of ecryptfs-utils that Strongroom does not offer.
    pub fn support(self) -> Result<(), &'static str> {
        match self {
            KeyType::Passphrase | KeyType::Openssl => Ok(()),
            // Both need the kernel's /dev/ecryptfs messaging and ecryptfsd to unwrap
            // every file key, and neither module is maintained any more.
            KeyType::Pkcs11 => Err("PKCS#11 tokens are not supported: ecryptfs-utils' pkcs11-helper module \
                 needs ecryptfsd and /dev/ecryptfs for every file key and is no longer maintained or \
                 shipped by distributions"),
            KeyType::Tpm => Err("TPM keys are not supported: ecryptfs-utils' tspi module speaks only to \
                 TPM 1.2 through TrouSerS, which TPM 2.0 machines do not have"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Passphrase => "passphrase",
            KeyType::Openssl => "openssl",
            KeyType::Pkcs11 => "pkcs11",
            KeyType::Tpm => "tpm",
        }
    }
}

/// Which filename-encryption key convention a vault uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilenameEncryption {
    /// Names are stored in plain text.
    None,
    /// `mount.ecryptfs`'s default: the FNEK is the content token itself (FNEK sig = sig).
    #[default]
    SameToken,
    /// `ecryptfs-add-passphrase --fnek` / `ecryptfs-setup-private`: the same passphrase
    /// with the FNEK salt, a separate token.
    SeparateFnek,
}

/// The cryptographic context of a vault (see DESIGN.md vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoContext {
    pub key_type: KeyType,
    /// Kernel cipher name ("aes", "blowfish", ...).
    pub cipher: String,
    pub key_bytes: usize,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub filename_encryption: FilenameEncryption,
    #[serde(default)]
    pub xattr_metadata: bool,
    /// Content key sigs (`ecryptfs_sig=`), the first one is used for new files.
    #[serde(with = "hex_sigs")]
    pub sigs: Vec<Sig>,
    /// `ecryptfs_fnek_sig=` when filename encryption is on.
    #[serde(default, with = "opt_hex_sig", skip_serializing_if = "Option::is_none")]
    pub fnek_sig: Option<Sig>,
    /// Salt of the passphrase token (`~/.ecryptfsrc` `salt=`, or the default).
    #[serde(default = "default_salt", with = "hex_salt")]
    pub salt: Salt,
}

fn default_salt() -> Salt {
    DEFAULT_SALT
}

impl CryptoContext {
    /// The sig of the key that must be present to open files, i.e. the first content sig.
    pub fn main_sig(&self) -> Option<Sig> {
        self.sigs.first().copied()
    }

    /// Every sig the vault's tokens are stored under (content sigs, then the FNEK).
    pub fn all_sigs(&self) -> Vec<Sig> {
        let mut v = self.sigs.clone();
        if let Some(f) = self.fnek_sig {
            if !v.contains(&f) {
                v.push(f);
            }
        }
        v
    }
}

/// Which filesystem implementation serves the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Strongroom's FUSE filesystem, running as the user.
    #[default]
    Userspace,
    /// The kernel's eCryptfs through the root helper.
    Kernel,
    /// Decided at every unlock: the kernel when the helper reports an eCryptfs with all
    /// the vault needs, else the userspace backend.
    Auto,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Userspace => "userspace",
            BackendKind::Kernel => "kernel",
            BackendKind::Auto => "auto",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the key comes from at unlock time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeySourceConfig {
    /// Asked for every time.
    #[default]
    Prompt,
    /// A file with the passphrase (first line, or a `passphrase_passwd=` line), often on
    /// the key drive. A relative path is relative to the key drive's mount point.
    PassphraseFile { path: PathBuf },
    /// An OpenSSL RSA private key (PEM). A relative path is relative to the key drive's
    /// mount point. The key's own passphrase is prompted for unless a file is named.
    PemKey {
        keyfile: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_file: Option<PathBuf>,
    },
    /// The passphrase remembered in the Secret Service (falls back to a prompt).
    SecretService,
    /// An ecryptfs-utils wrapped-passphrase file (`~/.ecryptfs/wrapped-passphrase`):
    /// the login (wrapping) passphrase is asked for and unwraps the mount passphrase.
    WrappedPassphrase { path: PathBuf },
}

/// The USB drive that carries the vault's key, identified the way udev/udisks do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDrive {
    /// The drive's serial number (`ID_SERIAL_SHORT`, udisks `Drive.Serial`).
    pub serial: String,
    /// The partition's filesystem UUID (`ID_FS_UUID`, udisks `Block.IdUUID`).
    pub partition_uuid: String,
    /// For messages ("key drive <vendor model serial> is not plugged in").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

/// Lock triggers and what a lock wipes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockSettings {
    /// Unlink the vault's tokens from the keyrings after unmounting.
    pub wipe_tokens: bool,
    pub on_screen_lock: bool,
    pub on_suspend: bool,
    /// Lock after this many minutes without user activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_minutes: Option<u32>,
    pub on_key_drive_removal: bool,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            wipe_tokens: true,
            on_screen_lock: false,
            on_suspend: true,
            idle_minutes: None,
            on_key_drive_removal: true,
        }
    }
}

/// One vault as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub name: String,
    pub lower: PathBuf,
    pub mountpoint: PathBuf,
    #[serde(default)]
    pub backend: BackendKind,
    pub context: CryptoContext,
    #[serde(default)]
    pub key_source: KeySourceConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_drive: Option<KeyDrive>,
    #[serde(default)]
    pub lock: LockSettings,
}

/// Serde glue: sigs and salts as 16 lower-case hex characters.
mod hex_sigs {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use strongroom_core::kdf::Sig;

    pub fn serialize<S: Serializer>(v: &[Sig], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(Sig::to_hex))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Sig>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(D::Error::custom))
            .collect()
    }
}

mod opt_hex_sig {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use strongroom_core::kdf::Sig;

    pub fn serialize<S: Serializer>(v: &Option<Sig>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(sig) => s.serialize_str(&sig.to_hex()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Sig>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

mod hex_salt {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use strongroom_core::kdf::Salt;

    pub fn serialize<S: Serializer>(v: &Salt, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.0))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Salt, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}
