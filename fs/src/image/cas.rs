//! A directory of content named by its sha256 (`sha256/HEX`), reached only
//! through its directory fd.
//!
//! Content goes in through a temp file in the store's `tmp/` dir (same
//! filesystem), is hashed on the way, checked against the digest it claims,
//! flushed, and renamed into place: a reader never sees a partial or wrong
//! object, and two writers of one object both end with the same bytes.
//! Names are hex digits only, so no name can lead out of the directory.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::renameat;
use nix::unistd::unlinkat;

use super::digest::{Digest, Hasher};
use crate::error::layer_error;
use crate::sys;

/// A content-addressed directory.
#[derive(Debug)]
pub struct Cas {
    /// The `sha256` directory.
    dir: OwnedFd,
    /// Where objects are written before they are renamed into `dir`.
    tmp: OwnedFd,
}

/// The xattr that marks an object checked against its digest since the
/// system booted and not written since: its value is the boot id, the
/// object's mtime and its size (see [`mark`]). Objects are written without
/// a flush where a check before use stands in for one (see
/// [`Cas::put_verified`]): a crash can tear them, but a crash also changes
/// the boot id, so after one every object is checked again on first use;
/// until one, each is hashed once in all (not once per process, which made
/// every container re-read whole files before their first byte). A write
/// to an object changes its mtime or size, so it is checked again too.
const CHECKED_XATTR: &std::ffi::CStr = c"user.rcfs.checked";

/// This boot's id.
fn boot_id() -> Option<&'static [u8]> {
    static ID: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    ID.get_or_init(crate::flush::boot_id).as_deref()
}

/// The value of [`CHECKED_XATTR`] for an object whose `fstat` is `st`.
fn mark(st: &libc::stat) -> Option<Vec<u8>> {
    let id = boot_id()?;
    let mut v = id.to_vec();
    v.extend_from_slice(format!(" {}.{} {}", st.st_mtime, st.st_mtime_nsec, st.st_size).as_bytes());
    Some(v)
}

