//! [`StreamLayer`]: an image layer whose entries are still arriving.
//!
//! A tar layer (gzip, zstd or plain) has no table of contents: what it holds
//! is known only as its stream goes by. By default nothing is pushed and
//! every call waits for the finished layer, which comes once the layer's
//! digest was checked (see [`crate::image::live`]). When the user asked
//! for unverified streaming, the indexer hands each entry to the layer's
//! [`Stream`] once the entry's data is in the store, so a file is readable
//! as soon as the stream has passed it. A question about a path the stream has not reached yet waits until
//! it has (the entry arrives), or until the stream ends (there is none);
//! a directory listing waits for the end, as any later entry may belong to
//! it. Once the layer is complete (pulled and recorded, or a layer that
//! needed no streaming) every call goes to that finished layer.
//!
//! Before the end, answers come from a snapshot: an [`ImageLayer`] over the
//! entries seen so far, rebuilt when a question needs a newer entry. An
//! entry stays as it arrived, with two exceptions a tar allows and the
//! snapshot follows: a path listed again later (the later entry wins, as
//! when a tar is unpacked), and a file's link count, which grows as later
//! hard links to it arrive.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{Attr, EntryVisitor, FsStats, ImageLayer, Layer, LowerFile};
use crate::cache::BlockCache;
use crate::error::layer_error;
use crate::image::toc::{normalize, DataIn, Toc, TocEntry, TocJson};
use crate::lock::{Condvar, Mutex, Rank};

/// The feeding side of a streaming layer: entries as they arrive, then the
/// finished layer or why there is none.
#[derive(Debug)]
pub struct Stream {
    id: String,
    cache: Arc<BlockCache>,
    st: Mutex<State>,
    cond: Condvar,
    /// The finished layer: every call goes there once it is set.
    done: OnceLock<Arc<dyn Layer>>,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<TocEntry>,
    /// Normalized path (no trailing `/`) → index in `entries`, with
    /// whether it is a directory.
    by_path: HashMap<Box<[u8]>, (usize, bool)>,
    /// The newest snapshot, how many entries it covers, and `replaced`
    /// when it was made.
    snap: Option<(usize, u64, Arc<ImageLayer>)>,
    /// Bumped when an entry is replaced: snapshots made before are stale.
    replaced: u64,
    /// The stream ended without a layer: why.
    failed: Option<String>,
}

impl Stream {
    /// The stream of layer `id`, whose files land in `cache`'s store.
    pub fn new(id: String, cache: Arc<BlockCache>) -> Arc<Stream> {
        Arc::new(Stream {
            id,
            cache,
            st: Mutex::new(Rank::Stream, State::default()),
            cond: Condvar::default(),
            done: OnceLock::new(),
        })
    }

    /// The layer that answers from this stream.
    pub fn layer(self: &Arc<Self>) -> StreamLayer {
        StreamLayer { s: self.clone() }
    }

    /// The next entry, its data already stored.
    pub fn push(&self, e: &TocEntry) {
        let Ok(comps) = normalize(&e.name) else {
            // The indexer refuses such names before they get here.
            return;
        };
        let key: Box<[u8]> = comps.join("/").into_bytes().into();
        let is_dir = e.kind == "dir";
        let mut st = self.st.lock();
        match st.by_path.get(&key).copied() {
            Some((i, _)) => {
                st.entries[i] = e.clone();
                st.replaced += 1;
                st.by_path.insert(key, (i, is_dir));
            }
            None => {
                let i = st.entries.len();
                st.entries.push(e.clone());
                st.by_path.insert(key, (i, is_dir));
            }
        }
        drop(st);
        self.cond.notify_all();
    }

