//! Shared pieces of the kernel round-trip tests: the VM gate, the plaintext tree, tree
//! comparison, the guest case runner and locating `strongroomctl`.

#![allow(dead_code)] // each test target uses a different subset

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask::{OutputMode, VmOptions};

/// True if the test VM can be used. Otherwise prints a loud SKIPPED line, or fails the
/// test when `STRONGROOM_REQUIRE_VM=1` (CI sets it: a skipped kernel test is not a pass).
pub fn vm_available(test: &str) -> bool {
    match xtask::check() {
        Ok(_) => true,
        Err(e) => {
            let required = std::env::var("STRONGROOM_REQUIRE_VM").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: STRONGROOM_REQUIRE_VM=1 but the test VM is unusable: {e}"
            );
            eprintln!("SKIPPED: {test}: {e}");
            false
        }
    }
}

/// A scratch directory under the target dir: on the host's real file system (user
/// xattrs work there, unlike on some /tmp), shared writable with the VM.
pub fn workdir(prefix: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).expect("create CARGO_TARGET_TMPDIR");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("create a work dir")
}

pub const PASSPHRASE: &str = "correct horse battery staple";

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut x = seed.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// 143 bytes: the longest name that still fits 255 bytes once FNEK-encrypted (AES).
pub fn longest_fnek_name() -> String {
    let base = "long-name-143-bytes-";
    let mut s = base.to_owned();
    while s.len() < 143 {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

/// The plaintext tree every case encrypts: extent boundaries, a large random file,
/// nesting, hard names and both kinds of symlink.
pub fn make_plain_tree(root: &Path) -> io::Result<()> {
    let files: Vec<(String, usize)> = vec![
        ("empty".into(), 0),
        ("one-byte".into(), 1),
        ("size-4095".into(), 4095),
        ("size-4096".into(), 4096),
        ("size-4097".into(), 4097),
        ("size-65537".into(), 65537),
        ("random-1MiB.bin".into(), 1 << 20),
        ("dir/sub/deeper/nested.txt".into(), 300),
        (longest_fnek_name(), 1000),
        ("ünïcødé-名前-ελληνικά.txt".into(), 123),
        ("emoji-🔐-vault".into(), 77),
        ("file with spaces.txt".into(), 10),
        ("odd !#$%&'()+,;=@[]^_`{}~-.name".into(), 11),
        (".hidden".into(), 5),
    ];
    for (name, len) in &files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().expect("has a parent"))?;
        fs::write(&p, pseudo_random(name, *len))?;
    }
    fs::create_dir_all(root.join("dir/empty-dir"))?;
    symlink("dir/sub/deeper/nested.txt", root.join("link-relative"))?;
    symlink("/etc/hostname", root.join("link-absolute"))?;
    symlink("../size-4097", root.join("dir/link-up"))?;
    Ok(())
}

/// Differences between two trees (names, types, contents, symlink targets); empty if same.
pub fn compare_trees(expected: &Path, actual: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    compare_dir(expected, actual, Path::new(""), &mut diffs);
    diffs
}

fn listing(dir: &Path) -> io::Result<BTreeMap<OsString, fs::Metadata>> {
    fs::read_dir(dir)?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.path().symlink_metadata()?))))
        .collect()
}

