//! The real mounter against this machine's kernel, as root in a private mount namespace
//! (`unshare -m`): unmounting goes by mount id through a descriptor and refuses a mount
//! that is not the recorded kind (CVE-2011-1832); a kernel without eCryptfs gives
//! NotSupported. Skips when not root or without unshare, unless STRONGROOM_REQUIRE_REAL=1.

use std::os::fd::AsFd;
use std::path::Path;

mod support;

use rustix::fs::{statx, AtFlags, StatxFlags};
use strongroom_helper::mounter::{
    unmount_verified, KernelMounter, MountError, MountRequest, Mounter,
};

const TMPFS_MAGIC: i64 = 0x0102_1994;

#[test]
fn real_mounter_in_a_private_namespace() {
    support::run_in_namespace(
        "real_mounter_in_a_private_namespace",
        "inner_real_mounter",
        "STRONGROOM_MOUNTER_INNER",
        support::missing_tools(&["/usr/bin/unshare"]),
    );
}

fn mnt_id(p: &Path) -> u64 {
    let f = std::fs::File::open(p).unwrap();
    statx(f.as_fd(), "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .unwrap()
        .stx_mnt_id
}

#[test]
#[ignore = "entry point of real_mounter_in_a_private_namespace (runs in its namespace)"]
fn inner_real_mounter() {
    if std::env::var_os("STRONGROOM_MOUNTER_INNER").is_none() {
        eprintln!("inner_real_mounter: only runs inside real_mounter_in_a_private_namespace");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let parent = t.path().join("p");
    let m = parent.join("a b"); // a space: mountinfo escapes it as \040
    std::fs::create_dir_all(&m).unwrap();
    let parent_id = mnt_id(&m);
    sys_mount::Mount::builder()
        .fstype("tmpfs")
        .mount("tmpfs", &m)
        .unwrap();
    let id = mnt_id(&m);
    assert_ne!(id, parent_id);
    let k = KernelMounter::default();
    assert!(k.is_live(id));
    // Not an eCryptfs mount: the helper's unmount refuses it and it stays.
    let refused = k.unmount(id, false).unwrap_err();
    assert!(
        matches!(refused, MountError::Failed(ref m) if m.contains("not the recorded mount")),
        "{refused:?}"
    );
    assert!(k.is_live(id));
    // Its parent renamed and a link to /etc planted at the old name: the mount is
    // still found by id (at its new place) and unmounted through the descriptor.
    std::fs::rename(&parent, t.path().join("q")).unwrap();
    std::os::unix::fs::symlink("/etc", &parent).unwrap();
    let moved = t.path().join("q/a b");
    unmount_verified(id, false, TMPFS_MAGIC).unwrap();
    assert!(!k.is_live(id));
    assert_eq!(
        mnt_id(&moved),
        parent_id,
        "the tmpfs is gone, /etc untouched"
    );
    assert_eq!(
        unmount_verified(id, false, TMPFS_MAGIC),
        Err(MountError::Gone)
    );

    // Mounting eCryptfs on a kernel without it: NotSupported (ENODEV), nothing mounted.
    let has_ecryptfs = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("ecryptfs");
    let module = k.kernel_support().loadable;
    if !has_ecryptfs && !module {
        let (lower, target) = (t.path().join("lower"), t.path().join("target"));
        std::fs::create_dir(&lower).unwrap();
        std::fs::create_dir(&target).unwrap();
        let (l, tg) = (
            std::fs::File::open(&lower).unwrap(),
            std::fs::File::open(&target).unwrap(),
        );
        let req = MountRequest {
            lower: l.as_fd(),
            target: tg.as_fd(),
            target_path: &target,
            options: "ecryptfs_sig=2a97418edca01eb9,ecryptfs_cipher=aes,ecryptfs_key_bytes=16",
            read_only: false,
        };
        assert!(matches!(k.mount(&req), Err(MountError::NotSupported(_))));
        assert_eq!(mnt_id(&target), parent_id);
    }
}
