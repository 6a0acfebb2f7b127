//! TEMPORARY stand-in written by the KEYS helper: only the two traits and the error
//! type of the core-api.md contract that token/keyring/pubkey need. The FORMAT
//! helper's keys.rs (FEK wrapping glue) replaces this file at merge.

use std::fmt::Debug;

use zeroize::Zeroizing;

use crate::kdf::{Sig, Skek};

/// Errors of FEK wrapping and key lookup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("no key in reach for signature(s) {}", list_sigs(sigs))]
    NoKey { sigs: Vec<Sig> },
    #[error("the key does not unwrap this file key")]
    WrongKey,
    /// RSA operation, key file or key token problem of a public-key (tag 1) key.
    #[error("public key {sig}: {reason}")]
    PublicKey { sig: Sig, reason: String },
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
