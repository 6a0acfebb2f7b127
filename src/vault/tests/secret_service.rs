//! The Secret Service store against a real gnome-keyring-daemon, headless, on a
//! private session bus (`dbus-run-session`), with a throwaway HOME.
//!
//! Needs the Debian packages `gnome-keyring` and `dbus-daemon` (or `dbus-x11`).

use std::process::Command;
use std::time::{Duration, Instant};

use strongroom_core::kdf::{Passphrase, Sig};
use strongroom_vault::secret_store::{SecretError, SecretStore, StoreState};

const INNER: &str = "STRONGROOM_SECRET_INNER";

#[test]
fn remember_lookup_lock_forget_against_gnome_keyring() {
    if std::env::var_os(INNER).is_some() {
        return inner();
    }
    let home = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // The daemon reads the login-keyring password on stdin, creates and unlocks it.
    let script = format!(
        "printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null && exec '{}' --exact remember_lookup_lock_forget_against_gnome_keyring --nocapture",
        exe.display()
    );
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &script])
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env(INNER, "1")
        .output()
        .expect("dbus-run-session is missing (install dbus-daemon / dbus-x11)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

fn inner() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SecretStore::with_timeout(Duration::from_secs(5));
        assert_eq!(store.state().await, StoreState::Unlocked);
        let sig: Sig = "2a97418edca01eb9".parse().unwrap();
        let other: Sig = "3515cca9baaea1f4".parse().unwrap();
        assert!(store.lookup("work", sig).await.unwrap().is_none());

        store.remember("work", sig, &Passphrase::new("test123").unwrap()).await.unwrap();
        // Replacing keeps one item.
        store.remember("work", sig, &Passphrase::new("test123").unwrap()).await.unwrap();
        let got = store.lookup("work", sig).await.unwrap().expect("remembered");
        assert_eq!(got.as_bytes(), b"test123");
        assert!(store.lookup("work", other).await.unwrap().is_none(), "keyed by sig too");
        assert!(store.lookup("photos", sig).await.unwrap().is_none(), "keyed by vault");

        // Lock the collection as a screen locker would: a clear state, no prompt, no hang.
        {
            let ss = secret_service::SecretService::connect(secret_service::EncryptionType::Dh).await.unwrap();
            ss.get_default_collection().await.unwrap().lock().await.unwrap();
        }
        assert_eq!(store.state().await, StoreState::Locked);
        let t = Instant::now();
        assert!(matches!(store.lookup("work", sig).await, Err(SecretError::Locked)));
        let e = store.remember("work", sig, &Passphrase::new("x").unwrap()).await.unwrap_err();
        assert!(matches!(e, SecretError::Locked), "{e}");
        assert!(matches!(store.forget("work").await, Err(SecretError::Locked)));
        assert!(t.elapsed() < Duration::from_secs(5), "locked collection took {:?}", t.elapsed());

        // Unlock again (no prompt: gnome-keyring unlocks the login keyring with the
        // password given to --unlock only at start, so re-run it the same way).
        let st = Command::new("sh")
            .args(["-c", "printf pw | gnome-keyring-daemon --replace --unlock --components=secrets >/dev/null"])
            .status()
            .unwrap();
        assert!(st.success());
        let mut ok = false;
        for _ in 0..50 {
            if store.state().await == StoreState::Unlocked {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "keyring did not come back unlocked");
        assert_eq!(store.forget("work").await.unwrap(), 1);
        assert!(store.lookup("work", sig).await.unwrap().is_none());
    });
}

#[test]
fn no_bus_is_unavailable_not_a_hang() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_bus_child", "--nocapture"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", "/nonexistent-strongroom")
        .env("STRONGROOM_NO_BUS", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_bus_child() {
    if std::env::var_os("STRONGROOM_NO_BUS").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SecretStore::with_timeout(Duration::from_secs(3));
        let t = Instant::now();
        assert_eq!(store.state().await, StoreState::Unavailable);
        let e = store
            .lookup("v", "2a97418edca01eb9".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(e, SecretError::Unavailable | SecretError::Timeout(_)),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(7));
    });
}
