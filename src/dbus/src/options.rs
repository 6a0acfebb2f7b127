//! The `a{sv}` option dictionaries of the interface: a fixed list of keys, typed values,
//! bounded sizes. Every value is checked against a closed set (sigs are 16 lower-case
//! hex characters, ciphers come from a table), so nothing a caller sends can add a
//! kernel mount option of its own (no `,`, `=`, spaces, `../`).

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

/// Option keys of `Mount`.
pub mod keys {
    /// `as`: sigs of the content tokens (`ecryptfs_sig`), in order; at least one.
    pub const SIGS: &str = "sigs";
    /// `s`: sig of the filename token (`ecryptfs_fnek_sig`); filenames stay plain without it.
    pub const FNEK_SIG: &str = "fnek-sig";
    /// `s`: content cipher for new files (default `aes`).
    pub const CIPHER: &str = "cipher";
    /// `u`: FEK size in bytes for new files (default 16).
    pub const KEY_BYTES: &str = "key-bytes";
    /// `s`: filename cipher (default: the content cipher).
    pub const FN_CIPHER: &str = "fn-cipher";
    /// `u`: filename key size (default: the content key size).
    pub const FN_KEY_BYTES: &str = "fn-key-bytes";
    /// `b`: non-eCryptfs lower files pass through as plaintext.
    pub const PASSTHROUGH: &str = "passthrough";
    /// `b`: new files keep their header in the `user.ecryptfs` xattr.
    pub const XATTR_METADATA: &str = "xattr-metadata";
    /// `b`: read-only view of the ciphertext.
    pub const ENCRYPTED_VIEW: &str = "encrypted-view";
    /// `b`: only the mount's tokens may open files.
    pub const MOUNT_AUTH_TOK_ONLY: &str = "mount-auth-tok-only";
    /// `b`: mount read-only.
    pub const READ_ONLY: &str = "read-only";
    /// `b`: fail instead of asking polkit for interactive authentication (udisks' name).
    pub const NO_USER_INTERACTION: &str = "auth.no_user_interaction";
    /// `b` (Unmount): detach lazily when busy.
    pub const LAZY: &str = "lazy";
    /// `b` (Unmount): keep the mount's tokens in the helper's keyring.
    pub const KEEP_TOKENS: &str = "keep-tokens";
}

/// At most this many entries in an option dictionary.
pub const MAX_OPTIONS: usize = 32;
/// At most this many sigs (content sigs) per mount.
pub const MAX_SIGS: usize = 8;
/// At most this many tokens per `Mount` call.
pub const MAX_TOKENS: usize = 8;
/// Passphrase tokens are 740 bytes; private-key tokens add their blob (path + passphrase).
pub const MAX_TOKEN_BYTES: usize = 740 + 4096;

/// Ciphers and FEK sizes the kernel and `mount.ecryptfs` offer (spec §6.2).
pub const CIPHERS: [(&str, &[u32]); 6] = [
    ("aes", &[16, 24, 32]),
    ("blowfish", &[16, 32, 56]),
    ("des3_ede", &[24]),
    ("cast5", &[16]),
    ("cast6", &[16, 32]),
    ("twofish", &[16, 32]),
];

