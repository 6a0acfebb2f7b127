//! `encrypt`, `decrypt`, `stat` and `find`: eCryptfs lower trees without a mount,
//! mirroring what the kernel writes and reads.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;
use strongroom_core::cipher::{cipher_for_code, Cipher, CipherSpec};
use strongroom_core::file::{decrypt_file, encrypt_file, read_header, WriteContext};
use strongroom_core::filename::{FilenameKey, NameError, FNEK_PREFIX};
use strongroom_core::header::{Header, HEADER_READ_SIZE, XATTR_NAME};
use strongroom_core::kdf::{derive_skek, Passphrase, Salt, Skek, FNEK_SALT};
use strongroom_core::keys::{KeyError, KeySet, WrappingKey};
use strongroom_core::packet::KeyPacket;
use strongroom_core::rc;

use crate::keyfile::KeyFileArgs;
use crate::{exit, secret};

/// How file names are encrypted (the two conventions of the eCryptfs tools).
#[derive(Debug, Args, Clone, Copy)]
#[command(group(ArgGroup::new("fnek_mode").multiple(false)))]
pub struct NameArgs {
    /// Filename encryption with the passphrase's own key as FNEK (what mount.ecryptfs
    /// proposes by default: ecryptfs_fnek_sig = ecryptfs_sig).
    #[arg(long, group = "fnek_mode")]
    fnek: bool,
    /// Filename encryption with the separate FNEK of `ecryptfs-add-passphrase --fnek`
    /// and ecryptfs-setup-private (same passphrase, salt = the ASCII bytes "99887766").
    #[arg(long, group = "fnek_mode")]
    fnek_separate: bool,
}

impl NameArgs {
    fn any(&self) -> bool {
        self.fnek || self.fnek_separate
    }

    /// The FNEK's SKEK, if filename encryption is on.
    fn fnek_skek(&self, pass: &Passphrase, main: &Skek) -> Option<Skek> {
        if self.fnek {
            Some(main.clone())
        } else if self.fnek_separate {
            Some(derive_skek(pass, &FNEK_SALT))
        } else {
            None
        }
    }
}

#[derive(Debug, Args)]
#[command(
    about = "Encrypt a plain directory tree into an eCryptfs lower tree",
    long_about = "Writes an eCryptfs lower directory that the Linux kernel (mount -t ecryptfs) and \
`strongroomctl mount` can mount, exactly as the kernel would have written it: every regular file \
gets a fresh random file key wrapped with the passphrase's key (tag 3 + tag 11), or with the \
public half of --keyfile's OpenSSL RSA key (tag 1, names stay plain), an 8192-byte header and \
4096-byte encrypted extents. Directories and symlinks are recreated, with their names (and \
symlink targets) encrypted when --fnek or --fnek-separate is given. Modes and modification times \
are kept.\n\n\
The key is the one `ecryptfs-add-passphrase` (and mount.ecryptfs's key=passphrase) derive: salt from \
~/.ecryptfsrc `salt=`, else 0011223344556677. Mount the result with \
ecryptfs_sig=<sig>,ecryptfs_cipher=<cipher>,ecryptfs_key_bytes=<n> (plus ecryptfs_fnek_sig=, \
ecryptfs_xattr_metadata as chosen); the sigs are printed at the end.\n\n\
LOWER_OUT must not exist or be empty, and must not lie inside PLAINDIR. Files that cannot be \
encrypted (unreadable, names too long for filename encryption, special files) are reported on \
stderr; the rest is still written and the exit status is 1."
)]
pub struct EncryptArgs {
    /// Read the passphrase from this file (first line, or a passphrase_passwd= line).
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    key: KeyFileArgs,
    /// Contents (and filename) cipher: aes, blowfish, des3_ede, cast5, cast6, twofish.
    #[arg(long, default_value = "aes", value_parser = parse_cipher)]
    cipher: Cipher,
    /// Key size in bytes (aes 16/24/32, blowfish 16/32/56, des3_ede 24, cast5 16,
    /// cast6 16/32, twofish 16/32).
    #[arg(long, default_value_t = 16, value_name = "N")]
    key_bytes: usize,
    #[command(flatten)]
    names: NameArgs,
    /// Keep each file's header in its `user.ecryptfs` extended attribute
    /// (ecryptfs_xattr_metadata); LOWER_OUT must support user xattrs.
    #[arg(long)]
    xattr: bool,
    /// The plain directory to encrypt.
    plaindir: PathBuf,
    /// Where to write the lower (encrypted) tree.
    lower_out: PathBuf,
}

