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
/// The mount point is already a mount point, or busy (umount).
pub const BUSY: i32 = 5;
/// The mount point is not empty.
pub const NOT_EMPTY: i32 = 6;
/// The lower directory is on a read-only file system (mount with --read-only).
pub const READ_ONLY_FS: i32 = 7;
/// Nothing is mounted there (umount).
pub const NOT_MOUNTED: i32 = 8;
/// polkit refused the helper's mount or unmount, or authentication was needed or dismissed.
pub const NOT_AUTHORIZED: i32 = 9;
/// The requested backend cannot serve the vault (helper unreachable, kernel lacks eCryptfs
/// or a feature).
pub const UNSUPPORTED: i32 = 10;
