//! A command in a running container (`rcfs exec`): this process forks a
//! helper that joins the container's namespaces (their fds, which the
//! container's `rcfs run` opened while its pid 1 was its unreaped child)
//! and its cgroups, and forks the command there, in the container's pid
//! namespace; the helper reaps it, passes signals on and exits with its
//! code. The command is set up as the container's own command is (see
//! [`crate::init`]): a session and keyring of its own, its user's groups,
//! podman's capabilities, `no_new_privs`, the container's seccomp filter,
//! a stdout or stderr that is the caller's terminal write-only, and with
//! `-t` a pty of the container's devpts.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult, Pid};

use crate::{init, threads, Spec, EXIT_RCFS};

/// The namespaces a container has, by their `/proc/PID/ns` names, in the
/// order they are joined (the user namespace first: it gives the rights
/// to join the others).
pub const NAMESPACES: [&str; 7] = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"];

fn flag(kind: &str) -> Option<CloneFlags> {
    Some(match kind {
        "user" => CloneFlags::CLONE_NEWUSER,
        "mnt" => CloneFlags::CLONE_NEWNS,
        "pid" => CloneFlags::CLONE_NEWPID,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "net" => CloneFlags::CLONE_NEWNET,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        _ => return None,
    })
}

/// A command started in a container.
pub struct Exec {
    /// The helper's pid (in this process's pid namespace).
    pub pid: Pid,
    /// The command's terminal's master, with `spec.tty`.
    pub master: Option<OwnedFd>,
}

impl Exec {
    /// The command's exit code (128+N when signal N killed it).
    pub fn wait(&self) -> io::Result<i32> {
        crate::wait_for(self.pid)
    }
}

/// Starts `spec`'s command in the container whose namespaces are `ns`
/// (name, fd; see [`NAMESPACES`]), in the cgroups whose `cgroup.procs`
/// are open in `cgroups`. Returns once the command is set up to exec (an
/// error if it could not be: the helper said why on stderr). Fails unless
/// this process has one thread.
pub fn start(ns: &[(String, OwnedFd)], cgroups: &[OwnedFd], spec: &Spec) -> io::Result<Exec> {
    threads::ensure_single("joining a container")?;
    let (sock, peer) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: one thread (checked above).
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(sock);
            std::process::exit(helper(ns, cgroups, spec, peer))
        }
        ForkResult::Parent { child } => {
            drop(peer);
            match crate::receive_ready(&sock)? {
                Some(master) => Ok(Exec { pid: child, master }),
                None => {
                    let _ = crate::wait_for(child);
                    Err(io::Error::other(
                        "the command could not be started in the container (the reason is above)",
                    ))
                }
            }
        }
    }
}

/// Whether the namespace `fd` is the one of kind `kind` this process is in
/// (asked before any is joined: in the container's mount namespace,
/// `/proc` is the container's, where this process has no `self`).
fn ours(kind: &str, fd: &OwnedFd) -> bool {
    match (
        nix::sys::stat::fstat(fd),
        nix::sys::stat::stat(format!("/proc/self/ns/{kind}").as_str()),
    ) {
        (Ok(theirs), Ok(mine)) => theirs.st_ino == mine.st_ino && theirs.st_dev == mine.st_dev,
        _ => false,
    }
}

/// The helper: joins, forks the command, reaps it; its exit code.
fn helper(ns: &[(String, OwnedFd)], cgroups: &[OwnedFd], spec: &Spec, sock: OwnedFd) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Nothing of the caller's, before anything of the container's: a
    // session of its own, a new keyring, not dumpable (inherited by the
    // command's process, so no container process can ptrace it or take
    // its fds while it is set up in the container's pid namespace).
    if let Err(e) = init::detach_from_caller() {
        eprintln!("rcfs exec: cannot leave the caller's session: {e}");
        return EXIT_RCFS;
    }
    // Joining one's own namespace is refused for some kinds, and needs
    // rights over it for others: the same one is left as it is.
    let join: Vec<(&str, &OwnedFd)> = NAMESPACES
        .iter()
        .filter_map(|kind| {
            let (_, fd) = ns.iter().find(|(k, _)| k == kind)?;
            (!ours(kind, fd)).then_some((*kind, fd))
        })
        .collect();
    for (kind, fd) in join {
        if let Err(e) = setns(fd.as_fd(), flag(kind).unwrap_or(CloneFlags::empty())) {
            eprintln!("rcfs exec: cannot join the container's {kind} namespace: {e}");
            return EXIT_RCFS;
        }
    }
    let me = std::process::id().to_string();
    for c in cgroups {
        if let Err(e) = nix::unistd::write(c, me.as_bytes()) {
            eprintln!("rcfs exec: cannot join the container's cgroup: {e}");
            return EXIT_RCFS;
        }
    }
    let mut sigs = SigSet::empty();
    for s in init::FORWARDED {
        sigs.add(s);
    }
    sigs.add(Signal::SIGCHLD);
    if let Err(e) = sigs.thread_block() {
        eprintln!("rcfs exec: cannot block signals: {e}");
        return EXIT_RCFS;
    }
    // SAFETY: one thread (the parent had one).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => command(spec, sock),
        Ok(ForkResult::Parent { child }) => {
            drop(sock);
            // Nothing of rcfs exec's above stdio stays here (with -i, a
            // write end of the command's stdin pipe would keep it from
            // ever ending). By close_range: this process has no /proc of
            // its own in the container's mount namespace.
            // SAFETY: close_range with integer arguments.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            init::supervise(child, &sigs)
        }
        Err(e) => {
            eprintln!("rcfs exec: fork: {e}");
            EXIT_RCFS
        }
    }
}

/// The command's process, in the container's pid namespace.
fn command(spec: &Spec, sock: OwnedFd) -> ! {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("rcfs exec: {what}: {e}");
        std::process::exit(EXIT_RCFS)
    };
    // SAFETY: prctl with integer arguments (not dumpable, as the helper).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The container's root is ours since the mount namespace was joined.
    let root = std::path::Path::new("/");
    let user = crate::user::in_root(&spec.user, root)
        .and_then(|u| crate::user::with_groups(u, &spec.group_add, root))
        .unwrap_or_else(|e| fail("no such user or group in the container", &e));
    if let Err(e) = nix::unistd::chdir(spec.cwd.as_str()) {
        fail(
            &format!("cannot change to the working directory {}", spec.cwd),
            &e,
        );
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        fail("no_new_privs", &e);
    }
    let (master, slave) = if spec.tty {
        match init::terminal() {
            Ok((m, s)) => (Some(m), Some(s)),
            Err(e) => fail("cannot make a terminal", &e),
        }
    } else {
        (None, None)
    };
    if let Err(e) = init::ready(sock.as_raw_fd(), master) {
        fail("cannot tell rcfs exec the command is ready", &e);
    }
    drop(sock);
    crate::close_fds_except(&slave.iter().map(|s| s.as_raw_fd()).collect::<Vec<_>>());
    init::exec(spec, &user, slave)
}
