//! An image's layers seen from a user namespace nested in the server's
//! (`rcfs run --userns=keep-id`): a file an image gives id N is shown to the
//! kernel with the server's id that the container's namespace calls N.
//!
//! The container's namespace maps its ids to the server's as keep-id does
//! (see `rcfs_runtime::IdMap::KeepId`): the user's own id `own` is the
//! server's 0 (the user on the host), ids below it are one higher in the
//! server's, ids above it the same. The union's upper dir needs no such
//! care: its files were made with the ids the kernel gave the server, and
//! a copy-up takes the shifted ids of the file it copies.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Attr, EntryVisitor, FsStats, Layer, LowerFile};

/// The server's id for the container's `id`, where the container's `own`
/// is the server's 0.
pub fn keep_id(id: u32, own: u32) -> u32 {
    match id.cmp(&own) {
        std::cmp::Ordering::Less => id + 1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => id,
    }
}

/// `inner` with its owners shifted for a keep-id namespace of the user
/// `uid`:`gid`.
#[derive(Debug)]
pub struct Shifted {
    inner: Arc<dyn Layer>,
    uid: u32,
    gid: u32,
}

impl Shifted {
    pub fn new(inner: Arc<dyn Layer>, uid: u32, gid: u32) -> Shifted {
        Shifted { inner, uid, gid }
    }

    fn shift(&self, mut a: Attr) -> Attr {
        a.uid = keep_id(a.uid, self.uid);
        a.gid = keep_id(a.gid, self.gid);
        a
    }
}

impl Layer for Shifted {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn stat(&self, path: &Path) -> io::Result<Attr> {
        self.inner.stat(path).map(|a| self.shift(a))
    }

    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>> {
        self.inner.read_dir(path, &mut |name, kind, attr| {
            each(name, kind, &mut || attr().map(|a| self.shift(a)))
        })
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

    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.will_need(path, len)
    }

    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        self.inner.links_of(file_id)
    }

    fn statfs(&self) -> io::Result<FsStats> {
        self.inner.statfs()
    }

    fn end(&self) {
        self.inner.end()
    }

    fn complete(&self) -> bool {
        self.inner.complete()
    }

    fn settle(&self, paths: &[PathBuf]) -> io::Result<()> {
        self.inner.settle(paths)
    }

    fn wait_complete(&self) -> io::Result<()> {
        self.inner.wait_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::keep_id;

    #[test]
    fn ids_shift_around_the_users_own() {
        // The container's root is the server's 1 (the first subuid), the
        // user's own id the server's 0 (the user), the rest in place.
        assert_eq!(keep_id(0, 1000), 1);
        assert_eq!(keep_id(999, 1000), 1000);
        assert_eq!(keep_id(1000, 1000), 0);
        assert_eq!(keep_id(1001, 1000), 1001);
        assert_eq!(keep_id(65534, 1000), 65534);
    }
}
