//! Client side of `io.github.strongroom.Helper1`.

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::{Fd, Value};

use crate::{Error, KernelSupport, MountInfo, TokenInfo};

/// The helper's interface. Options are built with [`crate::MountOptions::to_dict`] and friends.
#[proxy(
    interface = "io.github.strongroom.Helper1",
    default_service = "io.github.strongroom.Helper",
    default_path = "/io/github/strongroom/Helper"
)]
pub trait Helper1 {
    /// Mount `lower` (a directory descriptor, best `O_PATH|O_DIRECTORY|O_NOFOLLOW`) on
    /// `mount_point` with the given auth tokens (740-byte `struct ecryptfs_auth_tok`s).
    fn mount(
        &self,
        lower: Fd<'_>,
        mount_point: Fd<'_>,
        tokens: &[&[u8]],
        options: &HashMap<String, Value<'_>>,
    ) -> Result<MountInfo, Error>;

    /// `mount` for public-key (tag 1, OpenSSL) vaults: `private_keys` are RSA private
    /// keys as unencrypted PKCS#1 DER (`RSAPrivateKey`), one per public-key sig the
    /// options name; `tokens` holds the other (passphrase) tokens, possibly none. The
    /// helper keeps each key in memory while a mount of the caller uses it and answers
    /// the kernel's `/dev/ecryptfs` requests of the caller's processes with it.
    fn mount_with_keys(
        &self,
        lower: Fd<'_>,
        mount_point: Fd<'_>,
        tokens: &[&[u8]],
        private_keys: &[&[u8]],
        options: &HashMap<String, Value<'_>>,
    ) -> Result<MountInfo, Error>;

    /// Unmount a mount the helper made (by its recorded mount point).
    fn unmount(&self, mount_point: &str, options: &HashMap<String, Value<'_>>)
        -> Result<(), Error>;

    /// The caller's mounts (every mount for root).
    fn list_mounts(&self, options: &HashMap<String, Value<'_>>) -> Result<Vec<MountInfo>, Error>;

    /// Whether the kernel backend can work here.
    fn kernel_support(&self) -> Result<KernelSupport, Error>;

    /// The tokens the helper holds for the caller.
    fn list_tokens(&self, options: &HashMap<String, Value<'_>>) -> Result<Vec<TokenInfo>, Error>;

    /// Remove the caller's tokens with these sigs (all unused ones when empty); returns how many.
    fn wipe_tokens(
        &self,
        sigs: &[&str],
        options: &HashMap<String, Value<'_>>,
    ) -> Result<u32, Error>;

    /// Emitted after every mount or unmount the helper made.
    #[zbus(signal)]
    fn mounts_changed(&self) -> zbus::Result<()>;
}
