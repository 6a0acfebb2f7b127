//! `strongroom-vault`: the user's side of Strongroom.
//!
//! The vault registry, key sources (typed passphrase, passphrase file, PEM key on a USB
//! drive, Secret Service), unlock/lock orchestration over the backends, the keyring
//! view, passphrase changes and migrations, and removable drives. The CLI, the app, the
//! tray and the file-manager extensions are thin layers over the manager.
#![deny(unsafe_code)]

pub mod backend;
pub mod busy;
pub mod context;
pub mod drives;
pub mod import;
mod journal;
pub mod keydrive;
pub mod keysource;
pub mod manager;
pub mod migrate;
pub mod passwd;
pub mod registry;
pub mod secret_store;
pub mod strength;
