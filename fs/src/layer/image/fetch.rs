//! Fetching an image layer's chunks: claims on the block cache, runs of
//! chunks close together in the blob fetched with one request each, and
//! reading ahead in blob order (what a read waits for, and what the fetch
//! pool does after it).

use std::io::{self, Read};
use std::time::Instant;

use super::Inner;
use crate::cache::{Block, Claim, Fetching};
use crate::error::layer_error;
use crate::image::blob::{range_len, unzstd_exact};
use crate::image::toc::{Chunk, Source};

/// The most compressed bytes one request fetches for chunks that follow
/// each other (more goes in further requests).
pub(super) const MAX_REQUEST: u64 = 4 << 20;

/// The largest gap (tar headers between files' frames) a request fetches
/// and throws away to join two chunks.
pub(super) const MAX_GAP: u64 = 16 << 10;

/// How far past what a read asked for its own request goes in the blob
/// (what the read waits for: little, on a slow link every KiB counts).
pub(super) const READ_AHEAD_WAITED: u64 = 32 << 10;

/// The size of one background read-ahead request in the blob (a larger
/// window goes in several).
pub(super) const READ_AHEAD: u64 = 1 << 20;

/// The window after a read that missed out of the blob order (the next
/// files of its directory, mostly, which a start often opens next). Of a
/// Python start through a 20 ms, 100 Mbit/s link, untraced
/// (`benches/lazy.sh`): 1 MiB fetched 36.9 MB in 4.4 s, 512 KiB 31 MB in
/// 4.3 s, 256 KiB 25.6 MB in 4.3 s, 128 KiB 20.9 MB in 5.2 s, 64 KiB 19.4
/// MB in 5.8 s.
pub(super) const READ_AHEAD_FIRST: u64 = 256 << 10;

/// The largest read-ahead window, for a layer read in blob order.
pub(super) const READ_AHEAD_MAX: u64 = 1 << 20;

/// Where reading ahead in a layer's blob stands.
#[derive(Debug, Default)]
pub(super) struct ReadAheadState {
    /// Where the read that set the window started.
    start: u64,
    /// The end of the window asked for (0: none yet).
    next: u64,
    window: u64,
}

impl Inner {
    /// Reads ahead after a read of blob bytes `[start, end)`, as the
    /// kernel does for a file: a read that follows the last window (a
    /// layer read in its blob order, as `rcfs convert --trace` writes one
    /// for a start) doubles the window, up to [`READ_AHEAD_MAX`]; any other
    /// read that missed starts over at [`READ_AHEAD_FIRST`]. A hit in the second
    /// half of the window starts the next one before it is needed. Windows
    /// go to the fetch pool in pieces of [`READ_AHEAD`], several requests
    /// in flight.
    pub(super) fn after_read(&self, start: u64, end: u64, missed: bool) {
        let (from, len) = {
            let mut ra = self.ra.lock();
            let sequential = ra.next > 0
                && start.saturating_add(MAX_GAP) >= ra.start
                && start <= ra.next.saturating_add(MAX_GAP);
            if missed {
                ra.window = if sequential {
                    (ra.window * 2).min(READ_AHEAD_MAX)
                } else {
                    READ_AHEAD_FIRST
                };
                let from = if sequential { ra.next.max(end) } else { end };
                ra.start = start;
                ra.next = from.saturating_add(ra.window);
                (from, ra.window)
            } else if sequential && end.saturating_add(ra.window / 2) >= ra.next {
                ra.window = (ra.window * 2).min(READ_AHEAD_MAX);
                let from = ra.next;
                ra.start = start;
                ra.next = from.saturating_add(ra.window);
                (from, ra.window)
            } else {
                return;
            }
        };
        let mut at = from;
        let to = from.saturating_add(len);
        while at < to {
            let piece = READ_AHEAD.min(to - at);
            let weak = self.me.clone();
            self.cache.pool.urgent(Box::new(move || {
                if let Some(l) = weak.upgrade() {
                    l.read_ahead_from(at, piece);
                }
            }));
            at += piece;
        }
    }

    /// Makes sure every chunk of `file` in `[start, end)` is cached;
    /// returns their blocks (`None` for runs of zeros), in order. Missing
    /// chunks close to each other in the blob are fetched with one request,
    /// which goes on past the last one into the chunks that follow in the
    /// blob (of other files) while they are missing, up to [`READ_AHEAD`]
    /// bytes (`ahead`): a layer written in the order a program reads it
    /// (`rcfs convert --trace`) then serves a start with few requests.
    pub(super) fn fetch(
        &self,
        file: u32,
        start: u64,
        end: u64,
        ahead: bool,
    ) -> io::Result<Vec<(Chunk, Option<Block>)>> {
        self.fetch_inner(file, start, end, ahead, true)
    }

