//! strongroomctl's key commands against ecryptfs-utils and keyutils as peers.
//!
//! ecryptfs-add-passphrase always writes to the user keyring `@u`, which is per uid
//! and shared with the whole machine. These tests therefore run every keyring step
//! as a throwaway user (`strongroom-test`, created if missing — we run as root in
//! CI) inside a private session keyring (`keyctl session -`), and only ever clear
//! *that* user's `@u`. The tests share that user, so they take a lock.
//!
//! Requires: root, ecryptfs-utils, keyutils, util-linux (setpriv, unshare).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

const USER: &str = "strongroom-test";
const HOME: &str = "/tmp/strongroom-test-home";
const BIN: &str = env!("CARGO_BIN_EXE_strongroomctl");

/// Spec §9 vectors (observed with the real ecryptfs-add-passphrase).
const TEST123: &str = "2a97418edca01eb9";
const TEST123_FNEK: &str = "33a5d5e39463d53f";

struct Peer {
    uid: u32,
    gid: u32,
    _lock: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
}

fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("cannot run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn id_of(flag: &str) -> u32 {
    let out = run(Command::new("id").arg(flag).arg(USER));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl Peer {
    fn new() -> Peer {
        let guard = lock();
        static CREATED: OnceLock<()> = OnceLock::new();
        CREATED.get_or_init(|| {
            let exists = Command::new("id")
                .arg(USER)
                .output()
                .unwrap()
                .status
                .success();
            if !exists {
                run(Command::new("useradd").args([
                    "-M",
                    "-d",
                    HOME,
                    "-s",
                    "/usr/sbin/nologin",
                    USER,
                ]));
            }
        });
        let (uid, gid) = (id_of("-u"), id_of("-g"));
        assert_ne!(uid, 0);
        let home = Peer::home();
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let _ = std::fs::remove_file(home.join(".ecryptfsrc"));
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        Peer {
            uid,
            gid,
            _lock: guard,
            dir,
        }
    }

    /// The user's passwd home (ecryptfs-utils reads ~/.ecryptfsrc from there).
    fn home() -> PathBuf {
        let entry =
            String::from_utf8(run(Command::new("getent").args(["passwd", USER])).stdout).unwrap();
        PathBuf::from(entry.trim().split(':').nth(5).unwrap())
    }

    /// A file in the shared scratch directory, owned by the test user.
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }

    /// Runs `script` with `sh -e` as the test user in a new session keyring, after
    /// emptying that user's own `@u` and linking it into the session as the tools do.
    /// `$BIN` is strongroomctl and `$D` the scratch directory. With `fake_sysfs`, a
    /// private mount namespace gets a /sys/fs/ecryptfs/version of 375 (spec §9 V2).
    fn sh(&self, script: &str, fake_sysfs: bool) -> Output {
        let body =
            format!("set -e\nkeyctl clear @u >/dev/null\nkeyctl link @u @s >/dev/null\n{script}");
        let mut inner = vec![
            "setpriv".to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".to_owned(),
            "keyctl".to_owned(),
            "session".to_owned(),
            "-".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            body,
        ];
        let mut cmd = if fake_sysfs {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"]).arg(
                "mount -t tmpfs none /sys/fs && mkdir /sys/fs/ecryptfs && echo 375 > /sys/fs/ecryptfs/version && exec \"$@\"",
            );
            c.arg("sh");
            c.args(inner.drain(..));
            c
        } else {
            let mut c = Command::new(&inner[0]);
            c.args(&inner[1..]);
            c
        };
        cmd.env("BIN", BIN)
            .env("D", self.dir.path())
            .current_dir(self.dir.path());
        cmd.output().expect("cannot run the peer script")
    }

    fn ok(&self, script: &str, fake_sysfs: bool) -> String {
        let out = self.sh(script, fake_sysfs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "script failed ({}): {stderr}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        // keyctl session announces itself on stderr; keep stdout only.
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Leave nothing in the test user's @u.
        let _ = self.sh("true", false);
    }
}

