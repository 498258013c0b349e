//! Safe wrappers over the few syscalls the union needs that std lacks
//! (xattrs, `renameat2`, `mknod`, `utimensat`, `lchown`, `statvfs`, ...).
//!
//! Every function takes absolute host paths and never follows a symlink in the
//! last component unless its name says so. Errors come back as `io::Error`
//! carrying the raw errno, which the FUSE glue hands to the kernel unchanged.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// `p` as a C string.
pub fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cname(n: &OsStr) -> io::Result<CString> {
    CString::new(n.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `lstat(2)`.
pub fn lstat(p: &Path) -> io::Result<libc::stat> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is writable memory of the right size.
    cvt(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: lstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(2)` of `name` in the directory `dir`, not following symlinks:
/// no path walk beyond the one component.
pub fn lstat_at(dir: &impl AsRawFd, name: &std::ffi::CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is an open directory fd, `name` a valid C string, `st` writable.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// The raw entries of a directory (not `.` or `..`), each with its `lstat`.
/// Entries that vanish between the listing and their stat are skipped.
pub fn read_dir_stat(path: &Path) -> io::Result<Vec<(OsString, libc::stat)>> {
    let dir = DirFd(open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?);
    let mut out = Vec::new();
    for (name, _) in dir.entries()? {
        match dir.lstat(&name) {
            Ok(st) => out.push((name, st)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// An open directory, read with raw `getdents64` (no stdio-style buffering,
/// no `fcntl`/`lseek` round trips).
pub struct DirFd(File);

impl DirFd {
    /// Opens directory `rel` under `base` (a relative path; empty for `base`
    /// itself).
    pub fn open_at(base: &impl AsRawFd, rel: &Path) -> io::Result<DirFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(DirFd(open_at(
            base,
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?))
    }

    /// Every entry but `.` and `..`, with its `d_type`.
    pub fn entries(&self) -> io::Result<Vec<(OsString, u8)>> {
        const LEN: usize = 32 * 1024;
        thread_local! {
            // One buffer per thread: zeroing a fresh one for every directory
            // showed in profiles of a first walk over many layers.
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; LEN]);
        }
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => self.entries_into(&mut buf),
            Err(_) => self.entries_into(&mut vec![0u8; LEN]),
        })
    }

    fn entries_into(&self, buf: &mut [u8]) -> io::Result<Vec<(OsString, u8)>> {
        let mut out = Vec::new();
        loop {
            // SAFETY: `buf` is writable for its length; the fd is an open directory.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(out);
            }
            let mut off = 0usize;
            while off < n as usize {
                // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let d_type = buf[off + 18];
                let name = &buf[off + 19..off + reclen];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    out.push((OsStr::from_bytes(name).to_owned(), d_type));
                }
                off += reclen;
            }
        }
    }

    /// `lstat` of the entry `name`.
    pub fn lstat(&self, name: &OsStr) -> io::Result<libc::stat> {
        lstat_at(&self.0, &cname(name)?)
    }

    /// The directory's own xattr names.
    pub fn xattr_names(&self) -> io::Result<Vec<OsString>> {
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::flistxattr(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(split_names(&buf));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                _ => return Err(e),
            }
        }
    }
}

fn split_names(buf: &[u8]) -> Vec<OsString> {
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}

/// `fstat(2)`.
pub fn fstat(f: &File) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the fd is open for the life of `f`; `st` is writable.
    cvt(unsafe { libc::fstat(f.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `open(2)` with raw flags; `O_NOFOLLOW` and `O_CLOEXEC` are always added.
pub fn open(p: &Path, flags: i32, mode: u32) -> io::Result<File> {
    let c = cstr(p)?;
    // SAFETY: valid path; the returned fd is owned by the File below.
    let fd =
        cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Starts reading the first `len` bytes of `f` into the page cache, without
/// waiting for them (`posix_fadvise(WILLNEED)`).
pub fn will_need(f: &File, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    let r = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            0,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
    };
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Opens the file `f` is open on anew, with `flags` (through `/proc`, so
/// it works after the file's last name is gone).
pub fn reopen(f: &File, flags: i32) -> io::Result<File> {
    let c = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    // SAFETY: valid path; the returned fd is owned by the File below.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `openat(2)` of the relative path `rel` under the directory `dir`;
/// `O_NOFOLLOW` and `O_CLOEXEC` are always added.
pub fn open_at(dir: &impl AsRawFd, rel: &Path, flags: i32) -> io::Result<File> {
    let c = cstr(rel)?;
    // SAFETY: `dir` is an open fd and `c` a valid path; the new fd is owned below.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `mkdir(2)`.
pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

/// `mknod(2)`.
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlink(2)`: creates `link` pointing at `target`.
pub fn symlink(target: &OsStr, link: &Path) -> io::Result<()> {
    let t = cname(target)?;
    let l = cstr(link)?;
    // SAFETY: valid paths.
    cvt(unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) }).map(drop)
}

/// `readlink(2)`.
pub fn readlink(p: &Path) -> io::Result<OsString> {
    std::fs::read_link(p).map(|t| t.into_os_string())
}

/// `link(2)` without following symlinks.
pub fn link(old: &Path, new: &Path) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid paths.
    cvt(unsafe { libc::linkat(libc::AT_FDCWD, o.as_ptr(), libc::AT_FDCWD, n.as_ptr(), 0) })
        .map(drop)
}

