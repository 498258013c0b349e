//! The container's init: its namespaces and root, then the command as its
//! child (see the crate doc).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::user::User;
use crate::{Spec, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RCFS};

mod caps;
pub(crate) mod dev;
pub use caps::rlimit_resource;
pub(crate) use caps::KEPT_CAPS;
use caps::{drop_capabilities, keep_only_init_capabilities};
mod harden;

/// Signals passed on to the command (by the init; `rcfs run` passes them on
/// to the init).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What the init mounts over in every container (with the host's
/// `resolv.conf` and `hosts`, when the host has them), made in the root
/// when the image lacks them: an empty directory or file that `rcfs commit`
/// leaves out.
pub const MOUNT_TARGETS: [&str; 6] = [
    "proc",
    "dev",
    "sys",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/hostname",
];

/// Sets up the container and runs the command; returns the exit code.
/// `dev` is real root's `/dev` tmpfs ([`dev::prepare`]).
pub(crate) fn run(spec: &Spec, tty_sock: i32, dev: Option<OwnedFd>) -> i32 {
    // Root of its user namespace: in one nested in the user's (keep-id) it
    // starts as the id its creator's maps to (the user's own).
    if let Err(e) = become_root() {
        eprintln!("rcfs: cannot become root of the container's user namespace: {e}");
        return EXIT_RCFS;
    }
    if let Err(e) = detach_from_caller() {
        eprintln!("rcfs: cannot set up the container: {e}");
        return EXIT_RCFS;
    }
    let user = match setup(spec, tty_sock, dev) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("rcfs: cannot set up the container: {e}");
            return EXIT_RCFS;
        }
    };
    // The terminal: a pty of the container's own devpts; the master goes
    // to `rcfs run`, the slave becomes the command's.
    let (master, slave) = if spec.tty {
        match terminal() {
            Ok((m, s)) => (Some(m), Some(s)),
            Err(e) => {
                eprintln!("rcfs: cannot make the container's terminal: {e}");
                return EXIT_RCFS;
            }
        }
    } else {
        (None, None)
    };
    // `rcfs run` waits for this word (its `Container::start`).
    if let Err(e) = ready(tty_sock, master) {
        eprintln!("rcfs: cannot tell rcfs run the container is ready: {e}");
        return EXIT_RCFS;
    }
    if spec.wait_go {
        let mut b = [0u8; 1];
        // SAFETY: the init's socket, into a one-byte buffer.
        let n = loop {
            let n = unsafe { libc::read(tty_sock, b.as_mut_ptr().cast(), 1) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n != 1 {
            // `rcfs run` gave up (it said why).
            return EXIT_RCFS;
        }
    }
    // SAFETY: the socket is the init's, and done with.
    unsafe { libc::close(tty_sock) };
    if !spec.init {
        // The command is pid 1: this process becomes it.
        exec(spec, &user, slave)
    }
    let mut sigs = SigSet::empty();
    for s in FORWARDED {
        sigs.add(s);
    }
    sigs.add(Signal::SIGCHLD);
    if let Err(e) = sigs.thread_block() {
        eprintln!("rcfs: cannot block signals: {e}");
        return EXIT_RCFS;
    }
    // SAFETY: the init has one thread.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => exec(spec, &user, slave),
        Ok(ForkResult::Parent { child }) => {
            // Only the command holds the terminal: it hangs up with it.
            drop(slave);
            if let Err(e) = keep_only_init_capabilities() {
                eprintln!("rcfs: cannot drop the init's capabilities: {e}");
                let _ = kill(child, Signal::SIGKILL);
                return EXIT_RCFS;
            }
            child
        }
        Err(e) => {
            eprintln!("rcfs: fork: {e}");
            return EXIT_RCFS;
        }
    };
    supervise(child, &sigs)
}

