//! Upper (plaintext) names and symlink targets ↔ lower names, with or without FNEK.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use fuser::Errno;
use strongroom_core::filename::FilenameKey;

/// The lower file system's longest name (every Linux file system we stack on).
pub const LOWER_NAME_MAX: usize = 255;

#[derive(Debug)]
pub enum NameCodec {
    /// Names are stored as they are (no FNEK, or the encrypted view).
    Plain,
    Fnek(Box<FilenameKey>),
}

impl NameCodec {
    /// The lower name for an upper name. Deterministic, as lookups rely on it.
    pub fn to_lower(&self, upper: &OsStr) -> Result<OsString, Errno> {
        let lower = match self {
            NameCodec::Plain => upper.to_owned(),
            NameCodec::Fnek(key) => OsString::from_vec(
                key.encrypt(upper.as_bytes())
                    .map_err(|_| Errno::ENAMETOOLONG)?,
            ),
        };
        if lower.len() > LOWER_NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(lower)
    }

    /// The upper name of a lower directory entry; `None` hides it (the kernel skips
    /// entries that are not valid encrypted names, e.g. `lost+found`).
    pub fn to_upper(&self, lower: &OsStr) -> Option<OsString> {
        match self {
            NameCodec::Plain => Some(lower.to_owned()),
            NameCodec::Fnek(key) => match key.decrypt(lower.as_bytes()) {
                Ok(name) => Some(OsString::from_vec(name)),
                Err(e) => {
                    log::info!("hiding lower entry {lower:?}: {e}");
                    None
                }
            },
        }
    }

    /// Lower symlink target (the whole target is encrypted as one name, like the kernel).
    pub fn target_to_lower(&self, target: &[u8]) -> Result<Vec<u8>, Errno> {
        match self {
            NameCodec::Plain => Ok(target.to_vec()),
            NameCodec::Fnek(key) => key.encrypt(target).map_err(|_| Errno::ENAMETOOLONG),
        }
    }

    /// Upper symlink target; an undecodable target is an I/O error, as in the kernel.
    pub fn target_to_upper(&self, lower: &[u8]) -> Result<Vec<u8>, Errno> {
        match self {
            NameCodec::Plain => Ok(lower.to_vec()),
            NameCodec::Fnek(key) => key.decrypt(lower).map_err(|e| {
                log::warn!("undecodable symlink target: {e}");
                Errno::EIO
            }),
        }
    }

    /// `f_namelen` for statfs: 143 with FNEK over a 255-byte lower limit.
    pub fn name_max(&self, lower_max: usize) -> usize {
        match self {
            NameCodec::Plain => lower_max,
            NameCodec::Fnek(key) => key.max_plain_len(lower_max),
        }
    }
}
