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
    // A file held open: busy (after a short grace), naming the process that holds it.
    let held = File::open(d.mnt.join("hello.txt")).unwrap();
    let o = ctl(&["umount", d.mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    let me = format!("(pid {})", std::process::id());
    assert!(err.contains(&me) && err.contains("hello.txt"), "{err}");
    drop(held);
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

/// A daemon asked to stop (SIGTERM at logout, SIGINT, SIGHUP) unmounts and unlinks its
/// keys instead of leaving a dead mount; what was written is all in the lower file.
#[test]
fn stop_signals_unmount_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let d = dirs();
        // The daemon and this check share one session keyring.
        let script = format!(
            "{BIN} mount --keyring session -o ecryptfs_unlink_sigs --passphrase-file {p} --key-bytes 32 {l} {m} && \
             head -c 100000 /dev/urandom > {r}/plain && cp {r}/plain {m}/f && \
             kill -{sig} $(pgrep -f -- '^{BIN} serve .*{m}$') && \
             for i in $(seq 100); do mountpoint -q {m} || break; sleep 0.1; done; \
             mountpoint -q {m} && echo STILL-MOUNTED; \
             sleep 0.5; keyctl show @s",
            p = d.pass.display(),
            l = d.lower.display(),
            m = d.mnt.display(),
            r = d.root.display(),
        );
        let o = Command::new("keyctl")
            .args(["session", "-", "sh", "-c", &script])
            .env("XDG_STATE_HOME", std::env::temp_dir())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{sig}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.contains("STILL-MOUNTED"), "signal {sig}: {out}");
        assert!(!is_mount_point(&d.mnt), "signal {sig}: a mount is left");
        assert!(!out.contains("user:"), "signal {sig}: keys left: {out}");
        let mut plain = Vec::new();
        decrypt_file(
            &mut File::open(d.lower.join("f")).unwrap(),
            None,
            &keys(),
            &mut plain,
        )
        .unwrap();
        assert!(
            plain == fs::read(d.root.join("plain")).unwrap(),
            "signal {sig}"
        );
    }
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

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kernel");
/// The key of the kernel-made fixtures (their README: passphrase `kernel-oracle test
/// vectors`, default salt).
const KERNEL_SIG: &str = "c0aa74b88cbc562f";

/// A writable copy of a kernel-made fixture's lower tree, with its passphrase file.
fn kernel_dirs(set: &str) -> Dirs {
    let d = dirs();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{FIXTURES}/{set}/lower/."))
        .arg(&d.lower)
        .status()
        .unwrap();
    assert!(st.success());
    fs::copy(format!("{FIXTURES}/passphrase.txt"), &d.pass).unwrap();
    d
}

/// Every file of the fixtures' `plain/` reads back identical through the mount.
fn assert_plain_tree(mnt: &Path) {
    let plain = Path::new(FIXTURES).join("plain");
    let mut todo = vec![PathBuf::new()];
    let mut files = 0;
    while let Some(rel) = todo.pop() {
        for e in fs::read_dir(plain.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                todo.push(r);
            } else {
                assert_eq!(
                    fs::read(mnt.join(&r)).unwrap_or_else(|e| panic!("{}: {e}", r.display())),
                    fs::read(e.path()).unwrap(),
                    "{}",
                    r.display()
                );
                files += 1;
            }
        }
    }
    assert!(files >= 8, "only {files} fixture files");
}

fn ctl_mount(d: &Dirs, opts: &str, extra: &[&str]) -> Output {
    let mut a = vec!["mount", "--keyring", "session"];
    a.extend_from_slice(extra);
    a.extend([
        "-o",
        opts,
        d.lower.to_str().unwrap(),
        d.mnt.to_str().unwrap(),
    ]);
    ctl(&a)
}

