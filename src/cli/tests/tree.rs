//! `strongroomctl encrypt | decrypt | stat | find` as a user runs them: every cipher
//! and key size through a real tree, kernel-made fixtures, and damaged trees that must
//! fail per file (exit 1) while everything intact is still decrypted.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PASS: &str = "kernel-oracle test vectors";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn ctl(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strongroomctl"));
    for a in args {
        c.arg(a);
    }
    // A fresh HOME: no ~/.ecryptfsrc of the machine's user changes the salt.
    c.env("HOME", "/nonexistent")
        .output()
        .expect("run strongroomctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tree with the sizes around extent boundaries, nesting, odd names and symlinks.
fn plain_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("f4095", 4095),
        ("f4096", 4096),
        ("f4097", 4097),
        ("f65537", 65537),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(root.join(name), data).unwrap();
    }
    fs::write(root.join("dir/sub/nested.txt"), "nested\n").unwrap();
    fs::write(root.join("dir/ünïcödé name.txt"), "unicode\n").unwrap();
    fs::write(root.join("dir").join("N".repeat(143)), "longest name\n").unwrap();
    symlink("sub/nested.txt", root.join("dir/rel-link")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn every_cipher_round_trips_with_names_and_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    plain_tree(&plain);
    let pass = tmp.path().join("pass");
    fs::write(&pass, format!("{PASS}\n")).unwrap();
    let cases: &[(&str, usize, &str)] = &[
        ("aes", 16, "--fnek"),
        ("aes", 24, "--fnek-separate"),
        ("aes", 32, ""),
        ("blowfish", 16, "--fnek"),
        ("blowfish", 32, ""),
        ("blowfish", 56, "--fnek-separate"),
        ("des3_ede", 24, "--fnek"),
        ("cast5", 16, "--fnek"),
        ("cast6", 16, ""),
        ("cast6", 32, "--fnek"),
        ("twofish", 16, "--fnek-separate"),
        ("twofish", 32, "--fnek"),
    ];
    for &(cipher, kb, names) in cases {
        let case = format!("{cipher}-{kb}{names}");
        let lower = tmp.path().join(format!("lower-{case}"));
        let back = tmp.path().join(format!("back-{case}"));
        let kb_s = kb.to_string();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"encrypt",
            &"--passphrase-file",
            &pass,
            &"--cipher",
            &cipher,
            &"--key-bytes",
            &kb_s,
        ];
        if !names.is_empty() {
            args.push(&names);
        }
        args.push(&plain);
        args.push(&lower);
        let o = ctl(&args);
        assert!(o.status.success(), "{case}: encrypt failed: {}", stderr(&o));
        // The lower file layout the kernel expects: 8192 header bytes + whole extents.
        let one = if names.is_empty() {
            lower.join("f4097")
        } else {
            fs::read_dir(&lower)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| fs::symlink_metadata(p).unwrap().len() == 8192 + 2 * 4096)
                .expect("f4097's lower file")
        };
        assert_eq!(fs::metadata(&one).unwrap().len(), 8192 + 2 * 4096, "{case}");
        if !names.is_empty() {
            assert!(
                fs::read_dir(&lower).unwrap().all(|e| e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ECRYPTFS_FNEK_ENCRYPTED.")),
                "{case}: plain name in lower tree"
            );
        }
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"decrypt", &"--passphrase-file", &pass];
        if !names.is_empty() {
            args.push(&names);
        }
        args.push(&lower);
        args.push(&back);
        let o = ctl(&args);
        assert!(o.status.success(), "{case}: decrypt failed: {}", stderr(&o));
        assert_same_tree(&plain, &back);
        let st = ctl(&[&"stat", &"--json", &one]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(v["packets"][0]["cipher"], cipher, "{case}");
        assert_eq!(v["packets"][0]["key_bytes"], kb, "{case}");
        assert_eq!(v["encrypted_filenames"], !names.is_empty(), "{case}");
    }
}

