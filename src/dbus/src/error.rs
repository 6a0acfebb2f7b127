//! Typed D-Bus errors. The error *name* (`io.github.strongroom.Helper.Error.<Variant>`)
//! is the contract; the message is for logs and is never translated here.

use zbus::DBusError;

/// Every error the helper returns. Callers match on the variant (the D-Bus name).
#[derive(DBusError, Debug)]
#[zbus(prefix = "io.github.strongroom.Helper.Error")]
#[non_exhaustive]
pub enum Error {
    /// Transport or protocol failure below the interface.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Anything else that went wrong on the helper's side.
    Failed(String),
    /// polkit said no.
    NotAuthorized(String),
    /// polkit would say yes after authentication, but the caller asked for no interaction.
    NotAuthorizedCanObtain(String),
    /// The authentication dialog was dismissed or no authentication agent could answer.
    Dismissed(String),
    /// polkit could not be asked: the helper fails closed.
    AuthorityUnavailable(String),
    /// A malformed, oversized or disallowed argument (paths, options, tokens).
    InvalidArgument(String),
    /// The mount point (or the lower directory) is already mounted.
    AlreadyMounted(String),
    /// No mount of the helper's at that place.
    NotMounted(String),
    /// The mount or a token is in use (open files, a live mount).
    Busy(String),
    /// Too many calls from this caller in a short time.
    RateLimited(String),
    /// The kernel lacks eCryptfs or a feature the request needs.
    NotSupported(String),
}
