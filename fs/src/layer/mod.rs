//! Read-only layers: what the union stacks below its upper directory.
//!
//! A [`Layer`] answers questions about paths relative to its root: attributes,
//! directory listings, symlink targets, xattrs, and file contents through
//! [`LowerFile`]. Listings are *raw*: whiteouts and opaque markers are
//! returned as ordinary entries, and only the union (through
//! [`crate::whiteout`]) gives them meaning.
//!
//! Implementations: [`DirLayer`], a directory on the host (an unpacked layer
//! or a fuse-overlayfs `lowerdir`), and [`ImageLayer`], an image layer
//! served from its table of contents with data fetched on first read. Layers are immutable while
//! mounted, so the union may cache everything a layer says.
//!
//! # Blocking
//!
//! Metadata calls — [`Layer::stat`], [`Layer::read_dir`], [`Layer::readlink`],
//! the xattr calls, [`Layer::open`], [`Layer::will_need`] and
//! [`Layer::statfs`] — answer from what the layer holds locally (a host
//! directory, an image layer's table of contents) and never wait on a
//! network: a lookup or a listing must not stall behind a download. Only the
//! data calls, [`LowerFile::read_at`] and [`LowerFile::copy_to`], may wait
//! for bytes to arrive. The union never calls them while holding a lock that
//! operations on other files need (at most the file's own copy-up lock).
//!
//! The exception is a layer still arriving ([`StreamLayer`], a tar layer
//! being pulled), which is not [`Layer::complete`]: its answers about a
//! path wait until the stream has reached that path, and its listings until
//! the stream ends. The union first waits without locks
//! ([`Layer::settle`], [`Layer::wait_complete`]) for what it will ask.
//!
//! # Errors
//!
//! Errors are `io::Error`s. One that carries no errno (a network error of an
//! image layer, made with [`crate::error::layer_error`]) keeps its cause for
//! the log and reaches the program as the errno it was made with (EIO).

mod dir;
mod image;
pub mod shift;
mod stream;

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use dir::DirLayer;
pub use image::{ImageLayer, StartLog, Trace};
pub use stream::{Stream, StreamLayer};

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

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    /// The kind a `d_type` of a directory entry names, if it names one.
    pub fn from_d_type(d_type: u8) -> Option<Kind> {
        Some(match d_type {
            libc::DT_REG => Kind::File,
            libc::DT_DIR => Kind::Dir,
            libc::DT_LNK => Kind::Symlink,
            libc::DT_CHR => Kind::CharDev,
            libc::DT_BLK => Kind::BlockDev,
            libc::DT_FIFO => Kind::Fifo,
            libc::DT_SOCK => Kind::Socket,
            _ => return None,
        })
    }
}

/// A timestamp: nanoseconds since the epoch (negative before it), which
/// covers the years 1678 to 2262 in 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time(pub i64);

impl Time {
    /// From seconds and nanoseconds as `stat` gives them.
    pub fn from_timespec(sec: i64, nsec: i64) -> Time {
        Time(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
    }

    pub fn from_system_time(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Time(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_nanos(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(self.0.unsigned_abs())
        }
    }

    pub fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.0.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: self.0.rem_euclid(1_000_000_000) as libc::c_long,
        }
    }
}

/// Attributes of one entry, as a layer stores them (72 bytes: the union
/// keeps one per lower entry it has seen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Identifies the file within its layer: entries with the same id are
    /// hard links of one file.
    pub file_id: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    /// Permission bits with setuid/setgid/sticky, without the type bits.
    pub perm: u16,
    pub kind: Kind,
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
            atime: Time::from_timespec(st.st_atime, st.st_atime_nsec),
            mtime: Time::from_timespec(st.st_mtime, st.st_mtime_nsec),
            ctime: Time::from_timespec(st.st_ctime, st.st_ctime_nsec),
            file_id: st.st_ino,
        })
    }

    /// True for the overlayfs whiteout form, a character device 0/0.
    pub fn is_whiteout_device(&self) -> bool {
        self.kind == Kind::CharDev && self.rdev == 0
    }

    /// The device number `major:minor` as [`Attr::rdev`] holds it: the
    /// `dev_t` of `stat` (what FUSE and `mknod` take), in 32 bits.
    pub fn rdev_of(major: u32, minor: u32) -> u32 {
        libc::makedev(major, minor) as u32
    }

    /// The (major, minor) of [`Attr::rdev`].
    pub fn major_minor(&self) -> (u32, u32) {
        let d = libc::dev_t::from(self.rdev);
        (libc::major(d), libc::minor(d))
    }
}

/// What [`Layer::read_dir`] calls for each raw entry: with its name, its
/// kind, and a function that returns its attributes when asked (a host
/// layer stats the entry only then: a union needs attributes only for the
/// entries it shows, and stat calls are most of what listing a host
/// directory costs). An entry whose attributes cannot be had because it is
/// gone meanwhile (ENOENT) is to be skipped.
pub type EntryVisitor<'v> =
    dyn FnMut(&OsStr, Kind, &mut dyn FnMut() -> io::Result<Attr>) -> io::Result<()> + 'v;

/// What `statfs` says of the filesystem a layer lives on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namemax: u32,
    pub frsize: u32,
}

impl FsStats {
    /// From a host `fstatvfs`.
    pub fn from_statvfs(s: &nix::sys::statvfs::Statvfs) -> FsStats {
        FsStats {
            blocks: s.blocks(),
            bfree: s.blocks_free(),
            bavail: s.blocks_available(),
            files: s.files(),
            ffree: s.files_free(),
            bsize: s.block_size() as u32,
            namemax: s.name_max() as u32,
            frsize: s.fragment_size() as u32,
        }
    }
}

