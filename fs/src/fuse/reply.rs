//! Turning the union's answers into FUSE's: attributes, file types,
//! errnos (the one place an error becomes one), and small conversions of
//! what the kernel sends.

use std::fmt::Debug;
use std::io;
use std::time::{Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileType, Generation, INodeNo, ReplyAttr, ReplyEmpty, ReplyEntry, Request,
    TimeOrNow,
};

use super::UnionFs;

use crate::error;
use crate::layer::Kind;
use crate::union::{Caller, DirEntry, Stat, TimeSet};

/// Index of the first entry of `list` after readdir offset `offset`.
pub(super) fn start_of(list: &[DirEntry], offset: u64) -> usize {
    if offset < 2 {
        0
    } else {
        list.partition_point(|e| e.cookie <= offset)
    }
}

/// An error for a debug trace of an operation whose result is not `Debug`.
pub(super) fn copy_err(e: &io::Error) -> io::Error {
    io::Error::from_raw_os_error(error::errno_of(e))
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(reply_err(e)),
    }
}

/// The one place where internal errors become errnos; an error with a
/// cause beyond its errno (a layer's) is logged, since the program only
/// learns the errno.
pub(super) fn reply_err(e: io::Error) -> Errno {
    if error::has_cause(&e) {
        log::error!("{e}");
    }
    Errno::from_i32(error::errno_of(&e))
}

pub(crate) fn kind_to_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

pub(crate) fn to_file_attr(s: &Stat) -> FileAttr {
    let a = &s.attr;
    FileAttr {
        ino: INodeNo(s.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system_time(),
        mtime: a.mtime.to_system_time(),
        ctime: a.ctime.to_system_time(),
        crtime: a.ctime.to_system_time(),
        kind: kind_to_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

pub(super) fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    })
}

/// An attribute value the kernel reads as "no such entry, and remember that".
pub(crate) fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl UnionFs {
    pub(super) fn trace<T: Debug>(
        &self,
        op: &str,
        args: impl FnOnce() -> String,
        start: Instant,
        res: &io::Result<T>,
    ) {
        if self.opts.debug {
            let us = start.elapsed().as_micros();
            match res {
                Ok(v) => log::debug!("{op}({}) = {v:?} [{us} us]", args()),
                Err(e) => log::debug!("{op}({}) = Err({e}) [{us} us]", args()),
            }
        }
    }

    /// The errno `e` for an operation the union does not do, traced.
    pub(super) fn unsupported(&self, op: &str, args: impl FnOnce() -> String, e: i32) -> Errno {
        let r = Err::<(), _>(io::Error::from_raw_os_error(e));
        self.trace(op, args, Instant::now(), &r);
        Errno::from_i32(e)
    }

    pub(super) fn reply_entry(&self, reply: ReplyEntry, r: io::Result<Stat>) {
        match r {
            Ok(s) => reply.entry(&self.opts.ttl, &to_file_attr(&s), Generation(0)),
            Err(e) => reply.error(reply_err(e)),
        }
    }

    pub(super) fn reply_attr(&self, reply: ReplyAttr, r: io::Result<Stat>) {
        match r {
            Ok(s) => reply.attr(&self.opts.ttl, &to_file_attr(&s)),
            Err(e) => reply.error(reply_err(e)),
        }
    }
}
