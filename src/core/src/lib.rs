//! `strongroom-core`: the eCryptfs on-disk and key-management formats.
//!
//! Byte-compatible with the Linux kernel's eCryptfs (file version 3, readers for 0..=3)
//! and with ecryptfs-utils 111 (auth tokens, wrapped-passphrase files, sig cache).
//! Plain synchronous Rust over byte slices and `std::io`: no GTK, no D-Bus, no async.
//! See `FORMAT.md` beside this crate for the byte layouts.
#![deny(unsafe_code)]

pub mod atomic;
pub mod cipher;
pub mod extent;
pub mod file;
pub mod filename;
pub mod header;
pub mod kdf;
pub mod keyring;
pub mod keys;
pub mod options;
pub mod packet;
pub mod pubkey;
pub mod rc;
pub mod sigcache;
pub mod token;
pub mod twofish;
pub mod wrapped;