#[derive(Debug, Args)]
#[command(
    about = "Decrypt an eCryptfs lower tree into a plain directory, without mounting",
    long_about = "Reads a lower directory written by the kernel's eCryptfs (or by Strongroom) and \
writes the decrypted tree. Cipher and key size of every file come from its header; file names are \
decrypted with --fnek or --fnek-separate (the filename key size is found from the names). \
Trees encrypted with an OpenSSL RSA key (tag 1) are decrypted with --keyfile.\n\n\
A file that cannot be decrypted (damaged header, unknown key, wrong passphrase, a plain file among \
encrypted ones, a name that is not valid encrypted text) is reported on stderr with its path and \
the reason and left out; everything else is still decrypted and the exit status is 1. Usage errors \
exit with 2.\n\n\
PLAIN_OUT must not exist or be empty, and must not lie inside LOWERDIR."
)]
pub struct DecryptArgs {
    /// Read the passphrase from this file (first line, or a passphrase_passwd= line).
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    key: KeyFileArgs,
    #[command(flatten)]
    names: NameArgs,
    /// Headers are in the `user.ecryptfs` extended attributes (ecryptfs_xattr_metadata).
    #[arg(long)]
    xattr: bool,
    /// The lower (encrypted) directory.
    lowerdir: PathBuf,
    /// Where to write the decrypted tree.
    plain_out: PathBuf,
}

#[derive(Debug, Args)]
#[command(
    about = "Show the eCryptfs header of a lower file (like ecryptfs-stat, and more)",
    long_about = "Prints what ecryptfs-stat prints (file version, decrypted size, header bytes, \
where the metadata is, encryption and HMAC flags), then the key packets: for each, the key \
signature, the kind of key (passphrase or public key), the contents cipher and key size, and the \
lower file size the kernel expects. No key is needed. The header is read from the file, else from \
its user.ecryptfs extended attribute."
)]
pub struct StatArgs {
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
    /// The lower file.
    file: PathBuf,
}

#[derive(Debug, Args)]
#[command(
    about = "Translate file names: encrypted lower name <-> plain name",
    long_about = "For each NAME: a name that starts with ECRYPTFS_FNEK_ENCRYPTED. is decrypted, any \
other name is encrypted. A NAME with slashes is treated as a path and each component is \
translated, so a plain path inside a vault becomes the lower path to look for (and back).\n\n\
The filename key is --fnek (the passphrase's own key, default) or --fnek-separate. Encrypting \
needs the filename cipher and key size of the vault (--cipher, --key-bytes); decrypting finds \
them from the name.\n\n\
--json prints an array of {\"input\", \"output\"} objects."
)]
#[command(group(ArgGroup::new("find_fnek").multiple(false)))]
pub struct FindArgs {
    /// Read the passphrase from this file (first line, or a passphrase_passwd= line).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The FNEK is the passphrase's own key (default).
    #[arg(long, group = "find_fnek")]
    fnek: bool,
    /// The FNEK is ecryptfs-utils' separate filename key.
    #[arg(long, group = "find_fnek")]
    fnek_separate: bool,
    /// Filename cipher, for encrypting names.
    #[arg(long, default_value = "aes", value_parser = parse_cipher)]
    cipher: Cipher,
    /// Filename key size in bytes, for encrypting names.
    #[arg(long, default_value_t = 16, value_name = "N")]
    key_bytes: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Names or paths to translate.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<OsString>,
}

fn parse_cipher(s: &str) -> Result<Cipher, String> {
    Cipher::from_name(s).map_err(|e| e.to_string())
}

/// The passphrase and its main key, with the salt ecryptfs-add-passphrase would use.
fn passphrase_key(file: Option<&Path>) -> Result<(Passphrase, Skek)> {
    let pass = secret::obtain(file, "Passphrase: ")?;
    let salt = user_salt()?;
    let skek = derive_skek(&pass, &salt);
    Ok((pass, skek))
}

fn user_salt() -> Result<Salt> {
    let home = rc::current_home().context("cannot find your home directory")?;
    let path = rc::rc_path(&home);
    rc::salt_or_default(&path).with_context(|| format!("{}", path.display()))
}

