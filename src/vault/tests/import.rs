//! Context detection over the kernel-made fixture trees (`tests/fixtures/kernel`,
//! written by the real kernel eCryptfs; expected values from each `info.txt`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use strongroom_vault::context::FilenameEncryption;
use strongroom_vault::import::detect;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kernel")
}

fn info(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("info.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn detects_every_kernel_fixture() {
    let mut checked = 0;
    for name in [
        "aes128",
        "aes192",
        "aes256",
        "aes128-fnek",
        "aes128-fnek-separate",
        "aes256-fnek",
        "aes128-xattr",
    ] {
        let dir = fixtures().join(name);
        let i = info(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        // Copy, then restore the kernel's xattrs (git does not keep them).
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir.join("lower"))
            .arg(&lower)
            .status()
            .unwrap();
        assert!(st.success());
        if dir.join("xattrs.dump").exists() {
            let st = std::process::Command::new("setfattr")
                .arg(format!("--restore={}", dir.join("xattrs.dump").display()))
                .current_dir(&lower)
                .status()
                .expect("setfattr (package attr) is missing");
            assert!(st.success());
        }
        let d = detect(&lower).unwrap();
        let ctx = d.context();
        assert_eq!(ctx.cipher, i["cipher"], "{name}");
        assert_eq!(ctx.key_bytes.to_string(), i["key_bytes"], "{name}");
        assert_eq!(
            ctx.sigs.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
            vec![i["sig"].clone()],
            "{name}"
        );
        assert_eq!(ctx.xattr_metadata, i["xattr"] == "1", "{name}");
        let want = match i["fnek"].as_str() {
            "none" => FilenameEncryption::None,
            "same" => FilenameEncryption::SameToken,
            "separate" => FilenameEncryption::SeparateFnek,
            other => panic!("{name}: fnek={other}"),
        };
        assert_eq!(ctx.filename_encryption, want, "{name}");
        assert_eq!(
            ctx.fnek_sig.map(|s| s.to_hex()).unwrap_or_default(),
            i["fnek_sig"],
            "{name}"
        );
        assert!(d.encrypted_files > 0);
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn ecryptfs_setup_private_layout() {
    // The files ecryptfs-setup-private writes (spec §7.6), with the kernel fixture as ~/.Private.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let src = fixtures().join("aes128-fnek-separate");
    let i = info(&src);
    std::process::Command::new("cp")
        .arg("-a")
        .arg(src.join("lower"))
        .arg(h.join(".Private"))
        .status()
        .unwrap();
    std::fs::create_dir(h.join(".ecryptfs")).unwrap();
    std::fs::write(
        h.join(".ecryptfs/Private.sig"),
        format!("{}\n{}\n", i["sig"], i["fnek_sig"]),
    )
    .unwrap();
    std::fs::write(
        h.join(".ecryptfs/Private.mnt"),
        format!("{}/Private\n", h.display()),
    )
    .unwrap();
    std::fs::write(h.join(".ecryptfs/wrapped-passphrase"), b":\x02").unwrap();
    let s = strongroom_vault::import::private_setup(h).unwrap();
    assert_eq!(s.lower, h.join(".Private"));
    assert_eq!(s.mountpoint, h.join("Private"));
    assert_eq!(s.sig.to_hex(), i["sig"]);
    assert_eq!(s.fnek_sig.unwrap().to_hex(), i["fnek_sig"]);
    assert_eq!(
        s.wrapped_passphrase,
        Some(h.join(".ecryptfs/wrapped-passphrase"))
    );
}
