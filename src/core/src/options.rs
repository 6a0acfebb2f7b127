//! eCryptfs mount option strings (spec §6): the kernel's (`ecryptfs_sig=…,
//! ecryptfs_cipher=…`) and mount.ecryptfs's (`key=passphrase:passfile=…`,
//! `ecryptfs_passthrough=no`, `no_sig_cache` …), parsed into one typed
//! [`MountOptions`], and the kernel string built back from it.
//!
//! Errors never quote the value of an unknown or secret-bearing option: a typo such
//! as `pasword=hunter2` must not put the password into a log.

use std::path::PathBuf;

use crate::cipher::Cipher;
use crate::kdf::{Passphrase, Salt, Sig};

/// Errors of option parsing and validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("option {option}: bad value {value:?} ({expected})")]
    BadValue {
        option: String,
        value: String,
        expected: &'static str,
    },
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {0} takes no value")]
    UnexpectedValue(String),
    #[error("option {option}: bad secret value ({reason})")]
    BadSecret { option: String, reason: String },
    #[error("{0}")]
    Contradiction(String),
    #[error("{key_bytes} key bytes are not valid for {cipher} (valid: {valid})")]
    KeyBytes {
        cipher: &'static str,
        key_bytes: usize,
        valid: String,
    },
    #[error("no ecryptfs_sig: the kernel needs at least one key signature")]
    NoSig,
    #[error("no ecryptfs_key_bytes: the kernel refuses aes without it; give the key size")]
    NoKeyBytes,
    #[error("key module {0:?} is not supported (passphrase or openssl)")]
    UnknownKeyModule(String),
    #[error("key=openssl needs keyfile= (the PEM private key)")]
    NoKeyFile,
}

/// Where a passphrase (mount passphrase or PEM passphrase) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecretSource {
    /// Not given: ask interactively (or fail in non-interactive use).
    #[default]
    Prompt,
    /// Read from a file (`passphrase_passwd=`/`passwd=` line, else first line).
    File(PathBuf),
    /// Read from an inherited file descriptor.
    Fd(i32),
    /// Given on the command line — visible to every user in `ps`; see
    /// [`Warning::SecretOnCommandLine`].
    Inline(Passphrase),
}

/// The `key=` part of mount.ecryptfs options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySpec {
    Passphrase {
        secret: SecretSource,
        salt: Option<Salt>,
    },
    OpenSsl {
        keyfile: PathBuf,
        secret: SecretSource,
    },
}

/// Things that parse but deserve a word to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A passphrase was given inline; other users can read command lines.
    SecretOnCommandLine(String),
    /// A sig was written in upper case; the kernel compares sigs byte-wise with
    /// the lower-case ones in file headers (spec §10.15), so it was lower-cased.
    UpperCaseSig(String),
}

/// Parsed eCryptfs mount options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MountOptions {
    /// `ecryptfs_sig=` in order (the first wraps new files' keys first).
    pub sigs: Vec<Sig>,
    /// `ecryptfs_cipher=`; `None` = kernel default (aes).
    pub cipher: Option<Cipher>,
    pub key_bytes: Option<usize>,
    pub fnek_sig: Option<Sig>,
    /// `ecryptfs_enable_filename_crypto=y|n` (mount.ecryptfs); `None` if not given.
    pub filename_crypto: Option<bool>,
    pub fn_cipher: Option<Cipher>,
    pub fn_key_bytes: Option<usize>,
    pub passthrough: bool,
    pub xattr_metadata: bool,
    pub encrypted_view: bool,
    pub unlink_sigs: bool,
    pub mount_auth_tok_only: bool,
    pub check_dev_ruid: bool,
    pub key: Option<KeySpec>,
    /// `false` with `no_sig_cache` or `verbosity=0`.
    pub sig_cache: bool,
    pub verbosity: Option<u8>,
    pub verbose: bool,
    /// `ro` → `Some(true)`, `rw` → `Some(false)`.
    pub read_only: Option<bool>,
    /// Other generic mount options (`user`, `nosuid`, `noexec`, `x-…` …), in order.
    pub generic: Vec<String>,
    pub warnings: Vec<Warning>,
}

