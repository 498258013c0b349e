//! The upper (writable) and work directories, reached only through file
//! descriptors.
//!
//! Every process in the mount may be hostile and racing the server: it can
//! swap a directory for a symlink to a host directory between two calls, or
//! keep an fd of a file whose name is gone and now names something else. So
//! nothing here ever walks a path string. An entry is a [`Loc`]: a
//! directory's fd and one name (looked up with `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW`), or an fd of the entry itself. The union turns a
//! node into a `Loc` while it holds its tree lock, under which the names it
//! knows and the names on disk agree; directory fds are cached by inode, and
//! an fd follows its directory through renames.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use nix::fcntl::{AtFlags, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use crate::layer::{Attr, FsStats};
use crate::lock::{Mutex, Rank};
use crate::sys::{self, DirFd};

/// Where an upper entry is.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    /// The entry `name` of the directory open as `dir`.
    Entry { dir: Arc<OwnedFd>, name: OsString },
    /// A directory, by its own fd.
    Dir(Arc<OwnedFd>),
    /// A file whose names are gone, by an `O_PATH` fd kept from before.
    Orphan(Arc<OwnedFd>),
}

const NOFOLLOW: i32 = libc::AT_SYMLINK_NOFOLLOW;

impl Loc {
    /// The (fd, name, flags) triple of the `*at` calls for this entry.
    fn at(&self) -> (BorrowedFd<'_>, &OsStr, i32) {
        match self {
            Loc::Entry { dir, name } => (dir.as_fd(), name, NOFOLLOW),
            Loc::Dir(fd) => (fd.as_fd(), OsStr::new("."), NOFOLLOW),
            Loc::Orphan(fd) => (fd.as_fd(), OsStr::new(""), libc::AT_EMPTY_PATH),
        }
    }

    pub(crate) fn stat(&self) -> io::Result<libc::stat> {
        let (fd, name, flags) = self.at();
        sys::stat_at(fd, name, flags)
    }

    pub(crate) fn attr(&self) -> io::Result<Attr> {
        Attr::from_stat(&self.stat()?)
    }

    /// chmod; symlinks have no mode of their own and are left alone.
    pub(crate) fn chmod(&self, mode: u32) -> io::Result<()> {
        let (fd, name, flags) = self.at();
        match sys::chmod_at(fd, name, mode, flags) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            r => r,
        }
    }

    /// chown; `u32::MAX` leaves an id alone.
    pub(crate) fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        let (fd, name, flags) = self.at();
        sys::at::chown_at(fd, name, uid, gid, flags)
    }

    pub(crate) fn utimens(&self, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
        let (fd, name, flags) = self.at();
        sys::utimens_at(fd, name, atime, mtime, flags)
    }

    pub(crate) fn get_xattr(&self, xname: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let (fd, name, flags) = self.at();
        sys::xattr::get(fd, name, flags, xname)
    }

    pub(crate) fn list_xattrs(&self) -> io::Result<Vec<OsString>> {
        let (fd, name, flags) = self.at();
        sys::xattr::list(fd, name, flags)
    }

    pub(crate) fn set_xattr(&self, xname: &OsStr, value: &[u8], xflags: i32) -> io::Result<()> {
        let (fd, name, flags) = self.at();
        sys::xattr::set(fd, name, flags, xname, value, xflags)
    }

    pub(crate) fn remove_xattr(&self, xname: &OsStr) -> io::Result<()> {
        let (fd, name, flags) = self.at();
        sys::xattr::remove(fd, name, flags, xname)
    }

    /// Opens the entry with open(2) `flags` (never following a symlink).
    pub(crate) fn open(&self, flags: i32) -> io::Result<File> {
        let fd = match self {
            Loc::Entry { dir, name } => sys::open_at(dir.as_fd(), name, flags, 0)?,
            Loc::Dir(fd) => sys::open_at(fd.as_fd(), OsStr::new("."), flags, 0)?,
            Loc::Orphan(fd) => sys::reopen(fd.as_fd(), flags | libc::O_NOFOLLOW)?,
        };
        Ok(File::from(fd))
    }

    /// An `O_PATH` fd of the entry itself, which keeps reaching it after its
    /// name is gone.
    pub(crate) fn pin(&self) -> io::Result<Arc<OwnedFd>> {
        match self {
            Loc::Entry { dir, name } => {
                Ok(Arc::new(sys::open_at(dir.as_fd(), name, libc::O_PATH, 0)?))
            }
            Loc::Dir(fd) | Loc::Orphan(fd) => Ok(fd.clone()),
        }
    }

    pub(crate) fn readlink(&self) -> io::Result<OsString> {
        let (fd, name, _) = self.at();
        let name = if name == "." { OsStr::new("") } else { name };
        Ok(nix::fcntl::readlinkat(fd, name)?)
    }

    /// Sets the size, through a write-only open.
    pub(crate) fn truncate(&self, size: u64) -> io::Result<()> {
        self.open(libc::O_WRONLY)?.set_len(size)
    }
}

