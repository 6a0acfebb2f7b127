//! The userspace backend against the kernel (issue 4, item 3): trees written through
//! `strongroomctl mount` — a randomized tree workload, fsx, a sparse file beyond 4 GiB —
//! must read back identically through Debian 6.1's eCryptfs (in the `cargo xtask vm`
//! test VM), and trees the kernel wrote must read identically through the FUSE mount.
//! One VM boot serves both directions. Needs `cargo xtask vm-setup`, /dev/fuse and
//! `fsx` 0.3.2 (`cargo install fsx@0.3.2`); without the VM the test prints SKIPPED, or
//! fails when STRONGROOM_REQUIRE_VM=1.
//!
//! Expected values never come from the code under test: host → kernel compares the
//! kernel's view with a plain-directory model that received the same operations (and
//! the same fsx run); kernel → host compares the FUSE view with the manifest the guest
//! took of the kernel's own view. Both pipelines are checked once against a lower tree
//! with one corrupted byte. `STRONGROOM_INTEROP_SEED` changes the workload seed.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use support::*;

/// Files this large are compared over 64 KiB samples (tests/guest/fuse-interop.sh).
const BIG: u64 = 64 << 20;
const SAMPLE: u64 = 64 << 10;
const DEFAULT_SEED: u64 = 20_261_125;

// ---------------------------------------------------------------------------------
// Manifests: what a decrypted tree looks like, taken on either side.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { size: u64, nlink: u64, sha: String },
    Link(Vec<u8>),
}

/// Relative path (bytes) → entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Manifest(BTreeMap<Vec<u8>, Entry>);

/// The chunks `sampled_sum` in the guest script reads: 0, before each GiB boundary, the end.
fn sample_offsets(size: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..)
        .map(|k: u64| k << 30)
        .take_while(|&o| o < size)
        .map(|o| o.saturating_sub(SAMPLE / 2))
        .collect();
    v.push(size.saturating_sub(SAMPLE));
    v
}

fn file_sha(path: &Path, size: u64) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    if size < BIG {
        io::copy(&mut f, &mut h)?;
    } else {
        for off in sample_offsets(size) {
            f.seek(SeekFrom::Start(off))?;
            io::copy(&mut (&f).take(SAMPLE), &mut h)?;
        }
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

impl Manifest {
    /// Walks a directory (a FUSE mount or the plaintext model).
    fn of_dir(root: &Path) -> io::Result<Manifest> {
        let mut m = Manifest::default();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            for e in fs::read_dir(root.join(&rel))? {
                let e = e?;
                let r = rel.join(e.file_name());
                let p = root.join(&r);
                let md = p.symlink_metadata()?;
                let entry = if md.is_dir() {
                    todo.push(r.clone());
                    Entry::Dir
                } else if md.file_type().is_symlink() {
                    Entry::Link(fs::read_link(&p)?.into_os_string().into_vec())
                } else {
                    // hash before taking the size, as the guest does
                    let sha = file_sha(&p, md.len())?;
                    let md = p.symlink_metadata()?;
                    Entry::File {
                        size: md.len(),
                        nlink: md.nlink(),
                        sha,
                    }
                };
                m.0.insert(r.into_os_string().into_vec(), entry);
            }
        }
        Ok(m)
    }

    /// The guest's `manifest DIR OUT` files.
    fn from_guest(out: &Path) -> Result<Manifest, String> {
        let read = |ext: &str| {
            let p = out.with_extension(ext);
            fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let (meta, sums) = (read("meta")?, read("sums")?);
        let mut shas = BTreeMap::new();
        for rec in sums.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let (sha, path) = (rec.get(..64), rec.get(66..));
            let (Some(sha), Some(path)) = (sha, path) else {
                return Err(format!(
                    "bad sums record {:?}",
                    String::from_utf8_lossy(rec)
                ));
            };
            let path = path.strip_prefix(b"./").unwrap_or(path);
            shas.insert(path.to_vec(), String::from_utf8_lossy(sha).into_owned());
        }
        let fields: Vec<&[u8]> = meta.split(|&b| b == 0).collect();
        let mut m = Manifest::default();
        for f in fields.chunks_exact(5) {
            let num = |b: &[u8]| -> Result<u64, String> {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(b)))
            };
            let entry = match f[0] {
                b"d" => Entry::Dir,
                b"l" => Entry::Link(f[4].to_vec()),
                b"f" => Entry::File {
                    size: num(f[1])?,
                    nlink: num(f[2])?,
                    sha: shas.remove(f[3]).unwrap_or_else(|| "(no sum)".into()),
                },
                t => {
                    return Err(format!(
                        "unexpected file type {:?}",
                        String::from_utf8_lossy(t)
                    ))
                }
            };
            m.0.insert(f[3].to_vec(), entry);
        }
        Ok(m)
    }

    /// Differences, described from `self` = expected; empty if equal.
    fn diff(&self, actual: &Manifest) -> Vec<String> {
        let name = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let mut d = Vec::new();
        for (p, e) in &self.0 {
            match actual.0.get(p) {
                None => d.push(format!("{}: missing", name(p))),
                Some(a) if a != e => {
                    d.push(format!("{}: {a:?}, expected {e:?}", name(p)));
                }
                Some(_) => {}
            }
        }
        for p in actual.0.keys().filter(|p| !self.0.contains_key(*p)) {
            d.push(format!("{}: unexpected entry", name(p)));
        }
        d
    }

    fn files(&self) -> usize {
        self.0
            .values()
            .filter(|e| matches!(e, Entry::File { .. }))
            .count()
    }
}

