//! Every lock of rcfs, with its place in the one lock order.
//!
//! Each lock is created with a [`Rank`]; a thread may take a lock only while
//! every lock it already holds has a lower rank. So no thread ever waits for
//! a lock while holding one that ranks above it, and no cycle of waiting
//! threads — no deadlock — can form among these locks. Two locks of one rank
//! (two nodes' states, two copy-up locks) are never held at once.
//!
//! In debug builds (every test) each thread keeps the ranks it holds and a
//! lock taken out of order panics at once with both ranks, which turns a
//! deadlock that would need an unlucky interleaving into a failure of any
//! test that passes the code. Release builds check nothing and cost what
//! `parking_lot` costs.
//!
//! The order, outermost first (see each lock's declaration for what it
//! guards):
//!
//! | rank | lock | held while |
//! |---|---|---|
//! | [`Rank::AlsImage`] | `als::Als`'s per-image `Resolve::image` | an image's manifest is found, or a layer made servable (network) |
//! | [`Rank::AlsLayers`] | `als::Als::layers` | layers served so far are looked up or added |
//! | [`Rank::AlsNodes`] | `als::Als::nodes` | the store's inode table is read or changed |
//! | [`Rank::AlsHandles`] | `als::Als::handles` | its open files are looked up |
//! | [`Rank::AlsUses`] | `als::Als::uses` | podman's uses of a layer are counted |
//! | [`Rank::CopyUp`] | `Node::copy_lock` | a node is copied up or its data filled in |
//! | [`Rank::Load`] | `Node::load_lock` | a directory's merged view is read from its layers |
//! | [`Rank::Tree`] | `Union::ns` | names are resolved (read) or changed (write) |
//! | [`Rank::NodeState`] | `Node::state` | one node's fields are read or changed |
//! | [`Rank::Links`] | `Union::links` | hard-link groups are looked up |
//! | [`Rank::Nodes`] | `Union::nodes` | the inode table is read or changed |
//! | [`Rank::Retired`] | `Union::retired` | inode numbers a node had before are looked up |
//! | [`Rank::UpperFds`] | `Upper::fds` | cached upper directory fds are looked up |
//! | [`Rank::FlushDone`] | `flush::Pending::done` | one copy is flushed |
//! | [`Rank::FlushQueue`] | `Flusher::queue` | the queue of copies to flush is changed |
//! | [`Rank::Handles`] | `UnionFs::files` | the open-file table is read or changed |
//! | [`Rank::Backing`] | `UnionFs::backing` | passthrough backing files are looked up |
//! | [`Rank::Stored`] | `UnionFs::stored` | inodes stored in the page cache are noted |
//! | [`Rank::Prefetch`] | `Prefetch::stack` | directories to load ahead are queued |
//! | [`Rank::ReadAhead`] | `ReadAhead::opened` | the last file opened is noted |
//! | [`Rank::ReadAheadMark`] | `ReadAhead::enough_before` | how far reading ahead got is noted |
//! | [`Rank::Stop`] | `Flusher::thread` | the flush thread is told to end |
//! | [`Rank::LayerDirs`] | `DirLayer::dirs` | a host layer's directory fds are looked up |
//! | [`Rank::Pull`] | `image::live::LivePull::ready` | a mount learns that its image's layers are known |
//! | [`Rank::Stream`] | `layer::Stream::st` | a streaming layer's entries are added or looked up |
//! | [`Rank::Trace`] | `layer::Trace::out` | a first open is written to a trace |
//! | [`Rank::StartLog`] | `layer::StartLog::seen` | a start's read is noted |
//! | [`Rank::LayerReadAhead`] | `ImageLayer`'s `Inner::ra` | an image layer's read-ahead window moves |
//! | [`Rank::CachePending`] | `BlockCache::pending` | chunk fetches in flight are looked up |
//! | [`Rank::CacheFetch`] | `cache::Pending::done` | one fetch's result is set or waited for |
//! | [`Rank::CacheMem`] | `BlockCache::mem` | chunks in memory are looked up or added |
//! | [`Rank::CacheDisk`] | `BlockCache::disk` | the disk cache's bookkeeping is changed |
//! | [`Rank::FetchQueue`] | `cache::pool::Shared::queues` | background fetches are queued or taken |
//! | [`Rank::FetchWorkers`] | `cache::pool::FetchPool::workers` | a fetch worker is started |
//!
//! Not locks, and so not in the order: atomics, and `OnceLock` cells, which
//! are set once with a value already made (a handle's upper file, the
//! session's notifier, a layer's hard-link table) and never waited on while
//! a lock is held. The cli crate holds no locks of its own; fuser's own
//! (its session's mount) are never held while rcfs code runs.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

/// A lock's place in the order: lower ranks are taken first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    AlsImage,
    AlsLayers,
    AlsNodes,
    AlsHandles,
    AlsUses,
    CopyUp,
    Load,
    Tree,
    NodeState,
    Links,
    Nodes,
    Retired,
    UpperFds,
    FlushDone,
    FlushQueue,
    Handles,
    Backing,
    Stored,
    Prefetch,
    ReadAhead,
    ReadAheadMark,
    Stop,
    LayerDirs,
    Pull,
    Stream,
    Trace,
    StartLog,
    LayerReadAhead,
    CachePending,
    CacheFetch,
    CacheMem,
    CacheDisk,
    FetchQueue,
    FetchWorkers,
}