/// `unlink(2)`.
pub fn unlink(p: &Path) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::unlink(c.as_ptr()) }).map(drop)
}

/// `rmdir(2)`.
pub fn rmdir(p: &Path) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::rmdir(c.as_ptr()) }).map(drop)
}

/// `renameat2(2)` with `RENAME_*` flags.
pub fn rename(old: &Path, new: &Path, flags: u32) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid paths.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            o.as_ptr(),
            libc::AT_FDCWD,
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `chmod(2)` (follows symlinks: call it on non-symlinks only).
pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

/// `lchown(2)`; `u32::MAX` leaves an id unchanged.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

/// `truncate(2)`.
pub fn truncate(p: &Path, size: u64) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    cvt(unsafe { libc::truncate(c.as_ptr(), size as libc::off_t) }).map(drop)
}

/// Sets `f`'s access and modification times to those in `st`.
pub fn futimes_from(f: &File, st: &libc::stat) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    // SAFETY: open fd and a two-element timespec array.
    cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// `utimensat(2)` without following symlinks.
pub fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
    let c = cstr(p)?;
    let times = [atime, mtime];
    // SAFETY: valid path and a two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `lgetxattr(2)`: `Ok(None)` when the attribute does not exist.
pub fn getxattr(p: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let c = cstr(p)?;
    let n = cname(name)?;
    loop {
        // SAFETY: size query with a null buffer.
        let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let got =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue, // grew in between: ask again
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// `llistxattr(2)`: the attribute names.
pub fn listxattr(p: &Path) -> io::Result<Vec<OsString>> {
    let c = cstr(p)?;
    loop {
        // SAFETY: size query with a null buffer.
        let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(split_names(&buf));
    }
}

/// `lsetxattr(2)`.
pub fn setxattr(p: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let c = cstr(p)?;
    let n = cname(name)?;
    // SAFETY: valid path, name and value buffer.
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `lremovexattr(2)`.
pub fn removexattr(p: &Path, name: &OsStr) -> io::Result<()> {
    let c = cstr(p)?;
    let n = cname(name)?;
    // SAFETY: valid path and name.
    cvt(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

/// `fsetxattr(2)`.
pub fn fsetxattr(f: &File, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: open fd, valid name and value buffer.
    cvt(unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `fremovexattr(2)`.
pub fn fremovexattr(f: &File, name: &OsStr) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: open fd and valid name.
    cvt(unsafe { libc::fremovexattr(f.as_raw_fd(), n.as_ptr()) }).map(drop)
}

/// `fallocate(2)`.
pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    let (off, len) = (
        i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?,
        i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?,
    );
    // SAFETY: open fd; plain integer arguments.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
}

/// Frees the blocks of `f` in `[off, off + len)` without changing its size;
/// where the filesystem cannot punch holes and the range ends at the end of
/// the file, truncates it away and back instead.
pub fn punch_hole(f: &File, off: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    match fallocate(f, mode, off, len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let size = fstat(f)?.st_size as u64;
            if off + len < size {
                return Err(e);
            }
            f.set_len(off)?;
            f.set_len(size)
        }
        Err(e) => Err(e),
    }
}

/// `statvfs(3)`.
pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cstr(p)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid path; `st` is writable.
    cvt(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `pread(2)` until `buf` is full or end of file.
pub fn pread_full(f: &File, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Copies the first `len` bytes of `src` to `dst` (at the same offsets),
/// leaving holes where `src` has them (found with `SEEK_DATA`/`SEEK_HOLE`),
/// as kernel overlayfs's copy-up does: a sparse file stays sparse. Each run
/// of data goes through [`copy_range`]. `dst` ends up at least `len` bytes
/// long; bytes past `len` that it already holds are kept.
pub fn copy_data(src: &File, dst: &File, len: u64, durable: bool) -> io::Result<()> {
    let mut off = 0;
    while off < len {
        let data = match seek(src, off, libc::SEEK_DATA) {
            Ok(d) => d,
            // Only holes from here on.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            // The filesystem cannot tell: copy the rest as data.
            Err(_) => off,
        };
        if data >= len {
            break;
        }
        let hole = seek(src, data, libc::SEEK_HOLE).map_or(len, |h| h.clamp(data + 1, len));
        copy_range(src, dst, data, hole, durable)?;
        off = hole;
    }
    if fstat(dst)?.st_size < len as libc::off_t {
        dst.set_len(len)?;
    }
    Ok(())
}

/// `lseek(fd, off, whence)`. Only for `SEEK_DATA`/`SEEK_HOLE` on fds read
/// with `pread`, whose offset nothing else uses.
pub fn seek(f: &impl AsRawFd, off: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// Copies bytes `start..end` of `src` to the same offsets of `dst` with
/// `copy_file_range`, which reflinks or copies in the kernel, falling back to
/// a read/write loop where the kernel cannot (different filesystems on old
/// kernels, special files). With `durable`, writeback of each copied piece
/// starts at once, so the caller's `fdatasync` finds little left to do.
fn copy_range(src: &File, dst: &File, start: u64, end: u64, durable: bool) -> io::Result<()> {
    const PIECE: u64 = 16 << 20;
    let mut off_in = start as libc::loff_t;
    let mut off_out = start as libc::loff_t;
    while (off_in as u64) < end {
        let left = end - off_in as u64;
        // Pieces only so that writeback can start behind the copy.
        let chunk = if durable {
            left.min(PIECE)
        } else {
            left.min(1 << 30)
        } as usize;
        let piece = off_out;
        // SAFETY: both fds are open; offsets point at live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV)
                | Some(libc::ENOSYS)
                | Some(libc::EINVAL)
                | Some(libc::EOPNOTSUPP) => {
                    return copy_data_slow(src, dst, off_in as u64, end);
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            break; // source shorter than expected: copy what exists
        }
        if durable {
            // SAFETY: plain syscall on an open fd; failure only loses the head start.
            unsafe {
                libc::sync_file_range(
                    dst.as_raw_fd(),
                    piece,
                    n as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
    }
    Ok(())
}

/// One `copy_file_range(2)` of up to `len` bytes from `src` at `off_in` to
/// `dst` at `off_out`, in the kernel; where the kernel cannot (files on
/// different filesystems), up to 1 MiB read and written here. Returns the
/// bytes copied, 0 at the end of `src`.
pub fn copy_file_range(
    src: &impl AsRawFd,
    off_in: u64,
    dst: &File,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
    let (mut i, mut o) = (off_in as libc::loff_t, off_out as libc::loff_t);
    // SAFETY: both fds are open; offsets point at live locals.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut i,
            dst.as_raw_fd(),
            &mut o,
            len as usize,
            0,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            // SAFETY: `src` is an open fd; the File is forgotten below, not closed.
            let src = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(src.as_raw_fd()) });
            let n = pread_full(&src, &mut buf, off_in)?;
            dst.write_all_at(&buf[..n], off_out)?;
            Ok(n)
        }
        _ => Err(e),
    }
}

fn copy_data_slow(src: &File, dst: &File, mut off: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while off < len {
        let want = ((len - off) as usize).min(buf.len());
        let n = pread_full(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copy_data_keeps_holes_and_what_dst_holds_past_len() {
        let t = tempfile::tempdir().unwrap();
        let new_file = |name: &str| {
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(t.path().join(name))
                .unwrap()
        };
        let src = new_file("src");
        const LEN: u64 = 8 << 20;
        src.set_len(LEN).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"middle", 3 << 20).unwrap();
        // An empty copy becomes LEN long, though the source ends in a hole.
        let empty = new_file("empty");
        copy_data(&src, &empty, LEN, false).unwrap();
        // A placeholder with a tail past LEN keeps the tail.
        let tail = new_file("tail");
        tail.write_all_at(b"tail", LEN).unwrap();
        copy_data(&src, &tail, LEN, true).unwrap();

        let want = std::fs::read(t.path().join("src")).unwrap();
        let empty_data = std::fs::read(t.path().join("empty")).unwrap();
        assert!(empty_data == want, "the copy differs from the source");
        let tail_data = std::fs::read(t.path().join("tail")).unwrap();
        assert_eq!(tail_data.len() as u64, LEN + 4);
        assert!(
            tail_data[..LEN as usize] == want[..],
            "the filled copy differs"
        );
        assert_eq!(&tail_data[LEN as usize..], b"tail");
        for name in ["empty", "tail"] {
            let blocks = std::fs::metadata(t.path().join(name)).unwrap().blocks();
            assert!(
                blocks * 512 <= 256 << 10,
                "{name}: {} KiB allocated for 10 bytes of data",
                blocks / 2
            );
        }
        // Where the filesystem finds the holes, the copy has them too.
        assert_eq!(
            seek(&empty, 0, libc::SEEK_HOLE).unwrap(),
            seek(&src, 0, libc::SEEK_HOLE).unwrap()
        );
        assert_eq!(
            seek(&empty, 4096, libc::SEEK_DATA).unwrap(),
            seek(&src, 4096, libc::SEEK_DATA).unwrap()
        );
    }
}
