//! Open files (the handle table) and FUSE passthrough: which backing file
//! the kernel reads and writes an inode through.
//!
//! The kernel allows one backing file per inode at a time, and while an
//! inode passes through, every open of it must pass through too (to that
//! same file). A lower file open for reading pins its inode to the lower
//! file; an open that needs the upper file (a write, or a read after a
//! copy-up) must then reach another kernel inode: the union gives the node a
//! new inode number ([`Union::reincarnate`]) and the open answers ESTALE,
//! on which the kernel looks the name up again and opens the new inode.
//! Likewise an inode open through the page cache (served here: a lazy file
//! not yet a host file when it was opened) takes no backing file until
//! those opens are closed, or the kernel fails the new open (EIO).

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use fuser::{BackingId, Errno, FileHandle};

use crate::lock::{Condvar, Mutex, Rank, RwLock};
use crate::union::{ExecGuard, OpenFile, Union};
use crate::IdMap;

/// An open file and what keeps its passthrough mapping alive.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) ino: u64,
    pub(crate) file: OpenFile,
    /// For a handle on a lower file served here: the upper file, once the
    /// file has been copied up; reads then go there.
    copied_up: OnceLock<OpenFile>,
    /// Held while this handle is open; the kernel needs the backing file for
    /// as long as any handle uses it.
    _backing: Option<Arc<BackingId>>,
    /// Counted in [`Inodes::cached`]: served here through the page cache
    /// while passthrough is on.
    cached: bool,
    /// For a handle that executes the file: keeps opens from truncating it.
    _exec: Option<ExecGuard>,
}

impl Handle {
    /// The file a handle reads now: a lower file gives way to its upper copy.
    pub(crate) fn current_file(&self, union: &Union) -> std::io::Result<&OpenFile> {
        if let Some(f) = self.copied_up.get() {
            return Ok(f);
        }
        if !self.file.is_upper() {
            if let Some(f) = union.reopen_if_copied_up(self.ino)? {
                return Ok(self.copied_up.get_or_init(|| f));
            }
        }
        Ok(&self.file)
    }

    /// The upper file this handle writes or reads, if any (fsync).
    pub(crate) fn upper_file(&self) -> Option<&std::fs::File> {
        self.file
            .upper_file()
            .or(self.copied_up.get().and_then(OpenFile::upper_file))
    }
}

/// The open files, and the passthrough state of their inodes.
#[derive(Debug)]
pub(crate) struct Handles {
    /// Open files by handle; handles are never reused.
    files: RwLock<IdMap<Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Passthrough is on (the kernel agreed at init, and no backing open
    /// failed for lack of privilege).
    passthrough: AtomicBool,
    /// A backing file has been registered: passthrough really works here.
    passthrough_works: AtomicBool,
    /// Per kernel inode: how it is open.
    backing: Mutex<Inodes>,
    /// Signalled (with `backing`) when a handle is released.
    released: Condvar,
}

/// How the kernel's inodes are open, as far as passthrough goes.
#[derive(Debug, Default)]
struct Inodes {
    /// The backing file in use and whether it is the upper file.
    backing: IdMap<(Weak<BackingId>, bool)>,
    /// Open handles served here through the page cache.
    cached: IdMap<u32>,
}

/// What [`Handles::backing_for`] found.
pub(crate) enum Backing {
    /// Pass through to this backing file.
    Through(Arc<BackingId>),
    /// Serve this open here, through the page cache; `true`: counted in
    /// [`Inodes::cached`] (pass it to [`Handles::add`]).
    Here(bool),
    /// The inode passes through to another file (its lower file), which
    /// the kernel does not allow to change while it is open.
    Pinned,
}

impl Handles {
    pub(crate) fn new() -> Handles {
        Handles {
            files: RwLock::new(Rank::Handles, IdMap::default()),
            next_fh: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            passthrough_works: AtomicBool::new(false),
            backing: Mutex::new(Rank::Backing, Inodes::default()),
            released: Condvar::default(),
        }
    }

    pub(crate) fn get(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.files.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// A handle of `ino`, any (the kernel does not always say which open
    /// file an fstat is for).
    pub(crate) fn any_of(&self, ino: u64) -> Option<Arc<Handle>> {
        self.files.read().values().find(|h| h.ino == ino).cloned()
    }

    /// Adds an open handle (`cached`: as [`Backing::Here`] said).
    pub(crate) fn add(
        &self,
        ino: u64,
        file: OpenFile,
        backing: Option<Arc<BackingId>>,
        exec: Option<ExecGuard>,
        cached: bool,
    ) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.write().insert(
            fh,
            Arc::new(Handle {
                ino,
                file,
                copied_up: OnceLock::new(),
                _backing: backing,
                cached,
                _exec: exec,
            }),
        );
        FileHandle(fh)
    }

