//! `strongroom-dbus`: the D-Bus contract between Strongroom and `strongroom-helper`.
//!
//! Both sides depend on this crate: the names, the versioned interface (as a
//! [`zbus::proxy`]), the shared types, the typed errors (their D-Bus names are the
//! contract), the polkit action ids and the mount-option dictionary with its validation.
//! The introspection XML in `data/io.github.strongroom.Helper1.xml` is kept equal to the
//! exported interface by a test in `strongroom-helper`.

pub mod actions;
pub mod backend;
pub mod error;
pub mod options;
pub mod proxy;
pub mod types;

pub use error::Error;
pub use options::{MountOptions, UnmountOptions};
pub use proxy::Helper1Proxy;
pub use types::{KernelSupport, MountInfo, TokenInfo};

/// Well-known name the helper owns on the system bus.
pub const BUS_NAME: &str = "io.github.strongroom.Helper";
/// Object path of the single helper object.
pub const OBJECT_PATH: &str = "/io/github/strongroom/Helper";
/// Versioned interface name; an incompatible change gets `Helper2`.
pub const INTERFACE: &str = "io.github.strongroom.Helper1";
/// Prefix of every error name the helper returns.
pub const ERROR_PREFIX: &str = "io.github.strongroom.Helper.Error";