/// Generic mount(8) options accepted and kept in [`MountOptions::generic`].
const GENERIC: &[&str] = &[
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
    "mand",
    "nomand",
    "iversion",
    "noiversion",
];

/// Passphrase sub-options of `key=passphrase` (spec §6.2), canonical name first.
const PASSPHRASE_OPTS: &[(&str, &str)] = &[
    ("passphrase_passwd", "passphrase_passwd"),
    ("passwd", "passphrase_passwd"),
    ("passphrase_passwd_file", "passphrase_passwd_file"),
    ("passfile", "passphrase_passwd_file"),
    ("passphrase_passwd_fd", "passphrase_passwd_fd"),
    ("passfd", "passphrase_passwd_fd"),
    ("passphrase_salt", "passphrase_salt"),
    ("salt", "passphrase_salt"),
];
const OPENSSL_OPTS: &[(&str, &str)] = &[
    ("openssl_keyfile", "openssl_keyfile"),
    ("keyfile", "openssl_keyfile"),
    ("openssl_passwd", "openssl_passwd"),
    ("passwd", "openssl_passwd"),
    ("openssl_passwd_file", "openssl_passwd_file"),
    ("passwd_file", "openssl_passwd_file"),
    ("openssl_passwd_fd", "openssl_passwd_fd"),
    ("passwd_fd", "openssl_passwd_fd"),
];

fn canonical(table: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, c)| *c)
}

/// Collects the key module and its sub-options from `key=mod:a=b:c=d` and from
/// top-level options, then builds the [`KeySpec`] once everything is known.
#[derive(Default)]
struct KeyBuilder {
    module: Option<String>,
    subopts: Vec<(String, String)>,
}

