//! The kernel side: what the running kernel offers, and the option string for a mount.

use std::fs;
use std::path::PathBuf;

use strongroom_core::cipher::Cipher;
use strongroom_core::kdf::Sig;
use strongroom_core::options::MountOptions as KernelOptions;
use strongroom_dbus::types::feature_names;
use strongroom_dbus::{KernelSupport, MountOptions};

/// Where the kernel tells about eCryptfs (injectable for tests).
#[derive(Debug, Clone)]
pub struct SysPaths {
    pub proc_filesystems: PathBuf,
    pub sys_version: PathBuf,
    /// `/lib/modules/<release>`.
    pub modules_dir: PathBuf,
    pub dev_ecryptfs: PathBuf,
}

impl SysPaths {
    pub fn host() -> SysPaths {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        SysPaths {
            proc_filesystems: "/proc/filesystems".into(),
            sys_version: "/sys/fs/ecryptfs/version".into(),
            modules_dir: PathBuf::from("/lib/modules").join(release),
            dev_ecryptfs: "/dev/ecryptfs".into(),
        }
    }
}

/// Probe. `serves_messaging` says whether this helper answers `/dev/ecryptfs`.
/// Mounting loads the module by itself (`request_module("fs-ecryptfs")`), so "loadable"
/// only needs the module to be installed for the running kernel.
pub fn probe(paths: &SysPaths, serves_messaging: bool) -> KernelSupport {
    let available = fs::read_to_string(&paths.proc_filesystems)
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("ecryptfs"))
        })
        .unwrap_or(false);
    let listed = |file: &str| {
        fs::read_to_string(paths.modules_dir.join(file))
            .map(|t| t.lines().any(|l| l.contains("/ecryptfs.ko")))
            .unwrap_or(false)
    };
    let loadable = !available && (listed("modules.dep") || listed("modules.builtin"));
    let version_bits = fs::read_to_string(&paths.sys_version)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0);
    KernelSupport {
        available,
        loadable,
        version_bits,
        features: feature_names(version_bits),
        messaging: serves_messaging && version_bits & 0x40 != 0 && paths.dev_ecryptfs.exists(),
    }
}

/// The kernel's option string (spec §6.1), built by `strongroom_core::options` from
/// values that were each checked against a closed set (see [`MountOptions::validate`]),
/// so nothing from the caller is pasted in as text.
pub fn option_string(o: &MountOptions) -> Result<String, String> {
    let cipher = |name: &str| Cipher::from_name(name).map_err(|e| e.to_string());
    let sig = |s: &str| s.parse::<Sig>().map_err(|e| e.to_string());
    let mut k = KernelOptions::default();
    k.sigs = o.sigs.iter().map(|s| sig(s)).collect::<Result<_, _>>()?;
    k.cipher = Some(cipher(&o.cipher)?);
    k.key_bytes = Some(o.key_bytes as usize);
    k.fnek_sig = o.fnek_sig.as_deref().map(sig).transpose()?;
    if k.fnek_sig.is_some() {
        k.fn_cipher = Some(cipher(o.fn_cipher.as_deref().unwrap_or(&o.cipher))?);
        k.fn_key_bytes = Some(o.fn_key_bytes.unwrap_or(o.key_bytes) as usize);
    }
    k.passthrough = o.passthrough;
    k.xattr_metadata = o.xattr_metadata;
    k.encrypted_view = o.encrypted_view;
    k.mount_auth_tok_only = o.mount_auth_tok_only;
    k.to_kernel_string().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_string_matches_the_kernel_syntax() {
        let mut o = MountOptions::new(vec!["2a97418edca01eb9".into()]);
        assert_eq!(
            option_string(&o).unwrap(),
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_cipher=aes,ecryptfs_key_bytes=16"
        );
        o.fnek_sig = Some("33a5d5e39463d53f".into());
        o.passthrough = true;
        assert_eq!(
            option_string(&o).unwrap(),
            "ecryptfs_sig=2a97418edca01eb9,ecryptfs_fnek_sig=33a5d5e39463d53f,\
             ecryptfs_cipher=aes,ecryptfs_key_bytes=16,ecryptfs_fn_cipher=aes,\
             ecryptfs_fn_key_bytes=16,ecryptfs_passthrough"
        );
    }

    /// The contract's cipher table offers exactly what the core (and the kernel) take.
    #[test]
    fn contract_ciphers_match_the_core() {
        use strongroom_core::cipher::CipherSpec;
        for (name, sizes) in strongroom_dbus::options::CIPHERS {
            let c = Cipher::from_name(name).unwrap();
            let core: Vec<u32> = c.key_sizes().iter().map(|&n| n as u32).collect();
            let mut ours = sizes.to_vec();
            ours.sort_unstable();
            let mut core_sorted = core.clone();
            core_sorted.sort_unstable();
            assert_eq!(ours, core_sorted, "{name}");
            for n in sizes {
                CipherSpec::new(c, *n as usize).unwrap();
            }
        }
        assert_eq!(strongroom_dbus::options::CIPHERS.len(), Cipher::ALL.len());
    }

    #[test]
    fn probes_kernel_files() {
        let t = tempfile::tempdir().unwrap();
        let p = SysPaths {
            proc_filesystems: t.path().join("filesystems"),
            sys_version: t.path().join("version"),
            modules_dir: t.path().join("modules"),
            dev_ecryptfs: t.path().join("ecryptfs"),
        };
        // This machine's kernel: no eCryptfs at all.
        fs::write(&p.proc_filesystems, "nodev\tsysfs\nnodev\tproc\n\text4\n").unwrap();
        let none = probe(&p, true);
        assert!(!none.available && !none.loadable && none.version_bits == 0 && !none.messaging);
        // Debian's: an installed module, not loaded yet.
        fs::create_dir(&p.modules_dir).unwrap();
        fs::write(
            p.modules_dir.join("modules.dep"),
            "kernel/fs/ecryptfs/ecryptfs.ko.xz: \n",
        )
        .unwrap();
        assert!(probe(&p, true).loadable);
        // Loaded, with messaging (spec §6.1: 375).
        fs::write(
            &p.proc_filesystems,
            "nodev\tproc\n\text4\nnodev\tecryptfs\n",
        )
        .unwrap();
        fs::write(&p.sys_version, "375\n").unwrap();
        fs::write(&p.dev_ecryptfs, "").unwrap();
        let k = probe(&p, true);
        assert!(k.available && !k.loadable && k.messaging);
        assert_eq!(k.version_bits, 375);
        assert!(!probe(&p, false).messaging, "nobody serves /dev/ecryptfs");
    }
}
