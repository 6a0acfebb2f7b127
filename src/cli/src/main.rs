//! `strongroomctl`: eCryptfs vaults from the command line.

mod cmd_drives;
mod cmd_keys;
mod cmd_migrate;
mod cmd_mount;
mod cmd_passphrase;
mod cmd_tree;
mod cmd_vault;
mod exit;
mod keyfile;
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
    Create(cmd_vault::CreateArgs),
    Import(cmd_vault::ImportArgs),
    /// List the registered vaults.
    List(cmd_vault::ListArgs),
    /// Show one vault's context and state.
    Status(cmd_vault::StatusArgs),
    Unlock(cmd_vault::UnlockArgs),
    Lock(cmd_vault::LockArgs),
    Watch(cmd_vault::WatchArgs),
    Forget(cmd_vault::ForgetArgs),
    Keygen(cmd_vault::KeygenArgs),
    Drives(cmd_drives::DrivesArgs),
    Passwd(cmd_vault::PasswdArgs),
    ExportPassphrase(cmd_vault::ExportArgs),
    /// Encrypt a folder in place into a new vault, or decrypt a vault out to a folder.
    #[command(subcommand)]
    Migrate(cmd_migrate::MigrateCommand),
    /// Print shell completions.
    Completions {
        shell: clap_complete::Shell,
    },
    Mount(cmd_mount::MountArgs),
    Umount(cmd_mount::UmountArgs),
    MountHelper(cmd_mount::MountHelperArgs),
    #[command(hide = true)]
    Serve(cmd_mount::ServeArgs),
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
            match e.downcast_ref::<cmd_mount::Failure>() {
                Some(f) => f.code,
                None => cmd_passphrase::exit_code(&e),
            }
        }
    }
}

/// Like `report`, with the vault commands' exit statuses.
fn vault(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("strongroomctl: error: {e:#}");
        cmd_vault::exit_code(&e)
    })
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("STRONGROOM_LOG", "warn"))
        .init();
    // Installed as /sbin/mount.fuse.strongroom, mount(8) runs us as its helper.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(cmd_mount::HELPER_NAME.as_ref()) {
        std::process::exit(report(cmd_mount::helper(args.collect())));
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Encrypt(a) => report(cmd_tree::encrypt(a)),
        Command::Decrypt(a) => report(cmd_tree::decrypt(a)),
        Command::Stat(a) => report(cmd_tree::stat(a)),
        Command::Find(a) => report(cmd_tree::find(a)),
        Command::Create(a) => vault(cmd_vault::create(a)),
        Command::Import(a) => vault(cmd_vault::import(a)),
        Command::List(a) => vault(cmd_vault::list(a)),
        Command::Status(a) => vault(cmd_vault::status(a)),
        Command::Unlock(a) => vault(cmd_vault::unlock(a)),
        Command::Lock(a) => vault(cmd_vault::lock(a)),
        Command::Watch(a) => vault(cmd_vault::watch(a)),
        Command::Forget(a) => vault(cmd_vault::forget(a)),
        Command::Keygen(a) => vault(cmd_vault::keygen(a)),
        Command::Drives(a) => vault(cmd_drives::drives(a)),
        Command::Passwd(a) => vault(cmd_vault::passwd(a)),
        Command::ExportPassphrase(a) => vault(cmd_vault::export_passphrase(a)),
        Command::Migrate(c) => vault(cmd_migrate::run(c)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "strongroomctl",
                &mut std::io::stdout(),
            );
            exit::OK
        }
        Command::Mount(a) => report(cmd_mount::mount(a)),
        Command::Umount(a) => report(cmd_mount::umount(a)),
        Command::MountHelper(a) => report(cmd_mount::helper(a.args)),
        Command::Serve(a) => report(cmd_mount::serve(a)),
        Command::AddPassphrase(a) => report(cmd_passphrase::add(a)),
        Command::WrapPassphrase(a) => report(cmd_passphrase::wrap(a)),
        Command::UnwrapPassphrase(a) => report(cmd_passphrase::unwrap(a)),
        Command::Keys(c) => report(cmd_keys::run(c)),
    };
    std::process::exit(code)
}
