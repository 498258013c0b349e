//! The container's init: its namespaces and root, then the command as its
//! child (see the crate doc).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::{Spec, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RCFS};

/// Signals passed on to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Sets up the container and runs the command; returns the exit code.
pub(crate) fn run(spec: &Spec) -> i32 {
    if let Err(e) = setup(spec) {
        eprintln!("rcfs: cannot set up the container: {e}");
        return EXIT_RCFS;
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
        Ok(ForkResult::Child) => exec(spec),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("rcfs: fork: {e}");
            return EXIT_RCFS;
        }
    };
    supervise(child, &sigs)
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

fn mount_err(what: &str, target: &Path, e: nix::errno::Errno) -> io::Error {
    io::Error::other(format!("mounting {what} on {}: {e}", target.display()))
}

/// An empty file (or dir) at `p` to mount over, made if missing.
fn ensure_file(p: &Path) -> io::Result<()> {
    if p.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(p)
        .map(drop)
}

fn setup(spec: &Spec) -> io::Result<()> {
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
    .map_err(|e| mount_err("the root", root, e))?;
    // /proc of the container's pid namespace.
    let proc_ = root.join("proc");
    fs::create_dir_all(&proc_)?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc_, Some("proc"), nosuid, none)
        .map_err(|e| mount_err("proc", &proc_, e))?;
    // /dev: a tmpfs with the host's harmless devices bound in.
    let dev = root.join("dev");
    fs::create_dir_all(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| mount_err("tmpfs", &dev, e))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        ensure_file(&target)?;
        let host = Path::new("/dev").join(name);
        mount(Some(&host), &target, none, MsFlags::MS_BIND, none)
            .map_err(|e| mount_err(&host.display().to_string(), &target, e))?;
    }
    let pts = dev.join("pts");
    fs::create_dir_all(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| mount_err("devpts", &pts, e))?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    let shm = dev.join("shm");
    fs::create_dir_all(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| mount_err("tmpfs", &shm, e))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))?;
    }
    // /sys: its own with a network namespace of its own; otherwise the
    // host's, read-only.
    let sys = root.join("sys");
    fs::create_dir_all(&sys)?;
    if spec.net_none {
        mount(
            Some("sysfs"),
            &sys,
            Some("sysfs"),
            nosuid | MsFlags::MS_RDONLY,
            none,
        )
        .map_err(|e| mount_err("sysfs", &sys, e))?;
    } else {
        mount(
            Some("/sys"),
            &sys,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| mount_err("/sys", &sys, e))?;
        readonly(&sys);
    }
    for (host, inside) in &spec.host_files {
        let target = root.join(inside.trim_start_matches('/'));
        ensure_file(&target)?;
        mount(Some(host), &target, none, MsFlags::MS_BIND, none)
            .map_err(|e| mount_err(&host.display().to_string(), &target, e))?;
        readonly(&target);
    }
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
    crate::close_fds_except(&[]);
    Ok(())
}

/// Remounts the bind mount at `p` read-only, keeping the flags the kernel
/// locks on a mount from another user namespace (it refuses to drop them).
fn readonly(p: &Path) {
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
    if let Err(e) = mount(None::<&str>, p, None::<&str>, flags, None::<&str>) {
        eprintln!("rcfs: warning: {} stays writable: {e}", p.display());
    }
}

/// In the command's process: its user, stdin and signals, then exec.
fn exec(spec: &Spec) -> ! {
    let _ = SigSet::empty().thread_set_mask();
    if !spec.stdin {
        if let Ok(f) = fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2_stdin(f);
        }
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
