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

/// The openssl command line with `args`, fed `input`; its stdout.
fn openssl(args: &[&dyn AsRef<std::ffi::OsStr>], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("openssl");
    for a in args {
        c.arg(a);
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {:?} failed", c.get_args());
    out.stdout
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OpenSSL RSA keys (tag 1): a key from `keygen`, a tree encrypted to it and decrypted
/// with it. The openssl command line checks a file on its own, from the spec's layout:
/// RSA-OAEP unwraps the FEK payload, AES-128-CBC with the §4.3 IV decrypts extent 0.
#[test]
fn openssl_keys_round_trip_and_openssl_reads_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    plain_tree(&plain);
    let kp = tmp.path().join("kp");
    fs::write(&kp, "key passphrase\n").unwrap();
    let pem = tmp.path().join("k.pem");
    let keygen = |out: &Path, bits: &str| {
        let o = ctl(&[
            &"keygen",
            &"--out",
            &out,
            &"--bits",
            &bits,
            &"--passphrase-file",
            &kp,
        ]);
        assert!(o.status.success(), "keygen: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let sig = keygen(&pem, "2048");
    let with_key = |cmd: &str, key: &Path, pass: &Path, from: &Path, to: &Path| {
        ctl(&[
            &cmd,
            &"--keyfile",
            &key,
            &"--key-passphrase-file",
            &pass,
            &from,
            &to,
        ])
    };
    let lower = tmp.path().join("lower");
    let o = with_key("encrypt", &pem, &kp, &plain, &lower);
    assert!(o.status.success(), "encrypt: {}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("ecryptfs_sig={sig},")),
        "{}",
        stderr(&o)
    );
    let back = tmp.path().join("back");
    let o = with_key("decrypt", &pem, &kp, &lower, &back);
    assert!(o.status.success(), "decrypt: {}", stderr(&o));
    assert_same_tree(&plain, &back);

    // Spec §2.5: at offset 26 a tag 1 packet, body 10 + 256 (2-byte length c0 4a),
    // version 3, the key's sig, algorithm RSA, the EFEK, then the 0x00 terminator.
    let raw = fs::read(lower.join("f4097")).unwrap();
    assert_eq!(raw.len(), 8192 + 2 * 4096);
    assert_eq!(&raw[26..30], &[0x01, 0xc0, 0x4a, 0x03]);
    assert_eq!(hex(&raw[30..38]), sig);
    assert_eq!(raw[38], 0x01);
    assert_eq!(raw[39 + 256], 0x00);
    let passin = format!("file:{}", kp.display());
    let payload = openssl(
        &[
            &"pkeyutl",
            &"-decrypt",
            &"-inkey",
            &pem,
            &"-passin",
            &passin,
            &"-pkeyopt",
            &"rsa_padding_mode:oaep",
        ],
        &raw[39..39 + 256],
    );
    // §8: cipher code (0x07 = AES) || FEK || sum of the FEK bytes, 16-bit BE.
    assert_eq!((payload.len(), payload[0]), (1 + 16 + 2, 0x07));
    let fek = &payload[1..17];
    let sum = fek.iter().map(|&b| u32::from(b)).sum::<u32>() % 65536;
    assert_eq!(
        u32::from(u16::from_be_bytes([payload[17], payload[18]])),
        sum
    );
    let md5 = |data: &[u8]| openssl(&[&"dgst", &"-md5", &"-binary"], data);
    let mut src = md5(fek);
    src.extend_from_slice(b"0");
    src.resize(32, 0);
    let iv0 = md5(&src);
    let extent0 = openssl(
        &[
            &"enc",
            &"-d",
            &"-aes-128-cbc",
            &"-nopad",
            &"-K",
            &hex(fek),
            &"-iv",
            &hex(&iv0),
        ],
        &raw[8192..8192 + 4096],
    );
    assert_eq!(extent0, fs::read(plain.join("f4097")).unwrap()[..4096]);

    // A wrong key passphrase: exit 3, like a wrong vault passphrase.
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, "not the key passphrase\n").unwrap();
    let o = with_key("decrypt", &pem, &wrong, &lower, &tmp.path().join("w"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    // Another key: every file fails (exit 1), naming the key that was given.
    let other = tmp.path().join("other.pem");
    let other_sig = keygen(&other, "1024");
    let o = with_key("decrypt", &other, &kp, &lower, &tmp.path().join("o"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("wrong key file? it gives key {other_sig}")),
        "{}",
        stderr(&o)
    );
    // Names are never encrypted with an OpenSSL key (the kernel takes no such FNEK).
    let o = ctl(&[
        &"encrypt",
        &"--keyfile",
        &pem,
        &"--key-passphrase-file",
        &kp,
        &"--fnek",
        &plain,
        &tmp.path().join("n"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
