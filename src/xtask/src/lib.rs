//! Strongroom developer tasks, usable from test crates.
//!
//! The heart is a throwaway qemu VM running Debian bookworm's 6.1 kernel (which, unlike
//! many CI hosts, has eCryptfs): [`setup`] prepares it once, [`check`] tells whether it is
//! ready, and [`run`] boots it with the host's root file system (read-only, under a
//! writable overlay) and runs one command as root, with writable shares of host
//! directories at their host paths, a scratch ext4 disk at `/scratch` and optional
//! emulated USB disks. `cargo xtask --help` documents the command line.

mod cache;
pub mod ci;
mod error;
pub mod flatpak;
pub mod install;
mod setup;
mod vm;

pub use cache::{cache_dir, check, Accel, Installed};
pub use error::VmError;
pub use setup::setup;
pub use vm::{run, OutputMode, UsbDisk, VmOptions, VmOutcome, GUEST_SCRATCH};
