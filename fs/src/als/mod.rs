//! rcfs as an Additional Layer Store (ALS): a filesystem containers/storage
//! (podman, CRI-O, buildah) looks layers up in before it pulls them.
//!
//! containers/storage, given `additionallayerstores = ["MNT:ref"]`, asks
//! for a layer at `MNT/<base64(image ref)>/<digest>/` (without `:ref`, at
//! `MNT/<digest>/`), where the digest is the layer blob's (podman 4) or,
//! for zstd:chunked layers, its TOC's (podman 5). It stats `diff`, `info`
//! and `blob` there; if all three exist it takes the layer from here and
//! does not pull it: `info` is the layer's record (JSON), `diff` the
//! layer's tree in overlay form, which it then uses as an overlay lower
//! directory as it is (through a symlink in its own storage), and `blob`
//! the compressed layer (read by `podman save` or `push`). It tells the
//! store that a layer is used by creating `use` in its directory, and no
//! longer used by removing the directory; a store that counts answers both
//! with `ENOENT`.
//!
//! A layer is served here if the store has it under a key rcfs checked, or
//! if it is zstd:chunked: its table of contents is fetched and checked at
//! the lookup of the layer's directory, and its files are fetched on first
//! read, verified, through the block cache every rcfs mount uses (so
//! layers and files are shared with `rcfs run`/`mount`). Anything else
//! (a gzip layer not in the store, a registry that cannot be reached) is
//! not found here, and podman pulls it itself.
//!
//! * [`diff`] — a layer in overlay form;
//! * [`info`] — the `info` record containers/storage reads;
//! * [`fs`] — the FUSE glue over [`Als`], which holds the namespace.

mod diff;
mod fs;
mod info;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;

pub use diff::{Diff, Entry};
pub use fs::AlsFs;

use crate::cache::BlockCache;
use crate::error::layer_error;
use crate::image::digest::Digest;
use crate::image::open::{new_cache, open_layer, CacheOptions};
use crate::image::pull::{find_lazy_image, LazyImage, Quiet};
use crate::image::registry::Registry;
use crate::image::store::{LayerKey, Store};
use crate::layer::{Attr, Kind, Time};
use crate::lock::{Mutex, Rank};
use crate::IdMap;

/// How to serve.
#[derive(Debug, Clone, Default)]
pub struct AlsOptions {
    /// Plain HTTP and unchecked TLS for every registry.
    pub insecure: bool,
    pub cache: CacheOptions,
    /// Log every operation.
    pub debug: bool,
}

/// A layer this store serves, under every name it is asked by.
#[derive(Debug)]
pub struct Served {
    /// What the store keeps it under.
    pub key: LayerKey,
    /// Its compressed blob: digest and size, as the manifest names them.
    pub blob: Digest,
    pub size: u64,
    /// The `info` record.
    pub info: Vec<u8>,
    /// Its tree in overlay form.
    pub diff: Diff,
    /// Where the blob comes from when the store lacks it.
    registry: Option<Arc<Registry>>,
    /// The whole blob, once fetched and checked (for `blob`).
    whole: Mutex<Option<Arc<File>>>,
}

/// One image podman asked for by its reference.
#[derive(Debug)]
struct Image {
    /// Its manifest and config, once found.
    found: Mutex<Option<Arc<LazyImage>>>,
    /// Recorded in the store as an image (every layer servable).
    recorded: AtomicBool,
}

/// Images and layers asked for so far.
#[derive(Debug, Default)]
struct Table {
    images: HashMap<String, Arc<Image>>,
    layers: HashMap<LayerKey, Arc<Served>>,
}

/// What an inode of the store is.
#[derive(Debug, Clone)]
pub enum Node {
    Root,
    /// `<base64(ref)>`.
    Ref(String),
    /// `[<base64(ref)>/]<digest>`; `path` is that, as podman names it.
    Layer {
        layer: Arc<Served>,
        path: String,
    },
    Info(Arc<Served>),
    Blob(Arc<Served>),
    /// An entry of a layer's `diff`, at `path` in the layer.
    Diff {
        layer: Arc<Served>,
        path: PathBuf,
        entry: Entry,
    },
}

