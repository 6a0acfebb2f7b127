//! Listings of the directories a walk will open next, read ahead in parallel.
//!
//! A cold walk (`find`, `du`, `ls -R`) opens one directory after another, each a
//! synchronous disk read of the lower directory, which encrypted names make two to
//! three times the size of the plain one. Walkers open a directory's subdirectories in
//! listing order, so when a walk opens one, it will open the ones after it too: those
//! are listed ahead on a few threads, and their disk reads overlap. A directory is
//! never read twice: the walker takes a listing still being read by waiting for it,
//! and one not started yet by reading it itself. A listing read ahead is used only if
//! the directory's stamp has not changed since.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::inode::NodeHint;
use crate::listing::{DirEntry, DirStamp};
use crate::lower;
use crate::names::NameCodec;

/// Directories listed ahead of the one a walk opened.
const WINDOW: usize = 8;
/// Threads listing ahead (each one disk read in flight).
const THREADS: usize = 4;
/// Listings read ahead and not taken yet, at most.
const SLOTS_MAX: usize = 64;
/// Larger lower directories (bytes, about 600 encrypted names) are not read ahead: a
/// listing never taken would hold their memory until it expires.
const DIR_BYTES_MAX: u64 = 64 << 10;
/// A listing not taken within this time is dropped (the walk went elsewhere).
const EXPIRY: Duration = Duration::from_secs(2);
/// Parents whose read-ahead position is remembered, at most.
const CURSORS_MAX: usize = 4096;

type Listed = Option<(DirStamp, Vec<DirEntry>)>;

#[derive(Debug)]
enum State {
    Queued,
    /// The walker got there first and reads the directory itself.
    Claimed,
    Running,
    Done(Listed),
}

#[derive(Debug)]
struct Slot {
    state: Mutex<State>,
    done: Condvar,
    queued: Instant,
}

/// Per parent directory: the position of the subdirectory opened last, and the end of
/// what was scheduled.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    opened: usize,
    end: usize,
}

#[derive(Debug)]
struct Shared {
    names: Arc<NameCodec>,
    /// By lower (dev, ino) of the directory.
    slots: Mutex<FxHashMap<(u64, u64), Arc<Slot>>>,
}

#[derive(Debug)]
pub struct ReadAhead {
    shared: Arc<Shared>,
    cursors: Mutex<FxHashMap<u64, Cursor>>,
    pool: Option<rayon::ThreadPool>,
}

/// Lists a lower directory on device `dev`, names decrypted (undecodable ones hidden,
/// as the kernel does) and in byte order. Entries are identified like looked-up nodes,
/// by (dev, ino), so that a known node's d_ino is its node id, as stat reports.
///
/// The lower order is of no use upstairs (ext4 hashes the encrypted names), and `ls`
/// sorts what it reads: input in order saves it more (its merge sort compares through
/// `strcoll`) than our sort costs.
pub fn list(names: &NameCodec, dir: &OwnedFd, dev: u64) -> std::io::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    for ent in lower::list(dir)? {
        if let Some(name) = names.to_upper(&ent.name) {
            out.push(DirEntry {
                name,
                lower_name: ent.name,
                lower_id: (dev, ent.ino),
                kind: ent.kind,
                node: NodeHint::default(),
            });
        }
    }
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

impl ReadAhead {
    pub fn new(names: Arc<NameCodec>) -> ReadAhead {
        ReadAhead {
            shared: Arc::new(Shared {
                names,
                slots: Mutex::default(),
            }),
            cursors: Mutex::default(),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(THREADS)
                .thread_name(|i| format!("list-ahead-{i}"))
                .build()
                .ok(),
        }
    }