fn compare_dir(exp: &Path, act: &Path, rel: &Path, diffs: &mut Vec<String>) {
    let (e, a) = match (listing(&exp.join(rel)), listing(&act.join(rel))) {
        (Ok(e), Ok(a)) => (e, a),
        (e, a) => {
            diffs.push(format!(
                "{}: cannot list: {:?} / {:?}",
                rel.display(),
                e.err(),
                a.err()
            ));
            return;
        }
    };
    for name in a.keys().filter(|n| !e.contains_key(*n)) {
        diffs.push(format!("{}: unexpected entry", rel.join(name).display()));
    }
    for (name, em) in &e {
        let r = rel.join(name);
        let Some(am) = a.get(name) else {
            diffs.push(format!("{}: missing", r.display()));
            continue;
        };
        let (et, at) = (em.file_type(), am.file_type());
        if et.is_dir() && at.is_dir() {
            compare_dir(exp, act, &r, diffs);
        } else if et.is_symlink() && at.is_symlink() {
            let (x, y) = (fs::read_link(exp.join(&r)), fs::read_link(act.join(&r)));
            if x.as_ref().ok() != y.as_ref().ok() || y.is_err() {
                diffs.push(format!(
                    "{}: symlink target {:?}, expected {:?}",
                    r.display(),
                    y,
                    x
                ));
            }
        } else if et.is_file() && at.is_file() {
            match (fs::read(exp.join(&r)), fs::read(act.join(&r))) {
                (Ok(x), Ok(y)) if x == y => {}
                (Ok(x), Ok(y)) => {
                    let at = x
                        .iter()
                        .zip(&y)
                        .position(|(p, q)| p != q)
                        .unwrap_or(x.len().min(y.len()));
                    diffs.push(format!(
                        "{}: content differs at byte {at} (sizes {} / {})",
                        r.display(),
                        x.len(),
                        y.len()
                    ));
                }
                (x, y) => diffs.push(format!(
                    "{}: cannot read: {:?} / {:?}",
                    r.display(),
                    x.err(),
                    y.err()
                )),
            }
        } else {
            diffs.push(format!(
                "{}: file type {:?}, expected {:?}",
                r.display(),
                at,
                et
            ));
        }
    }
}

/// How the filename encryption key is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fnek {
    None,
    /// The passphrase's own token is the FNEK (mount.ecryptfs' default).
    Same,
    /// The separate token of `ecryptfs-add-passphrase --fnek`.
    Separate,
}

impl Fnek {
    /// The guest scripts' word for it (tests/guest/ecryptfs-lib.sh, `case_opts`).
    pub fn word(self) -> &'static str {
        match self {
            Fnek::None => "none",
            Fnek::Same => "same",
            Fnek::Separate => "separate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub cipher: &'static str,
    pub key_bytes: usize,
    pub fnek: Fnek,
    pub xattr: bool,
}

impl Case {
    pub fn new(cipher: &'static str, key_bytes: usize, fnek: Fnek, xattr: bool) -> Case {
        let mut name = format!("{cipher}-{key_bytes}");
        match fnek {
            Fnek::None => {}
            Fnek::Same => name.push_str("-fnek"),
            Fnek::Separate => name.push_str("-fnek-separate"),
        }
        if xattr {
            name.push_str("-xattr");
        }
        Case {
            name,
            cipher,
            key_bytes,
            fnek,
            xattr,
        }
    }

    /// strongroomctl's options for this case's FNEK and xattr mode.
    pub fn ctl_mode_args(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        match self.fnek {
            Fnek::None => {}
            Fnek::Same => v.push("--fnek"),
            Fnek::Separate => v.push("--fnek-separate"),
        }
        if self.xattr {
            v.push("--xattr");
        }
        v
    }
}

/// Every cipher and key size eCryptfs supports, plus filename encryption and xattr headers.
pub fn full_matrix() -> Vec<Case> {
    let sizes: &[(&str, &[usize])] = &[
        ("aes", &[16, 24, 32]),
        ("blowfish", &[16, 32, 56]),
        ("des3_ede", &[24]),
        ("cast5", &[16]),
        ("cast6", &[16, 32]),
        ("twofish", &[16, 32]),
    ];
    let mut v: Vec<Case> = sizes
        .iter()
        .flat_map(|(c, ks)| ks.iter().map(|&k| Case::new(c, k, Fnek::None, false)))
        .collect();
    for k in [16, 32] {
        v.push(Case::new("aes", k, Fnek::Same, false));
        v.push(Case::new("aes", k, Fnek::Separate, false));
    }
    v.push(Case::new("aes", 16, Fnek::None, true));
    v.push(Case::new("aes", 32, Fnek::Separate, true));
    v
}

/// What the guest does with a case (see tests/guest/ecryptfs-cases.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// Kernel encrypts, decrypts after a remount (a control), exports the lower tree
    /// to `kernel-lower/NAME`.
    Encrypt,
    /// Kernel decrypts `host-lower/NAME` and compares with the plaintext.
    Decrypt,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
        }
    }
}

/// One guest case's outcome: Ok, or the failure with its details (diff, kernel log).
pub type CaseResult = Result<(), String>;

