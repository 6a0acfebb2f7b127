//! The kernel keyring as ecryptfs-utils uses it (spec §3.3): `user` keys named by
//! the 16-hex sig, holding an [`AuthToken`], added to the user keyring `@u` which is
//! linked into the session keyring `@s` so that the kernel (and the FUSE daemon)
//! can reach them.
//!
//! Every function takes the keyring to work on as a parameter: production code
//! passes [`Ring::User`], tests pass [`Ring::Session`] after joining a private
//! session keyring, so the machine's `@u` is never touched by tests.

use std::collections::HashSet;

use linux_keyutils::{Key, KeyError as SysError, KeyRing, KeyRingIdentifier, KeySerialId};
use zeroize::Zeroizing;

use crate::kdf::{Sig, Skek};
use crate::keys::{KeyError, KeyLookup};
use crate::token::{AuthToken, TokenError};

/// Errors of keyring operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    #[error("keyring {ring} is not available: {source}")]
    NoKeyring { ring: Ring, source: SysError },
    #[error("cannot add key {sig} to {ring}: {source}")]
    Add {
        sig: Sig,
        ring: Ring,
        source: SysError,
    },
    #[error("cannot link {from} into {into}: {source}")]
    Link {
        from: Ring,
        into: Ring,
        source: SysError,
    },
    #[error("cannot read key {sig}: {source}")]
    Read { sig: Sig, source: SysError },
    #[error("key {sig} is not a valid eCryptfs auth token: {source}")]
    BadToken { sig: Sig, source: TokenError },
    #[error("cannot unlink key {serial}: {source}")]
    Unlink { serial: i32, source: SysError },
    #[error("cannot clear {ring}: {source}")]
    Clear { ring: Ring, source: SysError },
    #[error("cannot list keyring {serial}: {source}")]
    List { serial: i32, source: SysError },
}

/// The special keyrings of a process (keyrings(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ring {
    /// `@u`: per-uid, shared by every process of the user (ecryptfs-utils' target).
    User,
    /// `@s`: the calling thread's session keyring.
    Session,
    /// `@us`: the per-uid default session keyring.
    UserSession,
    /// `@p`
    Process,
    /// `@t`
    Thread,
}

impl Ring {
    fn id(self) -> KeyRingIdentifier {
        match self {
            Ring::User => KeyRingIdentifier::User,
            Ring::Session => KeyRingIdentifier::Session,
            Ring::UserSession => KeyRingIdentifier::UserSession,
            Ring::Process => KeyRingIdentifier::Process,
            Ring::Thread => KeyRingIdentifier::Thread,
        }
    }

    /// `keyctl`'s short name.
    pub fn short_name(self) -> &'static str {
        match self {
            Ring::User => "@u",
            Ring::Session => "@s",
            Ring::UserSession => "@us",
            Ring::Process => "@p",
            Ring::Thread => "@t",
        }
    }

    /// The keyring; `create` makes it if missing (as `keyctl add`/`link` do). Reads
    /// never create keyrings, so looking a key up has no side effect.
    fn open(self, create: bool) -> Result<KeyRing, KeyringError> {
        KeyRing::from_special_id(self.id(), create)
            .map_err(|source| KeyringError::NoKeyring { ring: self, source })
    }

    /// The serial of this keyring, without creating it (`@s` falls back to the
    /// user-session keyring, as in the kernel).
    pub fn serial(self) -> Result<i32, KeyringError> {
        keyctl_int(libc::KEYCTL_GET_KEYRING_ID, self.id() as libc::c_long, 0)
            .map(|n| n as i32)
            .map_err(|source| KeyringError::NoKeyring { ring: self, source })
    }
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// keyctl operations that take only integers (linux-keyutils cannot name a keyring
/// by serial, nor report a keyring's serial).
#[allow(unsafe_code)]
fn keyctl_int(op: u32, a: libc::c_long, b: libc::c_long) -> Result<libc::c_long, SysError> {
    // SAFETY: the operations used here (GET_KEYRING_ID, UNLINK, JOIN_SESSION_KEYRING
    // with NULL) read no memory from us and write none.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, op as libc::c_long, a, b) };
    if rc < 0 {
        Err(SysError::from_errno())
    } else {
        Ok(rc)
    }
}

/// What [`add_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new key was created with this serial.
    New(i32),
    /// A key with this description was already reachable from the target keyring
    /// (ecryptfs-utils treats this as success and adds nothing).
    AlreadyPresent(i32),
}