    /// The listing of the lower directory `id`, read ahead at `stamp`, if any. Waits for
    /// one being read; `None` (the caller lists) for one not started or out of date.
    pub fn take(&self, id: (u64, u64), stamp: DirStamp) -> Option<Vec<DirEntry>> {
        let slot = self.shared.slots.lock().ok()?.remove(&id)?;
        let mut state = slot.state.lock().ok()?;
        loop {
            match std::mem::replace(&mut *state, State::Claimed) {
                State::Queued | State::Claimed => return None,
                State::Running => {
                    *state = State::Running;
                    state = slot.done.wait(state).ok()?;
                }
                State::Done(listed) => {
                    let (at, entries) = listed?;
                    return (at == stamp).then_some(entries);
                }
            }
        }
    }

    /// A walk opened `opened` (a lower name) in the directory `parent`, whose listing
    /// is `siblings`: lists the next subdirectories after it ahead.
    pub fn opened(
        &self,
        parent: u64,
        parent_fd: &Arc<OwnedFd>,
        siblings: &[DirEntry],
        opened: &OsStr,
    ) {
        let Ok(mut cursors) = self.cursors.lock() else {
            return;
        };
        let cursor = cursors.get(&parent).copied().unwrap_or_default();
        // Walkers open entries in listing order: look from the previous one on.
        let n = siblings.len();
        let Some(pos) = (cursor.opened..n)
            .chain(0..cursor.opened.min(n))
            .find(|&i| siblings[i].lower_name == opened)
        else {
            return;
        };
        self.schedule(&mut cursors, parent, parent_fd, siblings, pos, pos + 1);
    }

    /// A walk listed `dir` afresh: it opens its subdirectories next, so the first ones
    /// are listed ahead.
    pub fn listed(&self, dir: u64, dir_fd: &Arc<OwnedFd>, entries: &[DirEntry]) {
        if let Ok(mut cursors) = self.cursors.lock() {
            cursors.remove(&dir);
            self.schedule(&mut cursors, dir, dir_fd, entries, 0, 0);
        }
    }

    /// Lists ahead the first [`WINDOW`] subdirectories of `entries` from `from` on that
    /// were not scheduled yet; `opened` is the position the walk is at.
    fn schedule(
        &self,
        cursors: &mut FxHashMap<u64, Cursor>,
        parent: u64,
        parent_fd: &Arc<OwnedFd>,
        entries: &[DirEntry],
        opened: usize,
        from: usize,
    ) {
        let Some(pool) = &self.pool else { return };
        let cursor = cursors.get(&parent).copied().unwrap_or_default();
        let next: Vec<usize> = (from..entries.len())
            .filter(|&i| entries[i].kind == fuser::FileType::Directory)
            .take(WINDOW)
            .filter(|&i| i >= cursor.end)
            .collect();
        let end = next.last().map_or(cursor.end.max(from), |&i| i + 1);
        if cursors.len() >= CURSORS_MAX {
            cursors.clear();
        }
        cursors.insert(parent, Cursor { opened, end });
        let Ok(mut slots) = self.shared.slots.lock() else {
            return;
        };
        if slots.len() + next.len() > SLOTS_MAX {
            slots.retain(|_, s| s.queued.elapsed() < EXPIRY);
        }
        for i in next {
            let e = &entries[i];
            if slots.len() >= SLOTS_MAX || slots.contains_key(&e.lower_id) {
                continue;
            }
            let slot = Arc::new(Slot {
                state: Mutex::new(State::Queued),
                done: Condvar::new(),
                queued: Instant::now(),
            });
            slots.insert(e.lower_id, slot.clone());
            let (shared, dir) = (self.shared.clone(), parent_fd.clone());
            let (name, id) = (e.lower_name.clone(), e.lower_id);
            pool.spawn(move || shared.read(&slot, &dir, name, id));
        }
    }
}

