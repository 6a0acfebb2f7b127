//! The registry against the real filesystem: round trip, concurrent writers, damage.

use std::path::PathBuf;
use std::sync::Arc;

use strongroom_core::kdf::{Sig, DEFAULT_SALT};
use strongroom_vault::context::*;
use strongroom_vault::registry::{Registry, RegistryError};

fn vault(name: &str) -> VaultConfig {
    VaultConfig {
        name: name.into(),
        lower: PathBuf::from(format!("/data/{name}.lower")),
        mountpoint: PathBuf::from(format!("/data/{name}")),
        backend: BackendKind::Userspace,
        context: CryptoContext {
            key_type: KeyType::Passphrase,
            cipher: "aes".into(),
            key_bytes: 16,
            passthrough: false,
            filename_encryption: FilenameEncryption::SeparateFnek,
            xattr_metadata: false,
            sigs: vec!["2a97418edca01eb9".parse().unwrap()],
            fnek_sig: Some("33a5d5e39463d53f".parse().unwrap()),
            salt: DEFAULT_SALT,
        },
        key_source: KeySourceConfig::PemKey {
            keyfile: "keys/k.pem".into(),
            passphrase_file: None,
        },
        key_drive: Some(KeyDrive {
            serial: "4C530001".into(),
            partition_uuid: "1234-ABCD".into(),
            vendor: "Acme".into(),
            model: "Stick".into(),
        }),
        lock: LockSettings::default(),
    }
}

#[test]
fn round_trip_and_file_shape() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::at(dir.path().join("strongroom/vaults.toml"));
    assert!(
        reg.load().unwrap().vaults.is_empty(),
        "a missing file is an empty registry"
    );
    reg.add(vault("work")).unwrap();
    reg.add(vault("photos")).unwrap();
    assert!(matches!(
        reg.add(vault("work")),
        Err(RegistryError::Exists(_))
    ));
    assert_eq!(reg.get("work").unwrap(), vault("work"));

    let text = std::fs::read_to_string(reg.path()).unwrap();
    // Hand-checkable layout: sigs as hex strings, enums as kebab-case words.
    for needle in [
        "[[vault]]",
        "name = \"work\"",
        "sigs = [\"2a97418edca01eb9\"]",
        "fnek_sig = \"33a5d5e39463d53f\"",
        "filename_encryption = \"separate-fnek\"",
        "kind = \"pem-key\"",
        "salt = \"0011223344556677\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(reg.path()).unwrap());
    assert_eq!(mode & 0o777, 0o600);

    reg.modify("work", |v| v.backend = BackendKind::Kernel)
        .unwrap();
    assert_eq!(reg.get("work").unwrap().backend, BackendKind::Kernel);
    reg.remove("photos").unwrap();
    assert!(matches!(reg.get("photos"), Err(RegistryError::NotFound(_))));
    assert_eq!(reg.load().unwrap().vaults.len(), 1);
}

#[test]
fn hand_written_minimal_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaults.toml");
    std::fs::write(
        &path,
        r#"
[[vault]]
name = "old"
lower = "/home/u/.Private"
mountpoint = "/home/u/Private"
[vault.context]
key_type = "tpm"
cipher = "aes"
key_bytes = 16
sigs = ["2A97418EDCA01EB9"]
"#,
    )
    .unwrap();
    let v = Registry::at(&path).get("old").unwrap();
    assert_eq!(
        v.context.main_sig(),
        Some(Sig(*b"\x2a\x97\x41\x8e\xdc\xa0\x1e\xb9"))
    );
    assert_eq!(v.context.salt, DEFAULT_SALT);
    assert_eq!(v.key_source, KeySourceConfig::Prompt);
    assert!(v.lock.wipe_tokens);
    let reason = v.context.key_type.support().unwrap_err();
    assert!(reason.contains("TPM 1.2"), "{reason}");
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("vaults.toml"));
    // Separate Registry handles open the lock file separately, so their flocks conflict
    // exactly as two processes' would.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    Registry::at(path.as_ref())
                        .add(vault(&format!("v{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = Registry::at(path.as_ref()).load().unwrap();
    assert_eq!(all.vaults.len(), 80);
}

#[test]
fn concurrent_processes_lose_nothing() {
    // Two real processes: this test binary re-run with a filter and an env var.
    if let Ok(p) = std::env::var("STRONGROOM_REGISTRY_CHILD") {
        let id = std::process::id();
        for i in 0..15 {
            Registry::at(&p).add(vault(&format!("p{id}-{i}"))).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaults.toml");
    let exe = std::env::current_exe().unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_processes_lose_nothing",
                    "--test-threads=1",
                ])
                .env("STRONGROOM_REGISTRY_CHILD", &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    assert_eq!(Registry::at(&path).load().unwrap().vaults.len(), 45);
}

#[test]
fn corrupt_file_is_named_located_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaults.toml");
    let reg = Registry::at(&path);
    reg.add(vault("work")).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    // Damage line 4 (an unterminated string), as a bad hand edit would.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "lower = \"/data/oops";
    text = lines.join("\n");
    std::fs::write(&path, &text).unwrap();

    let err = reg.load().unwrap_err();
    match &err {
        RegistryError::Corrupt { path: p, line, .. } => {
            assert_eq!(p, &path);
            assert_eq!(*line, 4, "{err}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("vaults.toml:4:"), "{msg}");

    // Any modification fails the same way and leaves the bytes alone.
    assert!(matches!(
        reg.add(vault("new")),
        Err(RegistryError::Corrupt { .. })
    ));
    assert!(matches!(
        reg.remove("work"),
        Err(RegistryError::Corrupt { .. })
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn semantic_damage_is_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaults.toml");
    let reg = Registry::at(&path);
    reg.add(vault("a")).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();

    // Bad sig, unknown key, duplicate name, newer format: each a Corrupt/TooNew, never a panic.
    let bad_sig = good.replace("2a97418edca01eb9", "2a97418edca01eZZ");
    std::fs::write(&path, &bad_sig).unwrap();
    let e = reg.load().unwrap_err();
    assert!(matches!(e, RegistryError::Corrupt { .. }), "{e}");

    std::fs::write(
        &path,
        good.replace("backend =", "colour = \"red\"\nbackend ="),
    )
    .unwrap();
    assert!(matches!(
        reg.load().unwrap_err(),
        RegistryError::Corrupt { .. }
    ));

    let dup = format!("{good}\n{}", &good[good.find("[[vault]]").unwrap()..]);
    std::fs::write(&path, &dup).unwrap();
    let e = reg.load().unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");

    std::fs::write(&path, good.replace("version = 1", "version = 9")).unwrap();
    assert!(matches!(
        reg.load().unwrap_err(),
        RegistryError::TooNew { found: 9, .. }
    ));

    std::fs::write(&path, b"\xff\xfe garbage").unwrap();
    assert!(matches!(
        reg.load().unwrap_err(),
        RegistryError::Corrupt { line: 1, .. }
    ));
}

#[test]
fn names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::at(dir.path().join("vaults.toml"));
    for bad in ["", "a/b", "..", "-x", "tab\there"] {
        assert!(
            matches!(reg.add(vault(bad)), Err(RegistryError::BadName { .. })),
            "{bad:?}"
        );
    }
    assert!(!dir.path().join("vaults.toml").exists() || reg.load().unwrap().vaults.is_empty());
}
