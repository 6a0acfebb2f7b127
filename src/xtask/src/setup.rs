//! `vm-setup`: host packages, the Debian kernel, the initramfs, a probe boot.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cache::{
    cache_dir, read_env_file, stamp, Accel, Installed, BOOT_MODULES, CRYPTO_DIRS, ENV_FILE,
    EXTRA_MODULES, GUEST_INIT, USB_MODULES,
};
use crate::error::{io_err, VmError};
use crate::vm::{run, OutputMode, VmOptions};

/// Host packages the runner needs (program checked, Debian package that has it).
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("dpkg-deb", "dpkg"),
];
/// Statically linked busybox (the `busybox` package's one needs libc in the guest).
const BUSYBOX: &str = "/bin/busybox";

fn say(msg: &str) {
    eprintln!("vm-setup: {msg}");
}

pub(crate) fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs a host tool, returning its stdout; the error names the command and says why.
fn tool(cmd: &mut Command) -> Result<Vec<u8>, VmError> {
    let name = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Tool {
            cmd: name.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Tool {
            cmd: name,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn busybox_is_static() -> bool {
    // a dynamically linked ELF has a PT_INTERP (type 3) program header
    let Ok(b) = fs::read(BUSYBOX) else {
        return false;
    };
    let rd = |at: usize, n: usize| {
        b.get(at..at + n)
            .map(|s| s.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    else {
        return false;
    };
    b.starts_with(b"\x7fELF\x02\x01")
        && (0..phnum).all(|i| rd((phoff + i * phentsize) as usize, 4).is_some_and(|t| t != 3))
}

fn ensure_host_packages() -> Result<(), VmError> {
    let mut missing: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(prog, _)| find_in_path(prog).is_none())
        .map(|&(_, pkg)| pkg)
        .collect();
    if !busybox_is_static() {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(VmError::Setup(format!(
            "missing host packages; as root run: apt-get install --no-install-recommends {}",
            missing.join(" ")
        )));
    }
    say(&format!("installing {} (apt-get)", missing.join(" ")));
    let install = || {
        tool(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
    };
    if install().is_err() {
        tool(Command::new("apt-get").args(["update", "-q"]))?;
        install()?;
    }
    Ok(())
}

/// The `linux-image-6.1.*-amd64` package: pinned in the cache once downloaded so that
/// every run uses the same kernel; `STRONGROOM_VM_KERNEL_PKG` picks another one.
fn kernel_package(cache: &Path) -> Result<String, VmError> {
    if let Ok(p) = env::var("STRONGROOM_VM_KERNEL_PKG") {
        return Ok(p);
    }
    if let Ok(p) = fs::read_to_string(cache.join("kernel-package")) {
        if !p.trim().is_empty() {
            return Ok(p.trim().to_owned());
        }
    }
    let resolve = || -> Option<String> {
        let out = tool(Command::new("apt-cache").args(["depends", "linux-image-amd64"])).ok()?;
        String::from_utf8_lossy(&out).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?;
            (dep.starts_with("linux-image-6.1.") && dep.ends_with("-amd64")).then(|| dep.to_owned())
        })
    };
    if let Some(p) = resolve() {
        return Ok(p);
    }
    if is_root() {
        tool(Command::new("apt-get").args(["update", "-q"]))?;
    }
    resolve().ok_or_else(|| {
        VmError::Setup(
            "cannot resolve linux-image-amd64 to a linux-image-6.1.*-amd64 package (Debian bookworm apt sources \
             needed; or set STRONGROOM_VM_KERNEL_PKG)"
                .into(),
        )
    })
}

fn find_deb(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.extension() == Some("deb".as_ref())
        })
}

/// Module name → path (relative to the modules dir) and dependency list, from modules.dep.
fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let name_of = |p: &str| {
        let file = p.rsplit('/').next().unwrap_or(p);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                name_of(m),
                (
                    m.to_owned(),
                    deps.split_whitespace().map(str::to_owned).collect(),
                ),
            )
        })
        .collect()
}

/// Selected modules plus everything they depend on (paths relative to the modules dir).
fn select_modules(
    dep: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &str,
) -> Result<BTreeSet<String>, VmError> {
    let mut out = BTreeSet::new();
    for name in BOOT_MODULES.iter().chain(USB_MODULES).chain(EXTRA_MODULES) {
        match dep.get(*name) {
            Some((path, deps)) => {
                out.insert(path.clone());
                out.extend(deps.iter().cloned());
            }
            // built into the kernel: nothing to load
            None if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) => {}
            None => {
                return Err(VmError::Setup(format!(
                    "kernel module {name} not found in modules.dep"
                )))
            }
        }
    }
    for (path, deps) in dep.values() {
        if CRYPTO_DIRS.iter().any(|d| path.starts_with(d)) {
            out.insert(path.clone());
            out.extend(deps.iter().cloned());
        }
    }
    Ok(out)
}