/// An open file of a layer.
pub trait LowerFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at end of
    /// file. May wait for data to arrive (see the module doc).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// A host fd holding exactly these bytes, when there is one: the kernel
    /// can then serve reads itself (FUSE passthrough).
    fn host_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Brings the file's data here, when it is somewhere slow (a registry):
    /// a copy-up calls this before it takes the node's copy lock, so that
    /// the lock, which readers and writers of the node wait on, is never
    /// held across a network fetch. Whatever it fetched is checked and
    /// cached as a read's would be. A no-op for data already here.
    fn prefetch(&self) -> io::Result<()> {
        Ok(())
    }

    /// Copies the first `len` bytes into `dst` at the same offsets (copy-up).
    /// `dst` ends up at least `len` bytes long, and bytes it holds past
    /// `len` are kept. With `durable`, writeback may start as the copy goes,
    /// for a flush that follows. The default reads and writes 1 MiB at a
    /// time; a host layer copies in the kernel and keeps holes.
    fn copy_to(&self, dst: &File, len: u64, durable: bool) -> io::Result<()> {
        let _ = durable;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < len {
            let want = (len - off).min(buf.len() as u64) as usize;
            let n = self.read_at(&mut buf[..want], off)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        if crate::sys::fstat(dst)?.st_size < len as i64 {
            dst.set_len(len)?;
        }
        Ok(())
    }

    /// `lseek` with `SEEK_DATA` or `SEEK_HOLE` (`whence`) from `offset`, when
    /// the layer knows where the holes are; `None` when it does not, and the
    /// whole file then counts as data (which POSIX allows).
    fn seek_data(&self, offset: u64, whence: i32) -> Option<io::Result<u64>> {
        let _ = (offset, whence);
        None
    }
}

/// A read-only layer. Paths are relative to the layer root (`""` is the root)
/// and never contain `..`; the union only asks for paths it has seen listed.
pub trait Layer: Send + Sync + Debug {
    /// A name for this layer that stays the same across mounts (a host
    /// directory's path, an image layer's digest): upper dirs record it
    /// where they refer to a lower file (metacopy origins).
    fn id(&self) -> &str;
    /// Attributes of `path`, without following a final symlink.
    fn stat(&self, path: &Path) -> io::Result<Attr>;
    /// Calls `each` with every raw entry of directory `path` (no `.` or
    /// `..`), in no particular order, and returns the directory's own xattr
    /// names (values through [`Layer::get_xattr`]).
    fn read_dir(&self, path: &Path, each: &mut EntryVisitor<'_>) -> io::Result<Vec<OsString>>;
    /// The target of symlink `path`.
    fn readlink(&self, path: &Path) -> io::Result<OsString>;
    /// Names of the xattrs of `path`.
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Value of xattr `name` of `path`, `None` when absent.
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>>;
    /// Opens regular file `path` for reading, without reading any of it.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>>;
    /// A hint that the first `len` bytes of regular file `path` will be read
    /// soon: start fetching them without waiting for them.
    fn will_need(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Every path of the file with id `file_id` (its hard links), in any
    /// order. Asked only for files with more than one link, when one of
    /// them is copied up. May take a while the first time (a host layer
    /// scans itself once), never waits on a network.
    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>>;
    /// Capacity and usage of where the layer lives (a read-only union's
    /// `statfs`).
    fn statfs(&self) -> io::Result<FsStats>;

    /// The mount ends: keep what is worth keeping for the next one.
    fn end(&self) {}
    /// Whether every entry of the layer is there (only a layer still
    /// arriving says no).
    fn complete(&self) -> bool {
        true
    }
    /// Waits until the layer knows whether each of `paths` exists and what
    /// it is; at once for a complete layer.
    fn settle(&self, paths: &[PathBuf]) -> io::Result<()> {
        let _ = paths;
        Ok(())
    }
    /// Waits until the layer is complete (or can never be: an error).
    fn wait_complete(&self) -> io::Result<()> {
        Ok(())
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

    #[test]
    fn times_round_trip_before_and_after_the_epoch() {
        for (sec, nsec) in [
            (0, 0),
            (1_700_000_000, 123_456_789),
            (-1, 500),
            (-86_400, 0),
        ] {
            let t = Time::from_timespec(sec, nsec);
            let ts = t.to_timespec();
            assert_eq!((ts.tv_sec, ts.tv_nsec), (sec, nsec));
            assert_eq!(Time::from_system_time(t.to_system_time()), t);
        }
        assert_eq!(std::mem::size_of::<Attr>(), 72);
    }

    /// A layer file served by the default `copy_to`.
    #[derive(Debug)]
    struct Mem(Vec<u8>);

    impl LowerFile for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
        fn host_fd(&self) -> Option<BorrowedFd<'_>> {
            None
        }
    }

    #[test]
    fn default_copy_to_copies_and_keeps_a_tail() {
        let t = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(t.path().join("d"))
            .unwrap();
        dst.write_all_at(b"tail", data.len() as u64).unwrap();
        Mem(data.clone())
            .copy_to(&dst, data.len() as u64, false)
            .unwrap();
        let got = std::fs::read(t.path().join("d")).unwrap();
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], b"tail");
        assert!(Mem(data).seek_data(0, libc::SEEK_DATA).is_none());
    }
}
