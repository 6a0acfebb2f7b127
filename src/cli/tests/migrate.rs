//! `strongroomctl migrate` through the real parts: real files, the real binary killed
//! with SIGKILL at random points and run again, then every file checked (content, mode,
//! mtime) through a real unlock (FUSE mount) and through `strongroomctl decrypt` of the
//! lower directory; the invariant "plaintext or verified ciphertext, never neither" is
//! checked after every kill with strongroom-core's decryptor (itself checked against
//! kernel-made files), not with the code under test.
//! Needs root (tmpfs mounts for the refusals), /dev/fuse, keyutils.

mod common;
#[path = "../../vault/tests/support/interrupt.rs"]
mod interrupt;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    ctl, ctl_cmd, fails, in_session_keyring, mounted, ok, s, sh, unlock_args, write_file,
};
use interrupt::{kill_at_random, random_u64};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::decrypt_file;
use strongroom_core::filename::FilenameKey;
use strongroom_core::kdf::{derive_skek, Passphrase, Skek, DEFAULT_SALT};
use strongroom_core::keys::KeySet;

const PASS: &str = "migrate me 42 correct horse";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

/// What a tree holds: relative path → (kind, mode, mtime sec, mtime nsec).
type Snap = BTreeMap<String, (Kind, u32, i64, i64)>;

/// Reads a tree as it is on disk (or through a mount). Symlink times are left out
/// when `link_times` is false (`strongroomctl decrypt` does not keep them).
fn snapshot(root: &Path, link_times: bool) -> Snap {
    fn walk(dir: &Path, prefix: &str, link_times: bool, out: &mut Snap) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let kind = if m.is_dir() {
                walk(&e.path(), &format!("{rel}/"), link_times, out);
                Kind::Dir
            } else if m.file_type().is_symlink() {
                Kind::Link(
                    std::fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else {
                Kind::File(std::fs::read(e.path()).unwrap())
            };
            let (mode, t, n) = match kind {
                Kind::Link(_) if !link_times => (0, 0, 0),
                Kind::Link(_) => (0, m.mtime(), m.mtime_nsec()),
                _ => (m.mode() & 0o7777, m.mtime(), m.mtime_nsec()),
            };
            out.insert(rel, (kind, mode, t, n));
        }
    }
    let mut out = Snap::new();
    walk(root, "", link_times, &mut out);
    out
}