/// Unpacks the XZ payload of a bzImage into the ELF vmlinux (what scripts/extract-vmlinux
/// does), which qemu boots through the PVH entry: no in-guest decompression.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<bool, VmError> {
    let data = fs::read(vmlinuz).map_err(io_err(format!("reading {}", vmlinuz.display())))?;
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    for off in
        (0..data.len().saturating_sub(XZ_MAGIC.len())).filter(|&i| data[i..].starts_with(XZ_MAGIC))
    {
        let mut child = Command::new("xz")
            .args(["-dcq"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("cannot run xz"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let payload = data[off..].to_vec();
        let writer = std::thread::spawn(move || {
            // xz stops reading at the end of the stream: a broken pipe here is expected
            let _ = stdin.write_all(&payload);
        });
        let res = child.wait_with_output().map_err(io_err("xz"))?;
        let _ = writer.join();
        if res.stdout.starts_with(b"\x7fELF") {
            fs::write(out, &res.stdout).map_err(io_err(format!("writing {}", out.display())))?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), VmError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, data).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming to {}", path.display())))
}

fn build_initramfs(root: &Path, kver: &str, out: &Path) -> Result<(), VmError> {
    let msrc = root.join("lib/modules").join(kver);
    tool(
        Command::new(BUSYBOX)
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg(kver),
    )?;
    let dep_text =
        fs::read_to_string(msrc.join("modules.dep")).map_err(io_err("reading modules.dep"))?;
    let builtin = fs::read_to_string(msrc.join("modules.builtin")).unwrap_or_default();
    let mods = select_modules(&parse_modules_dep(&dep_text), &builtin)?;

    let tree_dir = tempfile::Builder::new()
        .prefix("initramfs.")
        .tempdir_in(out.parent().unwrap_or(Path::new(".")))
        .map_err(io_err("creating the initramfs staging dir"))?;
    let t = tree_dir.path();
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(t.join(d)).map_err(io_err("staging dir"))?;
    }
    let mdst = t.join("lib/modules").join(kver);
    for m in &mods {
        let dst = mdst.join(m);
        fs::create_dir_all(dst.parent().expect("module path has a parent"))
            .map_err(io_err("staging dir"))?;
        fs::copy(msrc.join(m), &dst).map_err(io_err(format!("copying module {m}")))?;
    }
    for f in [
        "modules.builtin",
        "modules.order",
        "modules.builtin.modinfo",
    ] {
        if msrc.join(f).exists() {
            fs::copy(msrc.join(f), mdst.join(f)).map_err(io_err(format!("copying {f}")))?;
        }
    }
    tool(
        Command::new(BUSYBOX)
            .arg("depmod")
            .arg("-b")
            .arg(t)
            .arg(kver),
    )?;

    fs::copy(BUSYBOX, t.join("bin/busybox")).map_err(io_err("copying busybox"))?;
    let applets = tool(Command::new(BUSYBOX).arg("--list"))?;
    for a in String::from_utf8_lossy(&applets)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", t.join("bin").join(a)).map_err(io_err(format!("applet link {a}")))?;
    }
    // the kernel runs /sbin/modprobe to load crypto modules on demand
    symlink("/bin/busybox", t.join("sbin/modprobe")).map_err(io_err("modprobe link"))?;
    fs::write(t.join("etc/boot-modules"), BOOT_MODULES.join("\n"))
        .map_err(io_err("boot-modules"))?;
    fs::write(t.join("etc/usb-modules"), USB_MODULES.join("\n")).map_err(io_err("usb-modules"))?;
    let init = t.join("init");
    fs::write(&init, GUEST_INIT).map_err(io_err("writing init"))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod init"))?;
    tool(Command::new(BUSYBOX).args(["sh", "-n"]).arg(&init))?;

    // uncompressed: unpacks faster in the emulated guest than a compressed one
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let script = "find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > \"$1\"";
    tool(
        Command::new("sh")
            .current_dir(t)
            .args(["-c", script, "sh"])
            .arg(&tmp),
    )?;
    fs::rename(&tmp, out).map_err(io_err("renaming the initramfs"))
}

/// Boots the guest once with `accel`, returns the boot time, or why it failed.
fn probe(accel: Accel, timeout: Duration) -> Result<Duration, VmError> {
    let opts = VmOptions {
        timeout,
        scratch_mib: 0,
        output: OutputMode::Capture,
        accel: Some(accel),
        ..VmOptions::default()
    };
    let outcome = run(&opts, &[OsString::from("true")])?;
    if outcome.status != 0 {
        return Err(VmError::Setup(format!(
            "`true` exited with {} in the guest",
            outcome.status
        )));
    }
    Ok(outcome.elapsed)
}

