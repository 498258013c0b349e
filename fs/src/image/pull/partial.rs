//! A full pull of a zstd:chunked layer as podman 5 makes one (its "partial
//! pull"): the files come chunk by chunk, by range, each chunk checked
//! against the layer's TOC, and what the store already holds (chunks a
//! lazy start fetched, files of layers indexed before) is not fetched
//! again; the layer's tar-split puts the tar back together around them;
//! that tar is indexed as a streamed one is and hashed on the way. The
//! layer is recorded only if the hash is the diff_id its image's config
//! names, and under that diff_id ([`LayerKey::Diff`]): the blob digest the
//! manifest names is never hashed here, so it keys nothing.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::Descriptor;

use super::{annotation, fail, record_indexed, Progress, MAX_TOC};
use crate::image::blob::BlobSource;
use crate::image::chunked::{Rebuild, TARSPLIT_CHECKSUM_KEY, TARSPLIT_POSITION_KEY};
use crate::image::digest::Digest;
use crate::image::index::{index_layer_with, Compression, Limits};
use crate::image::open::{new_cache, CacheOptions};
use crate::image::store::{LayerRecord, Store};
use crate::image::toc::{normalize, Toc};
use crate::layer::{ImageLayer, Kind, Layer, LowerFile};

/// The most a tar-split may hold uncompressed: about 1 KiB per entry at
/// the TOC's entry limit (`toc::MAX_ENTRIES`), with room for long PAX
/// headers.
pub(super) const MAX_TAR_SPLIT_JSON: u64 = 4 << 30;

/// Where layer `desc`'s tar-split is, if its annotations say:
/// (offset, length, uncompressed length).
pub(super) fn tar_split_position(desc: &Descriptor) -> Option<&str> {
    annotation(desc, &[TARSPLIT_POSITION_KEY]).map(String::as_str)
}

/// Pulls layer `desc` whole by its chunks from `src`: `toc` is its TOC
/// (checked), `toc_split` the tar-split digest the TOC names, `position`
/// the tar-split's, `diff_id` the config's. Gives the record and the
/// compressed bytes fetched. An `InvalidData` error says
/// the layer's pieces do not make the tar the config names (or are
/// malformed); nothing was recorded then.
#[allow(clippy::too_many_arguments)]
pub(super) fn pull_by_chunks(
    store: &Store,
    src: Arc<dyn BlobSource>,
    desc: &Descriptor,
    toc: Toc,
    toc_split: Option<&str>,
    position: &str,
    diff_id: &Digest,
    progress: &dyn Progress,
) -> io::Result<(LayerRecord, u64)> {
    let d = Digest::parse(desc.digest().as_ref())?;
    let src = Arc::new(Counted::new(src));
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, format!("layer {d}: {m}"));
    let split = fetch_tar_split(&*src, desc, toc_split, position).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => invalid(e.to_string()),
        _ => e,
    })?;
    let cache = new_cache(store, &CacheOptions::default());
    let layer = ImageLayer::new(d.to_string(), toc, Some(src.clone()), cache, false)?;
    layer.fetch_all();
    let open = |name: &[u8], size: u64| -> io::Result<Box<dyn Read + '_>> {
        let name = &go_string(name);
        let path: PathBuf = normalize(name)
            .map_err(|e| invalid(e.to_string()))?
            .join("/")
            .into();
        let not = |why: &str| invalid(format!("the tar-split's '{name}' ({size} bytes) {why}"));
        let attr = layer.stat(&path).map_err(|_| not("is not in the TOC"))?;
        if attr.kind != Kind::File || attr.size != size {
            return Err(not("is not a regular file of that size in the TOC"));
        }
        Ok(Box::new(FileReader {
            f: layer.open(&path)?,
            at: 0,
        }))
    };
    let lines =
        BufReader::new(zstd::stream::read::Decoder::new(&split[..])?.take(MAX_TAR_SPLIT_JSON));
    // A tar-split may name one file's data many times: the tar it makes
    // may grow as much as a compressed stream of the blob's size could.
    let l = Limits::from_env();
    let no_limit = |n: u64| if n == 0 { u64::MAX } else { n };
    let by_ratio = match l.max_ratio {
        0 => u64::MAX,
        r => desc.size().saturating_mul(r).max(l.ratio_free),
    };
    let most = no_limit(l.max_bytes).min(by_ratio);
    // What the indexer makes of a read error loses its kind: whether the
    // pieces were at fault is noted here.
    let pieces_bad = Cell::new(false);
    let tar = Bounded {
        r: Rebuild::new(lines, Box::new(open)),
        pieces_bad: &pieces_bad,
        left: most,
        what: format!(
            "its tar-split makes a tar of more than {most} bytes (at most {} per byte \
             of its blob; RCFS_LAYER_MAX_BYTES, RCFS_LAYER_MAX_RATIO)",
            l.max_ratio
        ),
    };
    let ix = index_layer_with(
        tar,
        Compression::None,
        &store.files,
        &mut |_| progress.layer_bytes(&d, src.bytes()),
        &mut |e| progress.entry(&d, e),
    )
    .map_err(
        |e| match pieces_bad.get() || e.kind() == io::ErrorKind::InvalidData {
            true => invalid(e.to_string()),
            false => fail(format!("layer {d}: {e}")),
        },
    )?;
    if ix.diff_id != *diff_id {
        return Err(invalid(format!(
            "the tar its tar-split and files make has digest {}, the image config says {diff_id} \
             (its rootfs.diff_ids)",
            ix.diff_id
        )));
    }
    let indexed = record_indexed(store, &d, desc.media_type().to_string(), &ix)?;
    let rec = LayerRecord {
        size: desc.size(),
        diff_id: Some(diff_id.to_string()),
        tar_size: None,
        ..indexed
    };
    Ok((rec, src.bytes()))
}