#[derive(Debug)]
struct Slot {
    node: Node,
    parent: u64,
    name: OsString,
    /// Lookups the kernel holds (FUSE's `nlookup`).
    lookups: u64,
}

/// The inode table.
#[derive(Debug)]
struct Nodes {
    next: u64,
    slots: IdMap<Slot>,
    by_name: HashMap<(u64, OsString), u64>,
    /// Hard links of a layer: (layer, file id) → inode.
    by_file: HashMap<(usize, u64), u64>,
}

/// Inode number of the root.
pub const ROOT_INO: u64 = 1;

/// The store's state; [`AlsFs`] serves it.
#[derive(Debug)]
pub struct Als {
    store: Arc<Store>,
    opts: AlsOptions,
    cache: Arc<BlockCache>,
    /// Attributes of the dirs and files this store makes up.
    started: Time,
    uid: u32,
    gid: u32,
    /// The xattr opaque dirs answer: `trusted.overlay.opaque` when served
    /// by real root (for root's overlay), else `user.overlay.opaque` (a
    /// user's overlay, `userxattr`, as in `podman unshare`).
    opaque_xattr: &'static str,
    table: Mutex<Table>,
    nodes: Mutex<Nodes>,
    /// podman's uses of each layer directory (`use` made, minus rmdirs).
    uses: Mutex<HashMap<String, i64>>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// The image reference a first-level name encodes (standard base64, as
/// containers/storage writes it), if it is one.
pub fn decode_ref(name: &OsStr) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(name.as_bytes())
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    (!s.is_empty() && s.len() <= 4096 && !s.chars().any(char::is_control)).then_some(s)
}

/// The name of the directory of image `reference`.
pub fn encode_ref(reference: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(reference)
}

impl Als {
    pub fn new(store: Store, opts: AlsOptions) -> Als {
        let cache = new_cache(&store, &opts.cache);
        let mut slots = IdMap::default();
        slots.insert(
            ROOT_INO,
            Slot {
                node: Node::Root,
                parent: ROOT_INO,
                name: OsString::new(),
                lookups: 1,
            },
        );
        Als {
            store: Arc::new(store),
            opts,
            cache,
            started: Time::from_system_time(SystemTime::now()),
            uid: nix::unistd::geteuid().as_raw(),
            opaque_xattr: if crate::sys::real_root() {
                crate::whiteout::OPAQUE_XATTRS[0]
            } else {
                crate::whiteout::OPAQUE_XATTRS[1]
            },
            gid: nix::unistd::getegid().as_raw(),
            table: Mutex::new(Rank::AlsLayers, Table::default()),
            nodes: Mutex::new(
                Rank::AlsNodes,
                Nodes {
                    next: ROOT_INO + 1,
                    slots,
                    by_name: HashMap::new(),
                    by_file: HashMap::new(),
                },
            ),
            uses: Mutex::new(Rank::AlsUses, HashMap::new()),
        }
    }

    /// The attributes of a directory or file this store makes up.
    fn made_up(&self, kind: Kind, perm: u16, size: u64) -> Attr {
        Attr {
            size,
            blocks: size.div_ceil(512),
            file_id: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            uid: self.uid,
            gid: self.gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            rdev: 0,
            perm,
            kind,
        }
    }

    /// The attributes of `node` (its inode number aside).
    pub(crate) fn attr_of(&self, node: &Node) -> Attr {
        match node {
            Node::Root | Node::Ref(_) | Node::Layer { .. } => self.made_up(Kind::Dir, 0o755, 0),
            Node::Info(l) => self.made_up(Kind::File, 0o444, l.info.len() as u64),
            Node::Blob(l) => self.made_up(Kind::File, 0o444, l.size),
            Node::Diff { entry, .. } => entry.attr(),
        }
    }

    /// The node of inode `ino`.
    pub(crate) fn node(&self, ino: u64) -> io::Result<Node> {
        self.nodes
            .lock()
            .slots
            .get(&ino)
            .map(|s| s.node.clone())
            .ok_or_else(enoent)
    }

