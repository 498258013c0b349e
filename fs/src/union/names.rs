//! Names: looking them up, listing a directory, and creating and removing
//! entries (with the whiteouts that keep lower entries hidden). Every change
//! holds the tree lock for writing and edits the upper dir and the merged
//! tree together.

use std::ffi::OsStr;
use std::io::Result;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::node::{self, Child, Children, DirEntry, DirState, Node, NodeState};
use super::{Caller, Stat, Tree, Union, ROOT_INO};
use crate::error::errno;
use crate::layer::{self, Attr, Kind};
use crate::upper::{self, Loc, Upper};
use crate::whiteout;

/// Longest name an entry can have (what the host filesystems take).
const NAME_MAX: usize = 255;

impl Union {
    /// Looks up `name` in directory `parent`; counts a kernel lookup.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Stat> {
        if name.len() > NAME_MAX {
            // The kernel passes names up to 1024 bytes to FUSE.
            return Err(errno(libc::ENAMETOOLONG));
        }
        let dir = self.node(parent)?;
        if !self.lookup_early(&dir, name)? {
            self.ensure_loaded(&dir)?;
        }
        let tree = self.read_tree();
        let child = child_of(&dir, name).ok_or_else(|| errno(libc::ENOENT))?;
        let node = self.node_by_id(child.id())?;
        let s = self.stat_node(&node, &tree)?;
        node.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(s)
    }

    /// Attributes of `ino` for a readdirplus entry, which the kernel counts
    /// as a lookup: counted here too, unless the entry is gone since the
    /// listing was taken (then `None`).
    pub fn lookup_listed(&self, ino: u64) -> Option<Stat> {
        let tree = self.read_tree();
        let node = self.node(ino).ok()?;
        if !node.is_linked() {
            return None;
        }
        let s = self.stat_node(&node, &tree).ok()?;
        node.lookups.fetch_add(1, Ordering::SeqCst);
        Some(s)
    }

    /// The kernel dropped `n` lookups of `ino`. True when it holds none any
    /// more: its inode, with its cached pages, is gone.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let Ok(node) = self.node(ino) else {
            return true;
        };
        if node.id == ROOT_INO {
            return false;
        }
        let prev = node
            .lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev <= n {
            self.drop_if_dead(&node);
            return true;
        }
        false
    }

    /// The merged listing of directory `ino` (without `.` and `..`), in
    /// readdir order: by [`DirEntry::cookie`]. Built once and kept until the
    /// directory changes or a pass over it ends.
    pub fn list_dir(&self, ino: u64) -> Result<Arc<Vec<DirEntry>>> {
        let dir = self.node(ino)?;
        self.ensure_loaded(&dir)?;
        // Children change only under the tree lock held for writing.
        let _tree = self.read_tree();
        let children: Vec<(Arc<OsStr>, Child)> = {
            let st = dir.state.read();
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if let Some(l) = &ch.listing {
                return Ok(l.clone());
            }
            ch.map.iter().map(|(n, c)| (n.clone(), *c)).collect()
        };
        let mut list: Vec<DirEntry> = {
            // Nodes given a new inode number are few; most numbers are ids.
            let moved: Vec<u64> = {
                let nodes = self.nodes.read();
                children
                    .iter()
                    .filter(|(_, c)| {
                        nodes
                            .get(&c.id())
                            .is_some_and(|n| n.reincarnated.load(Ordering::Relaxed))
                    })
                    .map(|(_, c)| c.id())
                    .collect()
            };
            let ino = |id: u64| match moved.contains(&id) {
                true => self.node_by_id(id).map_or(id, |n| self.ino_of(&n)),
                false => id,
            };
            children
                .into_iter()
                .map(|(name, c)| DirEntry {
                    ino: ino(c.id()),
                    kind: c.kind(),
                    cookie: node::cookie(&name),
                    name,
                })
                .collect()
        };
        list.sort_unstable_by_key(|e| e.cookie);
        let list = Arc::new(list);
        if let Some(ch) = dir.state.write().children_mut() {
            ch.listing = Some(list.clone());
        }
        Ok(list)
    }

    /// Frees the readdir listing of directory `ino` (a pass over it ended);
    /// the next [`Self::list_dir`] builds it again.
    pub fn drop_listing(&self, ino: u64) {
        if let Ok(dir) = self.node(ino) {
            if let Some(c) = dir.state.write().children_mut() {
                c.listing = None;
            }
        }
    }

    /// Inode number of the parent of directory `ino` (the root is its own
    /// parent).
    pub fn parent_of(&self, ino: u64) -> Result<u64> {
        let p = self.node(ino)?.state.read().parent;
        if p == 0 || p == ROOT_INO {
            return Ok(ROOT_INO);
        }
        let parent = self.node_by_id(p)?;
        Ok(self.ino_of(&parent))
    }

    // ----- creating entries ----------------------------------------------

    pub(crate) fn check_new_name(&self, name: &OsStr) -> Result<()> {
        self.upper()?;
        if !layer::is_plain_name(name) {
            return Err(errno(libc::EINVAL));
        }
        if name.len() > NAME_MAX {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if whiteout::is_reserved_name(name) {
            // It would read back as a whiteout and vanish.
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    /// Creates a new entry `name` in `parent` with `make`, which receives
    /// the upper parent dir's fd and the name. Returns the new node's
    /// attributes and `make`'s result.
    fn create_entry<T>(
        &self,
        parent: u64,
        name: &OsStr,
        caller: Caller,
        kind: Kind,
        make: impl FnOnce(&Upper, BorrowedFd<'_>, &OsStr) -> Result<T>,
    ) -> Result<(Stat, T)> {
        self.check_new_name(name)?;
        let dir = self.node(parent)?;
        self.ensure_loaded(&dir)?;
        self.ensure_upper_dir(&dir)?;
        let tree = self.write_tree();
        let lower_name = {
            let st = dir.state.read();
            if !dir.is_linked() {
                return Err(errno(libc::ENOENT));
            }
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.contains_key(name) {
                return Err(errno(libc::EEXIST));
            }
            ch.has_lower(name)
        };
        let upper = self.upper()?;
        let dfd = self.dir_fd(dir.id, &tree)?;
        if lower_name {
            remove_device_whiteout(upper, dfd.as_fd(), name)?;
        }
        let out = make(upper, dfd.as_fd(), name)?;
        let entry = Loc::Entry {
            dir: dfd.clone(),
            name: name.to_owned(),
        };
        let finish = || -> Result<()> {
            if self.privileged {
                // The entry belongs to the caller, not to this server; a setgid
                // parent passes its group on, as the kernel does.
                let gid = match Loc::Dir(dfd.clone()).stat() {
                    Ok(p) if p.st_mode & libc::S_ISGID != 0 => p.st_gid,
                    _ => caller.gid,
                };
                if (caller.uid, gid) != (self.euid, self.egid) {
                    self.chown_quiet(&entry, caller.uid, gid)?;
                }
            }
            if kind == Kind::Dir && lower_name {
                // Lower layers hold this name: they must not show through.
                let new = upper.open_dir(dfd.as_fd(), name)?;
                make_opaque(upper, new.as_fd())?;
            }
            if lower_name {
                remove_whiteout(upper, dfd.as_fd(), name)?;
            }
            Ok(())
        };
        if let Err(e) = finish() {
            let _ = if kind == Kind::Dir {
                upper::remove_tree(dfd.as_fd(), name)
            } else {
                upper.unlink(dfd.as_fd(), name)
            };
            return Err(e);
        }
        let name = node::shared(name);
        let mut st = NodeState::new(dir.id, name.clone());
        st.upper = true;
        if kind == Kind::Dir {
            st.dir = Some(Box::new(DirState {
                lower_dirs: Vec::new(),
                children: Some(Children::default()),
                early: None,
            }));
        }
        let node = self.new_node(kind, st);
        dir.state
            .write()
            .children_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(name, Child::new(node.id, kind));
        let attr = entry.attr()?;
        node.lookups.fetch_add(1, Ordering::SeqCst);
        drop(tree);
        Ok((
            Stat {
                ino: self.ino_of(&node),
                attr,
            },
            out,
        ))
    }

    /// `mkdir`.
    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> Result<Stat> {
        self.create_entry(parent, name, caller, Kind::Dir, |u, d, n| {
            u.mkdir(d, n, mode & 0o7777)
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
    ) -> Result<Stat> {
        let kind = Kind::from_mode(mode).ok_or_else(|| errno(libc::EINVAL))?;
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        if kind == Kind::CharDev && rdev == 0 {
            // A character device 0/0 is how overlayfs spells a whiteout: it
            // would vanish at the next mount. Refused as overlayfs does.
            return Err(errno(libc::EPERM));
        }
        self.create_entry(parent, name, caller, kind, |u, d, n| {
            u.mknod(d, n, mode, u64::from(rdev))
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
    ) -> Result<Stat> {
        self.create_entry(parent, name, caller, Kind::Symlink, |u, d, n| {
            u.symlink(target, d, n)
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
    ) -> Result<(Stat, super::OpenFile)> {
        let flags = super::io::open_flags(flags) & !libc::O_TRUNC;
        self.create_entry(parent, name, caller, Kind::File, |u, d, n| {
            u.create(d, n, flags, mode & 0o7777)
        })
        .map(|(s, f)| (s, super::OpenFile::Upper(f)))
    }

    /// `link`: a new name for `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Stat> {
        self.check_new_name(newname)?;
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(errno(libc::EPERM));
        }
        self.copy_up(&node, super::copyup::CopyData::Meta)?;
        let dir = self.node(newparent)?;
        self.ensure_loaded(&dir)?;
        self.ensure_upper_dir(&dir)?;
        let tree = self.write_tree();
        let lower_name = {
            let st = dir.state.read();
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if ch.map.contains_key(newname) {
                return Err(errno(libc::EEXIST));
            }
            ch.has_lower(newname)
        };
        if !node.is_linked() {
            return Err(errno(libc::ENOENT));
        }
        let upper = self.upper()?;
        let (src, _) = self.loc_of(&node, &tree)?;
        let Loc::Entry {
            dir: sdir,
            name: sname,
        } = &src
        else {
            return Err(errno(libc::ENOENT));
        };
        let dfd = self.dir_fd(dir.id, &tree)?;
        if lower_name {
            remove_device_whiteout(upper, dfd.as_fd(), newname)?;
        }
        upper.link(sdir.as_fd(), sname, dfd.as_fd(), newname)?;
        if lower_name {
            remove_whiteout(upper, dfd.as_fd(), newname)?;
        }
        let newname = node::shared(newname);
        node.state
            .write()
            .aliases_mut()
            .push((dir.id, newname.clone()));
        dir.state
            .write()
            .children_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(newname, Child::new(node.id, node.kind));
        let s = self.stat_node(&node, &tree)?;
        node.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(s)
    }

    // ----- removing entries ----------------------------------------------

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, false)
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, true)
    }

    fn remove_entry(&self, parent: u64, name: &OsStr, want_dir: bool) -> Result<()> {
        let upper = self.upper()?;
        let dir = self.node(parent)?;
        self.ensure_loaded(&dir)?;
        let child = child_of(&dir, name).ok_or_else(|| errno(libc::ENOENT))?;
        let is_dir = child.kind() == Kind::Dir;
        if want_dir != is_dir {
            return Err(errno(if want_dir {
                libc::ENOTDIR
            } else {
                libc::EISDIR
            }));
        }
        let node = self.node_by_id(child.id())?;
        if is_dir {
            self.ensure_loaded(&node)?;
        }
        self.ensure_upper_dir(&dir)?;
        let tree = self.write_tree();
        let lower_name = {
            let st = dir.state.read();
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if ch.get(name) != Some(child) {
                return Err(errno(libc::ENOENT));
            }
            ch.has_lower(name)
        };
        let (snap, last_name) = {
            let st = node.state.read();
            if is_dir && st.children().is_some_and(|c| !c.map.is_empty()) {
                return Err(errno(libc::ENOTEMPTY));
            }
            (super::Snap::of(&st), st.aliases().is_empty())
        };
        let dfd = self.dir_fd(dir.id, &tree)?;
        let device_form = is_device_form(name);
        if lower_name && !device_form {
            write_whiteout(upper, dfd.as_fd(), name)?;
        }
        let mut orphan = None;
        if snap.upper {
            if is_dir {
                // Only whiteouts and markers can be left in a merged-empty dir.
                let cfd = self.dir_fd(node.id, &tree)?;
                clear_markers(upper, cfd.as_fd())?;
                upper.rmdir(dfd.as_fd(), name)?;
                upper.forget_dir(node.id);
                orphan = Some(cfd);
            } else {
                // The kernel may still reach the file through an fd: keep
                // a way to it that no later name can redirect.
                if last_name {
                    orphan = Some(
                        Loc::Entry {
                            dir: dfd.clone(),
                            name: name.to_owned(),
                        }
                        .pin()?,
                    );
                }
                upper.unlink(dfd.as_fd(), name)?;
            }
        }
        if lower_name && device_form {
            write_whiteout(upper, dfd.as_fd(), name)?;
        }
        dir.state
            .write()
            .children_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .remove(name);
        self.drop_name(&node, dir.id, name, orphan);
        drop(tree);
        Ok(())
    }

    /// Removes (parent, name) from `node`'s names; promotes an alias if the
    /// primary name went away. When it was the last name, `orphan` is how
    /// the upper entry is reached from then on. Under the tree lock (write).
    pub(crate) fn drop_name(
        &self,
        node: &Node,
        parent: u64,
        name: &OsStr,
        orphan: Option<Arc<OwnedFd>>,
    ) {
        let primary = {
            let st = node.state.read();
            st.parent == parent && &*st.name == name
        };
        if primary {
            // The name changes: a lower path derived from it is kept.
            self.spell_out_lower(node);
        }
        let mut st = node.state.write();
        if primary {
            if st.aliases().is_empty() {
                node.linked.store(false, Ordering::SeqCst);
                st.set_orphan(orphan);
            } else {
                let (p, n) = st.aliases_mut().remove(0);
                st.parent = p;
                st.name = n;
            }
        } else {
            st.aliases_mut()
                .retain(|(p, n)| !(*p == parent && &**n == name));
        }
        drop(st);
        self.drop_if_dead(node);
    }

    /// Attributes of `node`: the upper entry's, or the lower entry's.
    pub(crate) fn stat_node(&self, node: &Node, tree: &Tree<'_>) -> Result<Stat> {
        let (snap, lower, sources) = {
            let st = node.state.read();
            let lower = if st.upper || st.orphan().is_some() {
                None
            } else {
                Some(
                    st.lower
                        .as_ref()
                        .ok_or_else(|| errno(libc::EIO))?
                        .attr
                        .to_attr(),
                )
            };
            (super::Snap::of(&st), lower, st.sources())
        };
        let mut attr = match lower {
            Some(a) => a,
            None => self.loc(node, &snap, tree)?.attr()?,
        };
        if node.kind == Kind::Dir && sources > 1 {
            // As overlayfs: counting subdirs of every layer is not worth it,
            // and 1 tells find(1) and friends not to rely on it.
            attr.nlink = 1;
        }
        Ok(Stat {
            ino: self.ino_of(node),
            attr,
        })
    }
}

/// The child `name` of directory `dir`, if it has one: of its children
/// once loaded, else of those looked up early.
pub(crate) fn child_of(dir: &Node, name: &OsStr) -> Option<Child> {
    let st = dir.state.read();
    let d = st.dir.as_ref()?;
    match &d.children {
        Some(c) => c.get(name),
        None => d.early.as_ref()?.get(name).copied(),
    }
}

/// Whether deleting `name` is recorded by a device in its place.
pub(crate) fn is_device_form(name: &OsStr) -> bool {
    whiteout::upper_whiteout(name) == whiteout::UpperWhiteout::Device
}

/// Removes a `.wh.NAME` whiteout of `name` in `dir`, if there is one.
pub(crate) fn remove_whiteout(upper: &Upper, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    let whiteout::UpperWhiteout::File(wh) = whiteout::upper_whiteout(name) else {
        return Ok(());
    };
    match upper.unlink(dir, &wh) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// Removes a device whiteout standing in place of `name`, which must go
/// before anything else can take the name.
pub(crate) fn remove_device_whiteout(
    upper: &Upper,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> Result<()> {
    match crate::sys::stat_at(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if Attr::from_stat(&st).is_ok_and(|a| a.is_whiteout_device()) => {
            upper.unlink(dir, name)
        }
        _ => Ok(()),
    }
}

/// Records in the upper dir that `name` is deleted. The `.wh.` form can be
/// written while an upper entry still holds the name (so callers write it
/// first, and a crash leaves the entry visible rather than lost); the
/// device form takes the name itself, so it is written after.
pub(crate) fn write_whiteout(upper: &Upper, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    let res = match whiteout::upper_whiteout(name) {
        whiteout::UpperWhiteout::File(wh) => upper.create(dir, &wh, libc::O_WRONLY, 0).map(drop),
        whiteout::UpperWhiteout::Device => upper.mknod(dir, name, libc::S_IFCHR, 0),
    };
    match res {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

/// Marks upper directory `dir` opaque: lower layers do not show through.
pub(crate) fn make_opaque(upper: &Upper, dir: BorrowedFd<'_>) -> Result<()> {
    match upper.create(dir, OsStr::new(whiteout::OPAQUE_MARKER), libc::O_WRONLY, 0) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

/// Removes whiteout files and opaque markers from upper directory `dir`,
/// which is empty in the merged view.
pub(crate) fn clear_markers(upper: &Upper, dir: BorrowedFd<'_>) -> Result<()> {
    let mut markers = Vec::new();
    upper.each_entry(dir, |name, st| {
        let dev00 = Attr::from_stat(st).is_ok_and(|a| a.is_whiteout_device());
        if whiteout::classify(name, dev00) != whiteout::Kind::Entry {
            markers.push(name.to_owned());
        }
        Ok(())
    })?;
    for name in markers {
        upper.unlink(dir, &name)?;
    }
    Ok(())
}