fn verdict(diffs: Vec<String>) -> CaseResult {
    if diffs.is_empty() {
        Ok(())
    } else {
        let n = diffs.len();
        let shown: Vec<String> = diffs.into_iter().take(30).collect();
        Err(format!("{n} differences:\n    {}", shown.join("\n    ")))
    }
}

// ---------------------------------------------------------------------------------
// Modes and `strongroomctl mount`.

#[derive(Debug, Clone)]
struct Mode {
    case: Case,
    passthrough: bool,
    /// Also a sparse file beyond 4 GiB.
    big: bool,
    /// fsx seed and operation count, if fsx runs in this mode.
    fsx: Option<(u64, u32)>,
}

impl Mode {
    fn new(cipher: &'static str, kb: usize, fnek: Fnek, xattr: bool) -> Mode {
        Mode {
            case: Case::new(cipher, kb, fnek, xattr),
            passthrough: false,
            big: false,
            fsx: None,
        }
    }

    fn name(&self) -> String {
        let mut n = self.case.name.clone();
        if self.passthrough {
            n.push_str("-passthrough");
        }
        n
    }

    fn mount_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--cipher".into(),
            self.case.cipher.into(),
            "--key-bytes".into(),
            self.case.key_bytes.to_string(),
        ];
        v.extend(self.case.ctl_mode_args().into_iter().map(String::from));
        if self.passthrough {
            v.push("--passthrough".into());
        }
        v
    }

    /// A line of $W/jobs for the guest script.
    fn job(&self, op: &str, name: &str, seed: u64, ops: u32) -> String {
        let c = &self.case;
        format!(
            "{op} {name} {} {} {} {} {} {seed} {ops}\n",
            c.cipher,
            c.key_bytes,
            c.fnek.word(),
            u8::from(c.xattr),
            u8::from(self.passthrough)
        )
    }
}

