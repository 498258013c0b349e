//! FUSE glue for the Additional Layer Store: each request calls [`Als`]
//! once and replies. The store is read-only but for the two notices
//! containers/storage sends (creating `use`, removing a layer's directory),
//! which are counted and answered `ENOENT`, as it expects.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request, TimeOrNow,
};

use super::{Als, Node, ROOT_INO};
use crate::error;
use crate::fuse::reply::{kind_to_type, negative_entry, to_file_attr};
use crate::layer::{Attr, Kind, LowerFile};
use crate::lock::{Mutex, Rank};
use crate::union::Stat;
use crate::IdMap;

/// How long the kernel may keep entries and attributes: nothing here
/// changes once made.
const TTL: Duration = Duration::from_secs(86400);

/// An open file or directory.
enum Open {
    /// `info`, from memory.
    Info(Arc<super::Served>),
    /// `blob`, the whole blob in the store.
    Blob(Arc<File>),
    /// A file of a layer.
    Layer(Arc<dyn LowerFile>),
    /// A directory's listing, made at opendir.
    Dir(Vec<(u64, std::ffi::OsString, Kind)>),
}

/// The Additional Layer Store, served over FUSE.
pub struct AlsFs {
    als: Arc<Als>,
    handles: Mutex<IdMap<Arc<Open>>>,
    next: AtomicU64,
    /// The kernel opens files without asking (`FUSE_NO_OPEN_SUPPORT`, once
    /// an open answered `ENOSYS`): reads then come by inode, and what they
    /// read is kept here by inode until the kernel forgets it. Each
    /// container start opens every file it reads again through a new
    /// overlay mount; this spares an OPEN, FLUSH and RELEASE each.
    no_open: AtomicBool,
    by_ino: Mutex<IdMap<Arc<Open>>>,
}

impl std::fmt::Debug for AlsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsFs").finish_non_exhaustive()
    }
}

impl crate::fuse::mount::Served for AlsFs {}

fn errno(e: io::Error) -> Errno {
    if error::has_cause(&e) {
        log::error!("{e}");
    }
    Errno::from_i32(error::errno_of(&e))
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    to_file_attr(&Stat {
        ino,
        attr: a.clone(),
    })
}

fn erofs() -> Errno {
    Errno::EROFS
}

impl AlsFs {
    pub fn new(als: Arc<Als>) -> AlsFs {
        AlsFs {
            als,
            handles: Mutex::new(Rank::AlsHandles, IdMap::default()),
            next: AtomicU64::new(1),
            no_open: AtomicBool::new(false),
            by_ino: Mutex::new(Rank::AlsHandles, IdMap::default()),
        }
    }

    fn trace<T: std::fmt::Debug>(
        &self,
        op: &str,
        args: impl FnOnce() -> String,
        t: Instant,
        r: &io::Result<T>,
    ) {
        if self.als.opts.debug {
            let us = t.elapsed().as_micros();
            match r {
                Ok(v) => log::debug!("{op}({}) = {v:?} [{us} us]", args()),
                Err(e) => log::debug!("{op}({}) = Err({e}) [{us} us]", args()),
            }
        }
    }

    fn add(&self, open: Open) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(open));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> io::Result<Arc<Open>> {
        self.handles
            .lock()
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn do_open(&self, ino: u64, flags: i32) -> io::Result<Open> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        Ok(match self.als.node(ino)? {
            Node::Info(l) => Open::Info(l),
            Node::Blob(l) => Open::Blob(l.whole_blob(&self.als.store)?),
            Node::Diff {
                layer,
                path,
                entry: super::Entry::Real(a),
            } if a.kind == Kind::File => Open::Layer(layer.diff.open(&path)?),
            Node::Diff { .. } => return Err(io::Error::from_raw_os_error(libc::EACCES)),
            _ => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
        })
    }

    /// What a read without a handle (see `no_open`) of inode `ino` reads.
    fn open_by_ino(&self, ino: u64) -> io::Result<Arc<Open>> {
        if let Some(o) = self.by_ino.lock().get(&ino) {
            return Ok(o.clone());
        }
        let o = Arc::new(self.do_open(ino, libc::O_RDONLY)?);
        Ok(self.by_ino.lock().entry(ino).or_insert(o).clone())
    }

    fn do_read(&self, ino: u64, fh: FileHandle, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let h = match fh.0 {
            0 => self.open_by_ino(ino)?,
            _ => self.handle(fh)?,
        };
        let mut buf = vec![0u8; size as usize];
        let n = match &*h {
            Open::Info(l) => {
                let start = (offset as usize).min(l.info.len());
                let n = buf.len().min(l.info.len() - start);
                buf[..n].copy_from_slice(&l.info[start..start + n]);
                n
            }
            Open::Blob(f) => {
                let mut got = 0;
                while got < buf.len() {
                    match f.read_at(&mut buf[got..], offset + got as u64)? {
                        0 => break,
                        n => got += n,
                    }
                }
                got
            }
            Open::Layer(f) => f.read_at(&mut buf, offset)?,
            Open::Dir(_) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
        };
        buf.truncate(n);
        Ok(buf)
    }

    fn do_opendir(&self, ino: u64) -> io::Result<Open> {
        let node = self.als.node(ino)?;
        let list = self.als.list(&node)?;
        Ok(Open::Dir(
            list.into_iter()
                .map(|(name, kind)| (self.als.listed_ino(ino, &name), name, kind))
                .collect(),
        ))
    }
}

