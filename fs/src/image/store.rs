//! The store: everything rcfs keeps of images, under one root
//! (`$XDG_DATA_HOME/rcfs`, `~/.local/share/rcfs`, root's `/var/lib/rcfs`,
//! or `--root DIR`).
//!
//! ```text
//! ROOT/lock                    flock: shared while reading the index, exclusive to change it or gc
//! ROOT/tmp/                    objects being written (renamed into place when checked)
//! ROOT/blobs/sha256/HEX        manifests, configs, tables of contents (verified content)
//! ROOT/files/sha256/HEX        whole files of layers rcfs indexed from a tar stream
//! ROOT/cache/sha256/HEX        chunks fetched lazily (evicted past the cache budget)
//! ROOT/layers/sha256/HEX.json  what rcfs knows of layer blob HEX, hashed whole (its TOC, its format)
//! ROOT/layers/sha256/toc-TOC-BLOB.json  a zstd:chunked layer pulled lazily: TOC digest TOC
//!                              (checked), chunks from blob BLOB (named by its manifest, not checked)
//! ROOT/layers/sha256/diff-DIFF.json  a layer indexed from a tar rcfs rebuilt and hashed to DIFF
//!                              (a zstd:chunked layer pulled whole by chunks, its diff_id checked)
//! ROOT/trees/TOC-WHERE.vN      a layer's tree in binary form, built from its checked TOC
//!                              (`super::tree`): what a mount reads; rebuilt when damaged
//! ROOT/images.json             image names → manifests
//! ```
//!
//! What images share is stored once: layers by what was checked of them
//! ([`LayerKey`]), file contents and chunks by content digest. Every object is written to `tmp/` and
//! renamed into place; the index is replaced whole the same way under the
//! exclusive lock, so a reader sees the old index or the new one.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{renameat, Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::cas::{make_dir, own_dir, tmp_name, Cas};
use super::digest::Digest;
use crate::sys;

mod gc;
pub use gc::GcReport;

/// How a layer's data is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerFormat {
    /// A zstd:chunked blob: TOC from its annotations, chunks by range from
    /// the blob (in a registry, or `blobs/` if it was fetched whole).
    ZstdChunked,
    /// A tar stream rcfs indexed: a TOC it wrote, contents in `files/`.
    Indexed,
}

/// What a layer record is stored and found under: only digests rcfs
/// checked (DESIGN.md "Trust"). A digest a manifest merely names is never
/// a key on its own, or an image could claim another image's layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKey {
    /// The whole blob was hashed to this digest (indexed from its stream,
    /// or written by rcfs): any image naming it may reuse the record.
    Blob(Digest),
    /// A zstd:chunked layer pulled lazily: its TOC was checked against
    /// `toc`, the digest its manifest's annotation names; `blob` is where
    /// its chunks are fetched from, as the manifest names it (unchecked:
    /// each chunk is checked against the TOC instead). Reused only for a
    /// manifest that names the same pair.
    Toc { toc: Digest, blob: Digest },
    /// A layer whose uncompressed tar rcfs put together (a zstd:chunked
    /// layer's tar-split and its files, each checked against its TOC) and
    /// hashed to `diff`, the diff_id its image's config names; indexed
    /// from that tar. Any image whose (checked) config names `diff` may
    /// reuse it, whatever its blob: the content is what the config names.
    /// `blob` is the layer as this image's manifest names it (unchecked).
    Diff { diff: Digest, blob: Digest },
}

impl LayerKey {
    /// The layer blob's digest (as manifests name it).
    pub fn blob(&self) -> &Digest {
        match self {
            LayerKey::Blob(d) | LayerKey::Toc { blob: d, .. } | LayerKey::Diff { blob: d, .. } => d,
        }
    }

    /// The checked TOC digest of a layer pulled lazily.
    pub fn toc(&self) -> Option<&Digest> {
        match self {
            LayerKey::Toc { toc, .. } => Some(toc),
            _ => None,
        }
    }

    /// The checked diff_id of a layer rebuilt from its tar-split.
    pub fn diff(&self) -> Option<&Digest> {
        match self {
            LayerKey::Diff { diff, .. } => Some(diff),
            _ => None,
        }
    }

