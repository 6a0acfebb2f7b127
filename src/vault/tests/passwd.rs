//! Passphrase change killed at random points (SIGKILL of a real child process), plus a
//! simulated torn header write, then resumed: afterwards every file and name opens with
//! the new passphrase only. Verification uses strongroom-core's decryptor (itself
//! checked against kernel-made files), not the code under test.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;
use support::interrupt::kill_at_random;

use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::{decrypt_file, encrypt_file, WriteContext};
use strongroom_core::filename::FilenameKey;
use strongroom_core::kdf::{derive_skek, Passphrase, DEFAULT_SALT, FNEK_SALT};
use strongroom_core::keys::{KeySet, WrappingKey};
use strongroom_vault::context::*;
use strongroom_vault::passwd::{change_passphrase, Journal};

const OLD: &str = "old passphrase 1";
const NEW: &str = "new passphrase 2";

fn ctx(fnek: FilenameEncryption, xattr: bool) -> CryptoContext {
    let p = Passphrase::new(OLD).unwrap();
    let sig = derive_skek(&p, &DEFAULT_SALT).sig();
    CryptoContext {
        key_type: KeyType::Passphrase,
        cipher: "aes".into(),
        key_bytes: 16,
        passthrough: false,
        filename_encryption: fnek,
        xattr_metadata: xattr,
        sigs: vec![sig],
        fnek_sig: match fnek {
            FilenameEncryption::None => None,
            FilenameEncryption::SameToken => Some(sig),
            FilenameEncryption::SeparateFnek => Some(derive_skek(&p, &FNEK_SALT).sig()),
        },
        salt: DEFAULT_SALT,
    }
}

fn fnek_of(pass: &str, mode: FilenameEncryption) -> FilenameKey {
    let salt = if mode == FilenameEncryption::SeparateFnek {
        FNEK_SALT
    } else {
        DEFAULT_SALT
    };
    FilenameKey::new(
        derive_skek(&Passphrase::new(pass).unwrap(), &salt),
        CipherSpec::new(Cipher::Aes, 16).unwrap(),
    )
    .unwrap()
}

fn content(rel: &str) -> Vec<u8> {
    let n = rel.len() * 997 % 20000;
    rel.bytes().cycle().take(n).collect()
}

/// Plain relative paths of the test tree (directories end in '/').
fn plan() -> Vec<String> {
    let mut v = vec![];
    for d in ["docs/", "docs/deep/", "photos/"] {
        v.push(d.to_string());
    }
    for i in 0..40 {
        let dir = ["", "docs/", "docs/deep/", "photos/"][i % 4];
        v.push(format!("{dir}file-{i}.txt"));
    }
    v
}

/// Writes the tree with the old key; returns plain path → lower path.
fn build(lower: &Path, c: &CryptoContext) {
    let spec = CipherSpec::new(Cipher::Aes, 16).unwrap();
    let skek = derive_skek(&Passphrase::new(OLD).unwrap(), &DEFAULT_SALT);
    let wctx = WriteContext {
        spec,
        keys: vec![WrappingKey::Passphrase {
            skek,
            salt: DEFAULT_SALT,
        }],
        xattr: c.xattr_metadata,
        fnek: c.filename_encryption != FilenameEncryption::None,
    };
    let fk = (c.filename_encryption != FilenameEncryption::None)
        .then(|| fnek_of(OLD, c.filename_encryption));
    let enc = |rel: &str| -> PathBuf {
        let mut p = lower.to_path_buf();
        for part in rel.trim_end_matches('/').split('/') {
            match &fk {
                Some(k) => p.push(OsStr::from_bytes(&k.encrypt(part.as_bytes()).unwrap())),
                None => p.push(part),
            }
        }
        p
    };
    for rel in plan() {
        let lp = enc(&rel);
        if rel.ends_with('/') {
            std::fs::create_dir(&lp).unwrap();
            continue;
        }
        let mut f = std::fs::File::create(&lp).unwrap();
        let x = encrypt_file(&wctx, &mut &content(&rel)[..], &mut f).unwrap();
        if let Some(x) = x {
            xattr::set(&lp, "user.ecryptfs", &x).unwrap();
        }
    }
    if let Some(k) = &fk {
        // An encrypted symlink (target encrypted like a name).
        let target = k.encrypt(b"file-0.txt").unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), enc("link")).unwrap();
    }
}

