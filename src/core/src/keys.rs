//! TEMPORARY stand-in written by the KEYS helper: only the traits and the error
//! variants that keyring/pubkey use, with the FORMAT helper's signatures (its
//! wip-format keys.rs, commit 4ad4e99). Its keys.rs replaces this file at merge.

use std::fmt::Debug;

use zeroize::Zeroizing;

use crate::kdf::{Sig, Skek};

/// Errors of FEK wrapping and key lookup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("no key in reach for signature(s) {}", list_sigs(sigs))]
    NoKey { sigs: Vec<Sig> },
    #[error("the key(s) {} did not decrypt the file key", list_sigs(sigs))]
    WrongKey { sigs: Vec<Sig> },
    /// Failures of a public-key implementation (RSA), as its own message.
    #[error("public key operation failed: {0}")]
    PublicKey(String),
}

fn list_sigs(sigs: &[Sig]) -> String {
    sigs.iter().map(Sig::to_hex).collect::<Vec<_>>().join(", ")
}

/// Where the keys come from (the kernel keyring, an in-memory set, a PEM key...).
pub trait KeyLookup {
    fn skek(&self, sig: &Sig) -> Option<Skek>;
    fn pk_decrypt(&self, _sig: &Sig, _efek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, KeyError>> {
        None
    }
}

/// Public-key wrapping (implemented by pubkey.rs with RSA-OAEP).
pub trait PublicKeyWrap: Send + Sync + Debug {
    fn sig(&self) -> Sig;
    fn encrypt(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// The private half, for in-memory key sets.
pub trait PrivateKeyUnwrap: Send + Sync + Debug {
    fn sig(&self) -> Sig;
    fn decrypt(&self, efek: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}