/// Shell that prints the payload (hex) and `rdescribe` of the key `$1` in @u.
const DUMP: &str = r#"dump() { id=$(keyctl search @u user "$1"); keyctl pipe "$id" | od -An -v -tx1 | tr -d ' \n'; echo; keyctl rdescribe "$id"; echo; }"#;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn add_passphrase_tokens_are_byte_identical_to_ecryptfs_add_passphrase() {
    let peer = Peer::new();
    // (passphrase, sig from spec §9: V1, V10, and "correct horse battery staple").
    for (pass, sig) in [
        ("test123", TEST123),
        (&*"a".repeat(64), "0e3b6f146f248ef0"),
        ("correct horse battery staple", "3ab38bb4917daae6"),
    ] {
        let pf = peer.file("pass", pass.as_bytes());
        let script = format!(
            "{DUMP}\n\
             ecryptfs-add-passphrase - < {pf}\n dump {sig}\n keyctl clear @u\n echo ---\n\
             \"$BIN\" add-passphrase --passphrase-file {pf}\n dump {sig}",
            pf = pf.display()
        );
        let out = peer.ok(&script, false);
        let (theirs, ours) = out.split_once("---\n").unwrap();
        let line = format!("Inserted auth tok with sig [{sig}] into the user session keyring");
        assert_eq!(lines(theirs)[0], line, "{out}");
        assert_eq!(ours, theirs, "passphrase {pass:?}");
        // Payload: 740 bytes; description: user;uid;gid;3f010000;sig.
        assert_eq!(lines(ours)[1].len(), 740 * 2);
        assert_eq!(
            lines(ours)[2],
            format!("user;{};{};3f010000;{sig}", peer.uid, peer.gid)
        );
    }
}

#[test]
fn v10_overlong_passphrase_is_refused_like_the_peer() {
    let peer = Peer::new();
    let pf = peer.file("long", "a".repeat(65).as_bytes());
    let out = peer.ok(
        &format!(
            "set +e\n ecryptfs-add-passphrase - < {pf} >/dev/null 2>&1; echo rc=$?\n \
             \"$BIN\" add-passphrase --passphrase-file {pf} 2>&1; echo rc=$?\n keyctl rlist @u | wc -w",
            pf = pf.display()
        ),
        false,
    );
    let l = lines(&out);
    assert_eq!(l[0], "rc=1", "{out}");
    assert!(
        l[1].contains("65 bytes long; eCryptfs accepts at most 64"),
        "{out}"
    );
    assert_eq!(l[2..], ["rc=2", "0"]);
}

#[test]
fn v3_token_hash_through_keyctl_pipe() {
    let peer = Peer::new();
    let pf = peer.file("pass", b"test123");
    let out = peer.ok(
        &format!("\"$BIN\" add-passphrase --passphrase-file {} >/dev/null\nkeyctl pipe $(keyctl search @u user {TEST123}) | sha256sum", pf.display()),
        false,
    );
    assert!(
        out.starts_with("6d8162929de65fa480709c22acadd891f1ff8daaad2e096c93d47b5e872b1ff8"),
        "{out}"
    );
}

#[test]
fn fnek_tokens_match_ecryptfs_add_passphrase_fnek() {
    let peer = Peer::new();
    let pf = peer.file("pass", b"test123");
    let script = format!(
        "{DUMP}\n\
         ecryptfs-add-passphrase --fnek - < {pf}\n dump {TEST123}\n dump {TEST123_FNEK}\n keyctl clear @u\n echo ---\n\
         \"$BIN\" add-passphrase --fnek --passphrase-file {pf}\n dump {TEST123}\n dump {TEST123_FNEK}",
        pf = pf.display()
    );
    let out = peer.ok(&script, true);
    let (theirs, ours) = out.split_once("---\n").unwrap();
    assert_eq!(
        lines(theirs)[..2],
        [
            format!("Inserted auth tok with sig [{TEST123}] into the user session keyring"),
            format!("Inserted auth tok with sig [{TEST123_FNEK}] into the user session keyring"),
        ]
    );
    assert_eq!(ours, theirs);
}

