//! End to end through real parts: a passphrase remembered in a headless gnome-keyring on a
//! private session bus; an old `ecryptfs-setup-private` directory whose wrapped passphrase
//! is written by the real `ecryptfs-wrap-passphrase`; a recovery export read back by the real
//! `ecryptfs-unwrap-passphrase`. Keyring work runs under `keyctl session -` (CLI `--keyring
//! session`). Needs /dev/fuse, keyutils, ecryptfs-utils, gnome-keyring, dbus-daemon.

mod common;

use common::{ctl, mounted, ok, run_inner, session_keys, sh};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

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
    let pp = home.join("pass");
    std::fs::write(&pp, "correct horse battery staple\n").unwrap();
    let (lower, mnt) = (home.join("rv.lower"), home.join("rv"));
    ok(
        home,
        &[
            "create",
            "rv",
            "--lower",
            s(&lower),
            "--mountpoint",
            s(&mnt),
            "--passphrase-file",
            s(&pp),
        ],
    );
    ok(
        home,
        &[
            "unlock",
            "rv",
            "--passphrase-file",
            s(&pp),
            "--remember",
            "--keyring",
            "session",
        ],
    );
    std::fs::write(mnt.join("kept.txt"), b"remembered\n").unwrap();
    ok(home, &["lock", "rv", "--keyring", "session"]);
    assert!(!mounted(&mnt));
    // Spec §9: the sig of this passphrase (observed from ecryptfs-add-passphrase).
    assert!(!session_keys().contains("3ab38bb4917daae6"));
    // No passphrase source at all, no terminal: the Secret Service answers.
    ok(home, &["unlock", "rv", "--keyring", "session"]);
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
    let o = ctl(home, &["unlock", "rv", "--keyring", "session"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("no passphrase is remembered") && err.contains("--passphrase-file"),
        "{err}"
    );
    assert!(!mounted(&mnt));
}

#[test]
fn imports_an_ecryptfs_setup_private_home() {
    if !run_inner(
        "imports_an_ecryptfs_setup_private_home",
        "exec keyctl session -",
        &[],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
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
    let mp_file = home.join("mountpass");
    std::fs::write(&mp_file, format!("{mount_pass}\n")).unwrap();
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

    let lp = home.join("loginpass");
    std::fs::write(&lp, format!("{login}\n")).unwrap();
    // A wrong login passphrase does not unwrap (exit 3), nothing is mounted.
    let bad = home.join("bad");
    std::fs::write(&bad, "not it\n").unwrap();
    let o = ctl(
        home,
        &[
            "unlock",
            "priv",
            "--key-passphrase-file",
            s(&bad),
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

    ok(
        home,
        &[
            "unlock",
            "priv",
            "--key-passphrase-file",
            s(&lp),
            "--keyring",
            "session",
        ],
    );
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
    ok(
        home,
        &[
            "unlock",
            "priv2",
            "--key-passphrase-file",
            s(&lp),
            "--keyring",
            "session",
        ],
    );
    assert_eq!(std::fs::read(mnt.join("docs/data.bin")).unwrap(), big);
    ok(home, &["lock", "priv2", "--keyring", "session"]);
    assert!(!mounted(&mnt));
}

#[test]
fn exported_passphrase_unwraps_with_ecryptfs_utils() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pp = home.join("pass");
    std::fs::write(&pp, "export me please 99\n").unwrap();
    ok(
        home,
        &[
            "create",
            "ev",
            "--lower",
            s(&home.join("ev.lower")),
            "--mountpoint",
            s(&home.join("ev")),
            "--passphrase-file",
            s(&pp),
        ],
    );
    let wp = home.join("wrapping");
    std::fs::write(&wp, "the wrapping one\n").unwrap();
    let out = home.join("wrapped-passphrase");
    // A passphrase that is not the vault's is refused: nothing is written.
    let bad = home.join("bad");
    std::fs::write(&bad, "wrong vault passphrase\n").unwrap();
    let o = ctl(
        home,
        &[
            "export-passphrase",
            "ev",
            "--out",
            s(&out),
            "--passphrase-file",
            s(&bad),
            "--wrapping-passphrase-file",
            s(&wp),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    ok(
        home,
        &[
            "export-passphrase",
            "ev",
            "--out",
            s(&out),
            "--passphrase-file",
            s(&pp),
            "--wrapping-passphrase-file",
            s(&wp),
        ],
    );
    let got = sh(&format!(
        "printf %s 'the wrapping one' | ecryptfs-unwrap-passphrase '{}' -",
        out.display()
    ));
    assert_eq!(got.trim_end_matches('\n'), "export me please 99");
}
