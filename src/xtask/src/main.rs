//! `cargo xtask`: Strongroom developer tasks (see `cargo xtask --help`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtask::{UsbDisk, VmError, VmOptions};

/// Exit status when the VM run timed out (like timeout(1)).
const EXIT_TIMEOUT: u8 = 124;
/// Exit status when the VM could not run the command (not set up, qemu failure, bad option).
const EXIT_VM_FAILED: u8 = 125;

/// Strongroom developer tasks.
///
/// The test VM runs the real Linux eCryptfs (Debian bookworm's 6.1 kernel) for
/// round-trip tests, also on hosts whose kernel lacks it. The guest's root is the
/// host's root file system (read-only 9p share under a throwaway tmpfs overlay), so
/// host programs (the project's binaries, ecryptfs-utils, coreutils) run in it as
/// root, at their host paths. Typical use:
///
///   cargo xtask vm-setup          # once (downloads ~70 MB, about 30 s)
///   cargo xtask vm --share "$PWD/target" -- sh -c 'cat /sys/fs/ecryptfs/version'
///
/// Cache: $STRONGROOM_VM_CACHE, else $XDG_CACHE_HOME/strongroom-vm, else
/// ~/.cache/strongroom-vm. Environment: STRONGROOM_VM_ACCEL=kvm|tcg|auto (auto: KVM
/// only if vm-setup saw it boot the guest), STRONGROOM_VM_KERNEL_PKG (another Debian
/// kernel package for vm-setup), STRONGROOM_VM_REPROBE=1 (probe KVM again),
/// STRONGROOM_VM_KEEP=1 (keep the job dir: console.log, qemu.log, the scratch disk).
///
/// Tests use the same runner through the xtask library (xtask::run). The kernel
/// round-trip tests: cargo test -p strongroom-tests (they print SKIPPED when the VM
/// is not set up, or fail if STRONGROOM_REQUIRE_VM=1, as in CI).
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    max_term_width = 100,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Prepare the test VM (idempotent): install missing host packages (qemu-system-x86,
    /// busybox-static, cpio, xz-utils, e2fsprogs) with apt-get, download the kernel
    /// package that linux-image-amd64 points to (then pinned), build the initramfs
    /// (busybox, kernel modules), and boot once to check.
    VmSetup,
    /// Exit 0 if the test VM is set up and up to date, else 1 with the reason. Boots nothing.
    VmCheck,
    /// Boot the VM, run CMD as root in it, power off; exit with CMD's status.
    ///
    /// In the guest: the host root (read-only, with a writable tmpfs overlay that is
    /// discarded), fresh tmpfs on /tmp, /run, /dev/shm; proc, sysfs, devtmpfs, devpts; a
    /// scratch ext4 disk (user_xattr) on /scratch; each --share writable at its host path.
    /// CMD starts in the current directory (or / if the guest cannot see it) with PATH,
    /// HOME=/root, LANG=C.UTF-8 and STRONGROOM_VM=1. The guest kernel has the modules for
    /// ecryptfs, fuse, loop, ext4, vfat, overlay and USB storage. Its stdout and stderr
    /// come back separately. Stdin is /dev/null. Processes left behind when CMD exits
    /// are killed. The guest console (kernel messages) is shown only when the VM fails.
    /// The host root is cached in the guest: host changes outside the shares during a
    /// run may not be seen. Each process start costs ~0.1 s under TCG: batch work into
    /// one script rather than one VM run per step.
    ///
    /// Exit status: CMD's (128+N if killed by signal N, 127 if not found); 124 timeout;
    /// 125 the VM failed (not set up, qemu error, bad option).
    #[command(verbatim_doc_comment)]
    Vm {
        /// Guest memory in MiB.
        #[arg(long, value_name = "MiB", default_value_t = 1024)]
        mem: u32,
        /// Host directory to share writable at the same path (repeatable).
        #[arg(long, value_name = "HOSTDIR")]
        share: Vec<PathBuf>,
        /// Seconds before the VM is killed (boot included).
        #[arg(long, value_name = "S", default_value_t = 600)]
        timeout: u64,
        /// Size of the sparse scratch ext4 disk on /scratch (0: none).
        #[arg(long, value_name = "MiB", default_value_t = 1024)]
        scratch: u64,
        /// Attach IMG (raw) as a USB mass-storage device on an xHCI controller, with USB
        /// serial S (repeatable; the guest sees /dev/sda, /dev/sdb, ...).
        #[arg(long, value_name = "IMG[:serial=S]")]
        usb_disk: Vec<String>,
        /// Extra environment variable for CMD (repeatable).
        #[arg(long, value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Print the boot and total time on stderr.
        #[arg(long)]
        time: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Run the whole test suite as CI does: install the Debian packages it needs,
    /// set up the test VM, check formatting and lints, run every test with every real
    /// component required (a missing one fails instead of skipping).
    Test,
    /// Build strongroomctl and walk through a demo vault, showing each command.
    Demo,
    /// Build (release) and install strongroom-helper with its bus policy, D-Bus
    /// activation file, systemd unit and polkit actions; then reload D-Bus and systemd.
    Install(InstallArgs),
    /// Remove what `install` installed (same --prefix and --destdir).
    Uninstall(InstallArgs),
    /// Regenerate flatpak/cargo-sources.json (the Flatpak build's offline crates)
    /// from Cargo.lock; run it after a dependency change (a test checks it).
    FlatpakSources,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Installation prefix (`/usr` for a distribution package).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage under this directory instead of the live system (no reloads).
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Install this helper binary instead of building one.
    #[arg(long, value_name = "PATH")]
    helper_binary: Option<PathBuf>,
    /// Install this strongroomctl binary instead of building one.
    #[arg(long, value_name = "PATH")]
    ctl_binary: Option<PathBuf>,
}

impl From<InstallArgs> for xtask::install::InstallOptions {
    fn from(a: InstallArgs) -> Self {
        xtask::install::InstallOptions {
            prefix: a.prefix,
            destdir: a.destdir,
            helper_binary: a.helper_binary,
            ctl_binary: a.ctl_binary,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.task {
        Task::Test => done("test", xtask::ci::test()),
        Task::Demo => done("demo", xtask::ci::demo()),
        Task::Install(a) => done("install", xtask::install::install(&a.into()).map(drop)),
        Task::Uninstall(a) => done("uninstall", xtask::install::uninstall(&a.into()).map(drop)),
        Task::FlatpakSources => done("flatpak-sources", xtask::flatpak::write_sources().map(drop)),
        Task::VmSetup => match xtask::setup() {
            Ok(i) => {
                eprintln!(
                    "vm-setup: ready: kernel {} ({}), accel {:?}, cache {}",
                    i.kernel_version,
                    i.kernel_package,
                    i.accel,
                    i.cache.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vm-setup: ERROR: {e}");
                ExitCode::FAILURE
            }
        },
        Task::VmCheck => match xtask::check() {
            Ok(i) => {
                eprintln!(
                    "vm-check: set up: kernel {}, accel {:?}, cache {}",
                    i.kernel_version,
                    i.accel,
                    i.cache.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vm-check: {e}");
                ExitCode::FAILURE
            }
        },
        Task::Vm {
            mem,
            share,
            timeout,
            scratch,
            usb_disk,
            env,
            time,
            cmd,
        } => match vm(mem, share, timeout, scratch, &usb_disk, &env, time, cmd) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("xtask vm: ERROR: {e}");
                ExitCode::from(if matches!(e, VmError::Timeout { .. }) {
                    EXIT_TIMEOUT
                } else {
                    EXIT_VM_FAILED
                })
            }
        },
    }
}

fn done(task: &str, r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn vm(
    mem: u32,
    shares: Vec<PathBuf>,
    timeout: u64,
    scratch: u64,
    usb: &[String],
    env: &[String],
    time: bool,
    cmd: Vec<OsString>,
) -> Result<u8, VmError> {
    let env = env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), OsString::from(v)))
                .ok_or_else(|| VmError::Invalid(format!("--env {kv:?}: expected NAME=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    let opts = VmOptions {
        mem_mib: mem,
        timeout: Duration::from_secs(timeout),
        shares,
        usb_disks: usb
            .iter()
            .map(|s| s.parse::<UsbDisk>())
            .collect::<Result<_, _>>()?,
        scratch_mib: scratch,
        env,
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        ..VmOptions::default()
    };
    let out = xtask::run(&opts, &cmd)?;
    if time {
        let boot = out
            .boot
            .map_or_else(|| "?".into(), |b| format!("{:.2}", b.as_secs_f64()));
        eprintln!(
            "xtask vm: {:?}: boot {boot} s, total {:.2} s",
            out.accel,
            out.elapsed.as_secs_f64()
        );
    }
    // statuses above 255 cannot happen for a process; clamp defensively
    Ok(u8::try_from(out.status).unwrap_or(EXIT_VM_FAILED))
}
