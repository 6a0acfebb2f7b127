//! `strongroomctl mount` / `umount` end to end (real FUSE, real keyring): each test runs
//! the commands under `keyctl session -`, so tokens land in a private session keyring
//! and never in the machine's `@u`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use strongroom_core::file::decrypt_file;
use strongroom_core::header::Header;
use strongroom_core::kdf::{derive_skek, Passphrase, DEFAULT_SALT};
use strongroom_core::keys::KeySet;

const BIN: &str = env!("CARGO_BIN_EXE_strongroomctl");
const PASS: &str = "crash test passphrase";

struct Dirs {
    _t: tempfile::TempDir,
    root: PathBuf,
    lower: PathBuf,
    mnt: PathBuf,
    pass: PathBuf,
}

fn dirs() -> Dirs {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_owned();
    let (lower, mnt, pass) = (root.join("lower"), root.join("mnt"), root.join("pass"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(&pass, format!("{PASS}\n")).unwrap();
    Dirs {
        _t: t,
        root,
        lower,
        mnt,
        pass,
    }
}

/// `strongroomctl ARGS` in a fresh private session keyring.
fn ctl(args: &[&str]) -> Output {
    let mut cmd = Command::new("keyctl");
    cmd.args(["session", "-", BIN])
        .args(args)
        .env("XDG_STATE_HOME", std::env::temp_dir());
    cmd.output().unwrap()
}

fn mount(d: &Dirs, extra: &[&str]) -> Output {
    let mut a = vec![
        "mount",
        "--keyring",
        "session",
        "--passphrase-file",
        d.pass.to_str().unwrap(),
        "--key-bytes",
        "32",
    ];
    a.extend_from_slice(extra);
    a.push(d.lower.to_str().unwrap());
    a.push(d.mnt.to_str().unwrap());
    ctl(&a)
}

fn umount(mnt: &Path) {
    let o = ctl(&["umount", mnt.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn keys() -> KeySet {
    let mut k = KeySet::new();
    k.add_passphrase(derive_skek(&Passphrase::new(PASS).unwrap(), &DEFAULT_SALT));
    k
}

#[test]
fn mount_write_umount_and_error_codes() {
    let d = dirs();
    let o = mount(&d, &["--fnek"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::write(d.mnt.join("hello.txt"), b"hello world").unwrap();
    // Mounting again on a mount point: busy.
    let again = mount(&d, &["--fnek"]);
    assert_eq!(
        again.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    umount(&d.mnt);
    let o = ctl(&["umount", d.mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(8));
    // Wrong passphrase: refused, nothing mounted.
    fs::write(&d.pass, "not the passphrase\n").unwrap();
    let o = mount(&d, &["--fnek"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong passphrase"));
    assert_eq!(fs::read_dir(&d.mnt).unwrap().count(), 0);
    // Non-empty mount point.
    fs::write(&d.pass, format!("{PASS}\n")).unwrap();
    fs::write(d.mnt.join("stray"), b"").unwrap();
    let o = mount(&d, &["--fnek"]);
    assert_eq!(o.status.code(), Some(6));
    fs::remove_file(d.mnt.join("stray")).unwrap();
    // The seed's option string.
    let opts = format!(
        "key=passphrase:passfile={},ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_passthrough=no,no_sig_cache,ecryptfs_enable_filename_crypto=y",
        d.pass.display()
    );
    let o = ctl(&[
        "mount",
        "--keyring",
        "session",
        "-o",
        &opts,
        d.lower.to_str().unwrap(),
        d.mnt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(d.mnt.join("hello.txt")).unwrap(), b"hello world");
    umount(&d.mnt);
}

/// `kill -9` of the daemon while writers run: every lower file still parses, decrypts
/// to a prefix of what was written, and keeps at least what was fsync'ed.
#[test]
fn kill_9_during_writes_keeps_fsynced_data() {
    let d = dirs();
    let o = mount(&d, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = daemon_pid(&d.mnt).expect("daemon pid");
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let path = d.mnt.join(format!("w{w}"));
            std::thread::spawn(move || write_until_error(&path, w as u8))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: plain kill(2) of the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let synced: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&d.mnt)
        .status();
    let keys = keys();
    for (w, &fsynced) in synced.iter().enumerate() {
        let lower = d.lower.join(format!("w{w}"));
        let mut head = vec![0u8; 4096];
        let n = std::os::unix::fs::FileExt::read_at(&File::open(&lower).unwrap(), &mut head, 0)
            .unwrap();
        Header::parse(&head[..n]).unwrap_or_else(|e| panic!("w{w}: header does not parse: {e}"));
        let mut out = Vec::new();
        decrypt_file(&mut File::open(&lower).unwrap(), None, &keys, &mut out).unwrap();
        assert!(
            out.len() as u64 >= fsynced,
            "w{w}: {} bytes, {fsynced} were fsync'ed",
            out.len()
        );
        assert!(
            out == pattern(0, out.len(), w as u8),
            "w{w}: content is not what was written"
        );
    }
    assert!(
        synced.iter().all(|&s| s > 0),
        "writers made no progress: {synced:?}"
    );
    let _ = fs::remove_dir_all(&d.root);
}

fn pattern(from: usize, len: usize, seed: u8) -> Vec<u8> {
    (from..from + len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[1] ^ seed)
        .collect()
}

/// Appends pattern data in odd-sized chunks, fsyncing every third; returns the bytes
/// known durable when the mount went away.
fn write_until_error(path: &Path, seed: u8) -> u64 {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .unwrap();
    let (mut pos, mut synced, mut i) = (0usize, 0u64, 0u32);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let len = 1000 + (i as usize * 7919) % 70000;
        if f.write_all(&pattern(pos, len, seed)).is_err() {
            break;
        }
        pos += len;
        i += 1;
        if i % 3 == 0 {
            if f.sync_all().is_err() {
                break;
            }
            synced = pos as u64;
        }
    }
    synced
}

/// The `serve` process for a mount point, from /proc.
fn daemon_pid(mnt: &Path) -> Option<i32> {
    let want = mnt.to_str()?.as_bytes().to_vec();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.get(1) == Some(&&b"serve"[..]) && args.contains(&&want[..]) {
            return Some(pid);
        }
    }
    None
}