/// The first thing the init does: it keeps nothing of its caller's that
/// the container could use against the caller. A session of its own, so
/// no controlling terminal of the host (through which the container could
/// push input into the caller's shell with TIOCSTI, or read its
/// keystrokes); a new anonymous session keyring in place of the caller's
/// (whose keys it could read and add to); and not dumpable, so that the
/// command (root of the same user namespace, with more capabilities than
/// the init keeps) cannot ptrace it.
pub(crate) fn detach_from_caller() -> io::Result<()> {
    nix::unistd::setsid().map_err(|e| err("setsid", e))?;
    // SAFETY: keyctl with integer arguments (a NULL name: anonymous).
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        return Err(err(
            "joining a new session keyring (the container must not share yours; a full \
             key quota, see /proc/sys/kernel/keys/maxkeys, refuses it)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(err("PR_SET_DUMPABLE", io::Error::last_os_error()));
    }
    Ok(())
}

/// Takes uid and gid 0 of this process's user namespace, when they are not
/// its ids already.
fn become_root() -> io::Result<()> {
    use nix::unistd::{getgid, getuid, setresgid, setresuid, Gid, Uid};
    if getgid().as_raw() != 0 {
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
    }
    if getuid().as_raw() != 0 {
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))?;
    }
    Ok(())
}

/// Opens a pty in the container's `/dev/pts`: its master and its slave.
pub(crate) fn terminal() -> io::Result<(OwnedFd, OwnedFd)> {
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    // The slave of this very master, not a path someone could swap.
    // SAFETY: TIOCGPTPEER on a pty master returns a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master.into(), slave))
}

