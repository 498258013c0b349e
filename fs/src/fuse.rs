//! FUSE glue: turns kernel requests into [`Union`] calls and results into
//! replies. Each method calls one `Union` function and replies; errors become
//! errnos in one place ([`errno_of`]). With `debug` every operation is logged
//! with its arguments, result and latency.
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

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::{Mutex, RwLock};

use crate::layer::Kind;
use crate::union::{Caller, DirEntry, OpenFile, SetAttr, Stat, TimeSet, Union};
use crate::IdMap;

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
    /// Load subdirectories of listed directories in the background.
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

/// Loads the subdirectories of listed directories in the background: a
/// program that lists a directory usually goes on into its subdirectories
/// (find, ls -R, du, a container's package manager), and the second CPU can
/// merge their layers while the first serves the program. A stack, so the
/// order follows a depth-first walk; only subdirectories (two levels deep)
/// of what was actually listed are queued, so a lookup-only workload
/// prefetches nothing.
#[derive(Debug, Default)]
struct Prefetch {
    /// Directories to load, each with how many levels below it to queue
    /// once it is loaded.
    stack: Mutex<Vec<(u64, u32)>>,
    wake: parking_lot::Condvar,
}

impl Prefetch {
    /// Most directories waiting; beyond this, new ones are not queued.
    const MAX: usize = 1 << 16;
    /// Loading threads. Two keep the disk busier than one when the host's
    /// caches are cold (64-layer first walk 1.20 s → 1.09 s); more gained
    /// nothing on 2 CPUs.
    const THREADS: usize = 2;

    /// Levels below a listed directory that are loaded ahead. Two keep the
    /// loading ahead of a walk (64-layer first walk, median of 5: warm
    /// 322 → 279 ms, cold 1096 → 949 ms); loading the whole subtree of any
    /// listed directory gains a little more on a walk (warm 224 ms) but
    /// would load a whole image for one `ls /`.
    const DEPTH: u32 = 2;

    fn push(&self, inos: Vec<u64>, depth: u32) {
        if inos.is_empty() {
            return;
        }
        let mut st = self.stack.lock();
        if st.len() + inos.len() <= Self::MAX {
            st.extend(inos.into_iter().rev().map(|i| (i, depth)));
            self.wake.notify_one();
        }
    }

    fn run(&self, union: &Union) {
        loop {
            let (ino, depth) = wait_for(&self.stack, &self.wake, Vec::pop);
            union.preload(ino);
            if depth > 1 {
                self.push(union.unloaded_subdirs(ino), depth - 1);
            }
        }
    }
}

/// Waits on `wake` until `take` gets something out of what `m` guards.
fn wait_for<T, R>(
    m: &Mutex<T>,
    wake: &parking_lot::Condvar,
    mut take: impl FnMut(&mut T) -> Option<R>,
) -> R {
    let mut guard = m.lock();
    loop {
        if let Some(r) = take(&mut guard) {
            return r;
        }
        wake.wait(&mut guard);
    }
}

/// Reading ahead across files: when a program opens a directory's files one
/// after another (a build, a container starting, `tar c`, `grep -r`), the
/// next files' data is asked of the layers in the background, so that on a
/// cold cache their disk reads overlap the program's work instead of
/// following it one by one.
#[derive(Debug, Default)]
struct ReadAhead {
    /// Where the last file opened for reading stands (directory, cookie),
    /// when nobody looked at it yet.
    opened: Mutex<Option<(u64, u64)>>,
    wake: parking_lot::Condvar,
    /// Opens in this directory before this cookie need no reading ahead:
    /// enough is under way. Checked on the open path, so that most opens
    /// wake nothing.
    enough_before: Mutex<(u64, u64)>,
}

impl ReadAhead {
    /// Files read ahead of the one being opened.
    const FILES: usize = 16;

    fn opened(&self, union: &Union, ino: u64) {
        let Some((dir, cookie)) = union.position(ino) else {
            return;
        };
        let (d, before) = *self.enough_before.lock();
        if d == dir && cookie < before {
            return;
        }
        *self.opened.lock() = Some((dir, cookie));
        self.wake.notify_one();
    }

