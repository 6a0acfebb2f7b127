//! The journal of a resumable operation (passphrase change, migration): one JSON file,
//! replaced atomically at each step, read back when the operation runs again.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How an operation's error type reports journal trouble.
pub(crate) trait JournalError: Sized {
    /// Unreadable contents (`reason` says why and what to do).
    fn journal(path: PathBuf, reason: String) -> Self;
    fn io(path: PathBuf, what: &'static str, source: std::io::Error) -> Self;
}

/// The journal at `path`; `None` when there is none.
pub(crate) fn load<T: DeserializeOwned, E: JournalError>(path: &Path) -> Result<Option<T>, E> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| E::journal(path.to_owned(), format!("damaged ({e}); fix or remove it"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(E::io(path.to_owned(), "cannot read the journal", e)),
    }
}

/// Replaces the journal at `path` atomically (its directory made if need be).
pub(crate) fn save<T: Serialize, E: JournalError>(path: &Path, value: &T) -> Result<(), E> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| E::journal(path.to_owned(), e.to_string()))?;
    let write = || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        strongroom_core::atomic::write_atomic(path, &bytes)
    };
    write().map_err(|e| E::io(path.to_owned(), "cannot write the journal", e))
}
