//! The inode table's entries: one [`Node`] per merged entry the kernel has
//! seen (with all its hard links), and a directory's merged children.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::layer::{Attr, Kind, Time};
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
    /// It was given a new kernel inode number (see
    /// [`super::Union::reincarnate`]): its inode number is no longer `id`.
    pub(crate) reincarnated: AtomicBool,
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
    /// A [`super::io::OpenFile::Tail`] was opened: the upper file may hold
    /// bytes past the lower data even once no tail is open, so a handle
    /// that reads the lower file must have the data filled in first.
    pub(crate) tailed: AtomicBool,
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
            reincarnated: AtomicBool::new(false),
            lookups: AtomicU64::new(0),
            linked: AtomicBool::new(true),
            copy_lock: Mutex::new(Rank::CopyUp, ()),
            load_lock: Mutex::new(Rank::Load, ()),
            tails: AtomicU32::new(0),
            tailed: AtomicBool::new(false),
            execs: AtomicU32::new(0),
            dir_unsynced: AtomicBool::new(false),
            state: RwLock::new(Rank::NodeState, state),
        }
    }

    pub(crate) fn is_linked(&self) -> bool {
        self.linked.load(Ordering::SeqCst)
    }
}

/// A node's fields that change. Names (`parent`, `name`, the aliases)
/// change only under the tree lock held for writing, so a reader holding it
/// for reading sees them agree with the upper dir on disk. Kept small: the
/// union holds one per entry the kernel has seen.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Primary name: the parent's id and the name (root: 0 and ""). The
    /// name is shared with the parent's children map.
    pub(crate) parent: u64,
    pub(crate) name: Arc<OsStr>,
    /// The upper dir has this entry.
    pub(crate) upper: bool,
    /// The upper entry holds metadata only; data lives in `lower`.
    pub(crate) metacopy: bool,
    /// Topmost lower entry (data source while not copied up).
    pub(crate) lower: Option<LowerRef>,
    /// Directories only.
    pub(crate) dir: Option<Box<DirState>>,
    /// What few nodes have.
    rare: Option<Box<Rare>>,
}

/// The fields of [`NodeState`] that few nodes need.
#[derive(Debug, Default)]
struct Rare {
    /// Further names of this file (hard links), as (parent, name).
    aliases: Vec<(u64, Arc<OsStr>)>,
    /// Once the last name of an upper entry is gone while the kernel may
    /// still use it (an open fd, an `O_PATH` fd): an `O_PATH` fd of it, the
    /// only way left to reach it.
    orphan: Option<Arc<OwnedFd>>,
}

