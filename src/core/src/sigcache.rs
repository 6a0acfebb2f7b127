//! `~/.ecryptfs/sig-cache.txt`: the sigs mount.ecryptfs has seen before, so that a
//! mistyped passphrase (new, unknown sig) can be caught before mounting with it
//! (spec §6.2). Records are exactly 17 bytes: 16 hex characters and `\n`.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::kdf::Sig;

const RECORD: usize = 17;

/// Errors of the sig cache. The caller names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigCacheError {
    #[error("cannot read the sig cache: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write the sig cache: {0}")]
    Write(#[source] io::Error),
}

/// A sig cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigCache {
    path: PathBuf,
}

impl SigCache {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        SigCache { path: path.into() }
    }

    /// `<home>/.ecryptfs/sig-cache.txt`.
    pub fn in_home(home: &Path) -> Self {
        SigCache::at(home.join(".ecryptfs").join("sig-cache.txt"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `sig` has a record. A missing file holds nothing. Like the tool, a
    /// trailing partial record is ignored.
    pub fn contains(&self, sig: &Sig) -> Result<bool, SigCacheError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SigCacheError::Read(e)),
        };
        let want = sig.to_hex();
        Ok(data
            .chunks_exact(RECORD)
            .any(|r| r[..16] == *want.as_bytes()))
    }

    /// Appends a record (directory created 0700, file 0600 as ecryptfs-utils does),
    /// flushed to disk. Does nothing if the sig is already recorded.
    pub fn append(&self, sig: &Sig) -> Result<(), SigCacheError> {
        if self.contains(sig)? {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(SigCacheError::Write)?;
        }
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(SigCacheError::Write)?;
        f.write_all(format!("{}\n", sig.to_hex()).as_bytes())
            .map_err(SigCacheError::Write)?;
        f.sync_all().map_err(SigCacheError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn append_and_contains() {
        let home = tempfile::tempdir().unwrap();
        let c = SigCache::in_home(home.path());
        let a: Sig = "2a97418edca01eb9".parse().unwrap();
        let b: Sig = "33a5d5e39463d53f".parse().unwrap();
        assert!(!c.contains(&a).unwrap());
        c.append(&a).unwrap();
        c.append(&b).unwrap();
        c.append(&a).unwrap();
        assert!(c.contains(&a).unwrap() && c.contains(&b).unwrap());
        assert_eq!(
            std::fs::read(c.path()).unwrap(),
            b"2a97418edca01eb9\n33a5d5e39463d53f\n"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(c.path()), 0o600);
        assert_eq!(mode(c.path().parent().unwrap()), 0o700);
    }

    #[test]
    fn reads_records_of_17_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = SigCache::at(dir.path().join("s"));
        // A record split across the 17-byte grid does not count, as in the tool.
        std::fs::write(c.path(), b"x2a97418edca01eb9\n").unwrap();
        assert!(!c.contains(&"2a97418edca01eb9".parse().unwrap()).unwrap());
    }
}
