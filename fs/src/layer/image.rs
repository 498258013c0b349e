//! [`ImageLayer`]: an image layer served from its table of contents, its
//! data fetched on first read.
//!
//! Metadata (lookups, listings, attributes, xattrs, symlink targets) comes
//! from the [`Toc`] in memory and never waits. A read finds the chunks it
//! covers, takes those the [`BlockCache`] has, and fetches the missing ones
//! that lie next to each other in the blob with one range request; each
//! chunk is decompressed, checked against its sha256 and cached before a
//! byte of it is served, so a corrupt or truncated blob gives the reader
//! EIO and a log line, never wrong bytes. After the first read of a file,
//! the rest of it is fetched in the background, by the mount's fetch pool
//! ([`crate::cache::pool`]), which keeps several requests in flight and
//! holds back while reads are fetching; with `prefetch`, so is the rest of
//! the layer, in blob order, when nothing more urgent waits.
//!
//! A file that is whole on disk (its one chunk, or its chunks put
//! together) opens as a host file, so
//! the kernel can read it itself (passthrough) and copy-up copies it in the
//! kernel.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::{Attr, EntryVisitor, FsStats, Kind, Layer, LowerFile};
use crate::cache::{Block, BlockCache, MEM_CHUNK_MAX};
use crate::error::layer_error;
use crate::image::blob::BlobSource;
use crate::image::toc::{Source, Toc, NONE};
use crate::image::tree::{Bits, Tree};
use crate::lock::{Mutex, Rank};
use fetch::ReadAheadState;

/// What `will_need` fetches of a file whose data is in a remote blob: the
/// start of the next files of a directory is worth a request only while it
/// is small next to what a round trip costs.
const WILL_NEED_REMOTE: u64 = 64 << 10;

/// How many bytes a reader of a remote file reads in order from its start
/// before the rest of the file is fetched for it in the background.
const WHOLE_AFTER: u64 = 1 << 20;

/// Requests in flight for the start of a traced layer (see
/// [`ImageLayer::with_start`]).
const START_STREAMS: usize = 4;

/// The requests of a start: the ranges of `order`, neighbours in the blob
/// joined up to [`START_PIECE`], then `[0, bytes)` in pieces of that size.
fn start_jobs(bytes: u64, order: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut jobs: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in order {
        match jobs.last_mut() {
            Some(last) if s >= last.1 && s - last.1 <= 16 << 10 && e - last.0 <= START_PIECE => {
                last.1 = e;
            }
            _ => jobs.push((s, e)),
        }
    }
    let mut at = 0;
    while at < bytes {
        let end = (at + START_PIECE).min(bytes);
        jobs.push((at, end));
        at = end;
    }
    jobs
}

/// The blob ranges a start fetches, in order, and the next to take.
#[derive(Debug)]
struct StartJobs {
    jobs: Vec<(u64, u64)>,
    next: AtomicUsize,
}

/// Bytes of the start asked for at once: small enough that a read which
/// misses is not queued behind much of it on the link, large enough (with
/// [`START_STREAMS`] in flight) to keep a 20 ms, 100 Mbit/s link busy.
const START_PIECE: u64 = 256 << 10;

/// What the layer's reads and its background thread share.
#[derive(Debug)]
struct Inner {
    id: String,
    tree: Tree,
    /// The blob, for chunks that live in it; `None` for layers whose data is
    /// all in the store.
    source: Option<Arc<dyn BlobSource>>,
    cache: Arc<BlockCache>,
    /// Files already queued for the background fetch.
    queued: Bits,
    /// This layer, for the jobs it gives the fetch pool (weak: a queued
    /// job keeps no layer alive).
    me: std::sync::Weak<Inner>,
    /// The read-ahead window; taken alone.
    ra: Mutex<ReadAheadState>,
    /// What this mount's start reads, for the next one (set once, before
    /// any read).
    start_log: OnceLock<StartLog>,
}