    /// The stream ended: with the finished layer, or with why not.
    pub fn finish(&self, result: Result<Arc<dyn Layer>, String>) {
        let mut st = self.st.lock();
        match result {
            Ok(l) => {
                let _ = self.done.set(l);
                // Snapshots are not needed any more.
                st.snap = None;
                st.entries = Vec::new();
                st.by_path = HashMap::new();
            }
            Err(why) => {
                if self.done.get().is_none() && st.failed.is_none() {
                    st.failed = Some(why);
                }
            }
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Whether the stream ended (with a layer or not).
    pub fn ended(&self) -> bool {
        self.done.get().is_some() || self.st.lock().failed.is_some()
    }

    fn failure(&self, why: &str) -> io::Error {
        layer_error(
            libc::EIO,
            format!("layer {} could not be pulled: {why}", self.id),
        )
    }

    /// Whether the stream has told all it will about `path`: the entry
    /// arrived, or an ancestor arrived as something that holds nothing.
    fn settled(st: &State, path: &[u8]) -> bool {
        if path.is_empty() || st.by_path.contains_key(path) {
            return true;
        }
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&b| b == b'/') {
            end += i;
            if let Some(&(_, false)) = st.by_path.get(&path[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }

    /// Waits until every path of `paths` is settled, or the stream ended.
    fn wait_for(&self, paths: &[&[u8]]) -> io::Result<()> {
        if self.done.get().is_some() {
            return Ok(());
        }
        let mut st = self.st.lock();
        loop {
            if self.done.get().is_some() {
                return Ok(());
            }
            // What arrived before a failure stays.
            if paths.iter().all(|p| Self::settled(&st, p)) {
                return Ok(());
            }
            if let Some(why) = &st.failed {
                return Err(self.failure(why));
            }
            self.cond.wait(&mut st);
        }
    }

    /// Waits for the end; the finished layer.
    fn wait_done(&self) -> io::Result<&Arc<dyn Layer>> {
        if let Some(l) = self.done.get() {
            return Ok(l);
        }
        let mut st = self.st.lock();
        loop {
            if let Some(l) = self.done.get() {
                return Ok(l);
            }
            if let Some(why) = &st.failed {
                return Err(self.failure(why));
            }
            self.cond.wait(&mut st);
        }
    }

    /// What answers about `path`, once the stream has settled it: the
    /// finished layer, or a snapshot that holds the path's entry.
    fn view(&self, path: &Path) -> io::Result<Arc<dyn Layer>> {
        let key = path.as_os_str().as_encoded_bytes();
        self.wait_for(&[key])?;
        if let Some(l) = self.done.get() {
            return Ok(l.clone());
        }
        let (entries, covered, generation) = {
            let st = self.st.lock();
            let need = st.by_path.get(key).map_or(0, |&(i, _)| i + 1);
            if let Some((n, g, snap)) = &st.snap {
                if *n >= need && *g == st.replaced {
                    return Ok(snap.clone());
                }
            }
            (st.entries.clone(), st.entries.len(), st.replaced)
        };
        // Built outside the lock: the stream goes on meanwhile.
        let json = TocJson {
            version: 1,
            entries,
            tar_split_digest: None,
        };
        let toc = Toc::parse(&json, DataIn::Store)
            .map_err(|e| layer_error(libc::EIO, format!("layer {}: {e}", self.id)))?;
        let snap = Arc::new(ImageLayer::new(
            self.id.clone(),
            toc,
            None,
            self.cache.clone(),
            false,
        )?);
        let mut st = self.st.lock();
        if generation == st.replaced && st.snap.as_ref().is_none_or(|(n, _, _)| *n < covered) {
            st.snap = Some((covered, generation, snap.clone()));
        }
        Ok(snap)
    }
}

/// A layer answering from a [`Stream`] (see the module doc).
#[derive(Debug, Clone)]
pub struct StreamLayer {
    s: Arc<Stream>,
}

impl Layer for StreamLayer {
    fn id(&self) -> &str {
        &self.s.id
    }

    fn stat(&self, path: &Path) -> io::Result<Attr> {
        self.s.view(path)?.stat(path)
    }

    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>> {
        self.s.wait_done()?.read_dir(path, each)
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        self.s.view(path)?.readlink(path)
    }

    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.s.view(path)?.list_xattrs(path)
    }

    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        self.s.view(path)?.get_xattr(path, name)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        self.s.view(path)?.open(path)
    }

    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        // A hint never waits.
        match self.s.done.get() {
            Some(l) => l.will_need(path, len),
            None => Ok(()),
        }
    }

    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        self.s.wait_done()?.links_of(file_id)
    }

    fn statfs(&self) -> io::Result<FsStats> {
        self.s.view(Path::new(""))?.statfs()
    }

    fn settle(&self, paths: &[PathBuf]) -> io::Result<()> {
        let keys: Vec<&[u8]> = paths
            .iter()
            .map(|p| p.as_os_str().as_encoded_bytes())
            .collect();
        self.s.wait_for(&keys)
    }

    fn complete(&self) -> bool {
        self.s.done.get().is_some()
    }

    fn wait_complete(&self) -> io::Result<()> {
        self.s.wait_done().map(|_| ())
    }
}
