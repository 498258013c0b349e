//! The block cache between image layers and their blobs: decompressed,
//! verified chunks by content digest, in memory and on disk.
//!
//! * Memory: an LRU of small chunks bounded in bytes.
//! * Disk: the store's `cache/sha256/HEX` (lazily fetched chunks, evicted
//!   least recently used past a byte budget) and `files/sha256/HEX` (whole
//!   files of layers rcfs indexed from tar streams, kept until `rcfs gc`).
//!   A file whose only chunk is the file itself is then a host file, which
//!   the FUSE server can hand to the kernel (passthrough).
//! * A chunk is keyed by the sha256 of its bytes, so identical content in
//!   different layers and images is fetched and kept once; nothing enters
//!   the cache before its digest is checked, and an object read back from
//!   disk is checked again the first time it is used after a boot.
//! * Single flight: the first reader of a missing chunk [`claims`] it and
//!   fetches; readers that come meanwhile wait for that fetch instead of
//!   starting their own.
//!
//! [`claims`]: BlockCache::claim

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::error::layer_error;
use crate::image::cas::{self, Cas};
use crate::image::digest::{Digest, Hasher};
use crate::lock::{Condvar, Mutex, Rank};

pub mod pool;

/// Background fetches a mount keeps in flight at once.
pub const FETCH_WORKERS: usize = 8;

/// Chunks up to this size are also kept in memory.
pub const MEM_CHUNK_MAX: u64 = 1 << 20;

/// The longest a read waits for another reader's fetch of a chunk before
/// it fails with EIO: past the deadline of the largest request a fetch
/// makes (`registry::deadline_for`: 94 s for a 64 MiB chunk, 34 s for the
/// 4 MiB a read asks for at most), so it ends only a fetch that is stuck.
pub const FETCH_WAIT: Duration = Duration::from_secs(120);

/// A chunk's bytes: in memory, or in a host file.
#[derive(Debug, Clone)]
pub enum Block {
    Mem(Arc<[u8]>),
    Disk(Arc<File>),
}

impl Block {
    /// Copies bytes at `off` of the chunk into `buf`; returns how many.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Block::Mem(b) => {
                let start = (off as usize).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Block::Disk(f) => crate::sys::pread_full(f, buf, off),
        }
    }
}

/// Counters for `rcfs stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub mem_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
    /// Fetches that waited for another reader's fetch of the same chunk.
    pub joined: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub fetch_errors: AtomicU64,
    /// Fetches that ran past their deadline, and reads that gave up
    /// waiting for another's fetch (both EIO to the program).
    pub fetch_timeouts: AtomicU64,
    pub digest_errors: AtomicU64,
    /// Sum and maximum of request latencies, in microseconds.
    pub fetch_us_total: AtomicU64,
    pub fetch_us_max: AtomicU64,
    pub evicted: AtomicU64,
    /// Why the last fetch failed, for `rcfs stats`; taken alone.
    last_error: parking_lot::Mutex<Option<String>>,
}

impl Stats {
    /// Counts a failed fetch (a timeout apart) and keeps its reason.
    pub fn note_error(&self, e: &io::Error) {
        self.fetch_errors.fetch_add(1, Ordering::Relaxed);
        if e.kind() == io::ErrorKind::TimedOut {
            self.fetch_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        // One line of printable text: the reason may quote what a registry
        // sent.
        let reason: String = e
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        *self.last_error.lock() = Some(reason);
    }

    pub fn note_request(&self, bytes: u64, took: Duration) {
        let us = took.as_micros() as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        self.fetch_us_total.fetch_add(us, Ordering::Relaxed);
        self.fetch_us_max.fetch_max(us, Ordering::Relaxed);
    }

    /// The counters as `name value` lines.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let req = g(&self.requests);
        let mean = g(&self.fetch_us_total).checked_div(req).unwrap_or(0);
        format!(
            "hits_memory {}\nhits_disk {}\nmisses {}\njoined_fetches {}\nrequests {}\n\
             bytes_fetched {}\nfetch_errors {}\nfetch_timeouts {}\ndigest_errors {}\n\
             fetch_latency_mean_us {}\nfetch_latency_max_us {}\nevicted {}\n{}",
            g(&self.mem_hits),
            g(&self.disk_hits),
            g(&self.misses),
            g(&self.joined),
            req,
            g(&self.bytes_fetched),
            g(&self.fetch_errors),
            g(&self.fetch_timeouts),
            g(&self.digest_errors),
            mean,
            g(&self.fetch_us_max),
            g(&self.evicted),
            match &*self.last_error.lock() {
                Some(e) => format!("last_fetch_error {e}\n"),
                None => String::new(),
            },
        )
    }
}

