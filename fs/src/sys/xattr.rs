//! Extended attributes of a directory entry named by a directory fd and a
//! name, never by a path walk: `getxattrat` and friends (Linux 6.13+) with
//! `AT_SYMLINK_NOFOLLOW`, and before that the l*xattr calls on
//! `/proc/self/fd/DIR/NAME`, which reach the entry through the directory fd
//! the same way. With `AT_EMPTY_PATH` and an empty name the target is what
//! the fd itself is open on (an `O_PATH` fd of an unlinked file).

use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;

use super::{cname, cvt, cvt_long, proc_path};

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the `*xattrat` calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Whether to fall back to the /proc form after `e`: the kernel lacks the
/// call, or refuses an `O_PATH` fd with `AT_EMPTY_PATH` (before 6.19).
fn fall_back(e: &io::Error, flags: i32) -> bool {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => true,
        Some(libc::EBADF) => flags & libc::AT_EMPTY_PATH != 0,
        _ => false,
    }
}

/// The /proc path of (dir, name) and whether to follow it: an empty name
/// (the fd itself) must be followed through its magic link; a named entry
/// must not.
fn proc_target(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(std::ffi::CString, bool)> {
    Ok((proc_path(dir.as_raw_fd(), name)?, name.is_empty()))
}

/// Value of xattr `xname` of (dir, name); `None` when absent or when the
/// filesystem has no xattrs.
pub fn get(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: i32,
    xname: &OsStr,
) -> io::Result<Option<Vec<u8>>> {
    let path = cname(name)?;
    let xn = cname(xname)?;
    let mut buf = vec![0u8; 256];
    loop {
        let r = get_into(dir, &path, name, flags, &xn, &mut buf);
        match r {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
                Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
                Some(libc::ERANGE) => {
                    // Larger than the usual limit: ask for the size.
                    let n = get_into(dir, &path, name, flags, &xn, &mut [])?;
                    buf.resize(n.max(1), 0);
                }
                _ => return Err(e),
            },
        }
    }
}

fn get_into(
    dir: BorrowedFd<'_>,
    path: &CStr,
    name: &OsStr,
    flags: i32,
    xn: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    // SAFETY: valid fd and C strings; `args` points at `buf`, writable for
    // its length.
    let r = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            xn.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    match cvt_long(r) {
        Ok(n) => Ok(n as usize),
        Err(e) if fall_back(&e, flags) => {
            let (p, follow) = proc_target(dir, name)?;
            let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
            // SAFETY: valid C strings; `buf` is writable for its length.
            let n = unsafe {
                if follow {
                    libc::getxattr(p.as_ptr(), xn.as_ptr(), ptr, len)
                } else {
                    libc::lgetxattr(p.as_ptr(), xn.as_ptr(), ptr, len)
                }
            };
            cvt_long(n as libc::c_long).map(|n| n as usize)
        }
        Err(e) => Err(e),
    }
}

/// Names of the xattrs of (dir, name).
pub fn list(dir: BorrowedFd<'_>, name: &OsStr, flags: i32) -> io::Result<Vec<OsString>> {
    let path = cname(name)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid fd and C string; `buf` is writable for its length.
        let r = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                flags,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let r = match cvt_long(r) {
            Err(e) if fall_back(&e, flags) => {
                let (p, follow) = proc_target(dir, name)?;
                let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
                // SAFETY: valid C string; `buf` is writable for its length.
                let n = unsafe {
                    if follow {
                        libc::listxattr(p.as_ptr(), ptr, len)
                    } else {
                        libc::llistxattr(p.as_ptr(), ptr, len)
                    }
                };
                cvt_long(n as libc::c_long)
            }
            r => r,
        };
        match r {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(split_names(&buf));
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                _ => return Err(e),
            },
        }
    }
}

