//! Mounting a [`UnionFs`], and unmounting only that mount.
//!
//! fuser's own mount unmounts *by path* when its session ends, and takes a
//! poll of /dev/fuse that says POLLERR (the connection has ended) for "still
//! mounted": after an external `umount` (what podman does) a server that
//! exited then removed whatever was mounted at its path by then, such as
//! the next container's mount. So the mount is made here (mount(2), or
//! fusermount3 for users who may not mount) and served through
//! [`Session::from_fd`], which leaves fuser no mount to take down; a
//! [`Mounted`] keeps what identifies its mount, and [`Unmounter`] takes it
//! down only while it is still the one at the path:
//!
//! * once its FUSE connection has ended (unmounted or aborted from outside)
//!   there is nothing of ours to unmount, whatever the path holds now;
//! * otherwise the mount on top at the path is opened (O_PATH, which pins
//!   it) and must be a mount root on our superblock's device: while our
//!   connection stands our superblock holds that device number, so no other
//!   filesystem has it;
//! * the mount is then detached through that fd (`/proc/self/fd/N`), not
//!   through the path again.
//!
//! What remains: a mount made *on top of* our mount root in the moment
//! between the check and the detach would be the one detached (the kernel's
//! walk of the fd's link crosses into it); that needs someone to mount over
//! a live mount of ours in that window. Without /proc, or as a user (the
//! fusermount3 helper unmounts by path), the path is used right after the
//! check.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, Filesystem, Notifier, Session, SessionACL};

use super::UnionFs;
use crate::sys::mount as sys;

/// A filesystem a [`Mounting`] can serve: the union ([`UnionFs`]), or the
/// Additional Layer Store ([`crate::als::AlsFs`]).
pub trait Served: Filesystem {
    /// Where the session's notifier goes once the session exists, for a
    /// filesystem that tells the kernel of changes.
    fn notifier_slot(&self) -> Option<Arc<std::sync::OnceLock<Notifier>>> {
        None
    }
}

impl Served for UnionFs {
    fn notifier_slot(&self) -> Option<Arc<std::sync::OnceLock<Notifier>>> {
        Some(UnionFs::notifier_slot(self))
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
    /// Honour setuid/setgid bits and file capabilities (a container's root
    /// needs them); only root may ask. Off: the mount is `nosuid`.
    pub suid: bool,
    /// Honour device nodes; only root may ask. Off: the mount is `nodev`.
    pub dev: bool,
    /// Do not update access times.
    pub noatime: bool,
}

impl Default for MountConfig {
    /// `nosuid,nodev`: what the layers hold is not trusted to act on the
    /// host unless asked.
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            fsname: "rcfs".into(),
            subtype: "rcfs".into(),
            threads: 4,
            read_only: false,
            suid: false,
            dev: false,
            noatime: false,
        }
    }
}

/// A filesystem (the union unless said) mounted and ready to serve
/// ([`Mounted::run`]). Dropped without being run, it unmounts its mount
/// (only its own, see the module doc).
#[derive(Debug)]
pub struct Mounted<F: Served = UnionFs> {
    /// `None` once run.
    session: Option<Session<F>>,
    own: Arc<OwnMount>,
}

/// What identifies the mount a server made.
#[derive(Debug)]
struct OwnMount {
    /// Canonical, as mounted.
    mountpoint: PathBuf,
    /// The device number of the mount's superblock.
    dev: u64,
    /// A /dev/fuse fd of the mount's connection (a dup of the session's):
    /// tells whether the connection still stands, and keeps it standing
    /// between a failed session's end and its unmount.
    fuse: OwnedFd,
}

/// Unmounts a [`Mounted`]'s mount from any thread, also while it is served.
#[derive(Debug, Clone)]
pub struct Unmounter(Arc<OwnMount>);

/// What [`Unmounter::unmount`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Our mount was detached; the session ends once its last user lets
    /// go (at once if none).
    Detached,
    /// Our connection had already ended (unmounted or aborted from
    /// outside): nothing was done.
    Gone,
    /// Something else is mounted at the path now (on top of ours, or in
    /// its place): nothing was done.
    NotOurs,
}

/// Mounts `fs` at `mountpoint`; serve it with [`Mounted::run`].
pub fn mount(fs: UnionFs, mountpoint: &Path, cfg: &MountConfig) -> io::Result<Mounted> {
    begin_mount(mountpoint, cfg)?.finish(fs)
}

/// A mount under way, for a filesystem that is not built yet: a user's
/// mount starts the fusermount3 helper at once, which mounts (a setuid
/// exec, most of a mount's time) while the caller builds what it serves.
/// Dropped without [`Mounting::finish`], it takes down the helper's mount.
#[derive(Debug)]
pub struct Mounting {
    /// Canonical.
    mp: PathBuf,
    cfg: MountConfig,
    helper: Option<sys::HelperMount>,
}

