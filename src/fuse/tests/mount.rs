//! Real FUSE mounts (needs /dev/fuse; CI runs as root). What the mount writes is checked
//! with strongroom-core's whole-file decryptor and the kernel-made fixtures are read
//! through the mount.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::decrypt_file;
use strongroom_core::filename::{FilenameKey, FNEK_PREFIX};
use strongroom_core::header::{Header, XATTR_NAME};
use strongroom_core::kdf::{derive_skek, Passphrase, Skek, DEFAULT_SALT, FNEK_SALT};
use strongroom_core::keys::{KeySet, WrappingKey};
use strongroom_fuse::{mount, Mounted, Options};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kernel");

fn skek(pass: &str, salt: &strongroom_core::kdf::Salt) -> Skek {
    derive_skek(&Passphrase::new(pass).unwrap(), salt)
}

struct Vault {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    mnt: PathBuf,
    keys: Arc<KeySet>,
    skek: Skek,
    spec: CipherSpec,
    mounted: Option<Mounted>,
}

#[derive(Default, Clone, Copy)]
struct Mode {
    fnek: bool,
    xattr: bool,
    passthrough: bool,
    read_only: bool,
    encrypted_view: bool,
    allow_other: bool,
}

impl Mode {
    /// Filename encryption, nothing else.
    fn fnek() -> Mode {
        Mode {
            fnek: true,
            ..Mode::default()
        }
    }
}

fn options(
    lower: &Path,
    s: &Skek,
    spec: CipherSpec,
    keys: Arc<KeySet>,
    fnek: Option<Skek>,
    m: Mode,
) -> Options {
    Options {
        lower: lower.to_owned(),
        wrapping: vec![WrappingKey::Passphrase {
            skek: s.clone(),
            salt: DEFAULT_SALT,
        }],
        lookup: keys,
        spec,
        fnek: fnek.map(|k| FilenameKey::new(k, spec).unwrap()),
        xattr_metadata: m.xattr,
        passthrough: m.passthrough,
        read_only: m.read_only,
        encrypted_view: m.encrypted_view,
        allow_other: m.allow_other,
        threads: 0,
        fsname: "strongroom-test".into(),
    }
}

