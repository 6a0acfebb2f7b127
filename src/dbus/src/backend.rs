//! Which backend serves a vault: `--backend kernel | userspace | auto`.
//!
//! `auto` takes the kernel where the module (or a loadable one) and the helper are
//! there and the vault needs nothing only the userspace backend offers; otherwise the
//! userspace backend. The [`Reason`] says why, for the user (translated by the UI).

use std::fmt;
use std::str::FromStr;

use crate::KernelSupport;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendRequest {
    Kernel,
    Userspace,
    #[default]
    Auto,
}

impl FromStr for BackendRequest {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s {
            "kernel" => Ok(BackendRequest::Kernel),
            "userspace" => Ok(BackendRequest::Userspace),
            "auto" => Ok(BackendRequest::Auto),
            _ => Err(BackendError::UnknownBackend(s.chars().take(40).collect())),
        }
    }
}

/// The backend that will serve the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Userspace,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        })
    }
}

/// What a vault needs from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VaultNeeds {
    /// A public-key (tag 1, OpenSSL) token: the kernel needs `/dev/ecryptfs` messaging.
    pub public_key: bool,
    pub filename_encryption: bool,
    pub xattr_metadata: bool,
    pub passthrough: bool,
    /// The decrypted view only for its owner: a kernel mount is visible to every user
    /// (limited by file modes), the FUSE mount is owner-only unless `allow_other`.
    pub owner_only: bool,
}

/// Why a backend was (or could not be) chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The user asked for it.
    Requested,
    /// `auto`: the kernel has eCryptfs with everything the vault needs.
    KernelFits,
    /// The kernel has no eCryptfs and none can be loaded.
    NoKernelModule,
    /// `strongroom-helper` is not installed or not reachable on the system bus.
    HelperUnavailable,
    /// The kernel lacks a feature (name from [`crate::types::FEATURE_BITS`]).
    KernelLacks(&'static str),
    /// Only the userspace backend keeps the decrypted view private to the owner.
    OwnerOnly,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested => f.write_str("requested"),
            Reason::KernelFits => {
                f.write_str("the kernel's eCryptfs has everything this vault needs")
            }
            Reason::NoKernelModule => f.write_str("this kernel has no eCryptfs module"),
            Reason::HelperUnavailable => {
                f.write_str("strongroom-helper is not available on the system bus")
            }
            Reason::KernelLacks(feat) => write!(f, "the kernel's eCryptfs lacks {feat}"),
            Reason::OwnerOnly => f.write_str(
                "the vault is private to its owner, which only the userspace backend enforces",
            ),
        }
    }
}

/// The choice and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub backend: Backend,
    pub reason: Reason,
}

/// The request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("unknown backend {0:?} (kernel, userspace or auto)")]
    UnknownBackend(String),
    #[error("the kernel backend cannot serve this vault: {0}")]
    KernelUnusable(Reason),
}

/// Features every eCryptfs since 2.6.29 has (the mask a loaded module would show
/// without messaging, spec §6.1); assumed when the module is loadable but not loaded.
const BASELINE_BITS: u32 = 309;

/// Decide. `kernel` is what the helper reported (None: helper unreachable).
pub fn choose(
    request: BackendRequest,
    needs: &VaultNeeds,
    kernel: Option<&KernelSupport>,
) -> Result<Choice, BackendError> {
    if request == BackendRequest::Userspace {
        return Ok(Choice {
            backend: Backend::Userspace,
            reason: Reason::Requested,
        });
    }
    let kernel_verdict = kernel_obstacle(needs, kernel);
    match (request, kernel_verdict) {
        (BackendRequest::Kernel, None) => Ok(Choice {
            backend: Backend::Kernel,
            reason: Reason::Requested,
        }),
        (BackendRequest::Kernel, Some(Reason::OwnerOnly)) => {
            // An explicit request overrides a preference, never a missing capability.
            Ok(Choice {
                backend: Backend::Kernel,
                reason: Reason::Requested,
            })
        }
        (BackendRequest::Kernel, Some(why)) => Err(BackendError::KernelUnusable(why)),
        (_, None) => Ok(Choice {
            backend: Backend::Kernel,
            reason: Reason::KernelFits,
        }),
        (_, Some(why)) => Ok(Choice {
            backend: Backend::Userspace,
            reason: why,
        }),
    }
}

