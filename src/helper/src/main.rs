//! `strongroom-helper`: started by D-Bus activation (through its systemd unit) as root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use strongroom_dbus::{BUS_NAME, OBJECT_PATH};
use strongroom_helper::authority::PolkitAuthority;
use strongroom_helper::keystore::{join_private_session, TokenStore};
use strongroom_helper::ledger::{Ledger, LEDGER_DIR};
use strongroom_helper::mounter::{FakeMounter, KernelMounter, Mounter};
use strongroom_helper::{Config, Helper};

const USAGE: &str =
    "usage: strongroom-helper [--idle-timeout SECONDS] [--ledger-dir DIR] [--fake-mounts]
  --fake-mounts   record mounts instead of calling mount(2) (test suites only)";

struct Args {
    idle: Duration,
    ledger_dir: PathBuf,
    fake_mounts: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        idle: Duration::from_secs(60),
        ledger_dir: LEDGER_DIR.into(),
        fake_mounts: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--idle-timeout" => {
                let v = it.next().context("--idle-timeout needs a value")?;
                a.idle = Duration::from_secs(v.parse().context("--idle-timeout")?);
            }
            "--ledger-dir" => {
                a.ledger_dir = it.next().context("--ledger-dir needs a value")?.into()
            }
            "--fake-mounts" => a.fake_mounts = true,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = parse_args()?;
    // Before any thread exists: every thread then shares this fresh session keyring,
    // which is where the kernel looks for the tokens at mount time.
    join_private_session().context("joining a private session keyring")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mounter: Arc<dyn Mounter> = if args.fake_mounts {
        log::warn!("--fake-mounts: recording mounts instead of mounting (test mode)");
        Arc::new(FakeMounter::default())
    } else {
        // The helper answers /dev/ecryptfs itself (strongroom_helper::pkd).
        Arc::new(KernelMounter {
            serves_messaging: true,
            ..KernelMounter::default()
        })
    };
    let ledger = Ledger::open(&args.ledger_dir)?;
    let tokens = TokenStore::session()?;
    let system = zbus::Connection::system()
        .await
        .context("connecting to the system bus")?;
    let authority = Arc::new(PolkitAuthority::new(system.clone()));
    let helper = Helper::new(authority, mounter, ledger, tokens, Config::default());
    system
        .object_server()
        .at(OBJECT_PATH, helper.clone())
        .await?;
    system
        .request_name(BUS_NAME)
        .await
        .context("owning the bus name")?;
    log::info!("serving {BUS_NAME}");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (idle, holds_nothing) = helper.idle();
        if idle >= args.idle && holds_nothing {
            break;
        }
    }
    // Give up the name first so that new calls start a fresh instance.
    system.release_name(BUS_NAME).await?;
    log::info!("idle, exiting");
    Ok(())
}