/// A refused option dictionary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    #[error("too many options ({0}, at most {MAX_OPTIONS})")]
    TooMany(usize),
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("option {key:?} must have D-Bus type {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("option {key:?}: {reason}")]
    BadValue { key: &'static str, reason: String },
    #[error("option {0:?} is required")]
    Missing(&'static str),
}

/// Typed `Mount` options. Build with [`MountOptions::new`], send with [`MountOptions::to_dict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub sigs: Vec<String>,
    pub fnek_sig: Option<String>,
    pub cipher: String,
    pub key_bytes: u32,
    pub fn_cipher: Option<String>,
    pub fn_key_bytes: Option<u32>,
    pub passthrough: bool,
    pub xattr_metadata: bool,
    pub encrypted_view: bool,
    pub mount_auth_tok_only: bool,
    pub read_only: bool,
    pub no_user_interaction: bool,
}

impl MountOptions {
    /// AES-128 with the given content sigs, everything else off.
    pub fn new(sigs: Vec<String>) -> Self {
        MountOptions {
            sigs,
            fnek_sig: None,
            cipher: "aes".to_owned(),
            key_bytes: 16,
            fn_cipher: None,
            fn_key_bytes: None,
            passthrough: false,
            xattr_metadata: false,
            encrypted_view: false,
            mount_auth_tok_only: false,
            read_only: false,
            no_user_interaction: false,
        }
    }

    /// The dictionary to pass to `Mount`.
    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d: HashMap<String, Value<'static>> = HashMap::new();
        d.insert(keys::SIGS.into(), Value::from(self.sigs.clone()));
        if let Some(s) = &self.fnek_sig {
            d.insert(keys::FNEK_SIG.into(), Value::from(s.clone()));
        }
        d.insert(keys::CIPHER.into(), Value::from(self.cipher.clone()));
        d.insert(keys::KEY_BYTES.into(), Value::from(self.key_bytes));
        if let Some(c) = &self.fn_cipher {
            d.insert(keys::FN_CIPHER.into(), Value::from(c.clone()));
        }
        if let Some(n) = self.fn_key_bytes {
            d.insert(keys::FN_KEY_BYTES.into(), Value::from(n));
        }
        for (key, on) in [
            (keys::PASSTHROUGH, self.passthrough),
            (keys::XATTR_METADATA, self.xattr_metadata),
            (keys::ENCRYPTED_VIEW, self.encrypted_view),
            (keys::MOUNT_AUTH_TOK_ONLY, self.mount_auth_tok_only),
            (keys::READ_ONLY, self.read_only),
            (keys::NO_USER_INTERACTION, self.no_user_interaction),
        ] {
            if on {
                d.insert(key.into(), Value::from(true));
            }
        }
        d
    }

    /// Parse and validate what a caller sent.
    pub fn from_dict(dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionError> {
        check_size(dict)?;
        let mut o = MountOptions::new(Vec::new());
        let mut have_sigs = false;
        for (key, value) in dict {
            match key.as_str() {
                keys::SIGS => {
                    o.sigs = get_strings(keys::SIGS, value)?;
                    have_sigs = true;
                }
                keys::FNEK_SIG => o.fnek_sig = Some(get_string(keys::FNEK_SIG, value)?),
                keys::CIPHER => o.cipher = get_string(keys::CIPHER, value)?,
                keys::KEY_BYTES => o.key_bytes = get_u32(keys::KEY_BYTES, value)?,
                keys::FN_CIPHER => o.fn_cipher = Some(get_string(keys::FN_CIPHER, value)?),
                keys::FN_KEY_BYTES => o.fn_key_bytes = Some(get_u32(keys::FN_KEY_BYTES, value)?),
                keys::PASSTHROUGH => o.passthrough = get_bool(keys::PASSTHROUGH, value)?,
                keys::XATTR_METADATA => o.xattr_metadata = get_bool(keys::XATTR_METADATA, value)?,
                keys::ENCRYPTED_VIEW => o.encrypted_view = get_bool(keys::ENCRYPTED_VIEW, value)?,
                keys::MOUNT_AUTH_TOK_ONLY => {
                    o.mount_auth_tok_only = get_bool(keys::MOUNT_AUTH_TOK_ONLY, value)?
                }
                keys::READ_ONLY => o.read_only = get_bool(keys::READ_ONLY, value)?,
                keys::NO_USER_INTERACTION => {
                    o.no_user_interaction = get_bool(keys::NO_USER_INTERACTION, value)?
                }
                other => return Err(OptionError::Unknown(printable(other))),
            }
        }
        if !have_sigs {
            return Err(OptionError::Missing(keys::SIGS));
        }
        o.validate()?;
        Ok(o)
    }

    /// Check every value against its closed set.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.sigs.is_empty() || self.sigs.len() > MAX_SIGS {
            return Err(bad(keys::SIGS, format!("need 1 to {MAX_SIGS} sigs")));
        }
        for (i, s) in self.sigs.iter().enumerate() {
            check_sig(keys::SIGS, s)?;
            if self.sigs[..i].contains(s) {
                return Err(bad(keys::SIGS, "a sig is listed twice".into()));
            }
        }
        if let Some(s) = &self.fnek_sig {
            check_sig(keys::FNEK_SIG, s)?;
        }
        check_cipher(
            keys::CIPHER,
            &self.cipher,
            Some(self.key_bytes),
            keys::KEY_BYTES,
        )?;
        if self.fn_cipher.is_some() || self.fn_key_bytes.is_some() {
            if self.fnek_sig.is_none() {
                return Err(bad(keys::FN_CIPHER, "needs fnek-sig".into()));
            }
            let cipher = self.fn_cipher.as_deref().unwrap_or(&self.cipher);
            let bytes = self.fn_key_bytes.unwrap_or(self.key_bytes);
            check_cipher(keys::FN_CIPHER, cipher, Some(bytes), keys::FN_KEY_BYTES)?;
        }
        Ok(())
    }
}

/// Typed `Unmount` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmountOptions {
    pub lazy: bool,
    pub keep_tokens: bool,
    pub no_user_interaction: bool,
}