/// How many directory fds [`Upper`] keeps open: the directories a workload
/// is busy in, far below any open-file limit.
const CACHED_DIRS: usize = 1024;

/// The upper and work directories.
#[derive(Debug)]
pub(crate) struct Upper {
    /// The upper dir as given (for messages).
    path: PathBuf,
    root: Arc<OwnedFd>,
    /// Scratch dir on the upper dir's filesystem, where copies are made
    /// before they are renamed into place.
    work: Arc<OwnedFd>,
    /// `O_PATH` fds of upper directories, by inode number (see the module
    /// doc). Guarded by its own lock, which is taken last.
    fds: Mutex<LruCache<u64, Arc<OwnedFd>>>,
    /// Numbers for temp names in the work dir.
    tmp_counter: AtomicU64,
}

impl Upper {
    /// Opens the upper and work dirs (which must exist) and clears what an
    /// interrupted copy-up left in the work dir.
    pub(crate) fn open(upper: &Path, work: &Path) -> io::Result<Upper> {
        let open = |p: &Path| {
            sys::open_at(
                nix::fcntl::AT_FDCWD,
                p.as_os_str(),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
        };
        let u = Upper {
            path: upper.to_owned(),
            root: Arc::new(open(upper)?),
            work: Arc::new(open(work)?),
            fds: Mutex::new(
                Rank::UpperFds,
                LruCache::new(NonZeroUsize::new(CACHED_DIRS).expect("non-zero")),
            ),
            tmp_counter: AtomicU64::new(0),
        };
        u.clear_leftovers()?;
        Ok(u)
    }

    /// The upper dir's path, as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn root(&self) -> &Arc<OwnedFd> {
        &self.root
    }