/// A usage problem: reported with exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Creates `out` (or checks that it is empty) and refuses nesting with `input`.
fn prepare_output(input: &Path, out: &Path) -> Result<()> {
    let input =
        fs::canonicalize(input).map_err(|e| UsageError(format!("{}: {e}", input.display())))?;
    if !input.is_dir() {
        return Err(UsageError(format!("{} is not a directory", input.display())).into());
    }
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(
                    UsageError(format!("output directory {} is not empty", out.display())).into(),
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?
        }
        Err(e) => return Err(UsageError(format!("{}: {e}", out.display())).into()),
    }
    let out_abs = fs::canonicalize(out)?;
    if out_abs.starts_with(&input) || input.starts_with(&out_abs) {
        return Err(UsageError(format!(
            "{} and {} must not contain each other",
            input.display(),
            out.display()
        ))
        .into());
    }
    Ok(())
}

/// Per-item failures, reported as they happen; the walk goes on.
#[derive(Default)]
struct Failures(usize);

impl Failures {
    fn report(&mut self, path: &Path, err: impl std::fmt::Display) {
        self.0 += 1;
        eprintln!("strongroomctl: {}: {err}", path.display());
    }

    fn exit_code(&self) -> i32 {
        if self.0 == 0 {
            exit::OK
        } else {
            eprintln!("strongroomctl: {} item(s) failed", self.0);
            exit::FAILED
        }
    }
}

/// Sorted directory entries (deterministic order and output).
fn entries(dir: &Path) -> std::io::Result<Vec<fs::DirEntry>> {
    let mut v = fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Mode and mtime of `meta` onto `path` (what `cp -a` keeps).
fn copy_attrs(path: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    fs::set_permissions(
        path,
        fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    )?;
    File::options()
        .write(meta.is_file())
        .read(!meta.is_file())
        .open(path)?
        .set_modified(meta.modified()?)
}

/// One direction of a tree copy: how names (and symlink targets) and regular files
/// are transformed. Directories, symlinks and attributes are handled alike.
trait TreeCopy {
    /// "encrypt" or "decrypt", for messages.
    const VERB: &'static str;
    fn name(&self, name: &OsStr) -> Result<OsString>;
    fn file(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()>;
    fn failures(&mut self) -> &mut Failures;
}

/// Copies `src`'s entries into the existing `dst`; a failing entry is reported and
/// skipped, leaving nothing half-written behind.
fn copy_dir<T: TreeCopy>(t: &mut T, src: &Path, dst: &Path) {
    let list = match entries(src) {
        Ok(l) => l,
        Err(e) => return t.failures().report(src, e),
    };
    for entry in list {
        let path = entry.path();
        let result = t
            .name(&entry.file_name())
            .with_context(|| format!("cannot {} the name", T::VERB))
            .and_then(|name| copy_entry(t, &path, &dst.join(name)));
        if let Err(e) = result {
            t.failures().report(&path, format_args!("{e:#}"));
        }
    }
}

fn copy_entry<T: TreeCopy>(t: &mut T, src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst)?;
        copy_dir(t, src, dst);
        copy_attrs(dst, &meta)?;
    } else if ft.is_symlink() {
        let target = t
            .name(fs::read_link(src)?.as_os_str())
            .with_context(|| format!("cannot {} the symlink target", T::VERB))?;
        symlink(target, dst)?;
    } else if ft.is_file() {
        t.file(src, dst, &meta)
            .inspect_err(|_| drop(fs::remove_file(dst)))?;
    } else {
        bail!("not a regular file, directory or symlink; skipped");
    }
    Ok(())
}

struct Encryptor {
    ctx: WriteContext,
    names: Option<FilenameKey>,
    failures: Failures,
}

impl TreeCopy for Encryptor {
    const VERB: &'static str = "encrypt";

    fn name(&self, plain: &OsStr) -> Result<OsString> {
        match &self.names {
            Some(k) => Ok(OsString::from_vec(k.encrypt(plain.as_bytes())?)),
            None => Ok(plain.to_owned()),
        }
    }

    fn failures(&mut self) -> &mut Failures {
        &mut self.failures
    }

