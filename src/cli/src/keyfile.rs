//! `--keyfile PEM --key-passphrase-file F`: an OpenSSL RSA key pair (the tag 1 packets
//! of ecryptfs-utils' openssl key module), for every command that takes one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use strongroom_core::kdf::Passphrase;
use strongroom_core::pubkey::RsaKeyPair;

use crate::secret;

#[derive(Debug, Args, Clone)]
pub struct KeyFileArgs {
    /// An OpenSSL RSA private key (PEM, from `keygen`) instead of a passphrase.
    #[arg(long, value_name = "PEM")]
    pub keyfile: Option<PathBuf>,
    /// The PEM key's passphrase, from a file.
    #[arg(long, value_name = "FILE", requires = "keyfile")]
    pub key_passphrase_file: Option<PathBuf>,
}

impl KeyFileArgs {
    /// The key file and its passphrase (from --key-passphrase-file, else asked for).
    pub fn material(&self) -> Result<Option<(&Path, Passphrase)>> {
        self.keyfile
            .as_deref()
            .map(|k| {
                let pass = secret::obtain(self.key_passphrase_file.as_deref(), "Key passphrase: ")?;
                Ok((k, pass))
            })
            .transpose()
    }

    /// The key pair, loaded and checked; a wrong key passphrase is a
    /// `PubkeyError::BadPrivateKey` in the chain.
    pub fn load(&self) -> Result<Option<RsaKeyPair>> {
        self.material()?
            .map(|(k, pass)| {
                RsaKeyPair::load(k, &pass).with_context(|| format!("key file {}", k.display()))
            })
            .transpose()
    }
}
