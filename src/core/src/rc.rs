//! `~/.ecryptfsrc`: the `salt=` line ecryptfs-add-passphrase, the wrap/unwrap tools
//! and pam_ecryptfs honour (spec §3.1). The home directory comes from the passwd
//! entry of the uid, not `$HOME`, as in ecryptfs-utils — so a changed environment
//! cannot silently change the derived key.

use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

use crate::kdf::{Salt, DEFAULT_SALT};

/// Errors of `~/.ecryptfsrc` handling. The caller names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RcError {
    #[error("no passwd entry for uid {0}")]
    NoUser(u32),
    #[error("cannot look up uid {uid}: {source}")]
    Lookup { uid: u32, source: nix::Error },
    #[error("cannot read the rc file: {0}")]
    Io(#[source] io::Error),
    #[error("line {line}: salt must be 16 hexadecimal characters, found {value:?}")]
    BadSalt { line: usize, value: String },
}

/// The home directory in the passwd entry of `uid`.
pub fn home_of(uid: u32) -> Result<PathBuf, RcError> {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => Ok(u.dir),
        Ok(None) => Err(RcError::NoUser(uid)),
        Err(source) => Err(RcError::Lookup { uid, source }),
    }
}

/// The home directory of the real uid of this process.
pub fn current_home() -> Result<PathBuf, RcError> {
    home_of(Uid::current().as_raw())
}

/// `<home>/.ecryptfsrc`.
pub fn rc_path(home: &Path) -> PathBuf {
    home.join(".ecryptfsrc")
}

/// The salt an rc file sets, if any. A missing file is not an error (no rc file is
/// the common case); a malformed `salt=` is, since guessing would derive a
/// different key than the tools.
pub fn salt_from_file(path: &Path) -> Result<Option<Salt>, RcError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RcError::Io(e)),
    };
    parse_salt(&text)
}

/// The salt for passphrase tokens: the rc file's, else [`DEFAULT_SALT`].
pub fn salt_or_default(path: &Path) -> Result<Salt, RcError> {
    Ok(salt_from_file(path)?.unwrap_or(DEFAULT_SALT))
}

/// The rc file is the `name=value` option syntax of mount.ecryptfs, one or more
/// options per line separated by commas; only `salt` matters here. The last
/// `salt=` wins.
fn parse_salt(text: &str) -> Result<Option<Salt>, RcError> {
    let mut salt = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        for opt in line.split(',') {
            if let Some(value) = opt.trim().strip_prefix("salt=") {
                let value = value.trim();
                let bad = || RcError::BadSalt {
                    line: i + 1,
                    value: value.to_owned(),
                };
                if value.len() != 16 {
                    return Err(bad());
                }
                salt = Some(value.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::{derive_skek, Passphrase};

    #[test]
    fn v4_rc_salt() {
        let dir = tempfile::tempdir().unwrap();
        let rc = rc_path(dir.path());
        assert_eq!(salt_or_default(&rc).unwrap(), DEFAULT_SALT);
        std::fs::write(&rc, "# defaults\nverbosity=0\nsalt=0102030405060708\n").unwrap();
        let salt = salt_or_default(&rc).unwrap();
        let sig = derive_skek(&Passphrase::new("test123").unwrap(), &salt).sig();
        assert_eq!(sig.to_hex(), "0d9993251d8e81f0");
        std::fs::write(&rc, "key=passphrase,salt=01020304\n").unwrap();
        let err = salt_or_default(&rc).unwrap_err();
        assert!(matches!(err, RcError::BadSalt { line: 1, .. }), "{err}");
        std::fs::write(&rc, "salt=zz02030405060708\n").unwrap();
        assert!(salt_or_default(&rc).is_err());
    }

    #[test]
    fn home_comes_from_passwd() {
        assert_eq!(
            home_of(0).unwrap(),
            PathBuf::from(
                std::fs::read_to_string("/etc/passwd")
                    .unwrap()
                    .lines()
                    .find(|l| l.starts_with("root:"))
                    .unwrap()
                    .split(':')
                    .nth(5)
                    .unwrap()
            )
        );
        assert!(matches!(home_of(4_000_000_000), Err(RcError::NoUser(_))));
    }
}