    fn file(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        let mut input = BufReader::with_capacity(1 << 16, File::open(src)?);
        let mut out = File::options().write(true).create_new(true).open(dst)?;
        let xattr_value = encrypt_file(&self.ctx, &mut input, &mut out)?;
        if let Some(v) = xattr_value {
            xattr::set(dst, XATTR_NAME, &v).with_context(|| {
                format!("cannot set {XATTR_NAME} (does the file system support user xattrs?)")
            })?;
        }
        out.sync_all()?;
        copy_attrs(dst, meta)?;
        Ok(())
    }
}

pub fn encrypt(a: EncryptArgs) -> Result<i32> {
    let spec = CipherSpec::new(a.cipher, a.key_bytes).map_err(|e| UsageError(e.to_string()))?;
    no_names_with_keyfile(&a.key, &a.names)?;
    prepare_output(&a.plaindir, &a.lower_out)?;
    let (key, names) = match a.key.load()? {
        Some(pair) => (
            WrappingKey::PublicKey(Arc::new(pair.public().clone())),
            None,
        ),
        None => {
            let (pass, skek) = passphrase_key(a.passphrase_file.as_deref())?;
            let names = a
                .names
                .fnek_skek(&pass, &skek)
                .map(|k| FilenameKey::new(k, spec))
                .transpose()?;
            let salt = user_salt()?;
            (WrappingKey::Passphrase { skek, salt }, names)
        }
    };
    let sig = key.sig();
    let fnek_sig = names.as_ref().map(FilenameKey::sig);
    let mut enc = Encryptor {
        ctx: WriteContext {
            spec,
            keys: vec![key],
            xattr: a.xattr,
            fnek: names.is_some(),
        },
        names,
        failures: Failures::default(),
    };
    copy_dir(&mut enc, &a.plaindir, &a.lower_out);
    let mut opts = format!(
        "ecryptfs_sig={sig},ecryptfs_cipher={},ecryptfs_key_bytes={}",
        spec.cipher, spec.key_bytes
    );
    if let Some(f) = fnek_sig {
        opts.push_str(&format!(",ecryptfs_fnek_sig={f}"));
    }
    if a.xattr {
        opts.push_str(",ecryptfs_xattr_metadata");
    }
    eprintln!("strongroomctl: kernel mount options: {opts}");
    Ok(enc.failures.exit_code())
}

/// Name decryption when the filename key size is not known: every size of the
/// packet's cipher is tried and a result is accepted only if it encrypts back to
/// the very same lower name (names are deterministic), so a wrong size can never
/// yield a wrong name.
struct NameDecoder {
    keys: Vec<FilenameKey>,
}

impl NameDecoder {
    fn new(skek: &Skek) -> Result<Self> {
        let mut keys = Vec::new();
        for c in Cipher::ALL {
            for &n in c.key_sizes() {
                keys.push(FilenameKey::new(skek.clone(), CipherSpec::new(c, n)?)?);
            }
        }
        Ok(NameDecoder { keys })
    }

