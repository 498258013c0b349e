//! Renames and exchanges. Whatever moves is first copied up whole (a lower
//! directory's tree too, as overlayfs with `redirect_dir=off` would refuse
//! to do); the host rename and the in-memory move then happen together
//! under the tree lock held for writing, with the whiteouts and opaque
//! markers that keep lower entries hidden around them.

use std::ffi::OsStr;
use std::io::Result;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::names::{
    child_of, clear_markers, is_device_form, make_opaque, remove_device_whiteout, remove_whiteout,
    write_whiteout,
};
use super::node::{self, Node};
use super::Union;
use crate::error::errno;
use crate::layer::Kind;
use crate::upper::Loc;

impl Union {
    /// `rename` with `RENAME_NOREPLACE` / `RENAME_EXCHANGE` flags.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_new_name(newname)?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(errno(libc::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let src_dir = self.node(parent)?;
        let dst_dir = self.node(newparent)?;
        self.ensure_loaded(&src_dir)?;
        self.ensure_loaded(&dst_dir)?;
        let src_child = child_of(&src_dir, name).ok_or_else(|| errno(libc::ENOENT))?;
        let dst_child = child_of(&dst_dir, newname);
        if dst_child.map(|c| c.id()) == Some(src_child.id()) {
            return Ok(());
        }
        let src = self.node_by_id(src_child.id())?;
        let dst = dst_child.map(|c| self.node_by_id(c.id())).transpose()?;
        if exchange && dst.is_none() {
            return Err(errno(libc::ENOENT));
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let src_is_dir = src.kind == Kind::Dir;
        let dst_is_dir = dst.as_ref().is_some_and(|d| d.kind == Kind::Dir);
        if let (Some(d), false) = (&dst, exchange) {
            if src_is_dir && !dst_is_dir {
                return Err(errno(libc::ENOTDIR));
            }
            if !src_is_dir && dst_is_dir {
                return Err(errno(libc::EISDIR));
            }
            if dst_is_dir {
                self.ensure_loaded(d)?;
                if d.state.read().children().is_some_and(|c| !c.map.is_empty()) {
                    return Err(errno(libc::ENOTEMPTY));
                }
            }
        }
        if src_is_dir && self.is_ancestor(&src, &dst_dir)? {
            // A directory cannot move into itself (the kernel checks this
            // too, but only on its own view of the tree).
            return Err(errno(libc::EINVAL));
        }
        // Everything that moves must live wholly in the upper dir first.
        self.copy_up_tree(&src)?;
        if exchange {
            if let Some(d) = &dst {
                self.copy_up_tree(d)?;
            }
        }
        self.ensure_upper_dir(&src_dir)?;
        self.ensure_upper_dir(&dst_dir)?;

        let tree = self.write_tree();
        let upper = self.upper()?;
        let src_lower_name = {
            let st = src_dir.state.read();
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if ch.get(name) != Some(src_child) {
                return Err(errno(libc::ENOENT));
            }
            ch.has_lower(name)
        };
        let dst_lower_name = {
            let st = dst_dir.state.read();
            let ch = st.children().ok_or_else(|| errno(libc::EIO))?;
            if ch.get(newname) != dst_child {
                return Err(errno(libc::ENOENT));
            }
            ch.has_lower(newname)
        };
        let sfd = self.dir_fd(src_dir.id, &tree)?;
        let dfd = self.dir_fd(dst_dir.id, &tree)?;
        let (dst_upper, dst_last_name) = match &dst {
            Some(d) => {
                let st = d.state.read();
                (st.upper, st.aliases().is_empty())
            }
            None => (false, false),
        };
        // A replaced entry may still be in use through an fd: keep a way to
        // it that no later name can redirect.
        let mut dst_orphan = None;
        if let (Some(d), false, true) = (&dst, exchange, dst_upper) {
            if d.kind == Kind::Dir {
                let cfd = self.dir_fd(d.id, &tree)?;
                clear_markers(upper, cfd.as_fd())?;
                dst_orphan = Some(cfd);
            } else if dst_last_name {
                dst_orphan = Some(
                    Loc::Entry {
                        dir: dfd.clone(),
                        name: newname.to_owned(),
                    }
                    .pin()?,
                );
            }
        }
        let kernel_flags = if exchange {
            libc::RENAME_EXCHANGE
        } else if dst_upper {
            0
        } else {
            libc::RENAME_NOREPLACE
        };
        if !exchange {
            if src_lower_name && !is_device_form(name) {
                write_whiteout(upper, sfd.as_fd(), name)?;
            }
            if dst_lower_name && !dst_upper {
                remove_device_whiteout(upper, dfd.as_fd(), newname)?;
            }
        }
        // Names are about to change: lower paths derived from them are kept.
        self.spell_out_lower(&src);
        if let (Some(d), true) = (&dst, exchange) {
            self.spell_out_lower(d);
        }
        upper.rename(sfd.as_fd(), name, dfd.as_fd(), newname, kernel_flags)?;

        // And the in-memory tree.
        let name_s = node::shared(name);
        let newname_s = node::shared(newname);
        {
            let mut sd = src_dir.state.write();
            let ch = sd.children_mut().ok_or_else(|| errno(libc::EIO))?;
            ch.remove(name);
            if let (true, Some(d)) = (exchange, dst_child) {
                ch.insert(name_s.clone(), d);
            }
        }
        dst_dir
            .state
            .write()
            .children_mut()
            .ok_or_else(|| errno(libc::EIO))?
            .insert(newname_s.clone(), src_child);
        if let (Some(d), false) = (&dst, exchange) {
            if d.kind == Kind::Dir {
                upper.forget_dir(d.id);
            }
            self.drop_name(d, dst_dir.id, newname, dst_orphan);
        }
        move_name(&src, src_dir.id, name, dst_dir.id, &newname_s);
        if src_is_dir && dst_lower_name {
            mark_moved_dir(&src);
        }
        if let (Some(d), true) = (&dst, exchange) {
            move_name(d, dst_dir.id, newname, src_dir.id, &name_s);
            if d.kind == Kind::Dir && src_lower_name {
                mark_moved_dir(d);
            }
        }

        // Then whiteouts and opaque markers around the moved entries.
        if !exchange {
            if src_lower_name && is_device_form(name) {
                write_whiteout(upper, sfd.as_fd(), name)?;
            }
            remove_whiteout(upper, dfd.as_fd(), newname)?;
        }
        if src_is_dir && dst_lower_name {
            make_opaque(upper, self.dir_fd(src.id, &tree)?.as_fd())?;
        }
        if let (Some(d), true) = (&dst, exchange) {
            if dst_is_dir && src_lower_name {
                make_opaque(upper, self.dir_fd(d.id, &tree)?.as_fd())?;
            }
        }
        drop(tree);
        Ok(())
    }