fn kernel_obstacle(needs: &VaultNeeds, kernel: Option<&KernelSupport>) -> Option<Reason> {
    let Some(k) = kernel else {
        return Some(Reason::HelperUnavailable);
    };
    if !k.available && !k.loadable {
        return Some(Reason::NoKernelModule);
    }
    let bits = if k.version_bits == 0 {
        BASELINE_BITS
    } else {
        k.version_bits
    };
    let wanted = [
        (needs.filename_encryption, 0x100, "filename-encryption"),
        (needs.xattr_metadata, 0x10, "xattr"),
        (needs.passthrough, 0x4, "plaintext-passthrough"),
        (needs.public_key, 0x2 | 0x40, "pubkey"),
    ];
    if let Some((_, _, name)) = wanted
        .iter()
        .find(|(need, bit, _)| *need && bits & *bit != *bit)
    {
        return Some(Reason::KernelLacks(name));
    }
    if needs.public_key && !k.messaging {
        return Some(Reason::KernelLacks("devmisc"));
    }
    if needs.owner_only {
        return Some(Reason::OwnerOnly);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(bits: u32, messaging: bool) -> KernelSupport {
        KernelSupport {
            available: true,
            loadable: false,
            version_bits: bits,
            features: crate::types::feature_names(bits),
            messaging,
        }
    }

    #[test]
    fn auto_prefers_the_kernel_when_it_fits() {
        let c = choose(
            BackendRequest::Auto,
            &VaultNeeds::default(),
            Some(&kernel(309, false)),
        );
        assert_eq!(
            c,
            Ok(Choice {
                backend: Backend::Kernel,
                reason: Reason::KernelFits
            })
        );
    }

    #[test]
    fn auto_falls_back_with_the_reason() {
        let auto = |needs: VaultNeeds, k: Option<&KernelSupport>| {
            choose(BackendRequest::Auto, &needs, k).unwrap()
        };
        let pk = VaultNeeds {
            public_key: true,
            ..Default::default()
        };
        // Debian's module without CONFIG_ECRYPT_FS_MESSAGING (309) cannot do tag 1.
        assert_eq!(
            auto(pk, Some(&kernel(309, false))).reason,
            Reason::KernelLacks("pubkey")
        );
        assert_eq!(
            auto(pk, Some(&kernel(375, false))).reason,
            Reason::KernelLacks("devmisc")
        );
        assert_eq!(auto(pk, Some(&kernel(375, true))).backend, Backend::Kernel);
        let fnek = VaultNeeds {
            filename_encryption: true,
            ..Default::default()
        };
        assert_eq!(
            auto(fnek, Some(&kernel(0x1 | 0x20, false))).reason,
            Reason::KernelLacks("filename-encryption")
        );
        assert_eq!(
            auto(VaultNeeds::default(), None).reason,
            Reason::HelperUnavailable
        );
        let absent = KernelSupport {
            available: false,
            loadable: false,
            version_bits: 0,
            features: vec![],
            messaging: false,
        };
        assert_eq!(
            auto(VaultNeeds::default(), Some(&absent)),
            Choice {
                backend: Backend::Userspace,
                reason: Reason::NoKernelModule
            }
        );
        let private = VaultNeeds {
            owner_only: true,
            ..Default::default()
        };
        assert_eq!(
            auto(private, Some(&kernel(309, false))).reason,
            Reason::OwnerOnly
        );
        // Loadable but not loaded: no sysfs bits yet, the baseline is assumed.
        let loadable = KernelSupport {
            available: false,
            loadable: true,
            ..absent
        };
        assert_eq!(auto(fnek, Some(&loadable)).backend, Backend::Kernel);
    }

    #[test]
    fn explicit_requests() {
        let pk = VaultNeeds {
            public_key: true,
            ..Default::default()
        };
        assert_eq!(
            choose(BackendRequest::Kernel, &pk, Some(&kernel(309, false))),
            Err(BackendError::KernelUnusable(Reason::KernelLacks("pubkey")))
        );
        assert_eq!(
            choose(BackendRequest::Kernel, &VaultNeeds::default(), None),
            Err(BackendError::KernelUnusable(Reason::HelperUnavailable))
        );
        let private = VaultNeeds {
            owner_only: true,
            ..Default::default()
        };
        assert_eq!(
            choose(BackendRequest::Kernel, &private, Some(&kernel(309, false)))
                .unwrap()
                .backend,
            Backend::Kernel
        );
        assert_eq!(
            choose(BackendRequest::Userspace, &pk, None).unwrap().reason,
            Reason::Requested
        );
        assert_eq!("auto".parse(), Ok(BackendRequest::Auto));
        assert!("kernel,x".parse::<BackendRequest>().is_err());
    }
}
