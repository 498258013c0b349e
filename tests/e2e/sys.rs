//! Safe wrappers over the few raw syscalls the e2e cases make.
//!
//! Every case must see the *errno* a syscall returns, not an
//! `std::io::Error` rebuilt from it, so the wrappers return
//! `Result<T, Errno>` and do nothing else: no retries, no fallbacks. All
//! `unsafe` of the test suite lives here.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use nix::errno::Errno;

pub type SysResult<T> = Result<T, Errno>;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

/// Turns a libc return value (-1 = error in errno) into a Result.
fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

pub fn lstat(p: &Path) -> SysResult<libc::stat> {
    let c = cpath(p);
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is a valid C string and `st` points to writable memory of
    // the size lstat fills in; it is only read after a successful call.
    check(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: lstat returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: &OwnedFd) -> SysResult<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is an open descriptor; `st` is writable memory for a stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn open(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> SysResult<OwnedFd> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string; the mode argument is read only with O_CREAT.
    let fd =
        check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn write(fd: &OwnedFd, buf: &[u8]) -> SysResult<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reading.
    check_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

pub fn pwrite(fd: &OwnedFd, buf: &[u8], off: i64) -> SysResult<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reading.
    check_size(unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) })
}

pub fn pread(fd: &OwnedFd, len: usize, off: i64) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is valid for `len` bytes of writing.
    let n = check_size(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, off) })?;
    buf.truncate(n);
    Ok(buf)
}

/// `copy_file_range(2)` until `len` bytes are copied or the source ends;
/// returns the bytes copied.
pub fn copy_file_range(
    src: &OwnedFd,
    off_in: i64,
    dst: &OwnedFd,
    off_out: i64,
    len: usize,
) -> SysResult<usize> {
    let (mut i, mut o, mut done) = (off_in, off_out, 0);
    while done < len {
        // SAFETY: both fds are open; offsets point at live locals.
        let n = check_size(unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut i,
                dst.as_raw_fd(),
                &mut o,
                len - done,
                0,
            )
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Reads from the current offset to end of file.
pub fn read_to_end(fd: &OwnedFd) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
        let n =
            check_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn lseek(fd: &OwnedFd, off: i64, whence: libc::c_int) -> SysResult<i64> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

pub fn ftruncate(fd: &OwnedFd, len: i64) -> SysResult<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

pub fn fallocate(fd: &OwnedFd, mode: i32, off: i64, len: i64) -> SysResult<()> {
    // SAFETY: plain integer arguments on an open fd.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) }).map(drop)
}

pub fn truncate(p: &Path, len: i64) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::truncate(c.as_ptr(), len) }).map(drop)
}

pub fn fsync(fd: &OwnedFd) -> SysResult<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

pub fn fdatasync(fd: &OwnedFd) -> SysResult<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fdatasync(fd.as_raw_fd()) }).map(drop)
}

pub fn unlink(p: &Path) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::unlink(c.as_ptr()) }).map(drop)
}

pub fn rmdir(p: &Path) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::rmdir(c.as_ptr()) }).map(drop)
}

pub fn mkdir(p: &Path, mode: libc::mode_t) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