/// The order in which a mount's files were first opened
/// (`rcfs mount --record-trace`): one path per line, each once; and, as
/// they happen, the first read of each chunk of a file as a line
/// `/read OFFSET LEN PATH` (never a path: those are relative), from which
/// `rcfs convert --trace` learns in what order a start reads its bytes.
#[derive(Debug)]
pub struct Trace {
    /// The file, the paths already written and the chunks already read;
    /// taken alone.
    out: Mutex<TraceOut>,
}

#[derive(Debug)]
struct TraceOut {
    file: File,
    opened: HashSet<Vec<u8>>,
    read: HashSet<(Vec<u8>, u64)>,
}

impl Trace {
    /// A trace written to `path` (created or truncated).
    pub fn create(path: &Path) -> io::Result<Arc<Trace>> {
        let file = File::create(path)?;
        Ok(Arc::new(Trace {
            out: Mutex::new(
                Rank::Trace,
                TraceOut {
                    file,
                    opened: HashSet::new(),
                    read: HashSet::new(),
                },
            ),
        }))
    }

    fn note(&self, path: &[u8]) {
        let mut g = self.out.lock();
        if g.opened.insert(path.to_vec()) {
            let mut line = path.to_vec();
            line.push(b'\n');
            if let Err(e) = g.file.write_all(&line) {
                log::warn!("cannot write the trace: {e}");
            }
        }
    }

    /// The chunk at `offset` (`len` bytes) of `path` was read.
    fn note_read(&self, path: &[u8], offset: u64, len: u64) {
        let mut g = self.out.lock();
        if g.read.insert((path.to_vec(), offset)) {
            let mut line = format!("/read {offset} {len} ").into_bytes();
            line.extend_from_slice(path);
            line.push(b'\n');
            if let Err(e) = g.file.write_all(&line) {
                log::warn!("cannot write the trace: {e}");
            }
        }
    }
}

/// What a layer's first start read, in the order it read it: the blob
/// range of each chunk a read of the first [`StartLog::WINDOW`] covered,
/// once each, up to [`StartLog::MAX_BYTES`]. Given to `save` when the log
/// goes (with its layer, at the end of the mount), so that the next mount
/// of the same layer with an empty cache fetches those ranges first
/// ([`ImageLayer::with_start`]) as a `rcfs convert --trace` layer's are.
pub struct StartLog {
    since: std::time::Instant,
    /// Taken alone.
    seen: Mutex<StartSeen>,
    save: SaveStart,
}

/// The ranges noted, the chunk starts among them, and their bytes.
type StartSeen = (Vec<(u64, u64)>, HashSet<u64>, u64);

/// What keeps the ranges a start read (blob offsets, start to end).
pub type SaveStart = Box<dyn Fn(Vec<(u64, u64)>) + Send + Sync>;

impl std::fmt::Debug for StartLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StartLog({} ranges)", self.seen.lock().0.len())
    }
}

impl StartLog {
    /// How long after the layer is opened a read counts as the start's.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
    /// The most compressed bytes a log names.
    pub const MAX_BYTES: u64 = 256 << 20;
    /// The most ranges it keeps (each a request at the next start, at
    /// worst, and a line of the layer's record).
    pub const MAX_RANGES: usize = 4096;

    pub fn new(save: SaveStart) -> StartLog {
        StartLog {
            since: std::time::Instant::now(),
            seen: Mutex::new(Rank::StartLog, (Vec::new(), HashSet::new(), 0)),
            save,
        }
    }

    fn note(&self, start: u64, end: u64) {
        if self.since.elapsed() > Self::WINDOW {
            return;
        }
        let mut g = self.seen.lock();
        let (ranges, starts, bytes) = &mut *g;
        if *bytes + (end - start) > Self::MAX_BYTES
            || ranges.len() >= Self::MAX_RANGES
            || !starts.insert(start)
        {
            return;
        }
        *bytes += end - start;
        match ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => ranges.push((start, end)),
        }
    }
}

impl StartLog {
    /// Gives what was noted to `save`, once.
    fn keep(&self) {
        let ranges = std::mem::take(&mut self.seen.lock().0);
        if !ranges.is_empty() {
            (self.save)(ranges);
        }
    }
}

impl Drop for StartLog {
    fn drop(&mut self) {
        self.keep();
    }
}