impl NodeState {
    pub(crate) fn new(parent: u64, name: Arc<OsStr>) -> NodeState {
        NodeState {
            parent,
            name,
            upper: false,
            metacopy: false,
            lower: None,
            dir: None,
            rare: None,
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

    /// The node's other names (hard links).
    pub(crate) fn aliases(&self) -> &[(u64, Arc<OsStr>)] {
        self.rare.as_ref().map_or(&[], |r| &r.aliases)
    }

    pub(crate) fn aliases_mut(&mut self) -> &mut Vec<(u64, Arc<OsStr>)> {
        &mut self.rare.get_or_insert_with(Default::default).aliases
    }

    /// The fd that reaches an upper entry whose names are all gone.
    pub(crate) fn orphan(&self) -> Option<&Arc<OwnedFd>> {
        self.rare.as_ref()?.orphan.as_ref()
    }

    pub(crate) fn set_orphan(&mut self, fd: Option<Arc<OwnedFd>>) {
        if fd.is_some() || self.rare.is_some() {
            self.rare.get_or_insert_with(Default::default).orphan = fd;
        }
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
    /// Children looked up one by one before the directory could be loaded
    /// (a layer still arriving): loading takes these nodes over. Boxed:
    /// 8 bytes in every directory instead of a map's 48.
    #[allow(clippy::box_collection)]
    pub(crate) early: Option<Box<HashMap<Arc<OsStr>, Child>>>,
}

/// The topmost lower entry a node shows (or, for a metacopy upper file, the
/// entry that holds its data), as kept; see [`Lower`] for it with its path.
#[derive(Debug, Clone)]
pub(crate) struct LowerRef {
    pub(crate) layer: u32,
    /// The entry's path in its layer. `None`: its parent directory's lower
    /// path and its own name (most files; spelled out before the node's
    /// name changes).
    pub(crate) path: Option<Box<PathBuf>>,
    pub(crate) attr: LowerAttr,
}

/// A lower entry with its path spelled out ([`super::Union::lower_of`]).
#[derive(Debug, Clone)]
pub(crate) struct Lower {
    pub(crate) layer: u32,
    pub(crate) path: PathBuf,
    pub(crate) attr: LowerAttr,
}

/// A lower entry's attributes as the union keeps them: an [`Attr`]
/// without the file id, which matters only while a directory is loaded
/// (hard links are grouped then) and can be asked of the layer again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LowerAttr {
    pub(crate) size: u64,
    pub(crate) blocks: u64,
    pub(crate) atime: Time,
    pub(crate) mtime: Time,
    pub(crate) ctime: Time,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u32,
    pub(crate) rdev: u32,
    pub(crate) perm: u16,
    pub(crate) kind: Kind,
}

impl From<&Attr> for LowerAttr {
    fn from(a: &Attr) -> LowerAttr {
        LowerAttr {
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink,
            rdev: a.rdev,
            perm: a.perm,
            kind: a.kind,
        }
    }
}

impl LowerAttr {
    /// As an [`Attr`] (file id 0: nothing the union reports uses it).
    pub(crate) fn to_attr(&self) -> Attr {
        Attr {
            size: self.size,
            blocks: self.blocks,
            file_id: 0,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            rdev: self.rdev,
            perm: self.perm,
            kind: self.kind,
        }
    }
}

/// A child of a loaded directory in one word: its node id, its kind, and
/// whether a lower layer holds its name (then removing it must leave a
/// whiteout, and a directory made in its place must be opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child(u64);

impl Child {
    const KIND_SHIFT: u32 = 61;
    const LOWER: u64 = 1 << 60;

    pub(crate) fn new(id: u64, kind: Kind) -> Child {
        debug_assert!(id < Self::LOWER);
        let k = match kind {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
            Kind::CharDev => 3,
            Kind::BlockDev => 4,
            Kind::Fifo => 5,
            Kind::Socket => 6,
        };
        Child(id | (k << Self::KIND_SHIFT))
    }

    pub(crate) fn id(self) -> u64 {
        self.0 & (Self::LOWER - 1)
    }

    /// Whether a lower layer holds this child's name.
    pub(crate) fn lower(self) -> bool {
        self.0 & Self::LOWER != 0
    }

    fn with_lower(self, lower: bool) -> Child {
        if lower {
            Child(self.0 | Self::LOWER)
        } else {
            Child(self.0 & !Self::LOWER)
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self.0 >> Self::KIND_SHIFT {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::CharDev,
            4 => Kind::BlockDev,
            5 => Kind::Fifo,
            _ => Kind::Socket,
        }
    }
}

/// The inode table: every node, found by its id. A set of the nodes
/// themselves, hashed by id, rather than a map from ids: 8 bytes a node.
#[derive(Debug, Default)]
pub(crate) struct NodeTable(HashSet<TableEntry, std::hash::BuildHasherDefault<IdHasher>>);

#[derive(Debug)]
struct TableEntry(Arc<Node>);

impl std::hash::Hash for TableEntry {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.id.hash(h)
    }
}

impl PartialEq for TableEntry {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for TableEntry {}

impl std::borrow::Borrow<u64> for TableEntry {
    fn borrow(&self) -> &u64 {
        &self.0.id
    }
}

impl NodeTable {
    pub(crate) fn get(&self, id: &u64) -> Option<&Arc<Node>> {
        self.0.get(id).map(|e| &e.0)
    }

    pub(crate) fn insert(&mut self, node: Arc<Node>) {
        self.0.replace(TableEntry(node));
    }

    pub(crate) fn remove(&mut self, id: &u64) {
        self.0.remove(id);
    }
}

/// The merged children of a loaded directory.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Name → node of every visible entry. Changed only through
    /// [`Children::insert`] and [`Children::remove`] once loaded.
    pub(crate) map: HashMap<Arc<OsStr>, Child>,
    /// Names that lower layers hold here and that no visible entry has
    /// (whited out, or removed): a name given to a new entry must not show
    /// the lower one. (A visible entry's [`Child`] says so itself.)
    hidden_lower: NameSet,
    /// The listing in readdir order (by cookie), built when a readdir pass
    /// starts and dropped when it ends or `map` changes.
    pub(crate) listing: Option<Arc<Vec<DirEntry>>>,
}

impl Children {
    /// Children loaded from layers (`map`, each with its lower flag unset)
    /// and the names lower layers hold here.
    pub(crate) fn loaded(mut map: HashMap<Arc<OsStr>, Child>, mut lower: NameSet) -> Children {
        for (name, c) in map.iter_mut() {
            if lower.remove(name) {
                *c = c.with_lower(true);
            }
        }
        lower.0.shrink_to_fit();
        Children {
            map,
            hidden_lower: lower,
            listing: None,
        }
    }

    /// Puts `child` at `name`, in place of what was there if anything (its
    /// lower flag is the name's, not the child's).
    pub(crate) fn insert(&mut self, name: Arc<OsStr>, child: Child) {
        let lower = match self.map.get(&name) {
            Some(old) => old.lower(),
            None => self.hidden_lower.remove(&name),
        };
        self.map.insert(name, child.with_lower(lower));
        self.listing = None;
    }

    pub(crate) fn remove(&mut self, name: &OsStr) {
        if let Some(c) = self.map.remove(name) {
            if c.lower() {
                self.hidden_lower.insert(name);
            }
        }
        self.listing = None;
    }

    /// Whether a lower layer holds `name` here.
    pub(crate) fn has_lower(&self, name: &OsStr) -> bool {
        match self.map.get(name) {
            Some(c) => c.lower(),
            None => self.hidden_lower.contains(name),
        }
    }

    /// The lower layers no longer apply here (a directory moved away).
    pub(crate) fn forget_lower(&mut self) {
        self.hidden_lower.clear();
        for c in self.map.values_mut() {
            *c = c.with_lower(false);
        }
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
    pub(crate) fn remove(&mut self, name: &OsStr) -> bool {
        self.0.remove(&name_hash(name))
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
