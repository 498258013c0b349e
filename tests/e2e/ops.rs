//! Syscalls on a merged tree, each recorded with its result.
//!
//! A comparison case is a closure over [`Ops`]; the harness runs it once on
//! the kernel overlayfs and once on the subject, and the two logs must be
//! equal line for line: same successes with the same observed values, same
//! errnos. Values that legitimately differ between two filesystems (inode
//! numbers, fds, "now" timestamps) are never logged as such — log what
//! they imply (`note("ino unchanged", a == b)`, [`time_str`]).

use std::fmt::Debug;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::snapshot::{time_str, Content, FileKind, Mode};
use crate::sys::{self, Errno, SysResult};

/// The observable part of a stat: what the log records for `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    /// Not for dirs (see snapshot.rs).
    pub size: Option<i64>,
    /// Not for dirs.
    pub nlink: Option<u64>,
}

impl Stat {
    pub fn of(st: &libc::stat) -> Stat {
        let kind = FileKind::of(st);
        let is_dir = kind == FileKind::Dir;
        Stat {
            kind,
            mode: Mode(st.st_mode & 0o7777),
            uid: st.st_uid,
            gid: st.st_gid,
            size: (!is_dir).then_some(st.st_size),
            nlink: (!is_dir).then_some(st.st_nlink),
        }
    }
}

/// A merged tree's root plus the log of what was done to it.
pub struct Ops {
    pub root: PathBuf,
    pub log: Vec<String>,
}

impl Ops {
    pub fn new(root: &Path) -> Ops {
        Ops {
            root: root.to_path_buf(),
            log: Vec::new(),
        }
    }

    /// Absolute path of `rel` in this tree.
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Records `label` with the result, logging the value with `show`.
    pub fn rec_with<T>(
        &mut self,
        label: String,
        r: SysResult<T>,
        show: impl Fn(&T) -> String,
    ) -> SysResult<T> {
        let line = match &r {
            Ok(v) => format!("{label} = {}", show(v)),
            Err(e) => format!("{label} = Err({})", sys::errno_name(*e)),
        };
        self.log.push(line);
        r
    }

    /// Records `label` with the result, logging the value with Debug.
    pub fn rec<T: Debug>(&mut self, label: String, r: SysResult<T>) -> SysResult<T> {
        self.rec_with(label, r, |v| format!("{v:?}"))
    }

    /// Records only success or the errno, not the value.
    pub fn rec_ok<T>(&mut self, label: String, r: SysResult<T>) -> SysResult<T> {
        self.rec_with(label, r, |_| "Ok".into())
    }

    /// Records a value computed by the case.
    pub fn note(&mut self, label: &str, v: impl Debug) {
        self.log.push(format!("note {label} = {v:?}"));
    }

    // ---- paths ----

    pub fn stat(&mut self, rel: &str) -> SysResult<Stat> {
        let r = sys::lstat(&self.p(rel)).map(|st| Stat::of(&st));
        self.rec(format!("lstat {rel}"), r)
    }

    /// lstat without logging (for inode numbers and raw fields).
    pub fn raw_stat(&self, rel: &str) -> SysResult<libc::stat> {
        sys::lstat(&self.p(rel))
    }

    pub fn exists(&mut self, rel: &str) -> bool {
        let r = sys::lstat(&self.p(rel)).is_ok();
        self.note(&format!("exists {rel}"), r);
        r
    }

    /// atime and mtime, via [`time_str`].
    pub fn times(&mut self, rel: &str) -> SysResult<(String, String)> {
        let r = sys::lstat(&self.p(rel)).map(|st| {
            (
                time_str(st.st_atime, st.st_atime_nsec),
                time_str(st.st_mtime, st.st_mtime_nsec),
            )
        });
        self.rec(format!("times {rel}"), r)
    }

    /// mtime via [`time_str`] (atime is left out: reads, including the
    /// harness's own snapshots, move it, and FUSE leaves that to the daemon).
    pub fn mtime(&mut self, rel: &str) -> SysResult<String> {
        let r = sys::lstat(&self.p(rel)).map(|st| time_str(st.st_mtime, st.st_mtime_nsec));
        self.rec(format!("mtime {rel}"), r)
    }

    pub fn read(&mut self, rel: &str) -> SysResult<Vec<u8>> {
        let r = sys::open(&self.p(rel), libc::O_RDONLY, 0).and_then(|fd| sys::read_to_end(&fd));
        self.rec_with(format!("read {rel}"), r, |v| {
            format!("{:?}", Content::of(v))
        })
    }

