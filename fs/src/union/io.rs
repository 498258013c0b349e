//! Open files and their I/O: which file an open gets (the upper copy, the
//! lower file, or a write-only "tail" of a metacopy placeholder), writes
//! that fill a placeholder's data in first, `copy_file_range`, holes.

use std::fs::File;
use std::io::Result;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::copyup::CopyData;
use super::node::{Lower, Node};
use super::Union;
use crate::error::errno;
use crate::layer::{Kind, LowerFile};
use crate::sys;

/// An open file.
#[derive(Debug)]
pub enum OpenFile {
    /// A file of the upper dir.
    Upper(File),
    /// A lower file, read-only.
    Lower(Arc<dyn LowerFile>),
    /// A write-only open of a metacopy upper file whose data is still the
    /// lower file's: bytes from the lower file's size on go straight in
    /// (appends), a write below it fills in the data first
    /// ([`Union::write`]). It never passes through: the server must see
    /// every write's offset.
    Tail(TailFile),
}

/// What of a file's data an open may leave below, by how its I/O reaches
/// the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// Nothing: an open for writing copies the data up.
    Nothing,
    /// A write-only open copies no data: its writes all come to the server
    /// ([`OpenFile::Tail`]). A reader of a file such an open may have
    /// appended to gets the data filled in at its open, since its reads
    /// may go to the lower file without the server (passthrough).
    Writes,
    /// As `Writes`, but every read comes to the server too: a reader's
    /// open copies nothing, its first read fills the data in. An open only
    /// to `fsync` (`sync FILE`) then costs no copy.
    WritesAndReads,
}

/// The file of an [`OpenFile::Tail`]; counts as one of its node's tails
/// while open.
#[derive(Debug)]
pub struct TailFile {
    file: File,
    node: Arc<Node>,
}

impl Drop for TailFile {
    fn drop(&mut self) {
        self.node.tails.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenFile {
    /// Reads up to `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        match self {
            OpenFile::Upper(f) => sys::pread_full(f, buf, offset),
            OpenFile::Lower(f) => f.read_at(buf, offset),
            OpenFile::Tail(_) => Err(errno(libc::EBADF)),
        }
    }

    /// Writes `data` at `offset` (upper files only; a [`OpenFile::Tail`]
    /// through [`Union::write`]).
    fn write_at(&self, data: &[u8], offset: u64) -> Result<usize> {
        match self {
            OpenFile::Upper(f) | OpenFile::Tail(TailFile { file: f, .. }) => {
                f.write_all_at(data, offset)?;
                Ok(data.len())
            }
            OpenFile::Lower(_) => Err(errno(libc::EBADF)),
        }
    }

    /// A host fd with the file's bytes, for FUSE passthrough.
    pub fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            OpenFile::Upper(f) => Some(f.as_fd()),
            OpenFile::Lower(f) => f.host_fd(),
            OpenFile::Tail(_) => None,
        }
    }

    /// A reader of the file from its start (to write it into a layer).
    pub fn into_reader(self) -> FileReader {
        FileReader { file: self, at: 0 }
    }

    /// Whether this is the upper file (as opposed to a lower one).
    pub fn is_upper(&self) -> bool {
        !matches!(self, OpenFile::Lower(_))
    }

    /// The upper file, when this is one.
    pub fn upper_file(&self) -> Option<&File> {
        match self {
            OpenFile::Upper(f) | OpenFile::Tail(TailFile { file: f, .. }) => Some(f),
            OpenFile::Lower(_) => None,
        }
    }
}

/// Reads an [`OpenFile`] in order ([`OpenFile::into_reader`]).
#[derive(Debug)]
pub struct FileReader {
    file: OpenFile,
    at: u64,
}

impl std::io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The open flag the kernel sets when it opens a file to execute it
/// (`__FMODE_EXEC`).
pub const FMODE_EXEC: i32 = 0o40;

/// Held by a handle that executes a file: see [`Union::exec_guard`].
#[derive(Debug)]
pub struct ExecGuard(Arc<Node>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.0.execs.fetch_sub(1, Ordering::SeqCst);
    }
}

/// open(2) flags to pass on to the host: access mode and the flags that
/// change I/O, never the creation flags (handled by the union).
pub(crate) fn open_flags(flags: i32) -> i32 {
    flags
        & (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_SYNC
            | libc::O_DSYNC
            | libc::O_NOATIME)
}

