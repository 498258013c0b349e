//! What the union needs of the kernel that `std` and `nix` do not give, by
//! family: `*at` calls with the flags nix leaves out ([`at`]), xattrs by
//! directory fd and name ([`xattr`]), raw directory listing ([`dir`]) and
//! data copies that keep holes ([`copy`]), FUSE mounts and what tells them
//! apart ([`mount`]). Everything else is called through
//! nix directly.
//!
//! Every call here works relative to an open directory fd and never follows
//! a symlink in the last component; multi-component paths are resolved only
//! through [`at::open_beneath`]. Errors come back as `io::Error` carrying the
//! raw errno, which the FUSE glue hands to the kernel.

pub mod at;
pub mod copy;
pub mod dir;
pub mod mmap;
pub mod mount;
pub mod xattr;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

pub use at::{chmod_at, open_at, open_beneath, reopen, stat_at, utimens_at};
pub use copy::{
    copy_data, copy_file_range, fallocate, fstat, pread_full, punch_hole, seek, will_need,
};
pub use dir::DirFd;
pub use mmap::Mapping;

/// Makes the calling thread create files with exactly the modes it asks
/// for: a file system server is handed modes the kernel has already masked
/// with the caller's umask, and masking them again with its own would be
/// wrong. Only this thread changes (it stops sharing its umask, cwd and
/// root with the rest of the process, `unshare(CLONE_FS)`): the process's
/// umask, which its other threads and children get, stays as it was.
/// Cheap after the first call in a thread.
pub fn exact_modes() -> io::Result<()> {
    thread_local! {
        static EXACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    EXACT.with(|done| {
        if done.get() {
            return Ok(());
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        done.set(true);
        Ok(())
    })
}

/// `name` as a C string; a NUL byte inside is EINVAL.
pub fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A syscall's `-1` return as the thread's errno.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`cvt`] for calls through `libc::syscall`, which returns a `c_long`.
pub(crate) fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path under `/proc/self/fd` that names what `fd` is open on; with
/// `name`, the entry `name` of that directory. The fallback for calls the
/// kernel has no fd-relative form of.
pub(crate) fn proc_path(fd: i32, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{fd}").into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether this is real root: uid 0 with every id its own (not root of a
/// user namespace, as in `podman unshare`).
pub fn real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map").map_or(true, |m| {
            m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
        })
}
