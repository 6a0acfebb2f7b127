//! `add-passphrase`, `wrap-passphrase`, `unwrap-passphrase`: the ecryptfs-utils
//! passphrase tools, with the same keyring tokens, files and output lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use strongroom_core::kdf::{Passphrase, Salt, DEFAULT_SALT, FNEK_SALT};
use strongroom_core::keyring::{self, Ring};
use strongroom_core::rc;
use strongroom_core::token::AuthToken;
use strongroom_core::wrapped::{Version, WrappedPassphrase};

use crate::secret;

/// Which keyring receives tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetRing {
    /// The user keyring @u, linked into the session keyring (what ecryptfs-utils does).
    User,
    /// Only this login session's keyring @s: gone when the session ends.
    Session,
}

impl TargetRing {
    fn ring(self) -> Ring {
        match self {
            TargetRing::User => Ring::User,
            TargetRing::Session => Ring::Session,
        }
    }
    fn label(self) -> &'static str {
        match self {
            // Verbatim from ecryptfs-add-passphrase: scripts match on it.
            TargetRing::User => "user session keyring",
            TargetRing::Session => "session keyring",
        }
    }
}

#[derive(Debug, Args)]
#[command(
    about = "Put a passphrase's auth token into the kernel keyring (like ecryptfs-add-passphrase)",
    long_about = "Derives the eCryptfs key of a mount passphrase (SHA-512 x 65536 with the salt from \
~/.ecryptfsrc `salt=`, else the default salt 0011223344556677) and adds it to the user keyring as the \
740-byte auth token ecryptfs-add-passphrase makes, named by its signature. A token that is already \
there is left as it is. The user keyring is then linked into the session keyring, so that the kernel \
and the Strongroom filesystem can reach the key.\n\n\
Prints one line per token:\n  Inserted auth tok with sig [SIG] into the user session keyring\n\n\
With --fnek a second token for filename encryption is added from the same passphrase with the \
filename salt of ecryptfs-utils (the ASCII bytes \"99887766\"), and its line is printed second. Unlike \
ecryptfs-add-passphrase, this does not require kernel eCryptfs support.\n\n\
The passphrase (1 to 64 bytes) is read from --passphrase-file (first line, or a passphrase_passwd= \
line) or asked for on the terminal; never give it on the command line.\n\n\
Exit status: 0 on success, 1 when the keyring refuses the key, 2 for unusable input."
)]
pub struct AddArgs {
    /// Also add the filename-encryption key (FNEK) token.
    #[arg(long)]
    fnek: bool,
    /// Read the passphrase from this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Keyring to add the tokens to.
    #[arg(long, value_enum, default_value_t = TargetRing::User)]
    keyring: TargetRing,
}

/// The salt of the invoking user's ~/.ecryptfsrc (home from the passwd entry).
fn user_salt() -> Result<Salt> {
    let home = rc::current_home().context("cannot find your home directory")?;
    let path = rc::rc_path(&home);
    rc::salt_or_default(&path).with_context(|| format!("{}", path.display()))
}

/// Adds the main token (salt from ~/.ecryptfsrc) and, with `fnek`, the FNEK token;
/// prints the tool's line for each. `fnek_first` is the order (and the single output
/// line) of ecryptfs-insert-wrapped-passphrase-into-keyring.
fn add_tokens(pass: &Passphrase, fnek: bool, target: TargetRing, fnek_first: bool) -> Result<()> {
    let main = AuthToken::from_passphrase(pass, &user_salt()?);
    let mut tokens = vec![main];
    if fnek {
        tokens.push(AuthToken::from_passphrase(pass, &FNEK_SALT));
    }
    if fnek_first {
        tokens.reverse();
    }
    let mut out = std::io::stdout().lock();
    for (i, t) in tokens.iter().enumerate() {
        keyring::add_token(target.ring(), t)
            .with_context(|| format!("cannot add the key {}", t.sig()))?;
        // ecryptfs-insert-wrapped-passphrase-into-keyring prints only the main sig.
        if !fnek_first || i + 1 == tokens.len() {
            writeln!(
                out,
                "Inserted auth tok with sig [{}] into the {}",
                t.sig(),
                target.label()
            )?;
        }
    }
    Ok(())
}

pub fn add(a: AddArgs) -> Result<i32> {
    let pass = secret::obtain(a.passphrase_file.as_deref(), "Passphrase: ")?;
    add_tokens(&pass, a.fnek, a.keyring, false)?;
    Ok(crate::exit::OK)
}