/// A fetch in progress: its result, once there is one.
#[derive(Debug)]
pub struct Pending {
    done: Mutex<Option<Result<Block, String>>>,
    cond: Condvar,
}

impl Pending {
    /// Waits for the fetch to end, until `deadline`: past it, a `TimedOut`
    /// error (EIO to the program).
    pub fn wait(&self, deadline: Instant) -> io::Result<Block> {
        let mut g = self.done.lock();
        loop {
            if let Some(r) = g.as_ref() {
                return r.clone().map_err(|e| layer_error(libc::EIO, e));
            }
            if self.cond.wait_until(&mut g, deadline) && g.is_none() {
                return Err(crate::image::registry::timed_out(
                    "another reader's fetch of this chunk did not end in time".into(),
                ));
            }
        }
    }
}

/// What [`BlockCache::claim`] found.
pub enum Claim<'a> {
    /// The chunk is here.
    Have(Block),
    /// Another reader is fetching it: wait on this.
    Wait(Arc<Pending>),
    /// Nobody has it: fetch it and [`Fetching::done`] it.
    Mine(Fetching<'a>),
}

/// The duty to fetch one chunk; dropped without [`Fetching::done`], it
/// tells the waiters the fetch failed.
pub struct Fetching<'a> {
    cache: &'a BlockCache,
    digest: Digest,
    pending: Arc<Pending>,
    finished: bool,
}

impl Fetching<'_> {
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Ends the fetch with `bytes` (checked against the digest and kept),
    /// or with an error; wakes the waiters.
    pub fn done(mut self, bytes: io::Result<Vec<u8>>) -> io::Result<Block> {
        let r = bytes.and_then(|b| self.cache.insert(&self.digest, b));
        self.finish(r.as_ref().map(Clone::clone).map_err(|e| e.to_string()));
        r
    }

    fn finish(&mut self, r: Result<Block, String>) {
        self.finished = true;
        // Out of the table first: a waiter woken by a failure that claims
        // the chunk again must find it free, not this finished fetch.
        self.cache.pending.lock().remove(&self.digest);
        *self.pending.done.lock() = Some(r);
        self.pending.cond.notify_all();
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Err("the fetch was abandoned".into()));
        }
    }
}

/// Chunks in memory, with the bytes they take.
#[derive(Debug)]
struct Mem {
    lru: LruCache<Digest, Arc<[u8]>>,
    bytes: u64,
    limit: u64,
}

/// The on-disk cache's bookkeeping: what this process knows is there.
#[derive(Debug)]
struct Disk {
    /// Chunk → size, least recently used first.
    lru: LruCache<Digest, u64>,
    bytes: u64,
    limit: u64,
    /// Objects whose bytes this process has checked.
    verified: HashSet<Digest>,
    /// Whether `lru` holds what earlier processes left (see
    /// [`BlockCache::list_disk`]).
    listed: bool,
}

