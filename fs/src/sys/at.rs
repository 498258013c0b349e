//! `*at` calls relative to a directory fd, with the flags nix does not
//! expose (`AT_EMPTY_PATH` on `utimensat`, `fchmodat2`), and the one way a
//! multi-component path is ever resolved: [`open_beneath`].

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{cname, cvt, cvt_long, proc_path};

/// `openat(dir, name)` of one component; `O_NOFOLLOW`, `O_CLOEXEC` and
/// `O_NOCTTY` are always added, so a symlink in `name`'s place is never
/// followed (nor a terminal made the controlling one of a server that
/// leads its session).
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    };
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::from_bits_retain(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | no_ctty(flags)),
        Mode::from_bits_truncate(mode),
    )?;
    Ok(fd)
}

/// `O_NOCTTY` for an open that could reach a terminal; none with `O_PATH`,
/// which never does, and with which `openat2` takes no other flags.
fn no_ctty(flags: i32) -> i32 {
    if flags & libc::O_PATH != 0 {
        0
    } else {
        libc::O_NOCTTY
    }
}

/// Longest path handed to the kernel in one piece (its limit is PATH_MAX,
/// 4096, with the NUL).
const PIECE: usize = 4000;

/// Opens `path` (relative, `""` for `root` itself) under the directory
/// `root` without ever leaving it: no `..`, no symlink or magic link in any
/// component (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). A
/// trailing symlink is opened itself when `flags` has `O_PATH`, and is
/// ELOOP otherwise. Paths longer than PATH_MAX are resolved piece by piece,
/// so a tree of any depth can be reached.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.split(|b| *b == b'/').any(|c| c == b"..") || bytes.first() == Some(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    if bytes.len() <= PIECE {
        return openat2_beneath(root, OsStr::from_bytes(bytes), flags, mode);
    }
    // Every piece but the last is a directory, opened O_PATH.
    let mut cur: Option<OwnedFd> = None;
    let mut rest = bytes;
    while rest.len() > PIECE {
        let cut = rest[..PIECE]
            .iter()
            .rposition(|b| *b == b'/')
            .filter(|&i| i > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        let base = cur.as_ref().map_or(root, |f| f.as_fd());
        let next = openat2_beneath(
            base,
            OsStr::from_bytes(&rest[..cut]),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        cur = Some(next);
        rest = &rest[cut + 1..];
    }
    let base = cur.as_ref().map_or(root, |f| f.as_fd());
    openat2_beneath(base, OsStr::from_bytes(rest), flags, mode)
}

fn openat2_beneath(
    root: BorrowedFd<'_>,
    rel: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { OsStr::new(".") } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::from_bits_retain(
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | no_ctty(flags),
        ))
        .mode(Mode::from_bits_truncate(mode))
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    match nix::fcntl::openat2(root, rel, how) {
        Ok(fd) => Ok(fd),
        // Before Linux 5.6: walk one component at a time.
        Err(nix::errno::Errno::ENOSYS) => walk_components(root, rel, flags, mode),
        Err(e) => Err(e.into()),
    }
}

/// [`open_beneath`] for kernels without `openat2`: each component is opened
/// on its own with `O_NOFOLLOW`, so none can be a symlink.
fn walk_components(
    root: BorrowedFd<'_>,
    rel: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let comps: Vec<&[u8]> = rel
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let Some((last, dirs)) = comps.split_last() else {
        return open_at(root, OsStr::new("."), flags, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let base = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(open_at(
            base,
            OsStr::from_bytes(d),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?);
    }
    let base = cur.as_ref().map_or(root, |f| f.as_fd());
    open_at(base, OsStr::from_bytes(last), flags, mode)
}

/// `fstatat(dir, name, flags)`; `""` with `AT_EMPTY_PATH` is `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstatat(
        dir,
        name,
        nix::fcntl::AtFlags::from_bits_retain(flags),
    )?)
}

