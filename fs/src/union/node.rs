//! The inode table's entries: one [`Node`] per merged entry the kernel has
//! seen (with all its hard links), and a directory's merged children.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::layer::{Attr, Kind};
use crate::lock::{Mutex, Rank, RwLock};
use crate::IdHasher;

/// One merged entry.
#[derive(Debug)]
pub(crate) struct Node {
    /// The node's own number: the key of the inode table, of its parent's
    /// children map and of the upper fd cache. Never changes.
    pub(crate) id: u64,
    /// What it is; never changes (an entry replaced by another kind is
    /// another node).
    pub(crate) kind: Kind,
    /// The inode number the kernel knows it by, and its `st_ino`: `id`,
    /// unless it was given a new kernel inode (see
    /// [`super::Union::reincarnate`]).
    pub(crate) kernel_ino: AtomicU64,
    /// Lookups the kernel holds, over all its kernel inode numbers (FUSE
    /// `lookup` count). The node may leave the table only when this is 0
    /// and `linked` is false.
    pub(crate) lookups: AtomicU64,
    /// False once the last name is gone. Changed only under the tree lock
    /// (write), read without it where the inode table decides a node's end.
    pub(crate) linked: AtomicBool,
    /// Serialises copy-ups and data fills of this node.
    pub(crate) copy_lock: Mutex<()>,
    /// Serialises loading this directory's children.
    pub(crate) load_lock: Mutex<()>,
    /// Open write-only handles whose writes may land past the lower data
    /// ([`super::io::OpenFile::Tail`]): while there are any, the upper file
    /// may grow at any time, so readers must not be given the lower file.
    pub(crate) tails: AtomicU32,
    /// Open handles that execute this file (`__FMODE_EXEC`): while there
    /// are any, an open may not truncate it (ETXTBSY), as the kernel
    /// refuses writes to a running program.
    pub(crate) execs: AtomicU32,
    /// A copy-up moved this node's upper entry into its parent and the
    /// parent dir has not been flushed since: an `fsync` of the file must
    /// flush it too.
    pub(crate) dir_unsynced: AtomicBool,
    /// Everything else; see [`NodeState`].
    pub(crate) state: RwLock<NodeState>,
}

impl Node {
    pub(crate) fn new(id: u64, kind: Kind, state: NodeState) -> Node {
        Node {
            id,
            kind,
            kernel_ino: AtomicU64::new(id),
            lookups: AtomicU64::new(0),
            linked: AtomicBool::new(true),
            copy_lock: Mutex::new(Rank::CopyUp, ()),
            load_lock: Mutex::new(Rank::Load, ()),
            tails: AtomicU32::new(0),
            execs: AtomicU32::new(0),
            dir_unsynced: AtomicBool::new(false),
            state: RwLock::new(Rank::NodeState, state),
        }
    }

    pub(crate) fn ino(&self) -> u64 {
        self.kernel_ino.load(Ordering::Relaxed)
    }

    pub(crate) fn is_linked(&self) -> bool {
        self.linked.load(Ordering::SeqCst)
    }
}

/// A node's fields that change. Names (`parent`, `name`, `aliases`) change
/// only under the tree lock held for writing, so a reader holding it for
/// reading sees them agree with the upper dir on disk.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Primary name: the parent's id and the name (root: 0 and "").
    pub(crate) parent: u64,
    pub(crate) name: Arc<OsStr>,
    /// Further names of this file (hard links), as (parent, name).
    pub(crate) aliases: Vec<(u64, Arc<OsStr>)>,
    /// The upper dir has this entry.
    pub(crate) upper: bool,
    /// The upper entry holds metadata only; data lives in `lower`.
    pub(crate) metacopy: bool,
    /// Topmost lower entry (data source while not copied up).
    pub(crate) lower: Option<LowerRef>,
    /// Directories only.
    pub(crate) dir: Option<Box<DirState>>,
    /// Once the last name of an upper entry is gone while the kernel may
    /// still use it (an open fd, an `O_PATH` fd): an `O_PATH` fd of it, the
    /// only way left to reach it.
    pub(crate) orphan: Option<Arc<OwnedFd>>,
}