#[cfg(debug_assertions)]
mod check {
    use super::Rank;
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<Rank>> = const { RefCell::new(Vec::new()) };
    }

    /// Notes that this thread takes `rank`; panics if that breaks the order.
    pub(super) fn acquire(rank: Rank) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(&top) = h.iter().max() {
                if rank <= top {
                    let held = h.clone();
                    drop(h);
                    panic!(
                        "lock order violated: taking {rank:?} while holding {held:?} \
                         (see fs/src/lock.rs for the order)"
                    );
                }
            }
            h.push(rank);
        });
    }

    pub(super) fn release(rank: Rank) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|r| *r == rank) {
                h.remove(i);
            }
        });
    }
}

/// The rank of a lock: its own in debug builds; in release builds none is
/// kept, and none is needed.
trait Ranked {
    fn rank(&self) -> Rank;
}

impl<T> Ranked for Mutex<T> {
    fn rank(&self) -> Rank {
        #[cfg(debug_assertions)]
        return self.rank;
        #[cfg(not(debug_assertions))]
        Rank::CopyUp
    }
}

impl<T> Ranked for RwLock<T> {
    fn rank(&self) -> Rank {
        #[cfg(debug_assertions)]
        return self.rank;
        #[cfg(not(debug_assertions))]
        Rank::CopyUp
    }
}

/// Proof that this thread holds a lock of some rank (debug builds).
#[derive(Debug)]
struct Held(#[cfg(debug_assertions)] Rank);

impl Held {
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    fn take(rank: Rank) -> Held {
        #[cfg(debug_assertions)]
        {
            check::acquire(rank);
            Held(rank)
        }
        #[cfg(not(debug_assertions))]
        Held()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        check::release(self.0);
    }
}

/// A mutex with a rank (kept in debug builds only: the union holds a few
/// locks per node, and every byte of a node counts).
#[derive(Debug)]
pub(crate) struct Mutex<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: parking_lot::Mutex<T>,
}

pub(crate) struct MutexGuard<'a, T> {
    // Field order: the lock is released before the rank is forgotten.
    inner: parking_lot::MutexGuard<'a, T>,
    _held: Held,
}

impl<T> Mutex<T> {
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    pub(crate) const fn new(rank: Rank, value: T) -> Mutex<T> {
        Mutex {
            #[cfg(debug_assertions)]
            rank,
            inner: parking_lot::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        let held = Held::take(self.rank());
        MutexGuard {
            inner: self.inner.lock(),
            _held: held,
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A reader-writer lock with a rank (fair: a waiting writer holds up new
/// readers, so a thread must never take one it already holds for reading).
#[derive(Debug)]
pub(crate) struct RwLock<T> {
    #[cfg(debug_assertions)]
    rank: Rank,
    inner: parking_lot::RwLock<T>,
}

pub(crate) struct ReadGuard<'a, T> {
    inner: parking_lot::RwLockReadGuard<'a, T>,
    _held: Held,
}

pub(crate) struct WriteGuard<'a, T> {
    inner: parking_lot::RwLockWriteGuard<'a, T>,
    _held: Held,
}

impl<T> RwLock<T> {
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    pub(crate) const fn new(rank: Rank, value: T) -> RwLock<T> {
        RwLock {
            #[cfg(debug_assertions)]
            rank,
            inner: parking_lot::RwLock::new(value),
        }
    }

    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        let held = Held::take(self.rank());
        ReadGuard {
            inner: self.inner.read(),
            _held: held,
        }
    }

    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let held = Held::take(self.rank());
        WriteGuard {
            inner: self.inner.write(),
            _held: held,
        }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A condition variable for a ranked [`Mutex`]. While it waits the thread
/// holds nothing but that mutex (its rank stays noted, as the mutex is taken
/// again before `wait` returns).
#[derive(Debug, Default)]
pub(crate) struct Condvar(parking_lot::Condvar);

impl Condvar {
    pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.0.wait(&mut guard.inner);
    }

    /// Waits until notified or `deadline`; true when the deadline passed.
    pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) -> bool {
        self.0.wait_until(&mut guard.inner, deadline).timed_out()
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(debug_assertions)]
    fn taking_locks_out_of_order_panics() {
        let outer = Mutex::new(Rank::CopyUp, ());
        let inner = RwLock::new(Rank::Nodes, ());
        {
            let _a = outer.lock();
            let _b = inner.read();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _b = inner.write();
            let _a = outer.lock();
        }));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("CopyUp") && msg.contains("Nodes"), "{msg}");
        // Two locks of one rank are never held at once.
        let a = RwLock::new(Rank::NodeState, ());
        let b = RwLock::new(Rank::NodeState, ());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _a = a.read();
            let _b = b.read();
        }));
        assert!(r.is_err());
        // Released locks are forgotten, also out of order.
        let (x, y) = (Mutex::new(Rank::Load, ()), Mutex::new(Rank::Tree, ()));
        let gx = x.lock();
        let gy = y.lock();
        drop(gx);
        drop(gy);
        let _again = x.lock();
    }
}