    /// Gives `node`, named `name` in `parent`, an inode (the one it has if
    /// it was looked up before) and counts the kernel's lookup.
    fn remember(&self, parent: u64, name: &OsStr, node: Node) -> u64 {
        let mut n = self.nodes.lock();
        let file = match &node {
            Node::Diff {
                layer,
                entry: Entry::Real(a),
                ..
            } if a.kind != Kind::Dir && a.nlink > 1 => {
                Some((Arc::as_ptr(layer) as *const () as usize, a.file_id))
            }
            _ => None,
        };
        let known = n
            .by_name
            .get(&(parent, name.to_owned()))
            .copied()
            .or_else(|| file.and_then(|f| n.by_file.get(&f).copied()));
        if let Some(ino) = known {
            if let Some(s) = n.slots.get_mut(&ino) {
                s.lookups += 1;
                return ino;
            }
        }
        let ino = n.next;
        n.next += 1;
        n.slots.insert(
            ino,
            Slot {
                node,
                parent,
                name: name.to_owned(),
                lookups: 1,
            },
        );
        n.by_name.insert((parent, name.to_owned()), ino);
        if let Some(f) = file {
            n.by_file.insert(f, ino);
        }
        ino
    }

    /// The kernel drops `count` lookups of `ino`; true if that was the
    /// last (the inode is gone).
    pub(crate) fn forget(&self, ino: u64, count: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut n = self.nodes.lock();
        let Some(s) = n.slots.get_mut(&ino) else {
            return false;
        };
        s.lookups = s.lookups.saturating_sub(count);
        if s.lookups > 0 {
            return false;
        }
        let s = n.slots.remove(&ino).expect("just seen");
        if n.by_name.get(&(s.parent, s.name.clone())) == Some(&ino) {
            n.by_name.remove(&(s.parent, s.name));
        }
        n.by_file.retain(|_, v| *v != ino);
        true
    }

    /// Whether `ino` is a directory of a layer's `diff`.
    pub(crate) fn in_diff(&self, ino: u64) -> bool {
        matches!(self.node(ino), Ok(Node::Diff { .. }))
    }

