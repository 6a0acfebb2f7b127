//! `strongroomctl watch`: every vault's state, then changes made by other processes, with real FUSE
//! mounts, as one JSON object per line — unlock by another `strongroomctl`, an unmount
//! from outside (`fusermount3 -u`), a daemon that dies (SIGKILL; its dead mount stays
//! until `lock`). Keyring work in a private session keyring. Needs /dev/fuse, keyutils.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{ctl_cmd, mounted, ok, run_inner, sh};

#[test]
fn watch_reports_changes_made_elsewhere() {
    if !run_inner(
        "watch_reports_changes_made_elsewhere",
        "exec keyctl session -",
        &[],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pf = home.join("pass");
    std::fs::write(&pf, "watch test passphrase\n").unwrap();
    let pf = pf.to_str().unwrap();
    let mnt = home.join("w");
    let m = mnt.to_str().unwrap();
    let l = home.join("w.lower");
    let session = ["--keyring", "session"];
    let mut create = vec!["create", "w", "--lower", l.to_str().unwrap()];
    create.extend(["--mountpoint", m, "--passphrase-file", pf, "--backend"]);
    create.push("userspace");
    ok(home, &create);

    let mut watcher = ctl_cmd(home, &["watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(watcher.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let next = || {
        let v: serde_json::Value = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("no event within 20 s");
        assert_eq!(v["vault"], "w", "{v}");
        v["state"]["state"].as_str().unwrap().to_owned()
    };
    // First the state now (the watcher follows from there), then nothing until a change.
    assert_eq!(next(), "locked");
    std::thread::sleep(Duration::from_millis(300));
    assert!(lines.try_recv().is_err());

    let unlock = [&["unlock", "w", "--passphrase-file", pf][..], &session].concat();
    ok(home, &unlock);
    assert_eq!(next(), "unlocked");
    sh(&format!("fusermount3 -u '{m}'"));
    assert_eq!(next(), "locked");
    ok(home, &unlock);
    assert_eq!(next(), "unlocked");
    // A killed daemon leaves a dead mount: still a mount, no event; `lock` clears it.
    sh(&format!("pkill -KILL -f -- ' serve .*{m}$'"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(lines.try_recv().is_err());
    ok(home, &[&["lock", "w"][..], &session].concat());
    assert_eq!(next(), "locked");
    assert!(!mounted(&mnt));

    let _ = watcher.kill();
    let _ = watcher.wait();
}