/// Idempotent preparation of everything [`run`] needs. Downloads only what is missing.
pub fn setup() -> Result<Installed, VmError> {
    let cache = cache_dir();
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(format!("creating {}", debs.display())))?;
    ensure_host_packages()?;
    let kpkg = kernel_package(&cache)?;
    if find_deb(&debs, &kpkg).is_none() {
        say(&format!("downloading {kpkg}"));
        let mut dl = Command::new("apt-get");
        dl.current_dir(&debs).args(["download", "-q"]);
        if is_root() {
            // the _apt sandbox user could not write into root's cache dir
            dl.args(["-o", "APT::Sandbox::User=root"]);
        }
        tool(dl.arg(&kpkg))?;
    }
    let deb = find_deb(&debs, &kpkg)
        .ok_or_else(|| VmError::Setup(format!("{kpkg} was not downloaded")))?;
    write_atomic(&cache.join("kernel-package"), kpkg.as_bytes())?;

    say(&format!("unpacking {}", deb.display()));
    let unpacked = tempfile::Builder::new()
        .prefix("unpack.")
        .tempdir_in(&cache)
        .map_err(io_err("creating the unpack dir"))?;
    let root = unpacked.path();
    tool(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    let kver = fs::read_dir(root.join("lib/modules"))
        .map_err(io_err("no lib/modules in the kernel package"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| VmError::Setup("the kernel package has no modules".into()))?;
    let vmlinuz = cache.join("vmlinuz");
    let tmp = cache.join(format!("vmlinuz.tmp.{}", std::process::id()));
    fs::copy(root.join("boot").join(format!("vmlinuz-{kver}")), &tmp)
        .map_err(io_err("copying vmlinuz"))?;
    fs::rename(&tmp, &vmlinuz).map_err(io_err("renaming vmlinuz"))?;
    let tmp = cache.join(format!("vmlinux.tmp.{}", std::process::id()));
    let kernel = if extract_vmlinux(&vmlinuz, &tmp)? {
        fs::rename(&tmp, cache.join("vmlinux")).map_err(io_err("renaming vmlinux"))?;
        "vmlinux"
    } else {
        say("note: could not unpack vmlinux from vmlinuz; booting the bzImage (slower)");
        "vmlinuz"
    };
    say("building the initramfs");
    build_initramfs(root, &kver, &cache.join("initramfs.img"))?;
    drop(unpacked);

    // KVM is used only if it really boots the guest: some nested setups expose a
    // /dev/kvm that never gets through the boot. A failure is remembered per host kernel.
    let host_kernel = tool(Command::new("uname").arg("-r"))
        .map(|o| String::from_utf8_lossy(&o).trim().to_owned())?;
    let previous = read_env_file(&cache.join(ENV_FILE)).unwrap_or_default();
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let mut accel = "tcg";
    let mut kvm_note = "no /dev/kvm access".to_owned();
    let env_text = |accel: &str| {
        format!(
            "STAMP={}\nKERNEL={kernel}\nKERNEL_VERSION={kver}\nKERNEL_PACKAGE={kpkg}\nACCEL={accel}\nKVM_BROKEN_ON={}\n",
            stamp(),
            if accel == "tcg" && kvm_usable { host_kernel.as_str() } else { "" }
        )
    };
    write_atomic(&cache.join(ENV_FILE), env_text("tcg").as_bytes())?;
    if kvm_usable {
        if previous.get("KVM_BROKEN_ON") == Some(&host_kernel)
            && env::var_os("STRONGROOM_VM_REPROBE").is_none()
        {
            kvm_note = "an earlier probe on this host kernel did not boot with KVM (STRONGROOM_VM_REPROBE=1 retries)".into();
        } else {
            say("probing KVM (20 s at most)");
            match probe(Accel::Kvm, Duration::from_secs(20)) {
                Ok(t) => {
                    accel = "kvm";
                    kvm_note = format!("works, boot + power-off in {:.1} s", t.as_secs_f64());
                }
                Err(e) => kvm_note = format!("does not boot the guest ({e}); using TCG"),
            }
        }
    }
    write_atomic(&cache.join(ENV_FILE), env_text(accel).as_bytes())?;
    let t0 = Instant::now();
    let t = probe(
        if accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        },
        Duration::from_secs(120),
    )?;
    say(&format!(
        "probe boot ({accel}): {:.1} s ({:.1} s wall)",
        t.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
    say(&format!("kvm: {kvm_note}"));
    crate::cache::check()
}
