//! The cache directory that `vm-setup` fills and `vm` reads.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::VmError;

/// The guest's `/init`, embedded so that a changed init is noticed (see [`STAMP`]).
pub(crate) const GUEST_INIT: &str = include_str!("guest-init.sh");
/// Modules the init loads at every boot, in order.
pub(crate) const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "overlay",
    "ext4",
    "ecryptfs",
    "fuse",
    "loop",
];
/// Modules loaded only when USB disks are attached.
pub(crate) const USB_MODULES: &[&str] = &["xhci_pci", "ehci_pci", "usb_storage", "uas", "sd_mod"];
/// Further modules put into the initramfs for on-demand loading by the kernel (file
/// systems, code pages), besides every crypto module (eCryptfs asks for its ciphers).
pub(crate) const EXTRA_MODULES: &[&str] = &[
    "vfat",
    "msdos",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "crc32c_generic",
    "crc32c_intel",
];
pub(crate) const CRYPTO_DIRS: &[&str] = &[
    "kernel/crypto/",
    "kernel/arch/x86/crypto/",
    "kernel/lib/crypto/",
];
/// Bump when the cache layout or the initramfs recipe changes in a way the other
/// inputs of [`stamp`] do not show.
const RECIPE_VERSION: u32 = 1;

/// Identifies what `vm-setup` built; a mismatch means "run vm-setup again".
pub(crate) fn stamp() -> String {
    // FNV-1a: stable across toolchains, unlike std's DefaultHasher
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: &[u8]| {
        for &x in b.iter().chain(b"\0") {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&RECIPE_VERSION.to_le_bytes());
    feed(GUEST_INIT.as_bytes());
    for list in [BOOT_MODULES, USB_MODULES, EXTRA_MODULES, CRYPTO_DIRS] {
        for m in list {
            feed(m.as_bytes());
        }
    }
    format!("{h:016x}")
}

/// `$STRONGROOM_VM_CACHE`, else `$XDG_CACHE_HOME/strongroom-vm`, else `~/.cache/strongroom-vm`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = env::var_os("STRONGROOM_VM_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("strongroom-vm")
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (only when `vm-setup` saw a guest boot with it).
    Kvm,
    /// Pure emulation: slower, works everywhere.
    Tcg,
}

/// A ready VM setup.
#[derive(Debug, Clone)]
pub struct Installed {
    pub cache: PathBuf,
    /// The guest kernel: the unpacked ELF `vmlinux` (fast PVH boot) or the bzImage.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_version: String,
    pub kernel_package: String,
    /// `STRONGROOM_VM_ACCEL=kvm|tcg` overrides what `vm-setup` found.
    pub accel: Accel,
}

pub(crate) const ENV_FILE: &str = "vm.env";

pub(crate) fn read_env_file(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Is the VM set up (and up to date)? Boots nothing.
pub fn check() -> Result<Installed, VmError> {
    let cache = cache_dir();
    let env_path = cache.join(ENV_FILE);
    let vars = read_env_file(&env_path)
        .ok_or_else(|| VmError::NotSetUp(format!("{} does not exist", env_path.display())))?;
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .ok_or_else(|| VmError::NotSetUp(format!("{} has no {k}", env_path.display())))
    };
    if get("STAMP")? != stamp() {
        return Err(VmError::NotSetUp(
            "the guest init or module list changed since the last vm-setup".into(),
        ));
    }
    let kernel = cache.join(get("KERNEL")?);
    let initramfs = cache.join("initramfs.img");
    for f in [&kernel, &initramfs] {
        if !f.is_file() {
            return Err(VmError::NotSetUp(format!("{} is missing", f.display())));
        }
    }
    if crate::setup::find_in_path("qemu-system-x86_64").is_none() {
        return Err(VmError::NotSetUp(
            "qemu-system-x86_64 is not installed".into(),
        ));
    }
    let accel = match env::var("STRONGROOM_VM_ACCEL").ok().as_deref() {
        Some("kvm") => Accel::Kvm,
        Some("tcg") => Accel::Tcg,
        Some("") | Some("auto") | None => {
            if get("ACCEL")? == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            }
        }
        Some(other) => {
            return Err(VmError::Invalid(format!(
                "STRONGROOM_VM_ACCEL must be kvm, tcg or auto, not {other:?}"
            )))
        }
    };
    Ok(Installed {
        kernel,
        initramfs,
        kernel_version: get("KERNEL_VERSION")?,
        kernel_package: get("KERNEL_PACKAGE")?,
        accel,
        cache,
    })
}
