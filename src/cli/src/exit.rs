//! The exit-code contract of `strongroomctl` (scripts, the tray and the file-manager
//! actions rely on it; keep `README.md`'s table in step).

/// Success.
pub const OK: i32 = 0;
/// The operation ran but failed, or failed for some items (each reported on stderr).
pub const FAILED: i32 = 1;
/// Bad command line or unusable input (clap uses 2 as well).
pub const USAGE: i32 = 2;
/// Wrong passphrase or key: nothing could be decrypted with it.
pub const BAD_KEY: i32 = 3;
/// A needed key is not in the keyring / not available.
pub const KEY_MISSING: i32 = 4;
