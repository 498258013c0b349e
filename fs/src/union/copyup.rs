//! Copy-up: bringing a lower entry into the upper dir before it changes.
//!
//! A copy is built in the work dir (holding only the node's copy lock, so
//! copying a large file holds up nothing else) and renamed into place under
//! the tree lock: a crash never leaves a half-made copy visible. With
//! metacopy on, a copy for a metadata change holds no data (a sparse
//! placeholder marked with the origin's layer and path), and a copy for a
//! write moves in such a placeholder and fills it in place; [`crate::flush`]
//! drops the marker once the data is on disk.
//!
//! A copy-up's rename is made durable when it matters: an `fsync` of the
//! file flushes every directory a copy-up renamed it or its parents into
//! ([`Union::sync_copy_up_dirs`]), and unmounting flushes the upper dir's
//! filesystem. Until then a crash leaves the entry as the lower layer's.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Result;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::node::{Lower, Node, NodeState};
use super::Union;
use crate::error::errno;
use crate::layer::Kind;
use crate::lock::MutexGuard;
use crate::upper::Loc;
use crate::{flush, sys, whiteout};

/// What copy-up must bring along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyData {
    /// Metadata and data.
    Full,
    /// Metadata; data may stay in the lower layer (metacopy).
    Meta,
    /// Metadata only, file emptied (open with `O_TRUNC`).
    Empty,
}

impl Union {
    /// Makes sure directory `dir` and all its ancestors exist in the upper
    /// dir. Takes no lock on entry and holds none on return.
    pub(crate) fn ensure_upper_dir(&self, dir: &Arc<Node>) -> Result<()> {
        let mut chain = Vec::new();
        let mut cur = dir.clone();
        loop {
            let (upper, parent) = {
                let st = cur.state.read();
                (st.upper, st.parent)
            };
            if upper {
                break;
            }
            chain.push(cur);
            if parent == 0 {
                break;
            }
            cur = self.node_by_id(parent)?;
        }
        for node in chain.into_iter().rev() {
            self.copy_up(&node, CopyData::Meta)?;
        }
        Ok(())
    }

