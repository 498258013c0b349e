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
//! the rest of it is fetched in the background; with `prefetch`, so is the
//! rest of the layer, one file at a time, while nothing else is asked for.
//!
//! A file that is one chunk and already on disk opens as a host file, so
//! the kernel can read it itself (passthrough) and copy-up copies it in the
//! kernel.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::{Attr, EntryVisitor, FsStats, Kind, Layer, LowerFile};
use crate::cache::{Block, BlockCache, Claim, Fetching};
use crate::error::layer_error;
use crate::image::blob::{unzstd_exact, BlobSource};
use crate::image::toc::{Chunk, Source, Toc, NONE};

/// The most compressed bytes one request fetches for chunks that follow
/// each other (more goes in further requests).
const MAX_REQUEST: u64 = 4 << 20;

/// What the background thread is asked to fetch.
enum Job {
    /// The whole of file `.0` (after a first read, or `will_need`).
    File(u32),
}

/// What the layer's reads and its background thread share.
#[derive(Debug)]
struct Inner {
    id: String,
    toc: Toc,
    /// The blob, for chunks that live in it; `None` for layers whose data is
    /// all in the store.
    source: Option<Arc<dyn BlobSource>>,
    cache: Arc<BlockCache>,
    /// Files already queued for the background fetch.
    queued: Vec<AtomicBool>,
}

/// See the module doc.
#[derive(Debug)]
pub struct ImageLayer {
    inner: Arc<Inner>,
    /// Jobs for the background thread; dropped to stop it.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl ImageLayer {
    /// A layer named `id` (its blob digest) over `toc`, whose chunks come
    /// from `source` through `cache`. With `prefetch`, the whole layer is
    /// fetched in the background.
    pub fn new(
        id: String,
        toc: Toc,
        source: Option<Arc<dyn BlobSource>>,
        cache: Arc<BlockCache>,
        prefetch: bool,
    ) -> ImageLayer {
        let queued = (0..toc.files.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        let inner = Arc::new(Inner {
            id,
            toc,
            source,
            cache,
            queued,
        });
        let (tx, rx) = mpsc::channel();
        let bg = inner.clone();
        let thread = std::thread::Builder::new()
            .name("rcfs-fetch".into())
            .spawn(move || bg.background(rx, prefetch))
            .ok();
        ImageLayer {
            inner,
            jobs: Some(tx),
            thread,
        }
    }

    /// The table of contents.
    pub fn toc(&self) -> &Toc {
        &self.inner.toc
    }

    fn node(&self, path: &Path) -> io::Result<u32> {
        self.inner
            .toc
            .lookup(path.as_os_str().as_bytes())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn queue(&self, file: u32) {
        if !self.inner.queued[file as usize].swap(true, Ordering::Relaxed) {
            if let Some(tx) = &self.jobs {
                let _ = tx.send(Job::File(file));
            }
        }
    }
}

impl Drop for ImageLayer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    /// Fetches queued files; with `prefetch`, every file when idle.
    fn background(&self, rx: mpsc::Receiver<Job>, prefetch: bool) {
        let mut next = 0usize;
        loop {
            let job = if prefetch && next < self.toc.files.len() {
                match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(j) => Some(j),
                    Err(_) => return,
                }
            };
            let file = match job {
                Some(Job::File(f)) => f,
                None => {
                    next += 1;
                    let f = (next - 1) as u32;
                    if self.queued[f as usize].swap(true, Ordering::Relaxed) {
                        continue;
                    }
                    f
                }
            };
            let size = self.toc.files[file as usize].size;
            if let Err(e) = self.fetch(file, 0, size) {
                log::warn!(
                    "layer {}: background fetch of {}: {e}",
                    self.id,
                    self.name_of(file)
                );
            }
        }
    }

    fn name_of(&self, file: u32) -> String {
        let f = &self.toc.files[file as usize];
        let node = f.links.first().copied().unwrap_or(0);
        String::from_utf8_lossy(&self.toc.path_of(node)).into_owned()
    }

