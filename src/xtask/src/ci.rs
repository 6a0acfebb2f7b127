//! `cargo xtask test` (the whole suite, what CI runs) and `cargo xtask demo`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages the test suite needs. One list, so that CI and a newcomer's
/// machine install the same things.
pub const TEST_PACKAGES: &[&str] = &[
    // build
    "pkg-config",
    "libssl-dev",
    "libfuse3-dev",
    // the test VM (real kernel eCryptfs)
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "e2fsprogs",
    // peers and tools the tests drive
    "fuse3",
    "keyutils",
    "ecryptfs-utils",
    "attr",
    "gocryptfs",
    "util-linux",
    "diffutils",
    // the helper's integration test: a private system bus with the real polkitd
    "dbus-daemon",
    "polkitd",
    "pkexec",
    // the helper's public-key tests make RSA keys in ecryptfs-utils' PEM format
    "openssl",
    // translations (msgfmt merges po/ into the polkit policy)
    "gettext",
    // validators of the installed data files (xmllint; systemd-analyze comes with systemd)
    "libxml2-utils",
    "systemd",
    // Secret Service peer for the vault tests
    "gnome-keyring",
    // key drives: the real udisks2 (with udev) in the test VM, a vfat key stick
    "udisks2",
    "udev",
    "dosfstools",
    "fdisk",
];

/// Workspace root (this crate lives in src/xtask).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// apt-get installs whatever of `pkgs` is missing (as root, or through sudo).
pub fn install_packages(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut c = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            c.arg("apt-get");
        }
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    run(apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    run(install)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming it.
pub(crate) fn run(mut c: Command) -> Result<(), String> {
    let shown = format!(
        "{} {}",
        c.get_program().to_string_lossy(),
        c.get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("xtask: $ {shown}");
    let status = c.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown}: {status}"))
    }
}

/// Tools from crates.io the tests drive (fsx: tests/fuse_kernel_interop.rs; both:
/// src/fuse/tests/posix-suites.sh through src/cli/tests/posix_suites.rs), installed with
/// `cargo install` when missing.
const CARGO_TOOLS: &[(&str, &str)] = &[("fsx", "0.3.2"), ("pjdfstest", "0.2.2")];

fn install_cargo_tools() -> Result<(), String> {
    for (name, version) in CARGO_TOOLS {
        let present = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
        if !present {
            let mut c = cargo();
            c.args(["install", "--locked", &format!("{name}@{version}")]);
            run(c)?;
        }
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// The whole suite: dependencies, the VM, formatting and lints, every test with
/// every real component required (a missing one fails instead of skipping).
pub fn test() -> Result<(), String> {
    install_packages(TEST_PACKAGES)?;
    install_cargo_tools()?;
    // The checkout's own VM cache: a run never sees a VM another checkout set up
    // with a different guest init (child processes inherit the variable).
    if std::env::var_os("STRONGROOM_VM_CACHE").is_none() {
        std::env::set_var("STRONGROOM_VM_CACHE", root().join("target/vm-cache"));
    }
    crate::setup().map_err(|e| format!("vm-setup: {e}"))?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let mut t = cargo();
    t.args(["test", "--workspace", "--no-fail-fast"])
        .env("STRONGROOM_REQUIRE_VM", "1")
        .env("STRONGROOM_REQUIRE_REAL", "1");
    run(t)
}

/// A guided tour of the command line on a throwaway tree: every command is shown
/// before it runs, with its real output.
pub fn demo() -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "-q", "-p", "strongroomctl"]);
    run(build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let ctl = target.join("debug/strongroomctl");
    let dir = std::env::temp_dir().join("strongroom-demo");
    let _ = std::fs::remove_dir_all(&dir);
    let plain = dir.join("plain");
    std::fs::create_dir_all(plain.join("letters")).map_err(|e| e.to_string())?;
    let w = |p: &str, s: &str| std::fs::write(plain.join(p), s).map_err(|e| e.to_string());
    w(
        "README.txt",
        "Files in a Strongroom vault are encrypted one by one.\n",
    )?;
    w(
        "letters/to-alice.txt",
        "Dear Alice, the key is under the mat.\n",
    )?;
    let pass = dir.join("passphrase.txt");
    std::fs::write(&pass, "correct horse battery staple\n").map_err(|e| e.to_string())?;
    let step = |what: &str, args: &[&dyn AsRef<OsStr>]| -> Result<(), String> {
        println!("\n## {what}");
        let mut c = Command::new(&ctl);
        c.args(args.iter().map(|a| a.as_ref()));
        run(c)
    };
    println!("Demo directory: {}", dir.display());
    let lower = dir.join("lower");
    let back = dir.join("decrypted");
    step(
        "Encrypt a plain tree into an eCryptfs lower directory (file names too)",
        &[
            &"encrypt",
            &"--passphrase-file",
            &pass,
            &"--fnek",
            &"--key-bytes",
            &"32",
            &plain,
            &lower,
        ],
    )?;
    println!("\n## What is on disk");
    run({
        let mut c = Command::new("ls");
        c.arg("-lR").arg(&lower);
        c
    })?;
    let first = std::fs::read_dir(&lower)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_file())
        .ok_or("no file in the lower tree")?;
    step("The header of one encrypted file", &[&"stat", &first])?;
    step(
        "Which lower name belongs to letters/to-alice.txt?",
        &[
            &"find",
            &"--passphrase-file",
            &pass,
            &"--key-bytes",
            &"32",
            &"letters/to-alice.txt",
        ],
    )?;
    step(
        "Decrypt it again, without mounting anything",
        &[
            &"decrypt",
            &"--passphrase-file",
            &pass,
            &"--fnek",
            &lower,
            &back,
        ],
    )?;
    run({
        let mut c = Command::new("diff");
        c.arg("-r").arg(&plain).arg(&back);
        c
    })?;
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    step(
        "Mount it with the userspace backend (no root, no kernel module)",
        &[
            &"mount",
            &"--passphrase-file",
            &pass,
            &"--fnek",
            &"--key-bytes",
            &"32",
            &lower,
            &mnt,
        ],
    )?;
    let shown = run({
        let mut c = Command::new("cat");
        c.arg(mnt.join("letters/to-alice.txt"));
        c
    });
    step("Lock it again: unmount", &[&"umount", &mnt])?;
    shown?;
    // The demo passphrase's key signature (printed by `encrypt` above).
    step(
        "Remove the demo key from the keyring",
        &[&"keys", &"wipe", &"--sig", &"3ab38bb4917daae6"],
    )?;
    println!(
        "\nThe decrypted tree equals the original. Try `{} --help`.",
        ctl.display()
    );
    Ok(())
}