    /// The record's file name in `layers/sha256/`.
    fn file_name(&self) -> String {
        match self {
            LayerKey::Blob(d) => format!("{}.json", d.hex()),
            LayerKey::Toc { toc, blob } => format!("toc-{}-{}.json", toc.hex(), blob.hex()),
            LayerKey::Diff { diff, .. } => Self::diff_file_name(diff),
        }
    }

    /// The file name of the record of the layer whose checked diff_id is
    /// `diff`, whatever blob names it.
    fn diff_file_name(diff: &Digest) -> String {
        format!("diff-{}.json", diff.hex())
    }

    /// Whether file `name` of `layers/sha256/` is a layer record.
    fn is_record_name(name: &str) -> bool {
        name.strip_suffix(".json").is_some_and(|stem| {
            let hex = stem
                .strip_prefix("diff-")
                .or_else(|| {
                    stem.strip_prefix("toc-")
                        .and_then(|p| p.split_once('-').map(|(t, _)| t))
                })
                .unwrap_or(stem);
            Digest::from_hex(hex).is_some()
        })
    }
}

impl std::fmt::Display for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerKey::Blob(d) => write!(f, "{d}"),
            LayerKey::Toc { toc, blob } => write!(f, "{blob} (TOC {toc})"),
            LayerKey::Diff { diff, blob } => write!(f, "{blob} (diff_id {diff})"),
        }
    }
}

/// What the store knows of one layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob's digest (compressed, as in the manifest).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub format: LayerFormat,
    /// The TOC object in `blobs/`: zstd-compressed TOC JSON for both
    /// formats (for zstd:chunked, exactly the blob's TOC frame payload).
    pub toc: String,
    /// The TOC's uncompressed length (a cap for decompressing it).
    pub toc_len: u64,
    /// zstd:chunked: where the blob's file data ends (the TOC frame).
    #[serde(default)]
    pub data_end: u64,
    /// The uncompressed tar's digest, when rcfs hashed it and it was the
    /// config's diff_id ([`LayerKey::Diff`] records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// The uncompressed tar's size, when rcfs knows it (a zstd:chunked
    /// layer's tar-split says it); what podman is told of the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_size: Option<u64>,
    /// Regular files and their bytes, for `rcfs inspect`.
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
    /// zstd:chunked written by `rcfs convert --trace`: the blob's first
    /// bytes that hold what a start reads, fetched at once when mounted.
    #[serde(default)]
    pub start_bytes: u64,
    /// Blob ranges (start, end) of the chunks a start read, in the order
    /// it read them; fetched first when mounted. Written by `rcfs convert
    /// --trace` (from its trace), or for a lazy layer by the end of its
    /// first mount (what that mount's start read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_order: Vec<(u64, u64)>,
}

/// Where an image's blobs can be fetched again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub registry: String,
    pub repository: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One image in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// What users call it (`127.0.0.1:5000/demo:latest`, `oci:/dir:tag`).
    pub name: String,
    /// The platform manifest's digest (its bytes are in `blobs/`).
    pub manifest: String,
    pub config: String,
    /// Layer blob digests, bottom first (as in the manifest).
    pub layers: Vec<String>,
    /// For each of `layers`, the TOC digest its record is keyed by when it
    /// was pulled lazily as zstd:chunked ([`LayerKey::Toc`]); `None` (or
    /// no list, as older stores wrote): keyed by the blob digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_tocs: Vec<Option<String>>,
    /// For each of `layers`, the diff_id its record is keyed by when rcfs
    /// rebuilt its tar and checked it ([`LayerKey::Diff`]); `None` (or no
    /// list): see `layer_tocs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_diffs: Vec<Option<String>>,
    /// Where lazily served layers fetch from; `None` for local sources,
    /// whose layers are all indexed.
    pub origin: Option<Origin>,
    /// RFC 3339 time of the pull.
    pub pulled: String,
    /// Compressed bytes of all layers (as the manifest says).
    pub size: u64,
}

impl ImageRecord {
    /// `layers`, `layer_tocs` and `layer_diffs` of layers with records
    /// under `keys`.
    pub fn layers_of(keys: &[LayerKey]) -> (Vec<String>, Vec<Option<String>>, Vec<Option<String>>) {
        let layers = keys.iter().map(|k| k.blob().to_string()).collect();
        let column = |f: fn(&LayerKey) -> Option<&Digest>| match keys.iter().any(|k| f(k).is_some())
        {
            true => keys.iter().map(|k| f(k).map(|t| t.to_string())).collect(),
            false => Vec::new(),
        };
        (layers, column(LayerKey::toc), column(LayerKey::diff))
    }