    /// Creates or truncates `rel` and writes `data` (like `echo > rel`).
    pub fn write_file(&mut self, rel: &str, data: impl AsRef<[u8]>) -> SysResult<()> {
        let data = data.as_ref();
        let r = sys::open(
            &self.p(rel),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        )
        .and_then(|fd| sys::write(&fd, data).map(drop));
        self.rec(format!("write_file {rel} {:?}", Content::of(data)), r)
    }

    /// `open(rel, flags, mode)`; `flags_name` is what the log shows.
    pub fn open(
        &mut self,
        rel: &str,
        flags: libc::c_int,
        mode: u32,
        flags_name: &str,
    ) -> SysResult<OwnedFd> {
        let r = sys::open(&self.p(rel), flags, mode);
        self.rec_ok(format!("open {rel} {flags_name}"), r)
    }

    pub fn truncate(&mut self, rel: &str, len: i64) -> SysResult<()> {
        let r = sys::truncate(&self.p(rel), len);
        self.rec(format!("truncate {rel} {len}"), r)
    }

    pub fn unlink(&mut self, rel: &str) -> SysResult<()> {
        let r = sys::unlink(&self.p(rel));
        self.rec(format!("unlink {rel}"), r)
    }

    pub fn rmdir(&mut self, rel: &str) -> SysResult<()> {
        let r = sys::rmdir(&self.p(rel));
        self.rec(format!("rmdir {rel}"), r)
    }

    pub fn mkdir(&mut self, rel: &str, mode: u32) -> SysResult<()> {
        let r = sys::mkdir(&self.p(rel), mode);
        self.rec(format!("mkdir {rel} {mode:o}"), r)
    }

    pub fn rename(&mut self, from: &str, to: &str) -> SysResult<()> {
        let r = sys::rename(&self.p(from), &self.p(to));
        self.rec(format!("rename {from} -> {to}"), r)
    }

    pub fn renameat2(
        &mut self,
        from: &str,
        to: &str,
        flags: libc::c_uint,
        flags_name: &str,
    ) -> SysResult<()> {
        let r = sys::renameat2(&self.p(from), &self.p(to), flags);
        self.rec(format!("renameat2 {from} -> {to} {flags_name}"), r)
    }

    pub fn link(&mut self, existing: &str, new: &str) -> SysResult<()> {
        let r = sys::link(&self.p(existing), &self.p(new));
        self.rec(format!("link {existing} -> {new}"), r)
    }

    pub fn symlink(&mut self, target: &str, rel: &str) -> SysResult<()> {
        let r = sys::symlink(Path::new(target), &self.p(rel));
        self.rec(format!("symlink {rel} -> {target}"), r)
    }

    pub fn readlink(&mut self, rel: &str) -> SysResult<PathBuf> {
        let r = sys::readlink(&self.p(rel));
        self.rec(format!("readlink {rel}"), r)
    }

    pub fn mknod(&mut self, rel: &str, mode: u32, dev: libc::dev_t) -> SysResult<()> {
        let r = sys::mknod(&self.p(rel), mode, dev);
        self.rec(format!("mknod {rel} {mode:o} {dev}"), r)
    }

    pub fn chmod(&mut self, rel: &str, mode: u32) -> SysResult<()> {
        let r = sys::chmod(&self.p(rel), mode);
        self.rec(format!("chmod {rel} {mode:o}"), r)
    }

    pub fn lchown(&mut self, rel: &str, uid: u32, gid: u32) -> SysResult<()> {
        let r = sys::lchown(&self.p(rel), uid, gid);
        self.rec(format!("lchown {rel} {uid} {gid}"), r)
    }

    pub fn chown(&mut self, rel: &str, uid: u32, gid: u32) -> SysResult<()> {
        let r = sys::chown(&self.p(rel), uid, gid);
        self.rec(format!("chown {rel} {uid} {gid}"), r)
    }

    /// `utimensat(rel, [atime, mtime], flags)`; times as (sec, nsec), nsec
    /// may be `UTIME_NOW` / `UTIME_OMIT`.
    pub fn utimens(
        &mut self,
        rel: &str,
        atime: (i64, i64),
        mtime: (i64, i64),
        flags: libc::c_int,
    ) -> SysResult<()> {
        let ts = [
            sys::timespec(atime.0, atime.1),
            sys::timespec(mtime.0, mtime.1),
        ];
        let r = sys::utimensat(&self.p(rel), ts, flags);
        self.rec(format!("utimensat {rel} {atime:?} {mtime:?} {flags}"), r)
    }

    pub fn setxattr(
        &mut self,
        rel: &str,
        name: &str,
        value: &[u8],
        flags: libc::c_int,
    ) -> SysResult<()> {
        let r = sys::lsetxattr(&self.p(rel), name, value, flags);
        self.rec(
            format!(
                "setxattr {rel} {name} {:?} {flags}",
                String::from_utf8_lossy(value)
            ),
            r,
        )
    }

