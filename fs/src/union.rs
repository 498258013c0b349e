//! The union: read-only layers stacked under a copy-on-write upper directory.
//!
//! [`Union`] owns the *inode table* — one [`Node`] per name the kernel has
//! seen, with an inode number that stays the same for the mount's life,
//! through copy-up and renames. A directory's merged view is computed once, on
//! first use, from its upper dir and its lower layers (top first, stopping at
//! an opaque one) and then served from memory; every later change to the tree
//! goes through this module, which edits the upper dir and the in-memory tree
//! together. Lookups therefore cost the same for 2 or 64 layers.
//!
//! The methods are the filesystem operations as plain functions returning
//! `io::Result`, so unit tests drive them without a mount; [`crate::fuse`] is
//! the thin FUSE glue on top.
//!
//! Locking (the order is always top to bottom, never the reverse):
//! 1. `Node::copy_lock` — one copy-up of a node at a time;
//! 2. `Union::ns` — the shape of the tree: read for anything that resolves
//!    paths, write for anything that adds, removes or moves names;
//! 3. `Node::state` — one node's fields, held briefly; a directory's before
//!    its children's;
//! 4. `Union::nodes` — the inode table, held only to find or change entries:
//!    no node lock is ever taken under it.
//!
//! Copy-up prepares its copy in the work dir holding only (1), then takes (2)
//! for reading to move it into place, so copying a large file never blocks
//! operations on other files. With metacopy on, a data copy-up moves in a
//! metacopy placeholder and fills it in place; [`crate::flush`] drops the
//! marker once the data is on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::flush::{self, Flusher};
use crate::layer::{self, Attr, Kind, Layer, LowerFile};
use crate::sys;
use crate::whiteout;
use crate::IdMap;

/// Inode number of the merged root directory.
pub const ROOT_INO: u64 = 1;

/// How much of each file [`Union::read_ahead`] asks for: small files whole,
/// and the start of large ones (the kernel reads ahead from there).
pub const READ_AHEAD_BYTES: u64 = 256 * 1024;

/// Layer index used in hard-link keys for files of the upper dir.
const UPPER_LAYER: usize = usize::MAX;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The upper (writable) side of a union.
#[derive(Debug, Clone)]
pub struct UpperConfig {
    /// Where changes go.
    pub upper: PathBuf,
    /// Scratch dir on the same filesystem, for atomic copy-up.
    pub work: PathBuf,
}

/// How to build a [`Union`].
#[derive(Debug)]
pub struct Config {
    /// Read-only layers, top first.
    pub lowers: Vec<Arc<dyn Layer>>,
    /// The writable side; `None` mounts read-only.
    pub upper: Option<UpperConfig>,
    /// Metadata changes to a lower file copy no data (marked by an xattr);
    /// off for upper dirs that other tools read as plain trees.
    pub metacopy: bool,
    /// Flush copied-up data to disk before it becomes visible; off for
    /// throwaway upper dirs (fuse-overlayfs's `volatile`).
    pub fsync: bool,
}

/// The identity of the caller of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Attributes of a merged entry, as reported to programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub attr: Attr,
}

/// A change of attributes (`setattr`); `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// A new timestamp.
#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// The topmost lower entry a node shows (or, for a metacopy upper file, the
/// entry that holds its data).
#[derive(Debug, Clone)]
struct LowerRef {
    layer: usize,
    path: PathBuf,
    attr: Attr,
}

/// The merged children of a loaded directory.
#[derive(Debug, Default)]
struct Children {
    /// Name → inode of every visible entry. Changed only through
    /// [`Children::insert`] and [`Children::remove`] once loaded.
    map: BTreeMap<OsString, u64>,
    /// Names that lower layers hold here (visible or whited out): removing such
    /// a name must leave a whiteout, and a directory created under it must be
    /// opaque.
    lower_names: NameSet,
    /// The listing in readdir order (by cookie), built when a readdir pass
    /// starts and dropped when it ends or `map` changes.
    listing: Option<Arc<Vec<DirEntry>>>,
}

impl Children {
    fn insert(&mut self, name: OsString, ino: u64) {
        self.map.insert(name, ino);
        self.listing = None;
    }

    fn remove(&mut self, name: &OsStr) {
        self.map.remove(name);
        self.listing = None;
    }
}

/// A set of names kept as 64-bit hashes: a tenth of the memory of the names.
/// A collision can only make a name look held by a lower layer when it is
/// not, which costs a whiteout or an opaque marker that hides nothing.
#[derive(Debug, Default)]
struct NameSet(HashSet<u64, std::hash::BuildHasherDefault<crate::IdHasher>>);