#[derive(Debug, Args)]
#[command(
    about = "Wrap a passphrase into a file with a second passphrase (like ecryptfs-wrap-passphrase)",
    long_about = "Encrypts a mount passphrase with a wrapping passphrase (usually the login password) and \
writes a version 2 wrapped-passphrase file, the format of ~/.ecryptfs/wrapped-passphrase that \
ecryptfs-unwrap-passphrase, ecryptfs-insert-wrapped-passphrase-into-keyring and pam_ecryptfs read: a \
random 8-byte salt, the wrapping key's signature, and the passphrase under AES-128-ECB.\n\n\
The file is written atomically (temporary file in the same directory, mode 0600, flushed to disk, \
then renamed), so a crash leaves either the old or the new file. An existing file is only replaced \
with --force: losing the wrapped passphrase can mean losing the data.\n\n\
Both passphrases are read from files (--passphrase-file, --wrapping-passphrase-file) or asked for on \
the terminal."
)]
pub struct WrapArgs {
    /// The wrapped-passphrase file to write.
    file: PathBuf,
    /// File holding the passphrase to wrap (the mount passphrase).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// File holding the wrapping passphrase (e.g. the login password).
    #[arg(long, value_name = "FILE")]
    wrapping_passphrase_file: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub fn wrap(a: WrapArgs) -> Result<i32> {
    if a.file.exists() && !a.force {
        bail!("{} exists; give --force to replace it", a.file.display());
    }
    let secret = secret::obtain(a.passphrase_file.as_deref(), "Passphrase to wrap: ")?;
    let wrapping = secret::obtain(
        a.wrapping_passphrase_file.as_deref(),
        "Wrapping passphrase: ",
    )?;
    let w = WrappedPassphrase::wrap(&secret, &wrapping)?;
    w.write(&a.file)
        .with_context(|| format!("{}", a.file.display()))?;
    Ok(crate::exit::OK)
}

#[derive(Debug, Args)]
#[command(
    about = "Recover a wrapped passphrase (like ecryptfs-unwrap-passphrase)",
    long_about = "Reads a wrapped-passphrase file (version 2, or the legacy version 1 which uses the \
~/.ecryptfsrc salt) and prints the passphrase followed by a newline on standard output. With \
--add-to-keyring it prints nothing secret: like ecryptfs-insert-wrapped-passphrase-into-keyring it adds \
the filename (FNEK) token and the main token to the keyring and prints the main token's \
`Inserted auth tok with sig [SIG] into the user session keyring` line.\n\n\
Exit status: 0 on success, 3 when the wrapping passphrase is wrong, 1 when the file cannot be read or \
is damaged."
)]
pub struct UnwrapArgs {
    /// The wrapped-passphrase file, e.g. ~/.ecryptfs/wrapped-passphrase.
    file: PathBuf,
    /// File holding the wrapping passphrase.
    #[arg(long, value_name = "FILE")]
    wrapping_passphrase_file: Option<PathBuf>,
    /// Add the unwrapped passphrase's tokens to the keyring instead of printing it.
    #[arg(long)]
    add_to_keyring: bool,
    /// Keyring for --add-to-keyring.
    #[arg(long, value_enum, default_value_t = TargetRing::User, requires = "add_to_keyring")]
    keyring: TargetRing,
}

pub fn unwrap(a: UnwrapArgs) -> Result<i32> {
    let w = WrappedPassphrase::read(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let wrapping = secret::obtain(
        a.wrapping_passphrase_file.as_deref(),
        "Wrapping passphrase: ",
    )?;
    // Version 2 files carry their salt; only version 1 uses ~/.ecryptfsrc.
    let v1_salt = match w.version() {
        Version::V1 => user_salt()?,
        _ => DEFAULT_SALT,
    };
    let pass = w
        .unwrap(&wrapping, &v1_salt)
        .with_context(|| format!("{}", a.file.display()))?;
    if a.add_to_keyring {
        add_tokens(&pass, true, a.keyring, true)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(pass.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(crate::exit::OK)
}

/// Exit status for an error of these commands.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use strongroom_core::pubkey::PubkeyError;
    use strongroom_core::wrapped::WrappedError;
    for cause in e.chain() {
        if let Some(WrappedError::WrongPassphrase) = cause.downcast_ref::<WrappedError>() {
            return crate::exit::BAD_KEY;
        }
        if let Some(PubkeyError::BadPrivateKey) = cause.downcast_ref::<PubkeyError>() {
            return crate::exit::BAD_KEY;
        }
        if cause
            .downcast_ref::<strongroom_core::kdf::KdfError>()
            .is_some()
        {
            return crate::exit::USAGE;
        }
    }
    crate::exit::FAILED
}
