//! A layer in overlay form: what containers/storage expects to find in an
//! Additional Layer Store's `diff` directory, which it hands to overlayfs
//! (or fuse-overlayfs) as a lower directory as it is.
//!
//! An image layer spells deletions the OCI way (`.wh.NAME`, `.wh..wh..opq`);
//! overlayfs reads a character device 0/0 named `NAME` and a directory
//! xattr `trusted.overlay.opaque` (`user.overlay.opaque` for a user's
//! overlay) set to `y`. This view turns the one into the other, through
//! [`crate::whiteout`], without copying anything:
//! * `.wh.NAME` is listed and looked up as `NAME`, a 0/0 device;
//! * a directory holding `.wh..wh..opq`, or recreated in the layer that
//!   deleted it (`.wh.NAME` beside a directory `NAME`), answers the opaque
//!   xattr with `y`: `trusted.overlay.opaque` for root's overlay, or
//!   `user.overlay.opaque` for a user's (`userxattr`), one of them only,
//!   since root's overlay shows `user.*` xattrs to the container;
//! * no other `trusted.overlay.*` or `user.overlay.*` xattr of the image
//!   reaches overlayfs: an image that carries one (a `redirect`, a
//!   `metacopy`) would otherwise steer the host's overlay mount.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layer::{join, Attr, Kind, Layer, LowerFile};
use crate::whiteout::{self, OPAQUE_MARKER};

/// What a name of the view is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An entry of the layer, at the same path.
    Real(Attr),
    /// A deletion: the layer has `.wh.NAME`; shown as a 0/0 device with
    /// the attributes of that file.
    Whiteout(Attr),
}

impl Entry {
    /// The attributes the view shows.
    pub fn attr(&self) -> Attr {
        match self {
            Entry::Real(a) => a.clone(),
            Entry::Whiteout(a) => Attr {
                kind: Kind::CharDev,
                rdev: 0,
                perm: 0,
                size: 0,
                blocks: 0,
                nlink: 1,
                ..a.clone()
            },
        }
    }
}

/// A layer seen in overlay form.
#[derive(Debug, Clone)]
pub struct Diff {
    layer: Arc<dyn Layer>,
    /// The xattr that marks an opaque directory (see the module doc).
    opaque: &'static str,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// `dir/.wh.NAME`.
fn whiteout_path(dir: &Path, name: &OsStr) -> PathBuf {
    join(dir, &whiteout::whiteout_name(name))
}

impl Diff {
    /// `layer` in overlay form, opaque directories marked by the xattr
    /// `opaque` (one of [`whiteout::OPAQUE_XATTRS`]).
    pub fn new(layer: Arc<dyn Layer>, opaque: &'static str) -> Diff {
        Diff { layer, opaque }
    }

    /// The layer underneath.
    pub fn layer(&self) -> &Arc<dyn Layer> {
        &self.layer
    }

    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: &Path, name: &OsStr) -> io::Result<Entry> {
        if !crate::layer::is_plain_name(name) {
            return Err(enoent());
        }
        // The OCI spellings are not names of the overlay form.
        if !matches!(whiteout::classify(name, false), whiteout::Kind::Entry) {
            return Err(enoent());
        }
        match self.layer.stat(&join(dir, name)) {
            Ok(a) => return Ok(Entry::Real(a)),
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            Err(_) => {}
        }
        match self.layer.stat(&whiteout_path(dir, name)) {
            Ok(a) if a.kind == Kind::File => Ok(Entry::Whiteout(a)),
            Ok(_) => Err(enoent()),
            Err(e) => Err(e),
        }
    }