impl MountOptions {
    /// Parses a comma-separated option string of either dialect (or a mix).
    pub fn parse(s: &str) -> Result<Self, OptionsError> {
        let mut o = MountOptions {
            sig_cache: true,
            ..Default::default()
        };
        let mut key = KeyBuilder::default();
        // Each boolean given explicitly, to find contradictions between spellings.
        let mut xattr_given = None;
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            o.apply(name, value, &mut key, &mut xattr_given)?;
        }
        o.key = key.build(&mut o.warnings)?;
        o.validate(xattr_given)?;
        Ok(o)
    }

    fn apply(
        &mut self,
        name: &str,
        value: Option<&str>,
        key: &mut KeyBuilder,
        xattr_given: &mut Option<bool>,
    ) -> Result<(), OptionsError> {
        let need = || value.ok_or_else(|| OptionsError::MissingValue(name.to_owned()));
        let flag = |v: Option<&str>| -> Result<bool, OptionsError> {
            match v {
                None => Ok(true),
                Some(v) => yes_no(name, v),
            }
        };
        match name {
            "ecryptfs_sig" | "sig" => {
                let sig = self.sig(name, need()?)?;
                if !self.sigs.contains(&sig) {
                    self.sigs.push(sig);
                }
            }
            "ecryptfs_fnek_sig" => {
                let sig = self.sig(name, need()?)?;
                set_once(&mut self.fnek_sig, sig, name)?;
            }
            "ecryptfs_cipher" | "cipher" => {
                set_once(&mut self.cipher, cipher(name, need()?)?, name)?
            }
            "ecryptfs_fn_cipher" => set_once(&mut self.fn_cipher, cipher(name, need()?)?, name)?,
            "ecryptfs_key_bytes" => set_once(&mut self.key_bytes, number(name, need()?)?, name)?,
            "ecryptfs_fn_key_bytes" => {
                set_once(&mut self.fn_key_bytes, number(name, need()?)?, name)?
            }
            "ecryptfs_passthrough" => self.passthrough = flag(value)?,
            "ecryptfs_xattr_metadata" | "ecryptfs_xattr" => {
                let v = flag(value)?;
                set_once(xattr_given, v, name)?;
                self.xattr_metadata = v;
            }
            "ecryptfs_encrypted_view" => self.encrypted_view = flag(value)?,
            "ecryptfs_enable_filename_crypto" => {
                set_once(&mut self.filename_crypto, yes_no(name, need()?)?, name)?;
            }
            "ecryptfs_unlink_sigs" => self.unlink_sigs = no_value(name, value)?,
            "ecryptfs_mount_auth_tok_only" => self.mount_auth_tok_only = no_value(name, value)?,
            "ecryptfs_check_dev_ruid" => self.check_dev_ruid = no_value(name, value)?,
            "ecryptfs_hmac" | "hmac" => return Err(OptionsError::Contradiction(
                "ecryptfs_hmac: eCryptfs never implemented HMAC integrity; it cannot be enabled"
                    .into(),
            )),
            "no_sig_cache" => self.sig_cache = !no_value(name, value)?,
            "verbose" => self.verbose = no_value(name, value)?,
            "verbosity" => {
                let v = need()?;
                let n = match v {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(bad(name, v, "0 or 1")),
                };
                set_once(&mut self.verbosity, n, name)?;
            }
            // mount.ecryptfs spellings of verbosity=0.
            "no_prompt" | "wild_ass_guess" => {
                no_value(name, value)?;
                set_once(&mut self.verbosity, 0, name)?;
            }
            "ro" | "rw" => {
                no_value(name, value)?;
                set_once(&mut self.read_only, name == "ro", "ro/rw")?;
            }
            "key" => {
                let v = need()?;
                let mut parts = v.split(':');
                let module = parts.next().unwrap_or_default();
                if key.module.is_some() {
                    return Err(OptionsError::Contradiction(
                        "key= given more than once".into(),
                    ));
                }
                key.module = Some(module.to_owned());
                for sub in parts.filter(|p| !p.is_empty()) {
                    let (n, v) = sub
                        .split_once('=')
                        .ok_or_else(|| OptionsError::MissingValue(sub.to_owned()))?;
                    key.subopts.push((n.to_owned(), v.to_owned()));
                }
            }
            _ if canonical(PASSPHRASE_OPTS, name).is_some()
                || canonical(OPENSSL_OPTS, name).is_some() =>
            {
                key.subopts.push((name.to_owned(), need()?.to_owned()));
            }
            _ if GENERIC.contains(&name) || name.starts_with("x-") => {
                // `x-` options (systemd, udisks) carry values; mount(8) flags do not.
                if !name.starts_with("x-") {
                    no_value(name, value)?;
                }
                self.generic.push(match value {
                    Some(v) => format!("{name}={v}"),
                    None => name.to_owned(),
                });
            }
            _ => return Err(OptionsError::Unknown(name.to_owned())),
        }
        Ok(())
    }

    fn sig(&mut self, option: &str, v: &str) -> Result<Sig, OptionsError> {
        let sig: Sig = v
            .parse()
            .map_err(|_| bad(option, v, "16 hexadecimal characters"))?;
        if v != sig.to_hex() {
            self.warnings.push(Warning::UpperCaseSig(v.to_owned()));
        }
        Ok(sig)
    }

    fn validate(&mut self, xattr_given: Option<bool>) -> Result<(), OptionsError> {
        if self.verbosity == Some(0) {
            self.sig_cache = false;
        }
        let content = self.cipher.unwrap_or(Cipher::Aes);
        if let Some(kb) = self.key_bytes {
            check_key_bytes(content, kb)?;
        }
        if let Some(kb) = self.fn_key_bytes.or(self.key_bytes) {
            if self.fn_cipher.is_some() || self.fn_key_bytes.is_some() {
                check_key_bytes(self.fn_cipher.unwrap_or(content), kb)?;
            }
        }
        if self.fnek_sig.is_some() && self.filename_crypto == Some(false) {
            return Err(OptionsError::Contradiction(
                "ecryptfs_fnek_sig given but ecryptfs_enable_filename_crypto=n".into(),
            ));
        }
        if (self.fn_cipher.is_some() || self.fn_key_bytes.is_some())
            && !self.filename_crypto_enabled()
        {
            return Err(OptionsError::Contradiction(
                "ecryptfs_fn_cipher/ecryptfs_fn_key_bytes need filename encryption (ecryptfs_fnek_sig=)".into(),
            ));
        }
        if self.encrypted_view {
            if self.read_only == Some(false) {
                return Err(OptionsError::Contradiction(
                    "ecryptfs_encrypted_view is a read-only view; it cannot be mounted rw".into(),
                ));
            }
            if xattr_given == Some(false) {
                return Err(OptionsError::Contradiction(
                    "ecryptfs_encrypted_view needs metadata in xattrs; ecryptfs_xattr=n contradicts it".into(),
                ));
            }
            // The kernel implies it (spec §6.1).
            self.xattr_metadata = true;
        }
        Ok(())
    }

    /// Whether names are encrypted: an explicit FNEK sig, or
    /// `ecryptfs_enable_filename_crypto=y` (FNEK defaults to the first sig).
    pub fn filename_crypto_enabled(&self) -> bool {
        self.fnek_sig.is_some() || self.filename_crypto == Some(true)
    }

    /// The FNEK sig the mount uses: explicit, else (with filename crypto on) the
    /// first `ecryptfs_sig`, as mount.ecryptfs proposes.
    pub fn effective_fnek_sig(&self) -> Option<Sig> {
        match self.fnek_sig {
            Some(s) => Some(s),
            None if self.filename_crypto == Some(true) => self.sigs.first().copied(),
            None => None,
        }
    }

    /// The option string for `mount -t ecryptfs -i` / mount(2): only kernel
    /// options, never a secret, key file or userspace-only option. Generic flags
    /// (`ro`, `nosuid` …) are mount flags and are not included. The key's sig must
    /// already be in [`MountOptions::sigs`] (add it after putting the token in the
    /// keyring).
    pub fn to_kernel_string(&self) -> Result<String, OptionsError> {
        if self.sigs.is_empty() {
            return Err(OptionsError::NoSig);
        }
        let key_bytes = self.key_bytes.ok_or(OptionsError::NoKeyBytes)?;
        let mut out: Vec<String> = self
            .sigs
            .iter()
            .map(|s| format!("ecryptfs_sig={s}"))
            .collect();
        if let Some(f) = self.effective_fnek_sig() {
            out.push(format!("ecryptfs_fnek_sig={f}"));
        }
        out.push(format!(
            "ecryptfs_cipher={}",
            self.cipher.unwrap_or(Cipher::Aes).name()
        ));
        out.push(format!("ecryptfs_key_bytes={key_bytes}"));
        if let Some(c) = self.fn_cipher {
            out.push(format!("ecryptfs_fn_cipher={}", c.name()));
        }
        if let Some(n) = self.fn_key_bytes {
            out.push(format!("ecryptfs_fn_key_bytes={n}"));
        }
        for (on, name) in [
            (self.passthrough, "ecryptfs_passthrough"),
            (
                self.xattr_metadata && !self.encrypted_view,
                "ecryptfs_xattr_metadata",
            ),
            (self.encrypted_view, "ecryptfs_encrypted_view"),
            (self.unlink_sigs, "ecryptfs_unlink_sigs"),
            (self.mount_auth_tok_only, "ecryptfs_mount_auth_tok_only"),
            (self.check_dev_ruid, "ecryptfs_check_dev_ruid"),
        ] {
            if on {
                out.push(name.to_owned());
            }
        }
        Ok(out.join(","))
    }
}

