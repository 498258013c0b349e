//! FUSE glue: turns kernel requests into [`Union`] calls and results into
//! replies. Each method calls the union (once, for all it needs) and
//! replies; errors become errnos in one place ([`reply_err`]), which logs
//! those with a cause beyond an errno. With `debug` every operation is
//! logged with its arguments, result and latency.
//!
//! * [`handles`] — the open-file table and FUSE passthrough; [`files`] —
//!   what an open gets and whether it passes through; [`dirs`] — readdir;
//!   [`reply`] — answers in FUSE's terms, errors as errnos;
//! * [`background`] — prefetching directories and reading ahead across
//!   files, on threads that end with the mount;
//! * [`pagecache`] — small lower files put in the kernel's page cache with
//!   their OPEN;
//! * [`mount`] — mounting, and unmounting only the mount this server made.
//!
//! What the kernel is told, for speed:
//! * entries and attributes (also negative lookups) may be cached for
//!   [`MountOptions::ttl`]: lower layers never change, and every change to the
//!   upper dir passes through here, so the kernel's own bookkeeping on
//!   create/unlink/rename/setattr/write keeps its caches right;
//! * open files keep their page cache across opens, directories cache their
//!   listings, symlink targets are cached;
//! * reads and writes of files with a host fd are passed through to that fd
//!   by the kernel (FUSE passthrough) when the kernel and our privileges allow
//!   it, otherwise served here with large requests.

mod background;
mod dirs;
mod files;
mod handles;
pub mod mount;
mod pagecache;
pub(crate) mod reply;

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::layer::Kind;
use crate::union::{SetAttr, Union};
use background::Background;
use handles::Handles;
use pagecache::PageCache;
use reply::{caller, copy_err, negative_entry, reply_empty, reply_err, time_set, to_file_attr};

/// How to serve a union over FUSE.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// How long the kernel may cache entries and attributes.
    pub ttl: Duration,
    /// Log every operation with its result and latency.
    pub debug: bool,
    /// Try FUSE passthrough for reads and writes (needs kernel 6.9+ and
    /// `CAP_SYS_ADMIN`); falls back quietly.
    pub passthrough: bool,
    /// Load subdirectories of listed directories and read ahead across
    /// files in the background.
    pub prefetch: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            ttl: Duration::from_secs(86400),
            debug: false,
            passthrough: true,
            prefetch: true,
        }
    }
}

/// The FUSE filesystem: a [`Union`] plus the handle tables.
#[derive(Debug)]
pub struct UnionFs {
    union: Arc<Union>,
    opts: MountOptions,
    handles: Handles,
    /// The kernel sends no opendir/releasedir once opendir answers ENOSYS.
    no_opendir: AtomicBool,
    cache: PageCache,
    /// Background threads; stopped and joined when this is dropped, after
    /// the mount has ended.
    background: Background,
}

impl UnionFs {
    /// Wraps `union` for serving.
    pub fn new(union: Arc<Union>, opts: MountOptions) -> UnionFs {
        let background = if opts.prefetch {
            Background::start(&union)
        } else {
            Background::default()
        };
        UnionFs {
            union,
            opts,
            handles: Handles::new(),
            no_opendir: AtomicBool::new(false),
            cache: PageCache::new(),
            background,
        }
    }

