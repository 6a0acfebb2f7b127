//! End to end through real parts: a passphrase remembered in a headless gnome-keyring on a
//! private session bus; an old `ecryptfs-setup-private` directory whose wrapped passphrase
//! is written by the real `ecryptfs-wrap-passphrase`; a recovery export read back by the real
//! `ecryptfs-unwrap-passphrase`. Keyring work runs under `keyctl session -` (CLI `--keyring
//! session`). Needs /dev/fuse, keyutils, ecryptfs-utils, gnome-keyring, dbus-daemon.

mod common;

use common::{
    create_args, ctl, fails, in_session_keyring, mounted, ok, run_inner, s, session_keys, sh,
    unlock_args, write_file, wrong_passphrase_refused,
};
use std::path::Path;

#[test]
fn remembered_passphrase_unlocks_without_any_source() {
    let bus = tempfile::tempdir().unwrap();
    // The daemon reads the login-keyring password on stdin, creates and unlocks it.
    let prefix = "exec dbus-run-session -- sh -c 'printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null && exec keyctl session - \"$0\" \"$@\"'";
    if !run_inner(
        "remembered_passphrase_unlocks_without_any_source",
        prefix,
        &[("HOME", bus.path()), ("XDG_RUNTIME_DIR", bus.path())],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pp = write_file(home, "pass", "correct horse battery staple\n");
    let (lower, mnt) = (home.join("rv.lower"), home.join("rv"));
    let pass = ["--passphrase-file", s(&pp)];
    ok(home, &create_args("rv", &lower, &mnt, &pass));
    ok(
        home,
        &unlock_args("rv", &[&pass[..], &["--remember"]].concat()),
    );
    std::fs::write(mnt.join("kept.txt"), b"remembered\n").unwrap();
    ok(home, &["lock", "rv", "--keyring", "session"]);
    assert!(!mounted(&mnt));
    // Spec §9: the sig of this passphrase (observed from ecryptfs-add-passphrase).
    assert!(!session_keys().contains("3ab38bb4917daae6"));
    // No passphrase source at all, no terminal: the Secret Service answers.
    ok(home, &unlock_args("rv", &[]));
    assert!(mounted(&mnt));
    assert!(
        session_keys().contains("3ab38bb4917daae6"),
        "{}",
        session_keys()
    );
    assert_eq!(
        std::fs::read(mnt.join("kept.txt")).unwrap(),
        b"remembered\n"
    );
    ok(home, &["lock", "rv", "--keyring", "session"]);

    let out = ok(home, &["forget", "rv"]);
    assert!(out.contains("forgot 1"), "{out}");
    let err = fails(home, &unlock_args("rv", &[]), 4);
    assert!(
        err.contains("no passphrase is remembered") && err.contains("--passphrase-file"),
        "{err}"
    );
    assert!(!mounted(&mnt));
}

#[test]
fn imports_an_ecryptfs_setup_private_home() {
    let Some(t) = in_session_keyring("imports_an_ecryptfs_setup_private_home") else {
        return;
    };
    let home = t.path();
    // As ecryptfs-setup-private: 16 random bytes through `od -x` = 32 hex characters.
    let mount_pass = sh(
        "od -x -N 16 --width=16 /dev/urandom | head -n 1 | sed 's/^0000000//; s/[[:space:]]//g'",
    );
    let mount_pass = mount_pass.trim();
    assert_eq!(mount_pass.len(), 32, "{mount_pass}");
    let login = "login passphrase 7";
    let conf = home.join(".ecryptfs");
    std::fs::create_dir(&conf).unwrap();
    let mp_file = write_file(home, "mountpass", &format!("{mount_pass}\n"));
    let wrapped = conf.join("wrapped-passphrase");
    sh(&format!(
        "printf '%s\\n%s' '{mount_pass}' '{login}' | ecryptfs-wrap-passphrase '{}' -",
        wrapped.display()
    ));

    // The lower tree, names encrypted with the separate FNEK (salt "99887766").
    let plain = home.join("plain");
    std::fs::create_dir_all(plain.join("docs")).unwrap();
    std::fs::write(plain.join("diary.txt"), b"dear diary\n").unwrap();
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(plain.join("docs/data.bin"), &big).unwrap();
    let lower = home.join(".Private");
    let o = ctl(
        home,
        &[
            "encrypt",
            "--passphrase-file",
            s(&mp_file),
            "--fnek-separate",
            "--key-bytes",
            "16",
            s(&plain),
            s(&lower),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let opt = |k: &str| {
        err.split([',', ' ', '\n'])
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {err}"))
            .to_owned()
    };
    let (sig, fnek_sig) = (opt("ecryptfs_sig="), opt("ecryptfs_fnek_sig="));
    assert_ne!(sig, fnek_sig);
    std::fs::write(conf.join("Private.sig"), format!("{sig}\n{fnek_sig}\n")).unwrap();
    let mnt = home.join("Private");
    std::fs::write(conf.join("Private.mnt"), format!("{}\n", mnt.display())).unwrap();
    std::fs::remove_file(&mp_file).unwrap();

    let st = ok(home, &["import", "priv", "--private", s(home), "--json"]);
    assert!(st.contains(&sig) && st.contains(&fnek_sig), "{st}");

    let lp = write_file(home, "loginpass", &format!("{login}\n"));
    let login_key = ["--key-passphrase-file", s(&lp)];
    // A wrong login passphrase does not unwrap (exit 3), nothing is mounted.
    wrong_passphrase_refused(home, "priv", "--key-passphrase-file", &mnt);

    ok(home, &unlock_args("priv", &login_key));
    assert!(mounted(&mnt));
    let keys = session_keys();
    assert!(keys.contains(&sig) && keys.contains(&fnek_sig), "{keys}");
    assert_eq!(
        std::fs::read(mnt.join("diary.txt")).unwrap(),
        b"dear diary\n"
    );
    assert_eq!(std::fs::read(mnt.join("docs/data.bin")).unwrap(), big);
    ok(home, &["lock", "priv", "--keyring", "session"]);
    assert!(!mounted(&mnt));
    let keys = session_keys();
    assert!(!keys.contains(&sig) && !keys.contains(&fnek_sig), "{keys}");

    // The same tree named explicitly: the context (separate FNEK) is detected from the
    // names and headers alone.
    let st = ok(
        home,
        &[
            "import",
            "priv2",
            "--lower",
            s(&lower),
            "--mountpoint",
            s(&mnt),
            "--wrapped-passphrase",
            s(&wrapped),
            "--json",
        ],
    );
    assert!(st.contains(&fnek_sig), "{st}");
    ok(home, &unlock_args("priv2", &login_key));
    assert_eq!(std::fs::read(mnt.join("docs/data.bin")).unwrap(), big);
    ok(home, &["lock", "priv2", "--keyring", "session"]);
    assert!(!mounted(&mnt));
}

#[test]
fn exported_passphrase_unwraps_with_ecryptfs_utils() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pp = write_file(home, "pass", "export me please 99\n");
    let (lower, mnt) = (home.join("ev.lower"), home.join("ev"));
    ok(
        home,
        &create_args("ev", &lower, &mnt, &["--passphrase-file", s(&pp)]),
    );
    let wp = write_file(home, "wrapping", "the wrapping one\n");
    let out = home.join("wrapped-passphrase");
    // `export-passphrase` of the vault with passphrase file `pass`.
    fn export<'a>(out: &'a Path, pass: &'a Path, wrapping: &'a Path) -> [&'a str; 8] {
        [
            "export-passphrase",
            "ev",
            "--out",
            s(out),
            "--passphrase-file",
            s(pass),
            "--wrapping-passphrase-file",
            s(wrapping),
        ]
    }
    // A passphrase that is not the vault's is refused: nothing is written.
    let bad = write_file(home, "bad", "wrong vault passphrase\n");
    fails(home, &export(&out, &bad, &wp), 3);
    assert!(!out.exists());
    ok(home, &export(&out, &pp, &wp));
    let got = sh(&format!(
        "printf %s 'the wrapping one' | ecryptfs-unwrap-passphrase '{}' -",
        out.display()
    ));
    assert_eq!(got.trim_end_matches('\n'), "export me please 99");
}