impl KeyBuilder {
    fn build(self, warnings: &mut Vec<Warning>) -> Result<Option<KeySpec>, OptionsError> {
        let Some(module) = self.module else {
            if let Some((n, _)) = self.subopts.first() {
                return Err(OptionsError::Contradiction(format!(
                    "{n} needs key=passphrase or key=openssl"
                )));
            }
            return Ok(None);
        };
        let table = match module.as_str() {
            "passphrase" => PASSPHRASE_OPTS,
            "openssl" => OPENSSL_OPTS,
            _ => return Err(OptionsError::UnknownKeyModule(module)),
        };
        let mut secret = SecretSource::Prompt;
        let mut salt = None;
        let mut keyfile = None;
        for (name, value) in &self.subopts {
            let canon = canonical(table, name)
                .ok_or_else(|| OptionsError::Unknown(format!("{module}:{name}")))?;
            let source = match canon {
                "passphrase_passwd" | "openssl_passwd" => {
                    warnings.push(Warning::SecretOnCommandLine(name.clone()));
                    let p =
                        Passphrase::new(value.as_bytes()).map_err(|e| OptionsError::BadSecret {
                            option: name.clone(),
                            reason: e.to_string(),
                        })?;
                    Some(SecretSource::Inline(p))
                }
                "passphrase_passwd_file" | "openssl_passwd_file" => {
                    if value.is_empty() {
                        return Err(OptionsError::MissingValue(name.clone()));
                    }
                    Some(SecretSource::File(PathBuf::from(value)))
                }
                "passphrase_passwd_fd" | "openssl_passwd_fd" => {
                    let fd = value.parse::<i32>().ok().filter(|f| *f >= 0);
                    Some(SecretSource::Fd(fd.ok_or_else(|| {
                        bad(name, value, "a file descriptor number")
                    })?))
                }
                "passphrase_salt" => {
                    let s: Salt = (value.len() == 16)
                        .then(|| value.parse().ok())
                        .flatten()
                        .ok_or_else(|| bad(name, value, "16 hexadecimal characters"))?;
                    set_once(&mut salt, s, name)?;
                    None
                }
                _ => {
                    if value.is_empty() {
                        return Err(OptionsError::MissingValue(name.clone()));
                    }
                    set_once(&mut keyfile, PathBuf::from(value), name)?;
                    None
                }
            };
            if let Some(src) = source {
                if secret != SecretSource::Prompt {
                    return Err(OptionsError::Contradiction(format!(
                        "the {module} passphrase is given more than once (last: {name})"
                    )));
                }
                secret = src;
            }
        }
        Ok(Some(match module.as_str() {
            "passphrase" => KeySpec::Passphrase { secret, salt },
            _ => KeySpec::OpenSsl {
                keyfile: keyfile.ok_or(OptionsError::NoKeyFile)?,
                secret,
            },
        }))
    }
}

