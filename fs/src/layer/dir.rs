//! [`DirLayer`]: a layer that is a directory tree on the host (an unpacked
//! layer, a fuse-overlayfs `lowerdir`).
//!
//! Its tree may be writable by someone other than the server (a user's own
//! layers under a root server with `allow_other`), so every path is
//! resolved beneath the layer's root fd and no symlink is followed in any
//! component ([`sys::open_beneath`]): a symlink planted in a lower dir can
//! never make the server read a host file outside the layer.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lru::LruCache;

use super::{Attr, EntryVisitor, FsStats, Kind, Layer, LowerFile};
use crate::lock::{Mutex, Rank};
use crate::sys::{self, DirFd};

/// How many directory fds a layer keeps open: the directories a workload
/// is busy in.
const CACHED_DIRS: usize = 256;

/// A layer over a host directory.
#[derive(Debug)]
pub struct DirLayer {
    /// The root as given, made absolute: the layer's id and what messages
    /// name.
    root: PathBuf,
    id: String,
    /// The root, open (`O_PATH`): every access starts here.
    root_fd: OwnedFd,
    /// Inode → paths of every regular file with more than one link, made
    /// by one scan of the layer the first time a hard link is copied up.
    links: OnceLock<HashMap<u64, Vec<PathBuf>>>,
    /// `O_PATH` fds of directories by path, resolved once beneath the
    /// root: a call on an entry is then one syscall on its directory's fd
    /// and its name (every file of a large directory shares one).
    dirs: Mutex<LruCache<PathBuf, Arc<OwnedFd>>>,
}

impl DirLayer {
    /// A layer over the directory `root`, which must exist.
    pub fn new(root: &Path) -> io::Result<DirLayer> {
        let root = root.canonicalize()?;
        let root_fd = sys::open_at(
            nix::fcntl::AT_FDCWD,
            root.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        Ok(DirLayer {
            id: root.to_string_lossy().into_owned(),
            root,
            root_fd,
            links: OnceLock::new(),
            dirs: Mutex::new(
                Rank::LayerDirs,
                LruCache::new(NonZeroUsize::new(CACHED_DIRS).expect("non-zero")),
            ),
        })
    }

    /// The host directory this layer is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open_fd(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        sys::open_beneath(self.root_fd.as_fd(), path, flags, 0)
    }

    /// The hard-linked files of the layer (see [`DirLayer::links`]): a walk
    /// of the whole tree through directory fds.
    fn scan_links(&self) -> io::Result<HashMap<u64, Vec<PathBuf>>> {
        let mut out: HashMap<u64, Vec<PathBuf>> = HashMap::new();
        let mut stack = vec![(
            DirFd::from_fd(self.open_fd(Path::new(""), libc::O_RDONLY | libc::O_DIRECTORY)?),
            PathBuf::new(),
        )];
        while let Some((dir, path)) = stack.pop() {
            for (name, d_type) in dir.entries()? {
                match Kind::from_d_type(d_type) {
                    Some(Kind::Dir) => {
                        if let Ok(d) = DirFd::open(dir.as_fd(), &name) {
                            stack.push((d, path.join(&name)));
                        }
                    }
                    Some(Kind::File) | None => {
                        let Ok(st) = dir.stat(&name) else { continue };
                        if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink > 1 {
                            out.entry(st.st_ino).or_default().push(path.join(&name));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The directory `dir` of the layer, open (`O_PATH`), from the cache.
    fn dir(&self, dir: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.dirs.lock().get(dir) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(self.open_fd(dir, libc::O_PATH | libc::O_DIRECTORY)?);
        self.dirs.lock().put(dir.to_owned(), fd.clone());
        Ok(fd)
    }

    /// The parent directory of `path`, open, and `path`'s last name (`"."`
    /// for the root).
    fn parent_of<'p>(&self, path: &'p Path) -> io::Result<(Arc<OwnedFd>, &'p OsStr)> {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => Ok((self.dir(dir)?, name)),
            _ => Ok((self.dir(Path::new(""))?, OsStr::new("."))),
        }
    }

    /// Opens `path` with `flags` (its last component not followed).
    fn open_entry(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        let (dir, name) = self.parent_of(path)?;
        sys::open_at(dir.as_fd(), name, flags, 0)
    }
}

/// An open file of a host layer.
#[derive(Debug)]
struct HostFile(File);

impl LowerFile for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        sys::pread_full(&self.0, buf, offset)
    }

    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.as_fd())
    }

