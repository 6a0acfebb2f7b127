//! Who keeps a mount busy: processes whose cwd, root, executable, open files or
//! memory maps lie under the mount point (what `fuser -vm` and `lsof` tell).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How a process uses a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Use {
    Cwd,
    Root,
    Exe,
    Open,
    Mapped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub command: String,
    pub uses: Vec<(Use, PathBuf)>,
}

/// Processes holding anything under `mountpoint`. Processes this user may not inspect
/// are skipped (their count is returned second).
pub fn holders(mountpoint: &Path) -> (Vec<Holder>, usize) {
    let mnt = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let mut out = Vec::new();
    let mut hidden = 0;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return (out, 0);
    };
    let me = std::process::id();
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = ent.path();
        let mut uses = Vec::new();
        let mut denied = false;
        let mut note = |u: Use, p: PathBuf| {
            if p.starts_with(&mnt) && !uses.contains(&(u, p.clone())) {
                uses.push((u, p));
            }
        };
        for (name, u) in [("cwd", Use::Cwd), ("root", Use::Root), ("exe", Use::Exe)] {
            match std::fs::read_link(dir.join(name)) {
                Ok(p) => note(u, p),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
                Err(_) => {}
            }
        }
        match std::fs::read_dir(dir.join("fd")) {
            Ok(fds) => {
                for fd in fds.flatten() {
                    if let Ok(p) = std::fs::read_link(fd.path()) {
                        note(Use::Open, p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
        if let Ok(maps) = std::fs::read(dir.join("maps")) {
            for line in maps.split(|&b| b == b'\n') {
                // address perms offset dev inode   pathname
                if let Some(i) = line.iter().position(|&b| b == b'/') {
                    note(
                        Use::Mapped,
                        PathBuf::from(OsString::from_vec(line[i..].to_vec())),
                    );
                }
            }
        }
        if !uses.is_empty() {
            let command = std::fs::read_to_string(dir.join("comm"))
                .unwrap_or_default()
                .trim_end()
                .to_owned();
            out.push(Holder { pid, command, uses });
        } else if denied {
            hidden += 1;
        }
    }
    out.sort_by_key(|h| h.pid);
    (out, hidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn finds_cwd_and_open_file_of_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("held.txt");
        std::fs::write(&file, "x").unwrap();
        // A child whose cwd is the directory and which keeps the file open on fd 3.
        let mut child = Command::new("sh")
            .args(["-c", "exec 3<held.txt; read _"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let canon = std::fs::canonicalize(dir.path()).unwrap();
        let mut found = None;
        for _ in 0..100 {
            let (hs, _) = holders(dir.path());
            if let Some(h) = hs
                .into_iter()
                .find(|h| h.pid == pid && h.uses.iter().any(|(u, _)| *u == Use::Open))
            {
                found = Some(h);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(child.stdin.take());
        child.wait().unwrap();
        let h = found.expect("the child was not found holding the directory");
        assert!(h.uses.contains(&(Use::Cwd, canon.clone())), "{h:?}");
        assert!(
            h.uses.contains(&(Use::Open, canon.join("held.txt"))),
            "{h:?}"
        );
        assert_eq!(h.command, "sh");
        let (after, _) = holders(dir.path());
        assert!(after.iter().all(|h| h.pid != pid));
    }
}