fn without_link_times(s: &Snap) -> Snap {
    s.iter()
        .map(|(k, v)| match v.0 {
            Kind::Link(_) => (k.clone(), (v.0.clone(), 0, 0, 0)),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// A tree with files of many sizes and modes, nested and empty directories, a
/// read-only directory, symlinks (relative, absolute, dangling) and a hard link.
fn build(root: &Path, files: usize) {
    std::fs::create_dir_all(root).unwrap();
    for d in ["a/b/c", "docs", "empty", "ro"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let dirs = ["", "a/", "a/b/", "a/b/c/", "docs/", "ro/"];
    let sizes = [0usize, 1, 4095, 4096, 4097, 8192, 12345, 70000, 200_000];
    let modes = [0o644, 0o600, 0o755, 0o400, 0o640];
    for i in 0..files {
        let rel = format!("{}file {i:03}.dat", dirs[i % dirs.len()]);
        let n = sizes[i % sizes.len()] + (random_u64() % 3) as usize;
        let mut data = vec![0u8; n];
        getrandom::getrandom(&mut data).unwrap();
        let p = root.join(&rel);
        std::fs::write(&p, &data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(modes[i % modes.len()]))
            .unwrap();
        sh(&format!(
            "touch -d @{}.{:09} '{}'",
            1_000_000_000 + i as i64 * 3600,
            i * 1000 + 7,
            p.display()
        ));
    }
    let big = root.join("docs/big.iso");
    sh(&format!(
        "head -c 6000000 /dev/urandom > '{}'",
        big.display()
    ));
    std::os::unix::fs::symlink("a/file 001.dat", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("a/abs-link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("a/b/dangling")).unwrap();
    std::fs::hard_link(root.join("file 000.dat"), root.join("docs/hard-link.dat")).unwrap();
    sh(&format!(
        "touch -h -d @1234567890.5 '{0}/rel-link' && chmod 0555 '{0}/ro' && chmod 0750 '{0}' && touch -d @1111111111.25 '{0}/ro' '{0}/a/b' '{0}/empty'",
        root.display()
    ));
}

/// The passphrase's key, derived once (65536 SHA-512 rounds).
fn skek() -> Skek {
    static K: OnceLock<Skek> = OnceLock::new();
    K.get_or_init(|| derive_skek(&Passphrase::new(PASS).unwrap(), &DEFAULT_SALT))
        .clone()
}

fn fnek() -> FilenameKey {
    FilenameKey::new(skek(), CipherSpec::new(Cipher::Aes, 16).unwrap()).unwrap()
}

fn keys() -> KeySet {
    let mut k = KeySet::new();
    k.add_passphrase(skek());
    k
}

fn lower_path(lower: &Path, rel: &str) -> PathBuf {
    let k = fnek();
    let mut p = lower.to_path_buf();
    for part in rel.split('/') {
        p.push(OsStr::from_bytes(&k.encrypt(part.as_bytes()).unwrap()));
    }
    p
}

/// After a kill: every file is there as plaintext (unchanged) or as ciphertext that
/// decrypts to it (or both). Returns how many are already encrypted.
fn check_exactly_somewhere(folder: &Path, lower: &Path, expect: &Snap) -> usize {
    let (k, mut encrypted) = (keys(), 0);
    for (rel, (kind, ..)) in expect {
        let Kind::File(data) = kind else { continue };
        let plain = folder.join(rel);
        let cipher = lower_path(lower, rel);
        let mut found = false;
        if plain.exists() {
            assert_eq!(
                &std::fs::read(&plain).unwrap(),
                data,
                "{rel}: plaintext changed"
            );
            found = true;
        }
        if cipher.exists() {
            let mut out = Vec::new();
            decrypt_file(
                &mut std::fs::File::open(&cipher).unwrap(),
                None,
                &k,
                &mut out,
            )
            .unwrap_or_else(|e| panic!("{rel}: ciphertext unreadable: {e}"));
            assert_eq!(&out, data, "{rel}: ciphertext is not the file");
            found = true;
            encrypted += 1;
        }
        assert!(found, "{rel}: neither plaintext nor ciphertext");
    }
    encrypted
}

fn spawn_logged(mut c: Command, log: &Path) -> std::process::Child {
    let f = std::fs::File::create(log).unwrap();
    c.stdout(Stdio::null()).stderr(f).spawn().unwrap()
}

/// The file with [`PASS`] in `home`.
fn pass_file(home: &Path) -> PathBuf {
    write_file(home, "pass", &format!("{PASS}\n"))
}

/// `migrate resume files` with the passphrase in file `pps`.
fn resume_args(pps: &str) -> [&str; 5] {
    ["migrate", "resume", "files", "--passphrase-file", pps]
}

/// `migrate encrypt FOLDER --name NAME` with the passphrase in file `pps`.
fn encrypt_args<'a>(folder: &'a Path, name: &'a str, pps: &'a str) -> [&'a str; 7] {
    [
        "migrate",
        "encrypt",
        s(folder),
        "--name",
        name,
        "--passphrase-file",
        pps,
    ]
}

/// `strongroomctl ARGS` (a migration of vault "files" with the passphrase in file
/// `pps`), SIGKILLed at random points (`window`, ms; stderr to `log`) and started again,
/// every third time as `migrate resume` (if a journal is there to resume); `after_kill` runs after each kill. When no run finished by itself,
/// a last `resume` finishes it. Returns the number of kills and whether one finished.
fn migrate_killed(
    home: &Path,
    args: &[&str],
    pps: &str,
    window: (u64, u64),
    log: &Path,
    after_kill: impl FnMut(u32),
) -> (u32, bool) {
    // `resume` needs a journal: a round killed while starting up left none.
    let journal = home.join("state/strongroom/migrate-files.journal");
    let (kills, finished) = kill_at_random(
        30,
        window,
        Some(log),
        |round| {
            let args = if round % 3 == 2 && journal.exists() {
                &resume_args(pps)[..]
            } else {
                args
            };
            spawn_logged(ctl_cmd(home, args), log)
        },
        after_kill,
    );
    if !finished {
        ok(home, &resume_args(pps));
    }
    (kills, finished)
}

#[test]
fn encrypt_in_place_killed_resumed_unlocked_then_decrypted_out() {
    let Some(t) = in_session_keyring("encrypt_in_place_killed_resumed_unlocked_then_decrypted_out")
    else {
        return;
    };
    let home = t.path();
    let pp = pass_file(home);
    let pps = s(&pp);
    let folder = home.join("My Files");
    let lower = home.join(".My Files.strongroom");
    // Enough files that the kill window (below) lands among them even on an idle machine.
    build(&folder, 400);
    let expect = snapshot(&folder, true);

    // Kill the real binary at random points; rerun the same command, or `resume`.
    let log = home.join("child.log");
    let journal = home.join("state/strongroom/migrate-files.journal");
    let mut partial = 0;
    let mut unlock_refused = false;
    let (kills, finished) = migrate_killed(
        home,
        &encrypt_args(&folder, "files", pps),
        pps,
        // Short enough that an idle machine (the whole run well under a second) is still
        // killed mid-way; each round resumes where the last one stopped.
        (15, 250),
        &log,
        |_| {
            let n = check_exactly_somewhere(&folder, &lower, &expect);
            let files = expect
                .values()
                .filter(|v| matches!(v.0, Kind::File(_)))
                .count();
            if n > 0 && n < files {
                partial += 1;
            }
            if !unlock_refused && journal.exists() {
                // A vault being migrated does not unlock (it would hide the folder).
                let o = ctl(home, &unlock_args("files", &["--passphrase-file", pps]));
                assert!(!o.status.success());
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(!mounted(&folder));
                // (Killed before the vault was registered: there is nothing to unlock.)
                unlock_refused = err.contains("unfinished migration");
                assert!(unlock_refused || err.contains("no vault named"), "{err}");
            }
        },
    );
    eprintln!("encrypt: {kills} kills, {partial} mid-way, finished by itself: {finished}");
    assert!(
        partial >= 1,
        "no kill landed in the middle of the files: the test proved nothing ({kills} kills); {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        unlock_refused,
        "unlocking during the migration was never tried"
    );
    assert!(!journal.exists());
    // The folder is empty (ready to be the mount point), no temporary file is left.
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!((mode(&folder), mode(&lower)), (0o750, 0o750));
    assert!(!sh(&format!("find '{}'", lower.display())).contains(".strongroom-migrate.tmp"));
    let err = fails(home, &resume_args(pps), 2);
    assert!(err.contains("no unfinished migration"), "{err}");

    // Independent reader 1: `strongroomctl decrypt` of the lower directory.
    let out1 = home.join("out1");
    ok(
        home,
        &[
            "decrypt",
            "--passphrase-file",
            pps,
            "--fnek",
            lower.to_str().unwrap(),
            out1.to_str().unwrap(),
        ],
    );
    assert_eq!(snapshot(&out1, false), without_link_times(&expect));

    // Independent reader 2: the FUSE mount on the folder itself.
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    ok(home, &unlock_args("files", &["--passphrase-file", pps]));
    let _unmount = Unmount(&folder);
    assert!(mounted(&folder));
    let seen = snapshot(&folder, true);
    ok(home, &["lock", "files", "--keyring", "session"]);
    assert_eq!(seen, expect);

    // Decrypt out, killed and resumed, removing the vault at the end.
    let out = home.join("plain again");
    let os_ = out.to_str().unwrap();
    let (kills, finished) = migrate_killed(
        home,
        &[
            "migrate",
            "decrypt",
            "files",
            "--out",
            os_,
            "--remove-vault",
            "--passphrase-file",
            pps,
        ],
        pps,
        (5, 120),
        &log,
        |_| {
            // Whatever is in place is complete and verified; the vault is intact
            // until the very end.
            if out.exists() {
                for (rel, v) in snapshot(&out, true) {
                    // The one in flight has a temporary name; everything else is final.
                    let in_flight = rel.ends_with(".strongroom-migrate.tmp");
                    if matches!(v.0, Kind::File(_) | Kind::Link(_)) && !in_flight {
                        assert_eq!(Some(&v), expect.get(&rel), "{rel}");
                    }
                }
            }
            if lower.exists() && journal.exists() {
                let j = std::fs::read_to_string(&journal).unwrap();
                if !j.contains("\"removing\": true") {
                    assert_eq!(
                        check_exactly_somewhere(Path::new("/nonexistent"), &lower, &expect),
                        expect
                            .values()
                            .filter(|v| matches!(v.0, Kind::File(_)))
                            .count()
                    );
                }
            }
        },
    );
    eprintln!("decrypt: {kills} kills, finished by itself: {finished}");
    assert!(kills >= 1, "never interrupted: the test proved nothing");
    assert_eq!(snapshot(&out, true), expect);
    assert!(
        !lower.exists(),
        "the vault's lower directory was not removed"
    );
    assert!(!ok(home, &["list"]).contains("files"));
    assert!(!journal.exists());
}

#[test]
fn a_file_written_during_the_run_stays_plain_and_is_redone() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pp = pass_file(home);
    let pps = s(&pp);
    let folder = home.join("busy");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a small file"), b"small").unwrap();
    let big = folder.join("growing.log");
    sh(&format!(
        "head -c 150000000 /dev/zero > '{}'",
        big.display()
    ));
    let lower = home.join(".busy.strongroom");
    let mut child = ctl_cmd(home, &encrypt_args(&folder, "busy", pps))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Append while its ciphertext is being written (the temporary file grows).
    let tmp = lower.join(".strongroom-migrate.tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "never saw the big file in flight"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the file was changed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    sh(&format!("echo appended >> '{}'", big.display()));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("growing.log") && err.contains("changed"),
        "{err}"
    );
    // Kept as plaintext with the new content, no ciphertext of it.
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 150_000_000 + 9);
    assert!(!lower_path(&lower, "growing.log").exists());
    // Run again: now it goes through, with the new content.
    ok(home, &encrypt_args(&folder, "busy", pps));
    assert!(!big.exists());
    let mut plain = Vec::new();
    decrypt_file(
        &mut std::fs::File::open(lower_path(&lower, "growing.log")).unwrap(),
        None,
        &keys(),
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain.len(), 150_000_000 + 9);
    assert!(plain.ends_with(b"\nappended\n") || plain.ends_with(b"\0appended\n"));
}

#[test]
fn refusals_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pp = pass_file(home);
    let pps = s(&pp);
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let small = home.join("small");
    std::fs::create_dir(&small).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=3m none '{}'",
        small.display()
    ));
    let _g = Umount(small.clone());
    let refused = |args: &[&str], what: &str| {
        let o = ctl(home, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(!ok(home, &["list"]).contains("v"), "a vault was registered");
        assert!(!home.join("state/strongroom/migrate-v.journal").exists());
    };
    // A mount point.
    refused(&encrypt_args(&small, "v", pps), "mount point");
    // Not enough room for the largest file.
    let d = small.join("d");
    std::fs::create_dir(&d).unwrap();
    sh(&format!(
        "head -c 2000000 /dev/urandom > '{}/f'",
        d.display()
    ));
    refused(&encrypt_args(&d, "v", pps), "not enough free space");
    assert_eq!(std::fs::metadata(d.join("f")).unwrap().len(), 2_000_000);
    // The lower directory on another file system.
    let f = home.join("f");
    std::fs::create_dir(&f).unwrap();
    std::fs::write(f.join("x"), b"x").unwrap();
    let other = small.join("lower");
    refused(
        &[&encrypt_args(&f, "v", pps)[..], &["--lower", s(&other)]].concat(),
        "another file system",
    );
    // A FIFO cannot be encrypted.
    sh(&format!("mkfifo '{}/pipe'", f.display()));
    refused(&encrypt_args(&f, "v", pps), "FIFO");
    assert_eq!(std::fs::read(f.join("x")).unwrap(), b"x");
    assert!(!home.join(".f.strongroom").exists());
}