/// `fchmodat2(dir, name, mode, flags)` (Linux 6.6+), which takes
/// `AT_SYMLINK_NOFOLLOW` and `AT_EMPTY_PATH`; on older kernels the same
/// through `/proc/self/fd`, which names the file without a path walk.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, flags: i32) -> io::Result<()> {
    let c = cname(name)?;
    // SAFETY: plain syscall with a valid C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::c_uint,
            flags,
        )
    };
    match cvt_long(r) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // The entry, opened without following it, then chmod through
            // its /proc name (what glibc does for fchmodat NOFOLLOW).
            let fd = if flags & libc::AT_EMPTY_PATH != 0 && name.is_empty() {
                None
            } else {
                Some(open_at(dir, name, libc::O_PATH, 0)?)
            };
            let target = fd.as_ref().map_or(dir, |f| f.as_fd());
            let st = stat_at(target, OsStr::new(""), libc::AT_EMPTY_PATH)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            let p = proc_path(target.as_raw_fd(), OsStr::new(""))?;
            // SAFETY: valid C string.
            cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// `utimensat(dir, name, [atime, mtime], flags)`; takes `AT_EMPTY_PATH`.
pub fn utimens_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: libc::timespec,
    mtime: libc::timespec,
    flags: i32,
) -> io::Result<()> {
    let c = cname(name)?;
    let times = [atime, mtime];
    // SAFETY: valid fd and C string, a two-element timespec array.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// `fchownat(dir, name, uid, gid, flags)`; `u32::MAX` leaves an id alone.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    gid: u32,
    flags: i32,
) -> io::Result<()> {
    let id = |v: u32| (v != u32::MAX).then_some(v);
    Ok(nix::unistd::fchownat(
        dir,
        name,
        id(uid).map(nix::unistd::Uid::from_raw),
        id(gid).map(nix::unistd::Gid::from_raw),
        nix::fcntl::AtFlags::from_bits_retain(flags),
    )?)
}

/// Opens what `fd` (maybe an `O_PATH` fd) is open on anew, with `flags`,
/// through `/proc/self/fd`: it works after the file's last name is gone.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let p = proc_path(fd.as_raw_fd(), OsStr::new(""))?;
    // SAFETY: valid C string; the new fd is owned below.
    let r = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | no_ctty(flags)) })?;
    // SAFETY: `r` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(t: &Path) -> OwnedFd {
        open_at(
            nix::fcntl::AT_FDCWD,
            t.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap()
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_dotdot_at_any_depth() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/esc")).unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a/lb")).unwrap();
        let r = root(t.path());
        let ok = open_beneath(r.as_fd(), Path::new("a/b/f"), libc::O_RDONLY, 0);
        assert!(ok.is_ok());
        for bad in [
            "a/esc/passwd",
            "a/lb/f",
            "../x",
            "a/../a/b/f",
            "/etc/passwd",
        ] {
            let e = open_beneath(r.as_fd(), Path::new(bad), libc::O_RDONLY, 0).unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)),
                "{bad}: {e}"
            );
        }
        // A trailing symlink is opened itself with O_PATH.
        let l = open_beneath(r.as_fd(), Path::new("a/esc"), libc::O_PATH, 0).unwrap();
        let st = stat_at(l.as_fd(), OsStr::new(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
    }

    #[test]
    fn open_beneath_reaches_paths_longer_than_path_max() {
        let t = tempfile::tempdir().unwrap();
        let name = "d".repeat(200);
        let mut rel = std::path::PathBuf::new();
        let mut dir = root(t.path());
        for _ in 0..30 {
            nix::sys::stat::mkdirat(dir.as_fd(), name.as_str(), Mode::from_bits_truncate(0o755))
                .unwrap();
            dir = open_at(
                dir.as_fd(),
                OsStr::new(&name),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .unwrap();
            rel.push(&name);
        }
        assert!(rel.as_os_str().len() > 6000);
        let r = root(t.path());
        let deep = open_beneath(r.as_fd(), &rel, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        let a = stat_at(deep.as_fd(), OsStr::new(""), libc::AT_EMPTY_PATH).unwrap();
        let b = stat_at(dir.as_fd(), OsStr::new(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }
}