impl NameSet {
    fn insert(&mut self, name: &OsStr) {
        self.0.insert(name_hash(name));
    }
    fn contains(&self, name: &OsStr) -> bool {
        self.0.contains(&name_hash(name))
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The readdir offset of the entry after `name`: a hash of the name, so that
/// a listing resumed at an offset neither skips nor repeats entries when
/// others are added or removed in between (as ext4 does). 0, 1 and 2 are
/// the start, `.` and `..`.
fn cookie(name: &OsStr) -> u64 {
    (name_hash(name) >> 2) + 3
}

/// A fixed 64-bit hash of a name (the same in every run).
fn name_hash(name: &OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// What loading a directory reads: a snapshot of its node's state.
struct DirSource {
    path: PathBuf,
    upper: bool,
    lower_path: PathBuf,
    lower_dirs: Vec<usize>,
}

/// One merged entry (and all its hard links).
#[derive(Debug)]
pub struct Node {
    ino: u64,
    /// Lookups the kernel holds (FUSE `lookup` count); the node may leave the
    /// table only when this is 0 and no name refers to it.
    lookups: AtomicU64,
    /// Serialises copy-ups of this node.
    copy_lock: Mutex<()>,
    /// Serialises loading this directory's children.
    load_lock: Mutex<()>,
    /// Open [`OpenFile::Tail`]s: while there are any, the upper file may
    /// grow past the lower data at any time, so readers must not be given
    /// the lower file.
    tails: AtomicU64,
    /// Everything that changes; guarded as described in the module doc.
    state: RwLock<NodeState>,
}

#[derive(Debug)]
struct NodeState {
    kind: Kind,
    /// Primary name: parent inode and name (root: 0 and "").
    parent: u64,
    name: OsString,
    /// Path of the primary name relative to the union root; kept in step with
    /// renames of the node and of its ancestors.
    path: PathBuf,
    /// Further names of this file (hard links), as (parent, name).
    aliases: Vec<(u64, OsString)>,
    /// The upper dir has this entry at `path`.
    upper: bool,
    /// The upper entry holds metadata only; data lives in `lower`.
    metacopy: bool,
    /// Topmost lower entry (data source while not copied up).
    lower: Option<LowerRef>,
    /// Directories: the lower layers (top first) that hold a directory at
    /// `lower.path` and may contribute entries; cut at an opaque one on load.
    lower_dirs: Vec<usize>,
    /// Directories: merged children, `None` until first needed.
    children: Option<Children>,
    /// False once the last name is gone.
    linked: bool,
}

impl NodeState {
    fn sources(&self) -> usize {
        usize::from(self.upper) + self.lower_dirs.len()
    }
}

/// An open file.
#[derive(Debug)]
pub enum OpenFile {
    /// A file of the upper dir.
    Upper(File),
    /// A lower file, read-only.
    Lower(Arc<dyn LowerFile>),
    /// A write-only open of a metacopy upper file whose data is still the
    /// lower file's: bytes from the lower file's size on go straight in
    /// (appends), a write below it fills in the data first
    /// ([`Union::write`]). It never passes through: the server must see
    /// every write's offset.
    Tail(TailFile),
}

/// The file of an [`OpenFile::Tail`]; counts as one of its node's tails
/// while open.
#[derive(Debug)]
pub struct TailFile {
    file: File,
    node: Arc<Node>,
}

impl Drop for TailFile {
    fn drop(&mut self) {
        self.node.tails.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenFile {
    /// Reads up to `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            OpenFile::Upper(f) => sys::pread_full(f, buf, offset),
            OpenFile::Lower(f) => f.read_at(buf, offset),
            OpenFile::Tail(_) => Err(errno(libc::EBADF)),
        }
    }

    /// Writes `data` at `offset` (upper files only; a [`OpenFile::Tail`]
    /// through [`Union::write`]).
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<usize> {
        match self {
            OpenFile::Upper(f) | OpenFile::Tail(TailFile { file: f, .. }) => {
                f.write_all_at(data, offset)?;
                Ok(data.len())
            }
            OpenFile::Lower(_) => Err(errno(libc::EBADF)),
        }
    }

    /// A host fd with the file's bytes, for FUSE passthrough.
    pub fn host_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            OpenFile::Upper(f) => Some(f.as_fd()),
            OpenFile::Lower(f) => f.host_fd(),
            OpenFile::Tail(_) => None,
        }
    }

    /// Whether this is the upper file (as opposed to a lower one).
    pub fn is_upper(&self) -> bool {
        !matches!(self, OpenFile::Lower(_))
    }

    /// The upper file, when this is one.
    pub fn upper_file(&self) -> Option<&File> {
        match self {
            OpenFile::Upper(f) | OpenFile::Tail(TailFile { file: f, .. }) => Some(f),
            OpenFile::Lower(_) => None,
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: OsString,
    /// The readdir offset of the entry after this one.
    pub cookie: u64,
}

/// What copy-up must bring along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyData {
    /// Metadata and data.
    Full,
    /// Metadata; data may stay in the lower layer (metacopy).
    Meta,
    /// Metadata only, file emptied (open with `O_TRUNC`).
    Empty,
}

/// The union filesystem.
#[derive(Debug)]
pub struct Union {
    lowers: Vec<Arc<dyn Layer>>,
    upper: Option<UpperConfig>,
    metacopy: bool,
    fsync: bool,
    /// Flushes copied-up data in the background (see [`crate::flush`]);
    /// `None` when copies are flushed in line or not at all.
    flusher: Option<Arc<Flusher>>,
    /// This boot's id: tells a copy left unflushed by a server that died from
    /// one left by a crash of the system (see [`crate::flush`]).
    boot_id: Option<Vec<u8>>,
    /// Inode number → node. Guarded by its own lock, taken last and briefly.
    nodes: RwLock<IdMap<Arc<Node>>>,
    /// Hard-link groups: (layer, file id in layer) → inode.
    links: Mutex<HashMap<(usize, u64), u64>>,
    next_ino: AtomicU64,
    /// Shape of the tree (see module doc).
    ns: RwLock<()>,
    /// Names for temp files in the work dir.
    tmp_counter: AtomicU64,
    /// Whether this process may chown freely (root in its user namespace).
    privileged: bool,
    /// This process's ids: what new upper entries get without a chown.
    euid: u32,
    egid: u32,
}

impl Union {
    /// Builds a union over `config`, checking that every layer and the upper
    /// and work dirs are usable.
    pub fn new(config: Config) -> io::Result<Union> {
        if config.lowers.is_empty() && config.upper.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no layers and no upper dir",
            ));
        }
        let mut root = NodeState {
            kind: Kind::Dir,
            parent: 0,
            name: OsString::new(),
            path: PathBuf::new(),
            aliases: Vec::new(),
            upper: config.upper.is_some(),
            metacopy: false,
            lower: None,
            lower_dirs: Vec::new(),
            children: None,
            linked: true,
        };
        for (i, l) in config.lowers.iter().enumerate() {
            let attr = l.stat(Path::new(""))?;
            if attr.kind != Kind::Dir {
                return Err(errno(libc::ENOTDIR));
            }
            if root.lower.is_none() {
                root.lower = Some(LowerRef {
                    layer: i,
                    path: PathBuf::new(),
                    attr,
                });
            }
            root.lower_dirs.push(i);
        }
        if let Some(u) = &config.upper {
            // Leftovers of an interrupted copy-up are never visible: clear them.
            for ent in std::fs::read_dir(&u.work)? {
                let ent = ent?;
                if ent.file_name().as_bytes().starts_with(b"rcfs-tmp-") {
                    let p = ent.path();
                    let _ = if ent.file_type()?.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        let root = Arc::new(Node {
            ino: ROOT_INO,
            lookups: AtomicU64::new(1),
            copy_lock: Mutex::new(()),
            load_lock: Mutex::new(()),
            tails: AtomicU64::new(0),
            state: RwLock::new(root),
        });
        let mut nodes = IdMap::default();
        nodes.insert(ROOT_INO, root);
        let flusher = if config.upper.is_some() && config.metacopy && config.fsync {
            Some(Flusher::start()?)
        } else {
            None
        };
        Ok(Union {
            flusher,
            boot_id: flush::boot_id(),
            lowers: config.lowers,
            upper: config.upper,
            metacopy: config.metacopy,
            fsync: config.fsync,
            nodes: RwLock::new(nodes),
            links: Mutex::new(HashMap::new()),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            ns: RwLock::new(()),
            tmp_counter: AtomicU64::new(0),
            privileged: nix::unistd::geteuid().is_root(),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
        })
    }

    fn node(&self, ino: u64) -> io::Result<Arc<Node>> {
        self.nodes
            .read()
            .get(&ino)
            .cloned()
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn upper_cfg(&self) -> io::Result<&UpperConfig> {
        self.upper.as_ref().ok_or_else(|| errno(libc::EROFS))
    }

    fn upper_path(&self, rel: &Path) -> io::Result<PathBuf> {
        let u = &self.upper_cfg()?.upper;
        Ok(if rel.as_os_str().is_empty() {
            u.clone()
        } else {
            u.join(rel)
        })
    }

    fn tmp_path(&self) -> io::Result<PathBuf> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .upper_cfg()?
            .work
            .join(format!("rcfs-tmp-{}-{n}", std::process::id())))
    }

    fn new_node(&self, state: NodeState) -> Arc<Node> {
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let node = Arc::new(Node {
            ino,
            lookups: AtomicU64::new(0),
            copy_lock: Mutex::new(()),
            load_lock: Mutex::new(()),
            tails: AtomicU64::new(0),
            state: RwLock::new(state),
        });
        self.nodes.write().insert(ino, node.clone());
        node
    }

    // ----- loading directories -------------------------------------------

    /// Makes sure `dir`'s merged children are in memory.
    fn ensure_loaded(&self, dir: &Arc<Node>) -> io::Result<()> {
        if dir.state.read().children.is_some() {
            return Ok(());
        }
        // Loading holds only `load_lock`, so the directory's attributes stay
        // readable meanwhile (a listing of its parent is not held up).
        let _load = dir.load_lock.lock();
        let src = {
            let st = dir.state.read();
            if st.children.is_some() {
                return Ok(());
            }
            if st.kind != Kind::Dir {
                return Err(errno(libc::ENOTDIR));
            }
            DirSource {
                path: st.path.clone(),
                upper: st.upper,
                lower_path: st
                    .lower
                    .as_ref()
                    .map_or_else(|| st.path.clone(), |l| l.path.clone()),
                lower_dirs: st.lower_dirs.clone(),
            }
        };
        let (children, used) = self.load_dir(dir.ino, &src)?;
        let mut st = dir.state.write();
        st.lower_dirs = used;
        st.children = Some(children);
        Ok(())
    }

    /// Loads directory `ino` if it is not loaded yet (prefetching).
    pub fn preload(&self, ino: u64) {
        if let Ok(node) = self.node(ino) {
            let _ = self.ensure_loaded(&node);
        }
    }

    /// Subdirectories of `ino` whose merged view is not loaded yet, in
    /// readdir order; none if `ino` is not loaded.
    pub fn unloaded_subdirs(&self, ino: u64) -> Vec<u64> {
        let Ok(dir) = self.node(ino) else {
            return Vec::new();
        };
        let st = dir.state.read();
        let Some(ch) = st.children.as_ref() else {
            return Vec::new();
        };
        let mut subs: Vec<(u64, u64)> = self
            .children_nodes(ch)
            .filter(|(_, n)| {
                let s = n.state.read();
                s.kind == Kind::Dir && s.children.is_none()
            })
            .map(|(name, n)| (cookie(name), n.ino))
            .collect();
        subs.sort_unstable();
        subs.into_iter().map(|(_, ino)| ino).collect()
    }

    /// Where file `ino` stands for reading ahead: its directory (of its
    /// primary name) and its readdir cookie there.
    pub fn position(&self, ino: u64) -> Option<(u64, u64)> {
        let node = self.node(ino).ok()?;
        let st = node.state.read();
        (st.linked && st.kind == Kind::File).then(|| (st.parent, cookie(&st.name)))
    }

    /// Reads ahead for a program that opens a directory's files one after
    /// another: of the `n` entries that follow cookie `after` in directory
    /// `dir`'s readdir order, the regular files whose data is in a lower
    /// layer have their first [`READ_AHEAD_BYTES`] asked of the layer
    /// ([`Layer::will_need`]). Returns the cookies of the entries it passed,
    /// in order (fewer than `n` at the end of the directory).
    pub fn read_ahead(&self, dir: u64, after: u64, n: usize) -> Vec<u64> {
        let Ok(dir) = self.node(dir) else {
            return Vec::new();
        };
        // Only names and inode numbers here: a large directory is passed
        // through many times, and only `n` of its entries are wanted.
        let mut next: Vec<(u64, u64)> = {
            let st = dir.state.read();
            let Some(ch) = st.children.as_ref() else {
                return Vec::new();
            };
            ch.map
                .iter()
                .map(|(name, ino)| (cookie(name), *ino))
                .filter(|(c, _)| *c > after)
                .collect()
        };
        if next.len() > n {
            next.select_nth_unstable(n);
            next.truncate(n);
        }
        next.sort_unstable();
        for &(_, ino) in &next {
            let lower = self.node(ino).ok().and_then(|node| {
                let st = node.state.read();
                match &st.lower {
                    Some(l) if st.kind == Kind::File && (!st.upper || st.metacopy) => {
                        Some(l.clone())
                    }
                    _ => None,
                }
            });
            if let Some(l) = lower {
                let len = l.attr.size.min(READ_AHEAD_BYTES);
                // Only a hint: a file that cannot be read ahead is read later.
                let _ = self.lowers[l.layer].will_need(&l.path, len);
            }
        }
        next.into_iter().map(|(c, _)| c).collect()
    }

    /// The nodes of `ch`'s entries. The node table is not held while they
    /// are used: taking a node's lock under it could deadlock with a thread
    /// that holds that node's lock and waits for the table.
    fn children_nodes<'a>(
        &self,
        ch: &'a Children,
    ) -> impl Iterator<Item = (&'a OsString, Arc<Node>)> + 'a {
        let nodes = self.nodes.read();
        let found: Vec<_> = ch
            .map
            .iter()
            .filter_map(|(name, ino)| Some((name, nodes.get(ino)?.clone())))
            .collect();
        drop(nodes);
        found.into_iter()
    }

    /// Reads `src`'s upper dir and lower layers into merged children; returns
    /// them and the lower layers that contributed.
    fn load_dir(&self, dir_ino: u64, src: &DirSource) -> io::Result<(Children, Vec<usize>)> {
        let mut ch = Children::default();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let mut opaque = false;
        let path = src.path.clone();
        let mut used = Vec::new();
        if src.upper {
            let up = self.upper_path(&path)?;
            opaque = whiteout::is_opaque_dir(&sys::listxattr(&up).unwrap_or_default(), |x| {
                sys::getxattr(&up, x).ok().flatten()
            });
            let mut entries = Vec::new();
            for (name, s) in sys::read_dir_stat(&up)? {
                let Ok(attr) = Attr::from_stat(&s) else {
                    continue;
                };
                match whiteout::classify(&name, attr.is_whiteout_device()) {
                    whiteout::Kind::Opaque => opaque = true,
                    whiteout::Kind::Whiteout(n) => {
                        // Whited out here: a later entry of that name must
                        // remove the whiteout (and hide lower layers).
                        ch.lower_names.insert(n);
                        hidden.insert(n.to_owned());
                    }
                    whiteout::Kind::Entry => entries.push((name, attr)),
                }
            }
            for (name, attr) in entries {
                let ino = self.upper_child(dir_ino, &path, &name, attr);
                hidden.remove(&name);
                ch.map.insert(name, ino);
            }
        }
        if !opaque {
            let lower_path = &src.lower_path;
            for &li in &src.lower_dirs {
                used.push(li);
                let layer = &self.lowers[li];
                let listing = layer.read_dir(lower_path, &mut |name, kind| {
                    kind == Kind::CharDev
                        || (whiteout::classify(name, false) == whiteout::Kind::Entry
                            && !ch.map.contains_key(name)
                            && !hidden.contains(name))
                })?;
                let mut layer_opaque = whiteout::is_opaque_dir(&listing.xattr_names, |x| {
                    layer.get_xattr(lower_path, x).ok().flatten()
                });
                let mut layer_hidden = Vec::new();
                let mut entries = Vec::new();
                for e in listing.entries {
                    let dev00 = e.attr.as_ref().is_some_and(Attr::is_whiteout_device);
                    match whiteout::classify(&e.name, dev00) {
                        whiteout::Kind::Opaque => layer_opaque = true,
                        whiteout::Kind::Whiteout(n) => layer_hidden.push(n.to_owned()),
                        whiteout::Kind::Entry => entries.push(e),
                    }
                }
                for e in entries {
                    ch.lower_names.insert(&e.name);
                    if hidden.contains(&e.name) {
                        continue;
                    }
                    let child_lower = layer::join(lower_path, &e.name);
                    match ch.map.get(&e.name) {
                        None => {
                            let attr = match e.attr {
                                Some(a) => a,
                                None => layer.stat(&child_lower)?,
                            };
                            let ino =
                                self.lower_child(dir_ino, &path, &e.name, li, child_lower, attr);
                            ch.map.insert(e.name, ino);
                        }
                        Some(&ino) => {
                            // A directory above merges with a directory here.
                            if e.kind != Kind::Dir {
                                continue;
                            }
                            let node = self.node(ino)?;
                            let mut cs = node.state.write();
                            if cs.kind == Kind::Dir && cs.children.is_none() {
                                if cs.lower.is_none() {
                                    let attr = match e.attr {
                                        Some(a) => a,
                                        None => layer.stat(&child_lower)?,
                                    };
                                    cs.lower = Some(LowerRef {
                                        layer: li,
                                        path: child_lower,
                                        attr,
                                    });
                                }
                                cs.lower_dirs.push(li);
                            }
                        }
                    }
                }
                for n in layer_hidden {
                    ch.lower_names.insert(&n);
                    hidden.insert(n);
                }
                if layer_opaque {
                    break;
                }
            }
        }
        Ok((ch, used))
    }

    /// A node for an entry found in the upper dir.
    fn upper_child(&self, parent: u64, dir: &Path, name: &OsStr, attr: Attr) -> u64 {
        let path = layer::join(dir, name);
        if attr.kind != Kind::Dir && attr.nlink > 1 {
            if let Some(ino) = self.join_link_group((UPPER_LAYER, attr.file_id), parent, name) {
                return ino;
            }
        }
        let mut lower = None;
        let mut metacopy = false;
        if attr.kind == Kind::File && self.metacopy {
            if let Ok(Some(orig)) = sys::getxattr(
                &self.upper_path(&path).unwrap_or_default(),
                OsStr::new(whiteout::METACOPY_XATTR),
            ) {
                let orig = PathBuf::from(OsStr::from_bytes(&orig));
                lower = self.find_lower(&orig);
                if let Some(l) = &lower {
                    if self.settle_unflushed(&path, l.attr.size, attr.size) {
                        lower = None;
                    }
                }
                metacopy = lower.is_some();
            }
        }
        let node = self.new_node(NodeState {
            kind: attr.kind,
            parent,
            name: name.to_owned(),
            path,
            aliases: Vec::new(),
            upper: true,
            metacopy,
            lower,
            lower_dirs: Vec::new(),
            children: None,
            linked: true,
        });
        if attr.kind != Kind::Dir && attr.nlink > 1 {
            self.links
                .lock()
                .insert((UPPER_LAYER, attr.file_id), node.ino);
        }
        node.ino
    }

    /// Settles a metacopy upper file at `path` (size `size`, origin size
    /// `lower_size`) that a copy-up may have left unflushed (see
    /// [`crate::flush`]); returns true when it now is a complete upper file.
    ///
    /// Filled in during this boot: the server died, not the system, so the
    /// data is all there; finish the flush. Otherwise its reads come from
    /// the lower layer again, and a size the unflushed writes changed must
    /// be the lower file's too.
    fn settle_unflushed(&self, path: &Path, lower_size: u64, size: u64) -> bool {
        let Ok(up) = self.upper_path(path) else {
            return false;
        };
        let Some(mark) = sys::getxattr(&up, OsStr::new(whiteout::UNFLUSHED_XATTR))
            .ok()
            .flatten()
        else {
            // A plain metacopy file, maybe with a tail: nothing to settle.
            return false;
        };
        let (boot, filled_size) = parse_unflushed_mark(&mark);
        if self.boot_id.as_deref() == Some(boot) {
            match sys::open(&up, libc::O_RDONLY, 0).and_then(|f| flush::finish_file(&f)) {
                Ok(()) => {
                    log::info!("{}: finished the flush of its copy-up", up.display());
                    return true;
                }
                Err(e) => log::error!("cannot flush {}: {e}", up.display()),
            }
        }
        let _ = sys::removexattr(&up, OsStr::new(whiteout::UNFLUSHED_XATTR));
        // Bytes past the lower size that were there when the data was filled
        // in (a tail, maybe fsync'ed) stay; later size changes are undone.
        let keep = size.clamp(lower_size, filled_size.unwrap_or(0).max(lower_size));
        if keep != size {
            log::warn!(
                "{}: its copy-up was not flushed before the system went down; \
                 unsynced writes to it are lost and it reads as the lower layer's version",
                up.display()
            );
            if let Err(e) = sys::truncate(&up, keep) {
                log::error!("cannot restore the size of {}: {e}", up.display());
            }
        }
        false
    }

    /// Finishes the background flush of `ino`'s copied-up data, if one is
    /// pending (fsync).
    pub fn finish_flush(&self, ino: u64) -> io::Result<()> {
        match &self.flusher {
            Some(f) => f.finish(ino),
            None => Ok(()),
        }
    }

    /// Finishes every pending flush of copied-up data (unmount).
    pub fn finish_flushes(&self) {
        if let Some(f) = &self.flusher {
            f.finish_all();
        }
    }

    /// The topmost lower regular file at `path`.
    fn find_lower(&self, path: &Path) -> Option<LowerRef> {
        // The value comes from a file on disk: never let it leave the layers.
        if !path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            log::warn!(
                "ignoring metacopy origin {} (not a plain relative path)",
                path.display()
            );
            return None;
        }
        self.lowers.iter().enumerate().find_map(|(i, l)| {
            let attr = l.stat(path).ok()?;
            (attr.kind == Kind::File).then(|| LowerRef {
                layer: i,
                path: path.to_owned(),
                attr,
            })
        })
    }

