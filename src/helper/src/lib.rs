//! `strongroom-helper`: the only part of Strongroom that runs as root.
//!
//! A system-bus service, started by D-Bus activation and exiting when idle, that mounts
//! the kernel's eCryptfs for a caller after validating the request and asking polkit
//! about the caller. The logic takes its [`authority::Authority`] and
//! [`mounter::Mounter`] as traits so it is tested over a peer-to-peer connection
//! without root or polkit; the integration suites run it with the real ones.

pub mod authority;
pub mod holders;
pub mod kernel;
pub mod keystore;
pub mod ledger;
pub mod miscdev;
pub mod mounter;
pub mod paths;
pub mod pkd;
pub mod ratelimit;
pub mod service;
pub mod token;

pub use service::{Config, Helper};
