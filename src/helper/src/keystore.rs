//! Auth tokens the helper holds for callers, in the keyring the kernel searches when the
//! helper mounts: its own session keyring (a fresh one joined at start, see
//! [`join_private_session`]). Nothing goes to root's user keyring; the tokens die with
//! the helper, which therefore does not exit while it holds any.

use std::collections::{BTreeSet, HashMap};

use linux_keyutils::{Key, KeyRing, KeyRingIdentifier};

use crate::token::Token;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("a different token with sig {0} is held")]
    Conflict(String),
    #[error("keyring: {0}")]
    Keyring(String),
}

fn keyring_err(e: linux_keyutils::KeyError) -> StoreError {
    StoreError::Keyring(format!("{e:?}"))
}

#[derive(Debug)]
struct Held {
    key: Key,
    kind: &'static str,
    uids: BTreeSet<u32>,
}

/// Tokens by sig, each with the callers that hold it.
#[derive(Debug)]
pub struct TokenStore {
    keyring: KeyRing,
    held: HashMap<String, Held>,
}

/// Give the calling thread (and the threads it starts later) a new anonymous session
/// keyring, so that the kernel's `request_key` at mount time searches the helper's
/// tokens and nothing else.
pub fn join_private_session() -> Result<(), StoreError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) takes no pointers besides the null name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        return Err(StoreError::Keyring(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

impl TokenStore {
    /// A store over the calling thread's session keyring.
    pub fn session() -> Result<TokenStore, StoreError> {
        let keyring =
            KeyRing::from_special_id(KeyRingIdentifier::Session, true).map_err(keyring_err)?;
        Ok(TokenStore {
            keyring,
            held: HashMap::new(),
        })
    }

    /// Hold `token` for `uid`. A token with the same sig but other bytes is refused.
    pub fn add(&mut self, uid: u32, token: &Token) -> Result<(), StoreError> {
        if let Some(h) = self.held.get_mut(&token.sig) {
            let current = zeroize::Zeroizing::new(h.key.read_to_vec().map_err(keyring_err)?);
            if current.as_slice() != token.payload.as_slice() {
                return Err(StoreError::Conflict(token.sig.clone()));
            }
            h.uids.insert(uid);
            return Ok(());
        }
        let key = self
            .keyring
            .add_key(&token.sig, token.payload.as_slice())
            .map_err(keyring_err)?;
        self.held.insert(
            token.sig.clone(),
            Held {
                key,
                kind: token.kind,
                uids: BTreeSet::from([uid]),
            },
        );
        Ok(())
    }

    /// Sigs and kinds held for `uid`, sorted.
    pub fn list(&self, uid: u32) -> Vec<(String, &'static str)> {
        let mut v: Vec<_> = self
            .held
            .iter()
            .filter(|(_, h)| h.uids.contains(&uid))
            .map(|(sig, h)| (sig.clone(), h.kind))
            .collect();
        v.sort();
        v
    }

    pub fn holds(&self, uid: u32, sig: &str) -> bool {
        self.held.get(sig).is_some_and(|h| h.uids.contains(&uid))
    }

    /// Drop `uid`'s hold on `sig`; the key is invalidated when nobody holds it any more.
    /// Returns whether `uid` held it.
    pub fn release(&mut self, uid: u32, sig: &str) -> Result<bool, StoreError> {
        let Some(h) = self.held.get_mut(sig) else {
            return Ok(false);
        };
        if !h.uids.remove(&uid) {
            return Ok(false);
        }
        if h.uids.is_empty() {
            if let Some(h) = self.held.remove(sig) {
                h.key.invalidate().map_err(keyring_err)?;
            }
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::kdf::{derive_skek, Passphrase, Salt, DEFAULT_SALT};
    use strongroom_core::token::AuthToken;
    use zeroize::Zeroizing;

    /// "test123" with the default salt (spec §9 V1), or the same key under another salt:
    /// same sig, other bytes.
    fn token(salt: Salt) -> Token {
        let skek = derive_skek(&Passphrase::new("test123").unwrap(), &DEFAULT_SALT);
        let bytes = AuthToken::Passphrase { skek, salt }.to_bytes();
        Token::parse(Zeroizing::new(bytes.to_vec())).unwrap()
    }

    fn v3_token() -> Vec<u8> {
        token(DEFAULT_SALT).payload.to_vec()
    }

    /// Each test thread gets its own session keyring: never the machine's keyrings.
    fn private_store() -> TokenStore {
        join_private_session().unwrap();
        TokenStore::session().unwrap()
    }

    #[test]
    fn holds_tokens_per_caller_in_the_session_keyring() {
        let mut s = private_store();
        let t = token(DEFAULT_SALT);
        s.add(1000, &t).unwrap();
        s.add(1001, &t).unwrap();
        // The kernel finds it the way it will at mount: request_key("user", sig).
        let session = KeyRing::from_special_id(KeyRingIdentifier::Session, false).unwrap();
        let found = session.search(&t.sig).unwrap();
        assert_eq!(found.read_to_vec().unwrap(), v3_token());
        assert_eq!(
            s.list(1000),
            [("2a97418edca01eb9".to_owned(), "passphrase")]
        );
        assert!(s.list(1002).is_empty());
        assert!(s.release(1000, &t.sig).unwrap());
        assert!(!s.release(1000, &t.sig).unwrap());
        assert!(session.search(&t.sig).is_ok(), "1001 still holds it");
        assert!(s.release(1001, &t.sig).unwrap());
        assert!(
            session.search(&t.sig).is_err(),
            "wiped when nobody holds it"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn refuses_a_different_token_under_a_held_sig() {
        let mut s = private_store();
        s.add(1000, &token(DEFAULT_SALT)).unwrap();
        let impostor = token(Salt([9; 8]));
        assert!(matches!(
            s.add(1001, &impostor),
            Err(StoreError::Conflict(_))
        ));
        assert!(!s.holds(1001, "2a97418edca01eb9"));
    }
}
