//! rcfs container runtime: the namespaces and the root around a command.
//!
//! The sequence (driven by `rcfs run`, see `cli/src/run.rs`):
//!
//! 1. [`enter_user_namespace`]: the `rcfs run` process of an ordinary user
//!    enters a user namespace in which it is root (the caller's uid mapped
//!    to 0, its subuid ranges to 1 and up): the one the user's [`keeper`]
//!    holds for all its containers, else a new one. Then a new mount
//!    namespace with private propagation. (Real root stays in the host's
//!    user namespace: [`enter_mount_namespace`].) Nothing it mounts from here on is seen by the host, and
//!    all of it goes when its last process does.
//! 2. [`Container::fork`]: still single-threaded, it forks the container's
//!    init, pid 1 of a new pid namespace. The init waits.
//! 3. The `rcfs run` process, which stays outside that pid namespace, mounts
//!    the image's union as the container's root (the fs daemon: threads of
//!    this process) and sends the init the [`Spec`].
//! 4. The init ([`init`]) makes its own mount, uts and ipc namespaces (and a
//!    network one with no interfaces for `--net none`), mounts `/proc`,
//!    `/dev`, `/dev/pts`, `/dev/shm`, `/sys` and the host's `resolv.conf`
//!    and `hosts` into the root, `pivot_root`s into it and detaches the old
//!    root, sets the hostname and `no_new_privs`, and runs the command as
//!    its child: it reaps every zombie, forwards SIGINT, SIGTERM, SIGHUP,
//!    SIGQUIT, SIGUSR1 and SIGUSR2 to it, and exits with its exit code
//!    (128+N when signal N killed it). It dies with the `rcfs run` process
//!    (`PR_SET_PDEATHSIG`), and the kernel then kills the rest of the pid
//!    namespace.
//!
//! Exit codes follow podman: 125 when rcfs failed, 126 when the command
//! could not be executed, 127 when it was not found.

pub mod cgroup;
mod init;
pub mod keeper;
mod ns;
pub mod threads;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use init::{read_in_root, FORWARDED, MOUNT_TARGETS};
pub use ns::{enter_mount_namespace, enter_user_namespace, IdMap};

/// rcfs itself failed.
pub const EXIT_RCFS: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// What the container's init needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The mounted root (in the `rcfs run` process's mount namespace).
    pub root: PathBuf,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container (made if missing).
    pub cwd: String,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// No network: a new network namespace with only a loopback (down).
    pub net_none: bool,
    /// Keep stdin (`-i`); otherwise the command reads /dev/null.
    pub stdin: bool,
    /// Host files bound read-only over files of the root, as (host path,
    /// path in the container): `/etc/resolv.conf`, `/etc/hosts`.
    pub host_files: Vec<(PathBuf, String)>,
    /// The user's `-v HOST:CTR[:ro]` binds, in order.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// A terminal (`-t`): the command gets the slave of a pty of the
    /// container's devpts; the master goes to `rcfs run` (see
    /// [`Container::terminal`]).
    #[serde(default)]
    pub tty: bool,
}

/// A host file or directory bound into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    /// Absolute, inside the container.
    pub target: String,
    pub read_only: bool,
}

impl Bind {
    /// `HOST:CTR[:ro|:rw]`, as podman's `-v`; the host path must exist.
    pub fn parse(v: &str) -> Result<Bind, String> {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, read_only) = match parts[..] {
            [h, c] => (h, c, false),
            [h, c, "ro"] => (h, c, true),
            [h, c, "rw"] => (h, c, false),
            _ => return Err(format!("invalid volume {v:?}: use HOST:CONTAINER[:ro]")),
        };
        if !host.starts_with('/') || !target.starts_with('/') {
            return Err(format!("invalid volume {v:?}: both paths must be absolute"));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(format!("invalid volume {v:?}: the container path has '..'"));
        }
        let host = PathBuf::from(host);
        if let Err(e) = host.metadata() {
            return Err(format!(
                "volume {v:?}: the host path {}: {e}",
                host.display()
            ));
        }
        Ok(Bind {
            host,
            target: target.to_owned(),
            read_only,
        })
    }
}

/// The container's init, forked and waiting for its [`Spec`].
pub struct Container {
    pub pid: Pid,
    go: Option<OwnedFd>,
    /// Where the init sends a terminal's master.
    tty_sock: OwnedFd,
}