pub fn rename(from: &Path, to: &Path) -> SysResult<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid C strings.
    check(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> SysResult<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid C strings; AT_FDCWD with absolute or cwd-relative paths.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn link(existing: &Path, new: &Path) -> SysResult<()> {
    let (a, b) = (cpath(existing), cpath(new));
    // SAFETY: both are valid C strings.
    check(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub fn symlink(target: &Path, linkpath: &Path) -> SysResult<()> {
    let (a, b) = (cpath(target), cpath(linkpath));
    // SAFETY: both are valid C strings.
    check(unsafe { libc::symlink(a.as_ptr(), b.as_ptr()) }).map(drop)
}

pub fn readlink(p: &Path) -> SysResult<PathBuf> {
    let c = cpath(p);
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
    let n = check_size(unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

pub fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(drop)
}

pub fn chmod(p: &Path, mode: libc::mode_t) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

pub fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `lchown`; pass `u32::MAX` to leave an id unchanged.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn chown(p: &Path, uid: u32, gid: u32) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::chown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub const UTIME_NOW: i64 = libc::UTIME_NOW;
pub const UTIME_OMIT: i64 = libc::UTIME_OMIT;

/// `utimensat(AT_FDCWD, p, [atime, mtime], flags)`.
pub fn utimensat(p: &Path, times: [libc::timespec; 2], flags: libc::c_int) -> SysResult<()> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string and `times` is an array of two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> SysResult<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid C strings; `value` is valid for `value.len()` bytes.
    check(unsafe {
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

pub fn lgetxattr(p: &Path, name: &str) -> SysResult<Vec<u8>> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: a NULL buffer of size 0 asks for the value's size only.
    let size =
        check_size(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
    let got = check_size(unsafe {
        libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(got);
    Ok(buf)
}

pub fn llistxattr(p: &Path) -> SysResult<Vec<String>> {
    let c = cpath(p);
    // SAFETY: a NULL buffer of size 0 asks for the list's size only.
    let size = check_size(unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) })?;
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
    let got =
        check_size(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(got);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn lremovexattr(p: &Path, name: &str) -> SysResult<()> {
    let (c, n) = (cpath(p), cstr(name));
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

pub fn statfs(p: &Path) -> SysResult<libc::statfs> {
    let c = cpath(p);
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a valid C string; `st` is writable memory for a statfs.
    check(unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statfs returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

pub fn fsetxattr(fd: &OwnedFd, name: &str, value: &[u8]) -> SysResult<()> {
    let n = cstr(name);
    // SAFETY: an open fd, a valid C string and a value buffer.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// The name of an errno, for readable logs: `ENOENT`.
pub fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

pub fn statvfs(p: &Path) -> SysResult<libc::statvfs> {
    let c = cpath(p);
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string; `st` is writable memory for a statvfs.
    check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// Maps `len` bytes of `fd` shared, lets `f` read and change them, then
/// msyncs and unmaps. Returns the bytes as first mapped.
pub fn with_shared_mapping(
    fd: &OwnedFd,
    len: usize,
    f: impl FnOnce(&mut [u8]),
) -> SysResult<Vec<u8>> {
    // SAFETY: a fresh shared mapping of an open fd; the slice below lives only
    // until munmap and nothing else aliases it in this process.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: `addr` maps `len` readable and writable bytes (see above).
    let mem = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), len) };
    let before = mem.to_vec();
    f(mem);
    // SAFETY: `addr`/`len` are the mapping made above; `mem` is not used after.
    let synced = check(unsafe { libc::msync(addr, len, libc::MS_SYNC) });
    // SAFETY: as above.
    let unmapped = check(unsafe { libc::munmap(addr, len) });
    synced?;
    unmapped?;
    Ok(before)
}

/// Pages of file `p` in the page cache (`mincore`).
pub fn cached_pages(p: &Path) -> SysResult<usize> {
    let fd = open(p, libc::O_RDONLY, 0)?;
    let len = fstat(&fd)?.st_size as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping of an open file, unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `addr`/`len` are the mapping above; `vec` has a byte per page.
    let r = check(unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) });
    // SAFETY: as above.
    let unmapped = check(unsafe { libc::munmap(addr, len) });
    r?;
    unmapped?;
    Ok(vec.iter().filter(|b| **b & 1 != 0).count())
}

/// Writes file `p`'s pages out and drops them from the page cache.
pub fn evict(p: &Path) -> SysResult<()> {
    let fd = open(p, libc::O_RDONLY, 0)?;
    fsync(&fd)?;
    // SAFETY: plain syscall on an open fd.
    match unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        e => Err(Errno::from_raw(e)),
    }
}

/// One step of a [`run_as`] script: a raw syscall on paths or on fds the
/// script opened before (by the index of the step that opened them).
#[derive(Debug, Clone)]
pub enum Step {
    Open(CString, libc::c_int, libc::mode_t),
    /// `open(O_PATH | O_NOFOLLOW)`: no FUSE open, but chown and /proc
    /// chmod work through it.
    OpenPath(CString),
    Unlink(CString),
    Mkdir(CString, libc::mode_t),
    Rmdir(CString),
    Symlink(CString, CString),
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange(CString, CString),
    Fchmod(usize, libc::mode_t),
    /// chmod of `/proc/self/fd/N` of a step's fd (works on O_PATH fds).
    ProcChmod(usize, libc::mode_t),
    Fsetxattr(usize, CString, Vec<u8>),
    Futimens(usize, i64),
    Ftruncate(usize, i64),
    /// Reports the fd's `st_mode` (or -errno).
    FstatMode(usize),
    /// Opens and reads the file at the path: 1 if its first bytes hold
    /// the marker, else 0 (or -errno).
    ReadMarker(CString, Vec<u8>),
}

impl Step {
    pub fn path(p: &Path) -> CString {
        cpath(p)
    }
    pub fn name(s: &str) -> CString {
        cstr(s)
    }
}

/// Runs `steps` once in a child process as uid and gid `id` (no
/// supplementary groups) and returns each step's result: 0 or `-errno`
/// (`FstatMode`: the mode; `ReadMarker`: 1 or 0), `-1000` for steps after
/// the child died.
pub fn run_as(id: u32, steps: &[Step]) -> Vec<i64> {
    let r = run_steps_as(id, steps, None);
    r.results
}

/// What [`run_steps_as`] did.
#[derive(Debug, Default)]
pub struct StepRuns {
    /// Each step's result in the first pass.
    pub results: Vec<i64>,
    /// Passes made.
    pub passes: u64,
    /// `ReadMarker` steps that found their marker, over all passes.
    pub marker_hits: u64,
}

/// Runs `steps` in a child process as uid/gid `id`: once, or pass after
/// pass (fds opened in a pass are closed at its end) until `for_` is up.
/// The child only makes syscalls: everything is prepared before it forks,
/// as a child of a threaded process may not allocate.
pub fn run_steps_as(id: u32, steps: &[Step], for_: Option<std::time::Duration>) -> StepRuns {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is writable for two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut opened = vec![-1 as libc::c_int; steps.len()];
    let mut proc_paths: Vec<[u8; 64]> = vec![[0u8; 64]; steps.len()];
    let mut first = vec![-1000i64; steps.len()];
    let mut buf = [0u8; 256];
    let deadline = for_.map(|d| d.as_nanos() as i64);
    // SAFETY: the child makes only syscalls on memory prepared above and
    // leaves with _exit; the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: see above; no allocation, no unwinding in the child.
        unsafe {
            // The child got a copy of every fd of this process, other
            // tests' among them: keep only the pipe (as fd 3) and stdio,
            // or a mount another test has a file open in would stay busy
            // for as long as this child runs.
            if libc::dup2(fds[1], 3) != 3 {
                libc::_exit(98);
            }
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            fds[1] = 3;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(id, id, id) != 0
                || libc::setresuid(id, id, id) != 0
            {
                libc::_exit(99);
            }
            let now = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
                ts.tv_sec * 1_000_000_000 + ts.tv_nsec
            };
            let start = now();
            let (mut passes, mut hits) = (0u64, 0u64);
            loop {
                for (i, s) in steps.iter().enumerate() {
                    let r = exec_step(s, i, &mut opened, &mut proc_paths, &mut buf);
                    if passes == 0 {
                        first[i] = r;
                    }
                    if matches!(s, Step::ReadMarker(..)) && r == 1 {
                        hits += 1;
                    }
                }
                for fd in opened.iter_mut() {
                    if *fd >= 0 {
                        libc::close(*fd);
                        *fd = -1;
                    }
                }
                passes += 1;
                match deadline {
                    Some(d) if now() - start < d => {}
                    _ => break,
                }
            }
            for v in first.iter().chain([passes as i64, hits as i64].iter()) {
                let bytes = v.to_ne_bytes();
                libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours from here on.
    let mut reader = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child running as uid {id} failed: status {status:#x}"
    );
    let mut values: Vec<i64> = out
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    values.resize(steps.len() + 2, -1000);
    StepRuns {
        passes: values[steps.len()] as u64,
        marker_hits: values[steps.len() + 1] as u64,
        results: values[..steps.len()].to_vec(),
    }
}

/// One step in a [`run_steps_as`] child: syscalls only.
///
/// # Safety
/// Only for the forked child: raw fds and errno.
unsafe fn exec_step(
    s: &Step,
    i: usize,
    opened: &mut [libc::c_int],
    proc_paths: &mut [[u8; 64]],
    buf: &mut [u8; 256],
) -> i64 {
    // SAFETY (for the whole body): libc calls on C strings and buffers
    // prepared before the fork.
    unsafe {
        let err = || -i64::from(*libc::__errno_location());
        let ok = |r: libc::c_int| if r < 0 { err() } else { 0 };
        let fd = |j: usize| opened[j];
        match s {
            Step::Open(p, fl, m) => {
                let r = libc::open(p.as_ptr(), *fl, *m as libc::c_uint);
                opened[i] = r;
                ok(r)
            }
            Step::OpenPath(p) => {
                let r = libc::open(p.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW);
                opened[i] = r;
                ok(r)
            }
            Step::Unlink(p) => ok(libc::unlink(p.as_ptr())),
            Step::Mkdir(p, m) => ok(libc::mkdir(p.as_ptr(), *m)),
            Step::Rmdir(p) => ok(libc::rmdir(p.as_ptr())),
            Step::Symlink(t, l) => ok(libc::symlink(t.as_ptr(), l.as_ptr())),
            Step::Exchange(a, b) => ok(libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )),
            Step::Fchmod(j, m) => ok(libc::fchmod(fd(*j), *m)),
            Step::ProcChmod(j, m) => {
                // "/proc/self/fd/N" written by hand: no formatting.
                let buf = &mut proc_paths[i];
                let prefix = b"/proc/self/fd/";
                buf[..prefix.len()].copy_from_slice(prefix);
                let mut n = fd(*j).max(0) as u32;
                let mut digits = [0u8; 10];
                let mut k = 0;
                loop {
                    digits[k] = b'0' + (n % 10) as u8;
                    k += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                for d in 0..k {
                    buf[prefix.len() + d] = digits[k - 1 - d];
                }
                buf[prefix.len() + k] = 0;
                ok(libc::chmod(buf.as_ptr().cast(), *m))
            }
            Step::Fsetxattr(j, n, v) => ok(libc::fsetxattr(
                fd(*j),
                n.as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0,
            )),
            Step::Futimens(j, sec) => {
                let t = [
                    libc::timespec {
                        tv_sec: *sec,
                        tv_nsec: 0,
                    },
                    libc::timespec {
                        tv_sec: *sec,
                        tv_nsec: 0,
                    },
                ];
                ok(libc::futimens(fd(*j), t.as_ptr()))
            }
            Step::Ftruncate(j, len) => ok(libc::ftruncate(fd(*j), *len)),
            Step::FstatMode(j) => {
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                if libc::fstat(fd(*j), st.as_mut_ptr()) < 0 {
                    err()
                } else {
                    i64::from(st.assume_init().st_mode)
                }
            }
            Step::ReadMarker(p, marker) => {
                let f = libc::open(p.as_ptr(), libc::O_RDONLY);
                if f < 0 {
                    return err();
                }
                let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                libc::close(f);
                if n < 0 {
                    return err();
                }
                let got = &buf[..n as usize];
                i64::from(!marker.is_empty() && got.windows(marker.len()).any(|w| w == &marker[..]))
            }
        }
    }
}
