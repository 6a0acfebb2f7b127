//! `--backend` without a helper: `auto` falls back to the userspace backend (FUSE) and
//! says why (status, unlock output, `--json`); `kernel` fails with the backend exit code;
//! an OpenSSL-key vault the same.
//! The system bus address points at nothing, so the helper is unreachable for certain.
//! Keyring work in a private session keyring (`keyctl session -`, CLI `--keyring session`).
//! Needs /dev/fuse, keyutils.

mod common;

use common::{ctl_env, mounted, run_inner, session_keys};

const NO_HELPER: &str = "strongroom-helper is not available on the system bus";

#[test]
fn auto_without_a_helper_is_userspace_with_the_reason() {
    if !run_inner(
        "auto_without_a_helper_is_userspace_with_the_reason",
        "exec keyctl session -",
        &[],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let bus = format!("unix:path={}", home.join("no-bus").display());
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        if args[0] != "keygen" {
            all.extend(["--keyring", "session"]);
        }
        ctl_env(home, &all, &env)
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let pf = home.join("pass");
    std::fs::write(&pf, "auto backend passphrase\n").unwrap();
    let pf = pf.to_str().unwrap();
    let (lower, mnt) = (home.join("av.lower"), home.join("av"));
    let (l, m) = (lower.to_str().unwrap(), mnt.to_str().unwrap());

    // `kernel` is a promise checked at create: refused without a helper.
    let o = run(&[
        "create",
        "kv",
        "--lower",
        l,
        "--mountpoint",
        m,
        "--passphrase-file",
        pf,
        "--backend",
        "kernel",
    ]);
    assert_eq!(o.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains(NO_HELPER));

    ok(&[
        "create",
        "av",
        "--lower",
        l,
        "--mountpoint",
        m,
        "--passphrase-file",
        pf,
        "--backend",
        "auto",
    ]);
    let st: serde_json::Value = serde_json::from_str(&ok(&["status", "av", "--json"])).unwrap();
    assert_eq!(st["backend"], "auto", "{st}");
    assert_eq!(st["selection"]["backend"], "userspace", "{st}");
    assert_eq!(st["selection"]["reason"], NO_HELPER, "{st}");
    assert_eq!(st["active_backend"], serde_json::Value::Null, "{st}");
    assert_eq!(st["helper_mount"], false, "{st}");
    assert!(ok(&["status", "av"]).contains(&format!(
        "would unlock with the userspace backend ({NO_HELPER})"
    )));

    // Forcing the kernel this time fails with the backend exit code, nothing mounted.
    let o = run(&[
        "unlock",
        "av",
        "--passphrase-file",
        pf,
        "--backend",
        "kernel",
    ]);
    assert_eq!(o.status.code(), Some(10), "{o:?}");
    assert!(!mounted(&mnt));
    // A stray file in the mount point: refused before anything happens (it would hide).
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(mnt.join("stray"), "x").unwrap();
    let o = run(&["unlock", "av", "--passphrase-file", pf]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not empty"));
    std::fs::remove_file(mnt.join("stray")).unwrap();
    // A mount that fails after the key went in (the lower directory is gone) takes
    // the key out of the keyring again.
    let away = home.join("av.lower.away");
    std::fs::rename(&lower, &away).unwrap();
    let o = run(&["unlock", "av", "--passphrase-file", pf]);
    assert!(!o.status.success(), "{o:?}");
    assert!(!mounted(&mnt));
    std::fs::rename(&away, &lower).unwrap();
    let sig = st["sigs"][0].as_str().unwrap();
    let ring = session_keys();
    assert!(!ring.contains(sig), "{ring}");

    let out = ok(&["unlock", "av", "--passphrase-file", pf]);
    assert_eq!(
        out.trim(),
        format!("unlocked av with the userspace backend ({NO_HELPER})")
    );
    std::fs::write(mnt.join("note.txt"), "via fuse\n").unwrap();
    let st: serde_json::Value = serde_json::from_str(&ok(&["status", "av", "--json"])).unwrap();
    assert_eq!(st["active_backend"], "userspace", "{st}");
    ok(&["lock", "av"]);
    assert!(!mounted(&mnt));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["unlock", "av", "--passphrase-file", pf, "--json"])).unwrap();
    assert_eq!(
        json["selection"],
        serde_json::json!({"backend": "userspace", "reason": NO_HELPER})
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("note.txt")).unwrap(),
        "via fuse\n"
    );
    ok(&["lock", "av"]);

    // OpenSSL-key vaults ask the helper too (it answers the kernel's unwrap requests).
    let kp = home.join("keypass");
    std::fs::write(&kp, "key passphrase\n").unwrap();
    let pem = home.join("k.pem");
    ok(&[
        "keygen",
        "--out",
        pem.to_str().unwrap(),
        "--bits",
        "2048",
        "--passphrase-file",
        kp.to_str().unwrap(),
    ]);
    let o = run(&[
        "create",
        "ov",
        "--lower",
        home.join("ov.lower").to_str().unwrap(),
        "--mountpoint",
        home.join("ov").to_str().unwrap(),
        "--keyfile",
        pem.to_str().unwrap(),
        "--key-passphrase-file",
        kp.to_str().unwrap(),
        "--backend",
        "kernel",
    ]);
    assert_eq!(o.status.code(), Some(10), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(NO_HELPER),
        "{o:?}"
    );
}