#[test]
fn already_present_tokens_are_accepted_both_ways() {
    let peer = Peer::new();
    let pf = peer.file("pass", b"test123");
    let script = format!(
        "\"$BIN\" add-passphrase --passphrase-file {pf}\n\
         keyctl search @u user {TEST123}\n\
         ecryptfs-add-passphrase - < {pf}\n\
         \"$BIN\" add-passphrase --passphrase-file {pf}\n\
         keyctl search @u user {TEST123}\n\
         keyctl rlist @u | wc -w",
        pf = pf.display()
    );
    let out = peer.ok(&script, false);
    let l = lines(&out);
    let line = format!("Inserted auth tok with sig [{TEST123}] into the user session keyring");
    assert_eq!(
        [l[0], l[2], l[3]],
        [&line[..], &line[..], &line[..]],
        "{out}"
    );
    assert_eq!(l[1], l[4], "the key was replaced");
    assert_eq!(l[5], "1");
}

#[test]
fn ecryptfsrc_salt_is_honoured_like_the_peer() {
    let peer = Peer::new();
    let rc = Peer::home().join(".ecryptfsrc");
    std::fs::write(&rc, "salt=0102030405060708\n").unwrap();
    let pf = peer.file("pass", b"test123");
    let out = peer.ok(
        &format!(
            "ecryptfs-add-passphrase - < {pf}\n keyctl clear @u\n \"$BIN\" add-passphrase --passphrase-file {pf}",
            pf = pf.display()
        ),
        false,
    );
    std::fs::remove_file(&rc).unwrap();
    // Spec §9 V4.
    let line = "Inserted auth tok with sig [0d9993251d8e81f0] into the user session keyring";
    assert_eq!(lines(&out), [line, line]);
}

#[test]
fn wrapped_passphrase_files_interoperate() {
    let peer = Peer::new();
    let secret = peer.file("secret", b"mysecretpassphrase");
    let login = peer.file("login", b"loginpw");
    let wrong = peer.file("wrong", b"wrongpw");
    let ours = peer.dir.path().join("ours");
    let theirs = peer.dir.path().join("theirs");
    let out = peer.ok(
        &format!(
            "\"$BIN\" wrap-passphrase {o} --passphrase-file {s} --wrapping-passphrase-file {l}\n\
             stat -c '%a %s' {o}\n\
             ecryptfs-unwrap-passphrase {o} - < {l}\n\
             printf '%s\\n%s' mysecretpassphrase loginpw | ecryptfs-wrap-passphrase {t} -\n\
             \"$BIN\" unwrap-passphrase {t} --wrapping-passphrase-file {l}\n\
             if \"$BIN\" wrap-passphrase {o} --passphrase-file {s} --wrapping-passphrase-file {l} 2>/dev/null; then echo overwrote; fi\n\
             if ecryptfs-unwrap-passphrase {o} - < {w} >/dev/null 2>&1; then echo peer-accepted-wrong; fi\n\
             set +e; \"$BIN\" unwrap-passphrase {t} --wrapping-passphrase-file {w} 2>&1; echo rc=$?",
            o = ours.display(),
            t = theirs.display(),
            s = secret.display(),
            l = login.display(),
            w = wrong.display()
        ),
        false,
    );
    let l = lines(&out);
    assert_eq!(l[0], "600 58", "{out}");
    assert_eq!(l[1], "mysecretpassphrase");
    assert_eq!(l[2], "mysecretpassphrase");
    assert!(l[3].contains("wrong wrapping passphrase"), "{out}");
    assert_eq!(l[4], "rc=3");
    assert_eq!(l.len(), 5, "{out}");
    assert_eq!(std::fs::read(&ours).unwrap()[..2], *b":\x02");
    // A damaged file is not a wrong passphrase.
    std::fs::write(&theirs, &std::fs::read(&ours).unwrap()[..50]).unwrap();
    let out = Command::new(BIN)
        .arg("unwrap-passphrase")
        .arg(&theirs)
        .arg("--wrapping-passphrase-file")
        .arg(&login)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid wrapped-passphrase file"));
}

