//! `migrate`: a plain folder into a vault in place, a vault out to a plain folder.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use strongroom_vault::context::BackendKind;
use strongroom_vault::context::{KeySourceConfig, KeyType};
use strongroom_vault::keysource::{read_passphrase_file, KeyMaterial};
use strongroom_vault::manager::{VaultManager, VaultState};
use strongroom_vault::migrate::{
    Direction, EncryptRequest, MigratePhase, MigrateSummary, VaultPlan,
};

use crate::cmd_vault::{manager, print_json, rt, BackendArg, Common, ContextArgs};
use crate::{exit, secret};

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    Encrypt(EncryptArgs),
    Decrypt(DecryptArgs),
    Resume(ResumeArgs),
}

/// Where the vault key comes from.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The vault passphrase, from a file (first line, or a `passphrase_passwd=` line).
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    pub passphrase_file: Option<PathBuf>,
    /// An OpenSSL RSA private key (PEM, from `keygen`) instead of a passphrase.
    #[arg(long, value_name = "PEM")]
    pub keyfile: Option<PathBuf>,
    /// The PEM key's passphrase, from a file (also for `resume` of a vault whose key
    /// file is registered, hence no `requires = "keyfile"` as in `KeyFileArgs`).
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    about = "Encrypt a folder in place into a new vault mounted on that folder",
    long_about = "Turns the contents of FOLDER into a new vault NAME. Once the vault is unlocked, \
FOLDER is its mount point, so every path under FOLDER works as before. The encrypted (lower) \
directory is `.FOLDER.strongroom` beside FOLDER unless --lower says otherwise; it must be on the \
same file system, since each file's space is freed as soon as its encrypted copy is safe.\n\n\
Each file is encrypted to a temporary file, synced to disk, decrypted back and compared (SHA-256) \
with what was read, given the original mode, times (and owner, as root), renamed to its encrypted \
name, and only then is the plaintext unlinked, after checking that its size and mtime did not \
change meanwhile. Directories (empty ones too) and symlinks are kept. Files with several hard links \
stay hard links of one encrypted file. Devices, FIFOs and sockets are refused.\n\n\
The plaintext is unlinked, NOT overwritten: on SSDs, copy-on-write file systems (btrfs, ZFS), \
journalling modes and snapshots, overwriting a file does not reliably reach the blocks that held \
it, so old plaintext may remain readable on the disk until those blocks are reused. If that \
matters, encrypt onto a fresh file system or use full-disk encryption.\n\n\
Interrupted (killed, power loss)? Run the same command again, or `migrate resume NAME`: every file \
is either still plain or already encrypted and verified, never lost. The vault cannot be unlocked \
until the migration is finished. A file that changes while it is being encrypted stops the run \
(exit 1) and stays plain; close the program writing it and run again.\n\n\
Refused (exit 2): FOLDER is a mount point, the lower directory is on another file system or not \
empty, there is not enough free space for the largest file, or a name is too long to encrypt."
)]
pub struct EncryptArgs {
    /// The folder to encrypt; it becomes the vault's mount point.
    pub folder: PathBuf,
    /// Name of the new vault.
    #[arg(long)]
    pub name: String,
    /// The encrypted directory (default: `.FOLDER.strongroom` beside FOLDER).
    #[arg(long, value_name = "DIR")]
    pub lower: Option<PathBuf>,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub context: ContextArgs,
    #[arg(long, value_enum, default_value = "userspace")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
#[command(
    about = "Decrypt a vault out to a plain folder",
    long_about = "Writes every file of the (locked) vault NAME decrypted into DIR, which must be new \
or empty. Each file is written to a temporary name, synced, read back and compared with what was \
decrypted, given the mode and times of the encrypted file, and renamed into place. Hard links are kept. With \
--remove-vault, the vault's encrypted directory and its registry entry are removed, but only after \
every file was written and verified. Interrupted? Run the same command again, or `migrate resume \
NAME`."
)]
pub struct DecryptArgs {
    pub name: String,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Remove the vault (encrypted files and registry entry) once everything is verified.
    #[arg(long)]
    pub remove_vault: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub common: Common,
}

/// Finish an interrupted `migrate encrypt` or `migrate decrypt` of vault NAME.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub name: String,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub common: Common,
}

/// Key material for a new vault (as `create` takes it).
fn new_material(k: &KeyArgs) -> Result<KeyMaterial> {
    let pem = match &k.keyfile {
        Some(f) => Some((
            f.as_path(),
            secret::obtain(k.key_passphrase_file.as_deref(), "Key passphrase: ")?,
        )),
        None => None,
    };
    crate::cmd_vault::new_material(pem, k.passphrase_file.as_deref())
}