/// Runs `cases` in ONE VM boot over `work` (which holds `plain/`, `passphrase` and,
/// for [`Op::Decrypt`], `host-lower/NAME`). Panics if the VM itself fails.
pub fn run_guest_cases(work: &Path, cases: &[(&Case, Op)]) -> BTreeMap<(String, Op), CaseResult> {
    let mut list = String::new();
    for (c, op) in cases {
        writeln!(
            list,
            "{} {} {} {} {} {}",
            c.name,
            op.word(),
            c.cipher,
            c.key_bytes,
            c.fnek.word(),
            u8::from(c.xattr)
        )
        .expect("write to String");
    }
    fs::write(work.join("cases"), list).expect("write the case list");
    let stdout = run_guest_script(work, "ecryptfs-cases.sh", Duration::from_secs(1800));
    parse_case_output(&stdout, cases)
}

/// Runs `tests/guest/SCRIPT WORK` in ONE VM boot with `work` shared; returns its
/// stdout. Panics if the VM fails or the script does not exit 0 after printing `DONE`.
pub fn run_guest_script(work: &Path, script: &str, timeout: Duration) -> String {
    // private copies: bash reads scripts as it goes, so editing the source tree during
    // a run must not change what the guest executes
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    for f in [script, "ecryptfs-lib.sh"] {
        fs::copy(guest.join(f), work.join(f)).expect("copy a guest script");
    }
    let opts = VmOptions {
        shares: vec![work.to_owned()],
        timeout,
        output: OutputMode::Capture,
        ..VmOptions::default()
    };
    let cmd: Vec<OsString> = vec!["bash".into(), work.join(script).into(), work.into()];
    let out = xtask::run(&opts, &cmd).unwrap_or_else(|e| panic!("the test VM failed: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "VM ({:?}): boot {:.1} s, total {:.1} s, guest exit status {}",
        out.accel,
        out.boot.map_or(f64::NAN, |b| b.as_secs_f64()),
        out.elapsed.as_secs_f64(),
        out.status
    );
    assert!(
        out.status == 0 && stdout.lines().any(|l| l == "DONE"),
        "the guest script {script} did not complete (status {}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn parse_case_output(stdout: &str, cases: &[(&Case, Op)]) -> BTreeMap<(String, Op), CaseResult> {
    let mut results = BTreeMap::new();
    let mut current: Option<(String, Op)> = None;
    for line in stdout.lines() {
        if let Some(detail) = line.strip_prefix("    ") {
            if let Some(Err(msg)) = current.as_ref().and_then(|k| results.get_mut(k)) {
                let msg: &mut String = msg;
                msg.push_str("\n    ");
                msg.push_str(detail);
            }
            continue;
        }
        current = None;
        let Some(rest) = line.strip_prefix("CASE ") else {
            continue;
        };
        let Some((head, verdict)) = rest.split_once(": ") else {
            continue;
        };
        let Some((name, op)) = head.split_once(' ') else {
            continue;
        };
        let Some(op) = [Op::Encrypt, Op::Decrypt]
            .into_iter()
            .find(|o| o.word() == op)
        else {
            continue;
        };
        let res = if verdict.starts_with("ok") {
            Ok(())
        } else {
            Err(verdict.to_owned())
        };
        results.insert((name.to_owned(), op), res);
        current = Some((name.to_owned(), op));
    }
    for (c, op) in cases {
        results
            .entry((c.name.clone(), *op))
            .or_insert_with(|| Err("no result from the guest".into()));
    }
    results
}

/// `strongroomctl`, built from this workspace (`STRONGROOMCTL` overrides the path).
pub fn strongroomctl() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGROOMCTL") {
        return p.into();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "strongroomctl",
            "--message-format=json",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo build -p strongroomctl");
    assert!(
        out.status.success(),
        "cargo build -p strongroomctl failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "strongroomctl")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no strongroomctl executable")
}

/// Prints one line per result (and the details of failures); returns the failures.
pub fn report(title: &str, results: &[(String, CaseResult)]) -> Vec<String> {
    eprintln!("== {title}: {} cases", results.len());
    let mut failures = Vec::new();
    for (what, r) in results {
        match r {
            Ok(()) => eprintln!("  ok    {what}"),
            Err(e) => {
                eprintln!("  FAIL  {what}: {e}");
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    failures
}