/// See the module doc.
#[derive(Debug)]
pub struct BlockCache {
    /// Guards the memory LRU: taken for one lookup or insert, never while
    /// another cache lock is held.
    mem: Mutex<Mem>,
    /// Guards the disk cache's bookkeeping; taken alone.
    disk: Mutex<Disk>,
    /// Chunks being fetched; taken alone.
    pending: Mutex<HashMap<Digest, Arc<Pending>>>,
    /// Evictable chunks (`cache/`).
    chunks: Option<Arc<Cas>>,
    /// Whole files of indexed layers (`files/`), never evicted here.
    files: Option<Arc<Cas>>,
    pub stats: Stats,
    /// How long a read waits for another's fetch ([`FETCH_WAIT`]).
    fetch_wait: Duration,
    /// The mount's background fetches (read-ahead, rest of files,
    /// prefetch).
    pub pool: pool::FetchPool,
}

impl BlockCache {
    /// A cache that keeps `mem_limit` bytes in memory and up to
    /// `disk_limit` bytes of fetched chunks in `chunks`.
    pub fn new(
        mem_limit: u64,
        chunks: Option<Arc<Cas>>,
        disk_limit: u64,
        files: Option<Arc<Cas>>,
    ) -> BlockCache {
        // What earlier processes left is listed when this one first adds
        // to the cache (`note_on_disk`): a mount that fetches nothing (an
        // image whose data is all here) never reads the cache's directory,
        // however large it is.
        let disk = Disk {
            lru: LruCache::unbounded(),
            bytes: 0,
            limit: disk_limit,
            verified: HashSet::new(),
            listed: chunks.is_none(),
        };
        BlockCache {
            mem: Mutex::new(
                Rank::CacheMem,
                Mem {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                    limit: mem_limit,
                },
            ),
            disk: Mutex::new(Rank::CacheDisk, disk),
            pending: Mutex::new(Rank::CachePending, HashMap::new()),
            chunks,
            files,
            stats: Stats::default(),
            fetch_wait: FETCH_WAIT,
            pool: pool::FetchPool::new(FETCH_WORKERS),
        }
    }

    /// The same cache whose reads wait `d` for another's fetch instead of
    /// [`FETCH_WAIT`] (tests).
    pub fn with_fetch_wait(mut self, d: Duration) -> BlockCache {
        self.fetch_wait = d;
        self
    }

    /// How long a read waits for another's fetch of a chunk.
    pub fn fetch_wait(&self) -> Duration {
        self.fetch_wait
    }

    /// A memory-only cache (tests, a store that cannot be written).
    pub fn in_memory(mem_limit: u64) -> BlockCache {
        BlockCache::new(mem_limit, None, 0, None)
    }

    /// Whether object `d` of `len` bytes seems here (memory, the chunks'
    /// or the files' store), without reading or checking it: [`get`] does
    /// both when it is used.
    ///
    /// [`get`]: BlockCache::get
    pub fn holds(&self, d: &Digest, len: u64) -> bool {
        self.mem.lock().lru.contains(d)
            || [&self.chunks, &self.files]
                .into_iter()
                .flatten()
                .any(|cas| matches!(cas.size_of(d), Ok(Some(n)) if n == len))
    }

