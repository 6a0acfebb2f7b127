//! Booting the guest and running one command in it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use crate::cache::{check, Accel, Installed};
use crate::error::{io_err, VmError};

/// Where the scratch ext4 disk is mounted in the guest (with `user_xattr`).
pub const GUEST_SCRATCH: &str = "/scratch";

/// An emulated USB mass-storage device (raw image file) on an xHCI controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDisk {
    pub image: PathBuf,
    /// The USB serial number the guest sees (udisks shows it as the drive serial).
    pub serial: Option<String>,
}

impl FromStr for UsbDisk {
    type Err = VmError;
    /// `IMG` or `IMG:serial=S`.
    fn from_str(s: &str) -> Result<Self, VmError> {
        let (image, serial) = match s.rsplit_once(":serial=") {
            Some((img, ser)) => (img, Some(ser.to_owned())),
            None => (s, None),
        };
        if let Some(ser) = &serial {
            if ser.is_empty()
                || !ser
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(VmError::Invalid(format!(
                    "USB serial {ser:?}: use 1+ characters of A-Z a-z 0-9 - _ ."
                )));
            }
        }
        if image.is_empty() {
            return Err(VmError::Invalid(format!("USB disk {s:?}: no image file")));
        }
        Ok(UsbDisk {
            image: image.into(),
            serial,
        })
    }
}

/// What happens to the command's stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Streamed to this process's stdout / stderr as they come.
    Inherit,
    /// Collected into [`VmOutcome::stdout`] / [`VmOutcome::stderr`].
    Capture,
}

/// How to run the VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub mem_mib: u32,
    /// Wall-clock limit for the whole run (boot included).
    pub timeout: Duration,
    /// Host directories shared writable at the same path in the guest.
    pub shares: Vec<PathBuf>,
    pub usb_disks: Vec<UsbDisk>,
    /// Size of the sparse scratch ext4 disk at [`GUEST_SCRATCH`]; 0 for none.
    pub scratch_mib: u64,
    /// Extra environment for the command (besides PATH, HOME, TERM, LANG, STRONGROOM_VM=1).
    pub env: Vec<(String, OsString)>,
    /// Directory the command starts in; `/` when it does not exist in the guest.
    pub cwd: PathBuf,
    pub output: OutputMode,
    /// Overrides the accelerator `vm-setup` chose (and `STRONGROOM_VM_ACCEL`).
    pub accel: Option<Accel>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            mem_mib: 1024,
            timeout: Duration::from_secs(600),
            shares: Vec::new(),
            usb_disks: Vec::new(),
            scratch_mib: 1024,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            output: OutputMode::Inherit,
            accel: None,
        }
    }
}

/// The result of a VM run whose command was started.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The command's exit status (128 + N when killed by signal N, 127 when not found).
    pub status: i32,
    /// Empty with [`OutputMode::Inherit`].
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Guest uptime when the command started (boot, modules, mounts).
    pub boot: Option<Duration>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    pub accel: Accel,
}