    fn run(&self, union: &Union) {
        // The directory being read and the cookies of the files read ahead
        // in it, in readdir order.
        let mut dir = 0;
        let mut ahead = std::collections::VecDeque::new();
        loop {
            let (d, c) = wait_for(&self.opened, &self.wake, Option::take);
            if d != dir {
                dir = d;
                ahead.clear();
            }
            while ahead.front().is_some_and(|&a| a <= c) {
                ahead.pop_front();
            }
            if ahead.len() < Self::FILES / 2 {
                let from = ahead.back().copied().unwrap_or(c);
                let want = Self::FILES - ahead.len();
                let got = union.read_ahead(d, from, want);
                let at_end = got.len() < want;
                ahead.extend(got);
                // Come back once the program has opened the files up to
                // the one that leaves half of them ahead; never again in
                // this directory once its end is read ahead.
                let before = if at_end {
                    u64::MAX
                } else {
                    ahead[ahead.len() - Self::FILES / 2]
                };
                *self.enough_before.lock() = (d, before);
            }
        }
    }
}

/// An open file and what keeps its passthrough mapping alive.
#[derive(Debug)]
struct Handle {
    ino: u64,
    file: OpenFile,
    /// For a handle on a lower file served here: the upper file, once the
    /// file has been copied up; reads then go there.
    copied_up: std::sync::OnceLock<OpenFile>,
    /// Held while this handle is open; the kernel needs the backing file for
    /// as long as any handle uses it.
    _backing: Option<Arc<BackingId>>,
}

/// The FUSE filesystem: a [`Union`] plus the handle tables.
#[derive(Debug)]
pub struct UnionFs {
    union: Arc<Union>,
    opts: MountOptions,
    /// Open files by handle; handles are never reused.
    files: RwLock<IdMap<Arc<Handle>>>,
    /// The kernel sends no opendir/releasedir once opendir answers ENOSYS.
    no_opendir: AtomicBool,
    /// Background loading of subdirectories; `None` when turned off.
    prefetch: Option<Arc<Prefetch>>,
    /// Background reading ahead across files; `None` when turned off.
    read_ahead: Option<Arc<ReadAhead>>,
    /// The session's notifier, once the session exists: small lower files
    /// opened without passthrough are put in the kernel's page cache with
    /// their OPEN (see [`UnionFs::store_small`]).
    notifier: Arc<std::sync::OnceLock<Notifier>>,
    /// Files [`UnionFs::store_small`] has stored (or tried to) since the
    /// kernel last forgot them.
    stored: Mutex<std::collections::HashSet<u64, std::hash::BuildHasherDefault<crate::IdHasher>>>,
    next_fh: AtomicU64,
    /// Passthrough is on (kernel agreed at init, and no backing open failed
    /// for lack of privilege).
    passthrough: AtomicBool,
    /// A backing file has been registered: passthrough really works here.
    passthrough_works: AtomicBool,
    /// Per inode: the backing file in use and whether it is the upper file.
    /// The kernel allows one backing file per inode at a time.
    backing: Mutex<IdMap<(Weak<BackingId>, bool)>>,
    /// Signalled (with `backing`) when a handle is released.
    released: parking_lot::Condvar,
}