/// Reserves the disk space of the first `len` bytes of `file` (a metacopy
/// placeholder whose data will be filled in), without changing its size or
/// times.
fn reserve(file: &File, len: u64) -> Result<()> {
    let times = sys::fstat(file)?;
    sys::fallocate(file, libc::FALLOC_FL_KEEP_SIZE, 0, len)?;
    sys::copy::set_times(file, &times)
}

impl Union {
    /// Opens regular file `ino` with open(2) `flags`. Unless `defer` is
    /// [`Defer::Nothing`], a write-only open of a lower file (one that does
    /// not truncate it) copies no data: it gets an [`OpenFile::Tail`] of a
    /// metacopy upper file, and the data is copied only if a write lands
    /// inside it or a reader needs it. Appending to a
    /// large lower file then costs what appending to an upper one does. The
    /// space the data will need is reserved first, so a full disk fails the
    /// open (as a copy-up would) rather than a later read.
    pub fn open(&self, ino: u64, flags: i32, defer: Defer) -> Result<OpenFile> {
        let node = self.node(ino)?;
        if node.kind != Kind::File {
            return Err(errno(libc::EINVAL));
        }
        let acc = flags & libc::O_ACCMODE;
        let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        // O_TRUNC truncates whatever the access mode (Linux).
        let trunc = flags & libc::O_TRUNC != 0;
        if trunc && node.execs.load(Ordering::SeqCst) > 0 {
            // The kernel checks this only after the open has truncated
            // (FUSE_ATOMIC_O_TRUNC): refuse first, and lose nothing.
            return Err(errno(libc::ETXTBSY));
        }
        let tail = defer != Defer::Nothing && self.metacopy && acc == libc::O_WRONLY && !trunc;
        if writes || trunc {
            self.copy_up(
                &node,
                if trunc {
                    CopyData::Empty
                } else if tail {
                    CopyData::Meta
                } else {
                    CopyData::Full
                },
            )?;
        } else if self.has_tail(&node)? {
            if defer == Defer::WritesAndReads {
                // The first read fills the data in (a tail of an earlier
                // mount is not marked yet).
                node.tailed.store(true, Ordering::Release);
            } else {
                self.copy_up(&node, CopyData::Full)?;
            }
        }
        let tree = self.read_tree();
        let (upper, metacopy, lower_size) = {
            let st = node.state.read();
            (
                st.upper || st.orphan().is_some(),
                st.metacopy,
                st.lower.as_ref().map(|l| l.attr.size),
            )
        };
        if tail && upper && metacopy {
            let (loc, _) = self.loc_of(&node, &tree)?;
            drop(tree);
            let file = loc.open(open_flags(flags))?;
            let size = lower_size.ok_or_else(|| errno(libc::EIO))?;
            match reserve(&file, size) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    // Nothing to reserve with: copy the data now.
                    drop(file);
                    return self.open(ino, flags, Defer::Nothing);
                }
                Err(e) => return Err(e),
            }
            node.tails.fetch_add(1, Ordering::Relaxed);
            node.tailed.store(true, Ordering::Release);
            return Ok(OpenFile::Tail(TailFile { file, node }));
        }
        if upper && (writes || trunc || !metacopy) {
            let (loc, _) = self.loc_of(&node, &tree)?;
            drop(tree);
            return Ok(OpenFile::Upper(loc.open(open_flags(flags))?));
        }
        drop(tree);
        let l = self.lower_of(&node).ok_or_else(|| errno(libc::EIO))?;
        Ok(OpenFile::Lower(
            self.lowers[l.layer as usize].open(&l.path)?,
        ))
    }

    /// For an open of `ino` that executes it (`flags` has [`FMODE_EXEC`]):
    /// a guard that keeps the file from being truncated by an open while
    /// the handle lives.
    pub fn exec_guard(&self, ino: u64, flags: i32) -> Option<ExecGuard> {
        if flags & FMODE_EXEC == 0 {
            return None;
        }
        let node = self.node(ino).ok()?;
        node.execs.fetch_add(1, Ordering::SeqCst);
        Some(ExecGuard(node))
    }

    /// Whether metacopy file `node` has or may get bytes past its lower
    /// file's size (through an [`OpenFile::Tail`]): reading it then needs
    /// its data filled in.
    fn has_tail(&self, node: &Node) -> Result<bool> {
        let (metacopy, lower_size) = {
            let st = node.state.read();
            (
                st.upper && st.metacopy,
                st.lower.as_ref().map_or(0, |l| l.attr.size),
            )
        };
        if !metacopy {
            return Ok(false);
        }
        if node.tails.load(Ordering::Relaxed) > 0 {
            return Ok(true);
        }
        let tree = self.read_tree();
        let (loc, _) = self.loc_of(node, &tree)?;
        Ok(loc.stat().map_or(true, |s| s.st_size as u64 != lower_size))
    }

    /// For a handle that reads a lower file: the upper file to read instead,
    /// once the file has been copied up (so that every open file sees the
    /// same data, as on overlayfs). A file that a write-only open may have
    /// appended to gets its data filled in first: the lower file alone
    /// would end where the appended bytes begin.
    pub fn reopen_if_copied_up(&self, ino: u64) -> Result<Option<OpenFile>> {
        let node = self.node(ino)?;
        if node.tailed.load(Ordering::Acquire) {
            if node.state.read().metacopy {
                // The data first, without the copy lock (see
                // LowerFile::prefetch).
                if let Some(l) = self.lower_of(&node) {
                    self.lowers[l.layer as usize].open(&l.path)?.prefetch()?;
                }
            }
            let _copy = node.copy_lock.lock();
            if node.state.read().metacopy {
                let l = self.lower_of(&node).ok_or_else(|| errno(libc::EIO))?;
                self.fill_metacopy(&node, &l, CopyData::Full)?;
            }
        }
        {
            // Still only below (the common case, on every READ): no lock
            // of the tree.
            let st = node.state.read();
            if st.metacopy || !(st.upper || st.orphan().is_some()) {
                return Ok(None);
            }
        }
        Ok(self.open_upper(&node)?.map(OpenFile::Upper))
    }

    /// `fsync` of `ino` through a handle without an upper file of its own
    /// (a reader of the lower file): the node's upper file, if it has one
    /// by now (a copy-up, an append's tail), is what must reach the disk.
    pub fn sync_upper(&self, ino: u64, datasync: bool) -> Result<()> {
        let node = self.node(ino)?;
        match self.open_upper(&node)? {
            Some(f) if datasync => f.sync_data(),
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }

    /// The upper file of `node` (linked or orphaned), opened read-only, if
    /// it has one.
    fn open_upper(&self, node: &Node) -> Result<Option<File>> {
        let tree = self.read_tree();
        let (loc, _) = {
            let st = node.state.read();
            if !(st.upper || st.orphan().is_some()) {
                return Ok(None);
            }
            drop(st);
            self.loc_of(node, &tree)?
        };
        loc.open(libc::O_RDONLY).map(Some)
    }

    /// Whether opening `ino` with `flags` would copy it up or give a file
    /// other than the lower one.
    pub fn open_leaves_lower(&self, ino: u64, flags: i32) -> bool {
        let acc = flags & libc::O_ACCMODE;
        if acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0 {
            return true;
        }
        let Ok(node) = self.node(ino) else {
            return false;
        };
        let (upper, metacopy) = {
            let st = node.state.read();
            (st.upper, st.metacopy)
        };
        upper && (!metacopy || self.has_tail(&node).unwrap_or(true))
    }

    /// Writes `data` at `offset` through `file`. A write below the lower
    /// file's size through an [`OpenFile::Tail`] fills in the file's data
    /// first.
    pub fn write(&self, file: &OpenFile, data: &[u8], offset: u64) -> Result<usize> {
        if let OpenFile::Tail(t) = file {
            if t.node.state.read().metacopy {
                // Not while the data is being filled in (which keeps the
                // file's times).
                let _copy = t.node.copy_lock.lock();
                self.fill_tail(t, |l| offset < l.attr.size)?;
                return file.write_at(data, offset);
            }
        }
        file.write_at(data, offset)
    }

    /// `fallocate(2)` through `file` (a write-only open whose data is still
    /// below gets it first: the range may lie inside it).
    pub fn fallocate(&self, file: &OpenFile, offset: u64, len: u64, mode: i32) -> Result<()> {
        if let OpenFile::Tail(t) = file {
            let _copy = t.node.copy_lock.lock();
            self.fill_tail(t, |_| true)?;
        }
        let f = file.upper_file().ok_or_else(|| errno(libc::EBADF))?;
        sys::fallocate(f, mode, offset, len)
    }

    /// Calls `f` with the whole data of `file`, an open lower file of `ino`
    /// no larger than `max` bytes (and not empty), if `wanted()` says so,
    /// under the node's copy lock: a write after a copy-up can then not be
    /// overtaken by what `f` does with the older bytes, and other callers
    /// for the node wait until `f` is done. False, without calling `f`,
    /// when the file is larger, is no longer only below, or is not wanted.
    pub fn with_lower_data(
        &self,
        ino: u64,
        file: &OpenFile,
        max: u64,
        wanted: impl FnOnce() -> bool,
        f: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        let node = self.node(ino)?;
        let _copy = node.copy_lock.lock();
        let size = {
            let st = node.state.read();
            match &st.lower {
                Some(l) if !st.upper && node.kind == Kind::File => l.attr.size,
                _ => return Ok(false),
            }
        };
        if size == 0 || size > max || !wanted() {
            return Ok(false);
        }
        // Read, not mapped: for a file this small a mapping's mmap, faults
        // and munmap cost more than the copy.
        let mut buf = vec![0u8; size as usize];
        if file.read_at(&mut buf, 0)? != buf.len() {
            return Ok(false); // changed under us: leave it to READ
        }
        f(&buf)?;
        Ok(true)
    }

    /// `copy_file_range(2)` of up to `len` bytes from `src` at `off_in` to
    /// `dst` (open for writing) at `off_out`, done by the host kernel: no
    /// data passes through here. A write-only open whose data is still below
    /// gets it first when the range starts inside it, as for
    /// [`Self::write`]. Returns the bytes copied.
    pub fn copy_range(
        &self,
        src: &OpenFile,
        off_in: u64,
        dst: &OpenFile,
        off_out: u64,
        len: u64,
    ) -> Result<usize> {
        let copy = || -> Result<usize> {
            let to = dst.upper_file().ok_or_else(|| errno(libc::EBADF))?;
            if let Some(from) = src.host_fd() {
                return sys::copy_file_range(&from, off_in, to, off_out, len);
            }
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            let n = src.read_at(&mut buf, off_in)?;
            to.write_all_at(&buf[..n], off_out)?;
            Ok(n)
        };
        if let OpenFile::Tail(t) = dst {
            if t.node.state.read().metacopy {
                let _copy = t.node.copy_lock.lock();
                self.fill_tail(t, |l| off_out < l.attr.size)?;
                return copy();
            }
        }
        copy()
    }

    /// `lseek` with `SEEK_DATA` or `SEEK_HOLE` (`whence`) from `offset` in
    /// `file`, an open file of `ino`: asked of the file that holds the
    /// data. A file whose holes nobody can tell (a write-only open whose
    /// data is still below, a layer that does not know) is all data, which
    /// POSIX allows.
    pub fn seek_data(&self, ino: u64, file: &OpenFile, offset: u64, whence: i32) -> Result<u64> {
        let known = match file {
            OpenFile::Tail(t) if t.node.state.read().metacopy => None,
            OpenFile::Tail(t) => Some(sys::seek(&t.file, offset, whence)),
            OpenFile::Upper(f) => Some(sys::seek(f, offset, whence)),
            OpenFile::Lower(f) => f.seek_data(offset, whence),
        };
        if let Some(r) = known {
            return r;
        }
        let size = match file {
            OpenFile::Tail(t) => sys::fstat(&t.file)?.st_size as u64,
            _ => self.getattr(ino)?.attr.size,
        };
        match whence {
            _ if offset >= size => Err(errno(libc::ENXIO)),
            libc::SEEK_DATA => Ok(offset),
            libc::SEEK_HOLE => Ok(size),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    /// Fills in the data of `t`'s file if it is still below and `needed`
    /// says so. Through the handle's own file: its names may be gone. The
    /// caller holds the node's copy lock.
    fn fill_tail(&self, t: &TailFile, needed: impl FnOnce(&Lower) -> bool) -> Result<()> {
        let metacopy = t.node.state.read().metacopy;
        match self.lower_of(&t.node) {
            Some(l) if metacopy && needed(&l) => {
                let f = File::from(sys::reopen(t.file.as_fd(), libc::O_WRONLY)?);
                self.fill_data(&t.node, &l, f)
            }
            _ => Ok(()),
        }
    }
}
