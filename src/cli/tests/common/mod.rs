//! Shared plumbing of the CLI end-to-end tests: run `strongroomctl` with a throwaway
//! HOME, and re-run one test inside a wrapper (private session keyring, private bus).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const INNER: &str = "STRONGROOM_E2E_INNER";
pub const CTL: &str = env!("CARGO_BIN_EXE_strongroomctl");

pub fn ctl(home: &Path, args: &[&str]) -> Output {
    ctl_env(home, args, &[])
}

pub fn ctl_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    ctl_cmd(home, args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `strongroomctl ARGS` with the throwaway HOME, not started yet.
pub fn ctl_cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(CTL);
    c.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("STRONGROOMCTL", CTL)
        .stdin(std::process::Stdio::null());
    c
}

/// `strongroomctl ARGS`, which must exit with `code`; returns its stderr.
pub fn fails(home: &Path, args: &[&str], code: i32) -> String {
    let o = ctl(home, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    err
}

pub fn ok(home: &Path, args: &[&str]) -> String {
    let o = ctl(home, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `text` to `<dir>/<name>` (a passphrase file, say); returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `create NAME --lower LOWER --mountpoint MNT` and then `more` (the key, options).
pub fn create_args<'a>(
    name: &'a str,
    lower: &'a Path,
    mnt: &'a Path,
    more: &[&'a str],
) -> Vec<&'a str> {
    let head = ["create", name, "--lower", s(lower), "--mountpoint", s(mnt)];
    [&head[..], more].concat()
}

/// `unlock NAME` with `source` (where the key comes from), into the session keyring.
pub fn unlock_args<'a>(name: &'a str, source: &[&'a str]) -> Vec<&'a str> {
    [&["unlock", name][..], source, &["--keyring", "session"]].concat()
}

/// `keygen`: a 2048-bit key at `pem`, encrypted with the passphrase in file `pass`.
pub fn keygen_args<'a>(pem: &'a Path, pass: &'a Path) -> [&'a str; 7] {
    [
        "keygen",
        "--out",
        s(pem),
        "--bits",
        "2048",
        "--passphrase-file",
        s(pass),
    ]
}

/// `unlock NAME` with a wrong passphrase in the file of option `flag` fails with exit 3
/// (a bad key) and mounts nothing at `mnt`.
pub fn wrong_passphrase_refused(home: &Path, name: &str, flag: &str, mnt: &Path) {
    let bad = write_file(home, "bad", "not the passphrase\n");
    fails(home, &unlock_args(name, &[flag, s(&bad)]), 3);
    assert!(!mounted(mnt));
}

/// Runs `sh -c cmd`, returning stdout; panics on failure.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn session_keys() -> String {
    let o = Command::new("keyctl")
        .args(["show", "@s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn mounted(p: &Path) -> bool {
    strongroom_vault::backend::is_mounted(p)
}

/// In the re-run child, a throwaway HOME. Otherwise re-runs test `name` in a private
/// session keyring (`keyctl session -`), as [`run_inner`], and gives none.
pub fn in_session_keyring(name: &str) -> Option<tempfile::TempDir> {
    run_inner(name, "exec keyctl session -", &[]).then(|| tempfile::tempdir().unwrap())
}

/// True in the re-run child. Otherwise re-runs test `name` of this binary through
/// `sh -c "<prefix> EXE --exact name --nocapture"` with `env`, and asserts it passed.
pub fn run_inner(name: &str, prefix: &str, env: &[(&str, &Path)]) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!("{prefix} '{}' --exact {name} --nocapture", exe.display());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env(INNER, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "inner run failed:\n{text}"
    );
    false
}
