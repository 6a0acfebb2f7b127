//! Shared plumbing of the helper's integration tests: the helper on a private system bus
//! with the REAL polkitd and test rules, unprivileged callers through `setpriv`, and the
//! run of a scenario inside the test VM (the real kernel eCryptfs).
//!
//! [`PrivateSystem::start`] changes /etc/passwd, /etc/group, polkit's rules and actions by
//! bind mounts: call it only in a private mount namespace (`unshare -m`) or in the VM.

#![allow(dead_code)] // each test target uses a different subset

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const POLKITD: &str = "/usr/lib/polkit-1/polkitd";

/// Why the real-polkit tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    for tool in [
        "/usr/bin/dbus-daemon",
        POLKITD,
        "/usr/bin/setpriv",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} missing (apt-get install dbus-daemon polkitd util-linux)"
            ));
        }
    }
    None
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

pub fn bind(src: &Path, dst: &Path) {
    sh(Command::new("mount").arg("--bind").arg(src).arg(dst));
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A system bus configuration with the helper's bus `policy` and, for activation, a
/// service directory. No `<servicehelper>`: the bus (root here) starts the `Exec=` line
/// itself with its own environment, which names this bus.
pub fn bus_config(dir: &Path, socket: &Path, policy: &Path, services: Option<&Path>) -> PathBuf {
    let data = policy.display();
    let services = services
        .map(|s| format!("<servicedir>{}</servicedir>", s.display()))
        .unwrap_or_default();
    let conf = format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <!-- polkitd runs as root here instead of the polkitd user. -->
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <include>{data}</include>
  {services}
</busconfig>
"#,
        socket = socket.display()
    );
    let p = dir.join("system.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

/// The bus, polkitd and the helper, in a scratch directory. Dropped: all stopped.
#[derive(Debug)]
pub struct PrivateSystem {
    // Field order is drop order: the helper first, the directory last.
    pub helper: Kill,
    pub polkitd: Kill,
    pub bus: Kill,
    /// `DBUS_SYSTEM_BUS_ADDRESS` for callers.
    pub address: String,
    pub ledger: PathBuf,
    pub dir: tempfile::TempDir,
}

impl PrivateSystem {
    /// Adds `users` (name, uid; home `<dir>/home/<name>`, owned by them) and the polkit
    /// `rules`, starts a system bus with the helper's bus policy, polkitd and the helper
    /// (`real_mounts`: the kernel mounter, else `--fake-mounts`).
    pub fn start(users: &[(&str, u32)], rules: &str, real_mounts: bool) -> PrivateSystem {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        // Test users, test rules, the helper's actions: only in this mount namespace.
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let mut group = std::fs::read_to_string("/etc/group").unwrap();
        std::fs::create_dir(dir.join("home")).unwrap();
        for (name, uid) in users {
            let home = dir.join("home").join(name);
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(*uid), Some(*uid)).unwrap();
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}::{}:/usr/sbin/nologin\n",
                home.display()
            ));
            group.push_str(&format!("{name}:x:{uid}:\n"));
        }
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("group"), group).unwrap();
        bind(&dir.join("passwd"), Path::new("/etc/passwd"));
        bind(&dir.join("group"), Path::new("/etc/group"));
        let rules_dir = dir.join("rules.d");
        std::fs::create_dir(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("10-strongroom-test.rules"), rules).unwrap();
        std::fs::set_permissions(&rules_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        bind(&rules_dir, Path::new("/etc/polkit-1/rules.d"));
        let actions = dir.join("actions");
        std::fs::create_dir(&actions).unwrap();
        for e in std::fs::read_dir("/usr/share/polkit-1/actions").unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), actions.join(e.file_name())).unwrap();
        }
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/io.github.strongroom.Helper.policy.in"
        );
        std::fs::copy(policy, actions.join("io.github.strongroom.Helper.policy")).unwrap();
        bind(&actions, Path::new("/usr/share/polkit-1/actions"));

        // The private system bus, polkitd, the helper.
        let socket = dir.join("system_bus_socket");
        let address = format!("unix:path={}", socket.display());
        let bus = Kill(
            Command::new("dbus-daemon")
                .arg(format!(
                    "--config-file={}",
                    bus_config(
                        dir,
                        &socket,
                        Path::new(concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/../../data/io.github.strongroom.Helper.conf"
                        )),
                        None,
                    )
                    .display()
                ))
                .arg("--nofork")
                .spawn()
                .unwrap(),
        );
        wait_for("the bus socket", || socket.exists());
        let polkitd = Kill(
            Command::new(POLKITD)
                .arg("--no-debug")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                .spawn()
                .unwrap(),
        );
        let ledger = dir.join("ledger");
        let helper = Kill(
            Command::new(env!("CARGO_BIN_EXE_strongroom-helper"))
                .args(if real_mounts {
                    &["--idle-timeout", "600", "--ledger-dir"][..]
                } else {
                    &["--fake-mounts", "--idle-timeout", "600", "--ledger-dir"][..]
                })
                .arg(&ledger)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                .spawn()
                .unwrap(),
        );
        let system = PrivateSystem {
            helper,
            polkitd,
            bus,
            address,
            ledger,
            dir: t,
        };
        wait_for("polkitd and the helper on the bus", || {
            let n = system.bus_names();
            n.contains("org.freedesktop.PolicyKit1") && n.contains("io.github.strongroom.Helper")
        });
        system
    }

    /// The names on the bus, as `dbus-send` prints them.
    pub fn bus_names(&self) -> String {
        Command::new("dbus-send")
            .args([
                "--print-reply",
                &format!("--bus={}", self.address),
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.ListNames",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Kills polkitd (it is reaped on drop) and waits until it is off the bus.
    pub fn stop_polkitd(&self) {
        let pid = rustix::process::Pid::from_raw(self.polkitd.0.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        wait_for("polkitd off the bus", || {
            !self.bus_names().contains("org.freedesktop.PolicyKit1")
        });
    }
    /// `<dir>/home/<name>`, as [`PrivateSystem::start`] made it.
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join("home").join(name)
    }

    /// A command run as `uid` (its own group, no supplementary ones) on this bus.
    pub fn as_user(&self, uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }
}

/// Runs test `inner` of this test binary inside the test VM (as root) with `env` and
/// asserts it passed. Prints SKIPPED when the VM is not set up, unless
/// STRONGROOM_REQUIRE_VM=1 (then it fails).
pub fn run_in_vm(test: &str, inner: &str, env: &[(&str, &str)], timeout: Duration) {
    if let Err(e) = xtask::check() {
        let required = std::env::var("STRONGROOM_REQUIRE_VM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "STRONGROOM_REQUIRE_VM=1 but the test VM is unusable: {e}"
        );
        eprintln!("SKIPPED {test}: {e}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // The guest sees the host root with fresh tmpfs on /tmp and /run: share the
    // checkout (sources and data files) and the build directory (this test and the
    // helper binary) explicitly, wherever they are.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let build_dir = exe
        .ancestors()
        .nth(2)
        .expect("test binary is in <target>/<profile>/deps")
        .to_path_buf();
    let mut shares = vec![root.clone()];
    if !build_dir.starts_with(&root) {
        shares.push(build_dir);
    }
    let opts = xtask::VmOptions {
        shares,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect(),
        timeout,
        ..Default::default()
    };
    let cmd: Vec<std::ffi::OsString> = [
        exe.as_os_str(),
        "--exact".as_ref(),
        inner.as_ref(),
        "--ignored".as_ref(),
        "--nocapture".as_ref(),
        "--test-threads=1".as_ref(),
    ]
    .iter()
    .map(|s| s.to_os_string())
    .collect();
    let outcome = xtask::run(&opts, &cmd).unwrap();
    assert_eq!(outcome.status, 0, "{test}: the scenario failed in the VM");
}
