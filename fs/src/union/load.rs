//! Loading a directory: its upper entries and the lower layers' entries,
//! merged top first with whiteouts and opaque directories applied, become
//! the directory's children, each a node with a stable inode number. Hard
//! links of one file (in one layer, or in the upper dir) share a node.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Result;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::node::{self, Child, Children, DirState, Lower, LowerRef, NameSet, Node, NodeState};
use super::{Union, UPPER_LAYER};
use crate::error::errno;
use crate::flush;
use crate::layer::{self, Attr, Kind};
use crate::upper::Loc;
use crate::whiteout;

/// What loading a directory reads: a snapshot of its node's state.
struct DirSource {
    upper: bool,
    lower_path: PathBuf,
    lower_dirs: Vec<u32>,
}

impl Union {
    /// Waits, holding nothing, until each lower layer of `src` that can
    /// matter knows what it holds of `names`: the name, its whiteout and
    /// the directory's opaque marker. Layers are asked top first, down to
    /// the first that hides those below for this name (a non-directory of
    /// that name, a whiteout of it, an opaque directory) or the last with
    /// the name below it; returns how many matter. Of the last that matters
    /// only the name itself is settled.
    fn settle_name(&self, src: &DirSource, names: &[&OsStr; 3]) -> Result<usize> {
        let exists = |l: &dyn layer::Layer, p: &Path| match l.stat(p) {
            Ok(a) => Ok(Some(a)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        };
        for (k, &li) in src.lower_dirs.iter().enumerate() {
            let l = self.lowers[li as usize].as_ref();
            let [name, wh, opq] = names.map(|n| layer::join(&src.lower_path, n));
            l.settle(std::slice::from_ref(&name))?;
            if exists(l, &name)?.is_some_and(|a| a.kind != Kind::Dir) {
                return Ok(k + 1);
            }
            // What hides entries below matters only if a layer below has
            // the name.
            let mut held_below = false;
            for &m in &src.lower_dirs[k + 1..] {
                let m = self.lowers[m as usize].as_ref();
                m.settle(std::slice::from_ref(&name))?;
                if exists(m, &name)?.is_some() {
                    held_below = true;
                    break;
                }
            }
            if !held_below {
                return Ok(k + 1);
            }
            l.settle(&[wh.clone(), opq.clone()])?;
            let opaque = whiteout::is_opaque_dir(&l.list_xattrs(&src.lower_path)?, |x| {
                l.get_xattr(&src.lower_path, x).ok().flatten()
            });
            if opaque || exists(l, &wh)?.is_some() || exists(l, &opq)?.is_some() {
                return Ok(k + 1);
            }
        }
        Ok(src.lower_dirs.len())
    }

    /// What loading `dir` reads, or `None` when it is loaded.
    fn dir_source(&self, dir: &Node) -> Result<Option<DirSource>> {
        let st = dir.state.read();
        let Some(d) = st.dir.as_ref() else {
            return Err(errno(libc::ENOTDIR));
        };
        if d.children.is_some() {
            return Ok(None);
        }
        Ok(Some(DirSource {
            upper: st.upper,
            lower_path: st
                .lower
                .as_ref()
                .and_then(|l| l.path.as_deref())
                .map_or_else(PathBuf::new, |p| p.to_path_buf()),
            lower_dirs: d.lower_dirs.clone(),
        }))
    }

    /// Whether every lower layer is complete (none is still arriving).
    pub(crate) fn all_complete(&self) -> bool {
        if !self.streaming.load(Ordering::Relaxed) {
            return true;
        }
        if self.lowers.iter().all(|l| l.complete()) {
            self.streaming.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Makes sure `dir`'s merged children are in memory.
    pub(crate) fn ensure_loaded(&self, dir: &Arc<Node>) -> Result<()> {
        if dir.kind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        if dir.state.read().children().is_some() {
            return Ok(());
        }
        if !self.all_complete() {
            // A layer still arriving: wait for its end holding nothing, so
            // lookups of names it has already passed go on meanwhile.
            if let Some(src) = self.dir_source(dir)? {
                for &li in &src.lower_dirs {
                    self.lowers[li as usize].wait_complete()?;
                }
            }
        }
        // Loading holds only `load_lock`, so the directory's attributes stay
        // readable meanwhile (a listing of its parent is not held up).
        let _load = dir.load_lock.lock();
        let Some(src) = self.dir_source(dir)? else {
            return Ok(());
        };
        let (children, used) = self.load_dir(dir, &src, None)?;
        let mut st = dir.state.write();
        let d = st.dir.get_or_insert_with(Default::default);
        d.lower_dirs = used;
        d.children = Some(children);
        d.early = None;
        Ok(())
    }

    /// Looks up `name` in `dir` by itself when the directory cannot be
    /// loaded yet because a layer it merges is still arriving: waits only
    /// until each such layer has reached `name` (or its whiteout, or the
    /// directory's opaque marker) or ended, then notes the child among the
    /// directory's early children. False when `dir` can be loaded at once
    /// (or is): the caller loads it.
    pub(crate) fn lookup_early(&self, dir: &Arc<Node>, name: &OsStr) -> Result<bool> {
        if dir.kind != Kind::Dir || self.all_complete() {
            return Ok(false);
        }
        let Some(src) = self.dir_source(dir)? else {
            return Ok(false);
        };
        if src
            .lower_dirs
            .iter()
            .all(|&li| self.lowers[li as usize].complete())
        {
            return Ok(false);
        }
        let wh = whiteout::whiteout_name(name);
        let names = [name, wh.as_os_str(), OsStr::new(whiteout::OPAQUE_MARKER)];
        let keep = self.settle_name(&src, &names)?;
        let _load = dir.load_lock.lock();
        let Some(mut src) = self.dir_source(dir)? else {
            return Ok(false);
        };
        if early_child(dir, name).is_some() {
            return Ok(true);
        }
        src.lower_dirs.truncate(keep);
        let (children, _) = self.load_dir(dir, &src, Some(&names))?;
        if let Some((n, c)) = children.map.get_key_value(name) {
            let mut st = dir.state.write();
            if let Some(d) = st.dir.as_mut() {
                d.early
                    .get_or_insert_with(Default::default)
                    .insert(n.clone(), *c);
            }
        }
        Ok(true)
    }

    /// Loads directory `ino` if it is not loaded yet (prefetching).
    pub fn preload(&self, ino: u64) {
        if let Ok(node) = self.node(ino) {
            // Never waits for a layer still arriving.
            if node.kind == Kind::Dir && self.all_complete() {
                let _ = self.ensure_loaded(&node);
            }
        }
    }

    /// Subdirectories of `ino` whose merged view is not loaded yet, in
    /// readdir order; none if `ino` is not loaded.
    pub fn unloaded_subdirs(&self, ino: u64) -> Vec<u64> {
        let Ok(dir) = self.node(ino) else {
            return Vec::new();
        };
        let subs: Vec<(u64, u64)> = {
            let st = dir.state.read();
            let Some(ch) = st.children() else {
                return Vec::new();
            };
            ch.map
                .iter()
                .filter(|(_, c)| c.kind() == Kind::Dir)
                .map(|(name, c)| (node::cookie(name), c.id()))
                .collect()
        };
        let mut subs: Vec<(u64, u64)> = subs
            .into_iter()
            .filter(|&(_, id)| {
                self.node_by_id(id)
                    .is_ok_and(|n| n.state.read().children().is_none())
            })
            .collect();
        subs.sort_unstable();
        subs.into_iter().map(|(_, id)| id).collect()
    }

    /// Reads `src`'s upper dir and lower layers into merged children; returns
    /// them and the lower layers that contributed. Entries are merged as the
    /// layers hand them out, so a large directory costs nothing per entry
    /// beyond its nodes.
    ///
    /// With `only`, just those names are read (a lookup before the
    /// directory can be loaded, see [`Self::lookup_early`]). Without, the
    /// nodes of early children are taken over: those children were merged
    /// from every layer already.
    fn load_dir(
        &self,
        dir: &Node,
        src: &DirSource,
        only: Option<&[&OsStr]>,
    ) -> Result<(Children, Vec<u32>)> {
        let early = match only {
            Some(_) => None,
            None => dir.state.write().dir.as_mut().and_then(|d| d.early.take()),
        };
        // Takes over the early node for `name`, if there is one.
        let take_early = |name: &OsStr| -> Option<(Arc<OsStr>, Child)> {
            let (n, c) = early.as_ref()?.get_key_value(name)?;
            self.node_by_id(c.id())
                .is_ok_and(|node| node.is_linked())
                .then(|| {
                    self.refresh_early(c.id());
                    (n.clone(), *c)
                })
        };
        let mut premade: HashSet<u64> = HashSet::new();
        let mut map: HashMap<Arc<OsStr>, Child> = HashMap::new();
        let mut lower_names = NameSet::default();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let mut opaque = false;
        let mut used = Vec::new();
        if src.upper {
            // The fd follows the directory whatever happens to its names;
            // nothing else changes its entries before it is loaded.
            let (loc, _) = {
                let tree = self.read_tree();
                self.loc_of(dir, &tree)?
            };
            let Loc::Dir(fd) = loc else {
                return Err(errno(libc::EIO));
            };
            let upper = self.upper()?;
            let names = Loc::Dir(fd.clone()).list_xattrs().unwrap_or_default();
            opaque = whiteout::is_opaque_dir(&names, |x| {
                Loc::Dir(fd.clone()).get_xattr(x).ok().flatten()
            });
            let each = |name: &OsStr, st: &libc::stat| {
                let Ok(attr) = Attr::from_stat(st) else {
                    return Ok(());
                };
                match whiteout::classify(name, attr.is_whiteout_device()) {
                    whiteout::Kind::Opaque => opaque = true,
                    whiteout::Kind::Whiteout(n) => {
                        // Whited out here: hides the lower layers' entry,
                        // and a later entry of that name must remove it.
                        lower_names.insert(n);
                        hidden.insert(n.to_owned());
                    }
                    whiteout::Kind::Entry => {
                        if let Some((name, c)) = take_early(name) {
                            premade.insert(c.id());
                            map.insert(name, c);
                            return Ok(());
                        }
                        let entry = Loc::Entry {
                            dir: fd.clone(),
                            name: name.to_owned(),
                        };
                        let kind = attr.kind;
                        let name = node::shared(name);
                        let id = self.upper_child(dir.id, &name, attr, &entry);
                        map.insert(name, Child::new(id, kind));
                    }
                }
                Ok(())
            };
            match only {
                None => upper.each_entry(fd.as_fd(), each)?,
                Some(names) => upper.each_named(fd.as_fd(), names, each)?,
            }
        }
        if !opaque {
            let lower_path = &src.lower_path;
            for &li in &src.lower_dirs {
                used.push(li);
                let layer = &self.lowers[li as usize];
                let mut layer_hidden = Vec::new();
                let mut layer_opaque = false;
                let mut each =
                    |name: &OsStr, kind: Kind, attr: &mut dyn FnMut() -> Result<Attr>| {
                        let class = if kind == Kind::CharDev {
                            whiteout::classify(name, attr()?.is_whiteout_device())
                        } else {
                            whiteout::classify(name, false)
                        };
                        match class {
                            whiteout::Kind::Opaque => layer_opaque = true,
                            whiteout::Kind::Whiteout(n) => layer_hidden.push(n.to_owned()),
                            whiteout::Kind::Entry => {
                                lower_names.insert(name);
                                if hidden.contains(name) {
                                    return Ok(());
                                }
                                match map.get(name).copied() {
                                    None => {
                                        if let Some((name, c)) = take_early(name) {
                                            premade.insert(c.id());
                                            map.insert(name, c);
                                            return Ok(());
                                        }
                                        let attr = match attr() {
                                            Ok(a) => a,
                                            // Gone since the listing.
                                            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                                                return Ok(())
                                            }
                                            Err(e) => return Err(e),
                                        };
                                        let kind = attr.kind;
                                        let name = node::shared(name);
                                        let id =
                                            self.lower_child(dir.id, &name, li, lower_path, attr);
                                        map.insert(name, Child::new(id, kind));
                                    }
                                    // A directory above merges with one here.
                                    Some(c) if premade.contains(&c.id()) => {}
                                    Some(c) if kind == Kind::Dir && c.kind() == Kind::Dir => {
                                        self.merge_lower_dir(
                                            c.id(),
                                            li,
                                            layer::join(lower_path, name),
                                            attr,
                                        )?;
                                    }
                                    Some(_) => {}
                                }
                            }
                        }
                        Ok(())
                    };
                let xattr_names = match only {
                    None => layer.read_dir(lower_path, &mut each)?,
                    Some(names) => {
                        // Of the last layer only the name is settled (see
                        // `settle_name`), and only it matters.
                        let last = li == *src.lower_dirs.last().expect("in the loop");
                        for &n in if last { &names[..1] } else { names } {
                            match layer.stat(&layer::join(lower_path, n)) {
                                Ok(a) => each(n, a.kind, &mut || Ok(a.clone()))?,
                                Err(e)
                                    if matches!(
                                        e.raw_os_error(),
                                        Some(libc::ENOENT | libc::ENOTDIR)
                                    ) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        layer.list_xattrs(lower_path)?
                    }
                };
                layer_opaque |= whiteout::is_opaque_dir(&xattr_names, |x| {
                    layer.get_xattr(lower_path, x).ok().flatten()
                });
                for n in layer_hidden {
                    lower_names.insert(&n);
                    hidden.insert(n);
                }
                if layer_opaque {
                    break;
                }
            }
        }
        Ok((Children::loaded(map, lower_names), used))
    }

    /// An early child's lower file may have gained hard links since it was
    /// looked up (later entries of its layer): gives it the link count and
    /// the link group loading would have.
    fn refresh_early(&self, id: u64) {
        let Ok(node) = self.node_by_id(id) else {
            return;
        };
        if node.kind == Kind::Dir {
            return;
        }
        let Some(lower) = self.lower_of(&node) else {
            return;
        };
        let Ok(attr) = self.lowers[lower.layer as usize].stat(&lower.path) else {
            return;
        };
        if attr.nlink > 1 {
            self.links
                .lock()
                .entry((lower.layer, attr.file_id))
                .or_insert(id);
        }
        let mut st = node.state.write();
        if let Some(l) = st.lower.as_mut().filter(|l| l.layer == lower.layer) {
            l.attr = (&attr).into();
        }
    }

    /// Adds lower layer `layer`'s directory at `path` to the sources of the
    /// not yet loaded directory node `id` (a directory above it of the same
    /// name).
    fn merge_lower_dir(
        &self,
        id: u64,
        layer: u32,
        path: PathBuf,
        attr: &mut dyn FnMut() -> Result<Attr>,
    ) -> Result<()> {
        let node = self.node_by_id(id)?;
        let needs_lower = {
            let st = node.state.read();
            if st.children().is_some() {
                return Ok(());
            }
            st.lower.is_none()
        };
        let lower = if needs_lower {
            Some(LowerRef {
                layer,
                path: Some(Box::new(path)),
                attr: (&attr()?).into(),
            })
        } else {
            None
        };
        let mut st = node.state.write();
        if st.children().is_some() {
            return Ok(());
        }
        if st.lower.is_none() {
            st.lower = lower;
        }
        st.dir
            .get_or_insert_with(Default::default)
            .lower_dirs
            .push(layer);
        Ok(())
    }

    /// A node for the entry `name` found in the upper dir at `entry`.
    fn upper_child(&self, parent: u64, name: &Arc<OsStr>, attr: Attr, entry: &Loc) -> u64 {
        let hard_linked = attr.kind != Kind::Dir && attr.nlink > 1;
        if hard_linked {
            if let Some(id) = self.join_link_group((UPPER_LAYER, attr.file_id), parent, name) {
                return id;
            }
        }
        let mut st = NodeState::new(parent, name.clone());
        st.upper = true;
        if attr.kind == Kind::Dir {
            st.dir = Some(Box::default());
        }
        if attr.kind == Kind::File && self.metacopy {
            if let Ok(Some(origin)) = entry.get_xattr(OsStr::new(whiteout::METACOPY_XATTR)) {
                st.lower = self.find_lower(&origin);
                if let Some(l) = &st.lower {
                    if self.settle_unflushed(entry, l.attr.size, attr.size) {
                        st.lower = None;
                    }
                }
                st.metacopy = st.lower.is_some();
            }
        }
        let node = self.new_node(attr.kind, st);
        if hard_linked {
            self.links
                .lock()
                .insert((UPPER_LAYER, attr.file_id), node.id);
        }
        node.id
    }

    /// Settles a metacopy upper file at `entry` (size `size`, origin size
    /// `lower_size`) that a copy-up may have left unflushed (see
    /// [`crate::flush`]); returns true when it now is a complete upper file.
    ///
    /// Filled in during this boot: the server died, not the system, so the
    /// data is all there; finish the flush. Otherwise its reads come from
    /// the lower layer again, and a size the unflushed writes changed must
    /// be the lower file's too.
    fn settle_unflushed(&self, entry: &Loc, lower_size: u64, size: u64) -> bool {
        let Some(mark) = entry
            .get_xattr(OsStr::new(whiteout::UNFLUSHED_XATTR))
            .ok()
            .flatten()
        else {
            // A plain metacopy file, maybe with a tail: nothing to settle.
            return false;
        };
        let what = match entry {
            Loc::Entry { name, .. } => format!("{name:?} in the upper dir"),
            _ => "an upper file".to_string(),
        };
        let (boot, filled_size) = flush::parse_unflushed_mark(&mark);
        if self.boot_id.as_deref() == Some(boot) {
            match entry
                .open(libc::O_RDONLY)
                .and_then(|f| flush::finish_file(&f))
            {
                Ok(()) => {
                    log::info!("{what}: finished the flush of its copy-up");
                    return true;
                }
                Err(e) => log::error!("cannot flush {what}: {e}"),
            }
        }
        let _ = entry.remove_xattr(OsStr::new(whiteout::UNFLUSHED_XATTR));
        // Bytes past the lower size that were there when the data was filled
        // in (a tail, maybe fsync'ed) stay; later size changes are undone.
        let keep = size.clamp(lower_size, filled_size.unwrap_or(0).max(lower_size));
        if keep != size {
            log::warn!(
                "{what}: its copy-up was not flushed before the system went down; \
                 unsynced writes to it are lost and it reads as the lower layer's version"
            );
            if let Err(e) = entry.truncate(keep) {
                log::error!("cannot restore the size of {what}: {e}");
            }
        }
        false
    }

    /// The lower regular file a metacopy origin (the value of
    /// [`whiteout::METACOPY_XATTR`]) names: 16 hex digits of the layer's
    /// [`layer_key`], a NUL, and the path in that layer. An origin of a
    /// path alone (written by rcfs before origins named their layer) is
    /// looked for in every layer, top first.
    pub(crate) fn find_lower(&self, origin: &[u8]) -> Option<LowerRef> {
        let (key, path) = match origin.get(16) {
            Some(0) => (
                std::str::from_utf8(&origin[..16])
                    .ok()
                    .and_then(|h| u64::from_str_radix(h, 16).ok()),
                &origin[17..],
            ),
            _ => (None, origin),
        };
        let path = Path::new(OsStr::from_bytes(path));
        // The value comes from a file on disk: never let it leave the layers.
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            log::warn!("ignoring metacopy origin {path:?} (not a plain relative path)");
            return None;
        }
        let found = self.lowers.iter().enumerate().find_map(|(i, l)| {
            if key.is_some_and(|k| k != layer_key(l.id())) {
                return None;
            }
            let attr = l.stat(path).ok()?;
            (attr.kind == Kind::File).then(|| LowerRef {
                layer: i as u32,
                path: Some(Box::new(path.to_owned())),
                attr: (&attr).into(),
            })
        });
        if found.is_none() {
            log::warn!(
                "the metacopy origin {path:?} is not in the lower layer it names; \
                 the upper file is served as it is"
            );
        }
        found
    }

    /// The metacopy origin value for `lower` (see [`Self::find_lower`]).
    pub(crate) fn origin_of(&self, lower: &Lower) -> Vec<u8> {
        let id = self.lowers[lower.layer as usize].id();
        let mut v = format!("{:016x}", layer_key(id)).into_bytes();
        v.push(0);
        v.extend_from_slice(lower.path.as_os_str().as_bytes());
        v
    }

    /// A node for the entry `name` of directory `dir` (lower path
    /// `dir_path`) found in lower layer `layer`. Directories keep their
    /// lower path; files derive it from their parent's.
    fn lower_child(
        &self,
        parent: u64,
        name: &Arc<OsStr>,
        layer: u32,
        dir_path: &Path,
        attr: Attr,
    ) -> u64 {
        let key = (layer, attr.file_id);
        let hard_linked = attr.kind != Kind::Dir && attr.nlink > 1;
        if hard_linked {
            if let Some(id) = self.join_link_group(key, parent, name) {
                return id;
            }
        }
        let kind = attr.kind;
        let mut st = NodeState::new(parent, name.clone());
        let path = if kind == Kind::Dir {
            st.dir = Some(Box::new(DirState {
                lower_dirs: vec![layer],
                children: None,
                early: None,
            }));
            Some(Box::new(layer::join(dir_path, name)))
        } else {
            None
        };
        st.lower = Some(LowerRef {
            layer,
            path,
            attr: (&attr).into(),
        });
        let node = self.new_node(kind, st);
        if hard_linked {
            self.links.lock().insert(key, node.id);
        }
        node.id
    }

    /// Adds (parent, name) as a further name of the hard-link group `key`, if
    /// the group already has a live node. A group member that was copied up is
    /// linked into the upper dir under the new name too, so all names keep
    /// sharing one file.
    fn join_link_group(&self, key: (u32, u64), parent: u64, name: &Arc<OsStr>) -> Option<u64> {
        let id = *self.links.lock().get(&key)?;
        let node = self.node_by_id(id).ok()?;
        if !node.is_linked() {
            return None;
        }
        let mut st = node.state.write();
        if key.0 != UPPER_LAYER && st.upper {
            // Copied up before this name was seen: the name keeps showing the
            // lower file as a node of its own (the link is broken, as on
            // overlayfs without its inode index).
            return None;
        }
        st.aliases_mut().push((parent, name.clone()));
        Some(id)
    }
}

/// The early child `name` of not yet loaded directory `dir`, if looked up.
pub(crate) fn early_child(dir: &Node, name: &OsStr) -> Option<Child> {
    dir.state
        .read()
        .dir
        .as_ref()?
        .early
        .as_ref()?
        .get(name)
        .copied()
}

/// A layer's id as 64 bits (FNV-1a, the same in every build): what upper
/// files record of the layer they refer to. Short, as xattr space is.
pub(crate) fn layer_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