    /// Closes handle `fh` of `ino` (the backing file, an ioctl, is closed
    /// outside the table lock).
    pub(crate) fn release(&self, ino: u64, fh: FileHandle) {
        let handle = self.files.write().remove(&fh.0);
        let cached = handle.as_ref().is_some_and(|h| h.cached);
        drop(handle);
        let mut map = self.backing.lock();
        if map
            .backing
            .get(&ino)
            .is_some_and(|(w, _)| w.strong_count() == 0)
        {
            map.backing.remove(&ino);
        }
        if cached {
            if let Some(n) = map.cached.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    map.cached.remove(&ino);
                }
            }
        }
        drop(map);
        self.released.notify_all();
    }

    /// Turns passthrough on (the kernel agreed at init).
    pub(crate) fn enable_passthrough(&self) {
        self.passthrough.store(true, Ordering::Relaxed);
    }

    pub(crate) fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// True while `ino` passes through to its lower file.
    pub(crate) fn lower_backed(&self, ino: u64) -> bool {
        lower_backed_in(&self.backing.lock().backing, ino)
    }

    /// Waits a little for `ino`'s lower backing file to be let go. close()
    /// returns before its RELEASE reaches the server, so a program that
    /// closes a file and at once opens it for writing must not find it
    /// still open here. False if a reader really still holds it.
    pub(crate) fn lower_let_go(&self, ino: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut map = self.backing.lock();
        while lower_backed_in(&map.backing, ino) {
            if self.released.wait_until(&mut map, deadline) {
                return !lower_backed_in(&map.backing, ino);
            }
        }
        true
    }

    /// Whether passthrough works, found out (once) by registering `f` as a
    /// backing file with `open`; turns passthrough off if it does not.
    pub(crate) fn passthrough_proven(
        &self,
        f: &OpenFile,
        open: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> bool {
        if self.passthrough_works.load(Ordering::Relaxed) {
            return true;
        }
        let Some(f) = f.upper_file() else {
            return false;
        };
        match open(std::os::fd::AsFd::as_fd(f)) {
            Ok(_probe) => {
                self.passthrough_works.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.backing_failed(&e);
                false
            }
        }
    }

    /// Registering a backing file failed. Only an error that says the
    /// kernel will not pass through for this server at all (no privilege,
    /// an ioctl it does not know), before any registration has worked,
    /// turns passthrough off for the mount; anything else (EMFILE, ENOMEM,
    /// a backing file too deeply stacked: ELOOP) only sends this open
    /// through the page cache.
    fn backing_failed(&self, e: &std::io::Error) {
        let unsupported = matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS)
        );
        if unsupported && !self.passthrough_works.load(Ordering::Relaxed) {
            log::info!("FUSE passthrough unavailable ({e}); serving reads and writes in userspace");
            self.passthrough.store(false, Ordering::Relaxed);
        } else {
            log::debug!("FUSE passthrough: a backing file failed ({e}); this open is served here");
        }
    }

    /// The backing file for `file` of `ino`, shared with other open handles
    /// of the same inode; `open` registers a new one.
    pub(crate) fn backing_for(
        &self,
        ino: u64,
        file: &OpenFile,
        open: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Backing {
        if !self.passthrough() {
            return Backing::Here(false);
        }
        // What the inode's other opens decide; else None.
        let existing = |m: &mut Inodes, host: bool| {
            if let Some(b) = m.backing.get(&ino).and_then(|(w, _)| w.upgrade()) {
                let same = m
                    .backing
                    .get(&ino)
                    .is_some_and(|(_, up)| *up == file.is_upper());
                return Some(if same {
                    Backing::Through(b)
                } else {
                    Backing::Pinned
                });
            }
            if !host || m.cached.get(&ino).is_some_and(|n| *n > 0) {
                *m.cached.entry(ino).or_insert(0) += 1;
                return Some(Backing::Here(true));
            }
            None
        };
        let fd = file.host_fd();
        if let Some(r) = existing(&mut self.backing.lock(), fd.is_some()) {
            return r;
        }
        let Some(fd) = fd else {
            // (`existing` decides every open without a host fd.)
            return Backing::Here(false);
        };
        // The ioctl runs without the lock, so other opens do not wait on it.
        let created = open(fd);
        let mut map = self.backing.lock();
        if let Some(r) = existing(&mut map, true) {
            return r; // another open won the race; ours is dropped (closed)
        }
        match created {
            Ok(b) => {
                self.passthrough_works.store(true, Ordering::Relaxed);
                let b = Arc::new(b);
                map.backing
                    .insert(ino, (Arc::downgrade(&b), file.is_upper()));
                Backing::Through(b)
            }
            Err(e) => {
                self.backing_failed(&e);
                Backing::Here(false)
            }
        }
    }
}

/// Whether `ino` passes through to its lower file in `map`.
fn lower_backed_in(map: &IdMap<(Weak<BackingId>, bool)>, ino: u64) -> bool {
    map.get(&ino)
        .is_some_and(|(w, upper)| !upper && w.strong_count() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper_file() -> OpenFile {
        OpenFile::Upper(tempfile::tempfile().unwrap())
    }

    fn fail(errno: i32) -> impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId> {
        move |_| Err(std::io::Error::from_raw_os_error(errno))
    }

    /// A backing open that fails for want of fds (or memory, or a stacked
    /// backing file) sends that open through the page cache and leaves
    /// passthrough on for the next ones; only "not permitted / not
    /// supported" before any success turns it off.
    #[test]
    fn one_failed_backing_open_does_not_turn_passthrough_off() {
        let h = Handles::new();
        h.enable_passthrough();
        for (ino, errno) in [
            (2, libc::EMFILE),
            (3, libc::ENFILE),
            (4, libc::ENOMEM),
            (5, libc::ELOOP),
        ] {
            let b = h.backing_for(ino, &upper_file(), fail(errno));
            assert!(matches!(b, Backing::Here(false)), "errno {errno}");
            assert!(h.passthrough(), "errno {errno} turned passthrough off");
        }
        assert!(!h.passthrough_proven(&upper_file(), fail(libc::EMFILE)));
        assert!(h.passthrough(), "a probe's EMFILE turned passthrough off");
        let b = h.backing_for(6, &upper_file(), fail(libc::EPERM));
        assert!(matches!(b, Backing::Here(false)));
        assert!(!h.passthrough(), "EPERM left passthrough on");
    }
}