#[test]
fn insert_wrapped_passphrase_matches_the_peer() {
    let peer = Peer::new();
    let secret = peer.file("secret", b"mysecretpassphrase");
    let login = peer.file("login", b"loginpw");
    let wp = peer.dir.path().join("wp");
    let script = format!(
        "{DUMP}\n\
         \"$BIN\" wrap-passphrase {wp} --passphrase-file {s} --wrapping-passphrase-file {l}\n\
         ecryptfs-insert-wrapped-passphrase-into-keyring {wp} - < {l}\n dump 64c8efba40e453fe\n dump 0b617f0d825ccf92\n\
         keyctl clear @u\n echo ---\n\
         \"$BIN\" unwrap-passphrase {wp} --add-to-keyring --wrapping-passphrase-file {l}\n dump 64c8efba40e453fe\n dump 0b617f0d825ccf92",
        wp = wp.display(),
        s = secret.display(),
        l = login.display()
    );
    let out = peer.ok(&script, false);
    let (theirs, ours) = out.split_once("---\n").unwrap();
    // Spec §9 V7: only the main sig is printed.
    assert_eq!(
        lines(theirs)[0],
        "Inserted auth tok with sig [64c8efba40e453fe] into the user session keyring"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn keys_list_and_wipe() {
    let peer = Peer::new();
    let pf = peer.file("pass", b"test123");
    let script = format!(
        "\"$BIN\" add-passphrase --fnek --passphrase-file {pf} >/dev/null\n\
         keyctl add user not-ecryptfs payload @u >/dev/null\n\
         \"$BIN\" keys list --json > $D/list.json\n\
         \"$BIN\" keys wipe --all-ecryptfs\n\
         keyctl rlist @u | wc -w\n\
         keyctl search @u user not-ecryptfs >/dev/null && echo foreign-kept\n\
         set +e; \"$BIN\" keys wipe --sig {TEST123}; echo rc=$?; set -e\n\
         \"$BIN\" keys wipe --clear-user-keyring 2>$D/warn\n\
         keyctl rlist @u | wc -w",
        pf = pf.display()
    );
    let out = peer.ok(&script, false);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(peer.dir.path().join("list.json")).unwrap()).unwrap();
    let keys = json.as_array().unwrap();
    let find = |d: &str| {
        keys.iter()
            .find(|k| k["description"] == d)
            .unwrap_or_else(|| panic!("{d} missing: {json}"))
    };
    for sig in [TEST123, TEST123_FNEK] {
        let k = find(sig);
        assert_eq!(
            (
                k["ecryptfs_token"].as_bool(),
                k["type"].as_str(),
                k["perm"].as_str()
            ),
            (Some(true), Some("user"), Some("3f010000"))
        );
        assert_eq!(k["uid"], peer.uid);
        // @u is linked into @s, so it is walked (once) below @s.
        assert_eq!(
            (k["root"].as_str(), k["depth"].as_u64()),
            (Some("@s"), Some(2)),
            "{k}"
        );
        assert_eq!(k["keyring"], format!("_uid.{}", peer.uid));
    }
    assert_eq!(find("not-ecryptfs")["ecryptfs_token"], false);
    assert_eq!(
        lines(&out),
        [
            format!("Unlinked auth tok with sig [{TEST123}]").as_str(),
            &format!("Unlinked auth tok with sig [{TEST123_FNEK}]"),
            "1",
            "foreign-kept",
            "rc=4",
            "Cleared the user keyring",
            "0",
        ]
    );
    let warn = std::fs::read_to_string(peer.dir.path().join("warn")).unwrap();
    assert!(warn.contains("other programs' keys"), "{warn}");
}