impl UnmountOptions {
    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d: HashMap<String, Value<'static>> = HashMap::new();
        for (key, on) in [
            (keys::LAZY, self.lazy),
            (keys::KEEP_TOKENS, self.keep_tokens),
            (keys::NO_USER_INTERACTION, self.no_user_interaction),
        ] {
            if on {
                d.insert(key.into(), Value::from(true));
            }
        }
        d
    }

    pub fn from_dict(dict: &HashMap<String, OwnedValue>) -> Result<Self, OptionError> {
        check_size(dict)?;
        let mut o = UnmountOptions::default();
        for (key, value) in dict {
            match key.as_str() {
                keys::LAZY => o.lazy = get_bool(keys::LAZY, value)?,
                keys::KEEP_TOKENS => o.keep_tokens = get_bool(keys::KEEP_TOKENS, value)?,
                keys::NO_USER_INTERACTION => {
                    o.no_user_interaction = get_bool(keys::NO_USER_INTERACTION, value)?
                }
                other => return Err(OptionError::Unknown(printable(other))),
            }
        }
        Ok(o)
    }
}

/// Options of the other methods: only `auth.no_user_interaction`. Returns its value.
pub fn parse_plain_options(dict: &HashMap<String, OwnedValue>) -> Result<bool, OptionError> {
    check_size(dict)?;
    let mut no_interaction = false;
    for (key, value) in dict {
        match key.as_str() {
            keys::NO_USER_INTERACTION => {
                no_interaction = get_bool(keys::NO_USER_INTERACTION, value)?
            }
            other => return Err(OptionError::Unknown(printable(other))),
        }
    }
    Ok(no_interaction)
}

/// Whether `s` is a sig as the kernel compares them: 16 lower-case hex characters.
pub fn is_sig(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_sig(key: &'static str, s: &str) -> Result<(), OptionError> {
    if is_sig(s) {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("{:?} is not 16 lower-case hex characters", printable(s)),
        ))
    }
}

fn check_cipher(
    key: &'static str,
    name: &str,
    bytes: Option<u32>,
    bytes_key: &'static str,
) -> Result<(), OptionError> {
    let Some((_, sizes)) = CIPHERS.iter().find(|(n, _)| *n == name) else {
        return Err(bad(key, format!("unknown cipher {:?}", printable(name))));
    };
    match bytes {
        Some(b) if !sizes.contains(&b) => Err(bad(
            bytes_key,
            format!("{name} takes key sizes {sizes:?}, not {b}"),
        )),
        _ => Ok(()),
    }
}

fn check_size(dict: &HashMap<String, OwnedValue>) -> Result<(), OptionError> {
    if dict.len() > MAX_OPTIONS {
        Err(OptionError::TooMany(dict.len()))
    } else {
        Ok(())
    }
}

fn bad(key: &'static str, reason: String) -> OptionError {
    OptionError::BadValue { key, reason }
}

/// Bounded, escaped echo of caller text for error messages (never trusted, never long).
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_default).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn get_bool(key: &'static str, v: &Value<'_>) -> Result<bool, OptionError> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(OptionError::WrongType { key, expected: "b" }),
    }
}

fn get_u32(key: &'static str, v: &Value<'_>) -> Result<u32, OptionError> {
    match v {
        Value::U32(n) => Ok(*n),
        _ => Err(OptionError::WrongType { key, expected: "u" }),
    }
}

fn get_string(key: &'static str, v: &Value<'_>) -> Result<String, OptionError> {
    match v {
        Value::Str(s) if s.len() <= 64 => Ok(s.as_str().to_owned()),
        Value::Str(_) => Err(bad(key, "longer than 64 bytes".into())),
        _ => Err(OptionError::WrongType { key, expected: "s" }),
    }
}