    /// A node for an entry found in lower layer `layer`.
    fn lower_child(
        &self,
        parent: u64,
        dir: &Path,
        name: &OsStr,
        layer: usize,
        lower_path: PathBuf,
        attr: Attr,
    ) -> u64 {
        let key = (layer, attr.file_id);
        let hard_linked = attr.kind != Kind::Dir && attr.nlink > 1;
        if hard_linked {
            if let Some(ino) = self.join_link_group(key, parent, name) {
                return ino;
            }
        }
        let is_dir = attr.kind == Kind::Dir;
        let node = self.new_node(NodeState {
            kind: attr.kind,
            parent,
            name: name.to_owned(),
            path: layer::join(dir, name),
            aliases: Vec::new(),
            upper: false,
            metacopy: false,
            lower: Some(LowerRef {
                layer,
                path: lower_path,
                attr,
            }),
            lower_dirs: if is_dir { vec![layer] } else { Vec::new() },
            children: None,
            linked: true,
        });
        if hard_linked {
            self.links.lock().insert(key, node.ino);
        }
        node.ino
    }

    /// Adds (parent, name) as a further name of the hard-link group `key`, if
    /// the group already has a live node. A group member that was copied up is
    /// linked into the upper dir under the new name too, so all names keep
    /// sharing one file.
    fn join_link_group(&self, key: (usize, u64), parent: u64, name: &OsStr) -> Option<u64> {
        let ino = *self.links.lock().get(&key)?;
        let node = self.node(ino).ok()?;
        let mut st = node.state.write();
        if !st.linked {
            return None;
        }
        if key.0 != UPPER_LAYER && st.upper {
            // Copied up before this name was seen: the name keeps showing the
            // lower file as a node of its own (the link is broken, as on
            // overlayfs without its inode index).
            return None;
        }
        st.aliases.push((parent, name.to_owned()));
        Some(ino)
    }

    // ----- attributes ----------------------------------------------------

    fn stat_node(&self, node: &Node) -> io::Result<Stat> {
        let st = node.state.read();
        let mut attr = if st.upper {
            Attr::from_stat(&sys::lstat(&self.upper_path(&st.path)?)?)?
        } else {
            st.lower
                .as_ref()
                .ok_or_else(|| errno(libc::EIO))?
                .attr
                .clone()
        };
        if st.kind == Kind::Dir && st.sources() > 1 {
            // As overlayfs: counting subdirs of every layer is not worth it,
            // and 1 tells find(1) and friends not to rely on it.
            attr.nlink = 1;
        }
        Ok(Stat {
            ino: node.ino,
            attr,
        })
    }

