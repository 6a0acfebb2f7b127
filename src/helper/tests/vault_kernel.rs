//! The vault library and `strongroomctl` on the kernel backend, for real: in the test VM
//! (Debian's kernel with eCryptfs) the helper runs as root on a private system bus with
//! the real polkitd and test rules, and an unprivileged user drives `strongroomctl`:
//! create with `--backend kernel`, unlock (Helper1.Mount), write, `status --json`, lock
//! (Helper1.Unmount + token wipe), then the same files through the userspace backend
//! (FUSE), and `auto` deciding for the kernel; then an OpenSSL-key vault the same way
//! (the helper's `/dev/ecryptfs` daemon), its files crossing between kernel and core.
//!
//! Needs `cargo xtask vm-setup` and a built `strongroomctl` (`cargo build -p strongroomctl`,
//! or `STRONGROOMCTL`); prints SKIPPED without the VM, fails when STRONGROOM_REQUIRE_VM=1.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use support::{HelperStart, PrivateSystem};

const ERIN: (&str, u32) = ("sr-erin", 61005);
const PASSPHRASE: &str = "kernel backend test passphrase";

const RULES: &str = r#"
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("io.github.strongroom.") === 0 && subject.user === "sr-erin") {
        return /-others$/.test(action.id) ? polkit.Result.NO : polkit.Result.YES;
    }
    return polkit.Result.NOT_HANDLED;
});
"#;

#[test]
fn vault_on_the_kernel_backend_in_the_vm() {
    support::run_in_vm(
        "vault_on_the_kernel_backend_in_the_vm",
        "inner_vault_kernel",
        &[("STRONGROOM_VAULT_KERNEL_INNER", "1")],
        Duration::from_secs(300),
    );
}

/// `strongroomctl` beside this test binary (`<target>/<profile>/strongroomctl`).
fn strongroomctl() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGROOMCTL") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let p = exe.ancestors().nth(2).unwrap().join("strongroomctl");
    assert!(
        p.is_file(),
        "{} missing: run cargo build -p strongroomctl",
        p.display()
    );
    p
}

struct User<'a> {
    sys: &'a PrivateSystem,
    home: PathBuf,
    ctl: PathBuf,
}