    /// The inode this name's entries have in a listing: theirs if the
    /// kernel knows them, else a stand-in (listings carry no attributes).
    pub(crate) fn listed_ino(&self, parent: u64, name: &OsStr) -> u64 {
        self.nodes
            .lock()
            .by_name
            .get(&(parent, name.to_owned()))
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// Looks `name` up in directory `parent`: gives its inode and node.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<(u64, Node)> {
        let node = match self.node(parent)? {
            Node::Root => match Digest::parse(&name.to_string_lossy()) {
                Ok(d) if name.to_str().is_some() => self.layer_without_ref(&d, name)?,
                _ => Node::Ref(decode_ref(name).ok_or_else(enoent)?),
            },
            Node::Ref(reference) => {
                let d = name
                    .to_str()
                    .and_then(|s| Digest::parse(s).ok())
                    .ok_or_else(enoent)?;
                let layer = self.layer(&reference, &d)?.ok_or_else(enoent)?;
                Node::Layer {
                    layer,
                    path: format!("{}/{d}", encode_ref(&reference)),
                }
            }
            Node::Layer { layer, .. } => match name.as_bytes() {
                b"diff" => Node::Diff {
                    entry: Entry::Real(layer.diff.layer().stat("".as_ref())?),
                    layer,
                    path: PathBuf::new(),
                },
                b"info" => Node::Info(layer),
                b"blob" => Node::Blob(layer),
                _ => return Err(enoent()),
            },
            Node::Diff {
                layer,
                path,
                entry: Entry::Real(a),
            } if a.kind == Kind::Dir => {
                let entry = layer.diff.lookup(&path, name)?;
                Node::Diff {
                    path: crate::layer::join(&path, name),
                    layer,
                    entry,
                }
            }
            Node::Diff { .. } | Node::Info(_) | Node::Blob(_) => {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        };
        let ino = self.remember(parent, name, node.clone());
        Ok((ino, node))
    }

    /// `<digest>` at the top (a store configured without `:ref`): only a
    /// layer served already, by a digest rcfs checked: its TOC's, or its
    /// blob's if the blob was hashed. A lazy layer's blob digest is only
    /// what its manifest says: another image could name the same one.
    fn layer_without_ref(&self, d: &Digest, name: &OsStr) -> io::Result<Node> {
        let t = self.table.lock();
        let layer = t
            .layers
            .values()
            .find(|l| l.key.toc() == Some(d) || l.key == LayerKey::Blob(*d))
            .cloned()
            .ok_or_else(enoent)?;
        Ok(Node::Layer {
            layer,
            path: name.to_string_lossy().into_owned(),
        })
    }

    /// The image `reference` names: from the store if it has it, with the
    /// layer `key` (no network: what a restarted store is asked for
    /// containers made before), else from its registry.
    fn image(&self, reference: &str, key: &Digest) -> io::Result<Arc<LazyImage>> {
        let img = self
            .table
            .lock()
            .images
            .entry(reference.to_owned())
            .or_insert_with(|| {
                Arc::new(Image {
                    found: Mutex::new(Rank::AlsImage, None),
                    recorded: AtomicBool::new(false),
                })
            })
            .clone();
        let mut found = img.found.lock();
        if let Some(f) = found.as_ref().filter(|f| f.find(key).is_some()) {
            return Ok(f.clone());
        }
        let stored = LazyImage::from_store(&self.store, reference)
            .unwrap_or_else(|e| {
                log::warn!(
                    "{reference}: the store's record is not usable ({e}); asking its registry"
                );
                None
            })
            .filter(|f| f.find(key).is_some());
        let f = match stored {
            Some(f) => {
                img.recorded.store(true, Ordering::Relaxed);
                Arc::new(f)
            }
            None => Arc::new(find_lazy_image(reference, self.opts.insecure, &Quiet)?),
        };
        *found = Some(f.clone());
        Ok(f)
    }

    /// Layer `key` of image `reference`, if it can be served.
    fn layer(&self, reference: &str, key: &Digest) -> io::Result<Option<Arc<Served>>> {
        let img = match self.image(reference, key) {
            Ok(i) => i,
            Err(e) => {
                log::warn!("{reference}: {e}; podman pulls layer {key} itself");
                return Ok(None);
            }
        };
        let Some(i) = img.find(key) else {
            log::info!("{reference} has no layer {key}");
            return Ok(None);
        };
        let sv = match img.servable(&self.store, i, true) {
            Ok(Some(s)) => s,
            Ok(None) => {
                log::info!(
                    "{reference}: layer {key} is not zstd:chunked and not in the store; podman pulls it"
                );
                return Ok(None);
            }
            Err(e) => {
                log::warn!("{reference}: layer {key}: {e}; podman pulls it itself");
                return Ok(None);
            }
        };
        if let Some(l) = self.table.lock().layers.get(&sv.key) {
            return Ok(Some(l.clone()));
        }
        let (_, layer) = open_layer(
            &self.store,
            &img.name,
            &sv.key,
            Some(&img.registry),
            &self.cache,
            &self.opts.cache,
        )?;
        let l = &img.layers[i];
        let tar_size = match sv.record.tar_size {
            Some(n) => n,
            None => layer.tree().tar_size()?,
        };
        let served = Arc::new(Served {
            key: sv.key,
            blob: l.blob,
            size: l.size,
            info: info::record(l, tar_size),
            diff: Diff::new(layer, self.opaque_xattr),
            registry: Some(img.registry.clone()),
            whole: Mutex::new(Rank::AlsImage, None),
        });
        let served = self
            .table
            .lock()
            .layers
            .entry(sv.key)
            .or_insert(served)
            .clone();
        self.record_if_complete(reference, &img);
        Ok(Some(served))
    }

    /// Records image `reference` in the store once every layer of it is
    /// there (best effort: only `rcfs images` and `gc` are the poorer).
    fn record_if_complete(&self, reference: &str, img: &LazyImage) {
        let Some(entry) = self.table.lock().images.get(reference).cloned() else {
            return;
        };
        if entry.recorded.load(Ordering::Relaxed) {
            return;
        }
        let keys: io::Result<Option<Vec<LayerKey>>> = (0..img.layers.len())
            .map(|j| Ok(img.servable(&self.store, j, false)?.map(|s| s.key)))
            .collect::<io::Result<Vec<_>>>()
            .map(|v| v.into_iter().collect());
        match keys.and_then(|k| {
            k.map(|k| img.record(&self.store, &k).map(|_| true))
                .unwrap_or(Ok(false))
        }) {
            Ok(true) => entry.recorded.store(true, Ordering::Relaxed),
            Ok(false) => {}
            Err(e) => log::warn!("cannot record {reference} in the store: {e}"),
        }
    }

    /// containers/storage creates `use` in a layer's directory when it
    /// starts using the layer.
    pub(crate) fn note_use(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        match self.node(parent)? {
            Node::Layer { path, .. } if name.as_bytes() == b"use" => {
                let mut u = self.uses.lock();
                let n = u.entry(path.clone()).or_insert(0);
                *n += 1;
                log::info!("layer {path}: used ({n})");
                Err(enoent())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EROFS)),
        }
    }

