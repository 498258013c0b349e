//! Mounting a union: the checks that turn a bad request into a clear
//! message, the background process, and clean unmounting on signals
//! (`rcfs umount` is in `mount/umount.rs`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;
use rcfs_fs::cache::BlockCache;
use rcfs_fs::fuse::{MountOptions, UnionFs};
use rcfs_fs::image::live::LivePull;
use rcfs_fs::image::open::{open_image, CacheOptions};
use rcfs_fs::image::pull::PullOptions;
use rcfs_fs::layer::{DirLayer, Layer};
use rcfs_fs::union::{Config, Union, UpperConfig};
use rcfs_fs::{MountConfig, Mounting};

mod umount;

use umount::is_mountpoint;
pub use umount::umount;

/// Everything a mount needs.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// Lower dirs, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// Serve from this process instead of a background one.
    pub foreground: bool,
    pub debug: bool,
    pub allow_other: bool,
    /// Metadata-only copy-up (see `rcfs_fs::union::Config::metacopy`).
    pub metacopy: bool,
    /// Flush copied-up data before it becomes visible.
    pub fsync: bool,
    pub passthrough: bool,
    pub ttl: Duration,
    pub fsname: String,
    /// The mount's type is `fuse.SUBTYPE` (`fuse.rcfs`, `fuse.rcfs-overlay`).
    pub subtype: String,
    /// Do not update access times (fuse-overlayfs's default).
    pub noatime: bool,
    /// Honour setuid bits and file capabilities (root only; see
    /// `rcfs_fs::MountConfig::suid`).
    pub suid: bool,
    /// Honour device nodes (root only; see `rcfs_fs::MountConfig::dev`).
    pub dev: bool,
    pub threads: usize,
    /// Where a background server writes its log (warnings, errors; with
    /// `debug`, every operation); `None`: nowhere.
    pub log: Option<PathBuf>,
    /// An image from the store as the lower layers (under `lowers`, which
    /// are then extra dirs on top).
    pub image: Option<ImageMount>,
}

/// A stored image to mount.
#[derive(Debug, Clone)]
pub struct ImageMount {
    pub store: PathBuf,
    /// As the store lists it, or as the user gave it (found as
    /// [`crate::image::find`] finds it: `debian` is
    /// `docker.io/library/debian:latest`).
    pub name: String,
    pub cache: CacheOptions,
    /// If it is not in the store, the server pulls it while mounted (see
    /// `rcfs_fs::image::live`), with `--tls-verify=false` if `insecure`.
    pub pull: bool,
    /// Say so on stderr when it is pulled while mounted (`rcfs mount`).
    pub tell_pull: bool,
    pub insecure: bool,
    /// With `pull`: serve a streamed layer's files before its digest is
    /// checked (`--unverified-streaming`).
    pub unverified_streaming: bool,
    /// The image's owners as a keep-id namespace nested in the server's
    /// sees them, for the user (uid, gid): see `rcfs_fs::layer::shift`.
    pub keep_id: Option<(u32, u32)>,
}