    /// Whether directory `a` is `b` or one of `b`'s ancestors.
    fn is_ancestor(&self, a: &Node, b: &Arc<Node>) -> Result<bool> {
        let mut cur = b.clone();
        loop {
            if cur.id == a.id {
                return Ok(true);
            }
            let p = cur.state.read().parent;
            if p == 0 {
                return Ok(false);
            }
            cur = self.node_by_id(p)?;
        }
    }
}

/// A moved directory stands alone: its lower layers no longer apply.
fn mark_moved_dir(node: &Node) {
    let mut st = node.state.write();
    if let Some(d) = st.dir.as_mut() {
        d.lower_dirs.clear();
        if let Some(c) = d.children.as_mut() {
            c.forget_lower();
        }
    }
}

/// Renames one name of `node`. Paths are not kept, so nothing below it
/// changes.
fn move_name(node: &Node, parent: u64, name: &OsStr, newparent: u64, newname: &Arc<OsStr>) {
    let mut st = node.state.write();
    if st.parent == parent && &*st.name == name {
        st.parent = newparent;
        st.name = newname.clone();
    } else if let Some(a) = st
        .aliases_mut()
        .iter_mut()
        .find(|(p, n)| *p == parent && &**n == name)
    {
        *a = (newparent, newname.clone());
    }
}
