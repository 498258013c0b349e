//! The union: read-only layers stacked under a copy-on-write upper directory.
//!
//! [`Union`] owns the *inode table*: one [`Node`] per name the kernel has
//! seen, with an inode number that stays the same for the mount's life,
//! through copy-up and renames. A directory's merged view is computed once,
//! on first use, from its upper dir and its lower layers (top first, stopping
//! at an opaque one) and then served from memory; every later change to the
//! tree goes through this module, which edits the upper dir and the
//! in-memory tree together. Lookups therefore cost the same for 2 or 64
//! layers.
//!
//! The methods are the filesystem operations as plain functions returning
//! `io::Result`, so unit tests drive them without a mount; [`crate::fuse`] is
//! the thin FUSE glue on top. By concern:
//! * [`load`] — merging a directory's layers into its children;
//! * [`names`] — lookups, listings, creating and removing names;
//! * [`rename`] — renames and exchanges;
//! * [`attr`] — attributes, xattrs, symlink targets, statfs;
//! * [`copyup`] — bringing an entry into the upper dir;
//! * [`io`] — open files, reads and writes, copy ranges, holes;
//! * [`readahead`] — where a file stands for reading ahead.
//!
//! The upper dir is reached only through [`Loc`]s (a directory fd and a
//! name), made while the tree lock is held so that the names the tree knows
//! and those on disk agree; see [`crate::upper`]. Locks are taken in the
//! order of [`crate::lock`]; at most one node's state lock is held at a time.

mod attr;
mod copyup;
pub mod io;
mod load;
mod names;
mod node;
mod readahead;
mod rename;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Result;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::errno;
use crate::flush::{self, Flusher};
use crate::layer::{Attr, Kind, Layer};
use crate::lock::{Mutex, Rank, ReadGuard, RwLock};
use crate::upper::{Loc, Upper};
use crate::IdMap;

pub use self::io::{Defer, ExecGuard, FileReader, OpenFile, TailFile};
pub use node::DirEntry;
use node::{DirState, Lower, LowerRef, Node, NodeState, NodeTable};
pub use readahead::READ_AHEAD_BYTES;

/// Inode number of the merged root directory.
pub const ROOT_INO: u64 = 1;

/// Layer index used in hard-link keys for files of the upper dir.
const UPPER_LAYER: u32 = u32::MAX;

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
    /// Flush copied-up data to disk before it becomes visible, and the
    /// upper dir at unmount; off for throwaway upper dirs (fuse-overlayfs's
    /// `volatile`/`fsync=0`), where programs' fsyncs are no-ops too.
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

impl SetAttr {
    /// Nothing to change: the kernel asks only to touch the ctime (a
    /// `chown(f, -1, -1)`).
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

/// A new timestamp.
#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(std::time::SystemTime),
}

/// The union filesystem.
#[derive(Debug)]
pub struct Union {
    lowers: Vec<Arc<dyn Layer>>,
    /// Some lower layer may still be arriving (see
    /// [`Union::lookup_early`]); false once all are complete.
    streaming: AtomicBool,
    upper: Option<Upper>,
    metacopy: bool,
    fsync: bool,
    /// Flushes copied-up data in the background (see [`crate::flush`]);
    /// `None` when copies are flushed in line or not at all.
    flusher: Option<Flusher>,
    /// This boot's id: tells a copy left unflushed by a server that died from
    /// one left by a crash of the system (see [`crate::flush`]).
    boot_id: Option<Vec<u8>>,
    /// Node id → node.
    nodes: RwLock<NodeTable>,
    /// Nodes given a new kernel inode ([`Union::reincarnate`]).
    reincarnated: Mutex<Reincarnated>,
    /// Hard-link groups: (layer, file id in layer) → node id.
    links: Mutex<HashMap<(u32, u64), u64>>,
    next_id: AtomicU64,
    /// The shape of the tree: held for reading by anything that resolves
    /// names (in memory or in the upper dir), for writing by anything that
    /// adds, removes or moves names.
    ns: RwLock<()>,
    /// Whether this process may chown freely (root in its user namespace).
    privileged: bool,
    /// This process's ids: what new upper entries get without a chown.
    euid: u32,
    egid: u32,
}