fn get_strings(key: &'static str, v: &Value<'_>) -> Result<Vec<String>, OptionError> {
    let Value::Array(a) = v else {
        return Err(OptionError::WrongType {
            key,
            expected: "as",
        });
    };
    if a.len() > MAX_SIGS {
        return Err(bad(key, format!("more than {MAX_SIGS} entries")));
    }
    a.iter().map(|item| get_string(key, item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(d: HashMap<String, Value<'static>>) -> HashMap<String, OwnedValue> {
        d.into_iter()
            .map(|(k, v)| (k, OwnedValue::try_from(v).expect("no fds")))
            .collect()
    }

    const SIG: &str = "d395309aaad4de06";

    #[test]
    fn round_trip_through_the_dictionary() {
        let mut o = MountOptions::new(vec![SIG.into()]);
        o.fnek_sig = Some("ffeeddccbbaa9988".into());
        o.cipher = "blowfish".into();
        o.key_bytes = 56;
        o.fn_cipher = Some("aes".into());
        o.fn_key_bytes = Some(32);
        o.xattr_metadata = true;
        o.no_user_interaction = true;
        assert_eq!(MountOptions::from_dict(&owned(o.to_dict())), Ok(o));
        let u = UnmountOptions {
            lazy: true,
            keep_tokens: false,
            no_user_interaction: true,
        };
        assert_eq!(UnmountOptions::from_dict(&owned(u.to_dict())), Ok(u));
    }

    fn with(key: &str, v: Value<'static>) -> Result<MountOptions, OptionError> {
        let mut d = MountOptions::new(vec![SIG.into()]).to_dict();
        d.insert(key.into(), v);
        MountOptions::from_dict(&owned(d))
    }

    #[test]
    fn injection_through_values_is_refused() {
        // CVE-2011-1831..1837 era helpers pasted user text into the option string.
        for evil in [
            "d395309aaad4de06,ecryptfs_passthrough",
            "x,ecryptfs_passthrough",
            "D395309AAAD4DE06",
            "d395309aaad4de0",
            "../../etc/passwd",
            "d395309aaad4de0\n",
            "",
        ] {
            assert!(
                matches!(
                    with(keys::FNEK_SIG, Value::from(evil.to_owned())),
                    Err(OptionError::BadValue { .. })
                ),
                "{evil:?}"
            );
            assert!(
                matches!(
                    with(keys::SIGS, Value::from(vec![evil.to_owned()])),
                    Err(OptionError::BadValue { .. })
                ),
                "{evil:?}"
            );
        }
        for evil in [
            "aes,ecryptfs_passthrough",
            "aes ",
            "aes=1",
            "AES",
            "../aes",
            "aes\0",
        ] {
            assert!(
                matches!(
                    with(keys::CIPHER, Value::from(evil.to_owned())),
                    Err(OptionError::BadValue { .. })
                ),
                "{evil:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_wrong_types_and_sizes_are_refused() {
        assert!(matches!(
            with("ecryptfs_passthrough", Value::from(true)),
            Err(OptionError::Unknown(_))
        ));
        assert!(matches!(
            with("sigs,passthrough", Value::from(true)),
            Err(OptionError::Unknown(_))
        ));
        assert!(matches!(
            with(keys::KEY_BYTES, Value::from(16u64)),
            Err(OptionError::WrongType { .. })
        ));
        assert!(matches!(
            with(keys::KEY_BYTES, Value::from("16")),
            Err(OptionError::WrongType { .. })
        ));
        assert!(matches!(
            with(keys::PASSTHROUGH, Value::from(1u32)),
            Err(OptionError::WrongType { .. })
        ));
        assert!(matches!(
            with(keys::KEY_BYTES, Value::from(17u32)),
            Err(OptionError::BadValue { .. })
        ));
        assert!(
            matches!(
                with(keys::FN_KEY_BYTES, Value::from(16u32)),
                Err(OptionError::BadValue { .. })
            ),
            "filename options without fnek-sig"
        );
        assert!(matches!(
            with(keys::CIPHER, Value::from("a".repeat(100_000))),
            Err(OptionError::BadValue { .. })
        ));
        let many: Vec<String> = (0..9).map(|i| format!("{i:016x}")).collect();
        assert!(matches!(
            with(keys::SIGS, Value::from(many)),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            with(
                keys::SIGS,
                Value::from(vec![SIG.to_owned(), SIG.to_owned()])
            ),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            with(keys::SIGS, Value::from(Vec::<String>::new())),
            Err(OptionError::BadValue { .. })
        ));
        let mut d = HashMap::new();
        for i in 0..=MAX_OPTIONS {
            d.insert(format!("k{i}"), Value::from(true));
        }
        assert_eq!(
            MountOptions::from_dict(&owned(d)),
            Err(OptionError::TooMany(MAX_OPTIONS + 1))
        );
        assert_eq!(
            MountOptions::from_dict(&HashMap::new()),
            Err(OptionError::Missing(keys::SIGS))
        );
    }

    #[test]
    fn plain_options_accept_only_interaction() {
        let mut d = HashMap::new();
        d.insert(keys::NO_USER_INTERACTION.to_owned(), Value::from(true));
        assert_eq!(parse_plain_options(&owned(d.clone())), Ok(true));
        d.insert(keys::LAZY.to_owned(), Value::from(true));
        assert!(matches!(
            parse_plain_options(&owned(d)),
            Err(OptionError::Unknown(_))
        ));
    }
}
