//! The test VM runner itself (`xtask::run`): what the kernel tests and later the
//! root-helper, FUSE and udisks tests rely on. One boot checks most of it.

mod support;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use support::{vm_available, workdir};
use xtask::{OutputMode, VmError, VmOptions};

#[test]
fn runs_a_command_as_root_with_shares_and_status() {
    if !vm_available("runs_a_command_as_root_with_shares_and_status") {
        return;
    }
    let work = workdir("runner.");
    let w = work.path();
    let marker = format!("/etc/strongroom-vm-overlay-probe-{}", std::process::id());
    let script = r#"
set -e
echo "uid=$(id -u) vm=$STRONGROOM_VM arg=$1 extra=$EXTRA"
echo "to-stderr" >&2
touch "$2"                                   # the root is writable (overlay)...
echo shared > "$3/from-guest"                # ...and so is the share, at the host path
grep -q " /scratch ext4 " /proc/mounts && setfattr -n user.t -v 1 /scratch && echo scratch-xattr-ok
test -e /sys/fs/ecryptfs/version && echo ecryptfs-loaded
exit 7
"#;
    let opts = VmOptions {
        shares: vec![w.to_owned()],
        env: vec![("EXTRA".into(), "it's \"quoted\" $HOME".into())],
        output: OutputMode::Capture,
        timeout: Duration::from_secs(600),
        ..VmOptions::default()
    };
    let cmd: Vec<OsString> = [
        "sh",
        "-c",
        script,
        "sh",
        "two words",
        &marker,
        w.to_str().expect("utf-8 path"),
    ]
    .map(OsString::from)
    .to_vec();
    let out = xtask::run(&opts, &cmd).unwrap_or_else(|e| panic!("VM run failed: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "boot {:?}, total {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.boot, out.elapsed
    );
    assert_eq!(out.status, 7, "exit status of the guest command");
    assert_eq!(
        stdout,
        "uid=0 vm=1 arg=two words extra=it's \"quoted\" $HOME\nscratch-xattr-ok\necryptfs-loaded\n"
    );
    assert_eq!(stderr, "to-stderr\n");
    assert_eq!(
        fs::read_to_string(w.join("from-guest")).expect("file written by the guest"),
        "shared\n"
    );
    assert!(
        !Path::new(&marker).exists(),
        "the guest wrote through to the host root"
    );
}

#[test]
fn timeout_is_reported_as_such() {
    if !vm_available("timeout_is_reported_as_such") {
        return;
    }
    let opts = VmOptions {
        timeout: Duration::from_secs(2),
        scratch_mib: 0,
        output: OutputMode::Capture,
        ..VmOptions::default()
    };
    match xtask::run(&opts, &["sleep".into(), "600".into()]) {
        Err(VmError::Timeout { secs: 2, .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
}