impl UnionFs {
    /// Wraps `union` for serving.
    pub fn new(union: Arc<Union>, opts: MountOptions) -> UnionFs {
        let prefetch = opts.prefetch.then(|| {
            let p = Arc::new(Prefetch::default());
            let mut started = 0;
            for _ in 0..Prefetch::THREADS {
                let (p2, u2) = (p.clone(), union.clone());
                let spawned = std::thread::Builder::new()
                    .name("rcfs-prefetch".into())
                    .spawn(move || p2.run(&u2));
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then_some(p)
        });
        let read_ahead = opts.prefetch.then(|| {
            let r = Arc::new(ReadAhead::default());
            let (r2, u2) = (r.clone(), union.clone());
            std::thread::Builder::new()
                .name("rcfs-readahead".into())
                .spawn(move || r2.run(&u2))
                .ok()
                .map(|_| r)
        });
        UnionFs {
            read_ahead: read_ahead.flatten(),
            notifier: Arc::default(),
            stored: Mutex::default(),
            prefetch: prefetch.flatten(),
            union,
            opts,
            files: RwLock::new(IdMap::default()),
            no_opendir: AtomicBool::new(false),
            next_fh: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            passthrough_works: AtomicBool::new(false),
            backing: Mutex::new(IdMap::default()),
            released: parking_lot::Condvar::new(),
        }
    }

    fn trace<T: Debug>(
        &self,
        op: &str,
        args: impl FnOnce() -> String,
        start: Instant,
        res: &io::Result<T>,
    ) {
        if self.opts.debug {
            let us = start.elapsed().as_micros();
            match res {
                Ok(v) => log::debug!("{op}({}) = {v:?} [{us} us]", args()),
                Err(e) => log::debug!("{op}({}) = Err({e}) [{us} us]", args()),
            }
        }
    }

    fn attr(&self, s: &Stat) -> FileAttr {
        to_file_attr(s)
    }

    fn reply_entry(&self, reply: ReplyEntry, r: io::Result<Stat>) {
        match r {
            Ok(s) => reply.entry(&self.opts.ttl, &self.attr(&s), Generation(0)),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn reply_attr(&self, reply: ReplyAttr, r: io::Result<Stat>) {
        match r {
            Ok(s) => reply.attr(&self.opts.ttl, &self.attr(&s)),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.files.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// [`Self::handle`] for operations that work in `io::Result`.
    fn open_handle(&self, fh: FileHandle) -> io::Result<Arc<Handle>> {
        self.handle(fh)
            .map_err(|e| io::Error::from_raw_os_error(e.code()))
    }

    /// The listing of `dir` for a readdir at `offset`; when a listing
    /// starts, queues the subdirectories for background loading.
    fn listing(&self, op: &str, dir: u64, offset: u64) -> io::Result<Arc<Vec<DirEntry>>> {
        let t = Instant::now();
        let r = self.union.list_dir(dir);
        self.trace(
            op,
            || format!("{dir}, {offset}"),
            t,
            &r.as_ref().map(|l| l.len()).map_err(copy_err),
        );
        if let (Some(p), 0, Ok(_)) = (&self.prefetch, offset, &r) {
            p.push(self.union.unloaded_subdirs(dir), Prefetch::DEPTH);
        }
        // The call past the last entry ends a pass: the kernel keeps what it
        // read, and another pass rebuilds the listing from the merged view.
        if let Ok(l) = &r {
            if offset > 2 && start_of(l, offset) == l.len() {
                self.union.drop_listing(dir);
            }
        }
        r
    }

    /// The file a handle reads now: a lower file gives way to its upper copy.
    fn current_file<'a>(&self, h: &'a Handle) -> io::Result<&'a OpenFile> {
        if let Some(f) = h.copied_up.get() {
            return Ok(f);
        }
        if !h.file.is_upper() {
            if let Some(f) = self.union.reopen_if_copied_up(h.ino)? {
                return Ok(h.copied_up.get_or_init(|| f));
            }
        }
        Ok(&h.file)
    }

    fn add_handle(&self, ino: u64, file: OpenFile, backing: Option<Arc<BackingId>>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.write().insert(
            fh,
            Arc::new(Handle {
                ino,
                file,
                copied_up: std::sync::OnceLock::new(),
                _backing: backing,
            }),
        );
        fh
    }

    /// Where the session's notifier goes once the session exists.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// Without passthrough, every read of a file costs a READ round trip
    /// after its OPEN. A small lower file opened for reading is instead put
    /// whole into the kernel's page cache (FUSE_NOTIFY_STORE) before the
    /// OPEN is answered, so that reading it takes no further request; the
    /// open keeps the cache (FOPEN_KEEP_CACHE), and later opens find it
    /// there. Only a hint: a failure leaves reads to READ.
    ///
    /// A store waits for any page of the file that a READ is filling, and
    /// that READ needs a free server thread. So a file is stored once per
    /// kernel inode, by its first open, and concurrent opens wait for that
    /// store (the node's copy lock): no fd of the file can be reading while
    /// it is stored.
    fn store_small(&self, ino: u64, file: &OpenFile, flags: i32) {
        /// Largest file stored: most files of an image are far smaller.
        const MAX: u64 = 64 * 1024;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || !matches!(file, OpenFile::Lower(_)) {
            return;
        }
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let first = || self.stored.lock().insert(ino);
        let store = |data: &[u8]| notifier.store(INodeNo(ino), 0, data);
        if let Err(e) = self.union.with_lower_data(ino, file, MAX, first, store) {
            log::debug!("storing {ino} in the page cache: {e}");
        }
    }

    /// True while `ino` passes through to its lower file: the kernel then takes
    /// no open of it that passes through elsewhere, nor one that does not
    /// pass through at all.
    fn lower_backed(&self, ino: u64) -> bool {
        lower_backed_in(&self.backing.lock(), ino)
    }

    /// Waits a little for `ino`'s lower backing file to be let go. close()
    /// returns before its RELEASE reaches the server, so a program that
    /// closes a file and at once opens it for writing must not find it
    /// still open here. False if a reader really still holds it.
    fn lower_let_go(&self, ino: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut map = self.backing.lock();
        while lower_backed_in(&map, ino) {
            if self.released.wait_until(&mut map, deadline).timed_out() {
                return !lower_backed_in(&map, ino);
            }
        }
        true
    }

    /// Whether passthrough works, found out (once) by registering `f` as a
    /// backing file; turns passthrough off if it does not.
    fn passthrough_proven(&self, f: &OpenFile, reply: &ReplyOpen) -> bool {
        if self.passthrough_works.load(Ordering::Relaxed) {
            return true;
        }
        let Some(f) = f.upper_file() else {
            return false;
        };
        match reply.open_backing(f) {
            Ok(_probe) => {
                self.passthrough_works.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.passthrough_off(&e);
                false
            }
        }
    }

    /// Registering a backing file failed (no privilege): serve all I/O here.
    fn passthrough_off(&self, e: &io::Error) {
        log::info!("FUSE passthrough unavailable ({e}); serving reads and writes in userspace");
        self.passthrough.store(false, Ordering::Relaxed);
    }

    /// The backing id for `file` of `ino`, shared with other open handles of
    /// the same inode. `Ok(None)`: serve without passthrough; `Err(())`: the
    /// inode already passes through to another file, and the kernel allows
    /// one backing file per inode.
    fn backing_for(
        &self,
        ino: u64,
        file: &OpenFile,
        open: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, ()> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(fd) = file.host_fd() else {
            return Ok(None);
        };
        let existing = |map: &IdMap<(Weak<BackingId>, bool)>| {
            let (weak, is_upper) = map.get(&ino)?;
            let b = weak.upgrade()?;
            Some(if *is_upper == file.is_upper() {
                Ok(Some(b))
            } else {
                Err(())
            })
        };
        if let Some(r) = existing(&self.backing.lock()) {
            return r;
        }
        // The ioctl runs without the lock, so other opens do not wait on it.
        let created = open(fd);
        let mut map = self.backing.lock();
        if let Some(r) = existing(&map) {
            return r; // another open won the race; ours is dropped (closed)
        }
        match created {
            Ok(b) => {
                self.passthrough_works.store(true, Ordering::Relaxed);
                let b = Arc::new(b);
                map.insert(ino, (Arc::downgrade(&b), file.is_upper()));
                Ok(Some(b))
            }
            Err(e) => {
                self.passthrough_off(&e);
                Ok(None)
            }
        }
    }
}

/// Whether `ino` passes through to its lower file in `map`.
fn lower_backed_in(map: &IdMap<(Weak<BackingId>, bool)>, ino: u64) -> bool {
    map.get(&ino)
        .is_some_and(|(w, upper)| !upper && w.strong_count() > 0)
}

/// Index of the first entry of `list` after readdir offset `offset`.
fn start_of(list: &[DirEntry], offset: u64) -> usize {
    if offset < 2 {
        0
    } else {
        list.partition_point(|e| e.cookie <= offset)
    }
}

/// An error for a debug trace of an operation whose result is not `Debug`.
fn copy_err(e: &io::Error) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

fn reply_empty(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno_of(e)),
    }
}

/// The one place where internal errors become errnos.
fn errno_of(e: io::Error) -> Errno {
    Errno::from(e)
}

fn kind_to_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn to_file_attr(s: &Stat) -> FileAttr {
    let a = &s.attr;
    FileAttr {
        ino: INodeNo(s.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: kind_to_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    })
}

/// An attribute value the kernel reads as "no such entry, and remember that".
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        self.no_opendir.store(
            caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT),
            Ordering::Relaxed,
        );
        let want = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS;
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
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.union.finish_flushes();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = Instant::now();
        let r = self.union.lookup(parent.0, name);
        self.trace("lookup", || format!("{}, {name:?}", parent.0), t, &r);
        match r {
            Ok(s) => reply.entry(&self.opts.ttl, &self.attr(&s), Generation(0)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&self.opts.ttl, &negative_entry(), Generation(0))
            }
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let t = Instant::now();
        if self.union.forget(ino.0, nlookup) {
            // The kernel's inode, and its pages, are gone.
            self.stored.lock().remove(&ino.0);
        }
        self.trace("forget", || format!("{}, {nlookup}", ino.0), t, &Ok(()));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = Instant::now();
        let handle = fh
            .and_then(|fh| self.handle(fh).ok())
            .filter(|h| h.ino == ino.0);
        let r = match &handle {
            Some(h) => self
                .current_file(h)
                .and_then(|f| self.union.getattr_open(ino.0, f)),
            None => self.union.getattr(ino.0),
        };
        // The kernel does not always say which open file an fstat is for; an
        // unlinked file is still reachable through any of its open files.
        let r = match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let open = self.files.read().values().find(|h| h.ino == ino.0).cloned();
                match open {
                    Some(h) => self
                        .current_file(&h)
                        .and_then(|f| self.union.getattr_open(ino.0, f)),
                    None => Err(e),
                }
            }
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
            .and_then(|fh| self.handle(fh).ok())
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
            Err(e) => reply.error(errno_of(e)),
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
        // A file open for reading through its lower file cannot be copied up
        // under the kernel's passthrough rules: refuse as for a running
        // program, before anything is copied.
        let r = if self.lower_backed(ino.0)
            && self.union.open_leaves_lower(ino.0, flags.0)
            && !self.lower_let_go(ino.0)
        {
            Err(io::Error::from_raw_os_error(libc::ETXTBSY))
        } else {
            // A write-only open may leave the data below (an append to a
            // large lower file copies nothing) when its writes come here
            // without the page cache and every other open passes through,
            // so that no cached page can go stale.
            let defer = self.passthrough.load(Ordering::Relaxed);
            match self.union.open(ino.0, flags.0, defer) {
                Ok(f @ OpenFile::Tail(_)) => {
                    if self.passthrough_proven(&f, &reply) {
                        Ok(f)
                    } else {
                        drop(f);
                        self.union.open(ino.0, flags.0, false)
                    }
                }
                r => r,
            }
        };
        self.trace("open", || format!("{}, {:#o}", ino.0, flags.0), t, &r);
        let file = match r {
            Ok(f) => f,
            Err(e) => return reply.error(errno_of(e)),
        };
        if let (Some(ra), OpenFile::Lower(_)) = (&self.read_ahead, &file) {
            ra.opened(&self.union, ino.0);
        }
        if let OpenFile::Tail(_) = file {
            let fh = self.add_handle(ino.0, file, None);
            return reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            );
        }
        let mut backing = self.backing_for(ino.0, &file, |fd| reply.open_backing(fd));
        if backing.is_err() && file.is_upper() && self.lower_let_go(ino.0) {
            // A reader of the lower file was closed, its RELEASE late.
            backing = self.backing_for(ino.0, &file, |fd| reply.open_backing(fd));
        }
        match backing {
            Ok(Some(b)) => {
                let fh = self.add_handle(ino.0, file, Some(b.clone()));
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b);
            }
            Ok(None) => {
                self.store_small(ino.0, &file, flags.0);
                let fh = self.add_handle(ino.0, file, None);
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(()) => reply.error(Errno::ETXTBSY),
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
        let t = Instant::now();
        let r = self.open_handle(fh).and_then(|h| {
            let mut buf = vec![0u8; size as usize];
            let n = self.current_file(&h)?.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        });
        self.trace(
            "read",
            || format!("{}, fh {}, {offset}, {size}", ino.0, fh.0),
            t,
            &r.as_ref().map(Vec::len).map_err(copy_err),
        );
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(errno_of(e)),
        }
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
            .open_handle(fh)
            .and_then(|h| self.union.write(&h.file, data, offset));
        self.trace(
            "write",
            || format!("{}, fh {}, {offset}, {}", ino.0, fh.0, data.len()),
            t,
            &r,
        );
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.trace(
            "flush",
            || format!("{}, fh {}", _ino.0, _fh.0),
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
        let handle = self.files.write().remove(&fh.0);
        // Closing the backing file (an ioctl) happens outside the table lock.
        drop(handle);
        let mut map = self.backing.lock();
        if map.get(&ino.0).is_some_and(|(w, _)| w.strong_count() == 0) {
            map.remove(&ino.0);
        }
        drop(map);
        self.released.notify_all();
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
        let r = self.open_handle(fh).and_then(|h| {
            // A copy-up's data may still be on its way to disk, its marker
            // with it: finish that first.
            self.union.finish_flush(ino.0)?;
            match h
                .file
                .upper_file()
                .or(h.copied_up.get().and_then(OpenFile::upper_file))
            {
                Some(f) => {
                    if datasync {
                        f.sync_data()
                    } else {
                        f.sync_all()
                    }
                }
                _ => Ok(()),
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
            .open_handle(fh)
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
        let r = self.open_handle(fh_in).and_then(|src| {
            let dst = self.open_handle(fh_out)?;
            let from = self.current_file(&src)?;
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
            Err(e) => reply.error(errno_of(e)),
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
            Ok(off) => self.open_handle(fh).and_then(|h| {
                let f = self.current_file(&h)?;
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
            Err(e) => reply.error(errno_of(e)),
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
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.listing("readdir", ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(errno_of(e)),
        };
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 {
            let parent = self.union.parent_of(ino.0).unwrap_or(ino.0);
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
        }
        for e in &list[start_of(&list, offset)..] {
            if reply.add(INodeNo(e.ino), e.cookie, kind_to_type(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.listing("readdirplus", ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(errno_of(e)),
        };
        // The kernel takes no reference on `.` and `..`, so they are not
        // counted as lookups.
        for (off, name) in [(0u64, "."), (1, "..")] {
            if offset > off {
                continue;
            }
            let target = if off == 0 {
                ino.0
            } else {
                self.union.parent_of(ino.0).unwrap_or(ino.0)
            };
            if let Ok(s) = self.union.getattr(target) {
                if reply.add(
                    INodeNo(target),
                    off + 1,
                    name,
                    &Duration::ZERO,
                    &self.attr(&s),
                    Generation(0),
                ) {
                    return reply.ok();
                }
            }
        }
        for e in &list[start_of(&list, offset)..] {
            // Gone since the listing was taken: skip it.
            let Ok(s) = self.union.getattr(e.ino) else {
                continue;
            };
            if reply.add(
                INodeNo(e.ino),
                e.cookie,
                &e.name,
                &self.opts.ttl,
                &self.attr(&s),
                Generation(0),
            ) {
                break;
            }
            self.union.add_lookup(e.ino);
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.trace(
            "releasedir",
            || format!("{}", _ino.0),
            Instant::now(),
            &Ok(()),
        );
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.trace(
            "fsyncdir",
            || format!("{}", _ino.0),
            Instant::now(),
            &Ok(()),
        );
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let t = Instant::now();
        let r = self.union.statfs();
        self.trace(
            "statfs",
            || format!("{}", _ino.0),
            t,
            &r.as_ref().map(|s| s.f_bavail).map_err(copy_err),
        );
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno_of(e)),
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
            Err(e) => reply.error(errno_of(e)),
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
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let t = Instant::now();
        let r = self.union.removexattr(ino.0, name);
        self.trace("removexattr", || format!("{}, {name:?}", ino.0), t, &r);
        reply_empty(reply, r);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.trace(
            "access",
            || format!("{}, {_mask:?}", _ino.0),
            Instant::now(),
            &Ok(()),
        );
        // default_permissions: the kernel has checked already.
        reply.ok();
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
        let t = Instant::now();
        let r = self.union.create(parent.0, name, mode, flags, caller(req));
        self.trace(
            "create",
            || format!("{}, {name:?}, {mode:#o}, {flags:#o}", parent.0),
            t,
            &r.as_ref().map(|(s, _)| s.ino).map_err(copy_err),
        );
        let (stat, file) = match r {
            Ok(v) => v,
            Err(e) => return reply.error(errno_of(e)),
        };
        let attr = self.attr(&stat);
        match self.backing_for(stat.ino, &file, |fd| reply.open_backing(fd)) {
            Ok(Some(b)) => {
                let fh = self.add_handle(stat.ino, file, Some(b.clone()));
                reply.created_passthrough(
                    &self.opts.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_NOFLUSH,
                    &b,
                );
            }
            Ok(None) | Err(()) => {
                let fh = self.add_handle(stat.ino, file, None);
                reply.created(
                    &self.opts.ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
        }
    }
}