/// Decrypts the whole tree with one passphrase; plain path → contents.
fn read_all(
    lower: &Path,
    pass: &str,
    mode: FilenameEncryption,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut keys = KeySet::new();
    keys.add_passphrase(derive_skek(&Passphrase::new(pass).unwrap(), &DEFAULT_SALT));
    let fk = (mode != FilenameEncryption::None).then(|| fnek_of(pass, mode));
    let mut out = BTreeMap::new();
    let mut stack = vec![(lower.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let raw = e.file_name();
            let name = match &fk {
                Some(k) => String::from_utf8(
                    k.decrypt(raw.as_bytes())
                        .map_err(|e| format!("name {raw:?}: {e}"))?,
                )
                .unwrap(),
                None => raw.to_string_lossy().into_owned(),
            };
            let rel = format!("{prefix}{name}");
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push((e.path(), format!("{rel}/")));
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                let k = fk.as_ref().unwrap();
                let plain = k
                    .decrypt(t.as_os_str().as_bytes())
                    .map_err(|e| format!("link target: {e}"))?;
                out.insert(rel, plain);
            } else {
                let x = xattr::get(e.path(), "user.ecryptfs").unwrap();
                let mut f = std::fs::File::open(e.path()).unwrap();
                let mut plain = Vec::new();
                decrypt_file(&mut f, x.as_deref(), &keys, &mut plain)
                    .map_err(|err| format!("{rel}: {err}"))?;
                out.insert(rel, plain);
            }
        }
    }
    Ok(out)
}

fn expected(with_link: bool) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<_, _> = plan()
        .into_iter()
        .filter(|r| !r.ends_with('/'))
        .map(|r| (r.clone(), content(&r)))
        .collect();
    if with_link {
        m.insert("link".into(), b"file-0.txt".to_vec());
    }
    m
}

fn run_passwd(
    lower: &Path,
    journal: &Path,
    c: &CryptoContext,
    delay: Duration,
) -> Result<(), String> {
    let r = change_passphrase(
        lower,
        c,
        &Passphrase::new(OLD).unwrap(),
        &Passphrase::new(NEW).unwrap(),
        journal,
        &mut |_| std::thread::sleep(delay),
    );
    r.map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn passwd_child() {
    let Ok(spec) = std::env::var("STRONGROOM_PASSWD_CHILD") else {
        return;
    };
    let (lower, journal) = spec.split_once('\n').unwrap();
    let c = ctx(FilenameEncryption::SeparateFnek, false);
    run_passwd(
        Path::new(lower),
        Path::new(journal),
        &c,
        Duration::from_millis(3),
    )
    .unwrap();
}

#[test]
fn killed_and_torn_then_resumed() {
    if std::env::var_os("STRONGROOM_PASSWD_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    let journal = dir.path().join("state/passwd-test.journal");
    let mode = FilenameEncryption::SeparateFnek;
    let c = ctx(mode, false);
    build(&lower, &c);
    assert_eq!(read_all(&lower, OLD, mode).unwrap(), expected(true));

    let exe = std::env::current_exe().unwrap();
    let mut torn = 0;
    // The KDF alone takes a while; kill somewhere after it, at a random point.
    let (kills, finished) = kill_at_random(
        40,
        (150, 400),
        None,
        |_| {
            Command::new(&exe)
                .args(["--exact", "passwd_child", "--nocapture"])
                .env(
                    "STRONGROOM_PASSWD_CHILD",
                    format!("{}\n{}", lower.display(), journal.display()),
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        },
        |kills| {
            // Every other kill, pretend the power went out mid-write: tear the header
            // of the file in flight (the journal holds its original block).
            if let Some(j) = Journal::load(&journal).unwrap() {
                if let Some(inf) = j.inflight.filter(|_| kills % 2 == 0) {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&inf.path)
                        .unwrap();
                    f.write_all_at(&[0xAA; 64], 8).unwrap();
                    torn += 1;
                }
            }
        },
    );
    if !finished {
        run_passwd(&lower, &journal, &c, Duration::ZERO).unwrap();
    }
    assert!(kills >= 1, "never interrupted: the test proved nothing");
    eprintln!("kills: {kills}, torn headers: {torn}");
    assert!(!journal.exists(), "journal left behind");
    assert_eq!(read_all(&lower, NEW, mode).unwrap(), expected(true));
    let old = read_all(&lower, OLD, mode);
    assert!(old.is_err(), "the old passphrase still opens the vault");
    // Not a single file opens with the old key (names aside).
    let mut keys = KeySet::new();
    keys.add_passphrase(derive_skek(&Passphrase::new(OLD).unwrap(), &DEFAULT_SALT));
    for e in walk_files(&lower) {
        let mut f = std::fs::File::open(&e).unwrap();
        assert!(
            decrypt_file(&mut f, None, &keys, &mut Vec::new()).is_err(),
            "{} opens with the old key",
            e.display()
        );
    }
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk_files(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn xattr_headers_and_same_token_names() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    if xattr::set(&lower, "user.strongroom-probe", b"1").is_err() {
        panic!("the temp directory's file system has no user xattrs; run on ext4/tmpfs");
    }
    let mode = FilenameEncryption::SameToken;
    let c = ctx(mode, true);
    build(&lower, &c);
    assert_eq!(read_all(&lower, OLD, mode).unwrap(), expected(true));
    let journal = dir.path().join("j");
    run_passwd(&lower, &journal, &c, Duration::ZERO).unwrap();
    assert_eq!(read_all(&lower, NEW, mode).unwrap(), expected(true));
    assert!(read_all(&lower, OLD, mode).is_err());
    // Running again (as a resume would) finds every file done and changes nothing.
    run_passwd(&lower, &journal, &c, Duration::ZERO).unwrap();
    assert_eq!(read_all(&lower, NEW, mode).unwrap(), expected(true));
}
