//! rcfs-fs: the rcfs union filesystem.
//!
//! * [`als`] — the same layers served to podman and CRI-O as their
//!   Additional Layer Store.
//! * [`layer`] — read-only layers ([`layer::Layer`]): host directories and
//!   image layers served lazily from their blobs.
//! * [`image`] — digests, the store's content-addressed dirs, tables of
//!   contents, blob sources.
//! * [`cache`] — the block cache between image layers and their blobs.
//! * [`whiteout`] — the spellings of deletions and opaque directories.
//! * [`union`] — the merged tree, copy-up and every filesystem operation,
//!   callable without a mount.
//! * `upper` — the upper and work dirs, reached only through fds.
//! * [`fuse`] — the FUSE server over a union.
//! * `flush` — copied-up data on its way to disk.
//! * [`sys`] — what the kernel offers that `std` and `nix` lack.
//! * `lock` — every lock, and the one order they are taken in.
//! * [`error`] — errors that keep their cause.
//! * [`mount()`] — mounting it; [`Unmounter`] takes down only that mount.

pub mod als;
pub mod cache;
pub mod error;
mod flush;
pub mod fuse;
pub mod image;
pub mod layer;
mod lock;
pub mod sys;
pub mod union;
mod upper;
pub mod whiteout;

pub use fuse::mount::{
    begin_mount, mount, MountConfig, Mounted, Mounting, Served, Unmounted, Unmounter,
};

/// Hash maps keyed by inode numbers and file handles, which are small
/// sequential integers: a multiplicative hash spreads them well and costs a
/// multiply, where the default SipHash costs a few dozen cycles on every FUSE
/// request.
pub(crate) type IdMap<V> =
    std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