#[test]
fn kernel_made_trees_decrypt() {
    let k = fixtures().join("kernel");
    let tmp = tempfile::tempdir().unwrap();
    for (set, mode) in [
        ("aes128", ""),
        ("aes192", ""),
        ("aes256", ""),
        ("aes128-fnek", "--fnek"),
        ("aes256-fnek", "--fnek"),
        ("aes128-fnek-separate", "--fnek-separate"),
    ] {
        let out = tmp.path().join(set);
        let pass = k.join("passphrase.txt");
        let lower = k.join(set).join("lower");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"decrypt", &"--passphrase-file", &pass];
        if !mode.is_empty() {
            args.push(&mode);
        }
        args.push(&lower);
        args.push(&out);
        let o = ctl(&args);
        assert!(o.status.success(), "{set}: {}", stderr(&o));
        assert_same_tree(&k.join("plain"), &out);
    }
}

#[test]
fn damaged_files_fail_one_by_one_and_the_rest_is_decrypted() {
    let k = fixtures().join("kernel");
    let bad = fixtures().join("bad");
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    Command::new("cp")
        .arg("-a")
        .arg(k.join("aes128/lower"))
        .arg(&lower)
        .status()
        .unwrap();
    let damaged: Vec<String> = fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.contains('.') && n != "names.tsv")
        .collect();
    assert!(damaged.len() >= 10, "bad fixtures missing: {damaged:?}");
    for n in &damaged {
        fs::copy(bad.join(n), lower.join(format!("zz-{n}"))).unwrap();
    }
    let out = tmp.path().join("out");
    let o = ctl(&[
        &"decrypt",
        &"--passphrase-file",
        &k.join("passphrase.txt"),
        &lower,
        &out,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for n in &damaged {
        assert!(
            err.contains(&format!("zz-{n}: ")),
            "{n} not reported:\n{err}"
        );
        assert!(
            !out.join(format!("zz-{n}")).exists(),
            "{n}: partial output left behind"
        );
    }
    // Everything intact is still there, byte for byte.
    for e in fs::read_dir(k.join("plain")).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_file() {
            assert_eq!(
                fs::read(&p).unwrap(),
                fs::read(out.join(e.file_name())).unwrap(),
                "{}",
                p.display()
            );
        }
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn wrong_passphrase_and_undecodable_names_are_reported() {
    let k = fixtures().join("kernel");
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, "not the passphrase\n").unwrap();
    let o = ctl(&[
        &"decrypt",
        &"--passphrase-file",
        &wrong,
        &k.join("aes128/lower"),
        &tmp.path().join("o1"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong passphrase?"), "{}", stderr(&o));

    // A plain name and a name from another FNEK among FNEK-encrypted ones.
    let lower = tmp.path().join("lower");
    Command::new("cp")
        .arg("-a")
        .arg(k.join("aes128-fnek/lower"))
        .arg(&lower)
        .status()
        .unwrap();
    fs::write(lower.join("lost+found"), "x").unwrap();
    let o = ctl(&[
        &"decrypt",
        &"--passphrase-file",
        &k.join("passphrase.txt"),
        &"--fnek",
        &lower,
        &tmp.path().join("o2"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("lost+found: cannot decrypt the name: not an encrypted name"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(tmp.path().join("o2/text.txt")).unwrap(),
        fs::read(k.join("plain/text.txt")).unwrap()
    );
}

#[test]
fn find_translates_both_ways_like_the_kernel() {
    let k = fixtures().join("kernel");
    let map = fs::read_to_string(k.join("aes128-fnek/names.map")).unwrap();
    let pass = k.join("passphrase.txt");
    for line in map.lines().filter(|l| !l.is_empty()) {
        let (lower, plain) = line.split_once('\t').unwrap();
        let o = ctl(&[&"find", &"--passphrase-file", &pass, &plain]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim_end(),
            lower,
            "encrypting {plain}"
        );
        let o = ctl(&[&"find", &"--passphrase-file", &pass, &lower]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim_end(),
            plain,
            "decrypting {lower}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = tmp.path().join("p");
    fs::write(&pass, "x\n").unwrap();
    let o = ctl(&[
        &"encrypt",
        &"--passphrase-file",
        &pass,
        &"--cipher",
        &"aes",
        &"--key-bytes",
        &"20",
        &tmp.path(),
        &tmp.path().join("o"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = ctl(&[
        &"decrypt",
        &"--passphrase-file",
        &pass,
        &tmp.path(),
        &tmp.path().join("inside"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = ctl(&[&"decrypt", &"--fnek", &"--fnek-separate", &tmp.path(), &"x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
