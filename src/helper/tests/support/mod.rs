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
    missing_tools(&[
        "/usr/bin/dbus-daemon",
        POLKITD,
        "/usr/bin/setpriv",
        "/usr/bin/unshare",
    ])
}

/// Why a test needing root and `tools` cannot run here, if it cannot.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|t| !Path::new(t).exists())
        .map(|tool| format!("{tool} missing (apt-get install dbus-daemon polkitd util-linux)"))
}

/// The arguments that make this test binary run only its ignored test `inner`.
pub fn inner_args(inner: &str) -> [&str; 5] {
    [
        "--exact",
        inner,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// Runs test `inner` of this test binary in a private mount namespace (`unshare -m`,
/// private propagation) with `env_var`=1 and asserts it passed. When `missing` says why
/// it cannot run here, prints SKIPPED, or fails when STRONGROOM_REQUIRE_REAL=1.
pub fn run_in_namespace(test: &str, inner: &str, env_var: &str, missing: Option<String>) {
    if let Some(why) = missing {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_REAL").is_none(),
            "required but {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(inner_args(inner))
        .env(env_var, "1")
        .status()
        .unwrap();
    assert!(status.success(), "{test}: inner test failed: {status}");
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

/// How the helper comes onto the private bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperStart {
    /// Started directly with `--fake-mounts`: the mounter is the only test double.
    FakeMounts,
    /// Started directly with the kernel mounter.
    KernelMounts,
    /// Installed as `cargo xtask install` writes it and started by D-Bus activation on
    /// the first call, with its defaults (the kernel mounter, 60 s idle timeout, the
    /// ledger in /run).
    Activated,
}

/// The helper's files as `cargo xtask install` writes them, for D-Bus activation:
/// staged under `dir`, with the prefix the activation file names made a link to the
/// staged tree. Returns (the bus policy file, the activation directory, the helper).
fn install_helper(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (prefix, stage) = (dir.join("prefix"), dir.join("stage"));
    let o = xtask::install::InstallOptions {
        prefix: prefix.clone(),
        destdir: Some(stage.clone()),
        helper_binary: Some(env!("CARGO_BIN_EXE_strongroom-helper").into()),
        // Only the helper's files matter here; any executable stands in for strongroomctl.
        ctl_binary: Some("/bin/true".into()),
    };
    xtask::install::install(&o).unwrap();
    std::os::unix::fs::symlink(stage.join(prefix.strip_prefix("/").unwrap()), &prefix).unwrap();
    (
        stage.join("etc/dbus-1/system.d/io.github.strongroom.Helper.conf"),
        prefix.join("share/dbus-1/system-services"),
        prefix.join("libexec/strongroom-helper"),
    )
}

/// The bus, polkitd and the helper, in a scratch directory. Dropped: all stopped.
#[derive(Debug)]
pub struct PrivateSystem {
    // Field order is drop order: the helper first, the directory last.
    /// The helper this started (none when the bus activates it).
    pub helper: Option<Kill>,
    pub polkitd: Kill,
    pub bus: Kill,
    /// `DBUS_SYSTEM_BUS_ADDRESS` for callers.
    pub address: String,
    pub ledger: PathBuf,
    /// The installed helper binary the bus activates ([`HelperStart::Activated`]).
    pub installed: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl PrivateSystem {
    /// Adds `users` (name, uid; home `<dir>/home/<name>`, owned by them) and the polkit
    /// `rules`, starts a system bus with the helper's bus policy, polkitd and, as `start`
    /// says, the helper. Returns once polkitd (and a started helper) are on the bus.
    pub fn start(users: &[(&str, u32)], rules: &str, start: HelperStart) -> PrivateSystem {
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
        let (bus_policy, services, installed) = if start == HelperStart::Activated {
            let (p, s, exe) = install_helper(dir);
            (p, Some(s), Some(exe))
        } else {
            let data = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../data/io.github.strongroom.Helper.conf"
            );
            (PathBuf::from(data), None, None)
        };
        let socket = dir.join("system_bus_socket");
        let address = format!("unix:path={}", socket.display());
        let bus = Kill(
            Command::new("dbus-daemon")
                .arg(format!(
                    "--config-file={}",
                    bus_config(dir, &socket, &bus_policy, services.as_deref()).display()
                ))
                .arg("--nofork")
                // What an activated helper inherits.
                .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
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
        let ledger = match start {
            HelperStart::Activated => PathBuf::from(strongroom_helper::ledger::LEDGER_DIR),
            _ => dir.join("ledger"),
        };
        let fake = start == HelperStart::FakeMounts;
        let helper = (start != HelperStart::Activated).then(|| {
            Kill(
                Command::new(env!("CARGO_BIN_EXE_strongroom-helper"))
                    .args(fake.then_some("--fake-mounts"))
                    .args(["--idle-timeout", "600", "--ledger-dir"])
                    .arg(&ledger)
                    .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                    .spawn()
                    .unwrap(),
            )
        });
        let system = PrivateSystem {
            helper,
            polkitd,
            bus,
            address,
            ledger,
            installed,
            dir: t,
        };
        wait_for("polkitd and the helper on the bus", || {
            let n = system.bus_names();
            n.contains("org.freedesktop.PolicyKit1")
                && (system.helper.is_none() || n.contains("io.github.strongroom.Helper"))
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

    /// The pid of the process owning the helper's bus name, if it is owned.
    pub fn helper_pid(&self) -> Option<u32> {
        let out = Command::new("dbus-send")
            .args([
                "--print-reply",
                &format!("--bus={}", self.address),
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                "string:io.github.strongroom.Helper",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_once("uint32 ")?.1.trim().parse().ok()
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
    let cmd: Vec<std::ffi::OsString> = std::iter::once(exe.into_os_string())
        .chain(inner_args(inner).map(Into::into))
        .collect();
    let outcome = xtask::run(&opts, &cmd).unwrap();
    assert_eq!(outcome.status, 0, "{test}: the scenario failed in the VM");
}
