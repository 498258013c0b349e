//! rcfs-fs: the rcfs union filesystem.
//!
//! * [`layer`] — read-only layers ([`layer::Layer`]): host directories now,
//!   lazily fetched image layer blobs next.
//! * [`whiteout`] — the spellings of deletions and opaque directories.
//! * [`union`] — the merged tree, copy-up and every filesystem operation,
//!   callable without a mount.
//! * [`fuse`] — the FUSE server over a union.
//! * [`mount`] — mounting it.

mod flush;
pub mod fuse;
pub mod layer;
mod sys;
pub mod union;
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
    /// Request-serving threads.
    pub threads: usize,
    /// Mount read-only (a union without an upper dir).
    pub read_only: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            fsname: "rcfs".into(),
            threads: 4,
            read_only: false,
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
        fuser::MountOption::Subtype("rcfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    if nix::unistd::geteuid().is_root() {
        // Container roots need device nodes and setuid binaries to work.
        opts.push(fuser::MountOption::Dev);
        opts.push(fuser::MountOption::Suid);
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
