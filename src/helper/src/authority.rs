//! Who is calling, and may they: behind a trait so the service logic is testable without
//! polkit; [`PolkitAuthority`] is the real one. The subject is always the **caller's**
//! bus name (`system-bus-name`), never the helper's own pid; if polkit cannot be asked
//! the answer is no.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use zbus::names::{BusName, UniqueName};
use zbus::zvariant::Value;

/// A boxed future (the traits are used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The peer of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Unique bus name (the polkit subject); None on a peer-to-peer connection.
    pub bus_name: Option<String>,
}

/// polkit's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    NotAuthorized,
    /// Would be authorized after authentication, which the caller did not allow.
    Challenge,
    /// The authentication dialog was dismissed (or no agent could show it).
    Dismissed,
}

/// The authority could not be asked (the service then refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

pub trait Authority: Send + Sync + 'static {
    /// Identify the sender of a call.
    fn identify<'a>(
        &'a self,
        sender: Option<UniqueName<'static>>,
    ) -> BoxFuture<'a, Result<Caller, Unavailable>>;
    /// Ask whether `caller` may do `action`.
    fn check<'a>(
        &'a self,
        caller: &'a Caller,
        action: &'static str,
        interactive: bool,
    ) -> BoxFuture<'a, Result<Verdict, Unavailable>>;
}

/// polkit over the system bus.
#[derive(Debug, Clone)]
pub struct PolkitAuthority {
    conn: zbus::Connection,
}

/// How long an interactive authentication may take before the helper gives up.
const AUTH_TIMEOUT: Duration = Duration::from_secs(300);
const ALLOW_USER_INTERACTION: u32 = 1;

impl PolkitAuthority {
    pub fn new(conn: zbus::Connection) -> Self {
        PolkitAuthority { conn }
    }

    async fn ask(
        &self,
        name: &str,
        action: &str,
        interactive: bool,
    ) -> Result<Verdict, Unavailable> {
        let subject_details: HashMap<&str, Value<'_>> =
            HashMap::from([("name", Value::from(name))]);
        let subject = ("system-bus-name", subject_details);
        let details: HashMap<&str, &str> = HashMap::new();
        let flags = if interactive {
            ALLOW_USER_INTERACTION
        } else {
            0
        };
        let body = (subject, action, details, flags, "");
        let call = self.conn.call_method(
            Some("org.freedesktop.PolicyKit1"),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &body,
        );
        let reply = match tokio::time::timeout(AUTH_TIMEOUT, call).await {
            Err(_) => return Ok(Verdict::Dismissed),
            Ok(Err(e)) => return Err(Unavailable(format!("polkit: {e}"))),
            Ok(Ok(m)) => m,
        };
        let (authorized, challenge, details): (bool, bool, HashMap<String, String>) = reply
            .body()
            .deserialize()
            .map_err(|e| Unavailable(format!("polkit reply: {e}")))?;
        Ok(if authorized {
            Verdict::Authorized
        } else if challenge {
            Verdict::Challenge
        } else if details.get("polkit.dismissed").map(String::as_str) == Some("true") {
            Verdict::Dismissed
        } else {
            Verdict::NotAuthorized
        })
    }
}

impl Authority for PolkitAuthority {
    fn identify<'a>(
        &'a self,
        sender: Option<UniqueName<'static>>,
    ) -> BoxFuture<'a, Result<Caller, Unavailable>> {
        Box::pin(async move {
            let sender = sender.ok_or_else(|| Unavailable("call without a sender".into()))?;
            let dbus = zbus::fdo::DBusProxy::new(&self.conn)
                .await
                .map_err(|e| Unavailable(format!("bus: {e}")))?;
            let creds = dbus
                .get_connection_credentials(BusName::Unique(sender.clone()))
                .await
                .map_err(|e| Unavailable(format!("bus credentials: {e}")))?;
            let uid = creds
                .unix_user_id()
                .ok_or_else(|| Unavailable("caller has no uid".into()))?;
            Ok(Caller {
                uid,
                bus_name: Some(sender.to_string()),
            })
        })
    }

    fn check<'a>(
        &'a self,
        caller: &'a Caller,
        action: &'static str,
        interactive: bool,
    ) -> BoxFuture<'a, Result<Verdict, Unavailable>> {
        Box::pin(async move {
            let name = caller
                .bus_name
                .as_deref()
                .ok_or_else(|| Unavailable("no bus name to ask polkit about".into()))?;
            self.ask(name, action, interactive).await
        })
    }
}