impl Filesystem for AlsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        self.no_open.store(
            caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT),
            Ordering::Relaxed,
        );
        let want = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS;
        let _ = config.add_capabilities(want & caps);
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|m| config.set_max_readahead(m));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = Instant::now();
        let r = self.als.lookup(parent.0, name);
        self.trace(
            "lookup",
            || format!("{}, {name:?}", parent.0),
            t,
            &r.as_ref()
                .map(|(i, _)| *i)
                .map_err(|e| io::Error::from_raw_os_error(error::errno_of(e))),
        );
        match r {
            Ok((ino, node)) => reply.entry(
                &TTL,
                &file_attr(ino, &self.als.attr_of(&node)),
                Generation(0),
            ),
            // Layers never change: the kernel may remember that a name is
            // not in one (the names above them are asked again).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && self.als.in_diff(parent.0) => {
                reply.entry(&TTL, &negative_entry(), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.als.forget(ino.0, nlookup) {
            self.by_ino.lock().remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.als.node(ino.0) {
            Ok(node) => reply.attr(&TTL, &file_attr(ino.0, &self.als.attr_of(&node))),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(erofs());
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = match self.als.node(ino.0) {
            Ok(Node::Diff { layer, path, .. }) => layer.diff.readlink(&path),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            Err(e) => Err(e),
        };
        match r {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.als.note_use(parent.0, name) {
            Ok(()) => reply.error(erofs()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let t = Instant::now();
        let r = self.als.note_use(parent.0, name);
        self.trace("create", || format!("{}, {name:?}", parent.0), t, &r);
        match r {
            Ok(()) => reply.error(erofs()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(erofs());
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(erofs());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let r = self.als.note_release(parent.0, name);
        self.trace("rmdir", || format!("{}, {name:?}", parent.0), t, &r);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(erofs());
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(erofs());
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(erofs());
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let t = Instant::now();
        if self.no_open.load(Ordering::Relaxed) && flags.0 & libc::O_ACCMODE == libc::O_RDONLY {
            // From now on the kernel opens without asking (see `no_open`).
            return reply.error(Errno::ENOSYS);
        }
        let r = self.do_open(ino.0, flags.0);
        self.trace(
            "open",
            || format!("{}, {:#o}", ino.0, flags.0),
            t,
            &r.as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::from_raw_os_error(error::errno_of(e))),
        );
        match r {
            Ok(o) => {
                // Layers and blobs never change: the kernel keeps their
                // pages across opens.
                reply.opened(self.add(o), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(errno(e)),
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
        match self.do_read(ino.0, fh, offset, size) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(erofs());
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctl means anything here (FS_IOC_GETFLAGS of a copy).
        reply.error(Errno::ENOTTY);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino.0) {
            Ok(o) => reply.opened(
                self.add(o),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(errno(e)),
        };
        let Open::Dir(list) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = if ino.0 == ROOT_INO {
            ROOT_INO
        } else {
            u64::MAX
        };
        let dots = [
            (ino.0, ".", FileType::Directory),
            (parent, "..", FileType::Directory),
        ];
        for (i, (n, name, kind)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*n), i as u64 + 1, *kind, name) {
                return reply.ok();
            }
        }
        let first = (offset as usize).saturating_sub(2);
        for (i, (n, name, kind)) in list.iter().enumerate().skip(first) {
            if reply.add(INodeNo(*n), i as u64 + 3, kind_to_type(*kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(erofs());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = match self.als.node(ino.0) {
            Ok(Node::Diff { layer, path, entry }) => layer.diff.get_xattr(&path, &entry, name),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        match r {
            Ok(None) => reply.error(Errno::NO_XATTR),
            Ok(Some(v)) if size == 0 => reply.size(v.len() as u32),
            Ok(Some(v)) if v.len() <= size as usize => reply.data(&v),
            Ok(Some(_)) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = match self.als.node(ino.0) {
            Ok(Node::Diff { layer, path, entry }) => layer.diff.list_xattrs(&path, &entry),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
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
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(erofs());
    }
}