/// Boots the VM, runs `cmd` as root in the guest and powers off.
pub fn run(opts: &VmOptions, cmd: &[OsString]) -> Result<VmOutcome, VmError> {
    let inst = check()?;
    let accel = opts.accel.unwrap_or(inst.accel);
    if cmd.is_empty() {
        return Err(VmError::Invalid("no command given".into()));
    }
    let shares = canonical_shares(&opts.shares)?;
    let job = tempfile::Builder::new()
        .prefix("strongroom-vm.")
        .tempdir()
        .map_err(io_err("cannot create the job directory"))?;
    let jd = &job.path().to_path_buf();
    write_job(jd, opts, &shares, cmd)?;
    if opts.scratch_mib > 0 {
        make_scratch(&jd.join("scratch.img"), opts.scratch_mib)?;
    }

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut qemu = qemu_command(&inst, accel, opts, jd, &shares);
    let (out_fd, err_fd) = (out_w.as_raw_fd(), err_w.as_raw_fd());
    // SAFETY: dup2 is async-signal-safe; the guest's stdout/stderr ports write to
    // /dev/fd/3 and /dev/fd/4 (dup2 also clears close-on-exec on the copies).
    unsafe {
        qemu.pre_exec(move || {
            // via fds >= 10 first, so that a pipe already sitting on 3 or 4 is not clobbered
            let high = [
                libc::fcntl(out_fd, libc::F_DUPFD_CLOEXEC, 10),
                libc::fcntl(err_fd, libc::F_DUPFD_CLOEXEC, 10),
            ];
            for (from, to) in high.into_iter().zip([3, 4]) {
                if from < 0 || libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let qemu_log = File::create(jd.join("qemu.log")).map_err(io_err("cannot create qemu.log"))?;
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(qemu_log)
        .spawn()
        .map_err(io_err("cannot start qemu-system-x86_64"))?;
    drop((out_w, err_w)); // EOF on the readers once qemu is gone
    let out_t = forward(out_r, opts.output, Sink::Stdout);
    let err_t = forward(err_r, opts.output, Sink::Stderr);

    let deadline = started + opts.timeout;
    let qemu_status = loop {
        match child.try_wait().map_err(io_err("waiting for qemu"))? {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let elapsed = started.elapsed();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let console = || {
        tail(
            &fs::read_to_string(jd.join("console.log")).unwrap_or_default(),
            30,
        )
    };
    let Some(qemu_status) = qemu_status else {
        return Err(VmError::Timeout {
            secs: opts.timeout.as_secs(),
            console: console(),
        });
    };
    let status = fs::read_to_string(jd.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(status) = status else {
        let failure = fs::read_to_string(jd.join("failure")).unwrap_or_default();
        let qlog = fs::read_to_string(jd.join("qemu.log")).unwrap_or_default();
        return Err(VmError::Vm {
            reason: if failure.trim().is_empty() {
                format!("no exit status from the guest (qemu: {qemu_status})")
            } else {
                format!("guest init: {}", failure.trim())
            },
            details: format!(
                "qemu said:\n{}\nlast console lines:\n{}",
                qlog.trim_end(),
                console()
            ),
        });
    };
    if std::env::var_os("STRONGROOM_VM_KEEP").is_some() {
        eprintln!("strongroom-vm: job dir kept: {}", job.keep().display());
    }
    let boot = fs::read_to_string(jd.join("ready"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    Ok(VmOutcome {
        status,
        stdout,
        stderr,
        boot,
        elapsed,
        accel,
    })
}

/// Shares must be existing directories; the guest mounts them at their canonical host
/// path, parents before children.
fn canonical_shares(shares: &[PathBuf]) -> Result<Vec<PathBuf>, VmError> {
    let mut out = Vec::new();
    for s in shares {
        let c = fs::canonicalize(s).map_err(io_err(format!("share {}", s.display())))?;
        if !c.is_dir() {
            return Err(VmError::Invalid(format!(
                "share {} is not a directory",
                c.display()
            )));
        }
        if c == Path::new("/") || c.as_os_str().as_bytes().contains(&b'\n') {
            return Err(VmError::Invalid(format!("cannot share {:?}", c)));
        }
        out.push(c);
    }
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    Ok(out)
}

/// `'…'` quoting for sh, byte-exact (non-UTF-8 arguments survive).
fn sh_quote(out: &mut Vec<u8>, s: &OsStr) {
    out.push(b'\'');
    for &b in s.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

fn write_job(
    jd: &Path,
    opts: &VmOptions,
    shares: &[PathBuf],
    cmd: &[OsString],
) -> Result<(), VmError> {
    let w = |name: &str, data: &[u8]| {
        fs::write(jd.join(name), data).map_err(io_err(format!("cannot write {name}")))
    };
    w(
        "job.env",
        format!(
            "SHARES={}\nUSB_DISKS={}\n",
            shares.len(),
            opts.usb_disks.len()
        )
        .as_bytes(),
    )?;
    for (i, s) in shares.iter().enumerate() {
        w(&format!("share{i}.path"), s.as_os_str().as_bytes())?;
    }
    let mut sh = b"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
LANG=C.UTF-8 STRONGROOM_VM=1\n"
        .to_vec();
    for (k, v) in &opts.env {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(VmError::Invalid(format!("environment variable name {k:?}")));
        }
        sh.extend_from_slice(format!("export {k}=").as_bytes());
        sh_quote(&mut sh, v);
        sh.push(b'\n');
    }
    sh.extend_from_slice(b"cd ");
    sh_quote(&mut sh, opts.cwd.as_os_str());
    sh.extend_from_slice(b" 2>/dev/null || cd /\nexec");
    for a in cmd {
        sh.push(b' ');
        sh_quote(&mut sh, a);
    }
    sh.push(b'\n');
    w("cmd.sh", &sh)
}

/// A sparse file with a fresh ext4 (made on the host: mkfs in the emulated guest is slow).
fn make_scratch(path: &Path, mib: u64) -> Result<(), VmError> {
    let f = File::create(path).map_err(io_err("cannot create the scratch disk"))?;
    f.set_len(mib << 20)
        .map_err(io_err("cannot size the scratch disk"))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args([
            "-F",
            "-q",
            "-b",
            "4096",
            "-I",
            "256",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("cannot run mkfs.ext4 (install e2fsprogs)"))?;
    if !out.status.success() {
        return Err(VmError::Tool {
            cmd: "mkfs.ext4".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// qemu option values escape commas by doubling them.
fn qv(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn qemu_command(
    inst: &Installed,
    accel: Accel,
    opts: &VmOptions,
    jd: &Path,
    shares: &[PathBuf],
) -> Command {
    let root = unsafe_is_root();
    // passthrough keeps owners and xattrs, but qemu can only chown as root
    let model = if root { "passthrough" } else { "none" };
    let smp = thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-nodefaults", "-no-user-config", "-machine", "q35"]);
    match accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    c.arg("-smp")
        .arg(smp.to_string())
        .arg("-m")
        .arg(opts.mem_mib.to_string());
    c.arg("-kernel")
        .arg(&inst.kernel)
        .arg("-initrd")
        .arg(&inst.initramfs);
    // no_timer_check: on a busy host the emulated guest can fail the IO-APIC timer
    // check and panic at boot (seen here under load); the guest is throwaway, so
    // mitigations=off spares it the cost of speculation defences.
    c.args([
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check mitigations=off rdinit=/init",
    ]);
    c.args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    c.arg("-chardev")
        .arg(format!("file,id=con,path={}", qv(&jd.join("console.log"))));
    c.args([
        "-serial",
        "chardev:con",
        "-device",
        "virtio-rng-pci",
        "-device",
        "virtio-serial-pci",
    ]);
    for (fd, name) in [(3, "stdout"), (4, "stderr")] {
        c.arg("-chardev")
            .arg(format!("file,id={name},path=/dev/fd/{fd},append=on"));
        c.arg("-device")
            .arg(format!("virtserialport,chardev={name},name={name}"));
    }
    let mut fsdev = |id: &str, path: &Path, extra: &str| {
        c.arg("-fsdev")
            .arg(format!("local,id={id},path={},{extra}", qv(path)));
        c.arg("-device")
            .arg(format!("virtio-9p-pci,fsdev={id},mount_tag={id}"));
    };
    fsdev(
        "hostroot",
        Path::new("/"),
        &format!("security_model={model},readonly=on,multidevs=remap"),
    );
    fsdev("job", jd, "security_model=none");
    for (i, s) in shares.iter().enumerate() {
        fsdev(
            &format!("share{i}"),
            s,
            &format!("security_model={model},multidevs=remap"),
        );
    }
    if opts.scratch_mib > 0 {
        c.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            qv(&jd.join("scratch.img"))
        ));
    }
    if !opts.usb_disks.is_empty() {
        c.args(["-device", "qemu-xhci,id=xhci"]);
    }
    for (i, d) in opts.usb_disks.iter().enumerate() {
        c.arg("-drive").arg(format!(
            "if=none,id=usb{i},format=raw,file={}",
            qv(&d.image)
        ));
        let serial = d
            .serial
            .as_ref()
            .map(|s| format!(",serial={s}"))
            .unwrap_or_default();
        c.arg("-device")
            .arg(format!("usb-storage,bus=xhci.0,drive=usb{i}{serial}"));
    }
    c
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn pipe() -> Result<(File, OwnedFd), VmError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(VmError::Io {
            what: "pipe".into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    unsafe { Ok((File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
}

/// Copies one guest output stream to where it should go; returns what was captured.
fn forward(mut from: File, mode: OutputMode, sink: Sink) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut captured = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match mode {
                OutputMode::Capture => captured.extend_from_slice(&buf[..n]),
                OutputMode::Inherit => {
                    // a closed stdout must not stall the guest: keep draining
                    let _ = match sink {
                        Sink::Stdout => {
                            let mut o = io::stdout().lock();
                            o.write_all(&buf[..n]).and_then(|()| o.flush())
                        }
                        Sink::Stderr => io::stderr().lock().write_all(&buf[..n]),
                    };
                }
            }
        }
        captured
    })
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_disk_specs() {
        let d: UsbDisk = "/x/a:b.img:serial=SR-01_x.y".parse().expect("valid");
        assert_eq!(
            d,
            UsbDisk {
                image: "/x/a:b.img".into(),
                serial: Some("SR-01_x.y".into())
            }
        );
        let d: UsbDisk = "disk.img".parse().expect("valid");
        assert_eq!(
            d,
            UsbDisk {
                image: "disk.img".into(),
                serial: None
            }
        );
        for bad in [
            "",
            ":serial=A",
            "d.img:serial=",
            "d.img:serial=a,b",
            "d.img:serial=a b",
        ] {
            assert!(bad.parse::<UsbDisk>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shell_quoting_is_byte_exact() {
        let mut out = Vec::new();
        sh_quote(&mut out, OsStr::from_bytes(b"it's \xff $x"));
        assert_eq!(out, b"'it'\\''s \xff $x'");
    }
}