    /// Takes `node`'s copy lock once its parent is in the upper dir; `None`
    /// when `done` says nothing is left to do.
    fn lock_for_copy<'n>(
        &self,
        node: &'n Node,
        done: impl Fn(&NodeState) -> bool,
    ) -> Result<Option<MutexGuard<'n, ()>>> {
        loop {
            let parent = {
                let st = node.state.read();
                if done(&st) {
                    return Ok(None);
                }
                st.parent
            };
            // The parent first, outside this node's lock: copy locks are
            // never nested.
            if parent != 0 {
                let p = self.node_by_id(parent)?;
                self.ensure_upper_dir(&p)?;
            }
            let guard = node.copy_lock.lock();
            let st = node.state.read();
            if done(&st) {
                return Ok(None);
            }
            if st.parent == parent {
                return Ok(Some(guard));
            }
            // Its primary name moved meanwhile (a hard link's other name
            // was removed): make sure of the new parent.
        }
    }

    /// Brings `node` into the upper dir with at least `data`.
    pub(crate) fn copy_up(&self, node: &Arc<Node>, data: CopyData) -> Result<()> {
        let done = |st: &NodeState| st.upper && (!st.metacopy || data == CopyData::Meta);
        let upper = self.upper()?;
        self.gather_links(node)?;
        if data == CopyData::Full && node.kind == Kind::File && !done(&node.state.read()) {
            // The data first, without the copy lock (see LowerFile::prefetch).
            if let Some(lower) = self.lower_of(node) {
                self.lowers[lower.layer as usize]
                    .open(&lower.path)?
                    .prefetch()?;
            }
        }
        let Some(copy) = self.lock_for_copy(node, done)? else {
            return Ok(());
        };
        let (parent, is_upper, aliases) = {
            let st = node.state.read();
            (st.parent, st.upper, st.aliases().to_vec())
        };
        let lower = self.lower_of(node).ok_or_else(|| errno(libc::EIO))?;
        if is_upper {
            // A metacopy file that now needs its data.
            return self.fill_metacopy(node, &lower, data);
        }
        // With a flusher, data goes in after the rename, into a placeholder
        // that keeps its metacopy marker until the data is on disk.
        let first = if data == CopyData::Full
            && node.kind == Kind::File
            && lower.attr.size > 0
            && self.flusher.is_some()
        {
            CopyData::Meta
        } else {
            data
        };
        let tmp_name = upper.tmp_name();
        let tmp = upper.tmp(&tmp_name);
        let remove_tmp = || {
            let _ = if node.kind == Kind::Dir {
                upper.rmdir(upper.work(), &tmp_name)
            } else {
                upper.unlink(upper.work(), &tmp_name)
            };
        };
        let metacopy = match self.prepare_copy(&tmp, &tmp_name, node.kind, &lower, first) {
            Ok(m) => m,
            Err(e) => {
                remove_tmp();
                return Err(e);
            }
        };
        // Move into place while nobody can rename or remove the node.
        {
            let tree = self.read_tree();
            let pfd = match self.dir_fd(parent, &tree) {
                Ok(fd) => fd,
                Err(e) => {
                    remove_tmp();
                    return Err(e);
                }
            };
            let mut st = node.state.write();
            let res = if node.is_linked() && st.parent == parent {
                upper.rename(
                    upper.work(),
                    &tmp_name,
                    pfd.as_fd(),
                    &st.name,
                    libc::RENAME_NOREPLACE,
                )
            } else {
                Err(errno(libc::ENOENT))
            };
            if let Err(e) = res {
                drop(st);
                remove_tmp();
                return Err(e);
            }
            st.upper = true;
            st.metacopy = metacopy;
        }
        if self.fsync {
            node.dir_unsynced.store(true, Ordering::Release);
        }
        if metacopy && first != data {
            self.fill_metacopy(node, &lower, data)?;
        }
        drop(copy);
        // Other names of a hard-linked lower file share the copy.
        for (p, name) in aliases {
            let pnode = self.node_by_id(p)?;
            self.ensure_upper_dir(&pnode)?;
            let tree = self.read_tree();
            let (src, _) = self.loc_of(node, &tree)?;
            let Loc::Entry {
                dir: sdir,
                name: sname,
            } = &src
            else {
                continue;
            };
            let pfd = self.dir_fd(p, &tree)?;
            match upper.link(sdir.as_fd(), sname, pfd.as_fd(), &name) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Before a lower file with hard links is copied up: loads every
    /// directory that holds one of its names, so that each name still
    /// visible joins the node (see `load`) and is linked to the copy. A
    /// write through one name is then seen through all of them, whether
    /// their directories were looked at before or after, and after a
    /// remount they are still one file.
    fn gather_links(&self, node: &Arc<Node>) -> Result<()> {
        let linked = {
            let st = node.state.read();
            matches!(&st.lower, Some(l) if !st.upper && node.kind == Kind::File && l.attr.nlink > 1)
        };
        let Some(lower) = linked.then(|| self.lower_of(node)).flatten() else {
            return Ok(());
        };
        let layer = &self.lowers[lower.layer as usize];
        let paths = layer.links_of(layer.stat(&lower.path)?.file_id)?;
        for p in paths {
            // Down the merged tree to the name's directory; a name whose
            // path is hidden or shadowed is no longer one of the file's.
            let mut dir = self.node_by_id(super::ROOT_INO)?;
            let mut reached = true;
            for c in p.parent().into_iter().flat_map(|d| d.components()) {
                self.ensure_loaded(&dir)?;
                match super::names::child_of(&dir, c.as_os_str()) {
                    Some(c) if c.kind() == Kind::Dir => dir = self.node_by_id(c.id())?,
                    _ => {
                        reached = false;
                        break;
                    }
                }
            }
            if reached {
                self.ensure_loaded(&dir)?;
            }
        }
        Ok(())
    }

    /// Creates the copy of `lower` at `tmp` (the work dir's entry
    /// `tmp_name`); returns whether it is a metacopy.
    fn prepare_copy(
        &self,
        tmp: &Loc,
        tmp_name: &OsStr,
        kind: Kind,
        lower: &Lower,
        data: CopyData,
    ) -> Result<bool> {
        let upper = self.upper()?;
        let work = upper.work();
        let layer = &self.lowers[lower.layer as usize];
        let a = &lower.attr;
        let mut metacopy = false;
        match kind {
            Kind::Dir => upper.mkdir(work, tmp_name, u32::from(a.perm))?,
            Kind::File => {
                let f = upper.create(work, tmp_name, libc::O_WRONLY, u32::from(a.perm))?;
                match data {
                    CopyData::Empty => {}
                    CopyData::Meta if self.metacopy && a.size > 0 => {
                        f.set_len(a.size)?;
                        let origin = self.origin_of(lower);
                        match sys::xattr::fset(
                            f.as_fd(),
                            OsStr::new(whiteout::METACOPY_XATTR),
                            &origin,
                        ) {
                            Ok(()) => metacopy = true,
                            // No user xattrs on the upper fs: copy the data.
                            Err(_) => self.copy_file_data(lower, &f, self.fsync)?,
                        }
                    }
                    _ => self.copy_file_data(lower, &f, self.fsync)?,
                }
                if self.fsync && !metacopy && data != CopyData::Empty {
                    f.sync_data()?;
                }
            }
            Kind::Symlink => upper.symlink(&layer.readlink(&lower.path)?, work, tmp_name)?,
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => upper.mknod(
                work,
                tmp_name,
                kind.mode_bits() | u32::from(a.perm),
                u64::from(a.rdev),
            )?,
        }
        self.chown_quiet(tmp, a.uid, a.gid)?;
        if kind != Kind::Symlink {
            // chown clears setuid/setgid bits; put the exact mode back.
            tmp.chmod(u32::from(a.perm))?;
        }
        for name in layer.list_xattrs(&lower.path).unwrap_or_default() {
            if whiteout::is_private_xattr(&name) {
                continue;
            }
            if let Ok(Some(v)) = layer.get_xattr(&lower.path, &name) {
                if let Err(e) = tmp.set_xattr(&name, &v, 0) {
                    // trusted.* and security.* need privileges we may not have.
                    log::debug!(
                        "copy-up of {}: xattr {name:?} not copied: {e}",
                        lower.path.display()
                    );
                }
            }
        }
        tmp.utimens(a.atime.to_timespec(), a.mtime.to_timespec())?;
        Ok(metacopy)
    }

    /// Copies `lower`'s data into `dst`; `durable` starts writeback as it
    /// goes, for a flush that follows at once.
    fn copy_file_data(&self, lower: &Lower, dst: &File, durable: bool) -> Result<()> {
        let src = self.lowers[lower.layer as usize].open(&lower.path)?;
        src.copy_to(dst, lower.attr.size, durable)
    }

    /// Completes a metacopy upper file: writes the data in place, then drops
    /// the marker. Until the marker is gone the data is read from the lower
    /// layer, so a crash half-way serves the right bytes. With a flusher,
    /// the marker goes once the data is on disk, in the background. The
    /// caller holds the node's copy lock.
    pub(crate) fn fill_metacopy(&self, node: &Node, lower: &Lower, data: CopyData) -> Result<()> {
        let tree = self.read_tree();
        let (loc, _) = self.loc_of(node, &tree)?;
        match data {
            CopyData::Full => {
                let f = loc.open(libc::O_WRONLY)?;
                drop(tree);
                return self.fill_data(node, lower, f);
            }
            // Empty first: without the marker the placeholder reads as zeros.
            CopyData::Empty => loc.truncate(0)?,
            CopyData::Meta => {}
        }
        loc.remove_xattr(OsStr::new(whiteout::METACOPY_XATTR))?;
        node.state.write().metacopy = false;
        Ok(())
    }

    /// Writes the lower file's data into `f`, the metacopy upper file of
    /// `node`, and drops its marker (now, or with a flusher once the data is
    /// on disk). Bytes past the lower file's size (a tail) are kept. The
    /// caller holds the node's copy lock.
    pub(crate) fn fill_data(&self, node: &Node, lower: &Lower, f: File) -> Result<()> {
        let durable = self.fsync && self.flusher.is_none();
        // Filling in is no change of the file's: its times stay.
        let times = sys::fstat(&f)?;
        let filled = self.copy_file_data(lower, &f, durable).and_then(|()| {
            sys::copy::set_times(&f, &times)?;
            if durable {
                return f.sync_data();
            }
            match (&self.flusher, &self.boot_id) {
                (Some(_), Some(id)) => {
                    let size = sys::fstat(&f)?.st_size;
                    let mark = flush::unflushed_mark(id, size as u64);
                    sys::xattr::fset(f.as_fd(), OsStr::new(whiteout::UNFLUSHED_XATTR), &mark)
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
            return flusher.push(node.id, f, lower.path.to_string_lossy().into_owned());
        }
        sys::xattr::fremove(f.as_fd(), OsStr::new(whiteout::METACOPY_XATTR))
    }

    /// chown that a non-privileged server may fail quietly: the entry keeps
    /// the server's owner, as with any rootless union.
    pub(crate) fn chown_quiet(&self, loc: &Loc, uid: u32, gid: u32) -> Result<()> {
        match loc.chown(uid, gid) {
            Ok(()) => Ok(()),
            Err(e) if !self.privileged || matches!(e.raw_os_error(), Some(libc::EINVAL)) => {
                log::debug!("chown to {uid}:{gid}: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies up the whole subtree of directory `node` (for a rename).
    pub(crate) fn copy_up_tree(&self, node: &Arc<Node>) -> Result<()> {
        self.copy_up(node, CopyData::Meta)?;
        if node.kind != Kind::Dir {
            return Ok(());
        }
        self.ensure_loaded(node)?;
        let kids: Vec<u64> = node
            .state
            .read()
            .children()
            .map(|c| c.map.values().map(|c| c.id()).collect())
            .unwrap_or_default();
        for k in kids {
            let child = self.node_by_id(k)?;
            let needs = {
                let s = child.state.read();
                !s.upper || s.dir.as_ref().is_some_and(|d| !d.lower_dirs.is_empty())
            };
            if needs {
                self.copy_up_tree(&child)?;
            }
        }
        Ok(())
    }

    /// Flushes the directories that copy-ups renamed `node` or its
    /// ancestors into and that were not flushed since (before an `fsync` of
    /// the file returns: its name must survive a crash with its data).
    pub(crate) fn sync_copy_up_dirs(&self, node: &Arc<Node>) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let upper = self.upper()?;
        let mut cur = node.clone();
        loop {
            let parent = cur.state.read().parent;
            if parent == 0 {
                return Ok(());
            }
            if cur.dir_unsynced.swap(false, Ordering::AcqRel) {
                let fd: Arc<OwnedFd> = {
                    let tree = self.read_tree();
                    self.dir_fd(parent, &tree)?
                };
                if let Err(e) = upper.fsync_dir(fd.as_fd()) {
                    cur.dir_unsynced.store(true, Ordering::Release);
                    return Err(e);
                }
            }
            cur = self.node_by_id(parent)?;
        }
    }
}