    /// Where the session's notifier goes once the session exists.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<Notifier>> {
        self.cache.notifier_slot()
    }

    fn handle(&self, fh: FileHandle) -> io::Result<Arc<handles::Handle>> {
        self.handles
            .get(fh)
            .map_err(|e| io::Error::from_raw_os_error(e.code()))
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        self.no_opendir.store(
            caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT),
            Ordering::Relaxed,
        );
        // POSIX ACLs: the kernel checks them (as kernel overlayfs does) and
        // keeps each inode's, where without it every `ls -l` asks for
        // `system.posix_acl_access` of every file again.
        let want = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_POSIX_ACL;
        let _ = config.add_capabilities(want & caps);
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|m| config.set_max_readahead(m));
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        if self.opts.passthrough
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && nix::unistd::geteuid().is_root()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        {
            let _ = config.set_max_stack_depth(1);
            self.handles.enable_passthrough();
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.union.sync_all();
        self.union.end();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = Instant::now();
        let r = self.union.lookup(parent.0, name);
        self.trace("lookup", || format!("{}, {name:?}", parent.0), t, &r);
        match r {
            Ok(s) => reply.entry(&self.opts.ttl, &to_file_attr(&s), Generation(0)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&self.opts.ttl, &negative_entry(), Generation(0))
            }
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let t = Instant::now();
        if self.union.forget(ino.0, nlookup) {
            // The kernel's inode, and its pages, are gone.
            self.cache.forgotten(ino.0);
        }
        self.trace("forget", || format!("{}, {nlookup}", ino.0), t, &Ok(()));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = Instant::now();
        let handle = fh
            .and_then(|fh| self.handles.get(fh).ok())
            .filter(|h| h.ino == ino.0);
        let r = match &handle {
            Some(h) => h
                .current_file(&self.union)
                .and_then(|f| self.union.getattr_open(ino.0, f)),
            None => self.union.getattr(ino.0),
        };
        // The kernel does not always say which open file an fstat is for;
        // a node the union no longer has is still reachable through any.
        let r = match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => match self.handles.any_of(ino.0) {
                Some(h) => h
                    .current_file(&self.union)
                    .and_then(|f| self.union.getattr_open(ino.0, f)),
                None => Err(e),
            },
            r => r,
        };
        self.trace("getattr", || format!("{}", ino.0), t, &r);
        self.reply_attr(reply, r);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let t = Instant::now();
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
        };
        let handle = fh
            .and_then(|fh| self.handles.get(fh).ok())
            .filter(|h| h.ino == ino.0);
        let r = self
            .union
            .setattr(ino.0, &set, handle.as_ref().map(|h| &h.file));
        self.trace("setattr", || format!("{}, {set:?}", ino.0), t, &r);
        self.reply_attr(reply, r);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = Instant::now();
        let r = self.union.readlink(ino.0);
        self.trace("readlink", || format!("{}", ino.0), t, &r);
        match r {
            Ok(target) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let r = self.union.mknod(parent.0, name, mode, rdev, caller(req));
        self.trace(
            "mknod",
            || format!("{}, {name:?}, {mode:#o}, {rdev}", parent.0),
            t,
            &r,
        );
        self.reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let r = self.union.mkdir(parent.0, name, mode, caller(req));
        self.trace(
            "mkdir",
            || format!("{}, {name:?}, {mode:#o}", parent.0),
            t,
            &r,
        );
        self.reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let r = self.union.unlink(parent.0, name);
        self.trace("unlink", || format!("{}, {name:?}", parent.0), t, &r);
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let r = self.union.rmdir(parent.0, name);
        self.trace("rmdir", || format!("{}, {name:?}", parent.0), t, &r);
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let r = self
            .union
            .symlink(parent.0, link_name, target.as_os_str(), caller(req));
        self.trace(
            "symlink",
            || format!("{}, {link_name:?}, {target:?}", parent.0),
            t,
            &r,
        );
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let r = self
            .union
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        self.trace(
            "rename",
            || {
                format!(
                    "{}, {name:?}, {}, {newname:?}, {flags:?}",
                    parent.0, newparent.0
                )
            },
            t,
            &r,
        );
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let t = Instant::now();
        let r = self.union.link(ino.0, newparent.0, newname);
        self.trace(
            "link",
            || format!("{}, {}, {newname:?}", ino.0, newparent.0),
            t,
            &r,
        );
        self.reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t = Instant::now();
        let r = self.do_open(ino.0, flags.0, &reply);
        self.trace(
            "open",
            || format!("{}, {:#o}", ino.0, flags.0),
            t,
            &r.as_ref()
                .map(|(fh, _, b)| (fh.0, b.is_some()))
                .map_err(copy_err),
        );
        match r {
            Ok((fh, fl, Some(b))) => reply.opened_passthrough(fh, fl, &b),
            Ok((fh, fl, None)) => reply.opened(fh, fl),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(ino.0, fh, offset, size, reply);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let t = Instant::now();
        let r = self
            .handle(fh)
            .and_then(|h| self.union.write(&h.file, data, offset));
        self.trace(
            "write",
            || format!("{}, fh {}, {offset}, {}", ino.0, fh.0, data.len()),
            t,
            &r,
        );
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.trace(
            "flush",
            || format!("{}, fh {}", ino.0, fh.0),
            Instant::now(),
            &Ok(()),
        );
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        self.handles.release(ino.0, fh);
        self.trace("release", || format!("{}, fh {}", ino.0, fh.0), t, &Ok(()));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let r = self.handle(fh).and_then(|h| {
            if self.union.volatile() {
                return Ok(());
            }
            // A copy-up's data may still be on its way to disk, its marker
            // with it, and its name not yet flushed: finish those first.
            self.union.finish_flush(ino.0)?;
            match h.upper_file() {
                Some(f) if datasync => f.sync_data(),
                Some(f) => f.sync_all(),
                None => self.union.sync_upper(ino.0, datasync),
            }
        });
        self.trace("fsync", || format!("{}, fh {}", ino.0, fh.0), t, &r);
        reply_empty(reply, r);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        // The kernel sends this only for files open for writing, never
        // lower ones, so the handle's own file is the one.
        let r = self
            .handle(fh)
            .and_then(|h| self.union.fallocate(&h.file, offset, length, mode));
        self.trace(
            "fallocate",
            || format!("{}, fh {}, {offset}, {length}, {mode:#x}", ino.0, fh.0),
            t,
            &r,
        );
        reply_empty(reply, r);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let t = Instant::now();
        // The reply counts bytes in 32 bits.
        let len = len.min(u64::from(u32::MAX) & !0xfff);
        let r = self.handle(fh_in).and_then(|src| {
            let dst = self.handle(fh_out)?;
            let from = src.current_file(&self.union)?;
            self.union
                .copy_range(from, offset_in, &dst.file, offset_out, len)
        });
        self.trace(
            "copy_file_range",
            || {
                format!(
                    "{}, fh {}, {offset_in}, {}, fh {}, {offset_out}, {len}",
                    ino_in.0, fh_in.0, ino_out.0, fh_out.0
                )
            },
            t,
            &r,
        );
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // Only SEEK_DATA and SEEK_HOLE come here; the kernel does the rest.
        let t = Instant::now();
        let r = match u64::try_from(offset) {
            Ok(off) => self.handle(fh).and_then(|h| {
                let f = h.current_file(&self.union)?;
                self.union.seek_data(ino.0, f, off, whence)
            }),
            Err(_) => Err(io::Error::from_raw_os_error(libc::ENXIO)),
        };
        self.trace(
            "lseek",
            || format!("{}, fh {}, {offset}, {whence}", ino.0, fh.0),
            t,
            &r,
        );
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.trace("opendir", || format!("{}", ino.0), Instant::now(), &Ok(()));
        if self.no_opendir.load(Ordering::Relaxed) {
            // The kernel then stops sending opendir and releasedir: two round
            // trips less per directory. Listings need no handle (see readdir).
            return reply.error(Errno::ENOSYS);
        }
        match self.union.getattr(ino.0) {
            Ok(s) if s.attr.kind == Kind::Dir => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(ino, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.do_readdirplus(ino, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.trace(
            "releasedir",
            || format!("{}", ino.0),
            Instant::now(),
            &Ok(()),
        );
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let r = self.union.fsyncdir(ino.0);
        self.trace("fsyncdir", || format!("{}", ino.0), t, &r);
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let t = Instant::now();
        let r = self.union.statfs();
        self.trace("statfs", || format!("{}", ino.0), t, &r);
        match r {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize,
            ),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let t = Instant::now();
        let r = self.union.setxattr(ino.0, name, value, flags);
        self.trace("setxattr", || format!("{}, {name:?}", ino.0), t, &r);
        reply_empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let t = Instant::now();
        let r = self.union.getxattr(ino.0, name);
        self.trace(
            "getxattr",
            || format!("{}, {name:?}", ino.0),
            t,
            &r.as_ref().map(Vec::len).map_err(copy_err),
        );
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let t = Instant::now();
        let r = self.union.listxattr(ino.0);
        self.trace("listxattr", || format!("{}", ino.0), t, &r);
        match r {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()));
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() <= size as usize {
                    reply.data(&buf)
                } else {
                    reply.error(Errno::ERANGE)
                }
            }
            Err(e) => reply.error(reply_err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let r = self.union.removexattr(ino.0, name);
        self.trace("removexattr", || format!("{}, {name:?}", ino.0), t, &r);
        reply_empty(reply, r);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.trace(
            "access",
            || format!("{}, {mask:?}", ino.0),
            Instant::now(),
            &Ok(()),
        );
        // default_permissions: the kernel has checked already.
        reply.ok();
    }

    // What the union does not do, answered quietly with the errno a kernel
    // filesystem gives (fuser's defaults log a warning per call: Python's
    // open() asks every file for TCGETS). getlk/setlk (no FUSE_POSIX_LOCKS:
    // the kernel keeps locks) and bmap (fuseblk only) are never sent.

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // No ioctl means anything on a union's files (TCGETS, FS_IOC_*).
        let args = || format!("{}, fh {}, {cmd:#x}", ino.0, fh.0);
        reply.error(self.unsupported("ioctl", args, libc::ENOTTY));
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        // ENOSYS: the kernel stops asking and takes files as always ready.
        let args = || format!("{}, fh {}", ino.0, fh.0);
        reply.error(self.unsupported("poll", args, libc::ENOSYS));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.do_create(caller(req), parent, name, mode, flags, reply);
    }
}