    /// The entry at `path` ([`Diff::lookup`] of its last component).
    pub fn entry(&self, path: &Path) -> io::Result<Entry> {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => self.lookup(dir, name),
            _ => self.layer.stat(path).map(Entry::Real),
        }
    }

    /// Every name of directory `dir` with its kind, in no particular order.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let mut real = Vec::new();
        let mut deleted = Vec::new();
        self.layer.read_dir(dir, &mut |name, kind, _| {
            match whiteout::classify(name, false) {
                whiteout::Kind::Entry => real.push((name.to_owned(), kind)),
                whiteout::Kind::Whiteout(n) if kind == Kind::File => deleted.push(n.to_owned()),
                // A marker that is not a plain file is nothing overlayfs
                // or OCI reads; the opaque marker becomes an xattr.
                whiteout::Kind::Whiteout(_) | whiteout::Kind::Opaque => {}
            }
            Ok(())
        })?;
        // A name deleted and made again in the same layer is the new entry
        // (made opaque, see `is_opaque`).
        deleted.retain(|n| !real.iter().any(|(r, _)| r == n));
        real.extend(deleted.into_iter().map(|n| (n, Kind::CharDev)));
        Ok(real)
    }

    /// Whether directory `path` hides what lower layers have under it.
    fn is_opaque(&self, path: &Path) -> io::Result<bool> {
        let exists = |p: &Path| match self.layer.stat(p) {
            Ok(a) => Ok(a.kind == Kind::File),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        };
        if exists(&join(path, OsStr::new(OPAQUE_MARKER)))? {
            return Ok(true);
        }
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => exists(&whiteout_path(dir, name)),
            _ => Ok(false),
        }
    }

    /// The xattr names of `path`: the layer's own, less overlayfs's, plus
    /// the opaque markers of an opaque directory.
    pub fn list_xattrs(&self, path: &Path, entry: &Entry) -> io::Result<Vec<OsString>> {
        let Entry::Real(a) = entry else {
            return Ok(Vec::new());
        };
        let mut names: Vec<OsString> = self
            .layer
            .list_xattrs(path)?
            .into_iter()
            .filter(|n| !whiteout::is_private_xattr(n))
            .collect();
        if a.kind == Kind::Dir && self.is_opaque(path)? {
            names.push(OsString::from(self.opaque));
        }
        Ok(names)
    }

    /// The value of xattr `name` of `path`.
    pub fn get_xattr(
        &self,
        path: &Path,
        entry: &Entry,
        name: &OsStr,
    ) -> io::Result<Option<Vec<u8>>> {
        let Entry::Real(a) = entry else {
            return Ok(None);
        };
        if self.opaque.as_bytes() == name.as_bytes() {
            let opaque = a.kind == Kind::Dir && self.is_opaque(path)?;
            return Ok(opaque.then(|| b"y".to_vec()));
        }
        if whiteout::is_private_xattr(name) {
            return Ok(None);
        }
        self.layer.get_xattr(path, name)
    }

    /// The target of symlink `path`.
    pub fn readlink(&self, path: &Path) -> io::Result<OsString> {
        self.layer.readlink(path)
    }

    /// Regular file `path`, open for reading.
    pub fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        self.layer.open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::DirLayer;
    use crate::whiteout::OPAQUE_XATTRS;
    use std::fs;

    fn names(d: &Diff, dir: &str) -> Vec<(String, Kind)> {
        let mut v: Vec<_> = d
            .list(Path::new(dir))
            .unwrap()
            .into_iter()
            .map(|(n, k)| (n.to_string_lossy().into_owned(), k))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn oci_spellings_become_overlay_ones() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("etc/opq")).unwrap();
        fs::write(r.join("etc/opq/.wh..wh..opq"), "").unwrap();
        fs::write(r.join("etc/opq/kept"), "k").unwrap();
        fs::write(r.join("etc/.wh.gone"), "").unwrap();
        fs::write(r.join("etc/file"), "data").unwrap();
        // Deleted and made again in this layer: the new dir, opaque.
        fs::write(r.join(".wh.again"), "").unwrap();
        fs::create_dir(r.join("again")).unwrap();
        let d = Diff::new(Arc::new(DirLayer::new(r).unwrap()), OPAQUE_XATTRS[1]);

        assert_eq!(
            names(&d, "etc"),
            vec![
                ("file".into(), Kind::File),
                ("gone".into(), Kind::CharDev),
                ("opq".into(), Kind::Dir)
            ]
        );
        assert_eq!(names(&d, "etc/opq"), vec![("kept".into(), Kind::File)]);
        assert_eq!(
            names(&d, ""),
            vec![("again".into(), Kind::Dir), ("etc".into(), Kind::Dir)]
        );

        let gone = d.lookup(Path::new("etc"), OsStr::new("gone")).unwrap();
        assert!(matches!(gone, Entry::Whiteout(_)));
        assert!(gone.attr().is_whiteout_device());
        for hidden in [".wh.gone", ".wh..wh..opq", "missing", ".."] {
            let e = d.lookup(Path::new("etc"), OsStr::new(hidden)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{hidden}");
        }

        let opq = Path::new("etc/opq");
        let e = d.entry(opq).unwrap();
        let user = OsStr::new(OPAQUE_XATTRS[1]);
        let y = d.get_xattr(opq, &e, user).unwrap();
        assert_eq!(y.as_deref(), Some(&b"y"[..]));
        // Only the one asked for: root's overlay shows `user.*` xattrs.
        let trusted = OsStr::new(OPAQUE_XATTRS[0]);
        assert_eq!(d.get_xattr(opq, &e, trusted).unwrap(), None);
        assert_eq!(d.list_xattrs(opq, &e).unwrap(), vec![user.to_owned()]);
        let again = Path::new("again");
        let e = d.entry(again).unwrap();
        assert!(d.get_xattr(again, &e, user).unwrap().is_some());
        let etc = Path::new("etc");
        let e = d.entry(etc).unwrap();
        assert_eq!(
            d.get_xattr(etc, &e, OsStr::new(OPAQUE_XATTRS[1])).unwrap(),
            None
        );
        assert!(d.list_xattrs(etc, &e).unwrap().is_empty());
    }

    #[test]
    fn an_images_own_overlay_xattrs_are_not_shown() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::write(r.join("f"), "x").unwrap();
        let set = |name: &str| {
            let dir = crate::sys::open_at(
                nix::fcntl::AT_FDCWD,
                r.as_os_str(),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .unwrap();
            crate::sys::xattr::set(
                std::os::fd::AsFd::as_fd(&dir),
                OsStr::new("f"),
                libc::AT_SYMLINK_NOFOLLOW,
                OsStr::new(name),
                b"/etc/shadow",
                0,
            )
        };
        set("user.overlay.redirect").unwrap();
        set("user.kept").unwrap();
        let d = Diff::new(Arc::new(DirLayer::new(r).unwrap()), OPAQUE_XATTRS[0]);
        let f = Path::new("f");
        let e = d.entry(f).unwrap();
        assert_eq!(
            d.list_xattrs(f, &e).unwrap(),
            vec![OsString::from("user.kept")]
        );
        assert_eq!(
            d.get_xattr(f, &e, OsStr::new("user.overlay.redirect"))
                .unwrap(),
            None
        );
        assert!(d
            .get_xattr(f, &e, OsStr::new("user.kept"))
            .unwrap()
            .is_some());
    }
}