/// `strongroomctl ARGS` in a fresh private session keyring (never the machine's @u);
/// the mount daemon keeps that keyring.
fn ctl(bin: &Path, work: &Path, args: &[&OsStr]) -> Result<(), String> {
    let out = Command::new("keyctl")
        .args(["session", "-"])
        .arg(bin)
        .args(args)
        .env("XDG_STATE_HOME", work.join("state"))
        .output()
        .map_err(|e| format!("cannot run keyctl session - strongroomctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "strongroomctl {:?} exited with {}:\n{}",
            args.first(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A FUSE mount that is unmounted (lazily, as a last resort) when dropped.
struct Mounted<'a> {
    bin: &'a Path,
    work: &'a Path,
    mnt: PathBuf,
    live: bool,
}

impl<'a> Mounted<'a> {
    fn new(
        bin: &'a Path,
        work: &'a Path,
        m: &Mode,
        lower: &Path,
        mnt: &Path,
    ) -> Result<Self, String> {
        fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let pass = work.join("passphrase");
        let mut args: Vec<&OsStr> = vec![
            "mount".as_ref(),
            "--keyring".as_ref(),
            "session".as_ref(),
            "--passphrase-file".as_ref(),
            pass.as_os_str(),
        ];
        let extra = m.mount_args();
        args.extend(extra.iter().map(OsStr::new));
        args.extend([lower.as_os_str(), mnt.as_os_str()]);
        ctl(bin, work, &args)?;
        Ok(Mounted {
            bin,
            work,
            mnt: mnt.to_owned(),
            live: true,
        })
    }

    fn unmount(mut self) -> Result<(), String> {
        self.live = false;
        ctl(
            self.bin,
            self.work,
            &["umount".as_ref(), self.mnt.as_os_str()],
        )
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if self.live {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// The host-side randomized tree workload, applied to the mount and to a plain model.

struct Workload<'a> {
    /// [model, mount]
    roots: [&'a Path; 2],
    rng: StdRng,
    step: usize,
    /// Operations whose outcome differed between the model and the mount.
    divergences: Vec<String>,
}

#[derive(Default)]
struct Listing {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl<'a> Workload<'a> {
    fn listing(&self) -> Listing {
        let mut l = Listing {
            dirs: vec![PathBuf::new()],
            ..Listing::default()
        };
        let mut i = 0;
        while i < l.dirs.len() {
            let rel = l.dirs[i].clone();
            i += 1;
            let Ok(rd) = fs::read_dir(self.roots[0].join(&rel)) else {
                continue;
            };
            let mut names: Vec<_> = rd.flatten().collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                match e.file_type() {
                    Ok(t) if t.is_dir() => l.dirs.push(rel.join(e.file_name())),
                    Ok(t) if t.is_file() => l.files.push(rel.join(e.file_name())),
                    _ => {}
                }
            }
        }
        l
    }

    fn pick<'b>(&mut self, v: &'b [PathBuf]) -> Option<&'b PathBuf> {
        (!v.is_empty()).then(|| &v[self.rng.gen_range(0..v.len())])
    }

    fn name(&mut self, kind: &str) -> String {
        let i = self.step;
        match self.rng.gen_range(0..10) {
            0 => format!("ünï-{kind}{i}-名前"),
            1 => format!("{kind} with spaces {i}"),
            2 => format!(".{kind}{i}"),
            3 => {
                // as long as a FNEK-encrypted name may be (143 bytes)
                let tail = format!("-{kind}{i}");
                let mut s = longest_fnek_name();
                s.truncate(143 - tail.len());
                s + &tail
            }
            _ => format!("{kind}{i}"),
        }
    }

    fn size(&mut self) -> u64 {
        match self.rng.gen_range(0..10) {
            0 => [0, 1, 4095, 4096, 4097, 8191, 8192, 8193][self.rng.gen_range(0..8)],
            1 => self.rng.gen_range(0..300_000),
            _ => self.rng.gen_range(0..40_000),
        }
    }

    /// An offset in or after a file of `size` bytes: anywhere, at an extent boundary
    /// ±1, or past the end (leaving a hole).
    fn offset(&mut self, size: u64) -> u64 {
        match self.rng.gen_range(0..3) {
            0 => self.rng.gen_range(0..=size),
            1 => (self.rng.gen_range(0..=size / 4096 + 2) * 4096 + self.rng.gen_range(0..3))
                .saturating_sub(1),
            _ => size + self.rng.gen_range(1..20_000),
        }
    }

    fn data(&mut self, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.rng.fill(&mut v[..]);
        v
    }

    /// Runs `op` on the model, then on the mount; both must agree on success.
    fn both(&mut self, what: &str, op: impl Fn(&Path) -> io::Result<()>) {
        let r: Vec<io::Result<()>> = self.roots.iter().map(|root| op(root)).collect();
        let kind = |r: &io::Result<()>| r.as_ref().map_err(io::Error::kind).err();
        if kind(&r[0]) != kind(&r[1]) {
            self.divergences.push(format!(
                "step {} {what}: model {:?}, mount {:?}",
                self.step, r[0], r[1]
            ));
        }
    }

    fn run(&mut self, ops: usize) {
        for d in ["sub/deeper", "dir with spaces"] {
            self.both("mkdir -p", |r| fs::create_dir_all(r.join(d)));
        }
        for _ in 0..ops {
            self.step += 1;
            self.one();
        }
    }

    fn one(&mut self) {
        let l = self.listing();
        let f = self.pick(&l.files).cloned();
        let g = self.pick(&l.files).cloned();
        let t = self.pick(&l.dirs).cloned().unwrap_or_default();
        let op = if l.files.len() < 4 {
            0
        } else {
            self.rng.gen_range(0..14)
        };
        let (f, g) = (f.unwrap_or_default(), g.unwrap_or_default());
        let fsize = fs::symlink_metadata(self.roots[0].join(&f)).map_or(0, |m| m.len());
        match op {
            0 | 1 => {
                let p = t.join(self.name("f"));
                let len = self.size();
                let data = self.data(len);
                self.both("create", |r| fs::write(r.join(&p), &data));
            }
            2 | 3 => {
                let off = self.offset(fsize);
                let len = self.rng.gen_range(1..20_000);
                let data = self.data(len);
                self.both("pwrite", |r| {
                    OpenOptions::new()
                        .write(true)
                        .open(r.join(&f))?
                        .write_all_at(&data, off)
                });
            }
            4 => {
                let size = if self.rng.gen_bool(0.5) {
                    self.size()
                } else {
                    self.offset(fsize)
                };
                self.both("truncate", |r| {
                    OpenOptions::new()
                        .write(true)
                        .open(r.join(&f))?
                        .set_len(size)
                });
            }
            5 => {
                let len = self.rng.gen_range(1..10_000);
                let data = self.data(len);
                self.both("append", |r| {
                    OpenOptions::new()
                        .append(true)
                        .open(r.join(&f))?
                        .write_all(&data)
                });
            }
            6 if fsize > 0 => {
                let off = self.rng.gen_range(0..fsize);
                let len = self.rng.gen_range(1..=(fsize - off).min(20_000));
                let data = self.data(len);
                self.both("mmap write", |r| mmap_write(&r.join(&f), off, &data));
            }
            7 => self.both("rename over", |r| fs::rename(r.join(&f), r.join(&g))),
            8 => {
                let to = t.join(self.name("m"));
                self.both("rename across", |r| fs::rename(r.join(&f), r.join(&to)));
            }
            9 => self.both("unlink", |r| fs::remove_file(r.join(&f))),
            10 => {
                let p = t.join(self.name("d"));
                self.both("mkdir", |r| fs::create_dir(r.join(&p)));
            }
            11 if !t.as_os_str().is_empty() => {
                if self.rng.gen_bool(0.5) {
                    self.both("rmdir", |r| fs::remove_dir(r.join(&t)));
                } else if let Some(to) = self.pick(&l.dirs).cloned() {
                    // a directory into another one (EINVAL into itself, on both sides)
                    let to = to.join(self.name("r"));
                    self.both("rename dir", |r| fs::rename(r.join(&t), r.join(&to)));
                }
            }
            12 => {
                let target = match self.rng.gen_range(0..3) {
                    0 => PathBuf::from("/etc/hostname"),
                    // (an encrypted target must fit in a lower name, as in the kernel)
                    1 if f.as_os_str().len() < 100 => PathBuf::from("..").join(&f),
                    _ => PathBuf::from(format!("nowhere/ünï {}", self.step)),
                };
                let p = t.join(self.name("l"));
                self.both("symlink", |r| symlink(&target, r.join(&p)));
            }
            _ => {
                let p = t.join(self.name("h"));
                self.both("link", |r| fs::hard_link(r.join(&f), r.join(&p)));
            }
        }
    }
}

/// Writes `data` at `off` through a shared writable mapping (`off + len <= file size`).
fn mmap_write(path: &Path, off: u64, data: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let start = off / 4096 * 4096;
    let len = (off - start) as usize + data.len();
    // SAFETY: a fresh mapping of `len` bytes of an open file, inside its size; written
    // only through the returned pointer and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as libc::off_t,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            p.cast::<u8>().add((off - start) as usize),
            data.len(),
        );
        let synced = libc::msync(p, len, libc::MS_SYNC);
        let err = io::Error::last_os_error();
        libc::munmap(p, len);
        if synced != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// fsx on `file`; fsx checks every read against its own model of the file.
fn fsx(file: &Path, seed: u64, ops: u32, artifacts: &Path) -> Result<(), String> {
    fs::create_dir_all(artifacts).map_err(|e| e.to_string())?;
    let out = Command::new("fsx")
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(artifacts)
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run fsx (cargo install fsx@0.3.2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        Err(format!(
            "fsx -N {ops} -S {seed} {} failed ({}):\n    {}",
            file.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
        ))
    }
}

/// Everything written through one mode's mount; the model is the expected tree.
fn host_side(bin: &Path, w: &Path, m: &Mode, seed: u64) -> Result<(), String> {
    let name = m.name();
    let lower = w.join("fuse-lower").join(&name);
    let model = w.join("model").join(&name);
    let mnt = w.join("mnt").join(&name);
    for d in [&lower, &model] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    if m.passthrough {
        // plain files that were in the lower directory before it was mounted
        for (n, len) in [("plain-before.txt", 5000), ("plain-append.txt", 300)] {
            let data = pseudo_random(n, len);
            for d in [&lower, &model] {
                fs::write(d.join(n), &data).map_err(|e| e.to_string())?;
            }
        }
    }
    let t0 = Instant::now();
    let phase =
        |what: &str| eprintln!("  {name}: {what} after {:.1} s", t0.elapsed().as_secs_f64());
    let mount = Mounted::new(bin, w, m, &lower, &mnt)?;
    let mut wl = Workload {
        roots: [&model, &mnt],
        rng: StdRng::seed_from_u64(seed),
        step: 0,
        divergences: Vec::new(),
    };
    wl.run(150);
    phase("workload");
    if m.passthrough {
        let data = pseudo_random("appended", 777);
        wl.both("append to a plain file", |r| {
            OpenOptions::new()
                .append(true)
                .open(r.join("plain-append.txt"))?
                .write_all(&data)
        });
    }
    if m.big {
        let off = (4u64 << 30) + 12_345;
        let data = pseudo_random("beyond 4 GiB", 10_000);
        wl.both("write beyond 4 GiB", |r| {
            File::create(r.join("sparse-5GiB"))?.write_all_at(&data, off)
        });
    }
    phase("big file");
    let mut problems = wl.divergences;
    if let Some((fseed, ops)) = m.fsx {
        // the same fsx run on the model (the host's own file system) and on the mount:
        // fsx is deterministic for a seed, so the final files must be identical
        let arts = w.join("fsx-artifacts").join(&name);
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| fsx(&model.join("fsx.file"), fseed, ops, &arts.join("model")));
            let b = fsx(&mnt.join("fsx.file"), fseed, ops, &arts.join("mount"));
            (
                a.join()
                    .unwrap_or_else(|_| Err("fsx thread panicked".into())),
                b,
            )
        });
        problems.extend(a.err().map(|e| format!("model: {e}")));
        problems.extend(b.err().map(|e| format!("mount: {e}")));
    }
    phase("fsx");
    // the FUSE view itself, before the kernel sees the lower tree
    let expected = Manifest::of_dir(&model).map_err(|e| format!("model manifest: {e}"))?;
    match Manifest::of_dir(&mnt) {
        Ok(got) => problems.extend(
            expected
                .diff(&got)
                .into_iter()
                .map(|d| format!("FUSE view: {d}")),
        ),
        Err(e) => problems.push(format!("FUSE view: cannot walk: {e}")),
    }
    phase("FUSE view");
    let um = mount.unmount();
    problems.extend(um.err());
    verdict(problems)
}

/// Flips one byte in the second data extent of the first lower file (depth first,
/// sorted by name) with at least two extents and one link; returns its path relative
/// to `lower` (the upper path too, with plain names).
fn corrupt_one_file(lower: &Path, rel: &Path, data_offset: u64) -> io::Result<Option<PathBuf>> {
    let mut names: Vec<_> = fs::read_dir(lower.join(rel))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let p = lower.join(&r);
        let md = p.symlink_metadata()?;
        if md.is_dir() {
            if let Some(found) = corrupt_one_file(lower, &r, data_offset)? {
                return Ok(Some(found));
            }
        } else if md.is_file() && md.nlink() == 1 && md.len() >= data_offset + 8192 {
            let f = OpenOptions::new().read(true).write(true).open(&p)?;
            let mut b = [0u8; 1];
            let at = data_offset + 4096 + 100;
            f.read_exact_at(&mut b, at)?;
            f.write_all_at(&[b[0] ^ 0x40], at)?;
            return Ok(Some(r));
        }
    }
    Ok(None)
}