/// Starts mounting at `mountpoint` (see [`Mounting`]): as root, nothing
/// happens until [`Mounting::finish`] (mount(2) is quick); as a user, the
/// helper starts mounting now.
pub fn begin_mount(mountpoint: &Path, cfg: &MountConfig) -> io::Result<Mounting> {
    let mp = mountpoint.canonicalize()?;
    let helper = if nix::unistd::geteuid().is_root() {
        None
    } else {
        Some(spawn_helper(&mp, cfg)?)
    };
    Ok(Mounting {
        mp,
        cfg: cfg.clone(),
        helper,
    })
}

impl Mounting {
    /// In the process that began the mount, once a child forked after it
    /// has taken it over (and finishes or takes it down): this copy only
    /// reaps the helper.
    pub fn leave_to_child(mut self) {
        if let Some(h) = self.helper.take() {
            h.reap();
        }
    }

    /// The mount's /dev/fuse fd: the helper's, or mount(2)'s as root (the
    /// helper's when root of a user namespace may not mount here).
    fn fuse(&mut self) -> io::Result<OwnedFd> {
        if let Some(h) = self.helper.take() {
            return h.wait();
        }
        match mount_sys(&self.mp, &self.cfg)? {
            Some(fd) => Ok(fd),
            None => spawn_helper(&self.mp, &self.cfg)?.wait(),
        }
    }

    /// Completes the mount with `fs` to serve it.
    pub fn finish<F: Served>(mut self, fs: F) -> io::Result<Mounted<F>> {
        let fuse = self.fuse()?;
        let own = own_mount(&self.mp, fuse.try_clone()?)?;
        let config = {
            let mut c = Config::default();
            c.acl = acl(&self.cfg);
            c.n_threads = Some(self.cfg.threads.max(1));
            c.clone_fd = true;
            c
        };
        let notifier = fs.notifier_slot();
        let session = match Session::from_fd(fs, fuse, acl(&self.cfg), config) {
            Ok(s) => s,
            Err(e) => {
                let _ = Unmounter(own).unmount();
                return Err(e);
            }
        };
        if let Some(slot) = notifier {
            let _ = slot.set(session.notifier());
        }
        Ok(Mounted {
            session: Some(session),
            own,
        })
    }
}

impl Drop for Mounting {
    /// Not finished (what it was to serve failed): the helper's mount, if
    /// it made one, goes (only ours, see the module doc).
    fn drop(&mut self) {
        let Some(h) = self.helper.take() else { return };
        let Ok(fuse) = h.wait() else { return };
        // A mount we cannot tell apart is left to its path's owner (its
        // connection ends with our fds).
        if let Err(e) = own_mount(&self.mp, fuse).and_then(|own| Unmounter(own).unmount()) {
            log::warn!("unmounting {}: {e}", self.mp.display());
        }
    }
}

/// What identifies the mount at `mp` just made with the connection `fuse`.
fn own_mount(mp: &Path, fuse: OwnedFd) -> io::Result<Arc<OwnMount>> {
    // O_PATH: opening the mount root for reading would ask the server,
    // which does not serve yet.
    let dev = match open_path(mp).and_then(|f| sys::mount_of(f.as_fd())) {
        Ok((dev, true)) => dev,
        Ok((_, false)) => {
            return Err(io::Error::other(format!(
                "{} is not a mount root right after mounting on it",
                mp.display()
            )))
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot tell the new mount on {} apart: {e}", mp.display()),
            ))
        }
    };
    // The mount on top at the path is ours if it is our connection's: the
    // helper's mount was made a while ago (the union was built since), and
    // another mount may have been made on top of it meanwhile.
    if let Some(conn) = sys::connection_of(fuse.as_fd()) {
        if libc::major(dev) != 0 || u64::from(libc::minor(dev)) != conn {
            return Err(io::Error::other(format!(
                "another mount was made on {} while this one was being set up: unmount it and mount again",
                mp.display()
            )));
        }
    }
    Ok(Arc::new(OwnMount {
        mountpoint: mp.to_owned(),
        dev,
        fuse,
    }))
}

/// `p` opened O_PATH (no request reaches a FUSE server), a dir, the last
/// component no symlink.
fn open_path(p: &Path) -> io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(p)
        .map(OwnedFd::from)
}

fn acl(cfg: &MountConfig) -> SessionACL {
    if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    }
}

/// Mounts with mount(2); `None` if not permitted (EPERM), for the helper to
/// try.
fn mount_sys(mp: &Path, cfg: &MountConfig) -> io::Result<Option<OwnedFd>> {
    let fuse: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?
        .into();
    let rootmode = std::fs::metadata(mp)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions",
        fuse.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    // Type "fuse" with the subtype as an option: `fuse.SUBTYPE` in
    // /proc/mounts, as mount.fuse3 would show it.
    data.push_str(&format!(",subtype={}", cfg.subtype));
    if cfg.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = 0;
    if !cfg.suid {
        flags |= libc::MS_NOSUID;
    }
    if !cfg.dev {
        flags |= libc::MS_NODEV;
    }
    if cfg.noatime {
        flags |= libc::MS_NOATIME;
    }
    if cfg.read_only {
        flags |= libc::MS_RDONLY;
    }
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    match sys::mount_fuse(
        &cstr(cfg.fsname.as_bytes())?,
        &cstr(mp.as_os_str().as_bytes())?,
        flags,
        &cstr(data.as_bytes())?,
    ) {
        Ok(()) => Ok(Some(fuse)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("mount(2) of FUSE on {}: {e}", mp.display()),
        )),
    }
}

