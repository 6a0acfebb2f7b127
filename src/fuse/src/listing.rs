//! Directory listings kept between opens and updated by the mount's own changes.
//!
//! Listing a lower directory means reading all of it and decrypting every name (a
//! 10000-entry directory: ~6 ms, most of an `ls`). The daemon changes the lower tree
//! itself, so it can keep a listing current instead: each of its own creations,
//! removals and renames edits the cached listing and records the lower directory's new
//! (mtime, ctime, size). Any other change of the directory (another process writing
//! the lower tree, or a change the daemon made without editing the listing) leaves a
//! different stamp, and the next open lists the lower directory again. As the kernel's
//! attribute cache, a listing is trusted for at most the mount's TTL.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::FileType;
use rustc_hash::FxHashMap;

use crate::inode::NodeHint;
use crate::lower::Meta;

/// Cached entries over all directories at most (all dropped when more would be kept).
const ENTRIES_MAX: usize = 65536;

/// One directory entry: the upper name and the lower one it comes from.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub lower_name: OsString,
    pub lower_id: (u64, u64),
    pub kind: FileType,
    pub node: NodeHint,
}

/// What identifies a state of a lower directory's contents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirStamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
}

impl DirStamp {
    pub fn of(meta: &Meta) -> DirStamp {
        DirStamp {
            mtime: meta.mtime,
            ctime: meta.ctime,
            size: meta.size,
        }
    }
}

/// A change the daemon made to a directory's entries.
#[derive(Debug)]
pub enum Edit<'a> {
    /// A new entry, or a new file under an existing name.
    Put(DirEntry),
    /// The entry of this lower name is gone.
    Remove(&'a OsStr),
}

#[derive(Debug)]
struct Cached {
    stamp: DirStamp,
    listed: Instant,
    /// Shared with the open handles of the directory (copied on the next edit).
    entries: Arc<Vec<DirEntry>>,
    /// Position of each lower name in `entries`, made at the first edit (most listings
    /// are never edited: a walk of a tree makes one per directory).
    index: Option<HashMap<OsString, usize>>,
    seen: Seen,
}

/// What earlier opens of a kept listing showed the kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// Nothing: the listing is new, or edited since.
    New,
    /// This very listing.
    Before,
    /// This very listing, and the kernel keeps a copy of it (CACHE_DIR), made when the
    /// inode table was at this epoch (its entries' inode numbers are of that epoch).
    Copied(u64),
}

#[derive(Debug, Default)]
struct State {
    dirs: FxHashMap<u64, Cached>,
    total: usize,
}

/// Listings by directory node id.
#[derive(Debug)]
pub struct Listings {
    state: Mutex<State>,
    ttl: Duration,
}

impl Listings {
    pub fn new(ttl: Duration) -> Listings {
        Listings {
            state: Mutex::new(State::default()),
            ttl,
        }
    }

    /// The listing of a directory whose lower stamp is `stamp`, if kept and current, for
    /// an open of the directory; and what earlier opens saw of it.
    pub fn get(&self, dir: u64, stamp: DirStamp) -> Option<(Arc<Vec<DirEntry>>, Seen)> {
        let mut st = self.state.lock().ok()?;
        let current = st
            .dirs
            .get_mut(&dir)
            .filter(|c| c.stamp == stamp && c.listed.elapsed() < self.ttl)
            .map(|c| {
                let seen = c.seen;
                if seen == Seen::New {
                    c.seen = Seen::Before;
                }
                (c.entries.clone(), seen)
            });
        if current.is_none() {
            st.forget(dir);
        }
        current
    }

    /// The listing of a directory as kept, current or not (a hint only).
    pub fn peek(&self, dir: u64) -> Option<Arc<Vec<DirEntry>>> {
        Some(self.state.lock().ok()?.dirs.get(&dir)?.entries.clone())
    }

    /// Keeps a fresh listing of a directory (taken at `stamp`), for an open of it.
    pub fn put(&self, dir: u64, stamp: DirStamp, entries: Vec<DirEntry>) -> Arc<Vec<DirEntry>> {
        let entries = Arc::new(entries);
        let Ok(mut st) = self.state.lock() else {
            return entries;
        };
        st.forget(dir);
        if st.total + entries.len() > ENTRIES_MAX {
            st.dirs.clear();
            st.total = 0;
        }
        if entries.len() <= ENTRIES_MAX {
            st.total += entries.len();
            let listed = Instant::now();
            let cached = Cached {
                stamp,
                listed,
                entries: entries.clone(),
                index: None,
                seen: Seen::Before,
            };
            st.dirs.insert(dir, cached);
        }
        entries
    }

    /// Applies the daemon's own changes to a directory's listing, once they are made
    /// in the lower directory. `stamp` reads the lower directory's stamp now (under the
    /// lock, so that concurrent changes record their stamps in order); without it the
    /// listing is dropped.
    pub fn edit<'a>(
        &self,
        dir: u64,
        edits: impl IntoIterator<Item = Edit<'a>>,
        stamp: impl FnOnce() -> Option<DirStamp>,
    ) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if !st.dirs.contains_key(&dir) {
            return;
        }
        let Some(now) = stamp() else {
            st.forget(dir);
            return;
        };
        let State { dirs, total } = &mut *st;
        let Some(c) = dirs.get_mut(&dir) else {
            return;
        };
        let index = c.index.get_or_insert_with(|| {
            (c.entries.iter().enumerate())
                .map(|(i, e)| (e.lower_name.clone(), i))
                .collect()
        });
        for edit in edits {
            let entries = Arc::make_mut(&mut c.entries);
            match edit {
                Edit::Put(e) => match index.get(&e.lower_name) {
                    Some(&i) => entries[i] = e,
                    None => {
                        index.insert(e.lower_name.clone(), entries.len());
                        entries.push(e);
                        *total += 1;
                    }
                },
                Edit::Remove(name) => {
                    if let Some(i) = index.remove(name) {
                        entries.swap_remove(i);
                        if let Some(slot) =
                            entries.get(i).and_then(|m| index.get_mut(&m.lower_name))
                        {
                            *slot = i;
                        }
                        *total -= 1;
                    }
                }
            }
        }
        c.stamp = now;
        c.seen = Seen::New;
    }

    /// The kernel keeps a copy of `entries`, made at inode-table `epoch`; unless the
    /// listing changed since it was opened.
    pub fn copied(&self, dir: u64, entries: &Arc<Vec<DirEntry>>, epoch: u64) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(c) = st.dirs.get_mut(&dir) {
                // An edit since copies the entries: the open's still holds the old ones.
                if Arc::ptr_eq(&c.entries, entries) {
                    c.seen = Seen::Copied(epoch);
                }
            }
        }
    }

    /// Drops a directory's listing (changed in a way not worth editing, or removed).
    pub fn forget(&self, dir: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.forget(dir);
        }
    }
}

impl State {
    fn forget(&mut self, dir: u64) {
        if let Some(c) = self.dirs.remove(&dir) {
            self.total -= c.entries.len();
        }
    }
}