    /// Attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> io::Result<Stat> {
        self.stat_node(&*self.node(ino)?)
    }

    /// Attributes of `ino` through an open file of it: right even after the
    /// last name is gone (`fstat` of an unlinked file).
    pub fn getattr_open(&self, ino: u64, file: &OpenFile) -> io::Result<Stat> {
        match file.upper_file() {
            Some(f) => Ok(Stat {
                ino,
                attr: Attr::from_stat(&sys::fstat(f)?)?,
            }),
            None => self.getattr(ino),
        }
    }

    /// For a handle that reads a lower file: the upper file to read instead,
    /// once the file has been copied up (so that every open file sees the
    /// same data, as on overlayfs).
    pub fn reopen_if_copied_up(&self, ino: u64) -> io::Result<Option<OpenFile>> {
        let node = self.node(ino)?;
        let st = node.state.read();
        if !st.upper || st.metacopy {
            return Ok(None);
        }
        let f = sys::open(&self.upper_path(&st.path)?, libc::O_RDONLY, 0)?;
        Ok(Some(OpenFile::Upper(f)))
    }

    /// Whether opening `ino` with `flags` would copy it up or give a file
    /// other than the lower one.
    pub fn open_leaves_lower(&self, ino: u64, flags: i32) -> bool {
        let acc = flags & libc::O_ACCMODE;
        let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let Ok(node) = self.node(ino) else {
            return false;
        };
        let st = node.state.read();
        writes || (st.upper && (!st.metacopy || self.has_tail(&node, &st)))
    }

    /// Whether metacopy file `node` (state `st`) has or may get bytes past
    /// its lower file's size (through an [`OpenFile::Tail`]): reading it
    /// then needs its data filled in.
    fn has_tail(&self, node: &Node, st: &NodeState) -> bool {
        if node.tails.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let lower_size = st.lower.as_ref().map_or(0, |l| l.attr.size);
        self.upper_path(&st.path)
            .and_then(|p| sys::lstat(&p))
            .map_or(true, |s| s.st_size as u64 != lower_size)
    }

    /// Looks up `name` in directory `parent`; counts a kernel lookup.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<Stat> {
        let dir = self.node(parent)?;
        self.ensure_loaded(&dir)?;
        let _ns = self.ns.read();
        let ino = {
            let st = dir.state.read();
            *st.children
                .as_ref()
                .and_then(|c| c.map.get(name))
                .ok_or_else(|| errno(libc::ENOENT))?
        };
        let node = self.node(ino)?;
        let s = self.stat_node(&node)?;
        node.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Counts one more kernel lookup of `ino` (readdirplus entries).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(n) = self.nodes.read().get(&ino) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The kernel dropped `n` lookups of `ino`. True when it holds none any
    /// more: its inode, with its cached pages, is gone.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let Some(node) = self.nodes.read().get(&ino).cloned() else {
            return true;
        };
        let prev = node.lookups.fetch_sub(n, Ordering::Relaxed);
        if prev <= n && ino != ROOT_INO {
            node.lookups.store(0, Ordering::Relaxed);
            self.drop_if_dead(&node);
            return true;
        }
        false
    }

    fn drop_if_dead(&self, node: &Node) {
        if !node.state.read().linked && node.lookups.load(Ordering::Relaxed) == 0 {
            self.nodes.write().remove(&node.ino);
        }
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> io::Result<OsString> {
        let node = self.node(ino)?;
        let st = node.state.read();
        if st.kind != Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        if st.upper {
            sys::readlink(&self.upper_path(&st.path)?)
        } else {
            let l = st.lower.as_ref().ok_or_else(|| errno(libc::EIO))?;
            self.lowers[l.layer].readlink(&l.path)
        }
    }

    // ----- directories ---------------------------------------------------

    /// The merged listing of directory `ino` (without `.` and `..`), in
    /// readdir order: by [`DirEntry::cookie`]. Built once and kept until the
    /// directory changes.
    pub fn list_dir(&self, ino: u64) -> io::Result<Arc<Vec<DirEntry>>> {
        let dir = self.node(ino)?;
        self.ensure_loaded(&dir)?;
        let _ns = self.ns.read();
        if let Some(l) = dir
            .state
            .read()
            .children
            .as_ref()
            .and_then(|c| c.listing.clone())
        {
            return Ok(l);
        }
        let mut st = dir.state.write();
        let ch = st.children.as_mut().ok_or_else(|| errno(libc::EIO))?;
        let mut list: Vec<DirEntry> = self
            .children_nodes(ch)
            .map(|(name, node)| DirEntry {
                ino: node.ino,
                kind: node.state.read().kind,
                name: name.clone(),
                cookie: cookie(name),
            })
            .collect();
        list.sort_unstable_by_key(|e| e.cookie);
        let list = Arc::new(list);
        ch.listing = Some(list.clone());
        Ok(list)
    }

    /// Frees the readdir listing of directory `ino` (a pass over it ended);
    /// the next [`Self::list_dir`] builds it again.
    pub fn drop_listing(&self, ino: u64) {
        if let Ok(dir) = self.node(ino) {
            if let Some(c) = dir.state.write().children.as_mut() {
                c.listing = None;
            }
        }
    }

    /// Parent inode of directory `ino` (the root is its own parent).
    pub fn parent_of(&self, ino: u64) -> io::Result<u64> {
        let p = self.node(ino)?.state.read().parent;
        Ok(if p == 0 { ROOT_INO } else { p })
    }

    // ----- copy-up -------------------------------------------------------

    /// Makes sure directory `ino` and all its ancestors exist in the upper dir.
    fn ensure_upper_dir(&self, ino: u64) -> io::Result<()> {
        let mut chain = Vec::new();
        let mut cur = ino;
        loop {
            let node = self.node(cur)?;
            let (upper, parent) = {
                let st = node.state.read();
                (st.upper, st.parent)
            };
            if upper {
                break;
            }
            chain.push(node);
            if parent == 0 {
                break;
            }
            cur = parent;
        }
        for node in chain.into_iter().rev() {
            self.copy_up(&node, CopyData::Meta)?;
        }
        Ok(())
    }

    /// Brings `node` into the upper dir with at least `data`.
    fn copy_up(&self, node: &Arc<Node>, data: CopyData) -> io::Result<()> {
        let done = |st: &NodeState| st.upper && (!st.metacopy || data == CopyData::Meta);
        if done(&node.state.read()) {
            return Ok(());
        }
        self.upper_cfg()?;
        let _copy = node.copy_lock.lock();
        let (kind, parent, lower, upper, aliases) = {
            let st = node.state.read();
            if done(&st) {
                return Ok(());
            }
            (
                st.kind,
                st.parent,
                st.lower.clone(),
                st.upper,
                st.aliases.clone(),
            )
        };
        let lower = lower.ok_or_else(|| errno(libc::EIO))?;
        if upper {
            // A metacopy file that now needs its data.
            return self.fill_metacopy(node, &lower, data);
        }
        if parent != 0 {
            self.ensure_upper_dir(parent)?;
        }
        // With a flusher, data goes in after the rename, into a placeholder
        // that keeps its metacopy marker until the data is on disk.
        let first = if data == CopyData::Full
            && kind == Kind::File
            && lower.attr.size > 0
            && self.flusher.is_some()
        {
            CopyData::Meta
        } else {
            data
        };
        let tmp = self.tmp_path()?;
        let metacopy = match self.prepare_copy(&tmp, kind, &lower, first) {
            Ok(m) => m,
            Err(e) => {
                let _ = if kind == Kind::Dir {
                    sys::rmdir(&tmp)
                } else {
                    sys::unlink(&tmp)
                };
                return Err(e);
            }
        };
        // Move into place while nobody can rename or remove the node.
        let _ns = self.ns.read();
        let mut st = node.state.write();
        let target = self.upper_path(&st.path)?;
        let res = if st.linked {
            sys::rename(&tmp, &target, libc::RENAME_NOREPLACE)
        } else {
            Err(errno(libc::ENOENT))
        };
        if let Err(e) = res {
            let _ = if kind == Kind::Dir {
                sys::rmdir(&tmp)
            } else {
                sys::unlink(&tmp)
            };
            return Err(e);
        }
        st.upper = true;
        st.metacopy = metacopy;
        drop(st);
        drop(_ns);
        // Other names of a hard-linked lower file share the copy.
        for (p, name) in aliases {
            self.ensure_upper_dir(p)?;
            let _ns = self.ns.read();
            let src = self.upper_path(&node.state.read().path)?;
            let ppath = self.node(p)?.state.read().path.clone();
            match sys::link(&src, &self.upper_path(&layer::join(&ppath, &name))?) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        if metacopy && first != data {
            return self.fill_metacopy(node, &lower, data);
        }
        Ok(())
    }

    /// Creates the copy of `lower` at `tmp`; returns whether it is a metacopy.
    fn prepare_copy(
        &self,
        tmp: &Path,
        kind: Kind,
        lower: &LowerRef,
        data: CopyData,
    ) -> io::Result<bool> {
        let layer = &self.lowers[lower.layer];
        let a = &lower.attr;
        let mut metacopy = false;
        match kind {
            Kind::Dir => sys::mkdir(tmp, u32::from(a.perm))?,
            Kind::File => {
                let f = sys::open(
                    tmp,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    u32::from(a.perm),
                )?;
                match data {
                    CopyData::Empty => {}
                    CopyData::Meta if self.metacopy && a.size > 0 => {
                        f.set_len(a.size)?;
                        match sys::setxattr(
                            tmp,
                            OsStr::new(whiteout::METACOPY_XATTR),
                            lower.path.as_os_str().as_bytes(),
                            0,
                        ) {
                            Ok(()) => metacopy = true,
                            // No user xattrs on the upper fs: copy the data.
                            Err(_) => self.copy_file_data(layer.as_ref(), lower, &f, self.fsync)?,
                        }
                    }
                    _ => self.copy_file_data(layer.as_ref(), lower, &f, self.fsync)?,
                }
                if self.fsync && !metacopy && data != CopyData::Empty {
                    f.sync_data()?;
                }
            }
            Kind::Symlink => sys::symlink(&layer.readlink(&lower.path)?, tmp)?,
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                let t = match kind {
                    Kind::CharDev => libc::S_IFCHR,
                    Kind::BlockDev => libc::S_IFBLK,
                    Kind::Fifo => libc::S_IFIFO,
                    _ => libc::S_IFSOCK,
                };
                sys::mknod(tmp, t | u32::from(a.perm), u64::from(a.rdev))?
            }
        }
        self.chown_quiet(tmp, a.uid, a.gid)?;
        if kind != Kind::Symlink {
            // chown clears setuid/setgid bits; put the exact mode back.
            sys::chmod(tmp, u32::from(a.perm))?;
        }
        for name in layer.list_xattrs(&lower.path).unwrap_or_default() {
            if whiteout::is_private_xattr(&name) {
                continue;
            }
            if let Ok(Some(v)) = layer.get_xattr(&lower.path, &name) {
                if let Err(e) = sys::setxattr(tmp, &name, &v, 0) {
                    // trusted.* and security.* need privileges we may not have.
                    log::debug!(
                        "copy-up of {}: xattr {:?} not copied: {e}",
                        lower.path.display(),
                        name
                    );
                }
            }
        }
        sys::utimens(tmp, timespec(a.atime), timespec(a.mtime))?;
        Ok(metacopy)
    }

    /// Copies `lower`'s data into `dst`; `durable` starts writeback as it
    /// goes, for a flush that follows at once.
    fn copy_file_data(
        &self,
        layer: &dyn Layer,
        lower: &LowerRef,
        dst: &File,
        durable: bool,
    ) -> io::Result<()> {
        let src = layer.open(&lower.path)?;
        if let Some(fd) = src.host_fd() {
            let src_file = File::from(fd.try_clone_to_owned()?);
            return sys::copy_data(&src_file, dst, lower.attr.size, durable);
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        loop {
            let n = src.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    /// Completes a metacopy upper file: writes the data in place, then drops
    /// the marker. Until the marker is gone the data is read from the lower
    /// layer, so a crash half-way serves the right bytes. With a flusher,
    /// the marker goes once the data is on disk, in the background.
    fn fill_metacopy(&self, node: &Arc<Node>, lower: &LowerRef, data: CopyData) -> io::Result<()> {
        // The path is only good while no rename or unlink moves it.
        let ns = self.ns.read();
        let (path, linked) = {
            let st = node.state.read();
            (self.upper_path(&st.path)?, st.linked)
        };
        if !linked {
            return Err(errno(libc::ENOENT));
        }
        match data {
            CopyData::Full => {
                let f = sys::open(&path, libc::O_WRONLY, 0)?;
                drop(ns);
                return self.fill_data(node, lower, f);
            }
            // Empty first: without the marker the placeholder reads as zeros.
            CopyData::Empty => sys::truncate(&path, 0)?,
            CopyData::Meta => {}
        }
        sys::removexattr(&path, OsStr::new(whiteout::METACOPY_XATTR))?;
        node.state.write().metacopy = false;
        Ok(())
    }

    /// Writes the lower file's data into `f`, the metacopy upper file of
    /// `node`, and drops its marker (now, or with a flusher once the data is
    /// on disk). Bytes past the lower file's size (a tail) are kept. The
    /// caller holds the node's copy lock.
    fn fill_data(&self, node: &Arc<Node>, lower: &LowerRef, f: File) -> io::Result<()> {
        let layer = self.lowers[lower.layer].as_ref();
        let durable = self.fsync && self.flusher.is_none();
        // Filling in is no change of the file's: its times stay.
        let times = sys::fstat(&f)?;
        let filled = self
            .copy_file_data(layer, lower, &f, durable)
            .and_then(|()| {
                sys::futimes_from(&f, &times)?;
                if durable {
                    return f.sync_data();
                }
                match (&self.flusher, &self.boot_id) {
                    (Some(_), Some(id)) => {
                        let size = sys::fstat(&f)?.st_size;
                        let mark = unflushed_mark(id, size as u64);
                        sys::fsetxattr(&f, OsStr::new(whiteout::UNFLUSHED_XATTR), &mark)
                    }
                    _ => Ok(()),
                }
            });
        if let Err(e) = filled {
            // Give back the space (a full disk is the usual cause); the
            // marker still sends reads below.
            let _ = sys::punch_hole(&f, 0, lower.attr.size);
            return Err(e);
        }
        node.state.write().metacopy = false;
        if let Some(flusher) = &self.flusher {
            let path = self.upper_path(&node.state.read().path)?;
            return flusher.push(node.ino, f, path);
        }
        sys::fremovexattr(&f, OsStr::new(whiteout::METACOPY_XATTR))
    }

    /// chown that a non-privileged server may fail quietly: the entry keeps
    /// the server's owner, as with any rootless union.
    fn chown_quiet(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        match sys::lchown(path, uid, gid) {
            Ok(()) => Ok(()),
            Err(e) if !self.privileged || matches!(e.raw_os_error(), Some(libc::EINVAL)) => {
                log::debug!("chown {} to {uid}:{gid}: {e}", path.display());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies up the whole subtree of directory `node` (for a rename).
    fn copy_up_tree(&self, node: &Arc<Node>) -> io::Result<()> {
        self.copy_up(node, CopyData::Meta)?;
        if node.state.read().kind != Kind::Dir {
            return Ok(());
        }
        self.ensure_loaded(node)?;
        let kids: Vec<u64> = node
            .state
            .read()
            .children
            .as_ref()
            .map(|c| c.map.values().copied().collect())
            .unwrap_or_default();
        for k in kids {
            let child = self.node(k)?;
            let needs = {
                let s = child.state.read();
                !s.upper || (s.kind == Kind::Dir && !s.lower_dirs.is_empty())
            };
            if needs {
                self.copy_up_tree(&child)?;
            }
        }
        Ok(())
    }

    // ----- creating entries ----------------------------------------------

    fn check_new_name(&self, name: &OsStr) -> io::Result<()> {
        self.upper_cfg()?;
        if !layer::is_plain_name(name) {
            return Err(errno(libc::EINVAL));
        }
        if whiteout::is_reserved_name(name) {
            // It would read back as a whiteout and vanish.
            return Err(errno(libc::EPERM));
        }
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        Ok(())
    }

    /// Creates a new entry `name` in `parent` with `make`, which receives the
    /// upper path. Returns the new node's attributes and `make`'s result.
    fn create_entry<T>(
        &self,
        parent: u64,
        name: &OsStr,
        caller: Caller,
        kind: Kind,
        make: impl FnOnce(&Path) -> io::Result<T>,
    ) -> io::Result<(Stat, T)> {
        self.check_new_name(name)?;
        let dir = self.node(parent)?;
        self.ensure_loaded(&dir)?;
        self.ensure_upper_dir(parent)?;
        let _ns = self.ns.write();
        let (dir_path, lower_name) = {
            let st = dir.state.read();
            if !st.linked {
                return Err(errno(libc::ENOENT));
            }
            let ch = st.children.as_ref().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.contains_key(name) {
                return Err(errno(libc::EEXIST));
            }
            (st.path.clone(), ch.lower_names.contains(name))
        };
        let path = layer::join(&dir_path, name);
        let up = self.upper_path(&path)?;
        if lower_name {
            self.remove_device_whiteout(&self.upper_path(&dir_path)?, name)?;
        }
        let out = make(&up)?;
        let finish = || -> io::Result<()> {
            let parent_up = self.upper_path(&dir_path)?;
            if self.privileged {
                // The entry belongs to the caller, not to this server; a setgid
                // parent passes its group on, as the kernel does.
                let gid = match sys::lstat(&parent_up) {
                    Ok(p) if p.st_mode & libc::S_ISGID != 0 => p.st_gid,
                    _ => caller.gid,
                };
                if (caller.uid, gid) != (self.euid, self.egid) {
                    self.chown_quiet(&up, caller.uid, gid)?;
                }
            }
            if kind == Kind::Dir && lower_name {
                // Lower layers hold this name: they must not show through.
                sys::open(
                    &up.join(whiteout::OPAQUE_MARKER),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0,
                )?;
            }
            if lower_name {
                self.remove_whiteout(&parent_up, name)?;
            }
            Ok(())
        };
        if let Err(e) = finish() {
            let _ = if kind == Kind::Dir {
                std::fs::remove_dir_all(&up)
            } else {
                sys::unlink(&up)
            };
            return Err(e);
        }
        let node = self.new_node(NodeState {
            kind,
            parent,
            name: name.to_owned(),
            path,
            aliases: Vec::new(),
            upper: true,
            metacopy: false,
            lower: None,
            lower_dirs: Vec::new(),
            children: if kind == Kind::Dir {
                Some(Children::default())
            } else {
                None
            },
            linked: true,
        });
        dir.state
            .write()
            .children
            .as_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(name.to_owned(), node.ino);
        let s = self.stat_node(&node)?;
        node.lookups.fetch_add(1, Ordering::Relaxed);
        Ok((s, out))
    }

    /// Removes a `.wh.NAME` whiteout of `name`, if there is one.
    fn remove_whiteout(&self, parent_up: &Path, name: &OsStr) -> io::Result<()> {
        let whiteout::UpperWhiteout::File(wh) = whiteout::upper_whiteout(name) else {
            return Ok(());
        };
        match sys::unlink(&parent_up.join(wh)) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes a device whiteout standing in place of `name`, which must go
    /// before anything else can take the name.
    fn remove_device_whiteout(&self, parent_up: &Path, name: &OsStr) -> io::Result<()> {
        let p = parent_up.join(name);
        match sys::lstat(&p) {
            Ok(st) if Attr::from_stat(&st).is_ok_and(|a| a.is_whiteout_device()) => sys::unlink(&p),
            _ => Ok(()),
        }
    }

    /// Records in the upper dir that `name` is deleted. The `.wh.` form can be
    /// written while an upper entry still holds the name (so callers write it
    /// first, and a crash leaves the entry visible rather than lost); the
    /// device form takes the name itself, so it is written after.
    fn write_whiteout(&self, parent_up: &Path, name: &OsStr) -> io::Result<()> {
        let res = match whiteout::upper_whiteout(name) {
            whiteout::UpperWhiteout::File(wh) => sys::open(
                &parent_up.join(wh),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0,
            )
            .map(drop),
            whiteout::UpperWhiteout::Device => sys::mknod(&parent_up.join(name), libc::S_IFCHR, 0),
        };
        match res {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// `mkdir`.
    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> io::Result<Stat> {
        self.create_entry(parent, name, caller, Kind::Dir, |p| {
            sys::mkdir(p, mode & 0o7777)
        })
        .map(|r| r.0)
    }

    /// `mknod` (regular files, fifos, sockets, devices).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> io::Result<Stat> {
        let kind = Kind::from_mode(mode).ok_or_else(|| errno(libc::EINVAL))?;
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        self.create_entry(parent, name, caller, kind, |p| {
            sys::mknod(p, mode, u64::from(rdev))
        })
        .map(|r| r.0)
    }

    /// `symlink`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        caller: Caller,
    ) -> io::Result<Stat> {
        self.create_entry(parent, name, caller, Kind::Symlink, |p| {
            sys::symlink(target, p)
        })
        .map(|r| r.0)
    }

    /// `create`: a new regular file, opened with `flags`.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> io::Result<(Stat, OpenFile)> {
        let flags = open_flags(flags) | libc::O_CREAT | libc::O_EXCL;
        self.create_entry(parent, name, caller, Kind::File, |p| {
            sys::open(p, flags, mode & 0o7777)
        })
        .map(|(s, f)| (s, OpenFile::Upper(f)))
    }

    /// `link`: a new name for `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> io::Result<Stat> {
        self.check_new_name(newname)?;
        let node = self.node(ino)?;
        if node.state.read().kind == Kind::Dir {
            return Err(errno(libc::EPERM));
        }
        self.copy_up(&node, CopyData::Meta)?;
        let dir = self.node(newparent)?;
        self.ensure_loaded(&dir)?;
        self.ensure_upper_dir(newparent)?;
        let _ns = self.ns.write();
        let dir_path = {
            let st = dir.state.read();
            if st
                .children
                .as_ref()
                .is_some_and(|c| c.map.contains_key(newname))
            {
                return Err(errno(libc::EEXIST));
            }
            st.path.clone()
        };
        let src = self.upper_path(&node.state.read().path)?;
        let parent_up = self.upper_path(&dir_path)?;
        sys::link(&src, &parent_up.join(newname))?;
        self.remove_whiteout(&parent_up, newname)?;
        node.state
            .write()
            .aliases
            .push((newparent, newname.to_owned()));
        dir.state
            .write()
            .children
            .as_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(newname.to_owned(), ino);
        let s = self.stat_node(&node)?;
        node.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    // ----- removing entries ----------------------------------------------

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        self.remove_entry(parent, name, false)
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        self.remove_entry(parent, name, true)
    }

    fn remove_entry(&self, parent: u64, name: &OsStr, want_dir: bool) -> io::Result<()> {
        self.upper_cfg()?;
        let dir = self.node(parent)?;
        self.ensure_loaded(&dir)?;
        let child_ino = dir
            .state
            .read()
            .children
            .as_ref()
            .and_then(|c| c.map.get(name).copied())
            .ok_or_else(|| errno(libc::ENOENT))?;
        let child = self.node(child_ino)?;
        let is_dir = child.state.read().kind == Kind::Dir;
        if want_dir != is_dir {
            return Err(errno(if want_dir {
                libc::ENOTDIR
            } else {
                libc::EISDIR
            }));
        }
        if is_dir {
            self.ensure_loaded(&child)?;
        }
        self.ensure_upper_dir(parent)?;
        let _ns = self.ns.write();
        let (dir_path, lower_name) = {
            let st = dir.state.read();
            let ch = st.children.as_ref().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.get(name) != Some(&child_ino) {
                return Err(errno(libc::ENOENT));
            }
            (st.path.clone(), ch.lower_names.contains(name))
        };
        let parent_up = self.upper_path(&dir_path)?;
        let (child_upper, child_path) = {
            let cs = child.state.read();
            if is_dir && cs.children.as_ref().is_some_and(|c| !c.map.is_empty()) {
                return Err(errno(libc::ENOTEMPTY));
            }
            (cs.upper, layer::join(&dir_path, name))
        };
        let device_form = is_device_form(name);
        if lower_name && !device_form {
            self.write_whiteout(&parent_up, name)?;
        }
        if child_upper {
            let up = self.upper_path(&child_path)?;
            if is_dir {
                // Only whiteouts and markers can be left in a merged-empty dir.
                clear_markers(&up)?;
                sys::rmdir(&up)?;
            } else {
                sys::unlink(&up)?;
            }
        }
        if lower_name && device_form {
            self.write_whiteout(&parent_up, name)?;
        }
        dir.state
            .write()
            .children
            .as_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .remove(name);
        self.drop_name(&child, parent, name);
        Ok(())
    }

    /// Removes (parent, name) from `node`'s names; promotes an alias if the
    /// primary name went away.
    fn drop_name(&self, node: &Arc<Node>, parent: u64, name: &OsStr) {
        let mut st = node.state.write();
        if st.parent == parent && st.name == name {
            if st.aliases.is_empty() {
                st.linked = false;
            } else {
                let (p, n) = st.aliases.remove(0);
                let ppath = if p == parent {
                    st.path.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    self.nodes
                        .read()
                        .get(&p)
                        .map(|d| d.state.read().path.clone())
                        .unwrap_or_default()
                };
                st.path = layer::join(&ppath, &n);
                st.parent = p;
                st.name = n;
            }
        } else {
            st.aliases.retain(|(p, n)| !(*p == parent && n == name));
        }
        drop(st);
        self.drop_if_dead(node);
    }

    // ----- rename --------------------------------------------------------

    /// `rename` with `RENAME_NOREPLACE` / `RENAME_EXCHANGE` flags.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        self.check_new_name(newname)?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(errno(libc::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let src_dir = self.node(parent)?;
        let dst_dir = self.node(newparent)?;
        self.ensure_loaded(&src_dir)?;
        self.ensure_loaded(&dst_dir)?;
        let lookup = |d: &Arc<Node>, n: &OsStr| {
            d.state
                .read()
                .children
                .as_ref()
                .and_then(|c| c.map.get(n).copied())
        };
        let src_ino = lookup(&src_dir, name).ok_or_else(|| errno(libc::ENOENT))?;
        let dst_ino = lookup(&dst_dir, newname);
        if dst_ino == Some(src_ino) {
            return Ok(());
        }
        let src = self.node(src_ino)?;
        let dst = dst_ino.map(|i| self.node(i)).transpose()?;
        if exchange && dst.is_none() {
            return Err(errno(libc::ENOENT));
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let src_is_dir = src.state.read().kind == Kind::Dir;
        let dst_is_dir = dst
            .as_ref()
            .is_some_and(|d| d.state.read().kind == Kind::Dir);
        if let Some(d) = &dst {
            let dst_is_dir = d.state.read().kind == Kind::Dir;
            if !exchange {
                if src_is_dir && !dst_is_dir {
                    return Err(errno(libc::ENOTDIR));
                }
                if !src_is_dir && dst_is_dir {
                    return Err(errno(libc::EISDIR));
                }
                if dst_is_dir {
                    self.ensure_loaded(d)?;
                    if d.state
                        .read()
                        .children
                        .as_ref()
                        .is_some_and(|c| !c.map.is_empty())
                    {
                        return Err(errno(libc::ENOTEMPTY));
                    }
                }
            }
        }
        // Everything that moves must live wholly in the upper dir first.
        self.copy_up_tree(&src)?;
        if exchange {
            if let Some(d) = &dst {
                self.copy_up_tree(d)?;
            }
        }
        self.ensure_upper_dir(parent)?;
        self.ensure_upper_dir(newparent)?;

        let _ns = self.ns.write();
        let (src_path, src_lower_name) = {
            let st = src_dir.state.read();
            let ch = st.children.as_ref().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.get(name) != Some(&src_ino) {
                return Err(errno(libc::ENOENT));
            }
            (layer::join(&st.path, name), ch.lower_names.contains(name))
        };
        let (dst_path, dst_lower_name) = {
            let st = dst_dir.state.read();
            let ch = st.children.as_ref().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.get(newname).copied() != dst_ino {
                return Err(errno(libc::ENOENT));
            }
            (
                layer::join(&st.path, newname),
                ch.lower_names.contains(newname),
            )
        };
        let src_up = self.upper_path(&src_path)?;
        let dst_up = self.upper_path(&dst_path)?;
        let dst_upper = dst.as_ref().is_some_and(|d| d.state.read().upper);
        if let (Some(d), false) = (&dst, exchange) {
            if dst_upper && d.state.read().kind == Kind::Dir {
                clear_markers(&dst_up)?;
            }
        }
        let kernel_flags = if exchange {
            libc::RENAME_EXCHANGE
        } else if dst_upper {
            0
        } else {
            libc::RENAME_NOREPLACE
        };
        let src_parent_up = src_up.parent().map(Path::to_path_buf).unwrap_or_default();
        let dst_parent_up = dst_up.parent().map(Path::to_path_buf).unwrap_or_default();
        if !exchange {
            if src_lower_name && !is_device_form(name) {
                self.write_whiteout(&src_parent_up, name)?;
            }
            if dst_lower_name && !dst_upper {
                self.remove_device_whiteout(&dst_parent_up, newname)?;
            }
        }
        sys::rename(&src_up, &dst_up, kernel_flags)?;

        // And the in-memory tree.
        {
            let mut sd = src_dir.state.write();
            let ch = sd.children.as_mut().ok_or_else(|| errno(libc::EIO))?;
            ch.remove(name);
            if exchange {
                ch.insert(name.to_owned(), dst_ino.unwrap_or_default());
            }
        }
        dst_dir
            .state
            .write()
            .children
            .as_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(newname.to_owned(), src_ino);
        if let (Some(d), false) = (&dst, exchange) {
            self.drop_name(d, newparent, newname);
        }
        self.move_name(&src, parent, name, newparent, newname, &dst_path);
        if src_is_dir && dst_lower_name {
            self.mark_moved_dir(&src);
        }
        if let (Some(d), true) = (&dst, exchange) {
            self.move_name(d, newparent, newname, parent, name, &src_path);
            if d.state.read().kind == Kind::Dir && src_lower_name {
                self.mark_moved_dir(d);
            }
        }

        // Then whiteouts and opaque markers around the moved entries.
        if !exchange {
            if src_lower_name && is_device_form(name) {
                self.write_whiteout(&src_parent_up, name)?;
            }
            self.remove_whiteout(&dst_parent_up, newname)?;
        }
        if src_is_dir && dst_lower_name {
            self.make_opaque(&dst_up)?;
        }
        if exchange && dst_is_dir && src_lower_name {
            self.make_opaque(&src_up)?;
        }
        Ok(())
    }

    fn make_opaque(&self, dir_up: &Path) -> io::Result<()> {
        match sys::open(
            &dir_up.join(whiteout::OPAQUE_MARKER),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0,
        ) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// A moved directory stands alone: its lower layers no longer apply.
    fn mark_moved_dir(&self, node: &Arc<Node>) {
        let mut st = node.state.write();
        st.lower_dirs.clear();
        if let Some(c) = st.children.as_mut() {
            c.lower_names.clear();
        }
    }

    /// Renames one name of `node` and updates the paths of its subtree.
    fn move_name(
        &self,
        node: &Arc<Node>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        new_path: &Path,
    ) {
        let mut st = node.state.write();
        if st.parent == parent && st.name == name {
            st.parent = newparent;
            st.name = newname.to_owned();
            st.path = new_path.to_owned();
            let is_dir = st.kind == Kind::Dir;
            drop(st);
            if is_dir {
                self.repath_children(node);
            }
        } else if let Some(a) = st
            .aliases
            .iter_mut()
            .find(|(p, n)| *p == parent && n == name)
        {
            *a = (newparent, newname.to_owned());
        }
    }

    fn repath_children(&self, dir: &Arc<Node>) {
        let (path, kids) = {
            let st = dir.state.read();
            let kids: Vec<(OsString, u64)> = st
                .children
                .as_ref()
                .map(|c| c.map.iter().map(|(n, i)| (n.clone(), *i)).collect())
                .unwrap_or_default();
            (st.path.clone(), kids)
        };
        for (name, ino) in kids {
            let Ok(child) = self.node(ino) else { continue };
            let mut cs = child.state.write();
            if cs.parent == dir.ino && cs.name == name {
                cs.path = layer::join(&path, &name);
                let is_dir = cs.kind == Kind::Dir;
                drop(cs);
                if is_dir {
                    self.repath_children(&child);
                }
            }
        }
    }

    // ----- attributes and xattrs -----------------------------------------

    /// `setattr`. `fh` is the open file the change came through, if any.
    pub fn setattr(&self, ino: u64, set: &SetAttr, fh: Option<&OpenFile>) -> io::Result<Stat> {
        let node = self.node(ino)?;
        let data = match set.size {
            Some(0) if !node.state.read().upper => CopyData::Empty,
            Some(_) => CopyData::Full,
            None => CopyData::Meta,
        };
        self.copy_up(&node, data)?;
        let _ns = self.ns.read();
        let (path, kind) = {
            let st = node.state.read();
            (self.upper_path(&st.path)?, st.kind)
        };
        if let Some(size) = set.size {
            match fh.and_then(OpenFile::upper_file) {
                Some(f) => f.set_len(size)?,
                None => sys::truncate(&path, size)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::lchown(
                &path,
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(mode) = set.mode {
            if kind != Kind::Symlink {
                sys::chmod(&path, mode & 0o7777)?;
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let conv = |t: Option<TimeSet>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(TimeSet::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(TimeSet::At(t)) => timespec(t),
            };
            sys::utimens(&path, conv(set.atime), conv(set.mtime))?;
        }
        self.stat_node(&node)
    }

    /// Value of xattr `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> io::Result<Vec<u8>> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::ENODATA));
        }
        let node = self.node(ino)?;
        let st = node.state.read();
        let v = if st.upper {
            sys::getxattr(&self.upper_path(&st.path)?, name)?
        } else {
            let l = st.lower.as_ref().ok_or_else(|| errno(libc::EIO))?;
            self.lowers[l.layer].get_xattr(&l.path, name)?
        };
        v.ok_or_else(|| errno(libc::ENODATA))
    }

    /// Names of the xattrs of `ino`.
    pub fn listxattr(&self, ino: u64) -> io::Result<Vec<OsString>> {
        let node = self.node(ino)?;
        let st = node.state.read();
        let names = if st.upper {
            sys::listxattr(&self.upper_path(&st.path)?)?
        } else {
            let l = st.lower.as_ref().ok_or_else(|| errno(libc::EIO))?;
            self.lowers[l.layer].list_xattrs(&l.path)?
        };
        Ok(names
            .into_iter()
            .filter(|n| !whiteout::is_private_xattr(n))
            .collect())
    }

    /// `setxattr`.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::EPERM));
        }
        let node = self.node(ino)?;
        self.copy_up(&node, CopyData::Meta)?;
        let _ns = self.ns.read();
        let path = self.upper_path(&node.state.read().path)?;
        sys::setxattr(&path, name, value, flags)
    }

    /// `removexattr`.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> io::Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::ENODATA));
        }
        // Removing what is not there copies nothing up.
        self.getxattr(ino, name)?;
        let node = self.node(ino)?;
        self.copy_up(&node, CopyData::Meta)?;
        let _ns = self.ns.read();
        let path = self.upper_path(&node.state.read().path)?;
        sys::removexattr(&path, name)
    }

    // ----- files ---------------------------------------------------------

    /// Opens regular file `ino` with open(2) `flags`. With `defer_data`, a
    /// write-only open of a lower file (one that does not truncate it) copies
    /// no data: it gets an [`OpenFile::Tail`] of a metacopy upper file, and
    /// the data is copied only if a write lands inside it. Appending to a
    /// large lower file then costs what appending to an upper one does.
    pub fn open(&self, ino: u64, flags: i32, defer_data: bool) -> io::Result<OpenFile> {
        let node = self.node(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let trunc = flags & libc::O_TRUNC != 0 && writes;
        let tail = defer_data && self.metacopy && acc == libc::O_WRONLY && !trunc;
        if writes || trunc {
            self.copy_up(
                &node,
                if trunc {
                    CopyData::Empty
                } else if tail {
                    CopyData::Meta
                } else {
                    CopyData::Full
                },
            )?;
        } else {
            let st = node.state.read();
            if st.upper && st.metacopy && self.has_tail(&node, &st) {
                drop(st);
                self.copy_up(&node, CopyData::Full)?;
            }
        }
        let st = node.state.read();
        if st.kind != Kind::File {
            return Err(errno(libc::EINVAL));
        }
        if tail && st.upper && st.metacopy {
            let file = sys::open(&self.upper_path(&st.path)?, open_flags(flags), 0)?;
            node.tails.fetch_add(1, Ordering::Relaxed);
            return Ok(OpenFile::Tail(TailFile {
                file,
                node: node.clone(),
            }));
        }
        if st.upper && (writes || !st.metacopy) {
            let flags = open_flags(flags);
            Ok(OpenFile::Upper(sys::open(
                &self.upper_path(&st.path)?,
                flags,
                0,
            )?))
        } else {
            let l = st.lower.as_ref().ok_or_else(|| errno(libc::EIO))?;
            Ok(OpenFile::Lower(self.lowers[l.layer].open(&l.path)?))
        }
    }

    /// Writes `data` at `offset` through `file`. A write below the lower
    /// file's size through an [`OpenFile::Tail`] fills in the file's data
    /// first.
    pub fn write(&self, file: &OpenFile, data: &[u8], offset: u64) -> io::Result<usize> {
        if let OpenFile::Tail(t) = file {
            if t.node.state.read().metacopy {
                // Not while the data is being filled in (which keeps the
                // file's times).
                let _copy = t.node.copy_lock.lock();
                self.fill_tail(t, |l| offset < l.attr.size)?;
                return file.write_at(data, offset);
            }
        }
        file.write_at(data, offset)
    }

    /// `fallocate(2)` through `file` (a write-only open whose data is still
    /// below gets it first: the range may lie inside it).
    pub fn fallocate(&self, file: &OpenFile, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        if let OpenFile::Tail(t) = file {
            let _copy = t.node.copy_lock.lock();
            self.fill_tail(t, |_| true)?;
        }
        let f = file.upper_file().ok_or_else(|| errno(libc::EBADF))?;
        sys::fallocate(f, mode, offset, len)
    }

    /// Calls `f` with the whole data of `file`, an open lower file of `ino`
    /// no larger than `max` bytes (and not empty), if `wanted()` says so,
    /// under the node's copy lock: a write after a copy-up can then not be
    /// overtaken by what `f` does with the older bytes, and other callers
    /// for the node wait until `f` is done. False, without calling `f`,
    /// when the file is larger, is no longer only below, or is not wanted.
    pub fn with_lower_data(
        &self,
        ino: u64,
        file: &OpenFile,
        max: u64,
        wanted: impl FnOnce() -> bool,
        f: impl FnOnce(&[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        let node = self.node(ino)?;
        let _copy = node.copy_lock.lock();
        let size = {
            let st = node.state.read();
            match &st.lower {
                Some(l) if !st.upper && st.kind == Kind::File => l.attr.size,
                _ => return Ok(false),
            }
        };
        if size == 0 || size > max || !wanted() {
            return Ok(false);
        }
        let mut buf = vec![0u8; size as usize];
        if file.read_at(&mut buf, 0)? != buf.len() {
            return Ok(false); // changed under us: leave it to READ
        }
        f(&buf)?;
        Ok(true)
    }

    /// `copy_file_range(2)` of up to `len` bytes from `src` at `off_in` to
    /// `dst` (open for writing) at `off_out`, done by the host kernel: no
    /// data passes through here. A write-only open whose data is still below
    /// gets it first when the range starts inside it, as for
    /// [`Self::write`]. Returns the bytes copied.
    pub fn copy_range(
        &self,
        src: &OpenFile,
        off_in: u64,
        dst: &OpenFile,
        off_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let copy = || -> io::Result<usize> {
            let to = dst.upper_file().ok_or_else(|| errno(libc::EBADF))?;
            if let Some(from) = src.host_fd() {
                return sys::copy_file_range(&from, off_in, to, off_out, len);
            }
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            let n = src.read_at(&mut buf, off_in)?;
            to.write_all_at(&buf[..n], off_out)?;
            Ok(n)
        };
        if let OpenFile::Tail(t) = dst {
            if t.node.state.read().metacopy {
                let _copy = t.node.copy_lock.lock();
                self.fill_tail(t, |l| off_out < l.attr.size)?;
                return copy();
            }
        }
        copy()
    }

    /// `lseek` with `SEEK_DATA` or `SEEK_HOLE` (`whence`) from `offset` in
    /// `file`, an open file of `ino`: asked of the host file that holds the
    /// data. A file whose data has no host file to ask (a write-only open
    /// whose data is still below, a layer without host files) is all data,
    /// which POSIX allows.
    pub fn seek_data(
        &self,
        ino: u64,
        file: &OpenFile,
        offset: u64,
        whence: i32,
    ) -> io::Result<u64> {
        let host = match file {
            OpenFile::Tail(t) if t.node.state.read().metacopy => None,
            OpenFile::Tail(t) => Some(t.file.as_fd()),
            f => f.host_fd(),
        };
        if let Some(fd) = host {
            return sys::seek(&fd, offset, whence);
        }
        let size = match file {
            OpenFile::Tail(t) => sys::fstat(&t.file)?.st_size as u64,
            _ => self.getattr(ino)?.attr.size,
        };
        match whence {
            _ if offset >= size => Err(errno(libc::ENXIO)),
            libc::SEEK_DATA => Ok(offset),
            libc::SEEK_HOLE => Ok(size),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    /// Fills in the data of `t`'s file if it is still below and `needed`
    /// says so. Through the handle's own file: its names may be gone. The
    /// caller holds the node's copy lock.
    fn fill_tail(&self, t: &TailFile, needed: impl FnOnce(&LowerRef) -> bool) -> io::Result<()> {
        let (metacopy, lower) = {
            let st = t.node.state.read();
            (st.metacopy, st.lower.clone())
        };
        match lower {
            Some(l) if metacopy && needed(&l) => {
                self.fill_data(&t.node, &l, sys::reopen(&t.file, libc::O_WRONLY)?)
            }
            _ => Ok(()),
        }
    }

    /// `statfs` of the upper dir (or the top layer when read-only).
    pub fn statfs(&self) -> io::Result<libc::statvfs> {
        let path = match &self.upper {
            Some(u) => u.upper.clone(),
            None => self
                .lowers
                .iter()
                .find_map(|l| l.host_path(Path::new("")))
                .ok_or_else(|| errno(libc::ENOSYS))?,
        };
        sys::statvfs(&path)
    }
}

/// The value of [`whiteout::UNFLUSHED_XATTR`]: the boot id, a space, and the
/// file's size when its data was filled in.
fn unflushed_mark(boot_id: &[u8], size: u64) -> Vec<u8> {
    let mut v = boot_id.to_vec();
    v.extend_from_slice(format!(" {size}").as_bytes());
    v
}

/// The boot id and size of an [`unflushed_mark`] (the size is absent in
/// marks of a boot id alone).
fn parse_unflushed_mark(mark: &[u8]) -> (&[u8], Option<u64>) {
    if let Some(i) = mark.iter().rposition(|&b| b == b' ') {
        if let Some(n) = std::str::from_utf8(&mark[i + 1..])
            .ok()
            .and_then(|t| t.parse().ok())
        {
            return (&mark[..i], Some(n));
        }
    }
    (mark, None)
}

/// open(2) flags to pass on to the host: access mode and the flags that
/// change I/O, never the creation flags (handled by the union).
fn open_flags(flags: i32) -> i32 {
    flags
        & (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_SYNC
            | libc::O_DSYNC
            | libc::O_NOATIME)
}

/// Whether deleting `name` is recorded by a device in its place.
fn is_device_form(name: &OsStr) -> bool {
    whiteout::upper_whiteout(name) == whiteout::UpperWhiteout::Device
}

/// Removes whiteout files and opaque markers from an upper dir that is
/// empty in the merged view.
fn clear_markers(dir: &Path) -> io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let is_dev00 = sys::lstat(&ent.path())
            .ok()
            .and_then(|s| Attr::from_stat(&s).ok())
            .is_some_and(|a| a.is_whiteout_device());
        if whiteout::classify(&name, is_dev00) != whiteout::Kind::Entry {
            sys::unlink(&ent.path())?;
        }
    }
    Ok(())
}

fn timespec(t: SystemTime) -> libc::timespec {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        },
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = -(d.subsec_nanos() as i64);
            if nsec < 0 {
                sec -= 1;
                nsec += 1_000_000_000;
            }
            libc::timespec {
                tv_sec: sec as libc::time_t,
                tv_nsec: nsec as libc::c_long,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::DirLayer;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    /// Layers under a temp dir: `l0` is the top lower layer.
    struct Fx {
        _t: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fx {
        fn new(layers: usize) -> Fx {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().to_path_buf();
            for i in 0..layers {
                fs::create_dir(root.join(format!("l{i}"))).unwrap();
            }
            fs::create_dir(root.join("upper")).unwrap();
            fs::create_dir(root.join("work")).unwrap();
            Fx { _t: t, root }
        }
        fn put(&self, rel: &str, data: &str) {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        fn union(&self, layers: usize, metacopy: bool) -> Union {
            let lowers: Vec<Arc<dyn Layer>> = (0..layers)
                .map(|i| {
                    Arc::new(DirLayer::new(&self.root.join(format!("l{i}"))).unwrap())
                        as Arc<dyn Layer>
                })
                .collect();
            Union::new(Config {
                lowers,
                upper: Some(UpperConfig {
                    upper: self.root.join("upper"),
                    work: self.root.join("work"),
                }),
                metacopy,
                fsync: true,
            })
            .unwrap()
        }
        fn upper(&self, rel: &str) -> PathBuf {
            self.root.join("upper").join(rel)
        }
    }

    const ME: Caller = Caller { uid: 0, gid: 0 };

    /// The listing's names, sorted by name (readdir order is by cookie).
    fn names(u: &Union, ino: u64) -> Vec<String> {
        let list = u.list_dir(ino).unwrap();
        assert!(
            list.windows(2).all(|w| w[0].cookie < w[1].cookie),
            "listing must be in cookie order"
        );
        let mut names: Vec<String> = list
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn path_ino(u: &Union, path: &str) -> u64 {
        let mut ino = ROOT_INO;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            ino = u.lookup(ino, OsStr::new(c)).unwrap().ino;
        }
        ino
    }

    fn read_all(u: &Union, ino: u64) -> String {
        let f = u.open(ino, libc::O_RDONLY, false).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read_at(&mut buf, out.len() as u64).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn merges_layers_top_first_with_whiteouts_and_opaque_dirs() {
        let fx = Fx::new(3);
        fx.put("l2/a", "a2");
        fx.put("l2/b", "b2");
        fx.put("l2/d/old", "old");
        fx.put("l2/e/keep", "keep");
        fx.put("l1/a", "a1");
        fx.put("l1/.wh.b", "");
        fx.put("l1/d/.wh..wh..opq", "");
        fx.put("l1/d/new", "new");
        fx.put("l0/e/more", "more");
        fx.put("l0/.wh..wh..opq-not-a-marker", "x");
        let u = fx.union(3, true);
        // A `.wh.`-prefixed name is a whiteout of the rest, never shown.
        assert_eq!(names(&u, ROOT_INO), vec!["a", "d", "e"]);
        assert_eq!(read_all(&u, path_ino(&u, "a")), "a1");
        assert_eq!(names(&u, path_ino(&u, "d")), vec!["new"]);
        assert_eq!(names(&u, path_ino(&u, "e")), vec!["keep", "more"]);
    }

    #[test]
    fn overlay_xattr_opaque_dir() {
        let fx = Fx::new(2);
        fx.put("l1/d/hidden", "h");
        fx.put("l0/d/shown", "s");
        let d = fx.root.join("l0/d");
        if sys::setxattr(&d, OsStr::new("user.overlay.opaque"), b"y", 0).is_err() {
            panic!("the test filesystem must support user xattrs");
        }
        let u = fx.union(2, true);
        assert_eq!(names(&u, path_ino(&u, "d")), vec!["shown"]);
        // The marker xattr is bookkeeping, not shown.
        assert!(u.listxattr(path_ino(&u, "d")).unwrap().is_empty());
    }

    #[test]
    fn hard_links_in_a_layer_share_an_inode() {
        let fx = Fx::new(1);
        fx.put("l0/a/f", "data");
        fs::create_dir_all(fx.root.join("l0/b")).unwrap();
        fs::hard_link(fx.root.join("l0/a/f"), fx.root.join("l0/b/g")).unwrap();
        let u = fx.union(1, true);
        let f = u.lookup(path_ino(&u, "a"), OsStr::new("f")).unwrap();
        let g = u.lookup(path_ino(&u, "b"), OsStr::new("g")).unwrap();
        assert_eq!(f.ino, g.ino);
        assert_eq!(f.attr.nlink, 2);
        // Writing through one name changes what the other shows.
        let h = u
            .open(f.ino, libc::O_WRONLY | libc::O_APPEND, false)
            .unwrap();
        h.write_at(b"+", 4).unwrap();
        assert_eq!(read_all(&u, g.ino), "data+");
        assert_eq!(fs::read_to_string(fx.upper("b/g")).unwrap(), "data+");
    }

    #[test]
    fn unlink_of_lower_file_leaves_whiteout_and_name_can_come_back() {
        let fx = Fx::new(1);
        fx.put("l0/f", "lower");
        let u = fx.union(1, true);
        u.lookup(ROOT_INO, OsStr::new("f")).unwrap();
        u.unlink(ROOT_INO, OsStr::new("f")).unwrap();
        assert!(fx.upper(".wh.f").exists());
        assert!(names(&u, ROOT_INO).is_empty());
        assert_eq!(
            u.lookup(ROOT_INO, OsStr::new("f"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        let (s, f) = u
            .create(ROOT_INO, OsStr::new("f"), 0o644, libc::O_WRONLY, ME)
            .unwrap();
        f.write_at(b"new", 0).unwrap();
        assert!(!fx.upper(".wh.f").exists());
        assert_eq!(read_all(&u, s.ino), "new");
        // A fresh union over the same dirs sees the same.
        let u2 = fx.union(1, true);
        assert_eq!(names(&u2, ROOT_INO), vec!["f"]);
        assert_eq!(read_all(&u2, path_ino(&u2, "f")), "new");
    }

    #[test]
    fn chmod_of_lower_file_copies_no_data_and_keeps_inode() {
        let fx = Fx::new(1);
        let big = "x".repeat(1 << 20);
        fx.put("l0/big", &big);
        let u = fx.union(1, true);
        let before = u.lookup(ROOT_INO, OsStr::new("big")).unwrap();
        let after = u
            .setattr(
                before.ino,
                &SetAttr {
                    mode: Some(0o600),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        assert_eq!(after.ino, before.ino);
        assert_eq!(after.attr.perm, 0o600);
        assert_eq!(after.attr.size, 1 << 20);
        let up = sys::lstat(&fx.upper("big")).unwrap();
        assert_eq!(up.st_blocks, 0, "metadata-only copy-up must not copy data");
        assert_eq!(read_all(&u, before.ino).len(), 1 << 20);
        let f = u.open(before.ino, libc::O_RDONLY, false).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 1 << 20);
        assert!(buf.iter().all(|b| *b == b'x'));
        // A write fills in the data; the marker goes once it is flushed.
        let w = u.open(before.ino, libc::O_WRONLY, false).unwrap();
        w.write_at(b"y", 0).unwrap();
        let r = u.open(before.ino, libc::O_RDONLY, false).unwrap();
        assert_eq!(r.read_at(&mut buf[..2], 0).unwrap(), 2);
        assert_eq!(&buf[..2], b"yx", "reads see the upper copy at once");
        u.finish_flush(before.ino).unwrap();
        assert_eq!(marker(&fx.upper("big")), None);
        let data = fs::read(fx.upper("big")).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert_eq!(data[0], b'y');
        assert!(data[1..].iter().all(|b| *b == b'x'));
    }

    fn marker(p: &Path) -> Option<Vec<u8>> {
        sys::getxattr(p, OsStr::new(whiteout::METACOPY_XATTR)).unwrap()
    }

    #[test]
    fn copy_up_for_write_keeps_its_marker_until_flushed() {
        let fx = Fx::new(1);
        fx.put("l0/f", &"x".repeat(100_000));
        let u = fx.union(1, true);
        let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
        let w = u.open(ino, libc::O_WRONLY | libc::O_APPEND, false).unwrap();
        assert!(w.is_upper());
        w.write_at(b"tail", 100_000).unwrap();
        // finish_flush waits for a flush the background thread has begun.
        u.finish_flush(ino).unwrap();
        assert_eq!(marker(&fx.upper("f")), None);
        assert_eq!(u.getattr(ino).unwrap().attr.size, 100_004);
        let data = fs::read(fx.upper("f")).unwrap();
        assert_eq!(&data[..3], b"xxx");
        assert_eq!(&data[100_000..], b"tail");
        // Without metacopy (upper dirs read by other tools) no marker is
        // ever written: the copy is flushed before it is renamed in.
        fx.put("l0/g", "gg");
        let u = fx.union(1, false);
        let ino = u.lookup(ROOT_INO, OsStr::new("g")).unwrap().ino;
        u.open(ino, libc::O_WRONLY, false).unwrap();
        assert_eq!(marker(&fx.upper("g")), None);
        assert_eq!(fs::read(fx.upper("g")).unwrap(), b"gg");
    }

    #[test]
    fn crash_before_a_copy_is_flushed_reads_the_lower_file() {
        // What a crash leaves when a copied-up file was appended to and its
        // data never reached the disk: the placeholder with its markers (one
        // of an earlier boot), the new size, and whatever blocks made it.
        // "t" had a 4-byte tail when its data was filled in, which stays.
        let fx = Fx::new(1);
        fx.put("l0/d/f", &"x".repeat(5000));
        fx.put("upper/d/f", &"\0".repeat(5010));
        fx.put("l0/d/t", &"x".repeat(5000));
        fx.put("upper/d/t", &format!("{}TAIL+unsynced", "\0".repeat(5000)));
        fx.put("upper/d/same", "");
        fx.put("l0/d/same", "lower");
        for (name, size) in [("f", None), ("t", None), ("same", Some(5))] {
            let p = fx.upper(&format!("d/{name}"));
            let x = |n: &str, v: &[u8]| sys::setxattr(&p, OsStr::new(n), v, 0).unwrap();
            x(whiteout::METACOPY_XATTR, format!("d/{name}").as_bytes());
            match size {
                Some(s) => sys::truncate(&p, s).unwrap(),
                None if name == "t" => x(whiteout::UNFLUSHED_XATTR, b"an-earlier-boot 5004"),
                None => x(whiteout::UNFLUSHED_XATTR, b"an-earlier-boot 5000"),
            }
        }
        let u = fx.union(1, true);
        let d = u.lookup(ROOT_INO, OsStr::new("d")).unwrap().ino;
        let f = u.lookup(d, OsStr::new("f")).unwrap();
        assert_eq!(f.attr.size, 5000, "the size is the lower file's again");
        let mut buf = vec![0u8; 8192];
        let r = u.open(f.ino, libc::O_RDONLY, false).unwrap();
        assert_eq!(r.read_at(&mut buf, 0).unwrap(), 5000);
        assert!(buf[..5000].iter().all(|b| *b == b'x'));
        assert_eq!(fs::metadata(fx.upper("d/f")).unwrap().len(), 5000);
        let t = u.lookup(d, OsStr::new("t")).unwrap().ino;
        assert_eq!(read_all(&u, t), format!("{}TAIL", "x".repeat(5000)));
        // A chmod-only copy (same size) is a plain metacopy file.
        let same = u.lookup(d, OsStr::new("same")).unwrap().ino;
        assert_eq!(read_all(&u, same), "lower");
    }

    #[test]
    fn write_only_open_appends_without_copying_the_data() {
        let fx = Fx::new(1);
        let lower = "x".repeat(300_000);
        for name in ["f", "g", "h", "r"] {
            fx.put(&format!("l0/{name}"), &lower);
        }
        fx.put("l0/k", "kk");
        let u = fx.union(1, true);
        let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
        let w = u.open(ino, libc::O_WRONLY | libc::O_APPEND, true).unwrap();
        assert!(matches!(w, OpenFile::Tail(_)));
        u.write(&w, b"tail", 300_000).unwrap();
        let meta = fs::metadata(fx.upper("f")).unwrap();
        assert_eq!(meta.len(), 300_004);
        assert!(
            meta.blocks() * 512 < 100_000,
            "no data copied: {} blocks",
            meta.blocks()
        );
        assert!(marker(&fx.upper("f")).is_some());
        assert_eq!(u.getattr(ino).unwrap().attr.size, 300_004);
        // The tail is on disk as it is: a new mount reads lower data + tail.
        let again = fx.union(1, true);
        let ino2 = again.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
        assert_eq!(read_all(&again, ino2), format!("{lower}tail"));
        drop(again);
        // Opening it for reading fills the data in, keeping the tail.
        u.write(&w, b"more", 300_004).unwrap();
        assert_eq!(read_all(&u, ino), format!("{lower}tailmore"));
        u.finish_flush(ino).unwrap();
        assert_eq!(marker(&fx.upper("f")), None);

        // A write inside the lower data fills it in first.
        let g = u.lookup(ROOT_INO, OsStr::new("g")).unwrap().ino;
        let w = u.open(g, libc::O_WRONLY, true).unwrap();
        assert!(matches!(w, OpenFile::Tail(_)));
        u.write(&w, b"end", 300_000).unwrap();
        u.write(&w, b"AB", 1).unwrap();
        let mut want = lower.clone().into_bytes();
        want[1..3].copy_from_slice(b"AB");
        want.extend_from_slice(b"end");
        assert_eq!(fs::read(fx.upper("g")).unwrap(), want);
        assert_eq!(read_all(&u, g).into_bytes(), want);
        // ... also once its name is gone (through the handle's own file).
        let h = u.lookup(ROOT_INO, OsStr::new("h")).unwrap().ino;
        let w = u.open(h, libc::O_WRONLY, true).unwrap();
        let keep = fs::File::open(fx.upper("h")).unwrap();
        u.unlink(ROOT_INO, OsStr::new("h")).unwrap();
        u.write(&w, b"Z", 0).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &keep, &mut got).unwrap();
        assert_eq!(got.len(), 300_000);
        assert_eq!(&got[..2], b"Zx");
        // A reader opened while a tail may still come reads the upper file.
        let r = u.lookup(ROOT_INO, OsStr::new("r")).unwrap().ino;
        let w = u.open(r, libc::O_WRONLY | libc::O_APPEND, true).unwrap();
        let reader = u.open(r, libc::O_RDONLY, false).unwrap();
        assert!(reader.is_upper(), "a reader of a file with a tail open");
        u.write(&w, b"new", 300_000).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(reader.read_at(&mut buf, 299_999).unwrap(), 4);
        assert_eq!(&buf[..4], b"xnew");
        drop((w, reader));
        // Without defer_data, or with O_RDWR or O_TRUNC, opens are as before.
        let k = u.lookup(ROOT_INO, OsStr::new("k")).unwrap().ino;
        assert!(matches!(
            u.open(k, libc::O_WRONLY, false).unwrap(),
            OpenFile::Upper(_)
        ));
        assert!(matches!(
            u.open(k, libc::O_RDWR, true).unwrap(),
            OpenFile::Upper(_)
        ));
    }

    #[test]
    fn a_copy_filled_in_this_boot_survives_its_server() {
        // The server died after filling in two copies and appending, before
        // flushing them; one was filled in this boot, one in an earlier one.
        let fx = Fx::new(1);
        let Some(boot) = flush::boot_id() else {
            panic!("no /proc/sys/kernel/random/boot_id");
        };
        for (name, id) in [("now", boot), ("before", b"an-earlier-boot".to_vec())] {
            fx.put(&format!("l0/{name}"), "lower");
            fx.put(&format!("upper/{name}"), "lower+appended");
            let p = fx.upper(name);
            let x = |n: &str, v: &[u8]| sys::setxattr(&p, OsStr::new(n), v, 0).unwrap();
            x(whiteout::METACOPY_XATTR, name.as_bytes());
            x(whiteout::UNFLUSHED_XATTR, &id);
        }
        let u = fx.union(1, true);
        let now = u.lookup(ROOT_INO, OsStr::new("now")).unwrap();
        assert_eq!(read_all(&u, now.ino), "lower+appended");
        assert_eq!(now.attr.size, 14);
        let before = u.lookup(ROOT_INO, OsStr::new("before")).unwrap();
        assert_eq!(read_all(&u, before.ino), "lower");
        assert_eq!(before.attr.size, 5);
        for (name, metacopy) in [("now", false), ("before", true)] {
            let p = fx.upper(name);
            assert_eq!(marker(&p).is_some(), metacopy, "{name}: marker");
            let unflushed = sys::getxattr(&p, OsStr::new(whiteout::UNFLUSHED_XATTR)).unwrap();
            assert_eq!(unflushed, None, "{name}: unflushed mark left");
        }
    }

    #[test]
    fn open_with_o_trunc_copies_no_data() {
        let fx = Fx::new(1);
        fx.put("l0/f", "lower data");
        let u = fx.union(1, true);
        let s = u.lookup(ROOT_INO, OsStr::new("f")).unwrap();
        let f = u
            .open(s.ino, libc::O_WRONLY | libc::O_TRUNC, false)
            .unwrap();
        assert_eq!(u.getattr(s.ino).unwrap().attr.size, 0);
        f.write_at(b"n", 0).unwrap();
        assert_eq!(fs::read_to_string(fx.upper("f")).unwrap(), "n");
    }

    #[test]
    fn rename_of_lower_dir_moves_its_tree() {
        let fx = Fx::new(2);
        fx.put("l1/d/a", "a");
        fx.put("l1/d/sub/b", "b");
        fx.put("l0/d/c", "c");
        fx.put("l1/t/x", "hidden below the new name");
        fx.put("l0/.wh.t", "");
        let u = fx.union(2, true);
        let d = path_ino(&u, "d");
        u.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("t"), 0)
            .unwrap();
        assert_eq!(names(&u, ROOT_INO), vec!["t"]);
        assert_eq!(path_ino(&u, "t"), d);
        assert_eq!(names(&u, d), vec!["a", "c", "sub"]);
        assert_eq!(read_all(&u, path_ino(&u, "t/sub/b")), "b");
        // The same tree after a remount: the old lower content of `t` stays hidden.
        let u2 = fx.union(2, true);
        assert_eq!(names(&u2, ROOT_INO), vec!["t"]);
        assert_eq!(names(&u2, path_ino(&u2, "t")), vec!["a", "c", "sub"]);
    }

    #[test]
    fn mkdir_over_deleted_lower_dir_is_empty() {
        let fx = Fx::new(1);
        fx.put("l0/d/f", "f");
        let u = fx.union(1, true);
        let d = path_ino(&u, "d");
        assert_eq!(
            u.rmdir(ROOT_INO, OsStr::new("d"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        u.unlink(d, OsStr::new("f")).unwrap();
        u.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
        let nd = u.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).unwrap();
        assert_ne!(nd.ino, d);
        assert!(names(&u, nd.ino).is_empty());
        let u2 = fx.union(1, true);
        assert!(names(&u2, path_ino(&u2, "d")).is_empty());
    }

    #[test]
    fn reserved_names_and_read_only() {
        let fx = Fx::new(1);
        let u = fx.union(1, true);
        let e = u
            .create(ROOT_INO, OsStr::new(".wh.x"), 0o644, libc::O_WRONLY, ME)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let ro = Union::new(Config {
            lowers: vec![Arc::new(DirLayer::new(&fx.root.join("l0")).unwrap())],
            upper: None,
            metacopy: true,
            fsync: true,
        })
        .unwrap();
        assert_eq!(
            ro.mkdir(ROOT_INO, OsStr::new("x"), 0o755, ME)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EROFS)
        );
    }

    #[test]
    fn leftover_copy_up_temp_files_are_cleared() {
        let fx = Fx::new(1);
        fx.put("work/rcfs-tmp-1-0", "half a copy");
        let _u = fx.union(1, true);
        assert!(!fx.root.join("work/rcfs-tmp-1-0").exists());
    }

    #[test]
    fn listing_and_loading_in_parallel_do_not_deadlock() {
        // Readdir of a dir and of its subdirs, prefetch scans, and loads
        // that add nodes, all at once: each takes node locks and the inode
        // table in its own pattern.
        let fx = Fx::new(4);
        for l in 0..4 {
            for d in 0..12 {
                for s in 0..12 {
                    fx.put(&format!("l{l}/d{d}/s{s}/f{l}"), "x");
                }
            }
        }
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..20 {
                let u = Arc::new(fx.union(4, true));
                let dirs: Vec<u64> = u
                    .list_dir(ROOT_INO)
                    .unwrap()
                    .iter()
                    .map(|e| e.ino)
                    .collect();
                let workers: Vec<_> = (0..4)
                    .map(|w| {
                        let (u, dirs) = (u.clone(), dirs.clone());
                        std::thread::spawn(move || {
                            for &d in &dirs {
                                match w {
                                    0 | 1 => {
                                        u.list_dir(d).unwrap();
                                        u.drop_listing(d);
                                        u.list_dir(ROOT_INO).unwrap();
                                        u.drop_listing(ROOT_INO);
                                    }
                                    2 => {
                                        for s in u.unloaded_subdirs(d) {
                                            u.preload(s);
                                        }
                                    }
                                    _ => {
                                        u.unloaded_subdirs(ROOT_INO);
                                        for s in u.list_dir(d).unwrap().iter() {
                                            u.list_dir(s.ino).unwrap();
                                            u.drop_listing(s.ino);
                                        }
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().unwrap();
                }
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("deadlock: listing and loading threads stopped making progress");
    }

    #[test]
    fn readdir_resumes_at_its_offset_while_the_dir_changes() {
        let fx = Fx::new(1);
        for i in 0..50 {
            fx.put(&format!("l0/f{i:02}"), "x");
        }
        let u = fx.union(1, true);
        let first = u.list_dir(ROOT_INO).unwrap();
        // A reader has seen the first 20 entries; then one of those goes and
        // a new name comes.
        let resume = first[19].cookie;
        let rest_before: Vec<OsString> = first[20..].iter().map(|e| e.name.clone()).collect();
        u.unlink(ROOT_INO, &first[3].name.clone()).unwrap();
        u.create(ROOT_INO, OsStr::new("new"), 0o644, libc::O_WRONLY, ME)
            .unwrap();
        let now = u.list_dir(ROOT_INO).unwrap();
        let rest_after: Vec<OsString> = now
            .iter()
            .filter(|e| e.cookie > resume)
            .map(|e| e.name.clone())
            .filter(|n| n != "new")
            .collect();
        // Nothing the reader has not seen is skipped or repeated.
        assert_eq!(rest_after, rest_before);
        // A listing dropped at the end of a pass comes back the same.
        u.drop_listing(ROOT_INO);
        let again = u.list_dir(ROOT_INO).unwrap();
        assert!(!Arc::ptr_eq(&now, &again), "the listing was not dropped");
        let key = |l: &[DirEntry]| -> Vec<(u64, OsString, u64)> {
            l.iter()
                .map(|e| (e.ino, e.name.clone(), e.cookie))
                .collect()
        };
        assert_eq!(key(&now), key(&again));
    }

    /// A host directory layer that records what is asked of it ahead.
    #[derive(Debug)]
    struct Recording {
        inner: DirLayer,
        layer: usize,
        asked: Arc<Mutex<Vec<(usize, String, u64)>>>,
    }

    impl Layer for Recording {
        fn stat(&self, path: &Path) -> io::Result<Attr> {
            self.inner.stat(path)
        }
        fn read_dir(
            &self,
            path: &Path,
            want_attr: &mut dyn FnMut(&OsStr, Kind) -> bool,
        ) -> io::Result<layer::Listing> {
            self.inner.read_dir(path, want_attr)
        }
        fn readlink(&self, path: &Path) -> io::Result<OsString> {
            self.inner.readlink(path)
        }
        fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
            self.inner.list_xattrs(path)
        }
        fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
            self.inner.get_xattr(path, name)
        }
        fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
            self.inner.open(path)
        }
        fn host_path(&self, path: &Path) -> Option<PathBuf> {
            self.inner.host_path(path)
        }
        fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
            let p = path.to_string_lossy().into_owned();
            self.asked.lock().push((self.layer, p, len));
            self.inner.will_need(path, len)
        }
    }

    #[test]
    fn read_ahead_asks_the_next_files_of_the_directory_in_readdir_order() {
        let fx = Fx::new(2);
        for i in 0..20 {
            fx.put(&format!("l1/d/f{i:02}"), "lower");
        }
        fx.put("l0/d/f05", &"x".repeat(300 * 1024)); // hides l1's, is large
        fs::create_dir_all(fx.root.join("l1/d/sub")).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let lowers: Vec<Arc<dyn Layer>> = (0..2)
            .map(|i| {
                Arc::new(Recording {
                    inner: DirLayer::new(&fx.root.join(format!("l{i}"))).unwrap(),
                    layer: i,
                    asked: asked.clone(),
                }) as Arc<dyn Layer>
            })
            .collect();
        let u = Union::new(Config {
            lowers,
            upper: Some(UpperConfig {
                upper: fx.root.join("upper"),
                work: fx.root.join("work"),
            }),
            metacopy: true,
            fsync: true,
        })
        .unwrap();
        let d = path_ino(&u, "d");
        // f07 copied up with its data: nothing left below to read ahead.
        let f07 = path_ino(&u, "d/f07");
        drop(u.open(f07, libc::O_RDWR, false).unwrap());
        // f09 chmod'ed: a metacopy, its data still below.
        let f09 = path_ino(&u, "d/f09");
        let chmod = SetAttr {
            mode: Some(0o600),
            ..Default::default()
        };
        u.setattr(f09, &chmod, None).unwrap();

        let all = u.list_dir(d).unwrap();
        let files: Vec<DirEntry> = all
            .iter()
            .filter(|e| e.kind == Kind::File)
            .cloned()
            .collect();
        assert_eq!(files.len(), 20);
        let (dir, c) = u.position(files[0].ino).unwrap();
        assert_eq!((dir, c), (d, files[0].cookie));
        let sub = all.iter().find(|e| e.kind == Kind::Dir).unwrap();
        assert_eq!(u.position(sub.ino), None, "a directory is not read ahead");

        // The 20 entries after the first file, in readdir order, 12 at most
        // per call.
        let mut got = u.read_ahead(d, c, 12);
        assert_eq!(got.len(), 12);
        got.extend(u.read_ahead(d, *got.last().unwrap(), 12));
        let want: Vec<u64> = all.iter().map(|e| e.cookie).filter(|&x| x > c).collect();
        assert_eq!(got, want);
        assert!(u.read_ahead(d, *want.last().unwrap(), 12).is_empty());

        // Each file whose data is below, once, from the layer that holds it.
        let mut asked = asked.lock().clone();
        asked.sort();
        let mut expect: Vec<(usize, String, u64)> = files[1..]
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .filter(|n| n != "f07")
            .map(|n| match n.as_str() {
                "f05" => (0, format!("d/{n}"), READ_AHEAD_BYTES),
                _ => (1, format!("d/{n}"), 5),
            })
            .collect();
        expect.sort();
        assert_eq!(asked, expect);
    }
}