/// The compressed tar-split of `desc`, fetched by range and checked
/// against the digest the TOC (or, failing that, the manifest) names.
pub(super) fn fetch_tar_split(
    src: &dyn BlobSource,
    desc: &Descriptor,
    toc_split: Option<&str>,
    position: &str,
) -> io::Result<Vec<u8>> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let named = annotation(desc, &[TARSPLIT_CHECKSUM_KEY]).map(String::as_str);
    let want = match (toc_split, named) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "its TOC names tar-split {a}, its manifest {b}"
            )))
        }
        (Some(w), _) | (None, Some(w)) => Digest::parse(w).map_err(|e| invalid(e.to_string()))?,
        (None, None) => return Err(invalid("nothing names its tar-split's digest".into())),
    };
    let p: Vec<u64> = position
        .split(':')
        .map(|n| n.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid(format!("bad tar-split position '{position}'")))?;
    let (offset, len) = match p[..] {
        [o, l, ..] if l > 0 && l <= MAX_TOC && o.checked_add(l).is_some_and(|e| e <= desc.size()) => (o, l),
        _ => {
            return Err(invalid(format!(
                "tar-split position '{position}' is outside what rcfs accepts (blob of {} bytes, at most {MAX_TOC} bytes)",
                desc.size()
            )))
        }
    };
    let comp = src.read_range(offset, offset + len)?;
    if Digest::of(&comp) != want {
        return Err(invalid(format!(
            "its tar-split does not have digest {want}"
        )));
    }
    Ok(comp)
}

/// A reader that fails past `left` bytes, and notes when `r` found its
/// input malformed (`InvalidData`).
struct Bounded<'a, R> {
    r: R,
    pieces_bad: &'a Cell<bool>,
    left: u64,
    what: String,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf).inspect_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                self.pieces_bad.set(true);
            }
        })?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(self.what.clone()))?;
        Ok(n)
    }
}

/// `name` as Go's `encoding/json` writes a string that is not UTF-8 (one
/// U+FFFD for each byte that is not part of a character): how the TOC of
/// a layer podman wrote spells the names its tar-split gives raw.
fn go_string(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.utf8_chunks() {
        s.push_str(c.valid());
        for _ in c.invalid() {
            s.push(char::REPLACEMENT_CHARACTER);
        }
    }
    s
}

/// A file of a layer, read from its start.
struct FileReader {
    f: Arc<dyn LowerFile>,
    at: u64,
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.f.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A blob source that counts the bytes read from it.
#[derive(Debug)]
struct Counted {
    src: Arc<dyn BlobSource>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Counted {
    fn new(src: Arc<dyn BlobSource>) -> Counted {
        Counted {
            src,
            bytes: Arc::default(),
        }
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl BlobSource for Counted {
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>> {
        struct Count<R>(R, Arc<std::sync::atomic::AtomicU64>);
        impl<R: Read> Read for Count<R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(n)
            }
        }
        let r = self.src.open_range(start, end)?;
        Ok(Box::new(Count(r, self.bytes.clone())))
    }

    fn describe(&self) -> String {
        self.src.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::go_string;

    #[test]
    fn names_that_are_not_utf8_are_spelled_as_go_spells_them() {
        assert_eq!(go_string(b"data/caf\xe9"), "data/caf\u{fffd}");
        // An incomplete character: one U+FFFD per byte, as Go (Rust's
        // lossy conversion gives one for both).
        assert_eq!(go_string(b"x\xe2\x82"), "x\u{fffd}\u{fffd}");
        assert_eq!(go_string("d\u{e9}j\u{e0}".as_bytes()), "d\u{e9}j\u{e0}");
    }
}
