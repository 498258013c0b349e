//! Attributes, xattrs, symlink targets and statfs: read from the upper
//! entry when there is one, else from the lower entry; changed on the upper
//! entry after a metadata copy-up.

use std::ffi::{OsStr, OsString};
use std::io::Result;
use std::os::fd::AsFd;

use super::copyup::CopyData;
use super::{OpenFile, SetAttr, Stat, TimeSet, Union};
use crate::error::errno;
use std::path::Path;

use super::node::Node;
use crate::layer::{Attr, FsStats, Kind, Layer, Time};
use crate::sys;
use crate::upper::Loc;
use crate::whiteout;

impl Union {
    /// Attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Stat> {
        let node = self.node(ino)?;
        let tree = self.read_tree();
        self.stat_node(&node, &tree)
    }

    /// Attributes of `ino` through an open file of it: right even after the
    /// last name is gone (`fstat` of an unlinked file).
    pub fn getattr_open(&self, ino: u64, file: &OpenFile) -> Result<Stat> {
        match file.upper_file() {
            Some(f) => Ok(Stat {
                ino: self.node(ino).map_or(ino, |n| self.ino_of(&n)),
                attr: Attr::from_stat(&sys::fstat(f)?)?,
            }),
            None => self.getattr(ino),
        }
    }

    /// `setattr`. `fh` is the open file the change came through, if any.
    pub fn setattr(&self, ino: u64, set: &SetAttr, fh: Option<&OpenFile>) -> Result<Stat> {
        let node = self.node(ino)?;
        let data = match set.size {
            Some(0) if !node.state.read().upper => CopyData::Empty,
            Some(_) => CopyData::Full,
            None => CopyData::Meta,
        };
        self.copy_up(&node, data)?;
        let tree = self.read_tree();
        let (loc, _) = self.loc_of(&node, &tree)?;
        if let Some(size) = set.size {
            match fh.and_then(OpenFile::upper_file) {
                Some(f) => f.set_len(size)?,
                None => loc.truncate(size)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            loc.chown(set.uid.unwrap_or(u32::MAX), set.gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = set.mode {
            if node.kind != Kind::Symlink {
                loc.chmod(mode & 0o7777)?;
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
                Some(TimeSet::At(t)) => Time::from_system_time(t).to_timespec(),
            };
            loc.utimens(conv(set.atime), conv(set.mtime))?;
        }
        if set.is_empty() {
            // What chown(f, -1, -1) sends: only its ctime changes, here as
            // in the kernel, which a chown(-1, -1) of the entry does.
            loc.chown(u32::MAX, u32::MAX)?;
        }
        self.stat_node(&node, &tree)
    }

    /// Reads `node`'s metadata where it lives: `upper` on its upper entry
    /// (with the tree lock held, so the entry is the node's), else `lower`
    /// on its lower entry.
    fn read_meta<T>(
        &self,
        node: &Node,
        upper: impl FnOnce(&Loc) -> Result<T>,
        lower: impl FnOnce(&dyn Layer, &Path) -> Result<T>,
    ) -> Result<T> {
        let tree = self.read_tree();
        let in_upper = {
            let st = node.state.read();
            st.upper || st.orphan().is_some()
        };
        if in_upper {
            return upper(&self.loc_of(node, &tree)?.0);
        }
        drop(tree);
        let l = self.lower_of(node).ok_or_else(|| errno(libc::EIO))?;
        lower(self.lowers[l.layer as usize].as_ref(), &l.path)
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<OsString> {
        let node = self.node(ino)?;
        if node.kind != Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        self.read_meta(&node, Loc::readlink, |l, p| l.readlink(p))
    }

    /// Value of xattr `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::ENODATA));
        }
        let node = self.node(ino)?;
        self.read_meta(&node, |u| u.get_xattr(name), |l, p| l.get_xattr(p, name))?
            .ok_or_else(|| errno(libc::ENODATA))
    }

    /// Names of the xattrs of `ino`.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<OsString>> {
        let node = self.node(ino)?;
        let names = self.read_meta(&node, Loc::list_xattrs, |l, p| l.list_xattrs(p))?;
        Ok(names
            .into_iter()
            .filter(|n| !whiteout::is_private_xattr(n))
            .collect())
    }

    /// `setxattr`.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::EPERM));
        }
        let node = self.node(ino)?;
        self.copy_up(&node, CopyData::Meta)?;
        let tree = self.read_tree();
        self.loc_of(&node, &tree)?.0.set_xattr(name, value, flags)
    }

    /// `removexattr`.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(errno(libc::ENODATA));
        }
        // Removing what is not there copies nothing up.
        self.getxattr(ino, name)?;
        let node = self.node(ino)?;
        self.copy_up(&node, CopyData::Meta)?;
        let tree = self.read_tree();
        self.loc_of(&node, &tree)?.0.remove_xattr(name)
    }

    /// `statfs` of the upper dir (or the top layer when read-only).
    pub fn statfs(&self) -> Result<FsStats> {
        match &self.upper {
            Some(u) => u.statfs(),
            None => self.lowers[0].statfs(),
        }
    }

    /// `fsyncdir`: flushes directory `ino`'s upper entries, and the
    /// directories copy-ups renamed it into.
    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let Some(upper) = self.upper.as_ref().filter(|_| self.fsync) else {
            return Ok(());
        };
        let fd = {
            let tree = self.read_tree();
            if !node.state.read().upper {
                return Ok(()); // nothing of it is in the upper dir
            }
            self.dir_fd(node.id, &tree)?
        };
        upper.fsync_dir(fd.as_fd())?;
        self.sync_copy_up_dirs(&node)
    }
}