    fn copy_to(&self, dst: &File, len: u64, durable: bool) -> io::Result<()> {
        sys::copy_data(&self.0, dst, len, durable)
    }

    fn seek_data(&self, offset: u64, whence: i32) -> Option<io::Result<u64>> {
        Some(sys::seek(&self.0, offset, whence))
    }
}

impl Layer for DirLayer {
    fn id(&self) -> &str {
        &self.id
    }

    fn stat(&self, path: &Path) -> io::Result<Attr> {
        let fd = self.open_fd(path, libc::O_PATH)?;
        Attr::from_stat(&sys::stat_at(
            fd.as_fd(),
            OsStr::new(""),
            libc::AT_EMPTY_PATH,
        )?)
    }

    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>> {
        // One walk beneath the root: a listing is read once, so caching its
        // parent's fd (what open_entry does) would cost an open per parent.
        let dir = DirFd::from_fd(self.open_fd(path, libc::O_RDONLY | libc::O_DIRECTORY)?);
        dir.each(|name, d_type| {
            let mut stat = || Attr::from_stat(&dir.stat(name)?);
            match Kind::from_d_type(d_type) {
                Some(kind) => each(name, kind, &mut stat),
                // The filesystem does not say: ask stat.
                None => match stat() {
                    Ok(a) => each(name, a.kind, &mut || Ok(a.clone())),
                    // Gone since the listing: skipped.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    Err(e) => Err(e),
                },
            }
        })?;
        dir.xattr_names()
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        let (dir, name) = self.parent_of(path)?;
        Ok(nix::fcntl::readlinkat(dir.as_fd(), name)?)
    }

    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let (dir, name) = self.parent_of(path)?;
        sys::xattr::list(dir.as_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
    }

    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let (dir, entry) = self.parent_of(path)?;
        sys::xattr::get(dir.as_fd(), entry, libc::AT_SYMLINK_NOFOLLOW, name)
    }

    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = File::from(self.open_entry(path, libc::O_RDONLY | libc::O_NONBLOCK)?);
        sys::will_need(&f, len)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        let f = File::from(self.open_entry(path, libc::O_RDONLY)?);
        Ok(Arc::new(HostFile(f)))
    }

    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        if self.links.get().is_none() {
            let scanned = self.scan_links()?;
            let _ = self.links.set(scanned);
        }
        Ok(self
            .links
            .get()
            .and_then(|m| m.get(&file_id))
            .cloned()
            .unwrap_or_default())
    }

    fn statfs(&self) -> io::Result<FsStats> {
        Ok(FsStats::from_statvfs(&nix::sys::statvfs::fstatvfs(
            &self.root_fd,
        )?))
    }
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
        let l: &dyn Layer = &DirLayer::new(t.path()).unwrap();
        let mut names = Vec::new();
        l.read_dir(Path::new("d"), &mut |n, kind, attr| {
            if n == "f" {
                assert_eq!(attr()?.size, 5);
                assert_eq!(kind, Kind::File);
            }
            names.push(n.to_owned());
            Ok(())
        })
        .unwrap();
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
        assert_eq!(l.stat(Path::new("")).unwrap().kind, Kind::Dir);
        assert!(l.statfs().unwrap().blocks > 0);
    }

    #[test]
    fn symlinks_inside_the_layer_never_lead_out_of_it() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret"), b"host file").unwrap();
        std::fs::write(outside.join("sub/secret"), b"host file").unwrap();
        let root = t.path().join("layer");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("file")).unwrap();
        let l: &dyn Layer = &DirLayer::new(&root).unwrap();
        // An intermediate symlink is never followed, whatever the call.
        let through = Path::new("dir/secret");
        assert!(l.open(through).is_err());
        assert!(l.stat(through).is_err());
        assert!(l.read_dir(Path::new("dir"), &mut |_, _, _| Ok(())).is_err());
        assert!(l.readlink(Path::new("dir/sub")).is_err());
        assert!(l.get_xattr(through, OsStr::new("user.x")).is_err());
        assert!(l.list_xattrs(through).is_err());
        assert!(l.will_need(through, 1).is_err());
        // A final symlink is itself, and is not opened as a file.
        assert_eq!(l.stat(Path::new("file")).unwrap().kind, Kind::Symlink);
        assert!(l.open(Path::new("file")).is_err());
    }
}
