//! The drives module against the REAL udisks2, in the test VM: an emulated USB stick
//! (QEMU usb-storage with a set serial) carrying a vfat key drive, a system
//! dbus-daemon, systemd-udevd and udisksd started in the guest (the guest shares the
//! host's root, so they come from the host's packages: udisks2, udev, dbus,
//! dosfstools).
//!
//! The outer test boots the VM and re-runs this binary inside it (`inner_*`, ignored
//! on the host). Needs `cargo xtask vm-setup`; SKIPPED without it, fails when
//! STRONGROOM_REQUIRE_VM=1.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strongroom_core::kdf::Passphrase;
use strongroom_core::pubkey::RsaKeyPair;
use strongroom_vault::context::*;
use strongroom_vault::drives::{DriveError, DriveEvent, Udisks};
use strongroom_vault::keydrive;
use strongroom_vault::keysource::{derive_tokens, KeyMaterial};

const SERIAL: &str = "SR-KEY-1";
/// `mkfs.vfat -i 5EC0A11E` → udisks/blkid show `5EC0-A11E`.
const VOLID: &str = "5EC0A11E";
const UUID: &str = "5EC0-A11E";
const LABEL: &str = "SRKEY";
const KEY_PASS: &str = "key drive test passphrase";
const REL_KEY: &str = "keys/vault.pem";

#[test]
fn udisks_key_drive_in_the_vm() {
    if let Err(e) = xtask::check() {
        let required = std::env::var("STRONGROOM_REQUIRE_VM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "STRONGROOM_REQUIRE_VM=1 but the test VM is unusable: {e}"
        );
        eprintln!("SKIPPED udisks_key_drive_in_the_vm: {e}");
        return;
    }
    for tool in [
        "/usr/libexec/udisks2/udisksd",
        "/lib/systemd/systemd-udevd",
        "/usr/bin/dbus-daemon",
        "/usr/sbin/mkfs.vfat",
        "/usr/sbin/sfdisk",
    ] {
        if !Path::new(tool).exists() {
            let required = std::env::var("STRONGROOM_REQUIRE_VM").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{tool} missing (apt-get install udisks2 udev dbus dosfstools fdisk)"
            );
            eprintln!("SKIPPED udisks_key_drive_in_the_vm: {tool} missing");
            return;
        }
    }
    // The CLI half runs only with strongroomctl of the same build: where every real
    // part is required (CI), its absence is a failure, not a silent half-test.
    if strongroomctl().is_none() {
        assert!(
            !std::env::var("STRONGROOM_REQUIRE_VM").is_ok_and(|v| v == "1"),
            "STRONGROOM_REQUIRE_VM=1 but strongroomctl is not built (cargo build -p strongroomctl)"
        );
    }
    let exe = std::env::current_exe().unwrap();
    let build_dir = exe.ancestors().nth(2).unwrap().to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).unwrap();
    let work = tempfile::Builder::new()
        .prefix("drives.")
        .tempdir_in(base)
        .unwrap();
    // The key pair is made here: RSA generation is slow in the emulated guest.
    let pair = RsaKeyPair::generate(2048).unwrap();
    let pass = Passphrase::new(KEY_PASS).unwrap();
    let key = work.path().join("vault.pem");
    pair.save(&key, &work.path().join("vault.pub.pem"), &pass)
        .unwrap();
    let img = work.path().join("stick.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(48 << 20))
        .unwrap();

    let mut shares = vec![root.clone()];
    if !build_dir.starts_with(&root) {
        shares.push(build_dir);
    }
    shares.push(work.path().to_owned());
    let opts = xtask::VmOptions {
        shares,
        usb_disks: vec![format!("{}:serial={SERIAL}", img.display())
            .parse()
            .unwrap()],
        env: vec![
            ("STRONGROOM_DRIVES_KEY".into(), key.clone().into_os_string()),
            ("STRONGROOM_DRIVES_SIG".into(), pair.sig().to_hex().into()),
        ],
        timeout: Duration::from_secs(540),
        scratch_mib: 0,
        ..Default::default()
    };
    let cmd: Vec<OsString> = [
        exe.as_os_str(),
        "--exact".as_ref(),
        "inner_udisks_key_drive".as_ref(),
        "--ignored".as_ref(),
        "--nocapture".as_ref(),
    ]
    .iter()
    .map(|s| s.to_os_string())
    .collect();
    let outcome = xtask::run(&opts, &cmd).unwrap();
    eprintln!("VM: boot {:?}, total {:?}", outcome.boot, outcome.elapsed);
    assert_eq!(outcome.status, 0, "the udisks scenario failed in the VM");
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?}: {st}");
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Children killed when the test ends, however it ends.
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sysfs directory of the USB device with our serial.
fn usb_device() -> PathBuf {
    fs::read_dir("/sys/bus/usb/devices")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::read_to_string(p.join("serial")).is_ok_and(|s| s.trim() == SERIAL))
        .expect("the USB stick with our serial")
}

