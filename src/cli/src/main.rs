//! `strongroomctl`: eCryptfs vaults from the command line.

mod cmd_keys;
mod cmd_passphrase;
mod cmd_tree;
mod exit;
mod secret;

use clap::{Parser, Subcommand};

/// Strongroom: eCryptfs-format encrypted directories without root.
///
/// Reads and writes the same lower files as the Linux kernel's eCryptfs and the same
/// keyring tokens and wrapped-passphrase files as ecryptfs-utils. Passphrases are read
/// from a file (--passphrase-file) or asked for on the terminal, never from the
/// command line.
#[derive(Debug, Parser)]
#[command(
    name = "strongroomctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Encrypt(cmd_tree::EncryptArgs),
    Decrypt(cmd_tree::DecryptArgs),
    Stat(cmd_tree::StatArgs),
    Find(cmd_tree::FindArgs),
    AddPassphrase(cmd_passphrase::AddArgs),
    WrapPassphrase(cmd_passphrase::WrapArgs),
    UnwrapPassphrase(cmd_passphrase::UnwrapArgs),
    /// Show and remove keys in the kernel keyrings.
    #[command(subcommand)]
    Keys(cmd_keys::KeysCommand),
}

/// Prints an error chain and maps it to an exit status.
fn report(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strongroomctl: error: {e:#}");
            if e.downcast_ref::<cmd_tree::UsageError>().is_some() {
                return exit::USAGE;
            }
            cmd_passphrase::exit_code(&e)
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("STRONGROOM_LOG", "warn"))
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Encrypt(a) => report(cmd_tree::encrypt(a)),
        Command::Decrypt(a) => report(cmd_tree::decrypt(a)),
        Command::Stat(a) => report(cmd_tree::stat(a)),
        Command::Find(a) => report(cmd_tree::find(a)),
        Command::AddPassphrase(a) => report(cmd_passphrase::add(a)),
        Command::WrapPassphrase(a) => report(cmd_passphrase::wrap(a)),
        Command::UnwrapPassphrase(a) => report(cmd_passphrase::unwrap(a)),
        Command::Keys(c) => report(cmd_keys::run(c)),
    };
    std::process::exit(code)
}