    fn fetch_inner(
        &self,
        file: u32,
        start: u64,
        end: u64,
        ahead: bool,
        retry: bool,
    ) -> io::Result<Vec<(Chunk, Option<Block>)>> {
        let f = self.tree.file(file)?;
        let first = f.chunks.partition_point(|c| c.offset + c.len <= start);
        let mut out: Vec<(Chunk, Option<Block>)> = Vec::new();
        let mut waits = Vec::new();
        let mut run: Vec<RunItem<'_>> = Vec::new();
        for c in f.chunks.iter_from(first).take_while(|c| c.offset < end) {
            let c = &c;
            let i = out.len();
            out.push((c.clone(), None));
            let Source::Blob { start: s, end: e } = c.source else {
                if c.source == Source::Stored {
                    match self.cache.get(&c.digest, c.len)? {
                        Some(b) => out[i].1 = Some(b),
                        None => return Err(self.missing(file)),
                    }
                }
                continue;
            };
            match self.cache.claim(&c.digest, c.len)? {
                Claim::Have(b) => out[i].1 = Some(b),
                Claim::Wait(p) => waits.push((i, p)),
                Claim::Mine(fetching) => {
                    if !run.is_empty() && !Self::joins(&run, s, e) {
                        self.fetch_run(std::mem::take(&mut run), &mut out)?;
                    }
                    run.push(RunItem::new(Some(i), file, c, fetching));
                }
            }
        }
        if !run.is_empty() {
            if ahead {
                self.extend(&mut run, READ_AHEAD_WAITED);
                // More comes in the background (see `after_read`).
                let (start, end) = (run[0].start, run[run.len() - 1].end);
                self.fetch_run(run, &mut out)?;
                self.after_read(start, end, true);
            } else {
                self.fetch_run(run, &mut out)?;
            }
        }
        // However many chunks others fetch for it, a read waits for them
        // at most this long (each fetch has its own deadline too).
        // (Set at the first wait: no clock read for a read that waits for
        // nobody.)
        let mut deadline = None;
        for (i, p) in waits {
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.cache.fetch_wait());
            out[i].1 = Some(match p.wait(deadline) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let e = crate::image::registry::timed_out(format!(
                        "file '{}': {e} (a read waits {}s at most)",
                        self.name_of(file),
                        self.cache.fetch_wait().as_secs_f32()
                    ));
                    log::error!("layer {}: {e}", self.id);
                    self.cache.stats.note_error(&e);
                    return Err(e);
                }
                // The fetch this read joined failed (a read ahead or the
                // background one, perhaps): try once itself.
                Err(e) if retry => {
                    let c = &out[i].0;
                    log::info!("retrying a chunk of '{}' after: {e}", self.name_of(file));
                    let again = self.fetch_inner(file, c.offset, c.offset + c.len, false, false)?;
                    again
                        .into_iter()
                        .next()
                        .and_then(|(_, b)| b)
                        .ok_or_else(|| self.missing(file))?
                }
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// Whether a chunk at `[s, e)` of the blob can join `run` in one
    /// request: it starts at most [`MAX_GAP`] bytes after the run ends, and
    /// the request stays under [`MAX_REQUEST`] bytes.
    fn joins(run: &[RunItem<'_>], s: u64, e: u64) -> bool {
        let (first, last) = (run[0].start, run[run.len() - 1].end);
        s >= last && s - last <= MAX_GAP && e.saturating_sub(first) <= MAX_REQUEST
    }

    /// Adds to `run` the missing chunks that follow it in the blob, up to
    /// `limit` bytes past its end.
    fn extend<'a>(&'a self, run: &mut Vec<RunItem<'a>>, limit: u64) {
        let last_end = run[run.len() - 1].end;
        let from = self.tree.order_from(last_end);
        let limit = last_end.saturating_add(limit);
        for i in from..self.tree.order_len() {
            let (s, file, chunk) = self.tree.order(i);
            let Some(c) = self.tree.order_chunk(s, file, chunk) else {
                continue;
            };
            let Source::Blob { end: e, .. } = c.source else {
                continue;
            };
            let c = &c;
            if e > limit || !Self::joins(run, s, e) {
                break;
            }
            match self.cache.claim(&c.digest, c.len) {
                Ok(Claim::Mine(fetching)) => run.push(RunItem::new(None, file, c, fetching)),
                // Already here or on its way: read ahead no further.
                _ => break,
            }
        }
    }

    /// Reads ahead in the blob from offset `from`: the missing chunks there
    /// (skipping those already cached at the start), up to `limit` bytes,
    /// with one request. Run by the fetch pool after a read that missed, so
    /// that the read waits only for its own bytes.
    pub(super) fn read_ahead_from(&self, from: u64, limit: u64) {
        let first = self.tree.order_from(from);
        let mut run: Vec<RunItem<'_>> = Vec::new();
        for i in first..self.tree.order_len() {
            let (s, file, chunk) = self.tree.order(i);
            let Some(c) = self.tree.order_chunk(s, file, chunk) else {
                continue;
            };
            let Source::Blob { end: e, .. } = c.source else {
                continue;
            };
            let c = &c;
            if e > from.saturating_add(limit) {
                break;
            }
            if !run.is_empty() && !Self::joins(&run, s, e) {
                self.fetch_ahead(std::mem::take(&mut run));
            }
            // Chunks already here or on their way are skipped.
            if let Ok(Claim::Mine(fetching)) = self.cache.claim(&c.digest, c.len) {
                run.push(RunItem::new(None, file, c, fetching));
            }
        }
        if !run.is_empty() {
            self.fetch_ahead(run);
        }
    }

    fn fetch_ahead(&self, run: Vec<RunItem<'_>>) {
        if let Err(e) = self.fetch_run(run, &mut []) {
            log::debug!("layer {}: read-ahead: {e}", self.id);
        }
    }

    pub(super) fn missing(&self, file: u32) -> io::Error {
        layer_error(
            libc::EIO,
            format!(
                "layer {}, file '{}': its data is missing from the store; pull the image again",
                self.id,
                self.name_of(file)
            ),
        )
    }

    /// Fetches the chunks of `run` with one request (skipping the bytes
    /// between them) and fills in `out`.
    fn fetch_run(
        &self,
        run: Vec<RunItem<'_>>,
        out: &mut [(Chunk, Option<Block>)],
    ) -> io::Result<()> {
        let what = |file: u32| format!("layer {}, file '{}'", self.id, self.name_of(file));
        let Some(src) = &self.source else {
            return Err(self.missing(run[0].file));
        };
        let (start, end) = (run[0].start, run[run.len() - 1].end);
        let t0 = Instant::now();
        let stats = &self.cache.stats;
        let mut body = match src.open_range(start, end) {
            Ok(b) => b,
            Err(e) => {
                stats.note_error(&e);
                let e = layer_error(libc::EIO, format!("{}: {e}", what(run[0].file)));
                log::error!("{e}");
                return Err(e);
            }
        };
        let mut at = start;
        let mut result = Ok(());
        for item in run {
            let RunItem {
                out: slot,
                file,
                chunk: c,
                start: s,
                end: e,
                fetching,
            } = item;
            // Once the body failed, the rest of the run fails with it (the
            // waiters are told; a later read tries again).
            if result.is_err() {
                drop(fetching);
                continue;
            }
            let r =
                io::copy(&mut body.by_ref().take(s - at), &mut io::sink()).and_then(|skipped| {
                    at += skipped;
                    // Both sizes were checked against the limits when the
                    // table of contents was read; checked again here, where
                    // they become an allocation.
                    let mut frame = Vec::with_capacity(range_len(s, e, &what(file))?);
                    let n = body.by_ref().take(e - s).read_to_end(&mut frame)?;
                    at += n as u64;
                    if at != e {
                        return Err(layer_error(
                            libc::EIO,
                            format!(
                                "{}: the blob ended after {} of {} bytes",
                                what(file),
                                at - start,
                                end - start
                            ),
                        ));
                    }
                    unzstd_exact(
                        &frame,
                        c.len,
                        &format_args!("{}, chunk at {}", what(file), c.offset),
                    )
                });
            if let Err(e) = &r {
                stats.note_error(e);
            }
            match fetching.done(r) {
                Ok(block) => {
                    if let Some(i) = slot {
                        out[i].1 = Some(block);
                    }
                }
                Err(e) => {
                    log::error!("{e}");
                    // A chunk read ahead failing costs nobody a read.
                    if slot.is_some() {
                        result = Err(e);
                    } else {
                        result = Ok(());
                        break;
                    }
                }
            }
        }
        // Its end, so the connection goes back to the pool (an HTTP client
        // reuses a connection only after its body was read); never past it:
        // a registry's body ends where the range does (`registry::Exact`),
        // and any other source's is not read further.
        if result.is_ok() && at == end {
            let _ = body.read(&mut [0u8; 1]);
        }
        stats.note_request(at - start, t0.elapsed());
        log::trace!(
            "layer {}: fetched {start}..{end} ({} bytes, {} for a read) in {:?}",
            self.id,
            end - start,
            if out.is_empty() { "not" } else { "" },
            t0.elapsed()
        );
        result
    }
}

impl<'a> RunItem<'a> {
    /// Chunk `c` (of the blob) of `file`, claimed.
    fn new(out: Option<usize>, file: u32, c: &Chunk, fetching: Fetching<'a>) -> RunItem<'a> {
        let Source::Blob { start, end } = c.source else {
            unreachable!("only chunks in the blob are fetched")
        };
        RunItem {
            out,
            file,
            chunk: c.clone(),
            start,
            end,
            fetching,
        }
    }
}

/// A chunk claimed for one request: where its block goes in the caller's
/// list (`None` for chunks read ahead), and the duty to fetch it.
struct RunItem<'a> {
    out: Option<usize>,
    file: u32,
    chunk: Chunk,
    start: u64,
    end: u64,
    fetching: Fetching<'a>,
}