/// Adds `token` to `ring` the way ecryptfs-utils does: search the ring for a `user`
/// key named by the sig first and keep it if present; otherwise `add_key`. When the
/// target is `@u`, `@u` is then linked into `@s` so the key is reachable (and
/// possessed) from this session, as the tools do.
pub fn add_token(ring: Ring, token: &AuthToken) -> Result<Added, KeyringError> {
    let sig = token.sig();
    let kr = ring.open(true)?;
    let outcome = match kr.search(&sig.to_hex()) {
        Ok(key) => Added::AlreadyPresent(key.get_id().as_raw_id()),
        Err(_) => {
            let payload = token.to_bytes();
            let key = kr
                .add_key(&sig.to_hex(), &payload[..])
                .map_err(|source| KeyringError::Add { sig, ring, source })?;
            Added::New(key.get_id().as_raw_id())
        }
    };
    if ring == Ring::User {
        let session = Ring::Session.open(true)?;
        session
            .link_keyring_id(KeyRingIdentifier::User)
            .map_err(|source| KeyringError::Link {
                from: Ring::User,
                into: Ring::Session,
                source,
            })?;
    }
    Ok(outcome)
}

/// Largest `user` key payload.
const MAX_PAYLOAD: usize = 32767;

fn read_payload(key: Key, sig: Sig) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_PAYLOAD]);
    let n = key
        .read(&mut *buf)
        .map_err(|source| KeyringError::Read { sig, source })?;
    buf.truncate(n.min(MAX_PAYLOAD));
    Ok(buf)
}

fn token_of(key: Key, sig: Sig) -> Result<AuthToken, KeyringError> {
    let payload = read_payload(key, sig)?;
    let token =
        AuthToken::from_bytes(&payload).map_err(|source| KeyringError::BadToken { sig, source })?;
    if token.sig() != sig {
        return Err(KeyringError::BadToken {
            sig,
            source: TokenError::SigMismatch {
                stored: sig,
                computed: token.sig(),
            },
        });
    }
    Ok(token)
}

/// The token named `sig` reachable from `ring` (searching nested keyrings), if any.
pub fn find(ring: Ring, sig: &Sig) -> Result<Option<AuthToken>, KeyringError> {
    let kr = match ring.open(false) {
        Ok(kr) => kr,
        Err(KeyringError::NoKeyring {
            source: SysError::KeyDoesNotExist,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match kr.search(&sig.to_hex()) {
        Ok(key) => token_of(key, *sig).map(Some),
        Err(SysError::KeyDoesNotExist) => Ok(None),
        Err(SysError::AccessDenied) | Err(SysError::KeyRevoked) | Err(SysError::KeyExpired) => {
            Ok(None)
        }
        Err(source) => Err(KeyringError::Read { sig: *sig, source }),
    }
}

/// One key as `keyctl show` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub serial: i32,
    pub key_type: String,
    pub description: String,
    /// Permission mask (possessor, user, group, other bytes).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// A `user` key named by a lower-case sig whose payload is a valid token with
    /// that sig (false when it cannot be read).
    pub is_ecryptfs_token: bool,
    /// The keyring that links this key directly.
    pub keyring_serial: i32,
    pub keyring_description: String,
    /// The tree it was found in (`@s` or `@u`).
    pub root: Ring,
    /// Nesting depth below the root (1 = directly in the root keyring).
    pub depth: usize,
}

/// `type;uid;gid;perm;description` of any key type (linux-keyutils' `Metadata`
/// only knows four types, and listings must show every type).
#[allow(unsafe_code)]
fn describe(serial: i32) -> Result<(String, u32, u32, u32, String), SysError> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: KEYCTL_DESCRIBE writes at most `buf.len()` bytes into `buf`, which is
    // valid and writable for that length for the duration of the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_DESCRIBE as libc::c_long,
            serial as libc::c_long,
            buf.as_mut_ptr(),
            buf.len() as libc::c_long,
        )
    };
    if n < 0 {
        return Err(SysError::from_errno());
    }
    let n = (n as usize).min(buf.len());
    let text = String::from_utf8_lossy(&buf[..n]);
    let text = text.trim_end_matches('\0');
    let mut it = text.splitn(5, ';');
    let bad = || SysError::InvalidDescription;
    let ktype = it.next().ok_or_else(bad)?.to_owned();
    let uid = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let gid = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let perm = it
        .next()
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or_else(bad)?;
    let desc = it.next().ok_or_else(bad)?.to_owned();
    Ok((ktype, uid, gid, perm, desc))
}