impl Shared {
    fn read(&self, slot: &Slot, parent: &OwnedFd, name: OsString, id: (u64, u64)) {
        {
            let Ok(mut state) = slot.state.lock() else {
                return;
            };
            if !matches!(*state, State::Queued) {
                return;
            }
            *state = State::Running;
        }
        let listed = (|| {
            let dir = lower::open_dir_path(parent, &name).ok()?;
            // The stamp before the entries: a change in between shows as a new stamp.
            let meta = lower::fstat(&dir).ok()?;
            if meta.id() != id || meta.size > DIR_BYTES_MAX {
                return None;
            }
            let entries = list(&self.names, &dir, meta.dev).ok()?;
            Some((DirStamp::of(&meta), entries))
        })();
        if let Ok(mut state) = slot.state.lock() {
            *state = State::Done(listed);
        }
        slot.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};

    fn names_of(entries: &[DirEntry]) -> Vec<(OsString, (u64, u64))> {
        let mut v: Vec<_> = entries
            .iter()
            .map(|e| (e.name.clone(), e.lower_id))
            .collect();
        v.sort();
        v
    }

    /// Listing a directory reads its first [`WINDOW`] subdirectories ahead, opening
    /// one of them the next ones; a listing read ahead is handed out only while its
    /// directory is unchanged.
    #[test]
    fn lists_the_next_directories_ahead_while_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        for d in 0..WINDOW + 4 {
            let dir = tmp.path().join(format!("d{d}"));
            fs::create_dir(&dir).unwrap();
            for f in 0..3 {
                fs::write(dir.join(format!("f{f}")), b"x").unwrap();
            }
        }
        fs::write(tmp.path().join("file"), b"x").unwrap();
        let parent = Arc::new(OwnedFd::from(File::open(tmp.path()).unwrap()));
        let dev = lower::fstat(&*parent).unwrap().dev;
        let names = Arc::new(NameCodec::Plain);
        let siblings = list(&names, &parent, dev).unwrap();
        assert!(
            siblings.windows(2).all(|w| w[0].name < w[1].name),
            "listings come in byte order"
        );
        let dirs: Vec<&DirEntry> = siblings
            .iter()
            .filter(|e| e.kind == fuser::FileType::Directory)
            .collect();
        // Waits until `n` listings read ahead are done.
        let settle = |ahead: &ReadAhead, n: usize| {
            for _ in 0..200 {
                let slots = ahead.shared.slots.lock().unwrap();
                let done = slots
                    .values()
                    .all(|s| matches!(*s.state.lock().unwrap(), State::Done(_)));
                if done && slots.len() == n {
                    return;
                }
                drop(slots);
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // A fresh listing: its first subdirectories are next.
        let first = ReadAhead::new(names.clone());
        first.listed(1, &parent, &siblings);
        settle(&first, WINDOW);
        for (i, d) in dirs.iter().enumerate() {
            let fd = lower::open_dir_path(&*parent, &d.lower_name).unwrap();
            let meta = lower::fstat(&fd).unwrap();
            let got = first.take(meta.id(), DirStamp::of(&meta));
            assert_eq!(got.is_some(), i < WINDOW, "directory {i} after the listing");
        }
        let ahead = ReadAhead::new(names.clone());
        ahead.opened(1, &parent, &siblings, &dirs[0].lower_name);
        settle(&ahead, WINDOW);
        // Past the coarse timestamp tick of the listings' stamps.
        std::thread::sleep(Duration::from_millis(20));
        let changed = &dirs[2];
        fs::write(tmp.path().join(&changed.lower_name).join("new"), b"x").unwrap();
        for (i, d) in dirs.iter().enumerate() {
            let fd = lower::open_dir_path(&*parent, &d.lower_name).unwrap();
            let meta = lower::fstat(&fd).unwrap();
            let got = ahead.take(meta.id(), DirStamp::of(&meta));
            let read_ahead = (1..=WINDOW).contains(&i) && i != 2;
            assert_eq!(got.is_some(), read_ahead, "directory {i}");
            if let Some(entries) = got {
                let fresh = list(&names, &fd, meta.dev).unwrap();
                assert_eq!(names_of(&entries), names_of(&fresh), "directory {i}");
            }
        }
    }
}
