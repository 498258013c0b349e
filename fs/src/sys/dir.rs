//! Reading a directory with raw `getdents64`: no stdio-style buffering, no
//! `fcntl`/`lseek` round trips, and each entry's `d_type` so that most
//! entries need no `stat`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// An open directory (not `O_PATH`: it can be listed).
#[derive(Debug)]
pub struct DirFd(OwnedFd);

impl DirFd {
    /// Opens the directory `name` of `dir` (`""` or `"."`: `dir` itself)
    /// for listing, without following a symlink.
    pub fn open(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<DirFd> {
        Ok(DirFd(super::open_at(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?))
    }

    /// Wraps an fd open on a directory for reading.
    pub fn from_fd(fd: OwnedFd) -> DirFd {
        DirFd(fd)
    }

    /// Every entry but `.` and `..`, with its `d_type`.
    pub fn entries(&self) -> io::Result<Vec<(OsString, u8)>> {
        let mut out = Vec::new();
        self.each(|name, d_type| {
            out.push((name.to_owned(), d_type));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every entry but `.` and `..` and its `d_type`, as
    /// `getdents64` returns them: a large directory costs no memory per
    /// entry here.
    pub fn each(&self, mut f: impl FnMut(&OsStr, u8) -> io::Result<()>) -> io::Result<()> {
        const LEN: usize = 32 * 1024;
        thread_local! {
            // One buffer per thread: zeroing a fresh one for every directory
            // showed in profiles of a first walk over many layers.
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; LEN]);
        }
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => self.each_in(&mut buf, &mut f),
            // In use further up this thread's stack (a walk into a subdir).
            Err(_) => self.each_in(&mut vec![0u8; LEN], &mut f),
        })
    }

    fn each_in(
        &self,
        buf: &mut [u8],
        f: &mut dyn FnMut(&OsStr, u8) -> io::Result<()>,
    ) -> io::Result<()> {
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
                return Ok(());
            }
            let mut off = 0usize;
            while off < n as usize {
                // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let d_type = buf[off + 18];
                let name = &buf[off + 19..off + reclen];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    f(OsStr::from_bytes(name), d_type)?;
                }
                off += reclen;
            }
        }
    }

    /// `lstat` of the entry `name`.
    pub fn stat(&self, name: &OsStr) -> io::Result<libc::stat> {
        super::stat_at(self.0.as_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
    }

    /// The directory's own xattr names.
    pub fn xattr_names(&self) -> io::Result<Vec<OsString>> {
        super::xattr::flist(self.0.as_fd())
    }

    /// Value of the directory's own xattr `xname`.
    pub fn xattr(&self, xname: &OsStr) -> io::Result<Option<Vec<u8>>> {
        super::xattr::get(self.0.as_fd(), OsStr::new(""), libc::AT_EMPTY_PATH, xname)
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
