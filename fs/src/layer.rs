//! Read-only layers: what the union stacks below its upper directory.
//!
//! A [`Layer`] answers questions about paths relative to its root: attributes,
//! directory listings, symlink targets, xattrs, and file contents through
//! [`LowerFile::read_at`]. Listings are *raw*: whiteouts and opaque markers are
//! returned as ordinary entries, and only the union (through
//! [`crate::whiteout`]) gives them meaning.
//!
//! Implementations: [`DirLayer`], a directory on the host (an unpacked layer
//! or a fuse-overlayfs `lowerdir`); an image layer served lazily from its blob
//! comes next, behind the same trait. Layers are immutable while mounted, so
//! the union may cache everything a layer says.

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys;

/// The type of a layer entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    /// The kind encoded in the `S_IFMT` bits of `mode`.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }
}

/// Attributes of one entry, as a layer stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky, without the type bits.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Identifies the file within its layer: entries with the same id are hard
    /// links of one file.
    pub file_id: u64,
}

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec as u32)
    }
}

impl Attr {
    /// Attributes from a host `stat` buffer.
    pub fn from_stat(st: &libc::stat) -> io::Result<Attr> {
        let kind =
            Kind::from_mode(st.st_mode).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        Ok(Attr {
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            nlink: st.st_nlink as u32,
            rdev: st.st_rdev as u32,
            atime: ts(st.st_atime, st.st_atime_nsec),
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            file_id: st.st_ino,
        })
    }

    /// True for the overlayfs whiteout form, a character device 0/0.
    pub fn is_whiteout_device(&self) -> bool {
        self.kind == Kind::CharDev && self.rdev == 0
    }
}

/// One raw entry of a layer directory.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    /// Present when the caller asked for it (see [`Layer::read_dir`]).
    pub attr: Option<Attr>,
}

/// A raw directory listing.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Names of the directory's own xattrs (values through
    /// [`Layer::get_xattr`]).
    pub xattr_names: Vec<OsString>,
}

/// An open file of a layer.
pub trait LowerFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// A host fd holding exactly these bytes, when there is one: the kernel can
    /// then serve reads itself (FUSE passthrough) and copy-up can reflink.
    fn host_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// A read-only layer. Paths are relative to the layer root (`""` is the root)
/// and never contain `..`; the union only asks for paths it has seen listed.
pub trait Layer: Send + Sync + Debug {
    /// Attributes of `path`, without following a final symlink.
    fn stat(&self, path: &Path) -> io::Result<Attr>;
    /// The raw entries of directory `path` (no `.` or `..`) and its xattr
    /// names. An entry's attributes are filled in when `want_attr(name, kind)`
    /// says so: a union needs them only for entries it shows, and stat calls
    /// are most of what listing a host directory costs.
    fn read_dir(
        &self,
        path: &Path,
        want_attr: &mut dyn FnMut(&OsStr, Kind) -> bool,
    ) -> io::Result<Listing>;
    /// The target of symlink `path`.
    fn readlink(&self, path: &Path) -> io::Result<OsString>;
    /// Names of the xattrs of `path`.
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Value of xattr `name` of `path`, `None` when absent.
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>>;
    /// Opens regular file `path` for reading.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>>;
    /// A host path for `path`, for statfs and diagnostics; `None` when the
    /// layer does not live in a host directory.
    fn host_path(&self, path: &Path) -> Option<PathBuf>;
    /// A hint that the first `len` bytes of regular file `path` will be read
    /// soon: start fetching them without waiting for them.
    fn will_need(&self, path: &Path, len: u64) -> io::Result<()>;
}

/// A layer that is a directory tree on the host.
#[derive(Debug)]
pub struct DirLayer {
    root: PathBuf,
    /// The root, open: lookups and opens start here rather than at `/`.
    root_fd: File,
}

impl DirLayer {
    /// A layer over the directory `root`, which must exist.
    pub fn new(root: &Path) -> io::Result<DirLayer> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let root_fd = sys::open(&root, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(DirLayer { root, root_fd })
    }

    fn full(&self, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

#[derive(Debug)]
struct HostFile(File);

impl LowerFile for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        sys::pread_full(&self.0, buf, offset)
    }
    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.as_fd())
    }
}

