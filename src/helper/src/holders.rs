//! Which processes keep a mount busy (for the `Busy` error of `Unmount`): those whose
//! working directory, root or an open file lies under the mount point.

use std::fs;
use std::path::Path;

/// Up to `max` processes using something under `mount_point`, as "comm (pid)".
pub fn holders(mount_point: &Path, max: usize) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = entry.path();
        let under = |link: &Path| fs::read_link(link).is_ok_and(|t| t.starts_with(mount_point));
        let uses = under(&dir.join("cwd"))
            || under(&dir.join("root"))
            || fs::read_dir(dir.join("fd"))
                .is_ok_and(|fds| fds.flatten().any(|fd| under(&fd.path())));
        if uses {
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            found.push(format!("{} ({pid})", comm.trim()));
            if found.len() >= max {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_process_working_in_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let inner = t.path().join("deep");
        fs::create_dir(&inner).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&inner)
            .spawn()
            .unwrap();
        let found = holders(t.path(), 16);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.contains(&format!("sleep ({})", child.id())),
            "{found:?}"
        );
        assert!(holders(&t.path().join("nothing-here"), 16).is_empty());
    }
}