impl Container {
    /// Forks the init as pid 1 of a new pid namespace; with `own_user_ns`
    /// (real root, which stays in the host's user namespace: see
    /// [`enter_mount_namespace`]), in a new user namespace too, every id
    /// mapped to itself. Fails unless the process has one thread (the
    /// child runs Rust code after the fork).
    pub fn fork(own_user_ns: bool) -> io::Result<Container> {
        threads::ensure_single("forking the container's init")?;
        let (rd, wr) = nix::unistd::pipe()?;
        let (rd_fd, wr_fd) = (rd.as_raw_fd(), wr.as_raw_fd());
        let (tty_sock, tty_peer) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let (sock_fd, peer_fd) = (tty_sock.as_raw_fd(), tty_peer.as_raw_fd());
        // The init runs on a stack of its own, in a copy of this process
        // (no CLONE_VM), as pid 1 of a new pid namespace. (A new pid
        // namespace by unshare would keep this process from making
        // threads, which the fs daemon needs.)
        let mut stack = vec![0u8; 1 << 20];
        let child = Box::new(move || -> isize {
            // Dies with `rcfs run` (had that happened already, the pipe
            // below would say so: it would end empty).
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            // SAFETY: this copy of the write end is the init's, unused; it
            // must go for the read below to end.
            unsafe { libc::close(wr_fd) };
            // SAFETY: likewise `rcfs run`'s end of the terminal socket.
            unsafe { libc::close(sock_fd) };
            // SAFETY: this copy of the read end is the init's alone.
            let mut f = unsafe { std::fs::File::from_raw_fd(rd_fd) };
            let mut text = String::new();
            if f.read_to_string(&mut text).is_err() || text.is_empty() {
                // `rcfs run` gave up before the container started.
                return EXIT_RCFS as isize;
            }
            drop(f);
            let code = match serde_json::from_str::<Spec>(&text) {
                Ok(spec) => init::run(&spec, peer_fd),
                Err(e) => {
                    eprintln!("rcfs: bad container spec: {e}");
                    EXIT_RCFS
                }
            };
            std::process::exit(code);
        });
        // SAFETY: a single thread (checked above); the child runs in its
        // own copy of memory, on `stack`.
        let mut flags = nix::sched::CloneFlags::CLONE_NEWPID;
        if own_user_ns {
            flags |= nix::sched::CloneFlags::CLONE_NEWUSER;
        }
        let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|e| {
                let hint = if own_user_ns {
                    " (a user namespace among them: user namespaces may be disabled or all \
                     used, see sysctl user.max_user_namespaces)"
                } else {
                    ""
                };
                io::Error::other(format!("cannot make the container's namespaces: {e}{hint}"))
            })?;
        drop(rd);
        drop(tty_peer);
        if own_user_ns {
            // The init waits for its spec meanwhile; without maps, closing
            // the pipe lets it go (EXIT_RCFS).
            if let Err(e) = ns::write_maps(pid, IdMap::Identity) {
                drop(wr);
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(e);
            }
        }
        Ok(Container {
            pid,
            go: Some(wr),
            tty_sock,
        })
    }

    /// Lets the init go on with `spec`.
    pub fn start(&mut self, spec: &Spec) -> io::Result<()> {
        let fd = self
            .go
            .take()
            .ok_or_else(|| io::Error::other("the container was started already"))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(&serde_json::to_vec(spec).map_err(io::Error::other)?)?;
        Ok(())
    }

    /// The master of the container's terminal, once the init has made it
    /// (after [`Container::start`] with [`Spec::tty`]); `None` if the init
    /// failed first.
    pub fn terminal(&self) -> io::Result<Option<OwnedFd>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut buf = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            self.tty_sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: a new fd the kernel passed us.
                    return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Ok(None)
    }

    /// Lets the init go without a spec: it exits ([`EXIT_RCFS`]).
    pub fn start_never(&mut self) {
        self.go.take();
    }

    /// The init's exit code: its own, or 128+N when signal N killed it.
    pub fn wait(&self) -> io::Result<i32> {
        use nix::sys::wait::{waitpid, WaitStatus};
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Closes every fd above stderr except `keep` (the command must not
/// inherit the store's or the daemon's fds).
pub(crate) fn close_fds_except(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: no live object of the init owns these any more (the one
        // of the listing is closed already, which makes this EBADF).
        unsafe { libc::close(fd) };
    }
}
