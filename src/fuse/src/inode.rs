//! The inode table: FUSE node ids ↔ lower files.
//!
//! Each node remembers its parent and its *lower* name, so a rename touches one entry
//! and the full lower path is rebuilt on demand. Hard links share one node: nodes are
//! also indexed by the lower (dev, ino). A node whose lower file lost its last link is
//! taken out of that index, so a new file that reuses the lower inode number gets a
//! fresh node id (and the kernel never mixes their page caches).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    parent: u64,
    name: OsString,
    lookups: u64,
    lower_id: (u64, u64),
}

#[derive(Debug)]
pub struct Inodes {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
    by_lower: HashMap<(u64, u64), u64>,
    next: u64,
}

impl Inodes {
    pub fn new(root: PathBuf, root_id: (u64, u64)) -> Inodes {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                lookups: 1,
                lower_id: root_id,
            },
        );
        let mut by_lower = HashMap::new();
        by_lower.insert(root_id, ROOT);
        Inodes {
            root,
            nodes,
            by_lower,
            next: ROOT + 1,
        }
    }

    /// The lower path of a node, or `None` for an unknown (forgotten) node.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.nodes.get(&cur)?;
            parts.push(&node.name);
            cur = node.parent;
            if parts.len() > 4096 {
                return None; // a cycle would be a bug; never loop forever
            }
        }
        let len = self.root.as_os_str().len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(&self.root);
        for part in parts.iter().rev() {
            path.push(part);
        }
        Some(path)
    }

    /// The lower path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: u64, lower_name: &OsStr) -> Option<PathBuf> {
        let mut p = self.path(parent)?;
        p.push(lower_name);
        Some(p)
    }

    /// Records one kernel lookup of a lower file found as `lower_name` in `parent`;
    /// returns its node id.
    pub fn lookup(&mut self, parent: u64, lower_name: &OsStr, lower_id: (u64, u64)) -> u64 {
        if let Some(&ino) = self.by_lower.get(&lower_id) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.lookups += 1;
                if ino != ROOT {
                    // The newest path wins: it is the one known to exist.
                    node.parent = parent;
                    node.name = lower_name.to_owned();
                }
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: lower_name.to_owned(),
                lookups: 1,
                lower_id,
            },
        );
        self.by_lower.insert(lower_id, ino);
        ino
    }

    /// The node id of a lower file if the kernel knows it (readdir's `d_ino`).
    pub fn known(&self, lower_id: (u64, u64)) -> Option<u64> {
        self.by_lower.get(&lower_id).copied()
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                let id = node.lower_id;
                self.nodes.remove(&ino);
                if self.by_lower.get(&id) == Some(&ino) {
                    self.by_lower.remove(&id);
                }
            }
        }
    }

    /// After a rename in the lower directory.
    pub fn moved(&mut self, lower_id: (u64, u64), new_parent: u64, new_name: &OsStr) {
        if let Some(&ino) = self.by_lower.get(&lower_id) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.parent = new_parent;
                node.name = new_name.to_owned();
            }
        }
    }

    /// After the last lower link of a file went away.
    pub fn gone(&mut self, lower_id: (u64, u64)) {
        self.by_lower.remove(&lower_id);
    }
}
