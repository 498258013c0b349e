//! The container's init: its namespaces and root, then the command as its
//! child (see the crate doc).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::{Spec, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RCFS};

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
pub const MOUNT_TARGETS: [&str; 5] = ["proc", "dev", "sys", "etc/resolv.conf", "etc/hosts"];

/// Sets up the container and runs the command; returns the exit code.
pub(crate) fn run(spec: &Spec, tty_sock: i32) -> i32 {
    if let Err(e) = setup(spec, tty_sock) {
        eprintln!("rcfs: cannot set up the container: {e}");
        return EXIT_RCFS;
    }
    // The terminal: a pty of the container's own devpts; the master goes
    // to `rcfs run`, the slave becomes the command's.
    let slave = if spec.tty {
        match terminal(tty_sock) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("rcfs: cannot make the container's terminal: {e}");
                return EXIT_RCFS;
            }
        }
    } else {
        None
    };
    // SAFETY: the socket is the init's, and done with.
    unsafe { libc::close(tty_sock) };
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
        Ok(ForkResult::Child) => exec(spec, slave),
        Ok(ForkResult::Parent { child }) => {
            // Only the command holds the terminal: it hangs up with it.
            drop(slave);
            child
        }
        Err(e) => {
            eprintln!("rcfs: fork: {e}");
            return EXIT_RCFS;
        }
    };
    supervise(child, &sigs)
}

/// Opens a pty in the container's `/dev/pts`, sends its master over the
/// unix socket `sock`, and returns its slave.
fn terminal(sock: i32) -> io::Result<OwnedFd> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
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
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock,
        &[io::IoSlice::new(b"t")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(slave)
}

/// Reaps every child, passes signals on to `child`; its exit code once it
/// is gone.
fn supervise(child: Pid, sigs: &SigSet) -> i32 {
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
pub fn read_in_root(root: &Path, rel: &str) -> io::Result<Vec<u8>> {
    let dir = fs::File::open(root)?;
    let fd = openat2(
        dir.as_fd(),
        rel,
        libc::O_RDONLY | libc::O_NOCTTY,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )?;
    let mut f = fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!("{rel} is not a regular file")));
    }
    let mut out = Vec::new();
    io::Read::read_to_end(&mut f, &mut out)?;
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
    let target = in_root(root, rel, dir).map_err(|e| err(&format!("the container's {rel}"), e))?;
    mount(Some(source), fd_path(&target).as_str(), fstype, flags, data)
        .map_err(|e| err(&format!("mounting {source} on the container's {rel}"), e))
}

/// Makes `rel` in the root read-only (a bind mount there).
fn readonly_in(root: BorrowedFd<'_>, rel: &str) -> io::Result<()> {
    let fd = in_root(root, rel, false)?;
    readonly(Path::new(&fd_path(&fd))).map_err(|e| err(&format!("making {rel} read-only"), e))
}

fn setup(spec: &Spec, keep_fd: i32) -> io::Result<()> {
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
    // /dev: a tmpfs with the host's harmless devices bound in.
    mount_in(
        r,
        "dev",
        true,
        "tmpfs",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = format!("/dev/{name}");
        mount_in(
            r,
            &format!("dev/{name}"),
            false,
            &host,
            none,
            MsFlags::MS_BIND,
            none,
        )?;
    }
    mount_in(
        r,
        "dev/pts",
        true,
        "devpts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_in(
        r,
        "dev/shm",
        true,
        "shm",
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    )?;
    let dev = in_root(r, "dev", true)?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        // In our own fresh tmpfs.
        nix::unistd::symlinkat(target, &dev, name).map_err(|e| err(&format!("/dev/{name}"), e))?;
    }
    drop(dev);
    // /sys: its own with a network namespace of its own; otherwise the
    // host's, read-only.
    if spec.net_none {
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
    for (host, inside) in &spec.host_files {
        mount_in(
            r,
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
        mount_in(
            r,
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
    drop(rootfd);
    nix::unistd::sethostname(&spec.hostname).map_err(|e| err("sethostname", e))?;
    // Into the root; the old one detached, so no host path stays reachable.
    nix::unistd::chdir(root).map_err(|e| err("chdir to the root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;
    fs::create_dir_all(&spec.cwd)
        .map_err(|e| err(&format!("making the working directory {}", spec.cwd), e))?;
    nix::unistd::chdir(spec.cwd.as_str()).map_err(|e| err(&format!("chdir to {}", spec.cwd), e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| err("no_new_privs", e))?;
    crate::close_fds_except(&[keep_fd]);
    Ok(())
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

/// The capabilities a container's command keeps (in its user namespace):
/// podman's default set, by number (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, SETFCAP).
const KEPT_CAPS: [libc::c_ulong; 11] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31];

/// Takes every capability but [`KEPT_CAPS`] out of the bounding set, so
/// the command (root of the container's user namespace, which would get
/// them all at exec) never has them. CAP_SYS_ADMIN above all: with it, the
/// container's root could unmount the read-only binds over `/proc/sys` and
/// `/sys` that its init made, and real root's container (identity-mapped)
/// would reach the host's sysctls again.
fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64 {
        if KEPT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel has
            }
            return Err(e);
        }
    }
    Ok(())
}

/// In the command's process: its user, stdin and signals, then exec.
fn exec(spec: &Spec, tty: Option<OwnedFd>) -> ! {
    let _ = SigSet::empty().thread_set_mask();
    if let Some(t) = tty {
        // A session of its own, with the pty as its controlling terminal
        // and its stdio.
        let _ = nix::unistd::setsid();
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
        if let Ok(f) = fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2_stdin(f);
        }
    }
    if let Err(e) = drop_capabilities() {
        eprintln!("rcfs: cannot drop capabilities: {e}");
        std::process::exit(EXIT_RCFS);
    }
    if spec.gid != 0 {
        if let Err(e) = nix::unistd::setgid(spec.gid.into()) {
            eprintln!("rcfs: cannot become group {}: {e}", spec.gid);
            std::process::exit(EXIT_RCFS);
        }
    }
    if spec.uid != 0 {
        if let Err(e) = nix::unistd::setuid(spec.uid.into()) {
            eprintln!("rcfs: cannot become user {}: {e}", spec.uid);
            std::process::exit(EXIT_RCFS);
        }
    }
    let Some(cmd) = spec.args.first() else {
        eprintln!("rcfs: no command: the image has no entrypoint or cmd, and none was given");
        std::process::exit(EXIT_RCFS);
    };
    let path = find(cmd, &spec.env);
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.args.iter().map(|a| cstr(a)).collect();
    let envp: Vec<CString> = spec.env.iter().map(|a| cstr(a)).collect();
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