/// Serials linked directly in keyring `serial`.
fn children(serial: i32) -> Result<Vec<i32>, KeyringError> {
    let raw = Key::from_id(KeySerialId::new(serial))
        .read_to_vec()
        .map_err(|source| KeyringError::List { serial, source })?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn classify(key_type: &str, description: &str, serial: i32) -> bool {
    let Ok(sig) = description.parse::<Sig>() else {
        return false;
    };
    if key_type != "user" || sig.to_hex() != description {
        return false;
    }
    token_of(Key::from_id(KeySerialId::new(serial)), sig).is_ok()
}

/// Every key in the `@s` and `@u` trees, depth first like `keyctl show`. A keyring
/// reached twice (e.g. `@u` linked into `@s`) is walked once, under the first root.
pub fn list() -> Result<Vec<KeyInfo>, KeyringError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for root in [Ring::Session, Ring::User] {
        let serial = root.serial()?;
        walk(root, serial, 1, &mut seen, &mut out)?;
    }
    Ok(out)
}

fn walk(
    root: Ring,
    ring: i32,
    depth: usize,
    seen: &mut HashSet<i32>,
    out: &mut Vec<KeyInfo>,
) -> Result<(), KeyringError> {
    // Keyring nesting is bounded by the kernel (depth 6); the set guards cycles.
    if !seen.insert(ring) || depth > 8 {
        return Ok(());
    }
    let ring_desc = describe(ring).map(|d| d.4).unwrap_or_default();
    for serial in children(ring)? {
        // Keys we may not view are skipped, as `keyctl show` prints them unnamed.
        let Ok((key_type, uid, gid, perm, description)) = describe(serial) else {
            continue;
        };
        let is_ecryptfs_token = classify(&key_type, &description, serial);
        let nested = key_type == "keyring";
        out.push(KeyInfo {
            serial,
            key_type,
            description,
            perm,
            uid,
            gid,
            is_ecryptfs_token,
            keyring_serial: ring,
            keyring_description: ring_desc.clone(),
            root,
            depth,
        });
        if nested {
            walk(root, serial, depth + 1, seen, out)?;
        }
    }
    Ok(())
}

