//! Interrupting a real child process at random points with SIGKILL, then running it
//! again: shared by the passphrase-change test (here) and the CLI migrate tests
//! (`src/cli/tests/migrate.rs` includes this file by path).
#![allow(dead_code)]

use std::process::Child;
use std::time::Duration;

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Starts `spawn()` up to `rounds` times, SIGKILLing each child after a random delay
/// of `window` milliseconds (from, to) unless it finished first; `after_kill(kills)`
/// runs after every kill. Returns the number of kills and whether a child finished by
/// itself (a child that failed panics, with `round` and the child's `log` if any).
pub fn kill_at_random(
    rounds: u32,
    window: (u64, u64),
    log: Option<&std::path::Path>,
    mut spawn: impl FnMut(u32) -> Child,
    mut after_kill: impl FnMut(u32),
) -> (u32, bool) {
    let mut kills = 0;
    for round in 0..rounds {
        let mut child = spawn(round);
        let wait = window.0 + random_u64() % (window.1 - window.0).max(1);
        let deadline = std::time::Instant::now() + Duration::from_millis(wait);
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_some() {
            let st = child.wait().unwrap();
            let said = log.map(|l| std::fs::read_to_string(l).unwrap_or_default());
            assert!(
                st.success(),
                "the child failed on round {round}: {st}\n{}",
                said.unwrap_or_default()
            );
            return (kills, true);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        after_kill(kills);
    }
    (kills, false)
}