    fn decrypt(&self, lower: &[u8]) -> Result<Vec<u8>, NameError> {
        let mut last = NameError::Corrupt("no filename cipher matches");
        let cipher = packet_cipher(lower);
        for k in self
            .keys
            .iter()
            .filter(|k| Some(k.spec().cipher) == cipher || cipher.is_none())
        {
            match k.decrypt(lower) {
                Ok(plain) if k.encrypt(&plain).as_deref() == Ok(lower) => return Ok(plain),
                Ok(_) => {}
                Err(e @ (NameError::NotEncrypted | NameError::WrongKey { .. })) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The cipher a tag 70 name names (byte 9 of the packet), if it can be read.
fn packet_cipher(lower: &[u8]) -> Option<Cipher> {
    let packet = strongroom_core::filename::decode(lower.strip_prefix(FNEK_PREFIX.as_bytes())?);
    let (_, used) = strongroom_core::packet::decode_len(packet.get(1..)?).ok()?;
    cipher_for_code(*packet.get(1 + used + 8)?).ok()
}

struct Decryptor {
    keys: KeySet,
    /// The given key's sig and kind, to tell a wrong key from other missing keys.
    sig: strongroom_core::kdf::Sig,
    source: &'static str,
    names: Option<NameDecoder>,
    xattr: bool,
    failures: Failures,
}

impl TreeCopy for Decryptor {
    const VERB: &'static str = "decrypt";

    fn name(&self, lower: &OsStr) -> Result<OsString> {
        match &self.names {
            Some(d) => Ok(OsString::from_vec(d.decrypt(lower.as_bytes())?)),
            None => Ok(lower.to_owned()),
        }
    }

    fn failures(&mut self) -> &mut Failures {
        &mut self.failures
    }

    fn file(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        let xattr_value = if self.xattr {
            xattr::get(src, XATTR_NAME).unwrap_or(None)
        } else {
            None
        };
        let mut input = File::open(src)?;
        let mut out = BufWriter::with_capacity(
            1 << 16,
            File::options().write(true).create_new(true).open(dst)?,
        );
        if let Err(e) = decrypt_file(&mut input, xattr_value.as_deref(), &self.keys, &mut out) {
            let hint = if !self.xattr && xattr::get(src, XATTR_NAME).ok().flatten().is_some() {
                " (its header is in the user.ecryptfs xattr: add --xattr)"
            } else {
                ""
            };
            let wrong = match &e {
                strongroom_core::file::FileError::Key(KeyError::NoKey { .. }) => {
                    format!(" (wrong {}? it gives key {})", self.source, self.sig)
                }
                _ => String::new(),
            };
            bail!("{e}{hint}{wrong}");
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        copy_attrs(dst, meta)?;
        Ok(())
    }
}

/// The kernel takes only passphrase tokens as FNEKs (spec §5.6): OpenSSL-key trees keep
/// their names in plain text.
fn no_names_with_keyfile(key: &KeyFileArgs, names: &NameArgs) -> Result<()> {
    if key.keyfile.is_some() && names.any() {
        return Err(UsageError(
            "--fnek and --fnek-separate need a passphrase: names are never encrypted with an OpenSSL key"
                .into(),
        )
        .into());
    }
    Ok(())
}

pub fn decrypt(a: DecryptArgs) -> Result<i32> {
    no_names_with_keyfile(&a.key, &a.names)?;
    prepare_output(&a.lowerdir, &a.plain_out)?;
    let mut keys = KeySet::new();
    let (sig, names, source) = match a.key.load()? {
        Some(pair) => (keys.add_private(Arc::new(pair)), None, "key file"),
        None => {
            let (pass, skek) = passphrase_key(a.passphrase_file.as_deref())?;
            let names = a
                .names
                .fnek_skek(&pass, &skek)
                .map(|k| NameDecoder::new(&k))
                .transpose()?;
            (keys.add_passphrase(skek), names, "passphrase")
        }
    };
    let mut dec = Decryptor {
        keys,
        sig,
        source,
        names,
        xattr: a.xattr,
        failures: Failures::default(),
    };
    copy_dir(&mut dec, &a.lowerdir, &a.plain_out);
    Ok(dec.failures.exit_code())
}

#[derive(Debug, Serialize)]
struct PacketInfo {
    sig: String,
    kind: &'static str,
    cipher: Option<String>,
    key_bytes: Option<usize>,
    wrapped_key_bytes: usize,
}

#[derive(Debug, Serialize)]
struct StatInfo {
    file: PathBuf,
    version: u8,
    size: u64,
    header_bytes: u64,
    metadata_in_xattr: bool,
    encrypted: bool,
    hmac: bool,
    encrypted_filenames: bool,
    lower_size: u64,
    expected_lower_size: u64,
    packets: Vec<PacketInfo>,
}

fn packet_info(p: &KeyPacket) -> PacketInfo {
    match p {
        KeyPacket::Passphrase {
            sig,
            cipher_code,
            efek,
            ..
        } => {
            // Key size as the kernel finds it: 24 for code 0x08, else the EFEK length.
            let key_bytes = if *cipher_code == 0x08 { 24 } else { efek.len() };
            PacketInfo {
                sig: sig.to_hex(),
                kind: "passphrase",
                cipher: cipher_for_code(*cipher_code)
                    .ok()
                    .map(|c| c.name().to_owned()),
                key_bytes: Some(key_bytes),
                wrapped_key_bytes: efek.len(),
            }
        }
        KeyPacket::PublicKey { sig, efek } => PacketInfo {
            sig: sig.to_hex(),
            kind: "public key",
            cipher: None,
            key_bytes: None,
            wrapped_key_bytes: efek.len(),
        },
    }
}

pub fn stat(a: StatArgs) -> Result<i32> {
    let mut first = Vec::with_capacity(HEADER_READ_SIZE);
    let file = File::open(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let lower_size = file.metadata()?.len();
    file.take(HEADER_READ_SIZE as u64).read_to_end(&mut first)?;
    let xattr_value = xattr::get(&a.file, XATTR_NAME).unwrap_or(None);
    let h: Header = read_header(&first, xattr_value.as_deref())
        .with_context(|| format!("{}: not a readable eCryptfs file", a.file.display()))?;
    let info = StatInfo {
        file: a.file.clone(),
        version: h.version,
        size: h.size,
        header_bytes: h.metadata_size,
        metadata_in_xattr: h.in_xattr(),
        encrypted: h.flags & strongroom_core::header::FLAG_ENCRYPTED != 0,
        hmac: h.flags & strongroom_core::header::FLAG_HMAC != 0,
        encrypted_filenames: h.encrypt_filenames(),
        lower_size,
        expected_lower_size: strongroom_core::header::lower_size_for(h.size, h.lower_data_offset()),
        packets: h.packets.iter().map(packet_info).collect(),
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    // The first six lines are ecryptfs-stat's, verbatim.
    writeln!(out, "File version: [{}]", info.version)?;
    writeln!(out, "Decrypted file size: [{}]", info.size)?;
    writeln!(
        out,
        "Number of header bytes at front of file: [{}]",
        info.header_bytes
    )?;
    writeln!(
        out,
        "{}",
        if info.metadata_in_xattr {
            "Metadata in the extended attribute region"
        } else {
            "Metadata in the header region"
        }
    )?;
    writeln!(
        out,
        "{}",
        if info.encrypted {
            "Encrypted"
        } else {
            "Not encrypted"
        }
    )?;
    writeln!(
        out,
        "{}",
        if info.hmac {
            "HMAC enabled"
        } else {
            "HMAC disabled"
        }
    )?;
    writeln!(
        out,
        "Filename encryption: [{}]",
        if info.encrypted_filenames {
            "on"
        } else {
            "off"
        }
    )?;
    writeln!(
        out,
        "Lower file size: [{}] (expected [{}])",
        info.lower_size, info.expected_lower_size
    )?;
    for p in &info.packets {
        match (&p.cipher, p.key_bytes) {
            (Some(c), Some(n)) => writeln!(
                out,
                "Key: [{}] {}, cipher [{c}], key bytes [{n}]",
                p.sig, p.kind
            )?,
            _ => writeln!(
                out,
                "Key: [{}] {}, {} wrapped key bytes",
                p.sig, p.kind, p.wrapped_key_bytes
            )?,
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, Serialize)]
struct FindResult {
    input: String,
    output: Option<String>,
    error: Option<String>,
}

pub fn find(a: FindArgs) -> Result<i32> {
    let spec = CipherSpec::new(a.cipher, a.key_bytes).map_err(|e| UsageError(e.to_string()))?;
    let pass = secret::obtain(a.passphrase_file.as_deref(), "Passphrase: ")?;
    let skek = if a.fnek_separate {
        derive_skek(&pass, &FNEK_SALT)
    } else {
        derive_skek(&pass, &user_salt()?)
    };
    let enc = FilenameKey::new(skek.clone(), spec)?;
    let dec = NameDecoder::new(&skek)?;
    let translate = |component: &[u8]| -> Result<Vec<u8>, NameError> {
        if component.starts_with(FNEK_PREFIX.as_bytes()) {
            dec.decrypt(component)
        } else if component.is_empty() || component == b"." || component == b".." {
            Ok(component.to_vec())
        } else {
            enc.encrypt(component)
        }
    };
    let mut failures = Failures::default();
    let mut results = Vec::new();
    for name in &a.names {
        let parts: Result<Vec<Vec<u8>>, NameError> = name
            .as_bytes()
            .split(|&b| b == b'/')
            .map(&translate)
            .collect();
        let shown = name.to_string_lossy().into_owned();
        match parts {
            Ok(p) => {
                let out = String::from_utf8_lossy(&p.join(&b'/')).into_owned();
                results.push(FindResult {
                    input: shown,
                    output: Some(out),
                    error: None,
                });
            }
            Err(e) => {
                failures.report(Path::new(name), &e);
                results.push(FindResult {
                    input: shown,
                    output: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &results)?;
        writeln!(out)?;
    } else {
        for r in results.iter().filter_map(|r| r.output.as_ref()) {
            writeln!(out, "{r}")?;
        }
    }
    Ok(failures.exit_code())
}
