//! Structures passed over the bus (zvariant signatures are part of the contract).

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

/// One mount the helper made, as recorded in its ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct MountInfo {
    /// Absolute path of the mount point (as resolved from the caller's descriptor).
    pub mount_point: String,
    /// Absolute path of the lower (encrypted) directory.
    pub lower: String,
    /// Uid of the caller that mounted it.
    pub uid: u32,
    /// `ecryptfs_sig` values, in mount order.
    pub sigs: Vec<String>,
    /// `ecryptfs_fnek_sig`, or empty when filenames are not encrypted.
    pub fnek_sig: String,
    /// The kernel option string used (no secrets: only sigs, cipher names and flags).
    pub options: String,
    /// Seconds since the Unix epoch.
    pub mounted_at: u64,
}

/// Kind of an auth token (`token_type` of `struct ecryptfs_auth_tok`).
pub const TOKEN_KIND_PASSPHRASE: &str = "passphrase";
/// Private-key token (tag 1 keys, e.g. OpenSSL).
pub const TOKEN_KIND_PRIVATE_KEY: &str = "private-key";

/// An auth token the helper holds for the caller (never its payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TokenInfo {
    /// 16 lower-case hex characters.
    pub sig: String,
    /// [`TOKEN_KIND_PASSPHRASE`] or [`TOKEN_KIND_PRIVATE_KEY`].
    pub kind: String,
    /// Named by a live mount of the caller (wiping it is refused as busy).
    pub in_use: bool,
}

/// What the running kernel offers for the kernel backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct KernelSupport {
    /// `ecryptfs` is listed in `/proc/filesystems`.
    pub available: bool,
    /// Not listed, but a module is installed for the running kernel (loaded on first mount).
    pub loadable: bool,
    /// The decimal mask of `/sys/fs/ecryptfs/version` (0 when unknown).
    pub version_bits: u32,
    /// Names of the bits set, see [`feature_names`].
    pub features: Vec<String>,
    /// `/dev/ecryptfs` exists and the helper serves it: public-key (tag 1) vaults mount.
    pub messaging: bool,
}

/// Bits of `/sys/fs/ecryptfs/version` (`ECRYPTFS_VERSIONING_*`, spec Appendix A).
pub const FEATURE_BITS: [(u32, &str); 10] = [
    (0x001, "passphrase"),
    (0x002, "pubkey"),
    (0x004, "plaintext-passthrough"),
    (0x008, "policy"),
    (0x010, "xattr"),
    (0x020, "multiple-keys"),
    (0x040, "devmisc"),
    (0x080, "hmac"),
    (0x100, "filename-encryption"),
    (0x200, "gcm"),
];

/// Names of the feature bits set in `bits`; unknown bits are shown as hex.
pub fn feature_names(bits: u32) -> Vec<String> {
    let mut names: Vec<String> = FEATURE_BITS
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let known = FEATURE_BITS.iter().fold(0, |acc, (bit, _)| acc | bit);
    if bits & !known != 0 {
        names.push(format!("unknown-{:#x}", bits & !known));
    }
    names
}

impl KernelSupport {
    /// Whether a feature bit is advertised.
    pub fn has(&self, bit: u32) -> bool {
        self.version_bits & bit == bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_debian_kernel_masks() {
        // Spec §6.1: 309 without messaging, 375 with CONFIG_ECRYPT_FS_MESSAGING.
        assert_eq!(
            feature_names(309),
            [
                "passphrase",
                "plaintext-passthrough",
                "xattr",
                "multiple-keys",
                "filename-encryption"
            ]
        );
        let with_messaging = feature_names(375);
        assert!(with_messaging.contains(&"pubkey".to_owned()));
        assert!(with_messaging.contains(&"devmisc".to_owned()));
        assert_eq!(with_messaging.len(), 7);
        assert_eq!(feature_names(0x1000), ["unknown-0x1000"]);
    }

    #[test]
    fn signatures_are_the_contract() {
        assert_eq!(MountInfo::SIGNATURE.to_string(), "(ssuassst)");
        assert_eq!(TokenInfo::SIGNATURE.to_string(), "(ssb)");
        assert_eq!(KernelSupport::SIGNATURE.to_string(), "(bbuasb)");
    }
}
