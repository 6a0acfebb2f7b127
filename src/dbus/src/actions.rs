//! polkit action ids, one per verb (see `data/io.github.strongroom.Helper.policy.in`).

/// Mount a vault whose lower directory and mount point the caller owns.
pub const MOUNT: &str = "io.github.strongroom.vault-mount";
/// Unmount a vault the caller mounted.
pub const UNMOUNT: &str = "io.github.strongroom.vault-unmount";
/// Mount where the caller does not own the lower directory or the mount point (admin).
pub const MOUNT_OTHERS: &str = "io.github.strongroom.vault-mount-others";
/// Unmount a vault another user mounted (admin).
pub const UNMOUNT_OTHERS: &str = "io.github.strongroom.vault-unmount-others";
/// Wipe the auth tokens the helper holds for the caller.
pub const WIPE_KEYS: &str = "io.github.strongroom.wipe-keys";

/// Every action id, in the order of the policy file.
pub const ALL: [&str; 5] = [MOUNT, UNMOUNT, MOUNT_OTHERS, UNMOUNT_OTHERS, WIPE_KEYS];

#[cfg(test)]
mod tests {
    /// The policy file declares exactly these actions, each once.
    #[test]
    fn policy_file_declares_every_action() {
        let policy = include_str!("../../../data/io.github.strongroom.Helper.policy.in");
        let declared: Vec<&str> = policy
            .split("<action id=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        let mut sorted = declared.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), declared.len(), "an action is declared twice");
        let mut ours = super::ALL.to_vec();
        ours.sort_unstable();
        assert_eq!(sorted, ours);
    }
}