/// Tells `rcfs run` (over the unix socket `sock`) that the container is
/// set up, passing the terminal's master if there is one.
pub(crate) fn ready(sock: i32, master: Option<OwnedFd>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds: Vec<i32> = master.iter().map(|m| m.as_raw_fd()).collect();
    let cmsgs = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    sendmsg::<()>(
        sock,
        &[io::IoSlice::new(b"r")],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Reaps every child, passes signals on to `child`; its exit code once it
/// is gone.
pub(crate) fn supervise(child: Pid, sigs: &SigSet) -> i32 {
    loop {
        let sig = match sigs.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// `openat2` of `path` under `dir` with `resolve` flags.
fn openat2(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    let c = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: valid pointers to a C string and an open_how of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the syscall returned.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Resolves `rel` in the container's root `root` as the container will
/// (symlinks never lead above the root, whatever the image holds), makes
/// what is missing (directories; the last component a directory if `dir`,
/// else an empty file), and returns an `O_PATH` fd of it. Nothing is made
/// or reached outside the root by a path string.
fn in_root(root: BorrowedFd<'_>, rel: &str, dir: bool) -> io::Result<OwnedFd> {
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut cur = openat2(root, ".", libc::O_PATH | libc::O_DIRECTORY, 0, resolve)?;
    for (i, c) in comps.iter().enumerate() {
        if *c == ".." {
            return Err(io::Error::other(format!("{rel}: '..' in a container path")));
        }
        let prefix = comps[..=i].join("/");
        let last = i + 1 == comps.len();
        cur = match openat2(root, &prefix, libc::O_PATH, 0, resolve) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Made by name in the directory resolved so far.
                if !last || dir {
                    nix::sys::stat::mkdirat(
                        &cur,
                        *c,
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    )?;
                } else {
                    let fd = nix::fcntl::openat(
                        &cur,
                        *c,
                        nix::fcntl::OFlag::O_CREAT
                            | nix::fcntl::OFlag::O_EXCL
                            | nix::fcntl::OFlag::O_WRONLY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::from_bits_truncate(0o644),
                    )?;
                    drop(fd);
                }
                openat2(root, &prefix, libc::O_PATH, 0, resolve)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// The contents of the regular file `rel` of the container's root at
/// `root`, reached as the container would (see [`in_root`]); made nothing.
/// A file of more than `max` bytes is an error of kind `FileTooLarge`.
pub fn read_in_root(root: &Path, rel: &str, max: u64) -> io::Result<Vec<u8>> {
    let dir = fs::File::open(root)?;
    let fd = openat2(
        dir.as_fd(),
        rel,
        // Not blocked by a FIFO put in a regular file's place.
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )?;
    let mut f = fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!("{rel} is not a regular file")));
    }
    let mut out = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&mut f, max.saturating_add(1)), &mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{rel} is larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// The path by which `mount` reaches what `fd` is.
fn fd_path(fd: impl AsFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// Mounts `source` (of type `fstype`) on `rel` in the root (see
/// [`in_root`]); returns the target's fd (of what was there before).
fn mount_in(
    root: BorrowedFd<'_>,
    rel: &str,
    dir: bool,
    source: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    user_mount_in(root, &[], rel, dir, source, fstype, flags, data)
}

/// [`mount_in`] for a target the user or the image chose: refused when it
/// resolves to (or under) one of `special` (the root's `proc`, `dev` and
/// `sys`, as host paths: the init has not left the host's root yet).
#[allow(clippy::too_many_arguments)]
fn user_mount_in(
    root: BorrowedFd<'_>,
    special: &[String],
    rel: &str,
    dir: bool,
    source: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let target = in_root(root, rel, dir).map_err(|e| err(&format!("the container's {rel}"), e))?;
    let at = match special {
        [] => String::new(),
        _ => fs::read_link(fd_path(&target))?
            .to_string_lossy()
            .into_owned(),
    };
    if special
        .iter()
        .any(|s| at == *s || at.starts_with(&format!("{s}/")))
    {
        return Err(io::Error::other(format!(
            "the container's {rel} leads into its /proc, /dev or /sys (the image has a symlink \
             there): refusing to mount over it"
        )));
    }
    mount(Some(source), fd_path(&target).as_str(), fstype, flags, data)
        .map_err(|e| err(&format!("mounting {source} on the container's {rel}"), e))
}

/// Makes `rel` in the root read-only (a bind mount there).
fn readonly_in(root: BorrowedFd<'_>, rel: &str) -> io::Result<()> {
    let fd = in_root(root, rel, false)?;
    readonly(Path::new(&fd_path(&fd))).map_err(|e| err(&format!("making {rel} read-only"), e))
}

/// The container's namespaces and root; returns whom the command runs as.
fn setup(spec: &Spec, keep_fd: i32, dev: Option<OwnedFd>) -> io::Result<User> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.net_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| err("making the container's namespaces", e))?;
    let root = &spec.root;
    let none = None::<&str>;
    mount(
        Some(root),
        root,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| err(&format!("binding the root {}", root.display()), e))?;
    // Everything below is reached through this fd of the root, never by
    // a path into the image's tree.
    let rootfd = fs::File::open(root)?;
    let r = rootfd.as_fd();
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // /proc of the container's pid namespace.
    mount_in(r, "proc", true, "proc", Some("proc"), nosuid, none)?;
    harden::proc(in_root(r, "proc", true)?.as_fd())?;
    dev::mount(r, dev, spec.shm_size)?;
    dev::devices(r, &spec.devices)?;
    // /sys: its own with a network namespace of its own; otherwise the
    // host's, read-only.
    if spec.net_none || spec.net_private {
        mount_in(
            r,
            "sys",
            true,
            "sysfs",
            Some("sysfs"),
            nosuid | MsFlags::MS_RDONLY,
            none,
        )?;
    } else {
        mount_in(
            r,
            "sys",
            true,
            "/sys",
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )?;
        readonly_in(r, "sys")?;
    }
    harden::sys(in_root(r, "sys", true)?.as_fd())?;
    // What the user and the image name as mount targets must not lead
    // (an image's symlink, say /tmp -> /proc) onto what rcfs mounted for
    // the container's safety.
    let special: Vec<String> = ["proc", "dev", "sys"]
        .iter()
        .map(|d| format!("{}/{d}", root.display()))
        .collect();
    for (host, inside) in &spec.host_files {
        user_mount_in(
            r,
            &special,
            inside,
            false,
            &host.display().to_string(),
            none,
            MsFlags::MS_BIND,
            none,
        )?;
        readonly_in(r, inside)?;
    }
    for b in &spec.binds {
        user_mount_in(
            r,
            &special,
            &b.target,
            b.host.is_dir(),
            &b.host.display().to_string(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )?;
        if b.read_only {
            readonly_in(r, &b.target)?;
        }
    }
    let tmp_opts = "mode=1777".to_owned();
    let mut tmpfs: Vec<(&str, &str)> = spec
        .tmpfs
        .iter()
        .map(|(p, o)| (p.as_str(), o.as_str()))
        .collect();
    if spec.read_only {
        for p in ["/tmp", "/run", "/var/tmp"] {
            if !tmpfs.iter().any(|(t, _)| t.trim_end_matches('/') == p) {
                tmpfs.push((p, &tmp_opts));
            }
        }
    }
    for (path, opts) in tmpfs {
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let data: Vec<&str> = opts
            .split(',')
            .filter(|o| {
                if *o == "noexec" {
                    flags |= MsFlags::MS_NOEXEC;
                }
                !o.is_empty() && *o != "noexec"
            })
            .collect();
        let data = data.join(",");
        let data = if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        };
        user_mount_in(r, &special, path, true, "tmpfs", Some("tmpfs"), flags, data)?;
    }
    drop(rootfd);
    if spec.read_only {
        readonly(root).map_err(|e| err("making the root read-only", e))?;
    }
    nix::unistd::sethostname(&spec.hostname).map_err(|e| err("sethostname", e))?;
    // Into the root; the old one detached, so no host path stays reachable.
    nix::unistd::chdir(root).map_err(|e| err("chdir to the root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;
    // The user, in the image's files: this is its root now.
    let user = crate::user::in_root(&spec.user, Path::new("/"))
        .and_then(|u| crate::user::with_groups(u, &spec.group_add, Path::new("/")))
        .map_err(io::Error::other)?;
    fs::create_dir_all(&spec.cwd)
        .map_err(|e| err(&format!("making the working directory {}", spec.cwd), e))?;
    nix::unistd::chdir(spec.cwd.as_str()).map_err(|e| err(&format!("chdir to {}", spec.cwd), e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| err("no_new_privs", e))?;
    crate::close_fds_except(&[keep_fd]);
    Ok(user)
}

/// Remounts the bind mount at `p` read-only, keeping the flags the kernel
/// locks on a mount from another user namespace (it refuses to drop them).
/// A mount that cannot be made read-only is an error: what was meant to be
/// read-only must not quietly stay writable.
fn readonly(p: &Path) -> io::Result<()> {
    let keep = match nix::sys::statvfs::statvfs(p) {
        Ok(s) => {
            use nix::sys::statvfs::FsFlags;
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (a, b) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(a) {
                    m |= b;
                }
            }
            m
        }
        Err(_) => MsFlags::empty(),
    };
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>).map_err(io::Error::from)
}

/// In the command's process: its user, stdin and signals, its seccomp
/// filter, then exec.
pub(crate) fn exec(spec: &Spec, user: &User, tty: Option<OwnedFd>) -> ! {
    let _ = SigSet::empty().thread_set_mask();
    // A session of its own (the init's has no terminal either; as pid 1
    // the command is the init, which leads its session already); with -t,
    // the pty as its controlling terminal and its stdio.
    let leader = nix::unistd::getsid(None).is_ok_and(|s| s == nix::unistd::getpid());
    if !leader {
        if let Err(e) = nix::unistd::setsid() {
            eprintln!("rcfs: setsid: {e}");
            std::process::exit(EXIT_RCFS);
        }
    }
    if tty.is_none() {
        if let Err(e) = output_write_only() {
            eprintln!("rcfs: {e}");
            std::process::exit(EXIT_RCFS);
        }
    }
    if let Some(t) = tty {
        // SAFETY: TIOCSCTTY on our own tty fd.
        if unsafe { libc::ioctl(t.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
            eprintln!(
                "rcfs: cannot take the terminal: {}",
                io::Error::last_os_error()
            );
            std::process::exit(EXIT_RCFS);
        }
        for n in 0..3 {
            // SAFETY: dup2 onto stdio.
            unsafe { libc::dup2(t.as_raw_fd(), n) };
        }
        drop(t);
    } else if !spec.stdin {
        // Never the caller's stdin: without /dev/null, no start.
        let null = fs::File::open("/dev/null").and_then(|f| Ok(nix::unistd::dup2_stdin(f)?));
        if let Err(e) = null {
            eprintln!("rcfs: cannot give the command /dev/null as its stdin: {e}");
            std::process::exit(EXIT_RCFS);
        }
    }
    for (name, soft, hard) in &spec.rlimits {
        let set = rlimit_resource(name)
            .ok_or_else(|| io::Error::other(format!("no resource {name}")))
            .and_then(|r| Ok(nix::sys::resource::setrlimit(r, *soft, *hard)?));
        if let Err(e) = set {
            eprintln!("rcfs: --ulimit {name}={soft}:{hard}: {e}");
            std::process::exit(EXIT_RCFS);
        }
    }
    if let Err(e) = drop_capabilities(spec) {
        eprintln!("rcfs: cannot drop capabilities: {e}");
        std::process::exit(EXIT_RCFS);
    }
    if let Err(e) = set_groups(&user.groups) {
        eprintln!(
            "rcfs: cannot set the supplementary groups {:?}: {e}",
            user.groups
        );
        std::process::exit(EXIT_RCFS);
    }
    // Always, 0 too: `rcfs exec` into a keep-id container starts as the
    // user's own id there, not its root.
    if let Err(e) = nix::unistd::setgid(user.gid.into()) {
        eprintln!("rcfs: cannot become group {}: {e}", user.gid);
        std::process::exit(EXIT_RCFS);
    }
    if let Err(e) = nix::unistd::setuid(user.uid.into()) {
        eprintln!("rcfs: cannot become user {}: {e}", user.uid);
        std::process::exit(EXIT_RCFS);
    }
    // A change of ids clears the parent-death signal: set again, so that
    // a command that is pid 1 still dies with `rcfs run` (its mount's
    // server), taking the container with it.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let Some(cmd) = spec.args.first() else {
        eprintln!("rcfs: no command: the image has no entrypoint or cmd, and none was given");
        std::process::exit(EXIT_RCFS);
    };
    let path = find(cmd, &spec.env);
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.args.iter().map(|a| cstr(a)).collect();
    let mut envp: Vec<CString> = spec.env.iter().map(|a| cstr(a)).collect();
    // HOME, where the image and -e gave none: the user's, as podman sets it.
    if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
        envp.push(cstr(&format!("HOME={}", user.home)));
    }
    // Last: everything above may need what the filter denies (setgroups,
    // setuid, capabilities, chdir, mounts). no_new_privs is set (`setup`),
    // so no privilege is needed to load it; the profile must allow execve.
    if let Some(p) = &spec.seccomp {
        if let Err(e) = crate::seccomp::load(p) {
            eprintln!("rcfs: cannot load the seccomp filter: {e}");
            std::process::exit(EXIT_RCFS);
        }
    }
    let e = match path {
        Some(p) => nix::unistd::execve(&cstr(&p), &argv, &envp).unwrap_err(),
        None => nix::errno::Errno::ENOENT,
    };
    if e == nix::errno::Errno::ENOENT {
        eprintln!("rcfs: {cmd}: command not found");
        std::process::exit(EXIT_NOT_FOUND);
    }
    eprintln!("rcfs: cannot execute {cmd}: {e}");
    std::process::exit(EXIT_CANNOT_EXEC);
}

/// Without -t, the caller's stdout and stderr, when they are a terminal,
/// are the host's terminal, open for reading too (a terminal's stdio is one
/// read-write open file): the command could read the keystrokes meant for
/// the caller's shell from them. They are opened again write-only (through
/// /proc/self/fd, the same terminal, `O_NOCTTY`). A terminal that cannot
/// be opened again so fails the start: the command must not get the
/// read-write one.
fn output_write_only() -> io::Result<()> {
    for fd in [1, 2] {
        // SAFETY: isatty on an fd number.
        if unsafe { libc::isatty(fd) } != 1 {
            continue;
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(|e| {
                err(
                    &format!(
                        "the command's {} is a terminal that cannot be opened again \
                         write-only (so that the container cannot read from it); \
                         run with -t, or redirect it",
                        if fd == 1 { "stdout" } else { "stderr" }
                    ),
                    e,
                )
            })?;
        // SAFETY: dup2 of our new fd onto a stdio number.
        if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
            return Err(err("dup2", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The command's supplementary groups: exactly `groups`, none of the
/// caller's. In a user namespace that maps only the caller's own gid the
/// kernel denies setgroups (`/proc/self/setgroups` says "deny"): there the
/// groups stay the caller's, which the namespace does not map (they show
/// as the overflow gid, 65534), and that is all this can do.
fn set_groups(groups: &[u32]) -> io::Result<()> {
    let gids: Vec<nix::unistd::Gid> = groups.iter().map(|g| (*g).into()).collect();
    match nix::unistd::setgroups(&gids) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM)
            if fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny") =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `cmd` as exec finds it: itself when it has a `/`, else the first
/// regular file of that name in the env's `PATH`.
fn find(cmd: &str, env: &[String]) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_owned());
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| format!("{}/{cmd}", if d.is_empty() { "." } else { d }))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
}
