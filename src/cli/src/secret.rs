//! Where passphrases come from: a file (`--passphrase-file`) or a terminal prompt.
//! Never argv or the environment.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use strongroom_core::kdf::Passphrase;
use strongroom_vault::keysource::read_passphrase_file;
use zeroize::Zeroizing;

/// Reads a passphrase file the way `mount.ecryptfs` does (one reader for the whole
/// project: the vault's).
pub fn from_file(path: &Path) -> Result<Passphrase> {
    Ok(read_passphrase_file(path)?)
}

/// Prompts on the terminal (no echo). Refuses when stdin is not a terminal, so a
/// script never hangs waiting for input it cannot give.
pub fn prompt(label: &str) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: give --passphrase-file, or run on a terminal to be asked");
    }
    let typed =
        Zeroizing::new(rpassword::prompt_password(label).context("cannot read the passphrase")?);
    Ok(Passphrase::new(typed.as_bytes())?)
}

/// `--passphrase-file` if given, else a prompt.
pub fn obtain(file: Option<&Path>, label: &str) -> Result<Passphrase> {
    match file {
        Some(f) => from_file(f),
        None => prompt(label),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_line_or_keyed_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "correct horse\nsecond\n").unwrap();
        assert_eq!(from_file(&f).unwrap().as_bytes(), b"correct horse");
        std::fs::write(&f, "# key file\npassphrase_passwd=s3cret\n").unwrap();
        assert_eq!(from_file(&f).unwrap().as_bytes(), b"s3cret");
        std::fs::write(&f, "\n").unwrap();
        let err = format!("{:#}", from_file(&f).unwrap_err());
        assert!(err.contains("empty"), "{err}");
    }
}
