//! rcfs-fs: the rcfs union filesystem.
//!
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
//! * [`mount()`] — mounting it.

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

use std::io;
use std::path::Path;

pub use fuser::{Session, SessionUnmounter};

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

/// Where and how to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let users other than the mounter in (needs `user_allow_other` in
    /// /etc/fuse.conf when not root).
    pub allow_other: bool,
    /// Source name shown in /proc/mounts.
    pub fsname: String,
    /// The type shown in /proc/mounts is `fuse.SUBTYPE`.
    pub subtype: String,
    /// Request-serving threads.
    pub threads: usize,
    /// Mount read-only (a union without an upper dir).
    pub read_only: bool,
    /// Honour setuid/setgid bits and device nodes (a container's root
    /// needs them); only root may ask for them.
    pub suid_dev: bool,
    /// Do not update access times.
    pub noatime: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            fsname: "rcfs".into(),
            subtype: "rcfs".into(),
            threads: 4,
            read_only: false,
            suid_dev: nix::unistd::geteuid().is_root(),
            noatime: false,
        }
    }
}

/// Mounts `fs` at `mountpoint`; serve it with [`Session::run`].
pub fn mount(
    fs: fuse::UnionFs,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<Session<fuse::UnionFs>> {
    let mut config = fuser::Config::default();
    let mut opts = vec![
        fuser::MountOption::FSName(cfg.fsname.clone()),
        fuser::MountOption::Subtype(cfg.subtype.clone()),
        fuser::MountOption::DefaultPermissions,
    ];
    if nix::unistd::geteuid().is_root() {
        // fuser mounts as root with mount(2) and type "fuse", which drops
        // the subtype; the kernel takes it as an option (`fuse.SUBTYPE` in
        // /proc/mounts, as mount.fuse3 would show it).
        opts.push(fuser::MountOption::CUSTOM(format!(
            "subtype={}",
            cfg.subtype
        )));
    }
    if cfg.suid_dev {
        opts.push(fuser::MountOption::Dev);
        opts.push(fuser::MountOption::Suid);
    }
    if cfg.noatime {
        opts.push(fuser::MountOption::NoAtime);
    }
    if cfg.read_only {
        opts.push(fuser::MountOption::RO);
    }
    config.mount_options = opts;
    config.acl = if cfg.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    let notifier = fs.notifier_slot();
    let session = Session::new(fs, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    Ok(session)
}
