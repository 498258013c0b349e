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
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::{sys, whiteout, IdMap};

/// One copy whose data may not be on disk yet.
#[derive(Debug)]
struct Pending {
    file: File,
    /// For messages only: where the file was when it was copied up.
    path: PathBuf,
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
        match sys::fremovexattr(file, OsStr::new(x)) {
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

#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<u64>,
    by_ino: IdMap<Arc<Pending>>,
}

/// The copies waiting for their flush, and the thread that does them.
/// Each holds an open file, so their number is bounded: past
/// [`Flusher::MAX_PENDING`] the caller flushes in line ([`Flusher::push`]).
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Flusher {
    /// A flusher with its background thread.
    pub(crate) fn start() -> io::Result<Arc<Flusher>> {
        let f = Arc::new(Flusher::default());
        let f2 = f.clone();
        std::thread::Builder::new()
            .name("rcfs-flush".into())
            .spawn(move || f2.run())?;
        Ok(f)
    }

    /// Most copies waiting for the background thread.
    const MAX_PENDING: usize = 256;

    /// Queues the flush of inode `ino`'s upper `file`, whose marker is still
    /// on disk; when too many are waiting, flushes it here instead.
    pub(crate) fn push(&self, ino: u64, file: File, path: PathBuf) -> io::Result<()> {
        let mut q = self.queue.lock();
        if q.by_ino.len() >= Self::MAX_PENDING {
            drop(q);
            return finish_file(&file);
        }
        let p = Arc::new(Pending {
            file,
            path,
            done: Mutex::new(false),
        });
        q.by_ino.insert(ino, p);
        q.order.push_back(ino);
        self.wake.notify_one();
        Ok(())
    }

    /// Finishes the pending flush of `ino`, if any, before returning.
    pub(crate) fn finish(&self, ino: u64) -> io::Result<()> {
        let p = self.queue.lock().by_ino.get(&ino).cloned();
        let Some(p) = p else {
            return Ok(());
        };
        p.finish()?;
        self.forget(ino, &p);
        Ok(())
    }

    /// Finishes every pending flush, one try each (unmount).
    pub(crate) fn finish_all(&self) {
        let all = std::mem::take(&mut self.queue.lock().by_ino);
        for p in all.values() {
            report(p, p.finish());
        }
    }

    fn forget(&self, ino: u64, p: &Arc<Pending>) {
        let mut q = self.queue.lock();
        if q.by_ino.get(&ino).is_some_and(|cur| Arc::ptr_eq(cur, p)) {
            q.by_ino.remove(&ino);
        }
    }

    fn run(&self) {
        loop {
            let (ino, p) = {
                let mut q = self.queue.lock();
                loop {
                    match q.order.pop_front() {
                        Some(i) => {
                            if let Some(p) = q.by_ino.get(&i) {
                                break (i, p.clone());
                            }
                        }
                        None => self.wake.wait(&mut q),
                    }
                }
            };
            match p.finish() {
                Ok(()) => self.forget(ino, &p),
                // Left for the file's next fsync (or the unmount) to retry.
                Err(e) => report(&p, Err(e)),
            }
        }
    }
}

fn report(p: &Pending, r: io::Result<()>) {
    if let Err(e) = r {
        log::error!(
            "cannot flush the copy-up of {} ({e}); it keeps its metacopy marker, so \
             after a crash it reads as the lower layer's version; an fsync of it tries again",
            p.path.display()
        );
    }
}