/// Sets xattr `xname` of (dir, name) to `value`; `xflags` are
/// `XATTR_CREATE`/`XATTR_REPLACE`.
pub fn set(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: i32,
    xname: &OsStr,
    value: &[u8],
    xflags: i32,
) -> io::Result<()> {
    let path = cname(name)?;
    let xn = cname(xname)?;
    let args = XattrArgs {
        value: value.as_ptr() as u64,
        size: value.len() as u32,
        flags: xflags as u32,
    };
    // SAFETY: valid fd and C strings; `args` points at `value`.
    let r = unsafe {
        libc::syscall(
            SYS_SETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            xn.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    match cvt_long(r) {
        Ok(_) => Ok(()),
        Err(e) if fall_back(&e, flags) => {
            let (p, follow) = proc_target(dir, name)?;
            let (ptr, len) = (value.as_ptr().cast(), value.len());
            // SAFETY: valid C strings and value buffer.
            cvt(unsafe {
                if follow {
                    libc::setxattr(p.as_ptr(), xn.as_ptr(), ptr, len, xflags)
                } else {
                    libc::lsetxattr(p.as_ptr(), xn.as_ptr(), ptr, len, xflags)
                }
            })
            .map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Removes xattr `xname` of (dir, name).
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, xname: &OsStr) -> io::Result<()> {
    let path = cname(name)?;
    let xn = cname(xname)?;
    // SAFETY: valid fd and C strings.
    let r = unsafe {
        libc::syscall(
            SYS_REMOVEXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            xn.as_ptr(),
        )
    };
    match cvt_long(r) {
        Ok(_) => Ok(()),
        Err(e) if fall_back(&e, flags) => {
            let (p, follow) = proc_target(dir, name)?;
            // SAFETY: valid C strings.
            cvt(unsafe {
                if follow {
                    libc::removexattr(p.as_ptr(), xn.as_ptr())
                } else {
                    libc::lremovexattr(p.as_ptr(), xn.as_ptr())
                }
            })
            .map(drop)
        }
        Err(e) => Err(e),
    }
}

/// `fsetxattr(2)` on an open (not `O_PATH`) fd.
pub fn fset(fd: BorrowedFd<'_>, xname: &OsStr, value: &[u8]) -> io::Result<()> {
    let xn = cname(xname)?;
    // SAFETY: open fd, valid name and value buffer.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            xn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `fremovexattr(2)` on an open (not `O_PATH`) fd.
pub fn fremove(fd: BorrowedFd<'_>, xname: &OsStr) -> io::Result<()> {
    let xn = cname(xname)?;
    // SAFETY: open fd and valid name.
    cvt(unsafe { libc::fremovexattr(fd.as_raw_fd(), xn.as_ptr()) }).map(drop)
}

/// The xattr names of an open (not `O_PATH`) fd.
pub fn flist(fd: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
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

fn split_names(buf: &[u8]) -> Vec<OsString> {
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn xattrs_by_dir_and_name_and_of_an_unlinked_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let dir = crate::sys::open_at(
            nix::fcntl::AT_FDCWD,
            t.path().as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let d = dir.as_fd();
        let nf = libc::AT_SYMLINK_NOFOLLOW;
        set(d, OsStr::new("f"), nf, OsStr::new("user.a"), b"1", 0).unwrap();
        assert_eq!(
            get(d, OsStr::new("f"), nf, OsStr::new("user.a")).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            get(d, OsStr::new("f"), nf, OsStr::new("user.b")).unwrap(),
            None
        );
        assert_eq!(
            list(d, OsStr::new("f"), nf).unwrap(),
            vec![OsString::from("user.a")]
        );
        // The symlink is not followed: user xattrs on symlinks are refused.
        assert!(set(d, OsStr::new("l"), nf, OsStr::new("user.a"), b"1", 0).is_err());
        // A large value.
        let big = vec![7u8; 3000];
        set(d, OsStr::new("f"), nf, OsStr::new("user.big"), &big, 0).unwrap();
        assert_eq!(
            get(d, OsStr::new("f"), nf, OsStr::new("user.big")).unwrap(),
            Some(big)
        );
        // The file through an O_PATH fd after its name is gone.
        let f = crate::sys::open_at(d, OsStr::new("f"), libc::O_PATH, 0).unwrap();
        std::fs::remove_file(t.path().join("f")).unwrap();
        let e = libc::AT_EMPTY_PATH;
        set(f.as_fd(), OsStr::new(""), e, OsStr::new("user.c"), b"3", 0).unwrap();
        assert_eq!(
            get(f.as_fd(), OsStr::new(""), e, OsStr::new("user.c")).unwrap(),
            Some(b"3".to_vec())
        );
        remove(f.as_fd(), OsStr::new(""), e, OsStr::new("user.a")).unwrap();
        let mut names = list(f.as_fd(), OsStr::new(""), e).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("user.big"), "user.c".into()]);
    }
}