    /// The chunk `d` if it is here (memory, then disk: the store's files,
    /// where every file of a stored layer is, then fetched chunks).
    pub fn get(&self, d: &Digest, len: u64) -> io::Result<Option<Block>> {
        if let Some(b) = self.mem.lock().lru.get(d) {
            self.stats.mem_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Block::Mem(b.clone())));
        }
        self.get_disk(d, len, true)
    }

    /// The chunk `d` from disk, checked, as [`Block::Disk`]: for a file
    /// that is read where it is (a stored layer's), never copied into
    /// memory whatever its size.
    pub fn get_file(&self, d: &Digest, len: u64) -> io::Result<Option<Arc<File>>> {
        Ok(match self.get_disk(d, len, false)? {
            Some(Block::Disk(f)) => Some(f),
            _ => None,
        })
    }

    /// [`Self::get`] past memory; `to_mem`: a small chunk is read into
    /// memory (and kept there) rather than returned as its file.
    fn get_disk(&self, d: &Digest, len: u64, to_mem: bool) -> io::Result<Option<Block>> {
        for (cas, evictable) in [(&self.files, false), (&self.chunks, true)] {
            let Some(cas) = cas else { continue };
            let Some(f) = cas.open_object(d)? else {
                continue;
            };
            let st = crate::sys::fstat(&f)?;
            if st.st_size as u64 != len || !self.check_once(d, &f, &st)? {
                log::error!("cached object {d} is corrupt; it is removed and fetched again");
                self.stats.digest_errors.fetch_add(1, Ordering::Relaxed);
                let _ = cas.remove(d);
                continue;
            }
            if evictable {
                let mut disk = self.disk.lock();
                if disk.lru.get(d).is_none() && !disk.listed {
                    // Known before the listing: it keeps its recency.
                    disk.lru.put(*d, len);
                    disk.bytes += len;
                }
            }
            self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
            let f = Arc::new(f);
            if to_mem && len <= MEM_CHUNK_MAX {
                let mut buf = vec![0u8; len as usize];
                if crate::sys::pread_full(&f, &mut buf, 0)? == buf.len() {
                    let b: Arc<[u8]> = buf.into();
                    self.keep_in_mem(d, &b);
                    return Ok(Some(Block::Mem(b)));
                }
            }
            return Ok(Some(Block::Disk(f)));
        }
        Ok(None)
    }

    /// Whether `f` holds the bytes of `d`, hashing it unless this process
    /// or another has since the system booted (see [`cas::mark_checked`]).
    fn check_once(&self, d: &Digest, f: &File, st: &libc::stat) -> io::Result<bool> {
        if self.disk.lock().verified.contains(d) {
            return Ok(true);
        }
        if cas::checked_this_boot(f, st) {
            self.disk.lock().verified.insert(*d);
            return Ok(true);
        }
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        loop {
            let n = crate::sys::pread_full(f, &mut buf, off)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        let ok = h.finish() == *d;
        if ok {
            cas::mark_checked(f);
            self.disk.lock().verified.insert(*d);
        }
        Ok(ok)
    }

    /// The chunk `d`, or the duty or chance to wait for it.
    pub fn claim(&self, d: &Digest, len: u64) -> io::Result<Claim<'_>> {
        if let Some(b) = self.get(d, len)? {
            return Ok(Claim::Have(b));
        }
        let mut pending = self.pending.lock();
        if let Some(p) = pending.get(d) {
            self.stats.joined.fetch_add(1, Ordering::Relaxed);
            return Ok(Claim::Wait(p.clone()));
        }
        let p = Arc::new(Pending {
            done: Mutex::new(Rank::CacheFetch, None),
            cond: Condvar::default(),
        });
        pending.insert(*d, p.clone());
        drop(pending);
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Ok(Claim::Mine(Fetching {
            cache: self,
            digest: *d,
            pending: p,
            finished: false,
        }))
    }

    /// Checks `bytes` against `d` and keeps them.
    fn insert(&self, d: &Digest, bytes: Vec<u8>) -> io::Result<Block> {
        if Digest::of(&bytes) != *d {
            self.stats.digest_errors.fetch_add(1, Ordering::Relaxed);
            return Err(layer_error(
                libc::EIO,
                format!("fetched chunk does not match its digest {d}: not used, not cached"),
            ));
        }
        let len = bytes.len() as u64;
        let b: Arc<[u8]> = bytes.into();
        if let Some(cas) = &self.chunks {
            match cas.put_verified(d, &b) {
                Ok(()) => self.note_on_disk(d, len),
                // A full disk costs the cache, not the read.
                Err(e) => log::warn!("cannot keep chunk {d} on disk: {e}"),
            }
        }
        if len <= MEM_CHUNK_MAX {
            self.keep_in_mem(d, &b);
            return Ok(Block::Mem(b));
        }
        match self.chunks.as_ref().map(|c| c.open_object(d)) {
            Some(Ok(Some(f))) => Ok(Block::Disk(Arc::new(f))),
            _ => Ok(Block::Mem(b)),
        }
    }

    /// Keeps a file whose chunks were all fetched as one host file under
    /// the file's digest (checked), so later opens can hand it to the
    /// kernel. `pieces` are the chunks in order (`None`: a run of zeros of
    /// that length).
    pub fn assemble(&self, d: &Digest, pieces: &[(u64, Option<Block>)]) -> io::Result<()> {
        let Some(cas) = &self.chunks else {
            return Ok(());
        };
        if cas.size_of(d)?.is_some() {
            return Ok(());
        }
        let mut w = cas.writer()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        for (len, block) in pieces {
            let mut off = 0u64;
            while off < *len {
                let n = ((*len - off) as usize).min(buf.len());
                match block {
                    Some(b) => {
                        if b.read_at(&mut buf[..n], off)? != n {
                            return Err(layer_error(libc::EIO, format!("a chunk of {d} is short")));
                        }
                    }
                    None => buf[..n].fill(0),
                }
                std::io::Write::write_all(&mut w, &buf[..n])?;
                off += n as u64;
            }
            total += len;
        }
        w.commit(*d, false)?;
        self.note_on_disk(d, total);
        Ok(())
    }

    fn keep_in_mem(&self, d: &Digest, b: &Arc<[u8]>) {
        let mut m = self.mem.lock();
        if m.limit == 0 || m.lru.contains(d) {
            return;
        }
        m.bytes += b.len() as u64;
        m.lru.put(*d, b.clone());
        while m.bytes > m.limit {
            match m.lru.pop_lru() {
                Some((_, old)) => m.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Notes a new object in the disk cache and evicts the least recently
    /// used ones past the budget.
    fn note_on_disk(&self, d: &Digest, len: u64) {
        self.list_disk();
        let mut victims = Vec::new();
        {
            let mut disk = self.disk.lock();
            disk.verified.insert(*d);
            if disk.lru.put(*d, len).is_none() {
                disk.bytes += len;
            }
            while disk.bytes > disk.limit && disk.lru.len() > 1 {
                match disk.lru.pop_lru() {
                    Some((old, size)) => {
                        disk.bytes -= size;
                        disk.verified.remove(&old);
                        victims.push(old);
                    }
                    None => break,
                }
            }
        }
        if let Some(cas) = &self.chunks {
            for v in victims {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                let _ = cas.remove(&v);
            }
        }
    }

    /// Adds what earlier processes left in the disk cache to its
    /// bookkeeping, once, as less recently used than what this process
    /// used.
    fn list_disk(&self) {
        if self.disk.lock().listed {
            return;
        }
        let listed = match self.chunks.as_ref().map(|c| c.list()) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                log::warn!("cannot list the disk cache (it may grow past its budget): {e}");
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut disk = self.disk.lock();
        if disk.listed {
            return;
        }
        let mine = std::mem::replace(&mut disk.lru, LruCache::unbounded());
        disk.bytes = 0;
        for (d, size) in listed {
            if !mine.contains(&d) {
                disk.lru.put(d, size);
                disk.bytes += size;
            }
        }
        // Least recently used first, so the last put is the most recent.
        for (d, size) in mine.iter().rev() {
            disk.lru.put(*d, *size);
            disk.bytes += size;
        }
        disk.listed = true;
    }

    /// Bytes in memory and on disk (cache part).
    pub fn usage(&self) -> (u64, u64) {
        self.list_disk();
        (self.mem.lock().bytes, self.disk.lock().bytes)
    }

    /// The store of whole files, if any.
    pub fn files(&self) -> Option<&Arc<Cas>> {
        self.files.as_ref()
    }
}
