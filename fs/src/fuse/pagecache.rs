//! Putting small lower files into the kernel's page cache with their OPEN.
//!
//! Without passthrough (rootless), every read of a file costs a READ round
//! trip after its OPEN. A small lower file opened for reading is instead put
//! whole into the kernel's page cache (FUSE_NOTIFY_STORE) before the OPEN is
//! answered, so that reading it takes no further request; the open keeps the
//! cache (FOPEN_KEEP_CACHE), and later opens find it there.
//!
//! A store waits for any page of the file that a READ is filling, and that
//! READ needs a free server thread. So a file is stored once per kernel
//! inode, by its first open, and concurrent opens wait for that store (the
//! node's copy lock): no fd of the file can be reading while it is stored.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use fuser::{INodeNo, Notifier};

use crate::lock::{Mutex, Rank};
use crate::union::{OpenFile, Union};
use crate::IdHasher;

/// Largest file stored: most files of an image are far smaller.
const MAX: u64 = 64 * 1024;

#[derive(Debug)]
pub(crate) struct PageCache {
    /// The session's notifier, once the session exists.
    notifier: Arc<OnceLock<Notifier>>,
    /// Inodes stored (or tried) since the kernel last forgot them.
    stored: Mutex<HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>>,
}

impl PageCache {
    pub(crate) fn new() -> PageCache {
        PageCache {
            notifier: Arc::default(),
            stored: Mutex::new(Rank::Stored, HashSet::default()),
        }
    }

    /// Where the session's notifier goes once the session exists.
    pub(crate) fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// Stores `file`, just opened as `ino` with `flags`, if it is a small
    /// lower file opened for reading whose inode has not been stored yet.
    /// Only a hint: a failure leaves reads to READ.
    pub(crate) fn store_small(&self, union: &Union, ino: u64, file: &OpenFile, flags: i32) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || !matches!(file, OpenFile::Lower(_)) {
            return;
        }
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let first = || self.stored.lock().insert(ino);
        let store = |data: &[u8]| notifier.store(INodeNo(ino), 0, data);
        if let Err(e) = union.with_lower_data(ino, file, MAX, first, store) {
            log::debug!("storing {ino} in the page cache: {e}");
        }
    }

    /// The kernel forgot `ino`: its pages are gone.
    pub(crate) fn forgotten(&self, ino: u64) {
        self.stored.lock().remove(&ino);
    }
}