/// See the module doc.
#[derive(Debug)]
pub struct ImageLayer {
    inner: Arc<Inner>,
    /// Where first opens are recorded, if anywhere.
    trace: Option<Arc<Trace>>,
}

impl ImageLayer {
    /// A layer named `id` (its blob digest) over `toc`, whose chunks come
    /// from `source` through `cache`. With `prefetch`, the whole layer is
    /// fetched in the background. (A mount of a stored image takes the
    /// store's tree of the layer instead: [`ImageLayer::with_tree`].)
    pub fn new(
        id: String,
        toc: Toc,
        source: Option<Arc<dyn BlobSource>>,
        cache: Arc<BlockCache>,
        prefetch: bool,
    ) -> io::Result<ImageLayer> {
        let tree = Tree::from_toc(&toc, format!("layer {id}"))?;
        Ok(ImageLayer::with_tree(id, tree, source, cache, prefetch))
    }

    /// A layer named `id` over `tree` (see [`ImageLayer::new`]).
    pub fn with_tree(
        id: String,
        tree: Tree,
        source: Option<Arc<dyn BlobSource>>,
        cache: Arc<BlockCache>,
        prefetch: bool,
    ) -> ImageLayer {
        let queued = Bits::new(tree.counts().1 as usize);
        let inner = Arc::new_cyclic(|me| Inner {
            id,
            tree,
            source,
            cache,
            queued,
            me: me.clone(),
            ra: Mutex::new(Rank::LayerReadAhead, ReadAheadState::default()),
            start_log: OnceLock::new(),
        });
        if prefetch {
            // Blob order: one request can then take several files.
            let seen = Bits::new(inner.tree.counts().1 as usize);
            for i in 0..inner.tree.order_len() {
                let (_, f, _) = inner.tree.order(i);
                if seen.set(f) {
                    continue;
                }
                let weak = Arc::downgrade(&inner);
                inner.cache.pool.idle(Box::new(move || {
                    if let Some(l) = weak.upgrade() {
                        if !l.queued.set(f) {
                            l.fetch_in_background(f, u64::MAX);
                        }
                    }
                }));
            }
        }
        ImageLayer { inner, trace: None }
    }

    /// Fetches what a start reads, in the background, [`START_STREAMS`]
    /// requests in flight: first the blob ranges of `order` (the chunks a
    /// traced start read, in the order it read them), then the blob's first
    /// `bytes` in blob order, skipping what is there. A layer `rcfs convert
    /// --trace` wrote holds the files a start opens there. More requests at
    /// once would share the link and delay what the start waits for first,
    /// and a read that misses would queue behind more of them.
    pub fn with_start(self, bytes: u64, order: &[(u64, u64)]) -> ImageLayer {
        if self.inner.source.is_none() || (bytes == 0 && order.is_empty()) {
            return self;
        }
        let start = Arc::new(StartJobs {
            jobs: start_jobs(bytes, order),
            next: AtomicUsize::new(0),
        });
        for _ in 0..START_STREAMS {
            Inner::fetch_start(self.inner.me.clone(), start.clone());
        }
        self
    }

    /// Notes what this mount's start reads in `log` (see [`StartLog`]).
    pub fn with_start_log(self, log: StartLog) -> ImageLayer {
        let _ = self.inner.start_log.set(log);
        self
    }

    /// Records the files this layer opens in `trace`.
    pub fn with_trace(mut self, trace: Option<Arc<Trace>>) -> ImageLayer {
        self.trace = trace;
        self
    }