    /// containers/storage removes a layer's directory when it stops using
    /// the layer.
    pub(crate) fn note_release(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let path = match self.node(parent)? {
            Node::Root => name.to_string_lossy().into_owned(),
            Node::Ref(r) => format!("{}/{}", encode_ref(&r), name.to_string_lossy()),
            _ => return Err(io::Error::from_raw_os_error(libc::EROFS)),
        };
        let mut u = self.uses.lock();
        if let Some(n) = u.get_mut(&path) {
            *n -= 1;
            log::info!("layer {path}: released ({n})");
            if *n <= 0 {
                u.remove(&path);
            }
        }
        Err(enoent())
    }

    /// Uses of each layer directory podman holds now.
    pub fn uses(&self) -> Vec<(String, i64)> {
        let mut v: Vec<_> = self
            .uses
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// The listing of directory `node` (inode `ino`): names and kinds.
    pub(crate) fn list(&self, node: &Node) -> io::Result<Vec<(OsString, Kind)>> {
        Ok(match node {
            Node::Root | Node::Ref(_) => Vec::new(),
            Node::Layer { .. } => ["diff", "info", "blob"]
                .iter()
                .map(|n| {
                    let k = if *n == "diff" { Kind::Dir } else { Kind::File };
                    (OsString::from(n), k)
                })
                .collect(),
            Node::Diff { layer, path, .. } => layer.diff.list(path)?,
            Node::Info(_) | Node::Blob(_) => {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        })
    }
}

impl Served {
    /// The whole blob, checked against its digest: the store's, or fetched
    /// once from the registry and kept in the store.
    pub(crate) fn whole_blob(&self, store: &Store) -> io::Result<Arc<File>> {
        let mut g = self.whole.lock();
        if let Some(f) = g.as_ref() {
            return Ok(f.clone());
        }
        let f = match store.blobs.open_object(&self.blob)? {
            Some(f) => f,
            None => {
                let reg = self.registry.as_ref().ok_or_else(|| {
                    layer_error(
                        libc::EIO,
                        format!("layer {}: no registry to fetch its blob from", self.blob),
                    )
                })?;
                let mut w = store.blobs.writer()?;
                let n = io::copy(&mut reg.blob(&self.blob, None)?.take(self.size + 1), &mut w)?;
                if n != self.size {
                    return Err(layer_error(
                        libc::EIO,
                        format!(
                            "layer {}: its blob is {n} bytes, its manifest says {}",
                            self.blob, self.size
                        ),
                    ));
                }
                w.commit(self.blob, true)
                    .map_err(|e| layer_error(libc::EIO, format!("layer {}: {e}", self.blob)))?;
                store.blobs.open_object(&self.blob)?.ok_or_else(enoent)?
            }
        };
        let f = Arc::new(f);
        *g = Some(f.clone());
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containers/storage names an image's dir by standard base64 with
    /// padding; a name that is not one is no image.
    #[test]
    fn image_dir_names() {
        let r = "docker.io/library/python:3.11";
        let name = encode_ref(r);
        assert_eq!(name, "ZG9ja2VyLmlvL2xpYnJhcnkvcHl0aG9uOjMuMTE=");
        assert_eq!(decode_ref(OsStr::new(&name)).as_deref(), Some(r));
        for bad in ["", "not base64!", "AAo=", "sha256:00"] {
            assert_eq!(decode_ref(OsStr::new(bad)), None, "{bad}");
        }
    }
}
