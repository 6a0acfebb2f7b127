//! The inode table: FUSE node ids ↔ lower files.
//!
//! Each node remembers its links as (parent, *lower* name) pairs, so a rename touches
//! one entry; lower I/O goes through the parent directory's fd and that name. Hard links share one node
//! (nodes are indexed by the lower (dev, ino)) and keep every name seen, so removing
//! or replacing one name leaves the node reachable through another. A node whose lower
//! file lost its last link leaves that index, so a new file that reuses the lower inode
//! number gets a fresh node id (and the kernel never mixes their page caches).

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// Known names, the most recently used first; empty once unlinked.
    links: Vec<(u64, OsString)>,
    lookups: u64,
    lower_id: (u64, u64),
}

#[derive(Debug)]
pub struct Inodes {
    nodes: FxHashMap<u64, Node>,
    by_lower: FxHashMap<(u64, u64), u64>,
    next: u64,
    /// Counts the lower files that left `by_lower`: while it stays the same, every
    /// lower file known keeps its node id (new ones only join).
    epoch: u64,
}

/// A lower file's node id, remembered with the [`Inodes`] epoch it was read at (valid
/// while the epoch stays). Listing a large directory would otherwise probe the table
/// once per entry at each READDIR, each probe a cache miss.
#[derive(Debug, Default)]
pub struct NodeHint {
    node: AtomicU64,
    epoch: AtomicU64,
}

impl Clone for NodeHint {
    fn clone(&self) -> NodeHint {
        NodeHint {
            node: AtomicU64::new(self.node.load(Ordering::Relaxed)),
            epoch: AtomicU64::new(self.epoch.load(Ordering::Relaxed)),
        }
    }
}

impl Inodes {
    pub fn new(root_id: (u64, u64)) -> Inodes {
        let mut nodes = FxHashMap::default();
        nodes.insert(
            ROOT,
            Node {
                links: Vec::new(),
                lookups: 1,
                lower_id: root_id,
            },
        );
        let mut by_lower = FxHashMap::default();
        by_lower.insert(root_id, ROOT);
        Inodes {
            nodes,
            by_lower,
            next: ROOT + 1,
            // Above a new hint's 0.
            epoch: 1,
        }
    }

    /// The node's parent and lower name (the most recently used link), or `None` for
    /// the root and for unknown (forgotten) or unlinked nodes.
    pub fn link(&self, ino: u64) -> Option<(u64, OsString)> {
        if ino == ROOT {
            return None;
        }
        self.nodes.get(&ino)?.links.first().cloned()
    }

    /// Records one kernel lookup of a lower file found as `lower_name` in `parent`;
    /// returns its node id.
    pub fn lookup(&mut self, parent: u64, lower_name: &OsStr, lower_id: (u64, u64)) -> u64 {
        if let Some(&ino) = self.by_lower.get(&lower_id) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.lookups += 1;
                if ino != ROOT {
                    // The newest name first: it is the one known to exist.
                    node.links
                        .retain(|(p, n)| !(*p == parent && n == lower_name));
                    node.links.insert(0, (parent, lower_name.to_owned()));
                }
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                links: vec![(parent, lower_name.to_owned())],
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

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// [`Inodes::known`] through a hint of the entry, which it updates. Hints are read
    /// and written under the table's lock (shared is enough): the epoch cannot change
    /// meanwhile, and all writers of one epoch write the same id.
    pub fn known_hinted(&self, lower_id: (u64, u64), hint: &NodeHint) -> Option<u64> {
        if hint.epoch.load(Ordering::Acquire) == self.epoch {
            return Some(hint.node.load(Ordering::Relaxed));
        }
        let ino = self.known(lower_id)?;
        hint.node.store(ino, Ordering::Relaxed);
        hint.epoch.store(self.epoch, Ordering::Release);
        Some(ino)
    }

    fn left(&mut self, lower_id: (u64, u64)) {
        self.by_lower.remove(&lower_id);
        self.epoch += 1;
    }

    /// Takes back a lookup made under the same hold of the table's lock: no one saw a
    /// node it made, which goes without a new epoch.
    pub fn take_back(&mut self, ino: u64) {
        self.unref(ino, 1, false);
    }

    /// Drops `n` kernel references; true when the node is gone.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        ino != ROOT && self.unref(ino, n, true)
    }

    /// Drops `n` references; a node left with none goes, and with it its lower file
    /// (a new epoch if the node was `seen`). True when the node is gone.
    fn unref(&mut self, ino: u64, n: u64, seen: bool) -> bool {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return false;
        }
        let id = node.lower_id;
        self.nodes.remove(&ino);
        if self.by_lower.get(&id) == Some(&ino) {
            if seen {
                self.left(id);
            } else {
                self.by_lower.remove(&id);
            }
        }
        true
    }

    /// After a rename in the lower directory.
    pub fn moved(&mut self, lower_id: (u64, u64), from: (u64, &OsStr), to: (u64, &OsStr)) {
        if let Some(node) = self
            .by_lower
            .get(&lower_id)
            .and_then(|i| self.nodes.get_mut(i))
        {
            node.links
                .retain(|(p, n)| !((*p == from.0 && n == from.1) || (*p == to.0 && n == to.1)));
            node.links.insert(0, (to.0, to.1.to_owned()));
        }
    }

    /// After the name `name` in `parent` stopped pointing at this lower file (unlink,
    /// rmdir, replaced by a rename). `last` says it was the file's last link.
    pub fn unlinked(&mut self, lower_id: (u64, u64), parent: u64, name: &OsStr, last: bool) {
        if let Some(node) = self
            .by_lower
            .get(&lower_id)
            .and_then(|i| self.nodes.get_mut(i))
        {
            node.links.retain(|(p, n)| !(*p == parent && n == name));
        }
        if last && self.by_lower.contains_key(&lower_id) {
            self.left(lower_id);
        }
    }
}