    pub(crate) fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// A fresh name for a temp entry in the work dir.
    pub(crate) fn tmp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("rcfs-tmp-{}-{n}", std::process::id()))
    }

    /// The temp entry `name` of the work dir.
    pub(crate) fn tmp(&self, name: &OsStr) -> Loc {
        Loc::Entry {
            dir: self.work.clone(),
            name: name.to_owned(),
        }
    }

    /// Removes temp entries a crash left in the work dir: they are never
    /// visible, and nothing refers to them.
    fn clear_leftovers(&self) -> io::Result<()> {
        let dir = DirFd::open(self.work.as_fd(), OsStr::new("."))?;
        for (name, d_type) in dir.entries()? {
            if name.as_bytes().starts_with(b"rcfs-tmp-") {
                let r = if d_type == libc::DT_DIR {
                    remove_tree(self.work.as_fd(), &name)
                } else {
                    self.unlink(self.work.as_fd(), &name)
                };
                if let Err(e) = r {
                    log::warn!("cannot remove the leftover {name:?} in the work dir: {e}");
                }
            }
        }
        Ok(())
    }

    /// The cached fd of directory `ino`.
    pub(crate) fn cached_dir(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.fds.lock().get(&ino).cloned()
    }

    pub(crate) fn cache_dir(&self, ino: u64, fd: Arc<OwnedFd>) {
        self.fds.lock().put(ino, fd);
    }

    /// Forgets directory `ino`'s fd (it was removed or replaced).
    pub(crate) fn forget_dir(&self, ino: u64) {
        self.fds.lock().pop(&ino);
    }

    /// Opens the subdirectory `name` of `dir` (`O_PATH`).
    pub(crate) fn open_dir(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Arc<OwnedFd>> {
        Ok(Arc::new(sys::open_at(
            dir,
            name,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?))
    }

    /// Calls `f` with each entry of directory `dir` (not `.`/`..`) and its
    /// lstat. Entries that vanish meanwhile are skipped.
    pub(crate) fn each_entry(
        &self,
        dir: BorrowedFd<'_>,
        mut f: impl FnMut(&OsStr, &libc::stat) -> io::Result<()>,
    ) -> io::Result<()> {
        let d = DirFd::open(dir, OsStr::new("."))?;
        d.each(|name, _| match d.stat(name) {
            Ok(st) => f(name, &st),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        })
    }

    /// Calls `f` with those of `names` that directory `dir` holds, and
    /// their lstat.
    pub(crate) fn each_named(
        &self,
        dir: BorrowedFd<'_>,
        names: &[&OsStr],
        mut f: impl FnMut(&OsStr, &libc::stat) -> io::Result<()>,
    ) -> io::Result<()> {
        for &name in names {
            match crate::sys::at::stat_at(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => f(name, &st)?,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn mkdir(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
        sys::exact_modes()?;
        Ok(nix::sys::stat::mkdirat(
            dir,
            name,
            Mode::from_bits_retain(mode),
        )?)
    }

    pub(crate) fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        sys::exact_modes()?;
        Ok(nix::sys::stat::mknodat(
            dir,
            name,
            SFlag::from_bits_truncate(mode & libc::S_IFMT),
            Mode::from_bits_retain(mode & !libc::S_IFMT),
            rdev,
        )?)
    }

    pub(crate) fn symlink(
        &self,
        target: &OsStr,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<()> {
        Ok(nix::unistd::symlinkat(target, dir, name)?)
    }

    /// Creates and opens a regular file (`O_CREAT | O_EXCL` are added).
    pub(crate) fn create(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        flags: i32,
        mode: u32,
    ) -> io::Result<File> {
        sys::exact_modes()?;
        Ok(File::from(sys::open_at(
            dir,
            name,
            flags | libc::O_CREAT | libc::O_EXCL,
            mode,
        )?))
    }

    /// A new name `(to, to_name)` for the entry `(from, from_name)`.
    pub(crate) fn link(
        &self,
        from: BorrowedFd<'_>,
        from_name: &OsStr,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
    ) -> io::Result<()> {
        Ok(nix::unistd::linkat(
            from,
            from_name,
            to,
            to_name,
            AtFlags::empty(),
        )?)
    }

    pub(crate) fn unlink(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(
            dir,
            name,
            UnlinkatFlags::NoRemoveDir,
        )?)
    }

    pub(crate) fn rmdir(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
    }

    /// `renameat2` with `RENAME_*` flags.
    pub(crate) fn rename(
        &self,
        from: BorrowedFd<'_>,
        from_name: &OsStr,
        to: BorrowedFd<'_>,
        to_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        Ok(nix::fcntl::renameat2(
            from,
            from_name,
            to,
            to_name,
            RenameFlags::from_bits_retain(flags),
        )?)
    }

    /// Flushes directory `dir`'s entries to disk (a rename into it, say).
    pub(crate) fn fsync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        let d = sys::open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(nix::unistd::fsync(d)?)
    }

    /// Flushes the upper dir's whole filesystem (`syncfs`, which needs an
    /// fd that is not `O_PATH`).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let d = sys::open_at(
            self.root.as_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        Ok(nix::unistd::syncfs(d)?)
    }

    pub(crate) fn statfs(&self) -> io::Result<FsStats> {
        Ok(FsStats::from_statvfs(&nix::sys::statvfs::fstatvfs(
            self.root.as_fd(),
        )?))
    }
}

/// Removes the tree `name` of `dir` (a leftover copy of a directory in the
/// work dir), through fds.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let d = DirFd::open(dir, name)?;
    for (child, d_type) in d.entries()? {
        if d_type == libc::DT_DIR {
            remove_tree(d.as_fd(), &child)?;
        } else {
            nix::unistd::unlinkat(d.as_fd(), child.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    drop(d);
    Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
}
