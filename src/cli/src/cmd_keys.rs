//! `keys list` and `keys wipe`: what `keyctl show` and `keyctl unlink`/`clear` do
//! for eCryptfs tokens.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use strongroom_core::kdf::Sig;
use strongroom_core::keyring::{self, KeyInfo, Ring};

use crate::exit;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    #[command(
        about = "List the keys in the session and user keyrings",
        long_about = "Lists every key reachable from the session keyring (@s) and the user keyring (@u), \
depth first as `keyctl show` does, with serial, type, permissions (possessor/user/group/other mask), \
owner, the keyring that holds it and whether it is an eCryptfs auth token (a `user` key named by its \
16-hex signature whose payload is a valid token for that signature). A keyring reached twice (@u is \
normally linked into @s) is shown once.\n\n\
--json prints an array of objects with the fields serial, type, description, perm (hex), uid, gid, \
ecryptfs_token, keyring_serial, keyring, root (\"@s\" or \"@u\") and depth."
    )]
    List(ListArgs),
    #[command(
        about = "Remove eCryptfs keys from the keyrings",
        long_about = "Unlinks keys so that no new file can be opened with them (\"wipe session keys\"). \
Exactly one of:\n\n\
--sig SIG: unlink the token named SIG from the user and session keyrings (and keyrings nested in \
them). Exit status 4 if no such key was linked.\n\n\
--all-ecryptfs: unlink every eCryptfs auth token found by `keys list`; other keys stay.\n\n\
--clear-user-keyring: empty the user keyring @u, like `keyctl clear @u`. This removes the keys of \
every other program that keeps keys there (other vaults, network file systems, Kerberos, ...), not \
only eCryptfs tokens.\n\n\
Mounted kernel eCryptfs file systems keep the keys they registered at mount time; unlinking stops \
new lookups (files whose key was never used during this mount), it does not lock a mounted vault."
    )]
    Wipe(WipeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Machine-readable output (JSON array).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct WipeArgs {
    /// The signature of the token to unlink (16 hex characters); may be repeated.
    #[arg(long, value_name = "SIG")]
    sig: Vec<Sig>,
    /// Unlink every eCryptfs auth token.
    #[arg(long)]
    all_ecryptfs: bool,
    /// Empty the whole user keyring, including other programs' keys.
    #[arg(long)]
    clear_user_keyring: bool,
}

pub fn run(cmd: KeysCommand) -> Result<i32> {
    match cmd {
        KeysCommand::List(a) => list(a),
        KeysCommand::Wipe(a) => wipe(a),
    }
}

#[derive(Serialize)]
struct JsonKey<'a> {
    serial: i32,
    #[serde(rename = "type")]
    key_type: &'a str,
    description: &'a str,
    perm: String,
    uid: u32,
    gid: u32,
    ecryptfs_token: bool,
    keyring_serial: i32,
    keyring: &'a str,
    root: &'static str,
    depth: usize,
}

fn list(a: ListArgs) -> Result<i32> {
    let keys = keyring::list().context("cannot list the keyrings")?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let rows: Vec<JsonKey> = keys
            .iter()
            .map(|k| JsonKey {
                serial: k.serial,
                key_type: &k.key_type,
                description: &k.description,
                perm: format!("{:08x}", k.perm),
                uid: k.uid,
                gid: k.gid,
                ecryptfs_token: k.is_ecryptfs_token,
                keyring_serial: k.keyring_serial,
                keyring: &k.keyring_description,
                root: k.root.short_name(),
                depth: k.depth,
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>10}  {:<8}  {:<8}  {:>6}  {:>6}  {:<4}  {:<8}  DESCRIPTION",
            "SERIAL", "RING", "PERM", "UID", "GID", "TOK", "TYPE"
        )?;
        for k in &keys {
            writeln!(out, "{}", table_row(k))?;
        }
    }
    Ok(exit::OK)
}

fn table_row(k: &KeyInfo) -> String {
    let indent = "  ".repeat(k.depth.saturating_sub(1));
    format!(
        "{:>10}  {:<8}  {:08x}  {:>6}  {:>6}  {:<4}  {:<8}  {indent}{}",
        k.serial,
        k.root.short_name(),
        k.perm,
        k.uid,
        k.gid,
        if k.is_ecryptfs_token { "yes" } else { "-" },
        k.key_type,
        k.description
    )
}

fn wipe(a: WipeArgs) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    if a.clear_user_keyring {
        eprintln!(
            "strongroomctl: warning: clearing the user keyring removes every key in it, \
including other programs' keys, not only eCryptfs tokens"
        );
        keyring::clear(Ring::User).context("cannot clear the user keyring")?;
        writeln!(out, "Cleared the user keyring")?;
        return Ok(exit::OK);
    }
    let sigs: Vec<Sig> = if a.all_ecryptfs {
        let mut s: Vec<Sig> = keyring::list()
            .context("cannot list the keyrings")?
            .iter()
            .filter(|k| k.is_ecryptfs_token)
            .filter_map(|k| k.description.parse().ok())
            .collect();
        s.sort();
        s.dedup();
        s
    } else {
        a.sig
    };
    let mut code = exit::OK;
    for sig in sigs {
        let mut removed = 0;
        for ring in [Ring::User, Ring::Session] {
            removed += keyring::unlink(ring, &sig)
                .with_context(|| format!("cannot unlink {sig} from {ring}"))?;
        }
        if removed == 0 {
            eprintln!("strongroomctl: no key with sig [{sig}] in the user or session keyring");
            code = exit::KEY_MISSING;
        } else {
            writeln!(out, "Unlinked auth tok with sig [{sig}]")?;
        }
    }
    Ok(code)
}