impl MountRequest {
    /// A request with defaults for everything but the paths.
    pub fn new(
        lowers: Vec<PathBuf>,
        upper: Option<PathBuf>,
        work: Option<PathBuf>,
        mountpoint: PathBuf,
    ) -> Self {
        MountRequest {
            lowers,
            upper,
            work,
            mountpoint,
            foreground: false,
            debug: false,
            allow_other: false,
            metacopy: true,
            fsync: true,
            passthrough: true,
            ttl: Duration::from_secs(86400),
            fsname: "rcfs".into(),
            subtype: "rcfs".into(),
            noatime: false,
            suid: nix::unistd::geteuid().is_root(),
            dev: nix::unistd::geteuid().is_root(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
            log: None,
            image: None,
        }
    }
}

/// Splits a `A:B:C` list of lower dirs (an empty one stays, for
/// [`check`] to refuse).
pub fn split_lowers(s: &str) -> Vec<PathBuf> {
    s.split(':').map(PathBuf::from).collect()
}

/// Most request-serving threads: each holds a /dev/fuse queue and a 1 MiB
/// buffer; past a few per CPU they only wait.
pub const MAX_THREADS: usize = 64;

/// Parses a cache timeout in seconds (`--timeout`, `-o timeout=`).
pub fn parse_timeout(v: &str) -> Result<Duration> {
    let secs: f64 = v
        .trim()
        .parse()
        .with_context(|| format!("timeout {v} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        bail!("timeout {v} must be a number of seconds, 0 or more");
    }
    // The kernel keeps a timeout in 64-bit jiffies: a century is forever.
    const MAX: f64 = 100.0 * 365.0 * 86400.0;
    if secs > MAX {
        bail!("timeout {v} is too large: at most {MAX} seconds (a century)");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn abs(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))
}

/// Checks the request against the machine, resolving relative paths (they
/// are relative to the directory the command was started in).
fn check(req: &mut MountRequest) -> Result<()> {
    if req.lowers.is_empty() && req.upper.is_none() && req.image.is_none() {
        bail!("no layers given: pass at least one lower dir (--lower A:B or -o lowerdir=A:B)");
    }
    if req.threads == 0 || req.threads > MAX_THREADS {
        bail!(
            "{} request-serving threads asked for: give 1 to {MAX_THREADS}",
            req.threads
        );
    }
    for l in req.lowers.iter_mut() {
        if l.as_os_str().is_empty() {
            bail!("an empty lower dir was given (as in --lower '' or lowerdir=a::b): name each lower dir");
        }
        let p = abs(l)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("lower dir {} is not a directory", p.display()),
            Err(e) => bail!("lower dir {} cannot be used: {e}", p.display()),
        }
        *l = p.canonicalize()?;
    }
    match (&req.upper, &req.work) {
        (Some(_), None) => {
            bail!("an upper dir needs a work dir on the same filesystem (--work DIR / workdir=DIR)")
        }
        (None, Some(_)) => {
            bail!("a work dir is only used with an upper dir (--upper DIR / upperdir=DIR)")
        }
        _ => {}
    }
    if let (Some(u), Some(w)) = (req.upper.clone(), req.work.clone()) {
        let u = abs(&u)?;
        let w = abs(&w)?;
        let um = std::fs::metadata(&u)
            .with_context(|| format!("upper dir {} cannot be used", u.display()))?;
        let wm = std::fs::metadata(&w)
            .with_context(|| format!("work dir {} cannot be used", w.display()))?;
        if !um.is_dir() {
            bail!("upper dir {} is not a directory", u.display());
        }
        if !wm.is_dir() {
            bail!("work dir {} is not a directory", w.display());
        }
        if um.dev() != wm.dev() {
            bail!(
                "upper dir {} and work dir {} are on different filesystems: copy-up moves files from one to the other \
                 atomically, which only works within one filesystem; put the work dir next to the upper dir",
                u.display(),
                w.display()
            );
        }
        let (uc, wc) = (u.canonicalize()?, w.canonicalize()?);
        if uc.starts_with(&wc) || wc.starts_with(&uc) {
            bail!(
                "upper dir {} and work dir {} must not contain each other",
                u.display(),
                w.display()
            );
        }
        req.upper = Some(uc);
        req.work = Some(wc);
    }
    let mp = abs(&req.mountpoint)?;
    match std::fs::metadata(&mp) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("mountpoint {} is not a directory", mp.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mountpoint {} does not exist: create it first (mkdir -p {})", mp.display(), mp.display())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mountpoint {} is a dead FUSE mount (its server exited): unmount it first (fusermount3 -u {})",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!("mountpoint {} cannot be used: {e}", mp.display()),
    }
    let mp = mp.canonicalize()?;
    if is_mountpoint(&mp) {
        bail!(
            "mountpoint {} is busy: something is already mounted there; unmount it first (rcfs umount {})",
            mp.display(),
            mp.display()
        );
    }
    req.mountpoint = mp;
    check_overlaps(req)?;
    if let Some(log) = &req.log {
        let p = abs(log)?;
        // The server opens it once mounted, before it serves: under its
        // own mount, it would wait on itself.
        let dir = p.parent().and_then(|d| d.canonicalize().ok());
        if dir.is_some_and(|d| d.starts_with(&req.mountpoint)) {
            bail!(
                "the log file {} is inside the mountpoint {}: the mount would hide it; \
                 put the log somewhere outside the mount",
                p.display(),
                req.mountpoint.display()
            );
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .with_context(|| format!("cannot write the log file {}", p.display()))?;
        // (A symlink into it, too.)
        let p = p.canonicalize()?;
        if p.starts_with(&req.mountpoint) {
            bail!(
                "the log file {} is inside the mountpoint {}: put the log somewhere outside the mount",
                p.display(),
                req.mountpoint.display()
            );
        }
        req.log = Some(p);
    }
    check_fuse_device()?;
    Ok(())
}

/// Refuses layers (and an image's store) that overlap each other or the
/// mountpoint (all paths canonical). A mountpoint inside a layer would have the server serve its
/// own mount and hang on it; an upper or work dir inside a lower one (or
/// the reverse) would have writes change a read-only layer. Kernel
/// overlayfs refuses the same (ELOOP).
fn check_overlaps(req: &MountRequest) -> Result<()> {
    let mut dirs: Vec<(&str, &Path)> = Vec::new();
    if let (Some(u), Some(w)) = (&req.upper, &req.work) {
        dirs.push(("upper dir", u));
        dirs.push(("work dir", w));
    }
    for l in &req.lowers {
        dirs.push(("lower dir", l));
    }
    let mp = &req.mountpoint;
    for (what, d) in &dirs {
        if mp.starts_with(d) {
            bail!(
                "the mountpoint {} is {} the {what} {}: the union would contain itself \
                 and its server would hang on its own mount; mount it somewhere outside its layers",
                mp.display(),
                if mp == d { "also" } else { "inside" },
                d.display()
            );
        }
        if d.starts_with(mp) {
            bail!(
                "the {what} {} is inside the mountpoint {}: the mount would hide it; \
                 mount it somewhere outside its layers",
                d.display(),
                mp.display()
            );
        }
    }
    // An image's store: its server opens it, and writes to it, after the
    // mount is made (a user's is made before the server starts).
    if let Some(im) = &req.image {
        let store = im.store.canonicalize().or_else(|_| abs(&im.store))?;
        if store.starts_with(mp) {
            bail!(
                "the store {} is {} the mountpoint {}: the mount would hide it from its own server; \
                 mount the image somewhere outside the store",
                store.display(),
                if &store == mp { "also" } else { "inside" },
                mp.display()
            );
        }
        if mp.starts_with(&store) {
            bail!(
                "the mountpoint {} is inside the store {}: the mount would hide part of the store \
                 from its own server; mount the image somewhere outside the store",
                mp.display(),
                store.display()
            );
        }
    }
    for (what, d) in dirs.iter().filter(|(w, _)| *w != "lower dir") {
        for l in &req.lowers {
            if d.starts_with(l) || l.starts_with(d) {
                bail!(
                    "the {what} {} and the lower dir {} overlap: changes would be written into \
                     a read-only layer; use separate directories",
                    d.display(),
                    l.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks that FUSE can be used, with a message that says what to do if not.
fn check_fuse_device() -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let helper = which("fusermount3").or_else(|| which("fusermount"));
    if !root && helper.is_some() {
        // The setuid helper opens /dev/fuse for us.
        if !Path::new("/dev/fuse").exists() {
            bail!("/dev/fuse does not exist: load the fuse kernel module (modprobe fuse), or in a container pass the device in (--device /dev/fuse)");
        }
        return Ok(());
    }
    if !root {
        // Only root (in its user namespace) may call mount(2) itself.
        bail!("mounting as a normal user needs the fusermount3 helper: install fuse3 (apt-get install fuse3)");
    }
    check_fuse_open()
}

/// That this process can open /dev/fuse itself (to mount with mount(2),
/// as root or as root of its user namespace).
pub fn check_fuse_open() -> Result<()> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "/dev/fuse does not exist: load the fuse kernel module (modprobe fuse), or in a container pass the device in (--device /dev/fuse)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "no permission to open /dev/fuse: make it usable for your user (chmod 666 /dev/fuse, or the fuse group)"
        ),
        Err(e) => bail!("cannot open /dev/fuse: {e}"),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The union of `req`, the cache of its image, the pull of an image
/// pulled while mounted, and whether the store's `run/` (where the
/// mount's stats socket goes) passed its checks.
type Built = (Union, Option<Arc<BlockCache>>, Option<Arc<LivePull>>, bool);

/// `before_pull` runs before an image that is not in the store starts to
/// be pulled (which waits on the registry).
fn build_union(req: &MountRequest, before_pull: &mut dyn FnMut()) -> Result<Built> {
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for l in &req.lowers {
        lowers.push(Arc::new(
            DirLayer::new(l).with_context(|| format!("lower dir {}", l.display()))?,
        ));
    }
    let mut cache = None;
    let mut live = None;
    let mut run_dir = false;
    if let Some(im) = &req.image {
        // Opened and looked up here, in the server, only: the caller of a
        // background mount does not, which spares it both.
        let store = crate::image::open_store(Some(&im.store))?;
        // Held until the server exits: no gc under a mount.
        std::mem::forget(store.lock_in_use()?);
        // Where the mount's stats socket goes (`crate::stats::serve`),
        // made (or closed to others) before anything is put in it; without
        // it the mount only has no stats.
        run_dir = match store.own_dir("run") {
            Ok(_) => true,
            Err(e) => {
                log::warn!("no stats for this mount: the store's run/: {e}");
                false
            }
        };
        match crate::image::find(&store, &im.name)? {
            Some(img) => {
                let (layers, c) = open_image(&store, &img, &im.cache)
                    .with_context(|| format!("cannot open the layers of {}", im.name))?;
                lowers.extend(layers);
                cache = Some(c);
            }
            None if im.pull => {
                before_pull();
                if im.tell_pull {
                    // The server's stderr is the caller's until it is ready.
                    eprintln!(
                        "{} is not in the store: it is pulled while mounted, and its files \
                         are readable as they arrive (rcfs stats MOUNTPOINT shows what was fetched)",
                        im.name
                    );
                }
                let opts = PullOptions {
                    lazy: true,
                    insecure: im.insecure,
                    // Every layer streams at once: a lookup may wait for
                    // any of them.
                    jobs: 8,
                    unverified_streaming: im.unverified_streaming,
                };
                let (layers, c, pull) = LivePull::start(store, &im.name, opts, im.cache.clone())
                    .with_context(|| format!("cannot pull {}", im.name))?;
                lowers.extend(layers);
                cache = Some(c);
                live = Some(pull);
            }
            None => bail!("image {} is no longer in the store", im.name),
        }
    }
    if let Some((uid, gid)) = req.image.as_ref().and_then(|im| im.keep_id) {
        let dirs = req.lowers.len();
        for l in &mut lowers[dirs..] {
            *l = Arc::new(rcfs_fs::layer::shift::Shifted::new(l.clone(), uid, gid));
        }
    }
    let upper = match (&req.upper, &req.work) {
        (Some(u), Some(w)) => Some(UpperConfig {
            upper: u.clone(),
            work: w.clone(),
        }),
        _ => None,
    };
    let union = Union::new(Config {
        lowers,
        upper,
        metacopy: req.metacopy,
        fsync: req.fsync,
    })
    .context("cannot set up the union")?;
    Ok((union, cache, live, run_dir))
}

/// Mounts and serves `req`. In the foreground this returns when the mount is
/// unmounted (or on SIGINT/SIGTERM, after unmounting); otherwise it returns
/// once the mount is ready, served by a background process.
pub fn run(mut req: MountRequest) -> Result<()> {
    check(&mut req)?;
    if req.foreground {
        return serve(&req, None, None);
    }
    // A pipe tells the parent when the child has mounted (or why it failed).
    // Close-on-exec: no helper the server starts (fusermount3) keeps the
    // write end, which would keep the caller waiting for its end.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    rcfs_runtime::threads::ensure_single("starting a background server")?;
    // A user's fusermount3 starts mounting before the fork: its setuid
    // exec overlaps the fork and the server's start. The server takes the
    // mount over; this process only reaps the helper.
    let early = rcfs_fs::begin_mount(&req.mountpoint, &mount_config(&req))
        .with_context(|| format!("cannot mount on {}", req.mountpoint.display()))?;
    // SAFETY: no other threads exist (checked), so the child may run any
    // code.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            std::fs::File::from(rd).read_to_string(&mut msg).ok();
            if msg.starts_with("ok") {
                early.leave_to_child();
                // The server serves on: init (or the nearest subreaper)
                // adopts it when this process exits, which it does now.
                return Ok(());
            }
            // It failed and exits (or has): reap it. If it died before it
            // took the mount over, the helper's fd is still on its way:
            // dropping the mount takes it and takes the mount down (only
            // ours; a server that failed later took its own down).
            let _ = nix::sys::wait::waitpid(child, None);
            drop(early);
            if msg.is_empty() {
                bail!("the rcfs server exited before the mount was ready")
            }
            bail!("{}", msg.trim_end())
        }
        ForkResult::Child => {
            drop(rd);
            // Out of the caller's session and process group: the
            // terminal's signals are not the server's. One fork, not the
            // daemon's two (a second fork costs every mount most of a
            // millisecond): the server is a session leader, which could
            // take a terminal it opened as its controlling one, and it
            // opens none as one (O_NOCTTY for a log; it serves regular
            // files, and device nodes in a mount are opened by the kernel,
            // never by it).
            let _ = nix::unistd::setsid();
            let code = match serve(&req, Some(wr), Some(early)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Lets the server hold as many files open as the system allows: every
/// file a program opens through the mount is one here, and the usual soft
/// limit (1024) is far below what a container may open at once.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Keeps large blocks out of malloc's heaps. A large directory's tables
/// and listings are large blocks that live briefly; glibc gives them their
/// own mappings, but after the first one is freed it raises that threshold
/// and later ones stay in the heap once freed, resident and unused (a
/// 200,000-entry directory listed twice: 89 MB resident instead of 62 MB).
fn keep_large_blocks_out_of_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: a plain libc call, made before the server's threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// A mounted union, not served yet.
pub struct Started {
    pub session: rcfs_fs::Mounted,
    /// The pull of an image pulled while mounted.
    pub live: Option<Arc<LivePull>>,
}

/// Builds the union of `req` and mounts it (the one path of `rcfs mount`
/// and `rcfs run`); an image mount also answers `rcfs stats`.
pub fn start(req: &MountRequest) -> Result<Started> {
    start_with(req, None)
}

/// Where and how `req` is mounted.
fn mount_config(req: &MountRequest) -> MountConfig {
    MountConfig {
        allow_other: req.allow_other,
        fsname: req.fsname.clone(),
        subtype: req.subtype.clone(),
        threads: req.threads,
        read_only: req.upper.is_none(),
        noatime: req.noatime,
        suid: req.suid,
        dev: req.dev,
    }
}

/// [`start`], with the mount already begun (`early`) or not.
fn start_with(req: &MountRequest, early: Option<Mounting>) -> Result<Started> {
    let cfg = mount_config(req);
    let in_mount = || format!("cannot mount on {}", req.mountpoint.display());
    // A user's fusermount3 mounts while the union is built; not while an
    // image is pulled: its mount would hold up whoever looks at it (a
    // FUSE mount answers nothing until served) for as long as the
    // registry takes.
    let mut mounting = match early {
        Some(m) => Some(m),
        None => Some(rcfs_fs::begin_mount(&req.mountpoint, &cfg).with_context(in_mount)?),
    };
    raise_fd_limit();
    keep_large_blocks_out_of_the_heap();
    let (union, cache, live, run_dir) = build_union(req, &mut || drop(mounting.take()))?;
    let mounting = match mounting {
        Some(m) => m,
        None => rcfs_fs::begin_mount(&req.mountpoint, &cfg).with_context(in_mount)?,
    };
    let union = Arc::new(union);
    let fs = UnionFs::new(
        union,
        MountOptions {
            ttl: req.ttl,
            debug: req.debug,
            passthrough: req.passthrough,
            prefetch: true,
        },
    );
    let session = mounting.finish(fs).with_context(in_mount)?;
    if let (Some(cache), Some(im), true) = (cache, &req.image, run_dir) {
        let more = live
            .clone()
            .map(|l| Box::new(move || l.status()) as Box<dyn Fn() -> String + Send>);
        crate::stats::serve(&im.store, &req.mountpoint, &im.name, cache, more);
    }
    Ok(Started { session, live })
}

fn serve(req: &MountRequest, mut ready: Option<OwnedFd>, early: Option<Mounting>) -> Result<()> {
    let result = (|| {
        // Signals go to the thread that unmounts, not to the workers.
        let mut sigs = SigSet::empty();
        sigs.add(Signal::SIGINT);
        sigs.add(Signal::SIGTERM);
        sigs.add(Signal::SIGHUP);
        sigs.thread_block().context("blocking signals")?;
        let session = start_with(req, early)?.session;
        let unmounter = session.unmounter();
        std::thread::Builder::new()
            .name("rcfs-signals".into())
            .spawn(move || {
                if let Ok(sig) = sigs.wait() {
                    log::info!("{sig:?}: unmounting");
                    match unmounter.unmount() {
                        Ok(rcfs_fs::Unmounted::NotOurs) => {
                            log::info!("not unmounting: another mount is at the mountpoint now")
                        }
                        Ok(_) => {}
                        Err(e) => log::error!("unmount failed: {e}"),
                    }
                }
            })?;
        Ok(session)
    })();
    let session = match result {
        Ok(s) => s,
        Err(e) => {
            if let Some(fd) = ready.take() {
                let _ = std::fs::File::from(fd).write_all(format!("{e:#}").as_bytes());
                return Ok(());
            }
            return Err(e);
        }
    };
    if let Some(fd) = ready.take() {
        detach_stdio(fd.as_raw_fd(), req.log.as_deref());
        let _ = std::fs::File::from(fd).write_all(b"ok");
    }
    // Ends when the mount is unmounted, by anyone; a server that fails
    // takes down its own mount only (never what is at the path by then).
    let served = session.run().context("serving the mount");
    // The stats socket of an image mount goes with it.
    if let Some(im) = &req.image {
        let _ = std::fs::remove_file(crate::stats::socket_path(&im.store, &req.mountpoint));
    }
    served
}

/// A background server keeps no terminal: its stdio goes to /dev/null.
fn detach_stdio(keep: i32, log: Option<&Path>) {
    let open = |p: &Path, append: bool| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(!append)
            .write(true)
            .append(append)
            .create(append)
            // The server leads its session: a terminal given as its log
            // must not become its controlling one (whose hangup would
            // unmount it).
            .custom_flags(libc::O_NOCTTY)
            .open(p)
    };
    let Ok(null) = open(Path::new("/dev/null"), false) else {
        return;
    };
    // The log file was checked before mounting; if it went away, log nowhere.
    let err = log.and_then(|p| open(p, true).ok());
    for fd in 0..3 {
        if fd == keep {
            continue;
        }
        let src = match (&err, fd) {
            (Some(f), 2) => f.as_raw_fd(),
            _ => null.as_raw_fd(),
        };
        // SAFETY: dup2 onto the standard fds; both sources stay open until then.
        unsafe { libc::dup2(src, fd) };
    }
}
