//! Copied-up data on its way to disk.
//!
//! A copy-up must never leave, after a crash, an upper file that hides the
//! lower one without holding its bytes. Flushing the copy before it becomes
//! visible (what kernel overlayfs does) makes the program that caused the
//! copy-up wait for the disk. rcfs instead creates the upper file as a
//! metacopy placeholder (size and metadata, plus the marker xattr that sends
//! reads to the lower layer), fills in the data, and lets the program go on;
//! a background thread then flushes the data and only after that removes the
//! marker. Until then a crash leaves a metacopy file that reads the lower
//! layer's bytes: only writes made since the copy-up and never fsync'ed are
//! lost, which POSIX allows. `fsync` of the file and unmounting finish the
//! flush first.
//!
//! If only the server died (killed, out of memory) and the system did not,
//! the data is complete in the page cache and must not be thrown away: once
//! the data is all written, the file gets [`whiteout::UNFLUSHED_XATTR`] with
//! this boot's id, and a later mount in the same boot finishes the flush
//! (see [`finish_file`]) instead of falling back to the lower layer.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::lock::{Condvar, Mutex, Rank};
use crate::{sys, whiteout, IdMap};

/// One copy whose data may not be on disk yet.
#[derive(Debug)]
struct Pending {
    file: File,
    /// For messages only: the lower file the data came from.
    what: String,
    /// Set once flushed and unmarked; the lock serialises the two callers
    /// (the background thread and an fsync).
    done: Mutex<bool>,
}

impl Pending {
    /// Finishes the flush unless done already. On failure the marker stays
    /// (a crash stays safe) and the next `fsync` of the file tries again,
    /// so the program learns of it.
    fn finish(&self) -> io::Result<()> {
        let mut done = self.done.lock();
        if *done {
            return Ok(());
        }
        finish_file(&self.file)?;
        *done = true;
        Ok(())
    }
}

/// Flushes a filled-in copy's data, then drops its markers and flushes that
/// too: once done, an `fdatasync` of the file by anyone makes its writes
/// durable.
pub(crate) fn finish_file(file: &File) -> io::Result<()> {
    file.sync_data()?;
    for x in [whiteout::METACOPY_XATTR, whiteout::UNFLUSHED_XATTR] {
        match sys::xattr::fremove(file.as_fd(), OsStr::new(x)) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) => return Err(e),
            _ => {}
        }
    }
    file.sync_all()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), if it can be read.
pub(crate) fn boot_id() -> Option<Vec<u8>> {
    std::fs::read("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim_ascii().to_vec())
        .filter(|b| !b.is_empty())
}

/// The value of [`whiteout::UNFLUSHED_XATTR`]: the boot id, a space, and the
/// file's size when its data was filled in.
pub(crate) fn unflushed_mark(boot_id: &[u8], size: u64) -> Vec<u8> {
    let mut v = boot_id.to_vec();
    v.extend_from_slice(format!(" {size}").as_bytes());
    v
}

/// The boot id and size of an [`unflushed_mark`] (the size is absent in
/// marks of a boot id alone).
pub(crate) fn parse_unflushed_mark(mark: &[u8]) -> (&[u8], Option<u64>) {
    if let Some(i) = mark.iter().rposition(|&b| b == b' ') {
        if let Some(n) = std::str::from_utf8(&mark[i + 1..])
            .ok()
            .and_then(|t| t.parse().ok())
        {
            return (&mark[..i], Some(n));
        }
    }
    (mark, None)
}

#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<u64>,
    by_node: IdMap<Arc<Pending>>,
    /// Set when the union goes: the thread ends.
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The copies waiting for their flush, and the thread that does them.
/// Each holds an open file, so their number is bounded: past
/// [`Flusher::MAX_PENDING`] the caller flushes in line ([`Flusher::push`]).
#[derive(Debug)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// A flusher with its background thread.
    pub(crate) fn start() -> io::Result<Flusher> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Rank::FlushQueue, Queue::default()),
            wake: Condvar::default(),
        });
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rcfs-flush".into())
            .spawn(move || run(&s2))?;
        Ok(Flusher {
            shared,
            thread: Mutex::new(Rank::Stop, Some(thread)),
        })
    }

    /// Most copies waiting for the background thread.
    const MAX_PENDING: usize = 256;

    /// Queues the flush of node `id`'s upper `file`, whose marker is still
    /// on disk; when too many are waiting, flushes it here instead.
    pub(crate) fn push(&self, id: u64, file: File, what: String) -> io::Result<()> {
        let mut q = self.shared.queue.lock();
        if q.by_node.len() >= Self::MAX_PENDING || q.stop {
            drop(q);
            return finish_file(&file);
        }
        let p = Arc::new(Pending {
            file,
            what,
            done: Mutex::new(Rank::FlushDone, false),
        });
        q.by_node.insert(id, p);
        q.order.push_back(id);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Finishes the pending flush of node `id`, if any, before returning.
    pub(crate) fn finish(&self, id: u64) -> io::Result<()> {
        let p = self.shared.queue.lock().by_node.get(&id).cloned();
        let Some(p) = p else {
            return Ok(());
        };
        p.finish()?;
        forget(&self.shared, id, &p);
        Ok(())
    }

    /// Finishes every pending flush, one try each (unmount).
    pub(crate) fn finish_all(&self) {
        let all = std::mem::take(&mut self.shared.queue.lock().by_node);
        for p in all.values() {
            report(p, p.finish());
        }
    }

    /// Finishes every pending flush and ends the thread.
    pub(crate) fn stop(&self) {
        self.finish_all();
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn forget(shared: &Shared, id: u64, p: &Arc<Pending>) {
    let mut q = shared.queue.lock();
    if q.by_node.get(&id).is_some_and(|cur| Arc::ptr_eq(cur, p)) {
        q.by_node.remove(&id);
    }
}

fn run(shared: &Shared) {
    loop {
        let (id, p) = {
            let mut q = shared.queue.lock();
            loop {
                if q.stop {
                    return;
                }
                match q.order.pop_front() {
                    Some(i) => {
                        if let Some(p) = q.by_node.get(&i) {
                            break (i, p.clone());
                        }
                    }
                    None => shared.wake.wait(&mut q),
                }
            }
        };
        match p.finish() {
            Ok(()) => forget(shared, id, &p),
            // Left for the file's next fsync (or the unmount) to retry.
            Err(e) => report(&p, Err(e)),
        }
    }
}

fn report(p: &Pending, r: io::Result<()>) {
    if let Err(e) = r {
        log::error!(
            "cannot flush the copy-up of {} ({e}); it keeps its metacopy marker, so \
             after a crash it reads as the lower layer's version; an fsync of it tries again",
            p.what
        );
    }
}