    /// Fetches every chunk the cache lacks, at once and in blob order:
    /// requests of about [`fetch::READ_AHEAD`] bytes, queued as urgent, as
    /// many in flight as the fetch pool runs. For a reader of the whole
    /// layer (a full pull by chunks), whose next read then finds its
    /// chunks here or on their way; a read that comes first still fetches
    /// its own. A file [`Layer::open`] would take whole from the cache or
    /// the store's files (one indexed before) is not fetched.
    pub fn fetch_all(&self) {
        let inner = &self.inner;
        let whole_here = Bits::new(inner.tree.counts().1 as usize);
        let not_here = Bits::new(inner.tree.counts().1 as usize);
        let is_here = |f: u32| {
            if whole_here.get(f) {
                return true;
            }
            if not_here.get(f) {
                return false;
            }
            let here = inner.tree.file(f).is_ok_and(|d| {
                d.chunks.len() > 1
                    && d.size > MEM_CHUNK_MAX
                    && d.digest.is_some_and(|dg| inner.cache.holds(&dg, d.size))
            });
            if here { &whole_here } else { &not_here }.set(f);
            here
        };
        let queue = |from: u64, to: u64| {
            let weak = Arc::downgrade(inner);
            inner.cache.pool.urgent(Box::new(move || {
                if let Some(l) = weak.upgrade() {
                    l.read_ahead_from(from, to - from);
                }
            }));
        };
        // Pieces of chunks next to each other in the blob, none of a file
        // that is here whole (a piece takes every chunk in its range).
        let mut piece: Option<(u64, u64)> = None;
        for i in 0..inner.tree.order_len() {
            let (start, f, c) = inner.tree.order(i);
            let Some(Source::Blob { end, .. }) =
                inner.tree.order_chunk(start, f, c).map(|c| c.source)
            else {
                continue;
            };
            if is_here(f) {
                if let Some((from, to)) = piece.take() {
                    queue(from, to);
                }
                continue;
            }
            piece = match piece {
                Some((from, to)) if to - from < fetch::READ_AHEAD => Some((from, to.max(end))),
                Some((from, to)) => {
                    queue(from, to);
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((from, to)) = piece {
            queue(from, to);
        }
    }

    /// The layer's tree.
    pub fn tree(&self) -> &Tree {
        &self.inner.tree
    }

    /// The entry at `path`.
    fn node(&self, path: &Path) -> io::Result<crate::image::tree::Node<'_>> {
        let tree = &self.inner.tree;
        match tree.lookup(path.as_os_str().as_bytes())? {
            Some(id) => tree.node(id),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl Inner {
    /// Queues the fetch of the next job of `start`; each, once done,
    /// queues the next (see [`ImageLayer::with_start`]).
    fn fetch_start(me: std::sync::Weak<Inner>, start: Arc<StartJobs>) {
        let Some(l) = me.upgrade() else {
            return;
        };
        let i = start.next.fetch_add(1, Ordering::Relaxed);
        let Some(&(s, e)) = start.jobs.get(i) else {
            return;
        };
        l.cache.pool.urgent(Box::new(move || {
            if let Some(l) = me.upgrade() {
                l.read_ahead_from(s, e - s);
                Inner::fetch_start(me, start);
            }
        }));
    }

    /// Queues the first `len` bytes of `file` (all of it for `u64::MAX`)
    /// for a worker of the mount's fetch pool: urgent for a start
    /// (`will_need`), idle for the rest of a file.
    fn queue(&self, file: u32, len: u64, urgent: bool) {
        let weak = self.me.clone();
        let job: crate::cache::pool::Job = Box::new(move || {
            if let Some(l) = weak.upgrade() {
                l.fetch_in_background(file, len);
            }
        });
        if urgent {
            self.cache.pool.urgent(job);
        } else {
            self.cache.pool.idle(job);
        }
    }

    /// Fetches the first `len` bytes of `file`; a whole file of several
    /// chunks is then put together into one host file.
    fn fetch_in_background(&self, file: u32, len: u64) {
        let f = match self.tree.file(file) {
            Ok(f) => f,
            Err(e) => return log::warn!("layer {}: background fetch: {e}", self.id),
        };
        let size = f.size.min(len);
        match self.fetch(file, 0, size, false) {
            Ok(blocks) if size == f.size && f.chunks.len() > 1 && f.size > MEM_CHUNK_MAX => {
                if let Some(d) = f.digest {
                    let pieces: Vec<_> = blocks.into_iter().map(|(c, b)| (c.len, b)).collect();
                    if let Err(e) = self.cache.assemble(&d, &pieces) {
                        log::warn!(
                            "layer {}: keeping {} whole: {e}",
                            self.id,
                            self.name_of(file)
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "layer {}: background fetch of {}: {e}",
                self.id,
                self.name_of(file)
            ),
        }
    }

    fn name_of(&self, file: u32) -> String {
        let path = self
            .tree
            .file(file)
            .and_then(|f| self.tree.path_of(f.links().next().unwrap_or(0)));
        match path {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(_) => format!("(file {file})"),
        }
    }
}

impl Layer for ImageLayer {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn stat(&self, path: &Path) -> io::Result<Attr> {
        Ok(self.node(path)?.attr)
    }

    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>> {
        let dir = self.node(path)?;
        if dir.attr.kind != Kind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        for n in self.inner.tree.children(&dir)? {
            each(OsStr::from_bytes(n.name), n.attr.kind, &mut || {
                Ok(n.attr.clone())
            })?;
        }
        Ok(dir
            .xattrs()
            .map(|(k, _)| OsStr::from_bytes(k).to_owned())
            .collect())
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        match self.node(path)?.target {
            Some(t) => Ok(OsStr::from_bytes(t).to_owned()),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        Ok(self
            .node(path)?
            .xattrs()
            .map(|(k, _)| OsStr::from_bytes(k).to_owned())
            .collect())
    }

    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .node(path)?
            .xattrs()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v.to_vec()))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        let n = self.node(path)?;
        if n.file == NONE {
            return Err(io::Error::from_raw_os_error(if n.attr.kind == Kind::Dir {
                libc::EISDIR
            } else {
                libc::EINVAL
            }));
        }
        if let Some(t) = &self.trace {
            t.note(path.as_os_str().as_bytes());
        }
        let data = self.inner.tree.file(n.file)?;
        // The whole file on disk (its only chunk, or its chunks put
        // together): a host file. A stored layer's files always are, and
        // are read where they are (the host's page cache holds them, so a
        // copy in the block cache's memory would be a second one); a
        // remote layer's small ones are read into memory with their chunk,
        // as a stored layer's are while a trace records their reads.
        if let Some(d) = data.digest {
            if self.inner.source.is_none() && self.trace.is_none() {
                if let Some(f) = self.inner.cache.get_file(&d, data.size)? {
                    return Ok(Arc::new(HostFile(f)));
                }
            } else if data.size > MEM_CHUNK_MAX {
                if let Some(Block::Disk(f)) = self.inner.cache.get(&d, data.size)? {
                    return Ok(Arc::new(HostFile(f)));
                }
            }
        }
        Ok(Arc::new(ImageFile {
            layer: self.inner.clone(),
            file: n.file,
            next: AtomicU64::new(0),
            run: AtomicU64::new(0),
            trace: self
                .trace
                .clone()
                .map(|t| (t, path.as_os_str().as_bytes().into())),
        }))
    }

    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        let n = self.node(path)?;
        if n.file == NONE || self.inner.queued.get(n.file) {
            return Ok(());
        }
        if self.inner.source.is_none() {
            // A stored file: the kernel reads it ahead into its page cache
            // (a hint, no copy here; nothing to do for pages already there).
            let f = self.inner.tree.file(n.file)?;
            if let (Some(d), Some(files)) = (f.digest, self.inner.cache.files()) {
                if let Some(host) = files.open_object(&d)? {
                    crate::sys::will_need(&host, len)?;
                }
            }
            return Ok(());
        }
        // From a remote blob, reading ahead in blob order (after each
        // read that missed) is what keeps a start's requests few; these
        // wait until no read is fetching.
        self.inner.queue(n.file, len.min(WILL_NEED_REMOTE), false);
        Ok(())
    }

    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        let tree = &self.inner.tree;
        let f = file_id
            .checked_sub(1)
            .and_then(|i| u32::try_from(i).ok())
            .filter(|&i| i < tree.counts().1)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        tree.file(f)?
            .links()
            .map(|l| Ok(PathBuf::from(OsStr::from_bytes(&tree.path_of(l)?))))
            .collect()
    }

    fn end(&self) {
        if let Some(log) = self.inner.start_log.get() {
            log.keep();
        }
    }

    fn statfs(&self) -> io::Result<FsStats> {
        let (entries, _, bytes) = self.inner.tree.counts();
        Ok(FsStats {
            blocks: bytes.div_ceil(4096),
            bfree: 0,
            bavail: 0,
            files: u64::from(entries),
            ffree: 0,
            bsize: 4096,
            namemax: 255,
            frsize: 4096,
        })
    }
}

/// A file of an image layer, read through the cache.
#[derive(Debug)]
struct ImageFile {
    layer: Arc<Inner>,
    file: u32,
    /// Where the last read ended, and how many bytes the reads before it
    /// read one after another up to there (a reader of the whole file).
    next: AtomicU64,
    run: AtomicU64,
    /// Where its reads are recorded, and the path it was opened by.
    trace: Option<(Arc<Trace>, Box<[u8]>)>,
}

impl LowerFile for ImageFile {
    fn prefetch(&self) -> io::Result<()> {
        let size = self.layer.tree.file(self.file)?.size;
        // A piece at a time, as reads ask: no allocation sized by the file.
        const PIECE: u64 = 4 << 20;
        let mut off = 0;
        while off < size {
            let end = size.min(off + PIECE);
            let _fetching = self.layer.cache.pool.foreground();
            self.layer.fetch(self.file, off, end, false)?;
            off = end;
        }
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.layer.tree.file(self.file)?.size;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset + buf.len() as u64);
        // (Timed only when traced: every read of a lazy file comes here.)
        let t0 = log::log_enabled!(log::Level::Trace).then(std::time::Instant::now);
        let blocks = {
            let _fetching = self.layer.cache.pool.foreground();
            self.layer.fetch(self.file, offset, end, true)?
        };
        if let Some(waited) = t0.map(|t| t.elapsed()).filter(|w| w.as_millis() > 0) {
            log::trace!(
                "read of '{}' at {offset} waited {waited:?}",
                self.layer.name_of(self.file)
            );
        }
        // A read of chunks read ahead moves the window along.
        if let (Some(Source::Blob { start, .. }), Some(Source::Blob { end: e, .. })) = (
            blocks.first().map(|b| b.0.source),
            blocks.last().map(|b| b.0.source),
        ) {
            self.layer.after_read(start, e, false);
        }
        if let Some((t, path)) = &self.trace {
            for (c, _) in &blocks {
                t.note_read(path, c.offset, c.len);
            }
        }
        if let Some(log) = self.layer.start_log.get() {
            for (c, _) in &blocks {
                if let Source::Blob { start, end } = c.source {
                    log.note(start, end);
                }
            }
        }
        // The rest of a remote file, in the background, once the reads go
        // through it in order (a copy, a checksum; not a program's pages,
        // which the kernel asks for here and there, or one read of a
        // file's start). A stored file is here already.
        let run = if self.next.swap(end, Ordering::Relaxed) == offset {
            self.run.fetch_add(end - offset, Ordering::Relaxed) + (end - offset)
        } else {
            self.run.store(end - offset, Ordering::Relaxed);
            end - offset
        };
        let whole =
            self.layer.source.is_some() && offset == run - (end - offset) && run >= WHOLE_AFTER;
        if whole && !self.layer.queued.set(self.file) {
            self.layer.queue(self.file, u64::MAX, false);
        }
        let mut done = 0usize;
        for (c, block) in blocks {
            let from = offset.max(c.offset);
            let to = end.min(c.offset + c.len);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match block {
                None => dst.fill(0),
                Some(b) => {
                    let n = b.read_at(dst, from - c.offset)?;
                    if n != dst.len() {
                        return Err(layer_error(
                            libc::EIO,
                            "a cached chunk is shorter than its table of contents says",
                        ));
                    }
                }
            }
            done = (to - offset) as usize;
        }
        Ok(done)
    }

    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A file whose bytes are one host file in the store.
#[derive(Debug)]
struct HostFile(Arc<File>);

impl LowerFile for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        crate::sys::pread_full(&self.0, buf, offset)
    }

    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.as_fd())
    }

    fn copy_to(&self, dst: &File, len: u64, durable: bool) -> io::Result<()> {
        crate::sys::copy_data(&self.0, dst, len, durable)
    }
}

mod fetch;

#[cfg(test)]
mod tests;