/// Key material for an existing vault, from the options or its configured key source.
fn vault_material(m: &VaultManager, name: &str, k: &KeyArgs) -> Result<KeyMaterial> {
    let v = match rt()?.block_on(m.get(name)) {
        Ok(v) => v,
        // An encryption interrupted before the vault was registered.
        Err(_) => return new_material(k),
    };
    if v.context.key_type == KeyType::Openssl {
        let (keyfile, pfile) = match (&k.keyfile, &v.key_source) {
            (Some(f), _) => (f.clone(), k.key_passphrase_file.clone()),
            (
                None,
                KeySourceConfig::PemKey {
                    keyfile,
                    passphrase_file,
                },
            ) => (
                keyfile.clone(),
                k.key_passphrase_file.clone().or(passphrase_file.clone()),
            ),
            _ => anyhow::bail!("vault {name:?} needs its key file: give --keyfile"),
        };
        return Ok(KeyMaterial::PemKey {
            keyfile,
            passphrase: secret::obtain(pfile.as_deref(), "Key passphrase: ")?,
        });
    }
    Ok(KeyMaterial::Passphrase(
        match (&k.passphrase_file, &v.key_source) {
            (None, KeySourceConfig::PassphraseFile { path }) => read_passphrase_file(path)?,
            (f, _) => secret::obtain(f.as_deref(), "Vault passphrase: ")?,
        },
    ))
}

/// Runs `fut` while printing its progress events on a terminal.
fn with_progress(
    m: &VaultManager,
    fut: impl std::future::Future<
        Output = Result<MigrateSummary, strongroom_vault::manager::VaultError>,
    >,
) -> Result<MigrateSummary> {
    let tty = std::io::stderr().is_terminal();
    let mut rx = m.subscribe();
    let rt = rt()?;
    let r = rt.block_on(async move {
        let printer = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if let VaultState::Migrating(p) = ev.state {
                            if tty {
                                let phase = match p.phase {
                                    MigratePhase::Files => "",
                                    MigratePhase::RemovingVault => " removing the vault",
                                };
                                eprint!(
                                    "\r\x1b[K{} {}/{} files, {}/{} MiB{phase}",
                                    match p.direction {
                                        Direction::Encrypt => "encrypting",
                                        Direction::Decrypt => "decrypting",
                                    },
                                    p.files_done,
                                    p.files_total,
                                    p.bytes_done >> 20,
                                    p.bytes_total >> 20
                                );
                                let _ = std::io::stderr().flush();
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        let r = fut.await;
        printer.abort();
        r
    });
    if tty {
        eprintln!();
    }
    Ok(r?)
}

fn report(s: &MigrateSummary, json: bool, what: &str) -> Result<i32> {
    if json {
        print_json(s)?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{what}: {} files ({} bytes), {} symlinks, {} directories{}",
            s.files,
            s.bytes,
            s.symlinks,
            s.dirs,
            if s.already_done > 0 {
                format!(", {} found done by an earlier run", s.already_done)
            } else {
                String::new()
            }
        )?;
        if s.hard_links_kept > 0 {
            writeln!(out, "{} hard links kept", s.hard_links_kept)?;
        }
        if s.vault_removed {
            writeln!(out, "vault {} removed", s.vault)?;
        }
    }
    Ok(exit::OK)
}

pub fn run(c: MigrateCommand) -> Result<i32> {
    match c {
        MigrateCommand::Encrypt(a) => encrypt(a),
        MigrateCommand::Decrypt(a) => decrypt(a),
        MigrateCommand::Resume(a) => resume(a),
    }
}

fn encrypt(a: EncryptArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let resuming = m.pending_migration(&a.name)?.is_some();
    let material = if resuming {
        vault_material(&m, &a.name, &a.key)?
    } else {
        new_material(&a.key)?
    };
    let filename_encryption = a.context.filename_encryption(a.key.keyfile.is_some());
    // Stored as asked; `auto` is decided at each unlock.
    let backend: BackendKind = a.backend.into();
    let req = EncryptRequest {
        name: a.name,
        folder: a.folder,
        lower: a.lower,
        material,
        plan: VaultPlan {
            cipher: a.context.cipher,
            key_bytes: a.context.key_bytes,
            filename_encryption,
            xattr: a.context.xattr,
            backend,
        },
    };
    let s = with_progress(&m, m.migrate_encrypt(req))?;
    report(&s, a.common.json, "encrypted")
}

fn decrypt(a: DecryptArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let material = vault_material(&m, &a.name, &a.key)?;
    let s = with_progress(
        &m,
        m.migrate_decrypt(&a.name, material, &a.out, a.remove_vault),
    )?;
    report(&s, a.common.json, "decrypted")
}

fn resume(a: ResumeArgs) -> Result<i32> {
    let m = manager(&a.common)?;
    let material = vault_material(&m, &a.name, &a.key)?;
    let s = with_progress(&m, m.migrate_resume(&a.name, material))?;
    report(&s, a.common.json, "finished")
}
