//! Remembering a vault's passphrase in the Secret Service (gnome-keyring, KWallet,
//! KeePassXC...) through the `secret-service` crate.
//!
//! Every call is bounded by a timeout: a provider that hangs (or waits on a prompt no
//! one will answer) becomes [`SecretError::Timeout`], and a locked collection becomes
//! [`SecretError::Locked`] without prompting — the caller then asks for the passphrase.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use secret_service::{EncryptionType, SecretService};
use strongroom_core::kdf::{Passphrase, Sig};
use zeroize::Zeroizing;

/// Attribute that marks Strongroom's items.
pub const APP_ATTRIBUTE: &str = "application";
pub const APP_ID: &str = "io.github.strongroom.Strongroom";
/// Default bound of one Secret Service call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("no Secret Service is running on the session bus (is a keyring daemon started?)")]
    Unavailable,
    #[error("the keyring collection is locked; unlock it (log in to the keyring) and try again")]
    Locked,
    #[error("the keyring did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the keyring prompt was dismissed")]
    Dismissed,
    #[error("the remembered passphrase for vault {0:?} is not a valid passphrase")]
    BadStoredSecret(String),
    #[error("Secret Service error: {0}")]
    Service(#[source] secret_service::Error),
}

impl From<secret_service::Error> for SecretError {
    fn from(e: secret_service::Error) -> Self {
        match e {
            secret_service::Error::Unavailable => SecretError::Unavailable,
            secret_service::Error::Locked => SecretError::Locked,
            secret_service::Error::Prompt | secret_service::Error::PromptDisconnected => {
                SecretError::Dismissed
            }
            other => SecretError::Service(other),
        }
    }
}

/// State of the default collection, for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreState {
    Unlocked,
    Locked,
    Unavailable,
}

/// Handle on the session bus' Secret Service.
#[derive(Debug, Clone)]
pub struct SecretStore {
    timeout: Duration,
}

impl Default for SecretStore {
    fn default() -> Self {
        SecretStore {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn attributes<'a>(vault: &'a str, sig: &'a str) -> HashMap<&'a str, &'a str> {
    HashMap::from([(APP_ATTRIBUTE, APP_ID), ("vault", vault), ("sig", sig)])
}

impl SecretStore {
    pub fn with_timeout(timeout: Duration) -> Self {
        SecretStore { timeout }
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, SecretError>>,
    ) -> Result<T, SecretError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| SecretError::Timeout(self.timeout))?
    }

    async fn connect(&self) -> Result<SecretService<'static>, SecretError> {
        // Without a session bus the crate reports a zbus address error; call it unavailable.
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        {
            return Err(SecretError::Unavailable);
        }
        match SecretService::connect(EncryptionType::Dh).await {
            Ok(s) => Ok(s),
            Err(secret_service::Error::Zbus(_)) | Err(secret_service::Error::ZbusFdo(_)) => {
                Err(SecretError::Unavailable)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the default collection can be used without a prompt.
    pub async fn state(&self) -> StoreState {
        let r = self
            .bounded(async {
                let ss = self.connect().await?;
                let c = ss.get_default_collection().await?;
                Ok(c.is_locked().await?)
            })
            .await;
        match r {
            Ok(false) => StoreState::Unlocked,
            Ok(true) | Err(SecretError::Locked) => StoreState::Locked,
            Err(_) => StoreState::Unavailable,
        }
    }

    /// Stores (or replaces) the vault's passphrase in the default collection. Fails
    /// with [`SecretError::Locked`] rather than prompting.
    pub async fn remember(
        &self,
        vault: &str,
        sig: Sig,
        passphrase: &Passphrase,
    ) -> Result<(), SecretError> {
        self.bounded(async {
            let ss = self.connect().await?;
            let c = ss.get_default_collection().await?;
            if c.is_locked().await? {
                return Err(SecretError::Locked);
            }
            let sig = sig.to_hex();
            c.create_item(
                &format!("Strongroom vault “{vault}”"),
                attributes(vault, &sig),
                passphrase.as_bytes(),
                true,
                "text/plain",
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The remembered passphrase, `None` if nothing is stored for this vault and sig.
    pub async fn lookup(&self, vault: &str, sig: Sig) -> Result<Option<Passphrase>, SecretError> {
        self.bounded(async {
            let ss = self.connect().await?;
            let sig = sig.to_hex();
            let found = ss.search_items(attributes(vault, &sig)).await?;
            let Some(item) = found.unlocked.first() else {
                return if found.locked.is_empty() {
                    Ok(None)
                } else {
                    Err(SecretError::Locked)
                };
            };
            let secret = Zeroizing::new(item.get_secret().await?);
            Passphrase::new(secret.as_slice())
                .map(Some)
                .map_err(|_| SecretError::BadStoredSecret(vault.to_owned()))
        })
        .await
    }

    /// Deletes every item stored for the vault (any sig). Returns how many were deleted.
    pub async fn forget(&self, vault: &str) -> Result<usize, SecretError> {
        self.bounded(async {
            let ss = self.connect().await?;
            let found = ss
                .search_items(HashMap::from([(APP_ATTRIBUTE, APP_ID), ("vault", vault)]))
                .await?;
            if !found.locked.is_empty() {
                return Err(SecretError::Locked);
            }
            for item in &found.unlocked {
                item.delete().await?;
            }
            Ok(found.unlocked.len())
        })
        .await
    }
}