fn corrupt(lower: &Path) -> Result<PathBuf, String> {
    corrupt_one_file(lower, Path::new(""), 8192)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no file to corrupt in {}", lower.display()))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let st = Command::new("cp")
        .arg("-a")
        .arg("--preserve=all")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| e.to_string())?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("cp -a {} failed", from.display()))
}

/// A negative control passes when the comparison reports exactly the corrupted file.
fn control(diffs: Vec<String>, file: &Path) -> CaseResult {
    let want = format!("{}: ", file.display());
    if diffs.len() == 1 && diffs[0].starts_with(&want) {
        Ok(())
    } else {
        Err(format!(
            "the comparison must report exactly {} as differing; it reported {} differences:\n    {}",
            file.display(),
            diffs.len(),
            diffs.join("\n    ")
        ))
    }
}

fn guest_result(stdout: &str, op: &str, name: &str) -> CaseResult {
    let head = format!("JOB {op} {name}: ");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&head));
    match lines.next() {
        Some(l) if l[head.len()..].starts_with("ok") => Ok(()),
        Some(l) => {
            let details: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
            Err(format!("{}\n{}", &l[head.len()..], details.join("\n")))
        }
        None => Err("no result from the guest".into()),
    }
}

#[test]
fn fuse_and_kernel_read_each_others_trees() {
    if !vm_available("fuse_and_kernel_read_each_others_trees") {
        return;
    }
    let started = Instant::now();
    let seed = std::env::var("STRONGROOM_INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("workload seed {seed} (STRONGROOM_INTEROP_SEED={seed} repeats this run)");
    let bin = strongroomctl();
    let work = workdir("interop.");
    let w = work.path();
    fs::write(w.join("passphrase"), format!("{PASSPHRASE}\n")).expect("passphrase file");

    let modes = vec![
        Mode {
            big: true,
            fsx: Some((seed, 4000)),
            ..Mode::new("aes", 16, Fnek::None, false)
        },
        Mode::new("aes", 32, Fnek::Same, false),
        Mode {
            fsx: Some((seed + 1, 4000)),
            ..Mode::new("aes", 32, Fnek::Separate, true)
        },
        Mode::new("aes", 16, Fnek::None, true),
        // (not twofish: strongroom-core's twofish is ~50x slower than cast6 and would
        // dominate the run)
        Mode {
            fsx: Some((seed + 2, 3000)),
            ..Mode::new("cast6", 32, Fnek::Same, false)
        },
        Mode::new("des3_ede", 24, Fnek::None, false),
        Mode {
            passthrough: true,
            ..Mode::new("aes", 16, Fnek::None, false)
        },
    ];
    // (1) host: workloads through the mounts, in parallel (they wait on FUSE round trips)
    let host: Vec<(String, CaseResult)> = std::thread::scope(|s| {
        let hs: Vec<_> = modes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let bin = &bin;
                s.spawn(move || host_side(bin, w, m, seed + 100 * i as u64))
            })
            .collect();
        modes
            .iter()
            .zip(hs)
            .map(|(m, h)| {
                let r = h.join().unwrap_or_else(|_| Err("panicked".into()));
                (
                    format!("{}: workload, fsx and FUSE view vs the model", m.name()),
                    r,
                )
            })
            .collect()
    });
    eprintln!(
        "host side done after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // negative control for (2): one flipped ciphertext byte in a copy of a tree with
    // plain names (so the lower name is the upper name)
    let control_src = modes
        .iter()
        .find(|m| m.name() == "des3_ede-24")
        .expect("mode")
        .clone();
    let control_name = "des3_ede-24-corrupted";
    let corrupted = copy_tree(
        &w.join("fuse-lower").join(control_src.name()),
        &w.join("fuse-lower").join(control_name),
    )
    .and_then(|()| corrupt(&w.join("fuse-lower").join(control_name)));

    // (2) + (3) in one boot
    let reverse = [
        Mode::new("aes", 16, Fnek::None, false),
        Mode::new("aes", 32, Fnek::Separate, true),
        Mode::new("blowfish", 56, Fnek::Same, false),
    ];
    let mut jobs = String::new();
    for m in &modes {
        jobs.push_str(&m.job("read", &m.name(), 0, 0));
    }
    jobs.push_str(&control_src.job("read", control_name, 0, 0));
    for (i, m) in reverse.iter().enumerate() {
        jobs.push_str(&m.job("write", &m.name(), seed + i as u64, 150));
    }
    fs::write(w.join("jobs"), &jobs).expect("job list");
    let vm_start = Instant::now();
    let stdout = run_guest_script(w, "fuse-interop.sh", Duration::from_secs(1200));
    eprintln!("VM done after {:.1} s", vm_start.elapsed().as_secs_f64());
    for l in stdout
        .lines()
        .filter(|l| l.starts_with("JOB ") || l.starts_with("    "))
    {
        eprintln!("  guest: {l}");
    }

    let mut lines = host;
    for m in &modes {
        let name = m.name();
        let r = guest_result(&stdout, "read", &name).and_then(|()| {
            let expected =
                Manifest::of_dir(&w.join("model").join(&name)).map_err(|e| e.to_string())?;
            let got = Manifest::from_guest(&w.join("kernel-view").join(&name))?;
            verdict(expected.diff(&got))
        });
        lines.push((format!("{name}: kernel reads the FUSE-written tree"), r));
    }
    let r = corrupted.and_then(|file| {
        guest_result(&stdout, "read", control_name)?;
        let expected = Manifest::of_dir(&w.join("model").join(control_src.name()))
            .map_err(|e| e.to_string())?;
        let got = Manifest::from_guest(&w.join("kernel-view").join(control_name))?;
        control(expected.diff(&got), &file)
    });
    lines.push((
        "negative control: a corrupted byte in a FUSE-written lower file is caught".into(),
        r,
    ));

    // (3) back on the host: FUSE mounts what the kernel wrote
    for m in &reverse {
        let name = m.name();
        let r = guest_result(&stdout, "write", &name).and_then(|()| {
            let expected = Manifest::from_guest(&w.join("kernel-made").join(&name))?;
            eprintln!(
                "  {name}: the kernel wrote {} entries, {} files",
                expected.0.len(),
                expected.files()
            );
            if expected.files() < 10 {
                return Err(format!(
                    "the kernel's tree has only {} files",
                    expected.files()
                ));
            }
            fuse_view(&bin, w, m, &w.join("kernel-lower").join(&name), &name)
                .map(|got| expected.diff(&got))
                .and_then(verdict)
        });
        lines.push((format!("{name}: FUSE reads the kernel-written tree"), r));
    }
    // negative control for (3)
    let src = &reverse[0];
    let cname = format!("{}-corrupted", src.name());
    let clower = w.join("kernel-lower").join(&cname);
    let r = copy_tree(&w.join("kernel-lower").join(src.name()), &clower)
        .and_then(|()| corrupt(&clower))
        .and_then(|file| {
            let expected = Manifest::from_guest(&w.join("kernel-made").join(src.name()))?;
            let got = fuse_view(&bin, w, src, &clower, &cname)?;
            control(expected.diff(&got), &file)
        });
    lines.push((
        "negative control: a corrupted byte in a kernel-written lower file is caught".into(),
        r,
    ));

    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    let failures = report("strongroomctl mount <-> kernel eCryptfs", &lines);
    assert!(
        failures.is_empty(),
        "{} of {} checks failed (seed {seed}):\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n")
    );
}

/// The manifest of `lower` mounted with `strongroomctl mount`.
fn fuse_view(bin: &Path, w: &Path, m: &Mode, lower: &Path, name: &str) -> Result<Manifest, String> {
    let mnt = w.join("mnt-reverse").join(name);
    let mount = Mounted::new(bin, w, m, lower, &mnt)?;
    let got = Manifest::of_dir(&mnt).map_err(|e| format!("walking the FUSE view: {e}"));
    mount.unmount()?;
    got
}