fn bad(option: &str, value: &str, expected: &'static str) -> OptionsError {
    OptionsError::BadValue {
        option: option.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

fn yes_no(option: &str, v: &str) -> Result<bool, OptionsError> {
    match v {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        _ => Err(bad(option, v, "y, yes, n or no")),
    }
}

fn no_value(option: &str, v: Option<&str>) -> Result<bool, OptionsError> {
    match v {
        None => Ok(true),
        Some(_) => Err(OptionsError::UnexpectedValue(option.to_owned())),
    }
}

fn number(option: &str, v: &str) -> Result<usize, OptionsError> {
    v.parse().map_err(|_| bad(option, v, "a number of bytes"))
}

fn cipher(option: &str, v: &str) -> Result<Cipher, OptionsError> {
    Cipher::from_name(v).map_err(|_| {
        bad(
            option,
            v,
            "aes, blowfish, des3_ede, cast5, cast6 or twofish",
        )
    })
}

fn check_key_bytes(c: Cipher, kb: usize) -> Result<(), OptionsError> {
    if c.key_sizes().contains(&kb) {
        return Ok(());
    }
    let valid = c
        .key_sizes()
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(OptionsError::KeyBytes {
        cipher: c.name(),
        key_bytes: kb,
        valid,
    })
}

/// Sets a single-valued option; the same value twice is fine, two values are not.
fn set_once<T: PartialEq>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), OptionsError> {
    match slot {
        Some(old) if *old != v => Err(OptionsError::Contradiction(format!(
            "{name} given twice with different values"
        ))),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(s: &str) -> Sig {
        s.parse().unwrap()
    }

    #[test]
    fn seed_mount_helper_string() {
        let o = MountOptions::parse(
            "key=passphrase:passfile=/usb/foo.txt,ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_passthrough=no,no_sig_cache",
        )
        .unwrap();
        assert_eq!(
            o.key,
            Some(KeySpec::Passphrase {
                secret: SecretSource::File("/usb/foo.txt".into()),
                salt: None
            })
        );
        assert_eq!((o.cipher, o.key_bytes), (Some(Cipher::Aes), Some(32)));
        assert!(!o.passthrough && !o.sig_cache && o.warnings.is_empty());
        // No sig yet: the caller derives it from the passphrase file first.
        assert_eq!(o.to_kernel_string(), Err(OptionsError::NoSig));
        let mut o = o;
        o.sigs.push(sig("2a97418edca01eb9"));
        assert_eq!(
            o.to_kernel_string().unwrap(),
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_cipher=aes,ecryptfs_key_bytes=32"
        );
    }

    #[test]
    fn kernel_string_round_trip() {
        let k = "ecryptfs_sig=2a97418edca01eb9,ecryptfs_sig=3515cca9baaea1f4,ecryptfs_fnek_sig=33a5d5e39463d53f,\
                 ecryptfs_cipher=blowfish,ecryptfs_key_bytes=56,ecryptfs_fn_cipher=aes,ecryptfs_fn_key_bytes=16,\
                 ecryptfs_passthrough,ecryptfs_xattr_metadata,ecryptfs_unlink_sigs,ecryptfs_mount_auth_tok_only,\
                 ecryptfs_check_dev_ruid";
        let o = MountOptions::parse(k).unwrap();
        assert_eq!(o.sigs.len(), 2);
        assert_eq!(o.to_kernel_string().unwrap(), k.replace(' ', ""));
        assert_eq!(
            MountOptions::parse(&o.to_kernel_string().unwrap()).unwrap(),
            o
        );
        // The setuid helper's string (spec §6.3) parses too.
        let p = MountOptions::parse(
            "ecryptfs_check_dev_ruid,ecryptfs_cipher=aes,ecryptfs_key_bytes=16,ecryptfs_unlink_sigs,ecryptfs_sig=2a97418edca01eb9",
        )
        .unwrap();
        assert!(p.check_dev_ruid && p.unlink_sigs && !p.filename_crypto_enabled());
    }

    #[test]
    fn helper_dialect_and_aliases() {
        let o = MountOptions::parse(
            "sig=2A97418EDCA01EB9,cipher=twofish,ecryptfs_key_bytes=16,ecryptfs_passthrough=y,ecryptfs_xattr=yes,\
             ecryptfs_enable_filename_crypto=y,verbosity=0,verbose,ro,user,nosuid,x-systemd.automount",
        )
        .unwrap();
        assert_eq!(
            o.warnings,
            vec![Warning::UpperCaseSig("2A97418EDCA01EB9".into())]
        );
        assert!(o.passthrough && o.xattr_metadata && o.verbose && !o.sig_cache);
        assert_eq!((o.read_only, o.verbosity), (Some(true), Some(0)));
        assert_eq!(o.generic, ["user", "nosuid", "x-systemd.automount"]);
        assert_eq!(
            o.to_kernel_string().unwrap(),
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_fnek_sig=2a97418edca01eb9,ecryptfs_cipher=twofish,\
             ecryptfs_key_bytes=16,ecryptfs_passthrough,ecryptfs_xattr_metadata"
        );
    }

    #[test]
    fn key_modules() {
        let o =
            MountOptions::parse("key=passphrase:passphrase_passwd=s3cret:salt=0102030405060708")
                .unwrap();
        let KeySpec::Passphrase {
            secret: SecretSource::Inline(p),
            salt,
        } = o.key.clone().unwrap()
        else {
            panic!("{:?}", o.key)
        };
        assert_eq!(p.as_bytes(), b"s3cret");
        assert_eq!(salt, Some("0102030405060708".parse().unwrap()));
        assert_eq!(
            o.warnings,
            vec![Warning::SecretOnCommandLine("passphrase_passwd".into())]
        );
        // Secrets never reach the kernel string nor Debug.
        let mut o2 = o.clone();
        o2.sigs.push(sig("0d9993251d8e81f0"));
        o2.key_bytes = Some(16);
        assert!(!o2.to_kernel_string().unwrap().contains("s3cret"));
        assert!(!format!("{o2:?}").contains("s3cret"));

        // Top-level sub-options join the key= module.
        let o = MountOptions::parse("key=passphrase,passwd=abc").unwrap();
        assert!(matches!(
            o.key,
            Some(KeySpec::Passphrase {
                secret: SecretSource::Inline(_),
                ..
            })
        ));
        let o = MountOptions::parse("key=passphrase:passfd=3").unwrap();
        assert!(matches!(
            o.key,
            Some(KeySpec::Passphrase {
                secret: SecretSource::Fd(3),
                ..
            })
        ));

        let o = MountOptions::parse("key=openssl:keyfile=/usb/k.pem:passwd_file=/usb/pw").unwrap();
        assert_eq!(
            o.key,
            Some(KeySpec::OpenSsl {
                keyfile: "/usb/k.pem".into(),
                secret: SecretSource::File("/usb/pw".into())
            })
        );
        assert_eq!(
            MountOptions::parse("key=openssl:passwd_file=/usb/pw"),
            Err(OptionsError::NoKeyFile)
        );
        assert_eq!(
            MountOptions::parse("key=gpg"),
            Err(OptionsError::UnknownKeyModule("gpg".into()))
        );
        assert!(matches!(
            MountOptions::parse("passfile=/x"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("key=passphrase:passwd=a:passfile=/f"),
            Err(OptionsError::Contradiction(_))
        ));
        assert_eq!(
            MountOptions::parse("key=passphrase:keyfile=/k"),
            Err(OptionsError::Unknown("passphrase:keyfile".into()))
        );
        assert!(matches!(
            MountOptions::parse("key=passphrase:salt=0102"),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&format!("key=passphrase:passwd={}", "a".repeat(65))),
            Err(OptionsError::BadSecret { .. })
        ));
    }

    #[test]
    fn errors() {
        // Unknown options are named without their value (it may be a mistyped secret).
        let e = MountOptions::parse("pasword=hunter2").unwrap_err();
        assert_eq!(e, OptionsError::Unknown("pasword".into()));
        assert!(!e.to_string().contains("hunter2"));
        assert!(matches!(
            MountOptions::parse("ecryptfs_sig=xyz"),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_cipher=rot13"),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_key_bytes=lots"),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_passthrough=maybe"),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse("verbosity=2"),
            Err(OptionsError::BadValue { .. })
        ));
        assert_eq!(
            MountOptions::parse("ecryptfs_sig"),
            Err(OptionsError::MissingValue("ecryptfs_sig".into()))
        );
        assert_eq!(
            MountOptions::parse("no_sig_cache=1"),
            Err(OptionsError::UnexpectedValue("no_sig_cache".into()))
        );
        assert_eq!(
            MountOptions::parse("ecryptfs_key_bytes=24,ecryptfs_cipher=twofish"),
            Err(OptionsError::KeyBytes {
                cipher: "twofish",
                key_bytes: 24,
                valid: "16, 32".into()
            })
        );
        assert!(matches!(
            MountOptions::parse("ecryptfs_key_bytes=20"),
            Err(OptionsError::KeyBytes { .. })
        ));
        assert!(matches!(
            MountOptions::parse(
                "ecryptfs_fnek_sig=2a97418edca01eb9,ecryptfs_enable_filename_crypto=n"
            ),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_fn_cipher=aes"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_fnek_sig=2a97418edca01eb9,ecryptfs_fn_cipher=des3_ede,ecryptfs_key_bytes=32"),
            Err(OptionsError::KeyBytes { cipher: "des3_ede", .. })
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_encrypted_view,rw"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_encrypted_view=y,ecryptfs_xattr=n"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ro,rw"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_cipher=aes,cipher=blowfish"),
            Err(OptionsError::Contradiction(_))
        ));
        assert!(matches!(
            MountOptions::parse("ecryptfs_hmac"),
            Err(OptionsError::Contradiction(_))
        ));
        let o = MountOptions::parse("ecryptfs_sig=2a97418edca01eb9,ecryptfs_cipher=aes").unwrap();
        assert_eq!(o.to_kernel_string(), Err(OptionsError::NoKeyBytes));
    }

    #[test]
    fn encrypted_view_implies_xattr() {
        let o = MountOptions::parse(
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_key_bytes=16,ecryptfs_encrypted_view,ro",
        )
        .unwrap();
        assert!(o.xattr_metadata);
        assert_eq!(
            o.to_kernel_string().unwrap(),
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_cipher=aes,ecryptfs_key_bytes=16,ecryptfs_encrypted_view"
        );
    }
}
