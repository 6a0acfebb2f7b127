//! Suites nobody here wrote, against a real `strongroomctl mount --fnek`: pjdfstest 0.2.2
//! (every case must pass) and fsx 0.3.2 (20,000 operations), through
//! `src/fuse/tests/posix-suites.sh`. pjdfstest switches to the user and group `tests`:
//! they exist only in a private mount namespace whose /etc/passwd and /etc/group are
//! copies with them added, so the machine's user database is left alone.
//! Needs root, /dev/fuse, unshare, `cargo install pjdfstest@0.2.2 fsx@0.3.2`; prints
//! SKIPPED without them, or fails when STRONGROOM_REQUIRE_REAL=1 (as in CI).

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuse/tests/posix-suites.sh");

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn pjdfstest_and_fsx_pass_on_the_mount() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let missing: Vec<&str> = [
        ("root", root),
        ("pjdfstest", have("pjdfstest")),
        ("fsx", have("fsx")),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| what)
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_REAL").is_none(),
            "missing: {missing:?}"
        );
        eprintln!("SKIPPED: missing {missing:?}");
        return;
    }
    let users = r#"
set -e
d=$(mktemp -d)
cp /etc/passwd /etc/group "$d"/
grep -q '^tests:' "$d/group" || echo 'tests:x:61990:' >> "$d/group"
grep -q '^tests:' "$d/passwd" || echo 'tests:x:61990:61990::/nonexistent:/usr/sbin/nologin' >> "$d/passwd"
mount --bind "$d/passwd" /etc/passwd
mount --bind "$d/group" /etc/group
exec "$0" "$1"
"#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", users, SCRIPT])
        .arg(env!("CARGO_BIN_EXE_strongroomctl"))
        .env("MOUNT_FLAGS", "--fnek")
        .env("FSX_OPS", "20000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("All operations completed A-OK!"), "{text}");
    assert!(text.contains("Summary: 0 failed"), "{text}");
    eprintln!("{text}");
}
