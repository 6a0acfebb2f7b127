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
    /// The entry of this lower name was renamed to the new entry, in the same
    /// directory (it keeps its place in the listing; a replaced entry is gone).
    Renamed(&'a OsStr, DirEntry),
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
    /// What earlier opens showed the kernel.
    seen: Seen,
    /// A READDIR reply since the kernel started its copy had an entry the kernel did not
    /// know: its inode number was a guess (the lower one) that a lookup will contradict.
    guessed: bool,
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
                guessed: false,
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
        let entries = Arc::make_mut(&mut c.entries);
        for edit in edits {
            match edit {
                Edit::Put(e) => put(entries, index, total, e),
                Edit::Remove(name) => remove(entries, index, total, name),
                Edit::Renamed(from, e) => {
                    // The entry replaced, if any, goes first: its removal may move the
                    // renamed one.
                    if from != e.lower_name.as_os_str() {
                        remove(entries, index, total, &e.lower_name);
                    }
                    match index.remove(from) {
                        Some(i) => {
                            index.insert(e.lower_name.clone(), i);
                            entries[i] = e;
                        }
                        None => put(entries, index, total, e),
                    }
                }
            }
        }
        c.stamp = now;
        c.seen = Seen::New;
    }

    /// The kernel starts a new copy of a directory's listing (an open with CACHE_DIR
    /// but not KEEP_CACHE drops the old one).
    pub fn copy_anew(&self, dir: u64) {
        self.update(dir, |c| c.guessed = false);
    }

    /// A READDIR reply of a directory guessed an inode number (see `Cached::guessed`).
    pub fn guessed(&self, dir: u64) {
        self.update(dir, |c| c.guessed = true);
    }

    /// An open with CACHE_DIR read `entries` to the end: the kernel's copy is complete,
    /// made at inode-table `epoch`. It is kept (see [`Seen::Copied`]) if `entries` is
    /// still the listing (an edit copies the entries an open holds) and no reply
    /// guessed an inode number since the copy began.
    pub fn copied(&self, dir: u64, entries: &Arc<Vec<DirEntry>>, epoch: u64) {
        self.update(dir, |c| {
            if Arc::ptr_eq(&c.entries, entries) && !c.guessed {
                c.seen = Seen::Copied(epoch);
            }
        });
    }

    /// Drops a directory's listing (changed in a way not worth editing, or removed).
    pub fn forget(&self, dir: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.forget(dir);
        }
    }

    fn update(&self, dir: u64, f: impl FnOnce(&mut Cached)) {
        if let Some(c) = self
            .state
            .lock()
            .ok()
            .as_mut()
            .and_then(|st| st.dirs.get_mut(&dir))
        {
            f(c);
        }
    }
}

fn put(
    entries: &mut Vec<DirEntry>,
    index: &mut HashMap<OsString, usize>,
    total: &mut usize,
    e: DirEntry,
) {
    match index.get(&e.lower_name) {
        Some(&i) => entries[i] = e,
        None => {
            index.insert(e.lower_name.clone(), entries.len());
            entries.push(e);
            *total += 1;
        }
    }
}

fn remove(
    entries: &mut Vec<DirEntry>,
    index: &mut HashMap<OsString, usize>,
    total: &mut usize,
    name: &OsStr,
) {
    if let Some(i) = index.remove(name) {
        entries.swap_remove(i);
        if let Some(slot) = entries.get(i).and_then(|m| index.get_mut(&m.lower_name)) {
            *slot = i;
        }
        *total -= 1;
    }
}

impl State {
    fn forget(&mut self, dir: u64) {
        if let Some(c) = self.dirs.remove(&dir) {
            self.total -= c.entries.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ino: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            lower_name: format!("L{name}").into(),
            lower_id: (1, ino),
            kind: FileType::RegularFile,
            node: NodeHint::default(),
        }
    }

    fn stamp(n: i64) -> DirStamp {
        DirStamp {
            mtime: (n, 0),
            ctime: (n, 0),
            size: 0,
        }
    }

    fn names(entries: &[DirEntry]) -> Vec<(&str, u64)> {
        (entries.iter())
            .map(|e| (e.name.to_str().unwrap(), e.lower_id.1))
            .collect()
    }

    /// A rename in a directory keeps the entry's place (a listing in order stays so
    /// through renames that keep the order), a replaced entry goes, others come last;
    /// each edit makes the listing new to the kernel; the kernel's copy is kept if it
    /// has no guessed inode number and is of the listing as it is.
    #[test]
    fn edits_keep_places_and_track_what_the_kernel_saw() {
        let l = Listings::new(Duration::from_secs(30));
        let fresh = ["a", "b", "c", "d"]
            .iter()
            .zip(0..)
            .map(|(n, i)| entry(n, i));
        l.put(7, stamp(1), fresh.collect());
        let (entries, seen) = l.get(7, stamp(1)).unwrap();
        assert_eq!(seen, Seen::Before);
        l.copy_anew(7);
        l.copied(7, &entries, 3);
        assert_eq!(l.get(7, stamp(1)).unwrap().1, Seen::Copied(3));
        // A copy with a guessed inode number is not kept, until a new copy.
        l.copy_anew(7);
        l.guessed(7);
        l.copied(7, &entries, 4);
        assert_eq!(l.get(7, stamp(1)).unwrap().1, Seen::Copied(3));
        l.copy_anew(7);
        l.copied(7, &entries, 4);
        assert_eq!(l.get(7, stamp(1)).unwrap().1, Seen::Copied(4));

        l.edit(7, [Edit::Renamed(OsStr::new("Lb"), entry("bb", 1))], || {
            Some(stamp(2))
        });
        let (entries, seen) = l.get(7, stamp(2)).unwrap();
        assert_eq!(seen, Seen::New);
        assert_eq!(names(&entries), [("a", 0), ("bb", 1), ("c", 2), ("d", 3)]);
        assert_eq!(l.get(7, stamp(2)).unwrap().1, Seen::Before);

        // Over an existing entry; then a name the listing lacks; then a removal.
        l.edit(7, [Edit::Renamed(OsStr::new("Lc"), entry("a", 2))], || {
            Some(stamp(3))
        });
        l.edit(7, [Edit::Renamed(OsStr::new("Lzz"), entry("e", 4))], || {
            Some(stamp(4))
        });
        l.edit(7, [Edit::Remove(OsStr::new("Lbb"))], || Some(stamp(5)));
        let (entries, _) = l.get(7, stamp(5)).unwrap();
        assert_eq!(names(&entries), [("d", 3), ("e", 4), ("a", 2)]);

        // An edit after an open: the open's copy is not the listing any more.
        l.copy_anew(7);
        l.edit(7, [Edit::Put(entry("f", 5))], || Some(stamp(6)));
        l.copied(7, &entries, 3);
        assert_eq!(l.get(7, stamp(6)).unwrap().1, Seen::New);
        // A stamp that is not the listing's drops it.
        assert!(l.get(7, stamp(5)).is_none());
        assert!(l.get(7, stamp(6)).is_none());
    }
}