/// Whether the object open as `f`, whose `fstat` (taken after it was
/// opened) is `st`, was checked against its digest since the system
/// booted, and not written since (see [`mark_checked`]).
pub fn checked_this_boot(f: &impl AsFd, st: &libc::stat) -> bool {
    let Some(want) = mark(st) else {
        return false;
    };
    let mut buf = [0u8; 128];
    // SAFETY: a valid fd, a C string and a buffer of the length given.
    let n = unsafe {
        libc::fgetxattr(
            std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()),
            CHECKED_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n > 0 && buf[..n as usize] == want[..]
}

/// Marks the object open as `f` as checked in this boot. Best effort: on a
/// filesystem without user xattrs each process checks it once instead.
pub fn mark_checked(f: &impl AsFd) {
    let Some(v) = sys::fstat(&f.as_fd()).ok().as_ref().and_then(mark) else {
        return;
    };
    // SAFETY: a valid fd, a C string and a buffer of the length given.
    unsafe {
        libc::fsetxattr(
            std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()),
            CHECKED_XATTR.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
}

/// Distinguishes temp files of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A temp file name unique among processes and threads.
pub(crate) fn tmp_name(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Opens (creating) the directory `name` under `parent`: one of the
/// store's own, mode 0700 (see [`own_dir`]).
pub(crate) fn make_dir(parent: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(
        parent,
        name,
        nix::sys::stat::Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = sys::open_at(parent, name.as_ref(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    own_dir(&fd, name)?;
    Ok(fd)
}

/// Checks that the open directory `fd` (called `what` in errors) is this
/// user's own and closed to everyone else: a store dir made by an older
/// rcfs, or with another umask, that others could enter is made 0700; one
/// owned by someone else is refused (it could be theirs to swap under us).
pub fn own_dir(fd: &OwnedFd, what: &str) -> io::Result<()> {
    let st = sys::fstat(fd)?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what} is owned by uid {}, not by you (uid {me}): a store must be its user's own; \
                 use another --root",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o077 != 0 {
        nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(0o700))?;
    }
    Ok(())
}

impl Cas {
    /// The content directory `name/sha256` under `parent`, with temp files
    /// in `tmp`.
    pub fn open(parent: BorrowedFd<'_>, name: &str, tmp: BorrowedFd<'_>) -> io::Result<Cas> {
        let top = make_dir(parent, name)?;
        let dir = make_dir(top.as_fd(), "sha256")?;
        Ok(Cas {
            dir,
            tmp: tmp.try_clone_to_owned()?,
        })
    }

    /// The object `d`, open for reading, if present.
    pub fn open_object(&self, d: &Digest) -> io::Result<Option<File>> {
        match sys::open_at(self.dir.as_fd(), d.hex().as_ref(), libc::O_RDONLY, 0) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether object `d` is present, and its size.
    pub fn size_of(&self, d: &Digest) -> io::Result<Option<u64>> {
        match sys::stat_at(
            self.dir.as_fd(),
            d.hex().as_ref(),
            libc::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(st.st_size as u64)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads object `d` whole and checks it.
    pub fn read(&self, d: &Digest) -> io::Result<Option<Vec<u8>>> {
        let Some(mut f) = self.open_object(d)? else {
            return Ok(None);
        };
        let mut v = Vec::new();
        io::Read::read_to_end(&mut f, &mut v)?;
        if Digest::of(&v) != *d {
            return Err(layer_error(
                libc::EIO,
                format!("stored object {d} is corrupt (its bytes have another digest); remove it with `rcfs gc` and pull again"),
            ));
        }
        Ok(Some(v))
    }

    /// Stores `data`, which must have digest `d`.
    pub fn put(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        let mut w = self.writer()?;
        w.write_all(data)?;
        w.commit(*d, true)?;
        Ok(())
    }

    /// A new temp file for an object, and its name in `tmp/`.
    fn tmp_file(&self) -> io::Result<(String, OwnedFd)> {
        let name = tmp_name("obj");
        let fd = sys::open_at(
            self.tmp.as_fd(),
            name.as_ref(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        Ok((name, fd))
    }

    /// Stores `data`, whose digest the caller has just checked to be `d`,
    /// neither hashing it again nor flushing it: for a cache, whose objects
    /// are checked before a later mount uses them, so one torn by a crash
    /// is fetched again.
    pub fn put_verified(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        let (name, fd) = self.tmp_file()?;
        let mut file = File::from(fd);
        let written = file.write_all(data).and_then(|()| {
            mark_checked(&file);
            Ok(renameat(
                self.tmp.as_fd(),
                name.as_str(),
                self.dir.as_fd(),
                d.hex().as_str(),
            )?)
        });
        if written.is_err() {
            let _ = unlinkat(
                self.tmp.as_fd(),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        written
    }

    /// Flushes every object written without flushing (the filesystem the
    /// store is on), so that what a record says is here survives a crash.
    pub fn sync(&self) -> io::Result<()> {
        // (`dir` is an O_PATH fd, which syncfs refuses.)
        let d = sys::open_at(
            self.dir.as_fd(),
            std::ffi::OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        Ok(nix::unistd::syncfs(d.as_fd())?)
    }

    /// A writer of a new object, named when committed.
    pub fn writer(&self) -> io::Result<CasWriter<'_>> {
        let (name, fd) = self.tmp_file()?;
        Ok(CasWriter {
            cas: self,
            file: Some(io::BufWriter::with_capacity(1 << 20, File::from(fd))),
            name,
            hasher: Hasher::new(),
            len: 0,
            hole: 0,
        })
    }

    /// Removes object `d` (absent is fine).
    pub fn remove(&self, d: &Digest) -> io::Result<()> {
        match unlinkat(
            self.dir.as_fd(),
            d.hex().as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object's digest and size.
    pub fn list(&self) -> io::Result<Vec<(Digest, u64)>> {
        let dir = sys::DirFd::open(self.dir.as_fd(), ".".as_ref())?;
        let mut out = Vec::new();
        for (name, _) in dir.entries()? {
            let Some(d) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if let Ok(st) = dir.stat(&name) {
                out.push((d, st.st_size as u64));
            }
        }
        Ok(out)
    }

    /// The directory fd (for callers that keep objects open).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// An object being written; dropped without [`CasWriter::commit`], it
/// leaves nothing behind. Blocks of zeros ([`HOLE_BLOCK`] bytes, aligned)
/// become holes, not written zeros: a layer's sparse file (or a file of
/// zeros) takes the disk its data takes, not its size.
pub struct CasWriter<'a> {
    cas: &'a Cas,
    file: Option<io::BufWriter<File>>,
    name: String,
    hasher: Hasher,
    len: u64,
    /// Zeros at the end of what was written, not yet in the file (a hole
    /// made by seeking past them when more data comes, or by the final
    /// length at commit).
    hole: u64,
}

/// The blocks of zeros a [`CasWriter`] leaves as holes: a page, the
/// smallest hole filesystems keep.
pub const HOLE_BLOCK: usize = 4096;

impl CasWriter<'_> {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that what was written has digest `want` (any digest when
    /// `None`), flushes it (with `durable`) and names it; returns its
    /// digest. A mismatch removes the temp file and is an error that names
    /// both digests.
    pub fn commit(mut self, want: impl Into<Option<Digest>>, durable: bool) -> io::Result<Digest> {
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        if self.hole > 0 {
            file.set_len(self.len)?;
        }
        let got = std::mem::take(&mut self.hasher).finish();
        if let Some(want) = want.into() {
            if got != want {
                return Err(layer_error(
                    libc::EIO,
                    format!("content does not match its digest: expected {want}, got {got}"),
                ));
            }
        }
        mark_checked(&file);
        if durable {
            file.sync_all()?;
        }
        drop(file);
        renameat(
            self.cas.tmp.as_fd(),
            self.name.as_str(),
            self.cas.dir.as_fd(),
            got.hex().as_str(),
        )?;
        self.name.clear();
        Ok(got)
    }
}

impl Write for CasWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().expect("not committed");
        // Up to the next block boundary (all of `buf` at most): a whole,
        // aligned block of zeros is left as a hole; anything else is
        // written after the hole before it.
        let at = (self.len % HOLE_BLOCK as u64) as usize;
        let n = buf.len().min(HOLE_BLOCK - at);
        let piece = &buf[..n];
        if n == HOLE_BLOCK && piece.iter().all(|&b| b == 0) {
            self.hole += n as u64;
        } else {
            if self.hole > 0 {
                file.flush()?;
                let hole = i64::try_from(self.hole).map_err(io::Error::other)?;
                file.get_mut().seek(io::SeekFrom::Current(hole))?;
                self.hole = 0;
            }
            file.write_all(piece)?;
        }
        self.hasher.update(piece);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for CasWriter<'_> {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = unlinkat(
                self.cas.tmp.as_fd(),
                self.name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// A content dir `name` in the temp dir `dir`, with its own `tmp/`
/// (tests).
#[cfg(test)]
pub(crate) fn temp_cas(dir: &std::path::Path, name: &str) -> Cas {
    let root = sys::open_at(
        nix::fcntl::AT_FDCWD,
        dir.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .expect("opening the temp dir");
    let tmp = make_dir(root.as_fd(), "tmp").expect("tmp/");
    Cas::open(root.as_fd(), name, tmp.as_fd()).expect("the content dir")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn stores_checks_and_leaves_nothing_on_a_mismatch() {
        let t = tempfile::tempdir().unwrap();
        let c = temp_cas(t.path(), "blobs");
        let d = Digest::of(b"hello");
        c.put(&d, b"hello").unwrap();
        assert_eq!(c.read(&d).unwrap().unwrap(), b"hello");
        assert_eq!(c.size_of(&d).unwrap(), Some(5));
        let err = c.put(&Digest::of(b"other"), b"hello").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(c.list().unwrap(), vec![(d, 5)]);
        // A corrupted object is found out.
        std::fs::write(t.path().join("blobs/sha256").join(d.hex()), b"jello").unwrap();
        assert!(c.read(&d).unwrap_err().to_string().contains("corrupt"));
        c.remove(&d).unwrap();
        assert!(c.open_object(&d).unwrap().is_none());
        // Objects come marked as checked in this boot; a write, or a mark
        // of another boot, takes that back.
        c.put_verified(&d, b"hello").unwrap();
        let f = c.open_object(&d).unwrap().unwrap();
        assert!(checked_this_boot(&f, &sys::fstat(&f).unwrap()));
        let p = t.path().join("blobs/sha256").join(d.hex());
        std::fs::write(&p, b"jello!").unwrap();
        assert!(
            !checked_this_boot(&f, &sys::fstat(&f).unwrap()),
            "its size changed"
        );
        mark_checked(&f);
        assert!(checked_this_boot(&f, &sys::fstat(&f).unwrap()));
        let other = b"another-boot 1.0 6";
        // SAFETY: a valid fd, C string and buffer.
        unsafe {
            libc::fsetxattr(
                f.as_raw_fd(),
                CHECKED_XATTR.as_ptr(),
                other.as_ptr().cast(),
                other.len(),
                0,
            )
        };
        assert!(!checked_this_boot(&f, &sys::fstat(&f).unwrap()));
        assert!(c.dir().as_raw_fd() >= 0);
    }
}