impl Layer for DirLayer {
    fn stat(&self, path: &Path) -> io::Result<Attr> {
        if path.as_os_str().is_empty() {
            return Attr::from_stat(&sys::lstat(&self.root)?);
        }
        Attr::from_stat(&sys::lstat_at(&self.root_fd, &sys::cstr(path)?)?)
    }

    fn read_dir(
        &self,
        path: &Path,
        want_attr: &mut dyn FnMut(&OsStr, Kind) -> bool,
    ) -> io::Result<Listing> {
        let dir = sys::DirFd::open_at(&self.root_fd, path)?;
        let mut entries = Vec::new();
        for (name, d_type) in dir.entries()? {
            let kind = match d_type {
                libc::DT_REG => Some(Kind::File),
                libc::DT_DIR => Some(Kind::Dir),
                libc::DT_LNK => Some(Kind::Symlink),
                libc::DT_CHR => Some(Kind::CharDev),
                libc::DT_BLK => Some(Kind::BlockDev),
                libc::DT_FIFO => Some(Kind::Fifo),
                libc::DT_SOCK => Some(Kind::Socket),
                _ => None, // the filesystem does not say: ask stat
            };
            let attr = match kind {
                Some(k) if !want_attr(&name, k) => None,
                _ => match dir.lstat(&name) {
                    Ok(st) => Attr::from_stat(&st).ok(),
                    // Vanished since the listing: the layer is being changed
                    // under us, which we tolerate by skipping the entry.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                },
            };
            let Some(kind) = kind.or(attr.as_ref().map(|a| a.kind)) else {
                continue;
            };
            entries.push(Entry { name, kind, attr });
        }
        Ok(Listing {
            entries,
            xattr_names: dir.xattr_names()?,
        })
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        sys::readlink(&self.full(path))
    }

    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        sys::listxattr(&self.full(path))
    }

    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        sys::getxattr(&self.full(path), name)
    }

    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = sys::open_at(&self.root_fd, path, libc::O_RDONLY | libc::O_NONBLOCK)?;
        sys::will_need(&f, len)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        let f = sys::open_at(&self.root_fd, path, libc::O_RDONLY)?;
        Ok(Arc::new(HostFile(f)))
    }

    fn host_path(&self, path: &Path) -> Option<PathBuf> {
        Some(self.full(path))
    }
}

/// Joins a relative union path and a name (`""` is the root).
pub fn join(dir: &Path, name: &OsStr) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        let mut p = dir.as_os_str().to_owned();
        p.push("/");
        p.push(name);
        PathBuf::from(p)
    }
}

/// True when `name` is a plain single component (not empty, `.`, `..`, no `/`).
pub fn is_plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_layer_lists_raw_entries_and_reads() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"hello").unwrap();
        std::fs::write(t.path().join("d/.wh.gone"), b"").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("d/l")).unwrap();
        let l = DirLayer::new(t.path()).unwrap();
        let listing = l.read_dir(Path::new("d"), &mut |n, _| n == "f").unwrap();
        assert!(listing
            .entries
            .iter()
            .all(|e| e.attr.is_some() == (e.name == "f")));
        let mut names: Vec<_> = listing.entries.into_iter().map(|e| e.name).collect();
        names.sort();
        assert_eq!(
            names,
            vec![OsString::from(".wh.gone"), "f".into(), "l".into()]
        );
        assert_eq!(l.stat(Path::new("d/l")).unwrap().kind, Kind::Symlink);
        assert_eq!(l.readlink(Path::new("d/l")).unwrap(), OsString::from("f"));
        let f = l.open(Path::new("d/f")).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(f.read_at(&mut buf, 1).unwrap(), 4);
        assert_eq!(&buf[..4], b"ello");
        assert!(l.stat(Path::new("missing")).is_err());
    }

    #[test]
    fn join_and_names() {
        assert_eq!(join(Path::new(""), OsStr::new("a")), PathBuf::from("a"));
        assert_eq!(
            join(Path::new("a/b"), OsStr::new("c")),
            PathBuf::from("a/b/c")
        );
        assert!(is_plain_name(OsStr::new("x")));
        assert!(!is_plain_name(OsStr::new("..")));
        assert!(!is_plain_name(OsStr::new("a/b")));
    }
}