impl Vault {
    fn new(spec: CipherSpec, m: Mode) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&lower).unwrap();
        fs::create_dir(&mnt).unwrap();
        let s = skek("strongroom test", &DEFAULT_SALT);
        let mut ks = KeySet::new();
        ks.add_passphrase(s.clone());
        let mut v = Vault {
            _dir: dir,
            lower,
            mnt,
            keys: Arc::new(ks),
            skek: s,
            spec,
            mounted: None,
        };
        v.mount(m);
        v
    }

    fn mount(&mut self, m: Mode) {
        let fnek = m.fnek.then(|| self.skek.clone());
        let o = options(
            &self.lower,
            &self.skek,
            self.spec,
            self.keys.clone(),
            fnek,
            m,
        );
        self.mounted = Some(mount(o, &self.mnt).expect("mount"));
    }

    fn unmount(&mut self) {
        if let Some(m) = self.mounted.take() {
            m.unmount().unwrap();
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The lower path of an upper path of a mount with filename encryption (names
    /// encrypted here by core, independent of the mount).
    fn lower_of(&self, rel: &str) -> PathBuf {
        let fk = FilenameKey::new(self.skek.clone(), self.spec).unwrap();
        rel.split('/')
            .filter(|c| !c.is_empty())
            .fold(self.lower.clone(), |p, c| {
                p.join(String::from_utf8(fk.encrypt(c.as_bytes()).unwrap()).unwrap())
            })
    }

    /// Plaintext of a lower file by the core decryptor (independent of the mount).
    fn decrypt_lower(&self, lower: &Path) -> Vec<u8> {
        let mut f = File::open(lower).unwrap();
        let x = xattr::get(lower, XATTR_NAME).unwrap();
        let mut out = Vec::new();
        decrypt_file(&mut f, x.as_deref(), &*self.keys, &mut out)
            .unwrap_or_else(|e| panic!("{}: {e}", lower.display()));
        out
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn aes(bytes: usize) -> CipherSpec {
    CipherSpec::new(Cipher::Aes, bytes).unwrap()
}

/// Deterministic test data.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed)
        .collect()
}

fn lower_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(lower_files(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// The names in directory `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn contents_sizes_and_partial_writes_match_the_format() {
    let v = Vault::new(aes(16), Mode::default());
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, len) in [0usize, 1, 4095, 4096, 4097, 65537, (1 << 20) + 3]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u8);
        fs::write(v.p(&format!("f{len}")), &data).unwrap();
        model.insert(format!("f{len}"), data);
    }
    // Read-modify-write inside extents, across extent borders and past the end (gap).
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(v.p("f65537"))
        .unwrap();
    let m = model.get_mut("f65537").unwrap();
    for (off, len) in [
        (10usize, 5usize),
        (4090, 20),
        (8192, 4096),
        (65530, 100),
        (70000, 10),
    ] {
        let d = pattern(len, 0x5a);
        f.write_all_at(&d, off as u64).unwrap();
        if m.len() < off + len {
            m.resize(off + len, 0);
        }
        m[off..off + len].copy_from_slice(&d);
    }
    drop(f);
    // Truncate down inside an extent, then up (zeros, no lower holes).
    let f = OpenOptions::new().write(true).open(v.p("f4097")).unwrap();
    f.set_len(3000).unwrap();
    f.set_len(9000).unwrap();
    drop(f);
    let m = model.get_mut("f4097").unwrap();
    m.truncate(3000);
    m.resize(9000, 0);
    // Written as `tar -x` writes (write-only, record-sized pieces ending inside
    // extents: each next piece starts in the partial last extent), with an overwrite
    // inside that extent between two appends.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(v.p("pieces"))
        .unwrap();
    let mut m = Vec::new();
    for (i, len) in [9728usize, 10240, 10240, 777].into_iter().enumerate() {
        let d = pattern(len, 0x30 + i as u8);
        f.write_all(&d).unwrap();
        m.extend_from_slice(&d);
    }
    let end = m.len();
    f.write_all_at(b"inside", end as u64 - 10).unwrap();
    m[end - 10..end - 4].copy_from_slice(b"inside");
    f.write_all_at(b"after", end as u64).unwrap();
    m.extend_from_slice(b"after");
    drop(f);
    model.insert("pieces".into(), m);
    // O_APPEND.
    let mut f = OpenOptions::new().append(true).open(v.p("f1")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    model.get_mut("f1").unwrap().extend_from_slice(b"appended");

    for (name, data) in &model {
        assert_eq!(
            fs::metadata(v.p(name)).unwrap().len(),
            data.len() as u64,
            "{name} size"
        );
        assert!(
            fs::read(v.p(name)).unwrap() == *data,
            "{name} content via mount"
        );
    }
    let mut v = v;
    v.unmount();
    for (name, data) in &model {
        let lower = v.lower.join(name);
        if data.is_empty() {
            // Never written: an empty lower file, which the kernel reads as an empty
            // encrypted file (spec §4.7).
            assert_eq!(fs::metadata(&lower).unwrap().len(), 0);
            continue;
        }
        assert!(
            v.decrypt_lower(&lower) == *data,
            "{name} decrypts with the core"
        );
        // Lower size: 8192 + whole extents (spec §4.2), no holes.
        let meta = fs::metadata(&lower).unwrap();
        assert_eq!(
            meta.len(),
            8192 + (data.len() as u64).div_ceil(4096) * 4096,
            "{name} lower size"
        );
        assert!(
            meta.blocks() * 512 >= meta.len() - 4096,
            "{name} has lower holes"
        );
    }
    // Remount: sizes come from the headers.
    v.mount(Mode::default());
    for (name, data) in &model {
        assert!(
            fs::read(v.p(name)).unwrap() == *data,
            "{name} after remount"
        );
    }
}

#[test]
fn every_cipher_round_trips() {
    for (c, kb) in [
        (Cipher::Aes, 24),
        (Cipher::Aes, 32),
        (Cipher::Blowfish, 16),
        (Cipher::Blowfish, 56),
        (Cipher::Des3Ede, 24),
        (Cipher::Cast5, 16),
        (Cipher::Cast6, 32),
        (Cipher::Twofish, 32),
    ] {
        let mut v = Vault::new(CipherSpec::new(c, kb).unwrap(), Mode::default());
        let data = pattern(10_000, kb as u8);
        fs::write(v.p("x"), &data).unwrap();
        assert_eq!(fs::read(v.p("x")).unwrap(), data);
        v.unmount();
        assert_eq!(v.decrypt_lower(&v.lower.join("x")), data, "{c:?}-{kb}");
    }
}

#[test]
fn names_dirs_links_and_renames_with_fnek() {
    let mut v = Vault::new(aes(16), Mode::fnek());
    fs::create_dir_all(v.p("a/b")).unwrap();
    fs::write(v.p("a/b/file.txt"), b"hello").unwrap();
    fs::write(v.p("a/other"), b"other").unwrap();
    std::os::unix::fs::symlink("b/file.txt", v.p("a/link")).unwrap();
    assert_eq!(
        fs::read_link(v.p("a/link")).unwrap(),
        Path::new("b/file.txt")
    );
    assert_eq!(fs::symlink_metadata(v.p("a/link")).unwrap().len(), 10);
    assert_eq!(fs::read(v.p("a/link")).unwrap(), b"hello");
    fs::hard_link(v.p("a/other"), v.p("hard")).unwrap();
    assert_eq!(fs::metadata(v.p("hard")).unwrap().nlink(), 2);
    // Rename across directories and over an existing file.
    fs::rename(v.p("a/b/file.txt"), v.p("moved.txt")).unwrap();
    fs::rename(v.p("moved.txt"), v.p("a/other")).unwrap();
    assert_eq!(fs::read(v.p("a/other")).unwrap(), b"hello");
    assert_eq!(fs::read(v.p("hard")).unwrap(), b"other");
    fs::rename(v.p("a/b"), v.p("c")).unwrap();
    assert_eq!(names_in(&v.p("")), ["a", "c", "hard"]);
    // Entries the kernel knows list with the inode number stat gives them (`ls -i`,
    // scandir's inode() agree with `stat`).
    for e in fs::read_dir(v.p("")).unwrap() {
        let e = e.unwrap();
        let st = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(std::os::unix::fs::DirEntryExt::ino(&e), st.ino(), "{e:?}");
    }
    // 143 bytes is the longest name (spec §5.5).
    let long = "n".repeat(143);
    fs::write(v.p(&long), b"x").unwrap();
    let too_long = fs::write(v.p(&"n".repeat(144)), b"x").unwrap_err();
    assert_eq!(too_long.raw_os_error(), Some(libc::ENAMETOOLONG));
    fs::remove_file(v.p(&long)).unwrap();
    fs::remove_file(v.p("hard")).unwrap();
    fs::remove_dir(v.p("c")).unwrap();
    // A lower name that is not an encrypted name is hidden.
    fs::write(v.lower.join("lost+found"), b"").unwrap();
    assert!(fs::read_dir(v.p(""))
        .unwrap()
        .all(|e| e.unwrap().file_name() != "lost+found"));
    v.unmount();

    let fk = FilenameKey::new(v.skek.clone(), v.spec).unwrap();
    let mut plain = Vec::new();
    for e in fs::read_dir(&v.lower).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        if n == "lost+found" {
            continue;
        }
        assert!(n.starts_with(FNEK_PREFIX), "{n}");
        plain.push(String::from_utf8(fk.decrypt(n.as_bytes()).unwrap()).unwrap());
    }
    plain.sort();
    assert_eq!(plain, ["a"]);
    let a = v
        .lower
        .join(String::from_utf8(fk.encrypt(b"a").unwrap()).unwrap());
    let link =
        fs::read_link(a.join(String::from_utf8(fk.encrypt(b"link").unwrap()).unwrap())).unwrap();
    assert_eq!(
        fk.decrypt(link.as_os_str().as_encoded_bytes()).unwrap(),
        b"b/file.txt"
    );
    let other = a.join(String::from_utf8(fk.encrypt(b"other").unwrap()).unwrap());
    assert_eq!(v.decrypt_lower(&other), b"hello");
    // Files of an FNEK mount carry header flag 0x08.
    let mut head = vec![0u8; 4096];
    File::open(&other).unwrap().read_exact(&mut head).unwrap();
    assert!(Header::parse(&head).unwrap().encrypt_filenames());
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_flags_keep_their_meaning() {
    let mut v = Vault::new(aes(16), Mode::fnek());
    fs::write(v.p("a"), b"aaa").unwrap();
    fs::write(v.p("b"), b"bbbb").unwrap();
    let noreplace = renameat2(&v.p("a"), &v.p("b"), libc::RENAME_NOREPLACE);
    assert_eq!(noreplace.unwrap_err().raw_os_error(), Some(libc::EEXIST));
    assert_eq!(fs::read(v.p("a")).unwrap(), b"aaa");
    assert_eq!(fs::read(v.p("b")).unwrap(), b"bbbb");
    renameat2(&v.p("a"), &v.p("c"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&v.p("b"), &v.p("c"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(v.p("b")).unwrap(), b"aaa");
    assert_eq!(fs::read(v.p("c")).unwrap(), b"bbbb");
    // A plain rename replaces the target; one over a hard link of itself does nothing.
    fs::rename(v.p("b"), v.p("c")).unwrap();
    fs::hard_link(v.p("c"), v.p("d")).unwrap();
    fs::rename(v.p("c"), v.p("d")).unwrap();
    let err = fs::rename(v.p("d"), v.p("d/x")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    fs::create_dir(v.p("dir")).unwrap();
    let into_itself = fs::rename(v.p("dir"), v.p("dir/sub")).unwrap_err();
    assert_eq!(into_itself.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(names_in(&v.p("")), ["c", "d", "dir"]);
    assert_eq!(fs::read(v.p("d")).unwrap(), b"aaa");
    assert_eq!(fs::metadata(v.p("d")).unwrap().nlink(), 2);
    v.unmount();
    assert_eq!(lower_files(&v.lower).len(), 2);
}

#[test]
fn xattr_metadata_mode_hides_and_protects_the_header() {
    let mut v = Vault::new(
        aes(16),
        Mode {
            xattr: true,
            ..Mode::default()
        },
    );
    let data = pattern(5000, 7);
    fs::write(v.p("f"), &data).unwrap();
    xattr::set(v.p("f"), "user.color", b"blue").unwrap();
    assert_eq!(
        xattr::get(v.p("f"), "user.color").unwrap().unwrap(),
        b"blue"
    );
    let names: Vec<_> = xattr::list(v.p("f")).unwrap().collect();
    assert_eq!(names, ["user.color"]);
    assert!(xattr::get(v.p("f"), XATTR_NAME).unwrap().is_none());
    assert!(xattr::set(v.p("f"), XATTR_NAME, b"junk").is_err());
    assert!(xattr::remove(v.p("f"), XATTR_NAME).is_err());
    assert_eq!(fs::read(v.p("f")).unwrap(), data);
    v.unmount();
    let lower = v.lower.join("f");
    // Data only in the lower file, from offset 0.
    assert_eq!(fs::metadata(&lower).unwrap().len(), 8192);
    let h = Header::parse(&xattr::get(&lower, XATTR_NAME).unwrap().unwrap()).unwrap();
    assert!(h.in_xattr());
    assert_eq!(h.size, 5000);
    assert_eq!(v.decrypt_lower(&lower), data);
}

/// Write-only opens bypass the page cache: what they write is seen at once by a
/// reader holding the file open with its pages cached, and by new opens.
#[test]
fn write_only_writes_reach_open_readers() {
    let v = Vault::new(aes(16), Mode::default());
    let old = pattern(20000, 1);
    fs::write(v.p("f"), &old).unwrap();
    let reader = File::open(v.p("f")).unwrap();
    let mut got = vec![0; old.len()];
    reader.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, old);
    let mut want = old.clone();
    let w = OpenOptions::new().write(true).open(v.p("f")).unwrap();
    // Inside a page, then across a page boundary and past the end.
    for (at, data) in [(5000, pattern(3, 9)), (19990, pattern(100, 8))] {
        w.write_all_at(&data, at as u64).unwrap();
        want.resize(want.len().max(at + data.len()), 0);
        want[at..at + data.len()].copy_from_slice(&data);
        let mut got = vec![0; want.len()];
        reader.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, want, "open reader after a write at {at}");
    }
    drop(w);
    assert_eq!(fs::read(v.p("f")).unwrap(), want, "new open");
    // A shared mapping of the file sees them too.
    let len = want.len();
    // SAFETY: a read-only shared mapping of an open file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            reader.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    // SAFETY: `map` is a live mapping of `len` bytes until the munmap below.
    let mapped = |at: usize, n: usize| unsafe {
        std::slice::from_raw_parts((map as *const u8).add(at), n).to_vec()
    };
    assert_eq!(mapped(0, len), want, "mapping");
    let w = OpenOptions::new().write(true).open(v.p("f")).unwrap();
    w.write_all_at(b"MAP", 100).unwrap();
    assert_eq!(mapped(100, 3), b"MAP", "mapping after a write");
    // SAFETY: unmaps the mapping made above; `mapped` is not used after.
    unsafe { libc::munmap(map, len) };
}

/// Unlinked files are freed after the reply, not never: the daemon (in this process)
/// soon holds no fd of a removed lower file, and their names are gone at once.
#[test]
fn unlinked_files_are_released() {
    let v = Vault::new(aes(16), Mode::fnek());
    fs::create_dir(v.p("d")).unwrap();
    for i in 0..200 {
        fs::write(v.p(&format!("d/f{i}")), pattern(5000, i as u8)).unwrap();
    }
    let lower_dir: Vec<PathBuf> = fs::read_dir(&v.lower)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(lower_dir.len(), 1);
    let held_deleted = || {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .filter(|t| t.starts_with(&lower_dir[0]) && t.to_string_lossy().ends_with(" (deleted)"))
            .count()
    };
    fs::remove_dir_all(v.p("d")).unwrap();
    assert!(!lower_dir[0].exists());
    let mut held = held_deleted();
    for _ in 0..100 {
        if held == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        held = held_deleted();
    }
    assert_eq!(held, 0, "fds of unlinked lower files still held");
}

/// The fd table is grown once at mount for every fd the daemon may hold (growing it
/// later makes every opening thread wait a grace period): a walk that caches hundreds
/// of directory fds finds it large enough.
#[test]
fn fd_table_is_reserved_at_mount() {
    let fd_size = || {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse::<u64>().unwrap()
    };
    let mut v = Vault::new(aes(16), Mode::fnek());
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let want = limit.min(strongroom_fuse::FDS_RESERVED);
    let at_mount = fd_size();
    assert!(
        at_mount >= want,
        "fd table of {at_mount} at mount, {want} wanted"
    );
    for i in 0..300 {
        fs::create_dir_all(v.p(&format!("d{}/e{i}", i % 3))).unwrap();
    }
    // A cold walk: the daemon opens and caches a lower fd per directory.
    v.unmount();
    v.mount(Mode::fnek());
    let mut listed = 0;
    for d in 0..3 {
        for e in fs::read_dir(v.p(&format!("d{d}"))).unwrap() {
            listed += fs::read_dir(e.unwrap().path()).unwrap().count() + 1;
        }
    }
    assert_eq!(listed, 300);
    assert_eq!(fd_size(), at_mount, "the fd table grew during the walk");
}

/// Write-only opens send no FLUSH: a small file's size reaches its lower header with
/// each write, a larger one's at release (right after the close), even while a reader
/// keeps the file open.
#[test]
fn sizes_reach_the_lower_header_without_flush() {
    let v = Vault::new(aes(16), Mode::default());
    let lower_size = |name: &str| {
        let mut head = vec![0u8; 8192];
        File::open(v.lower.join(name))
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        Header::parse(&head).unwrap().size
    };
    let mut w = File::create(v.p("small")).unwrap();
    w.write_all(&pattern(5000, 1)).unwrap();
    assert_eq!(lower_size("small"), 5000, "before the close");
    drop(w);
    fs::write(v.p("big"), b"x").unwrap();
    let reader = File::open(v.p("big")).unwrap();
    let big = pattern(3 << 20, 2);
    fs::write(v.p("big"), &big).unwrap();
    let mut size = lower_size("big");
    for _ in 0..100 {
        if size == big.len() as u64 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        size = lower_size("big");
    }
    assert_eq!(
        size,
        big.len() as u64,
        "after the close, a reader still open"
    );
    drop(reader);
    assert_eq!(fs::read(v.p("big")).unwrap(), big);
}

/// Only `user.*` is ours. Other namespaces answer EOPNOTSUPP for reads too, as for
/// writes: `ls -l` then stops asking for labels and ACLs after the first file, where
/// ENODATA would cost it two requests per file.
#[test]
fn other_xattr_namespaces_are_not_supported() {
    let v = Vault::new(aes(16), Mode::default());
    fs::write(v.p("f"), b"x").unwrap();
    // A valid ACL (u::rw-, g::r--, o::r--): the kernel checks the value first.
    let acl: Vec<u8> = [2u32.to_le_bytes(), [1, 0, 6, 0], [0xff; 4], [4, 0, 4, 0]]
        .into_iter()
        .chain([[0xff; 4], [0x20, 0, 4, 0], [0xff; 4]])
        .flatten()
        .collect();
    let err = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    for (name, value) in [
        ("security.selinux", &b"v"[..]),
        ("system.posix_acl_access", &acl),
        ("trusted.x", b"v"),
    ] {
        let get = xattr::get(v.p("f"), name).map(|_| ());
        assert_eq!(err(get), Some(libc::EOPNOTSUPP), "get {name}");
        let set = xattr::set(v.p("f"), name, value);
        assert_eq!(err(set), Some(libc::EOPNOTSUPP), "set {name}");
        let remove = xattr::remove(v.p("f"), name);
        assert_eq!(err(remove), Some(libc::EOPNOTSUPP), "remove {name}");
    }
    assert!(xattr::get(v.p("f"), "user.absent").unwrap().is_none());
}

#[test]
fn passthrough_read_only_and_encrypted_view() {
    let mut v = Vault::new(
        aes(16),
        Mode {
            passthrough: true,
            ..Mode::default()
        },
    );
    fs::write(v.lower.join("plain.txt"), b"not encrypted").unwrap();
    fs::write(v.p("secret"), b"secret data").unwrap();
    assert_eq!(fs::read(v.p("plain.txt")).unwrap(), b"not encrypted");
    assert_eq!(fs::metadata(v.p("plain.txt")).unwrap().len(), 13);
    v.unmount();

    v.mount(Mode {
        read_only: true,
        ..Mode::default()
    });
    assert_eq!(fs::read(v.p("secret")).unwrap(), b"secret data");
    assert_eq!(
        fs::write(v.p("new"), b"x").unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    // Without passthrough a non-eCryptfs file is an I/O error, as in the kernel.
    assert_eq!(
        fs::read(v.p("plain.txt")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    v.unmount();

    v.mount(Mode {
        encrypted_view: true,
        ..Mode::default()
    });
    assert_eq!(
        fs::read(v.p("secret")).unwrap(),
        fs::read(v.lower.join("secret")).unwrap()
    );
    v.unmount();
}

#[test]
fn large_sparse_file_beyond_4_gib() {
    let v = Vault::new(aes(16), Mode::default());
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(v.p("big"))
        .unwrap();
    let off = (4u64 << 30) + 12345;
    f.write_all_at(b"tail", off).unwrap();
    f.sync_all().unwrap();
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, off - 4).unwrap();
    assert_eq!(&buf, b"\0\0\0\0tail");
    let mut mid = vec![1u8; 4096];
    f.read_exact_at(&mut mid, 1 << 31).unwrap();
    assert!(mid.iter().all(|&b| b == 0));
    assert_eq!(f.metadata().unwrap().len(), off + 4);
    drop(f);
    let lower = fs::metadata(v.lower.join("big")).unwrap();
    assert_eq!(lower.len(), 8192 + (off + 4).div_ceil(4096) * 4096);
    fs::remove_file(v.p("big")).unwrap();
}

#[test]
fn chmod_chown_utimens_statfs_fsync() {
    let v = Vault::new(aes(16), Mode::fnek());
    fs::write(v.p("f"), b"x").unwrap();
    fs::set_permissions(v.p("f"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(v.p("f")).unwrap().mode() & 0o7777, 0o640);
    let out = Command::new("touch")
        .args(["-m", "-d", "2001-02-03 04:05:06 UTC"])
        .arg(v.p("f"))
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(fs::metadata(v.p("f")).unwrap().mtime(), 981173106);
    if nix_is_root() {
        std::os::unix::fs::chown(v.p("f"), Some(1234), Some(5678)).unwrap();
        let m = fs::metadata(v.p("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
    let out = Command::new("stat")
        .args(["-f", "-c", "%l"])
        .arg(&v.mnt)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "143");
    let mut f = OpenOptions::new().write(true).open(v.p("f")).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"yz").unwrap();
    f.sync_all().unwrap();
    // fsync recorded the size in the header.
    let mut lower = fs::read_dir(&v.lower)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    if lower.is_dir() {
        lower = lower_files(&lower)[0].clone();
    }
    let mut head = [0u8; 16];
    File::open(&lower).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(Header::peek_size(&head), Some(3));
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether a test that needs root can run: as the other suites needing real parts, it
/// is skipped outside CI only (it fails when STRONGROOM_REQUIRE_REAL is set).
fn root_for(why: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    let required = std::env::var_os("STRONGROOM_REQUIRE_REAL").is_some();
    assert!(!required, "needs root ({why})");
    eprintln!("SKIPPED: needs root ({why})");
    false
}

/// Kernel-made trees (tests/fixtures/kernel) read back through the mount.
#[test]
fn kernel_fixtures_mount_and_read() {
    let pass = fs::read_to_string(Path::new(FIXTURES).join("passphrase.txt")).unwrap();
    let pass = pass.trim_end_matches('\n');
    let main = skek(pass, &DEFAULT_SALT);
    let sep = skek(pass, &FNEK_SALT);
    // Every set of both fixture trees (kernel: AES modes; kernel-ciphers: the others).
    let mut sets = Vec::new();
    for tree in [FIXTURES.to_owned(), format!("{FIXTURES}-ciphers")] {
        for e in fs::read_dir(&tree).unwrap() {
            let p = e.unwrap().path();
            if p.join("info.txt").is_file() {
                sets.push(p);
            }
        }
    }
    assert!(sets.len() >= 15, "fixture sets missing: {sets:?}");
    for set_dir in &sets {
        let set = set_dir.display();
        let info = fs::read_to_string(set_dir.join("info.txt")).unwrap();
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let kb: usize = field("key_bytes").parse().unwrap();
        let fnek = match field("fnek").as_str() {
            "none" => None,
            "same" => Some(main.clone()),
            _ => Some(sep.clone()),
        };
        let xattr = field("xattr") == "1";
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(set_dir.join("lower"))
            .arg(&lower)
            .status()
            .unwrap()
            .success());
        if xattr {
            let dump = set_dir.join("xattrs.dump");
            let ok = Command::new("setfattr")
                .arg(format!("--restore={}", dump.display()))
                .current_dir(&lower)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let mut ks = KeySet::new();
        ks.add_passphrase(main.clone());
        // The filename key's cipher comes from the mount (spec §10.6).
        let spec = CipherSpec::new(Cipher::from_name(&field("cipher")).unwrap(), kb).unwrap();
        let o = options(
            &lower,
            &main,
            spec,
            Arc::new(ks),
            fnek,
            Mode {
                xattr,
                read_only: true,
                ..Mode::default()
            },
        );
        let m = mount(o, &mnt).unwrap();
        let map = fs::read_to_string(set_dir.join("names.map")).unwrap();
        let mut checked = 0;
        for line in map.lines() {
            let (_, plain) = line.split_once('\t').unwrap();
            let want = Path::new(FIXTURES).join("plain").join(plain);
            if want.is_file() {
                let got =
                    fs::read(mnt.join(plain)).unwrap_or_else(|e| panic!("{set}/{plain}: {e}"));
                assert!(got == fs::read(&want).unwrap(), "{set}/{plain}");
                assert_eq!(
                    fs::metadata(mnt.join(plain)).unwrap().len(),
                    got.len() as u64
                );
                checked += 1;
            } else {
                assert!(mnt.join(plain).is_dir(), "{set}/{plain}");
            }
        }
        assert!(checked >= 8, "{set}: only {checked} files");
        m.unmount().unwrap();
    }
}

/// Listings carry attributes (READDIRPLUS) on some walks and not on others, from sizes
/// read in batches, cached, or kept in memory for open files: whatever the walk, every
/// entry must show its plaintext size.
#[test]
fn listings_show_plaintext_sizes_on_every_walk() {
    let mut v = Vault::new(aes(32), Mode::fnek());
    let expected = |i: usize| if i.is_multiple_of(10) { 0 } else { i * 37 + 1 };
    fs::create_dir_all(v.p("d/sub")).unwrap();
    // More files than one attribute batch.
    for i in 0..150 {
        fs::write(v.p(&format!("d/f{i:03}")), pattern(expected(i), i as u8)).unwrap();
    }
    std::os::unix::fs::symlink("f001", v.p("d/link")).unwrap();
    let sizes = |v: &Vault| -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = fs::read_dir(v.p("d"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, e.metadata().unwrap().len())
            })
            .filter(|(n, _)| n.starts_with('f'))
            .collect();
        out.sort();
        out
    };
    let want: Vec<(String, u64)> = (0..150)
        .map(|i| (format!("f{i:03}"), expected(i) as u64))
        .collect();
    let remount = |v: &mut Vault| {
        v.unmount();
        v.mount(Mode::fnek());
    };
    // Cold, stat-ing while listing; then again (walked before).
    remount(&mut v);
    assert_eq!(sizes(&v), want);
    assert_eq!(sizes(&v), want);
    // Cold, names only first (as `find`), then stat-ing (as `du`).
    remount(&mut v);
    let names = fs::read_dir(v.p("d")).unwrap().count();
    assert_eq!(names, 152);
    assert_eq!(sizes(&v), want);
    // A file open and growing: its size is in memory before it reaches the header.
    remount(&mut v);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(v.p("d/f005"))
        .unwrap();
    f.write_all(&[7u8; 5000]).unwrap();
    let mut grown = want.clone();
    grown[5].1 += 5000;
    assert_eq!(sizes(&v), grown);
    drop(f);
    assert_eq!(sizes(&v), grown);
    assert_eq!(
        fs::symlink_metadata(v.p("d/link")).unwrap().len(),
        4,
        "a symlink's size is its plaintext target's length"
    );
}

/// Modes after writes and truncates by root and by another user, on a set-ID file in
/// `dir` (world-writable so that the other user may write).
fn set_id_modes_after_writes(dir: &Path) -> Vec<u32> {
    let f = dir.join("setid");
    let as_nobody = |cmd: &str| {
        let ok = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(cmd)
            .arg("sh")
            .arg(&f)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd} as nobody");
    };
    let mode = |f: &Path| fs::metadata(f).unwrap().permissions().mode() & 0o7777;
    let set = |m: u32| fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
    fs::write(&f, b"set-id").unwrap();
    let mut out = Vec::new();
    set(0o6777);
    as_nobody(r#"printf x >> "$1""#);
    out.push(mode(&f));
    set(0o6777);
    as_nobody(r#"truncate -s 2 "$1""#);
    out.push(mode(&f));
    set(0o6777);
    OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"root")
        .unwrap();
    out.push(mode(&f));
    set(0o2767);
    as_nobody(r#"printf x >> "$1""#);
    out.push(mode(&f));
    // Read-write opens write through the page cache, write-only ones do not.
    set(0o6777);
    as_nobody(r#"printf y 1<> "$1""#);
    out.push(mode(&f));
    // The writer in the file's group keeps a set-group-ID without group execute.
    std::os::unix::fs::chown(&f, None, Some(65534)).unwrap();
    set(0o2767);
    as_nobody(r#"printf x >> "$1""#);
    out.push(mode(&f));
    out
}

/// The daemon, not the kernel, clears set-user-ID and set-group-ID bits when a file is
/// written or truncated (FUSE_HANDLE_KILLPRIV_V2): the result must be what the
/// kernel's own file systems do, here a plain directory beside the mount.
#[test]
fn writes_clear_set_id_bits_as_the_kernel_does() {
    if !root_for("another user writes through allow_other") {
        return;
    }
    let v = Vault::new(
        aes(16),
        Mode {
            allow_other: true,
            ..Mode::fnek()
        },
    );
    let plain = tempfile::tempdir().unwrap();
    for d in [v._dir.path(), &v.mnt, plain.path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let want = set_id_modes_after_writes(plain.path());
    assert_eq!(set_id_modes_after_writes(&v.mnt), want);
    // And the modes are those of the lower file, not only what the kernel cached.
    let lower = lower_files(&v.lower);
    assert_eq!(lower.len(), 1);
    assert_eq!(
        fs::metadata(&lower[0]).unwrap().permissions().mode() & 0o7777,
        *want.last().unwrap()
    );
}

/// Listings are kept between opens and edited by the mount's own changes: after every
/// kind of change, and after changes made to the lower directory behind the mount, a
/// listing must show what the lower directory holds (its names decrypted here by core).
#[test]
fn kept_listings_follow_every_change() {
    let v = Vault::new(aes(16), Mode::fnek());
    let fk = FilenameKey::new(v.skek.clone(), v.spec).unwrap();
    // Each listing three times, stat-ing every entry: the kernel copies a listing at
    // its second open and serves the third from its copy.
    let check = |dirs: &[&str]| {
        for dir in dirs.iter().chain(dirs).chain(dirs) {
            let mut upper: Vec<String> = fs::read_dir(v.p(dir))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let _ = e.metadata();
                    e.file_name().into_string().unwrap()
                })
                .collect();
            let mut lower: Vec<String> = fs::read_dir(v.lower_of(dir))
                .unwrap()
                .filter_map(|e| fk.decrypt(e.unwrap().file_name().as_bytes()).ok())
                .map(|n| String::from_utf8(n).unwrap())
                .collect();
            upper.sort();
            lower.sort();
            assert_eq!(upper, lower, "listing of {dir:?}");
        }
    };
    fs::create_dir(v.p("a")).unwrap();
    fs::create_dir(v.p("b")).unwrap();
    for i in 1..=5 {
        fs::write(v.p(&format!("a/f{i}")), b"x").unwrap();
    }
    check(&["", "a", "b"]);
    fs::rename(v.p("a/f1"), v.p("a/g1")).unwrap();
    check(&["a"]);
    fs::rename(v.p("a/f2"), v.p("b/f2")).unwrap();
    check(&["a", "b"]);
    fs::rename(v.p("a/f3"), v.p("a/f4")).unwrap();
    check(&["a"]);
    fs::hard_link(v.p("a/f5"), v.p("b/h5")).unwrap();
    std::os::unix::fs::symlink("f5", v.p("a/s")).unwrap();
    Command::new("mkfifo").arg(v.p("a/p")).status().unwrap();
    check(&["a", "b"]);
    fs::remove_file(v.p("a/g1")).unwrap();
    fs::create_dir(v.p("a/sub")).unwrap();
    check(&["a"]);
    fs::remove_dir(v.p("a/sub")).unwrap();
    check(&["a"]);
    fs::rename(v.p("b"), v.p("a/b2")).unwrap();
    check(&["", "a", "a/b2"]);
    // Exchange (renameat2): both names stay, with swapped files.
    let (x, y) = (v.p("a/f4"), v.p("a/f5"));
    let cx = std::ffi::CString::new(x.as_os_str().as_bytes()).unwrap();
    let cy = std::ffi::CString::new(y.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid C strings; the call reads nothing else of ours.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cx.as_ptr(),
            libc::AT_FDCWD,
            cy.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    check(&["a"]);
    // Behind the mount's back: a lower file removed, another renamed.
    fs::remove_file(v.lower_of("a/f4")).unwrap();
    fs::rename(v.lower_of("a/s"), v.lower_of("a/s2")).unwrap();
    check(&["a"]);
}

fn not_found(p: &Path) -> bool {
    fs::symlink_metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The kernel keeps "no such file" for the TTL, as it keeps entries that are there.
/// Every way of making a name the kernel knows to be missing works, and a lower entry
/// that appears behind the mount's back is neither clobbered nor hidden from an open
/// that may create: `O_EXCL` fails, `O_CREAT` opens the existing file, `mkdir` fails.
#[test]
fn missing_names_are_remembered_and_can_be_made() {
    let v = Vault::new(aes(16), Mode::fnek());
    fs::write(v.p("src"), b"kept").unwrap();
    fs::create_dir(v.p("d")).unwrap();
    let names = [
        "file", "dir", "link", "sym", "moved", "ghost", "ghost2", "ghost3",
    ];
    for n in names {
        assert!(not_found(&v.p(n)), "{n}");
    }

    // Behind the mount's back: three lower entries appear. The kernel still holds the
    // negative entries (within the TTL), so a plain lookup does not see them.
    for g in ["ghost", "ghost2", "ghost3"] {
        fs::hard_link(v.lower_of("src"), v.lower_of(g)).unwrap();
    }
    assert!(not_found(&v.p("ghost")));
    let excl = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(v.p("ghost"));
    assert_eq!(excl.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(v.p("ghost2"))
        .unwrap();
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "kept", "O_CREAT opened the lower file, untouched");
    drop(f);
    assert_eq!(
        fs::create_dir(v.p("ghost3")).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );

    // Names the kernel knows to be missing, made through the mount.
    fs::write(v.p("file"), b"new").unwrap();
    fs::create_dir(v.p("dir")).unwrap();
    fs::hard_link(v.p("src"), v.p("link")).unwrap();
    std::os::unix::fs::symlink("src", v.p("sym")).unwrap();
    fs::rename(v.p("d"), v.p("moved")).unwrap();
    assert_eq!(fs::read(v.p("file")).unwrap(), b"new");
    assert!(fs::metadata(v.p("dir")).unwrap().is_dir());
    assert_eq!(fs::read(v.p("link")).unwrap(), b"kept");
    assert_eq!(fs::read(v.p("sym")).unwrap(), b"kept");
    assert!(fs::metadata(v.p("moved")).unwrap().is_dir());
    assert!(not_found(&v.p("d")));
    // Removed names are missing again, and can be made again.
    fs::remove_file(v.p("file")).unwrap();
    fs::remove_dir(v.p("dir")).unwrap();
    assert!(not_found(&v.p("file")) && not_found(&v.p("dir")));
    fs::write(v.p("file"), b"again").unwrap();
    assert_eq!(fs::read(v.p("file")).unwrap(), b"again");

    // The lower directory holds what the mount shows (ghost and ghost3 are seen once
    // the kernel looked them up afresh for O_EXCL and mkdir).
    let want = [
        "file", "ghost", "ghost2", "ghost3", "link", "moved", "src", "sym",
    ];
    assert_eq!(names_in(&v.mnt), want);
    for n in want {
        assert!(v.lower_of(n).symlink_metadata().is_ok(), "{n} in the lower");
    }
    assert_eq!(fs::read(v.p("ghost")).unwrap(), b"kept");
}

/// Listed entries carry the inode number `stat` gives them, also after the kernel forgot
/// them and looked them up again under new node ids: neither the node ids remembered in
/// kept listings nor the kernel's own copy of a listing may outlive the nodes.
#[test]
fn listed_inode_numbers_follow_forgotten_nodes() {
    if !root_for("dropping the kernel's inodes") {
        return;
    }
    let mut v = Vault::new(aes(16), Mode::fnek());
    fs::create_dir(v.p("d")).unwrap();
    for i in 0..20 {
        fs::write(v.p(&format!("d/f{i:02}")), b"x").unwrap();
    }
    // Kept open, `d` stays known with its kept listing and the kernel's copy of it.
    let _pin = File::open(v.p("d")).unwrap();
    let stats = |v: &Vault| -> BTreeMap<String, u64> {
        (0..20)
            .map(|i| format!("f{i:02}"))
            .map(|n| {
                let ino = fs::symlink_metadata(v.p(&format!("d/{n}"))).unwrap().ino();
                (n, ino)
            })
            .collect()
    };
    let listed = |v: &Vault| -> BTreeMap<String, u64> {
        fs::read_dir(v.p("d"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let ino = std::os::unix::fs::DirEntryExt::ino(&e);
                (e.file_name().into_string().unwrap(), ino)
            })
            .collect()
    };
    let before = stats(&v);
    // Listed afresh, copied by the kernel, served from its copy.
    for _ in 0..3 {
        assert_eq!(listed(&v), before);
    }
    // The kernel forgets the files' inodes; stat looks them up again as new nodes.
    let mut after = before.clone();
    for _ in 0..50 {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = stats(&v);
        if after.iter().all(|(n, ino)| before[n] != *ino) {
            break;
        }
    }
    assert!(
        after.iter().all(|(n, ino)| before[n] != *ino),
        "the kernel kept the inodes: {before:?} {after:?}"
    );
    for _ in 0..3 {
        assert_eq!(listed(&v), after);
    }
    drop(_pin);

    // Cold, listed twice by names only (READDIR: most entries unknown to the kernel,
    // their d_ino a guess), then stat-ed: the kernel must not serve its copy with the
    // guesses. More entries than one READDIRPLUS reply holds.
    for i in 20..600 {
        fs::write(v.p(&format!("d/f{i:03}")), b"x").unwrap();
    }
    v.unmount();
    v.mount(Mode::fnek());
    let _pin = File::open(v.p("d")).unwrap();
    for _ in 0..2 {
        assert_eq!(fs::read_dir(v.p("d")).unwrap().count(), 600);
    }
    let stats: BTreeMap<String, u64> = fs::read_dir(v.p("d"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    for _ in 0..3 {
        assert_eq!(listed(&v), stats);
    }
}
