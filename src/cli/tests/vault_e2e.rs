//! End to end through the real parts: a loop-mounted ext4 image as the USB key drive,
//! an OpenSSL key generated onto it, the FUSE backend, the kernel keyring (a private
//! session keyring: the body runs under `keyctl session -`, and the CLI targets `@s`).
//! Needs root (loop mount), /dev/fuse, keyutils.

mod common;

use common::{
    create_args, fails, in_session_keyring, keygen_args, mounted, ok, s, session_keys, sh,
    unlock_args, write_file, wrong_passphrase_refused,
};
use std::process::Command;

#[test]
fn openssl_key_on_usb_and_passphrase_vaults() {
    let Some(t) = in_session_keyring("openssl_key_on_usb_and_passphrase_vaults") else {
        return;
    };
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

    let kp = write_file(home, "keypass", "key passphrase\n");
    let pem = usb.join("keys/vault.pem");
    let sig = ok(home, &keygen_args(&pem, &kp));
    let sig = sig.trim().to_owned();
    assert_eq!(sig.len(), 16, "{sig}");
    assert!(usb.join("keys/vault.pub.pem").is_file());

    let (lower, mnt) = (home.join("ov.lower"), home.join("ov"));
    let key = ["--key-passphrase-file", s(&kp)];
    ok(
        home,
        &create_args(
            "ov",
            &lower,
            &mnt,
            &[&["--keyfile", s(&pem)][..], &key].concat(),
        ),
    );
    let list = ok(home, &["list", "--json"]);
    assert!(list.contains(&sig), "{list}");

    ok(home, &unlock_args("ov", &key));
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
    wrong_passphrase_refused(home, "ov", "--key-passphrase-file", &mnt);

    // Unlock again from the key: the file is still there.
    ok(home, &unlock_args("ov", &key));
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
    let err = fails(home, &["lock", "ov", "--keyring", "session"], 5);
    assert!(
        err.contains(&format!("sleep (pid {})", holder.id())),
        "{err}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    ok(home, &["lock", "ov", "--keyring", "session"]);

    // Passphrase vault with names encrypted.
    let pp = write_file(home, "pass", "correct horse battery staple\n");
    let (pl, pm) = (home.join("pv.lower"), home.join("pv"));
    let old = ["--passphrase-file", s(&pp)];
    ok(
        home,
        &create_args("pv", &pl, &pm, &[&old[..], &["--fnek-separate"]].concat()),
    );
    ok(home, &unlock_args("pv", &old));
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
    let np = write_file(home, "newpass", "a new passphrase 42\n");
    ok(
        home,
        &[
            "passwd",
            "pv",
            "--old-passphrase-file",
            s(&pp),
            "--new-passphrase-file",
            s(&np),
        ],
    );
    fails(home, &unlock_args("pv", &old), 3);
    ok(home, &unlock_args("pv", &["--passphrase-file", s(&np)]));
    assert_eq!(std::fs::read(pm.join("notes.txt")).unwrap(), b"hello");
    ok(home, &["lock", "pv", "--keyring", "session"]);
}