    /// Makes sure every chunk of `file` in `[start, end)` is cached;
    /// returns their blocks (`None` for runs of zeros), in order.
    fn fetch(&self, file: u32, start: u64, end: u64) -> io::Result<Vec<(Chunk, Option<Block>)>> {
        let f = &self.toc.files[file as usize];
        let first = f.chunks.partition_point(|c| c.offset + c.len <= start);
        let mut out: Vec<(Chunk, Option<Block>)> = Vec::new();
        let mut waits = Vec::new();
        // Claimed chunks not yet fetched: adjacent in the blob, fetched as one.
        let mut run: Vec<(usize, Fetching<'_>)> = Vec::new();
        for c in f.chunks[first..].iter().take_while(|c| c.offset < end) {
            let i = out.len();
            out.push((c.clone(), None));
            if c.source == Source::Zeros {
                continue;
            }
            match self.cache.claim(&c.digest, c.len)? {
                Claim::Have(b) => out[i].1 = Some(b),
                Claim::Wait(p) => waits.push((i, p)),
                Claim::Mine(fetching) => {
                    // Joins the run if it starts where the run ends, and
                    // the run is not so long that a reader waiting for a
                    // chunk at its end would wait long.
                    let joins = match (run.first(), run.last(), c.source) {
                        (Some((f, _)), Some((l, _)), Source::Blob { start, end }) => {
                            let first = match out[*f].0.source {
                                Source::Blob { start, .. } => start,
                                _ => u64::MAX,
                            };
                            matches!(out[*l].0.source, Source::Blob { end: e, .. } if e == start)
                                && end.saturating_sub(first) <= MAX_REQUEST
                        }
                        _ => false,
                    };
                    if !joins && !run.is_empty() {
                        self.fetch_run(file, std::mem::take(&mut run), &mut out)?;
                    }
                    run.push((i, fetching));
                }
            }
        }
        if !run.is_empty() {
            self.fetch_run(file, run, &mut out)?;
        }
        for (i, p) in waits {
            out[i].1 = Some(p.wait()?);
        }
        Ok(out)
    }

    /// Fetches chunks that follow each other in the blob with one request.
    fn fetch_run(
        &self,
        file: u32,
        run: Vec<(usize, Fetching<'_>)>,
        out: &mut [(Chunk, Option<Block>)],
    ) -> io::Result<()> {
        let what = || format!("layer {}, file '{}'", self.id, self.name_of(file));
        let (Some(src), Source::Blob { start, .. }) = (&self.source, out[run[0].0].0.source) else {
            return Err(layer_error(
                libc::EIO,
                format!(
                    "{}: its data is missing from the store; pull the image again",
                    what()
                ),
            ));
        };
        let Source::Blob { end, .. } = out[run[run.len() - 1].0].0.source else {
            unreachable!("a run holds blob chunks only")
        };
        let t0 = Instant::now();
        let stats = &self.cache.stats;
        let mut body = match src.open_range(start, end) {
            Ok(b) => b,
            Err(e) => {
                stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                return Err(layer_error(libc::EIO, format!("{}: {e}", what())));
            }
        };
        let mut got = 0u64;
        for (i, fetching) in run {
            let c = &out[i].0;
            let Source::Blob { start: s, end: e } = c.source else {
                unreachable!()
            };
            let mut frame = Vec::with_capacity((e - s) as usize);
            let r = body
                .by_ref()
                .take(e - s)
                .read_to_end(&mut frame)
                .and_then(|n| {
                    got += n as u64;
                    if n as u64 != e - s {
                        return Err(layer_error(
                            libc::EIO,
                            format!(
                                "{}: the blob ended after {n} of {} bytes at {s}",
                                what(),
                                e - s
                            ),
                        ));
                    }
                    unzstd_exact(
                        &frame,
                        c.len,
                        &format_args!("{}, chunk at {}", what(), c.offset),
                    )
                });
            if r.is_err() {
                stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
            }
            let block = fetching.done(r).map_err(|e| {
                log::error!("{e}");
                e
            })?;
            out[i].1 = Some(block);
        }
        stats.note_request(got, t0.elapsed());
        Ok(())
    }
}

impl Layer for ImageLayer {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn stat(&self, path: &Path) -> io::Result<Attr> {
        Ok(self.inner.toc.node(self.node(path)?).attr.clone())
    }

    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>> {
        let toc = &self.inner.toc;
        let dir = toc.node(self.node(path)?);
        if dir.attr.kind != Kind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        for &c in &dir.children {
            let n = toc.node(c);
            each(OsStr::from_bytes(&n.name), n.attr.kind, &mut || {
                Ok(n.attr.clone())
            })?;
        }
        Ok(dir
            .xattrs
            .iter()
            .map(|(k, _)| OsStr::from_bytes(k).to_owned())
            .collect())
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        match &self.inner.toc.node(self.node(path)?).target {
            Some(t) => Ok(OsStr::from_bytes(t).to_owned()),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let n = self.inner.toc.node(self.node(path)?);
        Ok(n.xattrs
            .iter()
            .map(|(k, _)| OsStr::from_bytes(k).to_owned())
            .collect())
    }

    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let n = self.inner.toc.node(self.node(path)?);
        Ok(n.xattrs
            .iter()
            .find(|(k, _)| &k[..] == name.as_bytes())
            .map(|(_, v)| v.to_vec()))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        let n = self.inner.toc.node(self.node(path)?);
        if n.file == NONE {
            return Err(io::Error::from_raw_os_error(if n.attr.kind == Kind::Dir {
                libc::EISDIR
            } else {
                libc::EINVAL
            }));
        }
        let data = &self.inner.toc.files[n.file as usize];
        // One chunk on disk: the file itself is a host file.
        if let [c] = &data.chunks[..] {
            if c.source != Source::Zeros && c.len > crate::cache::MEM_CHUNK_MAX {
                if let Some(Block::Disk(f)) = self.inner.cache.get(&c.digest, c.len)? {
                    return Ok(Arc::new(HostFile(f)));
                }
            }
        }
        Ok(Arc::new(ImageFile {
            layer: self.inner.clone(),
            file: n.file,
            jobs: self.jobs.clone(),
        }))
    }

    fn will_need(&self, path: &Path, _len: u64) -> io::Result<()> {
        let n = self.inner.toc.node(self.node(path)?);
        if n.file != NONE {
            self.queue(n.file);
        }
        Ok(())
    }

    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        let toc = &self.inner.toc;
        let f = file_id
            .checked_sub(1)
            .and_then(|i| toc.files.get(i as usize))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(f.links
            .iter()
            .map(|&l| PathBuf::from(OsStr::from_bytes(&toc.path_of(l))))
            .collect())
    }

    fn statfs(&self) -> io::Result<FsStats> {
        let (_, bytes) = self.inner.toc.data_size();
        Ok(FsStats {
            blocks: bytes.div_ceil(4096),
            bfree: 0,
            bavail: 0,
            files: self.inner.toc.nodes.len() as u64,
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
    jobs: Option<mpsc::Sender<Job>>,
}

impl LowerFile for ImageFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.layer.toc.files[self.file as usize].size;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset + buf.len() as u64);
        let blocks = self.layer.fetch(self.file, offset, end)?;
        // The rest of the file, in the background.
        if !self.layer.queued[self.file as usize].swap(true, Ordering::Relaxed) {
            if let Some(tx) = &self.jobs {
                let _ = tx.send(Job::File(self.file));
            }
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

#[cfg(test)]
mod tests;
