use std::io;

/// Everything that can go wrong preparing or running the test VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// `cargo xtask vm-setup` has not been run, or its result is out of date.
    #[error("the test VM is not set up: {0} (run `cargo xtask vm-setup`)")]
    NotSetUp(String),
    /// A bad option (share path, USB disk spec, environment variable name...).
    #[error("invalid VM option: {0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A host tool (apt-get, dpkg, mkfs.ext4, ...) failed.
    #[error("`{cmd}` failed: {detail}")]
    Tool { cmd: String, detail: String },
    #[error("setup: {0}")]
    Setup(String),
    /// The VM did not power off in time; `console` is the tail of the guest console.
    #[error("the VM did not finish within {secs} s (last console lines:\n{console})")]
    Timeout { secs: u64, console: String },
    /// qemu or the guest init failed before the command's status was known.
    #[error("the VM failed: {reason}\n{details}")]
    Vm { reason: String, details: String },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}