    pub fn getxattr(&mut self, rel: &str, name: &str) -> SysResult<Vec<u8>> {
        let r = sys::lgetxattr(&self.p(rel), name);
        self.rec_with(format!("getxattr {rel} {name}"), r, |v| {
            format!("{:?}", String::from_utf8_lossy(v))
        })
    }

    /// listxattr without `security.*` names.
    pub fn listxattr(&mut self, rel: &str) -> SysResult<Vec<String>> {
        let r = sys::llistxattr(&self.p(rel)).map(|v| {
            v.into_iter()
                .filter(|n| !n.starts_with("security."))
                .collect()
        });
        self.rec(format!("listxattr {rel}"), r)
    }

    pub fn removexattr(&mut self, rel: &str, name: &str) -> SysResult<()> {
        let r = sys::lremovexattr(&self.p(rel), name);
        self.rec(format!("removexattr {rel} {name}"), r)
    }

    /// Names in a directory, sorted; logs an error on duplicates.
    pub fn readdir(&mut self, rel: &str) -> SysResult<Vec<String>> {
        let r = std::fs::read_dir(self.p(rel))
            .and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)));
        let r = r.map(|mut names| {
            let n = names.len();
            names.sort();
            names.dedup();
            if names.len() != n {
                names.push("<DUPLICATES>".into());
            }
            names
        });
        self.rec(format!("readdir {rel}"), r)
    }

    pub fn statfs(&mut self, rel: &str) -> SysResult<libc::statfs> {
        let r = sys::statfs(&self.p(rel));
        self.rec_ok(format!("statfs {rel}"), r)
    }

    // ---- open files ----

    pub fn fwrite(&mut self, fd: &OwnedFd, data: &[u8]) -> SysResult<usize> {
        let r = sys::write(fd, data);
        self.rec(format!("write {:?}", Content::of(data)), r)
    }

    pub fn pwrite(&mut self, fd: &OwnedFd, data: &[u8], off: i64) -> SysResult<usize> {
        let r = sys::pwrite(fd, data, off);
        self.rec(format!("pwrite @{off} {:?}", Content::of(data)), r)
    }

    /// `copy_file_range` of `len` bytes (in as many calls as it takes).
    pub fn copy_file_range(
        &mut self,
        src: &OwnedFd,
        off_in: i64,
        dst: &OwnedFd,
        off_out: i64,
        len: usize,
    ) -> SysResult<usize> {
        let r = sys::copy_file_range(src, off_in, dst, off_out, len);
        self.rec(format!("copy_file_range @{off_in} -> @{off_out} {len}"), r)
    }

    pub fn fallocate(&mut self, fd: &OwnedFd, mode: i32, off: i64, len: i64) -> SysResult<()> {
        let r = sys::fallocate(fd, mode, off, len);
        self.rec(format!("fallocate {mode:#x} @{off} {len}"), r)
    }

    pub fn pread(&mut self, fd: &OwnedFd, len: usize, off: i64) -> SysResult<Vec<u8>> {
        let r = sys::pread(fd, len, off);
        self.rec_with(format!("pread @{off} {len}"), r, |v| {
            format!("{:?}", Content::of(v))
        })
    }

    pub fn fread(&mut self, fd: &OwnedFd) -> SysResult<Vec<u8>> {
        let r = sys::read_to_end(fd);
        self.rec_with("read fd".into(), r, |v| format!("{:?}", Content::of(v)))
    }

    pub fn lseek(&mut self, fd: &OwnedFd, off: i64, whence: libc::c_int) -> SysResult<i64> {
        let r = sys::lseek(fd, off, whence);
        self.rec(format!("lseek {off} {whence}"), r)
    }

    pub fn fstat(&mut self, fd: &OwnedFd) -> SysResult<Stat> {
        let r = sys::fstat(fd).map(|st| Stat::of(&st));
        self.rec("fstat".into(), r)
    }

    pub fn ftruncate(&mut self, fd: &OwnedFd, len: i64) -> SysResult<()> {
        let r = sys::ftruncate(fd, len);
        self.rec(format!("ftruncate {len}"), r)
    }

    pub fn fchmod(&mut self, fd: &OwnedFd, mode: u32) -> SysResult<()> {
        let r = sys::fchmod(fd, mode);
        self.rec(format!("fchmod {mode:o}"), r)
    }

    pub fn fsync(&mut self, fd: &OwnedFd) -> SysResult<()> {
        let r = sys::fsync(fd);
        self.rec("fsync".into(), r)
    }

    pub fn fdatasync(&mut self, fd: &OwnedFd) -> SysResult<()> {
        let r = sys::fdatasync(fd);
        self.rec("fdatasync".into(), r)
    }
}
