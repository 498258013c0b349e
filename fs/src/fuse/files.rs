//! Opening files for the kernel: which file an open gets, whether the
//! kernel passes its I/O through to a host fd, and what the reply says;
//! reading them when it does not.

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use fuser::{
    BackingId, FileHandle, FopenFlags, Generation, INodeNo, ReplyCreate, ReplyData, ReplyOpen,
};

use super::handles::Backing;
use super::reply::{copy_err, reply_err, to_file_attr};
use super::UnionFs;
use crate::union::{Caller, Defer, OpenFile};

thread_local! {
    /// A server thread's buffer for READ replies, kept between requests: a
    /// new 128 KiB buffer per READ is a fresh mapping from malloc (see the
    /// CLI's mmap threshold), 32 page faults and its zeroing each time.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads of at least this many bytes of a host file are spliced.
const SPLICE_FROM: usize = 2 * 4096;

impl UnionFs {
    /// READ of `size` bytes at `offset` of handle `fh` of `ino`: a lower
    /// file on the host is spliced into the reply (one copy, the kernel's,
    /// into the request's pages); anything else, and a small read, into
    /// this thread's buffer and from there.
    pub(super) fn do_read(
        &self,
        ino: u64,
        fh: FileHandle,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        let t = Instant::now();
        let what = || format!("{ino}, fh {}, {offset}, {size}", fh.0);
        let handle = self.handle(fh);
        let file = handle
            .as_ref()
            .map_err(copy_err)
            .and_then(|h| h.current_file(&self.union));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                self.trace("read", what, t, &Err::<usize, io::Error>(copy_err(&e)));
                return reply.error(reply_err(e));
            }
        };
        let mut reply = reply;
        if let Some(fd) = file.host_fd().filter(|_| !file.is_upper()) {
            // A lower file on the host (a store object, a dir layer's
            // file): spliced from its page cache into the reply, so the
            // bytes never pass through this process. Small reads are not
            // worth the pipe's two extra calls.
            if size as usize >= SPLICE_FROM {
                match reply.splice_from(fd, offset, size as usize) {
                    Ok(n) => return self.trace("read", what, t, &Ok::<usize, io::Error>(n)),
                    Err(unsent) => reply = unsent,
                }
            }
        }
        READ_BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            let r = file.read_at(buf, offset);
            self.trace("read", what, t, &r.as_ref().map_err(copy_err));
            match r {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(reply_err(e)),
            }
        });
    }

    /// Opens `ino` with `flags`: which file, whether it passes through, and
    /// the open flags to reply with.
    pub(super) fn do_open(
        &self,
        ino: u64,
        flags: i32,
        reply: &ReplyOpen,
    ) -> io::Result<(FileHandle, FopenFlags, Option<Arc<BackingId>>)> {
        let open_backing = |fd: std::os::fd::BorrowedFd<'_>| reply.open_backing(fd);
        // The kernel's inode passes through to its lower file while a reader
        // has it open and cannot take the upper file: a new kernel inode.
        let pinned = || {
            self.handles.lower_backed(ino)
                && self.union.open_leaves_lower(ino, flags)
                && !self.handles.lower_let_go(ino)
        };
        if self.handles.passthrough() && pinned() {
            self.union.reincarnate(ino)?;
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        // A write-only open leaves the data below (an append to a large
        // lower file copies nothing), so long as no cached page can go
        // stale. With passthrough, its writes come here without the page
        // cache (direct I/O) and every other open passes through; without,
        // every open goes through the one page cache, which the kernel
        // keeps coherent, and a reader is given the filled-in data.
        let passthrough = self.handles.passthrough();
        let defer = if passthrough {
            Defer::Writes
        } else {
            Defer::WritesAndReads
        };
        let file = match self.union.open(ino, flags, defer)? {
            f @ OpenFile::Tail(_)
                if passthrough && !self.handles.passthrough_proven(&f, open_backing) =>
            {
                drop(f);
                self.union.open(ino, flags, Defer::Nothing)?
            }
            f => f,
        };
        if let (Some(ra), OpenFile::Lower(_)) = (&self.background.read_ahead, &file) {
            ra.opened(&self.union, ino);
        }
        let exec = self.union.exec_guard(ino, flags);
        if let OpenFile::Tail(_) = file {
            let fh = self.handles.add(ino, file, None, exec, false);
            let io = if passthrough {
                FopenFlags::FOPEN_DIRECT_IO
            } else {
                FopenFlags::FOPEN_KEEP_CACHE
            };
            return Ok((fh, io | FopenFlags::FOPEN_NOFLUSH, None));
        }
        let mut backing = self.handles.backing_for(ino, &file, open_backing);
        if matches!(backing, Backing::Pinned) && self.handles.lower_let_go(ino) {
            // A reader of the lower file was closed, its RELEASE late.
            backing = self.handles.backing_for(ino, &file, open_backing);
        }
        match backing {
            Backing::Through(b) => {
                let fh = self.handles.add(ino, file, Some(b.clone()), exec, false);
                Ok((fh, FopenFlags::FOPEN_NOFLUSH, Some(b)))
            }
            Backing::Here(cached) => {
                self.cache.store_small(&self.union, ino, &file, flags);
                let fh = self.handles.add(ino, file, None, exec, cached);
                Ok((
                    fh,
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                    None,
                ))
            }
            Backing::Pinned => {
                drop(file);
                self.union.reincarnate(ino)?;
                Err(io::Error::from_raw_os_error(libc::ESTALE))
            }
        }
    }

    pub(super) fn do_create(
        &self,
        caller: Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let t = Instant::now();
        let r = self.union.create(parent.0, name, mode, flags, caller);
        self.trace(
            "create",
            || format!("{}, {name:?}, {mode:#o}, {flags:#o}", parent.0),
            t,
            &r.as_ref().map(|(s, _)| s.ino).map_err(copy_err),
        );
        let (stat, file) = match r {
            Ok(v) => v,
            Err(e) => return reply.error(reply_err(e)),
        };
        let attr = to_file_attr(&stat);
        match self
            .handles
            .backing_for(stat.ino, &file, |fd| reply.open_backing(fd))
        {
            Backing::Through(b) => {
                let fh = self
                    .handles
                    .add(stat.ino, file, Some(b.clone()), None, false);
                reply.created_passthrough(
                    &self.opts.ttl,
                    &attr,
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_NOFLUSH,
                    &b,
                );
            }
            b @ (Backing::Here(_) | Backing::Pinned) => {
                let cached = matches!(b, Backing::Here(true));
                let fh = self.handles.add(stat.ino, file, None, None, cached);
                reply.created(
                    &self.opts.ttl,
                    &attr,
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
        }
    }
}