    /// The keys of this image's layer records, bottom first.
    pub fn layer_keys(&self) -> io::Result<Vec<LayerKey>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let blob = Digest::parse(l)?;
                let column =
                    |c: &[Option<String>]| c.get(i).and_then(|t| t.as_deref()).map(Digest::parse);
                Ok(
                    match (column(&self.layer_tocs), column(&self.layer_diffs)) {
                        (_, Some(diff)) => LayerKey::Diff { diff: diff?, blob },
                        (Some(toc), None) => LayerKey::Toc { toc: toc?, blob },
                        (None, None) => LayerKey::Blob(blob),
                    },
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    images: Vec<ImageRecord>,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    pub root: PathBuf,
    root_fd: OwnedFd,
    tmp: OwnedFd,
    layers: OwnedFd,
    /// `trees/` (shared with the callbacks that remove a damaged tree).
    trees: Arc<OwnedFd>,
    pub blobs: Arc<Cas>,
    pub files: Arc<Cas>,
    pub cache: Arc<Cas>,
}

/// A held store lock; released when dropped.
pub struct StoreLock(#[allow(dead_code)] Flock<File>);

impl Store {
    /// The `what` (manifest, config) of `img`, the object `digest` of
    /// `blobs/`; when it is gone, an error that says to pull the image
    /// again.
    pub fn image_blob(&self, img: &ImageRecord, what: &str, digest: &str) -> io::Result<Vec<u8>> {
        self.blobs.read(&Digest::parse(digest)?)?.ok_or_else(|| {
            crate::error::layer_error(
                libc::EIO,
                format!(
                    "the {what} of {} is missing from the store: pull the image again",
                    img.name
                ),
            )
        })
    }

    /// The default root for this user: root's is /var/lib/rcfs; a user's
    /// (also as root of a user namespace, as in `podman unshare`) is under
    /// their home.
    pub fn default_root() -> PathBuf {
        if sys::real_root() {
            return PathBuf::from("/var/lib/rcfs");
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Path::new(&d).join("rcfs");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        Path::new(&home).join(".local/share/rcfs")
    }

    /// Opens (creating) the store at `root`. The store is its user's alone:
    /// its root is made 0700 (its parents with the process's umask), and a
    /// root someone else owns is refused (see [`own_dir`]).
    pub fn open(root: &Path) -> io::Result<Store> {
        let cannot = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create the store at {}: {e}", root.display()),
            )
        };
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cannot(e)),
        }
        let root_fd = sys::open_at(
            nix::fcntl::AT_FDCWD,
            root.as_os_str(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        own_dir(&root_fd, &format!("the store {}", root.display()))?;
        let tmp = make_dir(root_fd.as_fd(), "tmp")?;
        let layers_top = make_dir(root_fd.as_fd(), "layers")?;
        let layers = make_dir(layers_top.as_fd(), "sha256")?;
        let trees = Arc::new(make_dir(root_fd.as_fd(), "trees")?);
        let blobs = Arc::new(Cas::open(root_fd.as_fd(), "blobs", tmp.as_fd())?);
        let files = Arc::new(Cas::open(root_fd.as_fd(), "files", tmp.as_fd())?);
        let cache = Arc::new(Cas::open(root_fd.as_fd(), "cache", tmp.as_fd())?);
        Ok(Store {
            root: root.to_owned(),
            root_fd,
            tmp,
            layers,
            trees,
            blobs,
            files,
            cache,
        })
    }

    /// Opens (creating) the store's directory `name` (mode 0700; for what
    /// lives beside the image objects: containers, sockets).
    pub fn own_dir(&self, name: &str) -> io::Result<OwnedFd> {
        make_dir(self.root_fd.as_fd(), name)
    }

    fn lock(&self, arg: FlockArg) -> io::Result<StoreLock> {
        self.lock_file("lock", arg)
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> io::Result<StoreLock> {
        let fd = sys::open_at(
            self.root_fd.as_fd(),
            name.as_ref(),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        Flock::lock(File::from(fd), arg)
            .map(StoreLock)
            .map_err(|(_, e)| io::Error::from(e))
    }

    /// Held (shared) by every server of an image mount for its lifetime,
    /// and by every pull, convert, commit and push while it runs: `gc` does not
    /// run while one is alive, as it could remove what a mount reads, or
    /// the objects and layer records a new image is made of before that
    /// image is recorded.
    pub fn lock_in_use(&self) -> io::Result<StoreLock> {
        self.lock_file("mounts.lock", FlockArg::LockShared)
    }

    /// Shared: the index is read, objects added.
    pub fn lock_shared(&self) -> io::Result<StoreLock> {
        self.lock(FlockArg::LockShared)
    }

    /// Exclusive: the index is changed or objects removed.
    pub fn lock_exclusive(&self) -> io::Result<StoreLock> {
        self.lock(FlockArg::LockExclusive)
    }

    /// Writes `data` as `name` in dir `dir` atomically (temp, flush, rename).
    fn replace(&self, dir: &OwnedFd, name: &str, data: &[u8]) -> io::Result<()> {
        let t = tmp_name("rec");
        let fd = sys::open_at(
            self.tmp.as_fd(),
            t.as_ref(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        let mut f = File::from(fd);
        let r = f.write_all(data).and_then(|_| f.sync_all()).and_then(|_| {
            renameat(self.tmp.as_fd(), t.as_str(), dir.as_fd(), name).map_err(io::Error::from)
        });
        if r.is_err() {
            let _ = nix::unistd::unlinkat(
                self.tmp.as_fd(),
                t.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        r
    }

    fn read_small(&self, dir: &OwnedFd, name: &str) -> io::Result<Option<Vec<u8>>> {
        match sys::open_at(dir.as_fd(), name.as_ref(), libc::O_RDONLY, 0) {
            Ok(fd) => {
                let mut v = Vec::new();
                io::Read::read_to_end(&mut File::from(fd), &mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored tree `name` (see [`super::tree::file_name`]), if there is
    /// one.
    pub fn open_tree(&self, name: &str) -> io::Result<Option<File>> {
        match sys::open_at(self.trees.as_fd(), name.as_ref(), libc::O_RDONLY, 0) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores tree `name` (written whole and renamed into place; not
    /// flushed: a tree a crash left short or torn fails its checks and is
    /// built again).
    pub fn put_tree(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let t = tmp_name("tree");
        let fd = sys::open_at(
            self.tmp.as_fd(),
            t.as_ref(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        // In pages: the page cache then holds the file in small folios, and
        // a mount that maps it (to look up a few names) maps the pages it
        // reads, not the 2 MiB folios one large write would make.
        let mut f = File::from(fd);
        let r = bytes
            .chunks(4096)
            .try_for_each(|p| f.write_all(p))
            .and_then(|_| {
                renameat(self.tmp.as_fd(), t.as_str(), self.trees.as_fd(), name)
                    .map_err(io::Error::from)
            });
        if r.is_err() {
            let _ = nix::unistd::unlinkat(
                self.tmp.as_fd(),
                t.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        r
    }

    /// What removes tree `name` (once it was found damaged).
    pub fn tree_remover(&self, name: &str) -> Box<dyn Fn() + Send + Sync> {
        let (dir, name) = (self.trees.clone(), name.to_owned());
        Box::new(move || {
            let _ = nix::unistd::unlinkat(
                dir.as_fd(),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        })
    }

    /// The record under `key`, if the store has it and its TOC, and it is
    /// what the key says was checked (see [`LayerKey`]).
    pub fn layer(&self, key: &LayerKey) -> io::Result<Option<LayerRecord>> {
        let Some(rec) = self.layer_unchecked(&key.file_name())? else {
            return Ok(None);
        };
        let toc = Digest::parse(&rec.toc)?;
        if self.blobs.size_of(&toc)?.is_none() {
            return Ok(None);
        }
        let trusted = match key {
            // Whatever blob an image names: the content is the diff_id's.
            LayerKey::Diff { diff, .. } => {
                return Ok((rec.format == LayerFormat::Indexed
                    && rec.diff_id.as_deref() == Some(&*diff.to_string()))
                .then_some(rec))
            }
            _ if rec.digest != key.blob().to_string() => return Ok(None),
            LayerKey::Toc { toc: want, .. } => {
                rec.format == LayerFormat::ZstdChunked && toc == *want
            }
            // An indexed layer was hashed whole before it was recorded.
            LayerKey::Blob(_) if rec.format == LayerFormat::Indexed => true,
            // A zstd:chunked record under a blob digest is rcfs's own
            // (convert, commit), whose blob is in `blobs/`: the TOC must be
            // the one in that blob. Older versions recorded layers pulled
            // lazily here too, unchecked: those are pulled again.
            LayerKey::Blob(d) => self.blob_holds_toc(d, &rec, &toc)?,
        };
        if !trusted {
            log::warn!(
                "the store's record of layer {key} was made from a blob digest that was not checked \
                 (by an older rcfs); ignoring it, the layer is pulled again"
            );
            return Ok(None);
        }
        Ok(Some(rec))
    }

    /// Whether stored blob `d` holds the TOC `toc` of `rec` where the
    /// record says.
    fn blob_holds_toc(&self, d: &Digest, rec: &LayerRecord, toc: &Digest) -> io::Result<bool> {
        let (Some(f), Some(len)) = (self.blobs.open_object(d)?, self.blobs.size_of(toc)?) else {
            return Ok(false);
        };
        let Some(at) = rec.data_end.checked_add(8) else {
            return Ok(false);
        };
        let mut frame = vec![0u8; len as usize];
        match std::os::unix::fs::FileExt::read_exact_at(&f, &mut frame, at) {
            Ok(()) => Ok(Digest::of(&frame) == *toc),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The record in file `name` of `layers/sha256/`, as written.
    fn layer_unchecked(&self, name: &str) -> io::Result<Option<LayerRecord>> {
        let Some(bytes) = self.read_small(&self.layers, name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("layer record {name} is corrupt: {e}"),
            )
        })
    }

    /// Records `rec` under `key` (which the caller checked).
    pub fn put_layer(&self, key: &LayerKey, rec: &LayerRecord) -> io::Result<()> {
        debug_assert_eq!(rec.digest, key.blob().to_string());
        debug_assert!(key
            .diff()
            .is_none_or(|d| rec.diff_id == Some(d.to_string())));
        let bytes = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        self.replace(&self.layers, &key.file_name(), &bytes)
    }

    /// The file name of every layer record (checked or not).
    fn record_names(&self) -> io::Result<Vec<String>> {
        let dir = sys::DirFd::open(self.layers.as_fd(), ".".as_ref())?;
        Ok(dir
            .entries()?
            .into_iter()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|n| LayerKey::is_record_name(n))
            .collect())
    }

    pub fn remove_layer(&self, key: &LayerKey) -> io::Result<()> {
        self.remove_record(&key.file_name())
    }

    fn remove_record(&self, name: &str) -> io::Result<()> {
        match nix::unistd::unlinkat(
            self.layers.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn index(&self) -> io::Result<Index> {
        match self.read_small(&self.root_fd, "images.json")? {
            None => Ok(Index::default()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}/images.json is corrupt: {e}", self.root.display()),
                )
            }),
        }
    }

    /// Every image.
    pub fn images(&self) -> io::Result<Vec<ImageRecord>> {
        let _l = self.lock_shared()?;
        Ok(self.index()?.images)
    }

    /// The image called `name` (as listed), or whose manifest digest starts
    /// with `name` (12 or more hex digits).
    pub fn find(&self, name: &str) -> io::Result<Option<ImageRecord>> {
        let images = self.images()?;
        if let Some(i) = images.iter().find(|i| i.name == name) {
            return Ok(Some(i.clone()));
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<_> = images
                .iter()
                .filter(|i| i.manifest.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            if m.len() == 1 {
                return Ok(Some(m[0].clone()));
            }
        }
        Ok(None)
    }

    /// Adds `img`, replacing an image of the same name.
    pub fn add_image(&self, img: ImageRecord) -> io::Result<()> {
        let _l = self.lock_exclusive()?;
        let mut idx = self.index()?;
        idx.images.retain(|i| i.name != img.name);
        idx.images.push(img);
        self.write_index(&idx)
    }

    /// Removes the image called `name`; false when there was none.
    pub fn remove_image(&self, name: &str) -> io::Result<bool> {
        let _l = self.lock_exclusive()?;
        let mut idx = self.index()?;
        let before = idx.images.len();
        idx.images.retain(|i| i.name != name);
        if idx.images.len() == before {
            return Ok(false);
        }
        self.write_index(&idx)?;
        Ok(true)
    }

    fn write_index(&self, idx: &Index) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(idx).map_err(io::Error::other)?;
        self.replace(&self.root_fd, "images.json", &bytes)
    }
}

#[cfg(test)]
mod tests;