impl User<'_> {
    /// `strongroomctl ARGS` as the user, in a fresh session keyring (its @u persists).
    fn ctl(&self, args: &[&str]) -> Output {
        self.sys
            .as_user(ERIN.1, "keyctl")
            .args(["session", "-"])
            .arg(&self.ctl)
            .args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_STATE_HOME", self.home.join("state"))
            .env("STRONGROOMCTL", &self.ctl)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "{args:?}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn sh(&self, script: &str) -> String {
        let o = self
            .sys
            .as_user(ERIN.1, "sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

/// The file system mounted at `p` (the vault library's own mountinfo reader).
fn fs_at(p: &Path) -> Option<String> {
    strongroom_vault::backend::mounted_fs(p)
}

#[test]
#[ignore = "entry point of vault_on_the_kernel_backend_in_the_vm (runs in the VM)"]
fn inner_vault_kernel() {
    if std::env::var_os("STRONGROOM_VAULT_KERNEL_INNER").is_none() {
        eprintln!("inner_vault_kernel: only runs inside the VM");
        return;
    }
    let sys = PrivateSystem::start(&[ERIN], RULES, HelperStart::KernelMounts);
    let home = sys.home(ERIN.0);
    let u = User {
        sys: &sys,
        home: home.clone(),
        ctl: strongroomctl(),
    };
    let pf = home.join("pass");
    u.sh(&format!(
        "umask 077 && printf '%s\\n' '{PASSPHRASE}' > {}",
        pf.display()
    ));
    let pf = pf.to_str().unwrap();
    let lower = home.join("kv.lower");
    let mnt = home.join("kv");
    let (l, m) = (lower.to_str().unwrap(), mnt.to_str().unwrap());

    u.ok(&[
        "create",
        "kv",
        "--lower",
        l,
        "--mountpoint",
        m,
        "--passphrase-file",
        pf,
        "--backend",
        "kernel",
    ]);
    let unlocked = u.json(&["unlock", "kv", "--passphrase-file", pf, "--json"]);
    assert_eq!(unlocked["selection"]["backend"], "kernel", "{unlocked}");
    assert_eq!(unlocked["selection"]["reason"], "requested", "{unlocked}");
    assert_eq!(fs_at(&mnt).as_deref(), Some("ecryptfs"));

    u.sh(&format!(
        "printf 'through the kernel\\n' > {m}/a.txt && mkdir {m}/sub && head -c 10000 /dev/zero | tr '\\0' x > {m}/sub/b.txt"
    ));
    let st = u.json(&["status", "kv", "--json"]);
    assert_eq!(st["unlocked"], true, "{st}");
    assert_eq!(st["active_backend"], "kernel", "{st}");
    assert_eq!(st["helper_mount"], true, "{st}");
    let sig = st["sigs"][0].as_str().unwrap().to_owned();
    assert_eq!(st["helper_tokens"], serde_json::json!([sig]), "{st}");
    // Not asserted: `tokens_present`. Each command runs in a new `keyctl session -` that
    // does not link @u, and @u's keys are searchable only by a possessor, so a later
    // process does not see them (a login session links @u through pam_keyinit).
    // Encrypted names and contents below.
    let names: Vec<String> = std::fs::read_dir(&lower)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("ECRYPTFS_FNEK_ENCRYPTED.")),
        "{names:?}"
    );

    u.ok(&["lock", "kv"]);
    assert_eq!(fs_at(&mnt), None);
    let st = u.json(&["status", "kv", "--json"]);
    assert_eq!(st["unlocked"], false, "{st}");
    assert_eq!(st["helper_mount"], false, "{st}");
    assert_eq!(st["helper_tokens"], serde_json::json!([]), "{st}");
    assert_eq!(st["tokens_present"], serde_json::json!([]), "{st}");
    assert!(!u.sh("keyctl show @u").contains(&sig));

    // The same files through the userspace backend, this time only. Where FUSE cannot
    // mount for an unprivileged user in the guest (fusermount3 not setuid there), the
    // lower files are decrypted by strongroomctl instead.
    let fuse = u.ctl(&[
        "unlock",
        "kv",
        "--passphrase-file",
        pf,
        "--backend",
        "userspace",
        "--json",
    ]);
    if fuse.status.success() {
        let unlocked: serde_json::Value = serde_json::from_slice(&fuse.stdout).unwrap();
        assert_eq!(unlocked["selection"]["backend"], "userspace", "{unlocked}");
        assert!(fs_at(&mnt).unwrap().starts_with("fuse"));
        assert_eq!(u.sh(&format!("cat {m}/a.txt")), "through the kernel\n");
        assert_eq!(u.sh(&format!("cat {m}/sub/b.txt")), "x".repeat(10000));
        let st = u.json(&["status", "kv", "--json"]);
        assert_eq!(st["active_backend"], "userspace", "{st}");
        assert_eq!(st["helper_mount"], false, "{st}");
        u.ok(&["lock", "kv"]);
    } else {
        let err = String::from_utf8_lossy(&fuse.stderr);
        assert!(err.contains("cannot mount on"), "{err}");
        eprintln!("FUSE does not mount for users in the guest ({err}); decrypting instead");
        let out = home.join("plain");
        u.ok(&[
            "decrypt",
            "--passphrase-file",
            pf,
            "--fnek",
            l,
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read_to_string(out.join("a.txt")).unwrap(),
            "through the kernel\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("sub/b.txt")).unwrap(),
            "x".repeat(10000)
        );
    }

    // `auto` is decided at unlock: the helper is there and the kernel has FNEK support.
    let unlocked = u.json(&[
        "unlock",
        "kv",
        "--passphrase-file",
        pf,
        "--backend",
        "auto",
        "--json",
    ]);
    assert_eq!(unlocked["selection"]["backend"], "kernel", "{unlocked}");
    assert_eq!(
        unlocked["selection"]["reason"],
        "the kernel's eCryptfs has everything this vault needs"
    );
    assert_eq!(u.sh(&format!("cat {m}/a.txt")), "through the kernel\n");
    u.ok(&["lock", "kv"]);
    assert_eq!(fs_at(&mnt), None);

    openssl_vault(&u);
}

/// An OpenSSL-key vault on the kernel backend: the vault library hands the decrypted
/// key to the helper (MountWithKeys), whose `/dev/ecryptfs` daemon unwraps each file
/// key for the kernel. Files written by core (`strongroomctl encrypt`) read through
/// the kernel; files the kernel wrote decrypt with core (`strongroomctl decrypt`).
fn openssl_vault(u: &User) {
    let home = &u.home;
    let kp = home.join("keypass");
    u.sh(&format!(
        "umask 077 && printf 'pem passphrase\\n' > {}",
        kp.display()
    ));
    let pem = home.join("usb/vault.pem");
    let (kp, pem) = (kp.to_str().unwrap(), pem.to_str().unwrap());
    let sig = u.ok(&[
        "keygen",
        "--out",
        pem,
        "--bits",
        "2048",
        "--passphrase-file",
        kp,
    ]);
    let sig = sig
        .split_whitespace()
        .find(|w| w.len() == 16)
        .unwrap()
        .to_owned();
    let lower = home.join("ov.lower");
    let mnt = home.join("ov");
    let (l, m) = (lower.to_str().unwrap(), mnt.to_str().unwrap());
    u.ok(&[
        "create",
        "ov",
        "--lower",
        l,
        "--mountpoint",
        m,
        "--keyfile",
        pem,
        "--key-passphrase-file",
        kp,
        "--backend",
        "kernel",
    ]);
    // Core writes tag 1 files into the vault's lower directory (names stay plain).
    let plain = home.join("plain-in");
    let made = home.join("made-by-core");
    u.sh(&format!(
        "mkdir -p {p}/d && printf 'written by core\\n' > {p}/core.txt && head -c 70000 /dev/urandom > {p}/d/rand.bin",
        p = plain.display()
    ));
    u.ok(&[
        "encrypt",
        "--keyfile",
        pem,
        "--key-passphrase-file",
        kp,
        plain.to_str().unwrap(),
        made.to_str().unwrap(),
    ]);
    u.sh(&format!("cp -a {}/. {l}/", made.display()));

    let unlocked = u.json(&["unlock", "ov", "--key-passphrase-file", kp, "--json"]);
    assert_eq!(unlocked["selection"]["backend"], "kernel", "{unlocked}");
    assert_eq!(fs_at(&mnt).as_deref(), Some("ecryptfs"));
    assert_eq!(u.sh(&format!("cat {m}/core.txt")), "written by core\n");
    assert_eq!(
        u.sh(&format!(
            "cmp {m}/d/rand.bin {}/d/rand.bin && echo same",
            plain.display()
        )),
        "same\n"
    );
    u.sh(&format!(
        "printf 'written by the kernel\\n' > {m}/kernel.txt && head -c 50000 /dev/zero | tr '\\0' k > {m}/d/k.bin"
    ));
    // The key went to the helper; no token with the PEM passphrase sits in the keyring.
    assert!(!u.sh("keyctl show @u").contains(&sig));
    let st = u.json(&["status", "ov", "--json"]);
    assert_eq!(st["active_backend"], "kernel", "{st}");
    assert_eq!(st["helper_mount"], true, "{st}");
    assert_eq!(st["sigs"], serde_json::json!([sig]), "{st}");
    u.ok(&["lock", "ov"]);
    assert_eq!(fs_at(&mnt), None);

    // The kernel's files are tag 1 files core decrypts with the same key.
    let out = home.join("plain-out");
    u.ok(&[
        "decrypt",
        "--keyfile",
        pem,
        "--key-passphrase-file",
        kp,
        l,
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("kernel.txt")).unwrap(),
        "written by the kernel\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("d/k.bin")).unwrap(),
        "k".repeat(50000)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("core.txt")).unwrap(),
        "written by core\n"
    );

    // A wrong key passphrase is refused before anything reaches the helper.
    let bad = home.join("bad");
    u.sh(&format!("printf 'not it\\n' > {}", bad.display()));
    let o = u.ctl(&[
        "unlock",
        "ov",
        "--key-passphrase-file",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert_eq!(fs_at(&mnt), None);
}