/// Starts mounting through the setuid helper fusermount3 (or fusermount).
fn spawn_helper(mp: &Path, cfg: &MountConfig) -> io::Result<sys::HelperMount> {
    let helper = helper().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "mounting as a normal user needs the fusermount3 helper: install fuse3",
        )
    })?;
    let mut opts = vec![
        format!("fsname={}", cfg.fsname),
        format!("subtype={}", cfg.subtype),
        "default_permissions".to_owned(),
    ];
    let flag = |on: bool, yes: &str, no: &str| if on { yes } else { no }.to_owned();
    opts.push(flag(cfg.suid, "suid", "nosuid"));
    opts.push(flag(cfg.dev, "dev", "nodev"));
    if cfg.allow_other {
        opts.push("allow_other".into());
    }
    if cfg.noatime {
        opts.push("noatime".into());
    }
    if cfg.read_only {
        opts.push("ro".into());
    }
    sys::HelperMount::spawn(&helper, mp, &opts.join(","))
}

fn helper() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    ["fusermount3", "fusermount"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

impl<F: Served> Mounted<F> {
    /// Unmounts this mount later, from any thread.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter(self.own.clone())
    }

    /// Serves the mount until it is unmounted (or its connection aborted).
    /// If serving fails while the mount still stands, it is unmounted
    /// (only ours) rather than left dead.
    pub fn run(mut self) -> io::Result<()> {
        let session = self.session.take().expect("a Mounted is run once");
        match session.run() {
            Ok(()) => Ok(()),
            // A request the kernel was handing over as an unmount aborted
            // the connection ends the read with ECONNABORTED instead of
            // ENODEV: an unmount all the same.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
            Err(e) => {
                if let Err(u) = self.unmounter().unmount() {
                    log::warn!("unmounting {}: {u}", self.own.mountpoint.display());
                }
                Err(e)
            }
        }
    }
}

impl<F: Served> Drop for Mounted<F> {
    fn drop(&mut self) {
        if self.session.is_some() {
            if let Err(e) = self.unmounter().unmount() {
                log::warn!("unmounting {}: {e}", self.own.mountpoint.display());
            }
        }
    }
}

impl Unmounter {
    /// Detaches the mount this server made, if it is still at its path
    /// (see the module doc); lazily, as libfuse does, so a busy mount goes
    /// from the path at once and its server ends when the last user lets go.
    pub fn unmount(&self) -> io::Result<Unmounted> {
        let own = &*self.0;
        if sys::fuse_disconnected(own.fuse.as_fd()) {
            return Ok(Unmounted::Gone);
        }
        let mp = &own.mountpoint;
        // The mount on top at the path, pinned while the fd is open.
        let top = match open_path(mp) {
            Ok(f) => f,
            Err(_) if sys::fuse_disconnected(own.fuse.as_fd()) => return Ok(Unmounted::Gone),
            // The path is gone or no dir: ours is not on it.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                return Ok(Unmounted::NotOurs)
            }
            Err(e) => return Err(e),
        };
        let (dev, root) = sys::mount_of(top.as_fd())?;
        // Checked after the open: a connection that stands means our
        // superblock, and with it our device number, is alive.
        if sys::fuse_disconnected(own.fuse.as_fd()) {
            return Ok(Unmounted::Gone);
        }
        if dev != own.dev || !root {
            log::info!(
                "not unmounting {}: what is mounted there now is not this server's mount",
                mp.display()
            );
            return Ok(Unmounted::NotOurs);
        }
        let link = crate::sys::proc_path(top.as_raw_fd(), "".as_ref())?;
        let path = CString::new(mp.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let r = match sys::umount_detach(&link, true) {
            // No /proc: by path, right after the check.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => sys::umount_detach(&path, false),
            r => r,
        };
        match r {
            Ok(()) => Ok(Unmounted::Detached),
            // Detached meanwhile by someone else.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Unmounted::Gone),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                drop(top);
                self.unmount_by_helper()
            }
            Err(e) => Err(e),
        }
    }

    /// A user's unmount: fusermount3 -u -z, by path (right after the check).
    fn unmount_by_helper(&self) -> io::Result<Unmounted> {
        let helper = helper().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "unmounting as a normal user needs the fusermount3 helper: install fuse3",
            )
        })?;
        let out = std::process::Command::new(&helper)
            .args(["-u", "-q", "-z", "--"])
            .arg(&self.0.mountpoint)
            .stdin(std::process::Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(Unmounted::Detached)
        } else {
            Err(io::Error::other(format!(
                "{} -u {}: {}",
                helper.display(),
                self.0.mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}
