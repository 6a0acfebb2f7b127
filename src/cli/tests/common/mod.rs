//! Shared plumbing of the CLI end-to-end tests: run `strongroomctl` with a throwaway
//! HOME, and re-run one test inside a wrapper (private session keyring, private bus).
#![allow(dead_code)]

use std::path::Path;
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