/// Prepares the stick with the kernel's own tools, then starts udev, the system bus
/// and udisks.
fn setup(key: &Path) -> Daemons {
    // One partition (W95 FAT32 LBA) holding a vfat with a fixed volume id.
    let mut sf = Command::new("sfdisk")
        .args(["-q", "/dev/sda"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n,,c\n")
        .unwrap();
    assert!(sf.wait().unwrap().success(), "sfdisk");
    wait_for("/dev/sda1", 10, || Path::new("/dev/sda1").exists());
    run(Command::new("mkfs.vfat")
        .args(["-i", VOLID, "-n", LABEL, "/dev/sda1"])
        .stdout(Stdio::null()));
    fs::create_dir_all("/tmp/prep").unwrap();
    run(Command::new("mount").args(["-t", "vfat", "/dev/sda1", "/tmp/prep"]));
    fs::create_dir_all("/tmp/prep/keys").unwrap();
    fs::copy(key, Path::new("/tmp/prep").join(REL_KEY)).unwrap();
    fs::write(
        "/tmp/prep/keys/pass.txt",
        "# vault\npassphrase_passwd=on the stick\n",
    )
    .unwrap();
    run(Command::new("umount").arg("/tmp/prep"));

    let mut d = Daemons(Vec::new());
    d.0.push(
        Command::new("/lib/systemd/systemd-udevd")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("udevd's control socket", 30, || {
        Path::new("/run/udev/control").exists()
    });
    // The guest command runs chrooted into the shared root; udevadm refuses to work in
    // a chroot unless told otherwise.
    run(Command::new("udevadm")
        .args(["trigger", "--action=add"])
        .env("SYSTEMD_IGNORE_CHROOT", "1"));
    run(Command::new("udevadm")
        .args(["settle", "--timeout=120"])
        .env("SYSTEMD_IGNORE_CHROOT", "1"));
    fs::create_dir_all("/run/dbus").unwrap();
    d.0.push(
        Command::new("dbus-daemon")
            .args(["--system", "--nofork", "--nopidfile"])
            .spawn()
            .unwrap(),
    );
    wait_for("the system bus", 30, || {
        Path::new("/run/dbus/system_bus_socket").exists()
    });
    // udisksd (and polkitd) start by bus activation, as on a machine without systemd:
    // the first call asks for org.freedesktop.UDisks2.
    d
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "runs inside the test VM (udisks_key_drive_in_the_vm)"]
async fn inner_udisks_key_drive() {
    let key_src =
        PathBuf::from(std::env::var_os("STRONGROOM_DRIVES_KEY").expect("run by the outer test"));
    let want_sig = std::env::var("STRONGROOM_DRIVES_SIG").unwrap();
    let mut daemons = setup(&key_src);

    // udisks takes a moment to claim its name and coldplug.
    let end = Instant::now() + Duration::from_secs(120);
    let (udisks, drive) = loop {
        let found = match Udisks::system().await {
            Ok(u) => match u.drives().await {
                Ok(list) if Instant::now() + Duration::from_secs(5) > end => {
                    panic!("udisks never listed the stick: {list:#?}")
                }
                Ok(list) => list
                    .into_iter()
                    .find(|d| d.serial == SERIAL && d.volumes.iter().any(|v| v.uuid == UUID))
                    .map(|d| (u, d)),
                Err(e) => {
                    eprintln!("waiting for udisks: {e}");
                    None
                }
            },
            Err(e) => {
                eprintln!("waiting for the bus: {e}");
                None
            }
        };
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < end, "udisks never listed the stick");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("drive: {drive:#?}");
    // QEMU's usb-storage answers SCSI INQUIRY as vendor QEMU, product QEMU HARDDISK.
    assert_eq!(
        (drive.vendor.as_str(), drive.model.as_str()),
        ("QEMU", "QEMU HARDDISK")
    );
    assert_eq!(drive.connection_bus, "usb");
    assert!(drive.is_removable());
    assert_eq!(drive.size, 48 << 20);
    let vol = drive.volume_with_uuid(UUID).unwrap().clone();
    assert_eq!((vol.fs_type.as_str(), vol.label.as_str()), ("vfat", LABEL));
    assert_eq!(vol.device, Path::new("/dev/sda1"));
    assert!(vol.mountable && vol.mount_points.is_empty());

    let mut watch = udisks.watch().await.unwrap();
    assert!(watch.drives().iter().any(|d| d.serial == SERIAL));

    // The vault's recorded identity finds the drive; its relative key path is resolved
    // on the drive mounted through udisks, and the key gives the vault's sig.
    let identity = KeyDrive {
        serial: SERIAL.into(),
        partition_uuid: UUID.into(),
        vendor: "QEMU".into(),
        model: "QEMU HARDDISK".into(),
    };
    let vault = VaultConfig {
        name: "usb".into(),
        lower: "/tmp/lower".into(),
        mountpoint: "/tmp/mnt".into(),
        backend: BackendKind::Userspace,
        context: CryptoContext {
            key_type: KeyType::Openssl,
            cipher: "aes".into(),
            key_bytes: 16,
            passthrough: false,
            filename_encryption: FilenameEncryption::None,
            xattr_metadata: false,
            sigs: vec![want_sig.parse().unwrap()],
            fnek_sig: None,
            salt: strongroom_core::kdf::DEFAULT_SALT,
        },
        key_source: KeySourceConfig::PemKey {
            keyfile: REL_KEY.into(),
            passphrase_file: None,
        },
        key_drive: Some(identity.clone()),
        lock: LockSettings::default(),
    };
    let (material, held) = keydrive::resolve_material(
        &vault,
        KeyMaterial::PemKey {
            keyfile: REL_KEY.into(),
            passphrase: Passphrase::new(KEY_PASS).unwrap(),
        },
    )
    .await
    .unwrap();
    let held = held.expect("the key drive was opened");
    assert!(held.mounted_by_us(), "it was not mounted before");
    let KeyMaterial::PemKey { keyfile, .. } = &material else {
        unreachable!()
    };
    eprintln!("key file on the drive: {}", keyfile.display());
    assert!(keyfile.ends_with(REL_KEY) && keyfile.is_absolute());
    let mounted = udisks.drives().await.unwrap();
    let root = mounted
        .iter()
        .find_map(|d| d.volume_with_uuid(UUID))
        .unwrap()
        .mount_points[0]
        .clone();
    assert_eq!(*keyfile, root.join(REL_KEY), "mounted where udisks says");
    let tokens = derive_tokens(&vault.context, &material).unwrap();
    assert_eq!(
        tokens.main.sig().to_hex(),
        want_sig,
        "the key read from the drive"
    );

    // create --keyfile: the path on the mounted drive → this drive's identity.
    let (found, desc) = keydrive::identify(keyfile)
        .await
        .unwrap()
        .expect("on a removable drive");
    assert_eq!(found, identity);
    assert_eq!(desc, "QEMU QEMU HARDDISK SR-KEY-1");
    assert_eq!(
        keydrive::relative_to_fs(keyfile).unwrap(),
        Path::new(REL_KEY)
    );
    let (_, _, rel) = udisks.locate(keyfile).await.unwrap();
    assert_eq!(rel, Path::new(REL_KEY));

    held.release().await.unwrap();
    let after = udisks.drives().await.unwrap();
    assert!(
        after
            .iter()
            .find_map(|d| d.volume_with_uuid(UUID))
            .unwrap()
            .mount_points
            .is_empty(),
        "unmounted again"
    );
    assert!(!root.join(REL_KEY).exists());

    // Mount and unmount were seen as changes.
    let mut mounts_seen = Vec::new();
    while mounts_seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
            Ok(Some(DriveEvent::Changed(d))) if d.serial == SERIAL => {
                mounts_seen.push(d.volume_with_uuid(UUID).unwrap().mount_points.len())
            }
            Ok(Some(other)) => eprintln!("event: {other:?}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("no mount/unmount change events, got {mounts_seen:?}"),
        }
    }
    assert_eq!(mounts_seen, vec![1, 0]);

    cli_create_unlock_lock(&udisks, &root).await;

    // A passphrase file on the stick: mounted for the read, unmounted after.
    let p = keydrive::read_passphrase(&vault, Path::new("keys/pass.txt"))
        .await
        .unwrap();
    assert_eq!(p.as_bytes(), b"on the stick");
    assert!(!mounted_at(&root), "unmounted after reading the passphrase");

    // Another stick is "not plugged in", by name.
    let other = KeyDrive {
        serial: "NOPE-2".into(),
        ..identity.clone()
    };
    let e = keydrive::open(&other).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "key drive QEMU QEMU HARDDISK NOPE-2 is not plugged in"
    );

    // Unplug: the kernel drops the device when it is deauthorised, as on removal.
    let usb = usb_device();
    fs::write(usb.join("authorized"), "0").unwrap();
    let removed = loop {
        match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
            Ok(Some(DriveEvent::Removed(d))) => break d,
            Ok(Some(other)) => eprintln!("event: {other:?}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("no removal event"),
        }
    };
    assert_eq!(removed.serial, SERIAL);
    assert!(
        removed.volume_with_uuid(UUID).is_some(),
        "the removed drive as last seen, with its file system"
    );
    match keydrive::open(&identity).await {
        Err(DriveError::NotPlugged(d)) => assert_eq!(d, "QEMU QEMU HARDDISK SR-KEY-1"),
        other => panic!("expected NotPlugged, got {other:?}"),
    }
    if let Some(ctl) = strongroomctl() {
        let out = ctl_cmd(&ctl)
            .args(["unlock", "usbv", "--key-passphrase-file", "/tmp/keypass"])
            .args(["--keyring", "session"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("key drive QEMU QEMU HARDDISK SR-KEY-1 is not plugged in"),
            "{err}"
        );
    }

    // Plug back in: Added, then the file system shows up.
    fs::write(usb.join("authorized"), "1").unwrap();
    let mut added = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
            Ok(Some(DriveEvent::Added(d))) if d.serial == SERIAL => added = true,
            Ok(Some(e)) => eprintln!("event: {e:?}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("replug not seen (added: {added})"),
        }
        if added
            && watch.drives().iter().any(|d| {
                identity.matches(d) != strongroom_vault::drives::Match::No
                    && d.volume_with_uuid(UUID).is_some()
            })
        {
            break;
        }
    }

    // A system bus without udisks (nothing to activate it from): a typed error, promptly.
    daemons.0.push(
        Command::new("dbus-daemon")
            .args([
                "--session",
                "--nofork",
                "--address=unix:path=/tmp/no-udisks.sock",
            ])
            .spawn()
            .unwrap(),
    );
    wait_for("the second bus", 30, || {
        Path::new("/tmp/no-udisks.sock").exists()
    });
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/tmp/no-udisks.sock");
    let t = Instant::now();
    let e = Udisks::system().await.unwrap().drives().await.unwrap_err();
    eprintln!("without udisks ({:?}): {e}", t.elapsed());
    assert!(matches!(e, DriveError::Unavailable { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
}

/// `strongroomctl` of the same build, when it was built (`cargo build -p strongroomctl`).
fn strongroomctl() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let ctl = exe.ancestors().nth(2).unwrap().join("strongroomctl");
    if ctl.exists() {
        Some(ctl)
    } else {
        eprintln!("NOTE: {} not built; the CLI part is skipped", ctl.display());
        None
    }
}

fn ctl_cmd(ctl: &Path) -> Command {
    let mut c = Command::new(ctl);
    c.env("XDG_CONFIG_HOME", "/tmp/cfg")
        .env("XDG_STATE_HOME", "/tmp/state");
    c
}

fn mounted_at(p: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(p.to_str().unwrap()))
}

/// The CLI end to end: `drives --json`, `create --keyfile` on the mounted stick records
/// the drive and the relative path; `unlock` mounts the stick itself; `lock` unmounts it.
async fn cli_create_unlock_lock(udisks: &Udisks, root: &Path) {
    let Some(ctl) = strongroomctl() else { return };
    let out = Command::new(&ctl)
        .args(["drives", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = json
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == SERIAL)
        .expect("our stick in drives --json");
    assert_eq!(d["volumes"][0]["uuid"], UUID);
    assert_eq!(d["volumes"][0]["fs_type"], "vfat");

    fs::write("/tmp/keypass", KEY_PASS).unwrap();
    // Mounted beforehand, as a desktop automounter would; then create.
    let vol = udisks
        .drives()
        .await
        .unwrap()
        .into_iter()
        .find_map(|d| d.volume_with_uuid(UUID).cloned())
        .unwrap();
    let at = udisks.mount(&vol).await.unwrap();
    assert_eq!(at, root);
    let out = ctl_cmd(&ctl)
        .args([
            "create",
            "usbv",
            "--lower",
            "/tmp/lower",
            "--mountpoint",
            "/tmp/plain",
        ])
        .arg("--keyfile")
        .arg(root.join(REL_KEY))
        .args([
            "--key-passphrase-file",
            "/tmp/keypass",
            "--keyring",
            "session",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reg = fs::read_to_string("/tmp/cfg/strongroom/vaults.toml").unwrap();
    eprintln!("registry:\n{reg}");
    let file: toml::Value = toml::from_str(&reg).unwrap();
    let v = &file["vault"][0];
    assert_eq!(v["key_source"]["keyfile"].as_str(), Some(REL_KEY));
    assert_eq!(v["key_drive"]["serial"].as_str(), Some(SERIAL));
    assert_eq!(v["key_drive"]["partition_uuid"].as_str(), Some(UUID));
    udisks.unmount(&vol).await.unwrap();

    // Unlock finds the stick by identity and mounts it through udisks.
    let out = ctl_cmd(&ctl)
        .args(["unlock", "usbv", "--key-passphrase-file", "/tmp/keypass"])
        .args(["--new-key", "--keyring", "session"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unlock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounted_at(Path::new("/tmp/plain")), "the vault is mounted");
    assert!(
        mounted_at(root),
        "the key drive stays mounted while unlocked"
    );
    fs::write("/tmp/plain/hello", "from the key-drive vault").unwrap();
    let out = ctl_cmd(&ctl)
        .args(["lock", "usbv", "--keyring", "session"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mounted_at(Path::new("/tmp/plain")));
    assert!(
        !mounted_at(root),
        "lock unmounted the key drive it had mounted"
    );
}
