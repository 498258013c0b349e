//! Directory listings for the kernel: readdir and readdirplus over the
//! union's listing of a directory, and queueing its subdirectories for
//! loading ahead when a pass over it starts.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::background::Prefetch;
use super::reply::{copy_err, kind_to_type, reply_err, start_of, to_file_attr};
use super::UnionFs;
use crate::union::DirEntry;

impl UnionFs {
    /// The listing of `dir` for a readdir at `offset`; when a listing
    /// starts, queues the subdirectories for background loading.
    pub(super) fn listing(
        &self,
        op: &str,
        dir: u64,
        offset: u64,
    ) -> io::Result<Arc<Vec<DirEntry>>> {
        let t = Instant::now();
        let r = self.union.list_dir(dir);
        self.trace(
            op,
            || format!("{dir}, {offset}"),
            t,
            &r.as_ref().map(|l| l.len()).map_err(copy_err),
        );
        if let (Some(p), 0, Ok(_)) = (&self.background.prefetch, offset, &r) {
            p.push(self.union.unloaded_subdirs(dir), Prefetch::DEPTH);
        }
        // The call past the last entry ends a pass: the kernel keeps what it
        // read, and another pass rebuilds the listing from the merged view.
        if let Ok(l) = &r {
            if offset > 2 && start_of(l, offset) == l.len() {
                self.union.drop_listing(dir);
            }
        }
        r
    }

    pub(super) fn do_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        let list = match self.listing("readdir", ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(reply_err(e)),
        };
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 {
            let parent = self.union.parent_of(ino.0).unwrap_or(ino.0);
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
        }
        for e in &list[start_of(&list, offset)..] {
            if reply.add(INodeNo(e.ino), e.cookie, kind_to_type(e.kind), &*e.name) {
                break;
            }
        }
        reply.ok();
    }

    pub(super) fn do_readdirplus(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectoryPlus) {
        let list = match self.listing("readdirplus", ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(reply_err(e)),
        };
        // The kernel takes no reference on `.` and `..`, so they are not
        // counted as lookups.
        for (off, name) in [(0u64, "."), (1, "..")] {
            if offset > off {
                continue;
            }
            let target = if off == 0 {
                ino.0
            } else {
                self.union.parent_of(ino.0).unwrap_or(ino.0)
            };
            if let Ok(s) = self.union.getattr(target) {
                if reply.add(
                    INodeNo(target),
                    off + 1,
                    name,
                    &Duration::ZERO,
                    &to_file_attr(&s),
                    Generation(0),
                ) {
                    return reply.ok();
                }
            }
        }
        for e in &list[start_of(&list, offset)..] {
            // Counted as a lookup here; gone since the listing: skipped.
            let Some(s) = self.union.lookup_listed(e.ino) else {
                continue;
            };
            if reply.add(
                INodeNo(s.ino),
                e.cookie,
                &*e.name,
                &self.opts.ttl,
                &to_file_attr(&s),
                Generation(0),
            ) {
                // Not sent after all: the kernel holds no lookup of it.
                self.union.forget(s.ino, 1);
                break;
            }
        }
        reply.ok();
    }
}