impl NodeState {
    pub(crate) fn new(parent: u64, name: Arc<OsStr>) -> NodeState {
        NodeState {
            parent,
            name,
            aliases: Vec::new(),
            upper: false,
            metacopy: false,
            lower: None,
            dir: None,
            orphan: None,
        }
    }

    /// How many layers (upper and lower) this directory merges.
    pub(crate) fn sources(&self) -> usize {
        usize::from(self.upper) + self.dir.as_ref().map_or(0, |d| d.lower_dirs.len())
    }

    pub(crate) fn children(&self) -> Option<&Children> {
        self.dir.as_ref()?.children.as_ref()
    }

    pub(crate) fn children_mut(&mut self) -> Option<&mut Children> {
        self.dir.as_mut()?.children.as_mut()
    }
}

/// A directory's own fields.
#[derive(Debug, Default)]
pub(crate) struct DirState {
    /// The lower layers (top first) that hold a directory at the node's
    /// lower path and may contribute entries; cut at an opaque one on load.
    pub(crate) lower_dirs: Vec<u32>,
    /// Merged children, `None` until first needed.
    pub(crate) children: Option<Children>,
}

/// The topmost lower entry a node shows (or, for a metacopy upper file, the
/// entry that holds its data).
#[derive(Debug, Clone)]
pub(crate) struct LowerRef {
    pub(crate) layer: u32,
    pub(crate) path: Box<Path>,
    pub(crate) attr: Attr,
}

/// A child of a loaded directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
}

/// The merged children of a loaded directory.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Name → node of every visible entry. Changed only through
    /// [`Children::insert`] and [`Children::remove`] once loaded.
    pub(crate) map: HashMap<Arc<OsStr>, Child>,
    /// Names that lower layers hold here (visible or whited out): removing
    /// such a name must leave a whiteout, and a directory created under it
    /// must be opaque.
    pub(crate) lower_names: NameSet,
    /// The listing in readdir order (by cookie), built when a readdir pass
    /// starts and dropped when it ends or `map` changes.
    pub(crate) listing: Option<Arc<Vec<DirEntry>>>,
}

impl Children {
    pub(crate) fn insert(&mut self, name: Arc<OsStr>, child: Child) {
        self.map.insert(name, child);
        self.listing = None;
    }

    pub(crate) fn remove(&mut self, name: &OsStr) {
        self.map.remove(name);
        self.listing = None;
    }

    pub(crate) fn get(&self, name: &OsStr) -> Option<Child> {
        self.map.get(name).copied()
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The entry's inode number.
    pub ino: u64,
    pub kind: Kind,
    pub name: Arc<OsStr>,
    /// The readdir offset of the entry after this one.
    pub cookie: u64,
}

/// A set of names kept as 64-bit hashes: a tenth of the memory of the names.
/// A collision can only make a name look held by a lower layer when it is
/// not, which costs a whiteout or an opaque marker that hides nothing.
#[derive(Debug, Default)]
pub(crate) struct NameSet(HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>);

impl NameSet {
    pub(crate) fn insert(&mut self, name: &OsStr) {
        self.0.insert(name_hash(name));
    }
    pub(crate) fn contains(&self, name: &OsStr) -> bool {
        self.0.contains(&name_hash(name))
    }
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// The readdir offset of the entry after `name`: a hash of the name, so that
/// a listing resumed at an offset neither skips nor repeats entries when
/// others are added or removed in between (as ext4 does). 0, 1 and 2 are
/// the start, `.` and `..`.
pub(crate) fn cookie(name: &OsStr) -> u64 {
    (name_hash(name) >> 2) + 3
}

/// A fixed 64-bit hash of a name (the same in every run).
pub(crate) fn name_hash(name: &OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// A name as the shared form the tree keeps.
pub(crate) fn shared(name: &OsStr) -> Arc<OsStr> {
    Arc::from(name)
}

/// An owned copy of a shared name.
pub(crate) fn owned(name: &Arc<OsStr>) -> OsString {
    name.as_ref().to_owned()
}
