//! End to end through the real parts: a loop-mounted ext4 image as the USB key drive,
//! an OpenSSL key generated onto it, the FUSE backend, the kernel keyring (a private
//! session keyring: the body runs under `keyctl session -`, and the CLI targets `@s`).
//! Needs root (loop mount), /dev/fuse, keyutils.

mod common;

use common::{ctl, mounted, ok, run_inner, session_keys, sh};
use std::process::Command;

#[test]
fn openssl_key_on_usb_and_passphrase_vaults() {
    if !run_inner(
        "openssl_key_on_usb_and_passphrase_vaults",
        "exec keyctl session -",
        &[],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    // The "USB drive": an ext4 image on a loop device.
    let img = home.join("usb.img");
    let usb = home.join("usb");
    std::fs::create_dir(&usb).unwrap();
    sh(&format!(
        "truncate -s 16M {0} && mkfs.ext4 -q -F {0} && mount -o loop {0} {1}",
        img.display(),
        usb.display()
    ));
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _usb_guard = Umount(usb.clone());

    let kp = home.join("keypass");
    std::fs::write(&kp, "key passphrase\n").unwrap();
    let pem = usb.join("keys/vault.pem");
    let sig = ok(
        home,
        &[
            "keygen",
            "--out",
            pem.to_str().unwrap(),
            "--bits",
            "2048",
            "--passphrase-file",
            kp.to_str().unwrap(),
        ],
    );
    let sig = sig.trim().to_owned();
    assert_eq!(sig.len(), 16, "{sig}");
    assert!(usb.join("keys/vault.pub.pem").is_file());

    let lower = home.join("ov.lower");
    let mnt = home.join("ov");
    ok(
        home,
        &[
            "create",
            "ov",
            "--lower",
            lower.to_str().unwrap(),
            "--mountpoint",
            mnt.to_str().unwrap(),
            "--keyfile",
            pem.to_str().unwrap(),
            "--key-passphrase-file",
            kp.to_str().unwrap(),
        ],
    );
    let list = ok(home, &["list", "--json"]);
    assert!(list.contains(&sig), "{list}");

    ok(
        home,
        &[
            "unlock",
            "ov",
            "--key-passphrase-file",
            kp.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    assert!(mounted(&mnt));
    assert!(
        session_keys().contains(&sig),
        "token not in @s:\n{}",
        session_keys()
    );
    std::fs::write(mnt.join("secret.txt"), b"top secret\n").unwrap();
    assert_eq!(
        std::fs::read(mnt.join("secret.txt")).unwrap(),
        b"top secret\n"
    );
    // The lower file is an eCryptfs file whose tag 1 packet names the RSA key.
    let raw = std::fs::read(lower.join("secret.txt")).unwrap();
    assert_eq!(raw.len(), 8192 + 4096);
    assert_eq!(raw[26], 0x01, "tag 1 packet expected");
    assert!(!raw.windows(10).any(|w| w == b"top secret"));

    ok(home, &["lock", "ov", "--keyring", "session"]);
    assert!(!mounted(&mnt));
    assert!(
        !session_keys().contains(&sig),
        "token left behind:\n{}",
        session_keys()
    );
    assert!(!mnt.join("secret.txt").exists());

    // A wrong key passphrase is refused with exit 3 before anything is mounted.
    let bad = home.join("bad");
    std::fs::write(&bad, "nope\n").unwrap();
    let o = ctl(
        home,
        &[
            "unlock",
            "ov",
            "--key-passphrase-file",
            bad.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!mounted(&mnt));

    // Unlock again from the key: the file is still there.
    ok(
        home,
        &[
            "unlock",
            "ov",
            "--key-passphrase-file",
            kp.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    assert_eq!(
        std::fs::read(mnt.join("secret.txt")).unwrap(),
        b"top secret\n"
    );
    // Busy: a process with its cwd inside is named, and the vault stays unlocked.
    let mut holder = Command::new("sleep")
        .arg("30")
        .current_dir(&mnt)
        .spawn()
        .unwrap();
    let o = ctl(home, &["lock", "ov", "--keyring", "session"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("sleep (pid {})", holder.id())),
        "{err}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    ok(home, &["lock", "ov", "--keyring", "session"]);

    // Passphrase vault with names encrypted.
    let pp = home.join("pass");
    std::fs::write(&pp, "correct horse battery staple\n").unwrap();
    let pl = home.join("pv.lower");
    let pm = home.join("pv");
    ok(
        home,
        &[
            "create",
            "pv",
            "--lower",
            pl.to_str().unwrap(),
            "--mountpoint",
            pm.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
            "--fnek-separate",
        ],
    );
    ok(
        home,
        &[
            "unlock",
            "pv",
            "--passphrase-file",
            pp.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    std::fs::write(pm.join("notes.txt"), b"hello").unwrap();
    let names: Vec<String> = std::fs::read_dir(&pl)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("ECRYPTFS_FNEK_ENCRYPTED.")),
        "{names:?}"
    );
    // Spec §9 V1-style check: the sig is the KDF of the passphrase (3ab38bb4917daae6 for
    // this passphrase, observed from ecryptfs-add-passphrase), FNEK dfe2081a9780d1ee.
    let st = ok(home, &["status", "pv", "--json", "--keyring", "session"]);
    assert!(
        st.contains("3ab38bb4917daae6") && st.contains("dfe2081a9780d1ee"),
        "{st}"
    );
    ok(home, &["lock", "pv", "--keyring", "session"]);
    assert!(!session_keys().contains("3ab38bb4917daae6"));

    // Honest passphrase change through the CLI, then the new one opens, the old does not.
    let np = home.join("newpass");
    std::fs::write(&np, "a new passphrase 42\n").unwrap();
    ok(
        home,
        &[
            "passwd",
            "pv",
            "--old-passphrase-file",
            pp.to_str().unwrap(),
            "--new-passphrase-file",
            np.to_str().unwrap(),
        ],
    );
    let o = ctl(
        home,
        &[
            "unlock",
            "pv",
            "--passphrase-file",
            pp.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    ok(
        home,
        &[
            "unlock",
            "pv",
            "--passphrase-file",
            np.to_str().unwrap(),
            "--keyring",
            "session",
        ],
    );
    assert_eq!(std::fs::read(pm.join("notes.txt")).unwrap(), b"hello");
    ok(home, &["lock", "pv", "--keyring", "session"]);
}