/// Unlinks every `user` key named `sig` from `ring` and the keyrings nested in it
/// (what `umount.ecryptfs` does for `@u`, extended to links in nested keyrings).
/// Returns how many links were removed.
pub fn unlink(ring: Ring, sig: &Sig) -> Result<usize, KeyringError> {
    let root = match ring.serial() {
        Ok(r) => r,
        Err(KeyringError::NoKeyring {
            source: SysError::KeyDoesNotExist,
            ..
        }) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(kr) = stack.pop() {
        if !seen.insert(kr) {
            continue;
        }
        for serial in children(kr)? {
            let Ok((key_type, _, _, _, desc)) = describe(serial) else {
                continue;
            };
            if key_type == "keyring" {
                stack.push(serial);
            } else if key_type == "user" && desc == sig.to_hex() {
                unlink_raw(serial, kr)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn unlink_raw(key: i32, keyring: i32) -> Result<(), KeyringError> {
    keyctl_int(
        libc::KEYCTL_UNLINK,
        key as libc::c_long,
        keyring as libc::c_long,
    )
    .map(drop)
    .map_err(|source| KeyringError::Unlink {
        serial: key,
        source,
    })
}

/// Unlinks everything from `ring` (`keyctl clear`). On `@u` this removes other
/// programs' keys as well; callers must make that an explicit choice.
pub fn clear(ring: Ring) -> Result<(), KeyringError> {
    ring.open(false)?
        .clear()
        .map_err(|source| KeyringError::Clear { ring, source })
}

/// [`KeyLookup`] over the kernel keyring: finds tokens by sig in the given keyrings
/// in order, like the kernel's `request_key` searching the process's keyrings.
/// Private-key tokens decrypt through their key module (only "openssl" exists).
#[derive(Debug, Clone)]
pub struct KeyringLookup {
    rings: Vec<Ring>,
}

impl Default for KeyringLookup {
    /// Thread, process and session keyrings (which reach `@u` once it is linked
    /// into `@s`), then `@u` itself.
    fn default() -> Self {
        KeyringLookup {
            rings: vec![Ring::Thread, Ring::Process, Ring::Session, Ring::User],
        }
    }
}

impl KeyringLookup {
    pub fn new(rings: Vec<Ring>) -> Self {
        KeyringLookup { rings }
    }

    fn token(&self, sig: &Sig) -> Option<AuthToken> {
        self.rings.iter().find_map(|r| match find(*r, sig) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{e}");
                None
            }
        })
    }
}

impl KeyLookup for KeyringLookup {
    fn skek(&self, sig: &Sig) -> Option<Skek> {
        match self.token(sig)? {
            AuthToken::Passphrase { skek, .. } => Some(skek),
            _ => None,
        }
    }

    fn pk_decrypt(&self, sig: &Sig, efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        match self.token(sig)? {
            AuthToken::PrivateKey(pk) => Some(crate::pubkey::decrypt_with_token(*sig, &pk, efek)),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kdf::{Passphrase, DEFAULT_SALT};

    /// Runs `body` on a fresh thread that first joins a new anonymous session
    /// keyring. Session keyrings are per-thread credentials (since Linux 3.8), so
    /// nothing the body adds to `@s` is visible to other tests or the machine.
    pub(crate) fn in_private_session<T: Send + 'static>(
        body: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            let before = Ring::Session.serial().unwrap();
            let rc = keyctl_int(libc::KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
                .expect("cannot join a private session keyring");
            let after = Ring::Session.serial().unwrap();
            assert_ne!(before, after);
            assert_eq!(after as libc::c_long, rc);
            body()
        })
        .join()
        .unwrap()
    }

    fn token(p: &str) -> AuthToken {
        AuthToken::from_passphrase(&Passphrase::new(p).unwrap(), &DEFAULT_SALT)
    }

    #[test]
    fn add_find_list_unlink_in_private_session() {
        in_private_session(|| {
            let t = token("test123");
            let sig = t.sig();
            let Added::New(serial) = add_token(Ring::Session, &t).unwrap() else {
                panic!("not new")
            };
            assert_eq!(
                add_token(Ring::Session, &t).unwrap(),
                Added::AlreadyPresent(serial)
            );
            assert_eq!(find(Ring::Session, &sig).unwrap(), Some(t.clone()));
            // The raw payload is the V3 token.
            let raw = read_payload(Key::from_id(KeySerialId::new(serial)), sig).unwrap();
            assert_eq!(&raw[..], &t.to_bytes()[..]);

            // A foreign key in the same keyring is listed but not an eCryptfs token.
            let s = Ring::Session.open(false).unwrap();
            s.add_key("not-ecryptfs", b"hello").unwrap();
            let list = list().unwrap();
            let me = list.iter().find(|k| k.serial == serial).unwrap();
            assert!(me.is_ecryptfs_token && me.key_type == "user" && me.root == Ring::Session);
            assert_eq!(me.description, "2a97418edca01eb9");
            assert_eq!(me.keyring_serial, Ring::Session.serial().unwrap());
            let other = list
                .iter()
                .find(|k| k.description == "not-ecryptfs")
                .unwrap();
            assert!(!other.is_ecryptfs_token);

            let lookup = KeyringLookup::new(vec![Ring::Session]);
            assert_eq!(lookup.skek(&sig).unwrap().sig(), sig);
            assert!(lookup.skek(&token("other").sig()).is_none());

            assert_eq!(unlink(Ring::Session, &sig).unwrap(), 1);
            assert_eq!(find(Ring::Session, &sig).unwrap(), None);
            assert_eq!(unlink(Ring::Session, &sig).unwrap(), 0);
            clear(Ring::Session).unwrap();
            assert!(children(Ring::Session.serial().unwrap())
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn malformed_payload_is_reported() {
        in_private_session(|| {
            let sig = token("x").sig();
            Ring::Session
                .open(false)
                .unwrap()
                .add_key(&sig.to_hex(), &[0u8; 100][..])
                .unwrap();
            assert!(matches!(
                find(Ring::Session, &sig),
                Err(KeyringError::BadToken { .. })
            ));
            let l = list().unwrap();
            assert!(
                !l.iter()
                    .find(|k| k.description == sig.to_hex())
                    .unwrap()
                    .is_ecryptfs_token
            );
        });
    }
}
