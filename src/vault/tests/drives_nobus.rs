//! Without a usable udisks the drives module fails with a typed error and never hangs:
//! no system bus at all, and a "bus" that accepts the connection but never answers.
//! (A bus without udisks is covered in drives_vm.rs.) One test: it sets
//! DBUS_SYSTEM_BUS_ADDRESS for the process.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use strongroom_vault::drives::{DriveError, Udisks};

#[tokio::test(flavor = "current_thread")]
async fn no_bus_and_a_silent_bus_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    std::env::set_var(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", missing.display()),
    );
    match Udisks::system().await {
        Err(e @ DriveError::Unavailable { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("udisks2 is not available (no system bus"),
                "{e}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Accepts, then says nothing: the SASL handshake never completes.
    let silent = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&silent).unwrap();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    std::env::set_var(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", silent.display()),
    );
    let t = Instant::now();
    match Udisks::system_with_timeout(Duration::from_secs(1)).await {
        Err(DriveError::Timeout { what, timeout }) => {
            assert_eq!(what, "the system bus connection");
            assert_eq!(timeout, Duration::from_secs(1));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    held.join().unwrap();
}