fn code_and_err(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The seed's `mount.ecryptfs` option string, verbatim, over a lower tree the kernel
/// wrote; then the other spellings mount.ecryptfs takes, and what it refuses.
#[test]
fn mount_ecryptfs_option_strings_on_kernel_fixtures() {
    let d = kernel_dirs("aes256");
    let p = d.pass.display();
    let seed = format!(
        "key=passphrase:passfile={p},ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_passthrough=no,no_sig_cache"
    );
    let o = ctl_mount(&d, &seed, &[]);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    assert_plain_tree(&d.mnt);
    // Busy through the -o path too.
    assert_eq!(ctl_mount(&d, &seed, &[]).status.code(), Some(5));
    umount(&d.mnt);

    let kernel_dialect = format!(
        "key=passphrase:passphrase_passwd_file={p},ecryptfs_sig={KERNEL_SIG},ecryptfs_cipher=aes,\
         ecryptfs_key_bytes=32,ecryptfs_unlink_sigs,verbosity=0,ro"
    );
    let o = ctl_mount(&d, &kernel_dialect, &[]);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    assert_plain_tree(&d.mnt);
    let err = fs::write(d.mnt.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "ro is honoured");
    umount(&d.mnt);

    // Same-key FNEK convention of the kernel fixture (names encrypted).
    let f = kernel_dirs("aes256-fnek");
    for opts in [
        format!("key=passphrase:passfile={},ecryptfs_key_bytes=32,ecryptfs_enable_filename_crypto=y", f.pass.display()),
        format!("key=passphrase:passphrase_passwd_file={},ecryptfs_key_bytes=32,ecryptfs_fnek_sig={KERNEL_SIG},ecryptfs_xattr_metadata", f.pass.display()),
    ] {
        let o = ctl_mount(&f, &opts, &[]);
        assert!(o.status.success(), "{opts}: {}", code_and_err(&o).1);
        assert_plain_tree(&f.mnt);
        umount(&f.mnt);
    }

    // Refusals, each with its exit status and nothing mounted.
    let bad_pass = d.root.join("bad");
    fs::write(&bad_pass, "not it\n").unwrap();
    let cases: &[(String, i32, &str)] = &[
        (
            format!("{seed},ecryptfs_frobnicate=1"),
            2,
            "ecryptfs_frobnicate",
        ),
        (seed.replace("aes,", "rot13,"), 2, "ecryptfs_cipher"),
        // passwd_file= belongs to the openssl module, as in mount.ecryptfs.
        (seed.replace("passfile", "passwd_file"), 2, "passwd_file"),
        (
            "key=passphrase:passwd=hunter2,ecryptfs_key_bytes=32".into(),
            2,
            "passwd",
        ),
        (
            seed.replace(&p.to_string(), &bad_pass.display().to_string()),
            3,
            "wrong passphrase",
        ),
        (
            seed.replace(&p.to_string(), "/nonexistent/usb/foo.txt"),
            4,
            "/nonexistent/usb/foo.txt",
        ),
        (
            "ecryptfs_sig=0123456789abcdef,ecryptfs_key_bytes=32".into(),
            4,
            "0123456789abcdef",
        ),
    ];
    for (opts, code, needle) in cases {
        let (c, err) = code_and_err(&ctl_mount(&d, opts, &[]));
        assert_eq!(c, Some(*code), "{opts}: {err}");
        assert!(err.contains(needle), "{opts}: {err}");
        assert!(!err.contains("hunter2"), "a secret in a message: {err}");
        assert_eq!(fs::read_dir(&d.mnt).unwrap().count(), 0, "{opts}");
    }
    fs::write(d.mnt.join("stray"), b"").unwrap();
    assert_eq!(ctl_mount(&d, &seed, &[]).status.code(), Some(6));
    let o = ctl_mount(&d, &format!("{seed},nonempty"), &[]);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    umount(&d.mnt);
}

/// OpenSSL (tag 1) keys: keygen, write through a mount with --keyfile, check the lower
/// file with the key pair directly, read back through `-o key=openssl:…`.
#[test]
fn openssl_key_mounts() {
    let d = dirs();
    let key = d.root.join("usb/key.pem");
    let kpass = d.root.join("usb/key-pass");
    fs::create_dir(d.root.join("usb")).unwrap();
    fs::write(&kpass, "pem passphrase\n").unwrap();
    let o = ctl(&[
        "keygen",
        "--bits",
        "2048",
        "--out",
        key.to_str().unwrap(),
        "--passphrase-file",
        kpass.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    let with_keyfile = |d: &Dirs, pass: &Path| {
        ctl(&[
            "mount",
            "--keyring",
            "session",
            "--keyfile",
            key.to_str().unwrap(),
            "--key-passphrase-file",
            pass.to_str().unwrap(),
            d.lower.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
        ])
    };
    let o = with_keyfile(&d, &kpass);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    fs::write(d.mnt.join("secret.txt"), b"sealed with RSA").unwrap();
    umount(&d.mnt);

    // The lower file has a tag 1 packet the key pair itself opens.
    let pair = strongroom_core::pubkey::RsaKeyPair::load(
        &key,
        &Passphrase::new("pem passphrase").unwrap(),
    )
    .unwrap();
    let lower = d.lower.join("secret.txt");
    let mut out = Vec::new();
    decrypt_file(&mut File::open(&lower).unwrap(), None, &pair, &mut out).unwrap();
    assert_eq!(out, b"sealed with RSA");

    let o = ctl_mount(
        &d,
        &format!(
            "key=openssl:keyfile={},passwd_file={}",
            key.display(),
            kpass.display()
        ),
        &[],
    );
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    assert_eq!(
        fs::read(d.mnt.join("secret.txt")).unwrap(),
        b"sealed with RSA"
    );
    umount(&d.mnt);
    let o = with_keyfile(&d, &kpass);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    assert_eq!(
        fs::read(d.mnt.join("secret.txt")).unwrap(),
        b"sealed with RSA"
    );
    umount(&d.mnt);

    // Wrong PEM passphrase: 3, nothing mounted. Another key: 3. No key file: 4.
    let wrong = d.root.join("wrong");
    fs::write(&wrong, "not the pem passphrase\n").unwrap();
    let (c, err) = code_and_err(&with_keyfile(&d, &wrong));
    assert_eq!(c, Some(3), "{err}");
    assert!(!is_mount_point(&d.mnt));
    let other = d.root.join("usb/other.pem");
    let o = ctl(&[
        "keygen",
        "--bits",
        "2048",
        "--out",
        other.to_str().unwrap(),
        "--passphrase-file",
        kpass.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", code_and_err(&o).1);
    let (c, err) = code_and_err(&ctl_mount(
        &d,
        &format!(
            "key=openssl:keyfile={},passwd_file={}",
            other.display(),
            kpass.display()
        ),
        &[],
    ));
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("wrong key"), "{err}");
    let (c, err) = code_and_err(&ctl_mount(
        &d,
        &format!(
            "key=openssl:keyfile={}/gone.pem,passwd_file={}",
            d.root.display(),
            kpass.display()
        ),
        &[],
    ));
    assert_eq!(c, Some(4), "{err}");
    assert!(!is_mount_point(&d.mnt));
}

fn is_mount_point(p: &Path) -> bool {
    let want = format!(" {} ", p.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(&want))
}

/// mount(8) runs `mount.fuse.strongroom` for `-t fuse.strongroom` and fstab lines. It
/// only looks in /sbin, so the helper symlink goes into an overlay over /usr/sbin in
/// a private mount namespace (nothing on the machine changes). Needs root.
#[test]
fn mount8_helper_and_fstab_lines() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mount(8) helpers and mount namespaces need root");
        return;
    }
    let d = kernel_dirs("aes256");
    let t = &d.root;
    for sub in ["sbin-up", "sbin-work", "ro"] {
        fs::create_dir(t.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(BIN, t.join("sbin-up/mount.fuse.strongroom")).unwrap();
    let (l, m, p) = (
        d.lower.display().to_string(),
        d.mnt.display().to_string(),
        d.pass.display().to_string(),
    );
    let opts = format!(
        "key=passphrase:passfile={p},ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_passthrough=no,no_sig_cache,keyring=session"
    );
    fs::write(t.join("bad"), "not it\n").unwrap();
    let bad = opts.replace(&p, &t.join("bad").display().to_string());
    fs::write(
        t.join("fstab"),
        format!(
            "# a comment\n{l} {m} fuse.strongroom noauto,user,_netdev,nofail,x-systemd.automount,x-gvfs-show,passfile={p},ecryptfs_key_bytes=32,keyring=session 0 0\n"
        ),
    )
    .unwrap();
    let script = r#"
        set -u
        mount --make-rprivate /
        mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$T/sbin-up,workdir=$T/sbin-work" /usr/sbin || exit 99
        step() { name=$1; shift; "$@" 2>"$T/err.$name"; echo "$name $?"; }
        step opt mount -t fuse.strongroom "$L" "$M" -o "$OPTS"
        cp "$M/text.txt" "$T/out-opt"
        step busy mount -t fuse.strongroom "$L" "$M" -o "$OPTS"
        step umount umount "$M"
        step fstab mount --fstab "$T/fstab" "$M"
        cp "$M/text.txt" "$T/out-fstab"
        umount "$M"
        step wrong mount -t fuse.strongroom "$L" "$M" -o "$BAD"
        step missing mount -t fuse.strongroom "$L" "$M" -o ecryptfs_sig=0123456789abcdef,ecryptfs_key_bytes=32,keyring=session
        step unknown mount -t fuse.strongroom "$L" "$M" -o "$OPTS,frobnicate"
        touch "$M/stray"
        step nonempty mount -t fuse.strongroom "$L" "$M" -o "$OPTS"
        rm "$M/stray"
        mount --bind "$L" "$T/ro" && mount -o remount,bind,ro "$T/ro"
        step rolower mount -t fuse.strongroom "$T/ro" "$M" -o "$OPTS"
        step rolower_ro mount -t fuse.strongroom "$T/ro" "$M" -o "$OPTS,ro"
        cp "$M/text.txt" "$T/out-ro"
        umount "$M"
    "#;
    let o = Command::new("keyctl")
        .args(["session", "-", "unshare", "-m", "sh", "-c", script])
        .env("T", t)
        .env("L", &l)
        .env("M", &m)
        .env("OPTS", &opts)
        .env("BAD", &bad)
        .env("XDG_STATE_HOME", t)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = |name: &str| fs::read_to_string(t.join(format!("err.{name}"))).unwrap_or_default();
    let want = [
        ("opt", 0),
        ("busy", 5),
        ("umount", 0),
        ("fstab", 0),
        ("wrong", 3),
        ("missing", 4),
        ("unknown", 2),
        ("nonempty", 6),
        ("rolower", 7),
        ("rolower_ro", 0),
    ];
    for (name, code) in want {
        assert!(
            out.lines().any(|l| l == format!("{name} {code}")),
            "{name}: want exit {code}; got:\n{out}{}\nstderr of {name}: {}",
            String::from_utf8_lossy(&o.stderr),
            err(name)
        );
    }
    assert!(err("unknown").contains("frobnicate"), "{}", err("unknown"));
    assert!(
        err("wrong").contains("wrong passphrase"),
        "{}",
        err("wrong")
    );
    let plain = fs::read(Path::new(FIXTURES).join("plain/text.txt")).unwrap();
    for f in ["out-opt", "out-fstab", "out-ro"] {
        assert_eq!(fs::read(t.join(f)).unwrap(), plain, "{f}");
    }
}