/// The kernel inode numbers of nodes given new ones: both ways.
#[derive(Debug, Default)]
struct Reincarnated {
    /// Kernel inode number (not a node's id) → node id.
    node_of: IdMap<u64>,
    /// Node id → its kernel inode number now.
    ino_of: IdMap<u64>,
}

/// Proof that the caller holds the tree lock (for reading or writing).
pub(crate) struct Tree<'a>(#[allow(dead_code)] TreeGuard<'a>);

enum TreeGuard<'a> {
    Read(#[allow(dead_code)] ReadGuard<'a, ()>),
    Write(#[allow(dead_code)] crate::lock::WriteGuard<'a, ()>),
}

/// What an operation needs of a node's state, copied out so that the
/// node's lock is not held while other nodes are looked at.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub(crate) parent: u64,
    pub(crate) name: Arc<OsStr>,
    pub(crate) upper: bool,
    pub(crate) orphan: Option<Arc<OwnedFd>>,
}

impl Snap {
    fn of(st: &NodeState) -> Snap {
        Snap {
            parent: st.parent,
            name: st.name.clone(),
            upper: st.upper,
            orphan: st.orphan().cloned(),
        }
    }
}

impl Union {
    /// Builds a union over `config`, checking that every layer and the upper
    /// and work dirs are usable.
    pub fn new(config: Config) -> Result<Union> {
        if config.lowers.is_empty() && config.upper.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no layers and no upper dir",
            ));
        }
        let upper = match &config.upper {
            Some(u) => Some(Upper::open(&u.upper, &u.work)?),
            None => None,
        };
        let mut root = NodeState::new(0, node::shared(OsStr::new("")));
        root.upper = upper.is_some();
        let mut dir = DirState::default();
        for (i, l) in config.lowers.iter().enumerate() {
            let attr = l.stat(Path::new(""))?;
            if attr.kind != Kind::Dir {
                return Err(errno(libc::ENOTDIR));
            }
            if root.lower.is_none() {
                root.lower = Some(LowerRef {
                    layer: i as u32,
                    path: Some(Box::default()),
                    attr: (&attr).into(),
                });
            }
            dir.lower_dirs.push(i as u32);
        }
        root.dir = Some(Box::new(dir));
        let root = Arc::new(Node::new(ROOT_INO, Kind::Dir, root));
        root.lookups.store(1, Ordering::Relaxed);
        let mut nodes = NodeTable::default();
        nodes.insert(root);
        let flusher = if upper.is_some() && config.metacopy && config.fsync {
            Some(Flusher::start()?)
        } else {
            None
        };
        Ok(Union {
            flusher,
            boot_id: flush::boot_id(),
            streaming: AtomicBool::new(config.lowers.iter().any(|l| !l.complete())),
            lowers: config.lowers,
            upper,
            metacopy: config.metacopy,
            fsync: config.fsync,
            nodes: RwLock::new(Rank::Nodes, nodes),
            reincarnated: Mutex::new(Rank::Retired, Reincarnated::default()),
            links: Mutex::new(Rank::Links, HashMap::new()),
            next_id: AtomicU64::new(ROOT_INO + 1),
            ns: RwLock::new(Rank::Tree, ()),
            privileged: nix::unistd::geteuid().is_root(),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
        })
    }

    /// The node the kernel knows as inode `ino`.
    fn node(&self, ino: u64) -> Result<Arc<Node>> {
        if let Some(n) = self.nodes.read().get(&ino) {
            return Ok(n.clone());
        }
        let id = self.reincarnated.lock().node_of.get(&ino).copied();
        id.and_then(|id| self.nodes.read().get(&id).cloned())
            .ok_or_else(|| errno(libc::ENOENT))
    }

    /// The node with id `id` (a parent, a child in a children map).
    fn node_by_id(&self, id: u64) -> Result<Arc<Node>> {
        self.nodes
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn upper(&self) -> Result<&Upper> {
        self.upper.as_ref().ok_or_else(|| errno(libc::EROFS))
    }

    fn read_tree(&self) -> Tree<'_> {
        Tree(TreeGuard::Read(self.ns.read()))
    }

    fn write_tree(&self) -> Tree<'_> {
        Tree(TreeGuard::Write(self.ns.write()))
    }

    fn new_node(&self, kind: Kind, state: NodeState) -> Arc<Node> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let node = Arc::new(Node::new(id, kind, state));
        self.nodes.write().insert(node.clone());
        node
    }

    /// Drops `node` from the table once nothing refers to it: no name and no
    /// kernel lookup. Checked under the table's write lock; `linked` and
    /// `lookups` only ever go to false and 0 for good, and each side checks
    /// after its own change, so whichever comes last drops it.
    fn drop_if_dead(&self, node: &Node) {
        if node.id == ROOT_INO {
            return;
        }
        let mut nodes = self.nodes.write();
        if !node.is_linked() && node.lookups.load(Ordering::SeqCst) == 0 {
            nodes.remove(&node.id);
            drop(nodes);
            if node.kind == Kind::Dir {
                if let Some(u) = &self.upper {
                    u.forget_dir(node.id);
                }
            }
            self.forget_kernel_inos(node);
        }
    }

    /// Forgets the kernel inode numbers other than its id that `node` had.
    fn forget_kernel_inos(&self, node: &Node) {
        if node.reincarnated.load(Ordering::Relaxed) {
            let mut r = self.reincarnated.lock();
            r.node_of.retain(|_, id| *id != node.id);
            r.ino_of.remove(&node.id);
        }
    }

    /// The inode number the kernel knows `node` by (and its `st_ino`): its
    /// id, unless it was given a new one.
    pub(crate) fn ino_of(&self, node: &Node) -> u64 {
        if !node.reincarnated.load(Ordering::Acquire) {
            return node.id;
        }
        self.reincarnated
            .lock()
            .ino_of
            .get(&node.id)
            .copied()
            .unwrap_or(node.id)
    }

    /// `node`'s lower entry with its path spelled out. A path kept as
    /// `None` is the parent directory's lower path and the node's name:
    /// even if a rename moves the node between the two reads, that is what
    /// it was when it was kept, as names change only after it is spelled
    /// out ([`Self::spell_out_lower`]).
    pub(crate) fn lower_of(&self, node: &Node) -> Option<Lower> {
        let (layer, path, attr, parent, name) = {
            let st = node.state.read();
            let l = st.lower.as_ref()?;
            (
                l.layer,
                l.path.clone(),
                l.attr.clone(),
                st.parent,
                st.name.clone(),
            )
        };
        let path = match path {
            Some(p) => *p,
            None => {
                let dir = self.node_by_id(parent).ok()?;
                let st = dir.state.read();
                crate::layer::join(st.lower.as_ref()?.path.as_deref()?, &name)
            }
        };
        Some(Lower { layer, path, attr })
    }

    /// Keeps `node`'s lower path spelled out from now on: its name or
    /// parent is about to change. Under the tree lock held for writing.
    pub(crate) fn spell_out_lower(&self, node: &Node) {
        let derived = node
            .state
            .read()
            .lower
            .as_ref()
            .is_some_and(|l| l.path.is_none());
        if !derived {
            return;
        }
        if let Some(full) = self.lower_of(node) {
            if let Some(l) = node.state.write().lower.as_mut() {
                l.path = Some(Box::new(full.path));
            }
        }
    }

    /// The upper location of `node` (which must be in the upper dir, or be
    /// an orphan), given a snapshot of its state.
    fn loc(&self, node: &Node, snap: &Snap, tree: &Tree<'_>) -> Result<Loc> {
        if let Some(o) = &snap.orphan {
            return Ok(if node.kind == Kind::Dir {
                Loc::Dir(o.clone())
            } else {
                Loc::Orphan(o.clone())
            });
        }
        if !snap.upper {
            return Err(errno(libc::EIO));
        }
        if node.kind == Kind::Dir {
            return Ok(Loc::Dir(self.dir_fd(node.id, tree)?));
        }
        Ok(Loc::Entry {
            dir: self.dir_fd(snap.parent, tree)?,
            name: node::owned(&snap.name),
        })
    }

    /// The upper location of `node`, from its current state.
    fn loc_of(&self, node: &Node, tree: &Tree<'_>) -> Result<(Loc, Snap)> {
        let snap = Snap::of(&node.state.read());
        Ok((self.loc(node, &snap, tree)?, snap))
    }

    /// The `O_PATH` fd of upper directory `id`: cached, or opened one name at
    /// a time from the nearest ancestor whose fd is cached (or the upper
    /// root). The tree lock keeps names and disk in agreement meanwhile.
    fn dir_fd(&self, id: u64, _tree: &Tree<'_>) -> Result<Arc<OwnedFd>> {
        let upper = self.upper()?;
        if id == ROOT_INO {
            return Ok(upper.root().clone());
        }
        if let Some(fd) = upper.cached_dir(id) {
            return Ok(fd);
        }
        // The chain of (id, name) from `id` up to a directory with an fd.
        let mut chain = Vec::new();
        let mut cur = id;
        let base = loop {
            let node = self.node_by_id(cur)?;
            let st = node.state.read();
            if let Some(o) = st.orphan() {
                break o.clone();
            }
            if !st.upper || node.kind != Kind::Dir {
                return Err(errno(libc::EIO));
            }
            chain.push((cur, st.name.clone()));
            let parent = st.parent;
            drop(st);
            if parent == ROOT_INO {
                break upper.root().clone();
            }
            if let Some(fd) = upper.cached_dir(parent) {
                break fd;
            }
            cur = parent;
        };
        let mut fd = base;
        for (id, name) in chain.into_iter().rev() {
            fd = upper.open_dir(std::os::fd::AsFd::as_fd(&*fd), &name)?;
            upper.cache_dir(id, fd.clone());
        }
        Ok(fd)
    }

    /// Finishes the background flush of `ino`'s copied-up data, if one is
    /// pending, and flushes the directories its copy-up renamed it into
    /// (fsync of the file).
    pub fn finish_flush(&self, ino: u64) -> Result<()> {
        let node = self.node(ino)?;
        if let Some(f) = &self.flusher {
            f.finish(node.id)?;
        }
        self.sync_copy_up_dirs(&node)
    }

    /// Whether the upper dir is throwaway: nothing is flushed to disk, not
    /// even when a program asks (see [`Config::fsync`]).
    pub fn volatile(&self) -> bool {
        !self.fsync
    }

    /// Finishes every pending flush of copied-up data (unmount).
    pub fn finish_flushes(&self) {
        if let Some(f) = &self.flusher {
            f.finish_all();
        }
    }

    /// At unmount: finishes every flush and, unless flushing is off, makes
    /// everything written to the upper dir durable (copy-up renames among
    /// it), so that the upper dir is complete on disk once the server exits.
    /// The mount ends: each layer keeps what it learned (see
    /// [`layer::Layer::end`]).
    pub fn end(&self) {
        for l in &self.lowers {
            l.end();
        }
    }

    pub fn sync_all(&self) {
        self.finish_flushes();
        if let (Some(u), true) = (&self.upper, self.fsync) {
            if let Err(e) = u.sync() {
                log::error!("cannot flush the upper dir {}: {e}", u.path().display());
            }
        }
    }

    /// Gives the node the kernel knows as `ino` a new kernel inode number,
    /// and returns it. The kernel's inode `ino` passes through to the node's
    /// lower file while a reader has it open, and can take no other backing
    /// file meanwhile; an open that needs the upper file answers ESTALE
    /// after this, and the kernel's retry looks the name up again and finds
    /// the new inode. `ino` keeps reaching the node until the kernel
    /// forgets it. The node's `st_ino` is the new number from then on.
    pub fn reincarnate(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        let _tree = self.write_tree();
        let current = self.ino_of(&node);
        if current != ino {
            return Ok(current); // another open did it already
        }
        let new = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut r = self.reincarnated.lock();
            r.node_of.insert(new, node.id);
            r.ino_of.insert(node.id, new);
        }
        node.reincarnated.store(true, Ordering::Release);
        log::debug!("inode {ino} passes through to its lower file; opens go to inode {new}");
        Ok(new)
    }
}

impl Drop for Union {
    fn drop(&mut self) {
        if let Some(f) = &self.flusher {
            f.stop();
        }
    }
}
