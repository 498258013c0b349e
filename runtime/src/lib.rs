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
//! 4. The init ([`init`]) first leaves everything of its caller's it need
//!    not keep: a session of its own (no controlling terminal of the
//!    host), a new anonymous session keyring, not dumpable. It makes its
//!    own mount, uts and ipc namespaces (and a network one with no
//!    interfaces for `--net none`), mounts `/proc`, `/dev` (real root's
//!    with device nodes `rcfs run` made before the fork, an ordinary
//!    user's with read-only binds of the host's: `init::dev`), `/dev/pts`,
//!    `/dev/shm`, `/dev/mqueue`, `/sys` and the host's `resolv.conf` and
//!    `hosts` into the root, `pivot_root`s into it and detaches the old
//!    root, resolves the user in the image's `/etc/passwd` and
//!    `/etc/group` (`user`), sets the hostname and `no_new_privs`, tells
//!    `rcfs run` it is ready, and becomes the command: pid 1 of the
//!    container, as in podman (the image's groups for its user, podman's
//!    capabilities; a stdout or stderr that is the caller's terminal
//!    write-only; the seccomp filter, loaded last before execve:
//!    [`seccomp`]). With [`Spec::init`] (`--init`) it runs the command as
//!    its child instead (in a session of its own), keeps CAP_KILL alone,
//!    reaps every zombie, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//!    SIGUSR1 and SIGUSR2 to the command, and exits with its exit code
//!    (128+N when signal N killed it). Either dies with the `rcfs run`
//!    process (`PR_SET_PDEATHSIG`, set again after the change of user), and
//!    the kernel then kills the rest of the pid namespace.
//!
//! Exit codes follow podman: 125 when rcfs failed, 126 when the command
//! could not be executed, 127 when it was not found.

pub mod cgroup;
pub mod exec;
mod init;
pub mod keeper;
mod ns;
pub mod seccomp;
pub mod threads;
mod user;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use init::{read_in_root, rlimit_resource, FORWARDED, MOUNT_TARGETS};
pub use ns::{enter_mount_namespace, enter_user_namespace, IdMap};
pub use user::MAX_ID_FILE;

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
    /// Whom the command runs as: `UID[:GID]` or `USER[:GROUP]`, resolved
    /// by the init in the image's `/etc/passwd` and `/etc/group` (see
    /// `user`); its supplementary groups are the image's, none of the
    /// caller's.
    pub user: String,
    /// No network: a new network namespace with only a loopback (down).
    pub net_none: bool,
    /// A private network: the init was forked into a network namespace
    /// of its own ([`Container::fork_mapped`]), which `rcfs run` connects
    /// to the host's through pasta.
    #[serde(default)]
    pub net_private: bool,
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
    /// The command's seccomp filter: the BPF program of its profile
    /// ([`seccomp::program`]; `None`: unconfined), loaded by the command's
    /// process right before it execs. In base64 in the spec's JSON (the
    /// program of podman's profile is 11 KB: as a JSON array of numbers it
    /// took the init longer to read than the rest of its spec).
    #[serde(default, with = "base64_bytes")]
    pub seccomp: Option<Vec<u8>>,
    /// `--init`: the init stays pid 1, reaping and passing signals on, and
    /// runs the command as its child (podman's `--init`). Otherwise the
    /// init execs the command, which is then pid 1 itself, as in podman
    /// and docker: it gets the signals sent to the container, and those
    /// it has no handler for (SIGTERM, SIGINT of a shell) do nothing.
    #[serde(default)]
    pub init: bool,
    /// The command's capabilities (`CAP_…` names; `--cap-add`,
    /// `--cap-drop`); `None`: podman's default set.
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    /// Groups added to the user's (`--group-add`: gids or image group names).
    #[serde(default)]
    pub group_add: Vec<String>,
    /// The root read-only (`--read-only`), with tmpfs on `/tmp`, `/run` and
    /// `/var/tmp` as podman does.
    #[serde(default)]
    pub read_only: bool,
    /// tmpfs mounts (`--tmpfs PATH[:OPTIONS]`): (path, mount options).
    #[serde(default)]
    pub tmpfs: Vec<(String, String)>,
    /// Resource limits of the command (`--ulimit`): (name as `ulimit`
    /// takes it, e.g. `nofile`; soft; hard).
    #[serde(default)]
    pub rlimits: Vec<(String, u64, u64)>,
    /// Host devices bound into the container's `/dev` (`--device`).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// After saying it is set up, the init waits for [`Container::go`]
    /// before it starts the command (the container's network is connected
    /// meanwhile).
    #[serde(default)]
    pub wait_go: bool,
    /// The size of `/dev/shm` in bytes (`--shm-size`; 64 MiB without).
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// Whether this is real root: uid 0 with every id its own (a user is root
/// of a namespace mapping fewer, as in `rcfs run` after it entered one).
pub fn real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// A host device in the container (`--device HOST[:CTR][:PERMS]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub host: PathBuf,
    /// Where in the container: a path under `/dev`.
    pub target: String,
}

impl Device {
    /// `HOST[:CTR][:PERMS]`, as podman's `--device`: HOST a character or
    /// block device, CTR under `/dev` (HOST's path without it), PERMS
    /// `rw` or `rwm`: rcfs has no device cgroup to hold the container to
    /// less than the host lets its user do (podman's rootless neither).
    pub fn parse(v: &str) -> Result<Device, String> {
        let parts: Vec<&str> = v.split(':').collect();
        let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
        let (host, target, perms) = match parts[..] {
            [h] => (h, h, "rwm"),
            [h, p] if perms_ok(p) => (h, h, p),
            [h, c] => (h, c, "rwm"),
            [h, c, p] if perms_ok(p) => (h, c, p),
            _ => {
                return Err(format!(
                    "invalid --device {v:?}: give HOST[:CONTAINER][:rwm]"
                ))
            }
        };
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !host.starts_with('/') {
            return Err(format!(
                "invalid --device {v:?}: give the host path whole (absolute)"
            ));
        }
        // Real root binds what the path names when the container starts:
        // not a path another user could swap (a dir others may write).
        let parent = std::path::Path::new(host)
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        if real_root()
            && std::fs::metadata(parent).is_ok_and(|m| m.mode() & 0o022 != 0 || m.uid() != 0)
        {
            return Err(format!(
                "--device {v:?}: {} is writable by others or not root's: a device there could be \
                 swapped before the container starts",
                parent.display()
            ));
        }
        match std::fs::metadata(host) {
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => {}
            Ok(_) => return Err(format!("invalid --device {v:?}: {host} is not a device")),
            Err(e) => return Err(format!("invalid --device {v:?}: {host}: {e}")),
        }
        if !target.starts_with("/dev/") || target.split('/').any(|c| c == "..") {
            return Err(format!(
                "invalid --device {v:?}: the container path must be under /dev, without '..'"
            ));
        }
        if !perms.contains('r') || !perms.contains('w') {
            return Err(format!(
                "--device {v:?}: rcfs cannot limit a device to {perms:?} (it has no device \
                 cgroup): give rw or rwm, or leave the permissions out"
            ));
        }
        Ok(Device {
            host: PathBuf::from(host),
            target: target.to_owned(),
        })
    }
}

/// `Option<Vec<u8>>` as an optional base64 string.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&B64.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| B64.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
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
    /// Where the init says it is set up (with a terminal's master).
    tty_sock: OwnedFd,
    /// The master of the container's terminal, once the init sent it.
    master: Option<OwnedFd>,
}

impl Container {
    /// Forks the init as pid 1 of a new pid namespace; with `own_user_ns`
    /// (real root, which stays in the host's user namespace: see
    /// [`enter_mount_namespace`]), in a new user namespace too, every id
    /// mapped to itself. Fails unless the process has one thread (the
    /// child runs Rust code after the fork).
    pub fn fork(own_user_ns: bool) -> io::Result<Container> {
        Container::fork_mapped(own_user_ns.then_some(IdMap::Identity), false)
    }

    /// [`Container::fork`], the init in a new user namespace mapped as
    /// `map` when there is one: [`IdMap::Identity`] for real root,
    /// [`IdMap::KeepId`] for `--userns=keep-id` (nested in the user's own).
    /// With `new_net`, in a new network namespace too (see
    /// [`Spec::net_private`]).
    pub fn fork_mapped(map: Option<IdMap>, new_net: bool) -> io::Result<Container> {
        threads::ensure_single("forking the container's init")?;
        let own_user_ns = map.is_some();
        // Real root's /dev, made here in the host's user namespace, where
        // device nodes may be made (see `init::dev`).
        let dev = if map == Some(IdMap::Identity) {
            init::dev::prepare()?
        } else {
            None
        };
        let dev_fd = dev.as_ref().map(|d| d.as_raw_fd());
        // Close-on-exec: no program `rcfs run` starts before the spec is
        // written (pasta) may hold the write end, or the init never reads
        // the end of it.
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
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
            // SAFETY: the init's copy of the /dev tmpfs's fd, its alone.
            let dev = dev_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            let code = match serde_json::from_str::<Spec>(&text) {
                Ok(spec) => init::run(&spec, peer_fd, dev),
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
        if new_net {
            flags |= nix::sched::CloneFlags::CLONE_NEWNET;
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
        drop(dev);
        if own_user_ns {
            // The init waits for its spec meanwhile; without maps, closing
            // the pipe lets it go (EXIT_RCFS).
            if let Err(e) = ns::write_maps(pid, map.unwrap_or(IdMap::Identity)) {
                drop(wr);
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(e);
            }
        }
        Ok(Container {
            pid,
            go: Some(wr),
            tty_sock,
            master: None,
        })
    }

    /// Lets the init go on with `spec`, and waits until it has set the
    /// container up (its namespaces, root and user resolved; the command
    /// not started yet). An error when the init failed: it said why on
    /// stderr, and exits with [`EXIT_RCFS`].
    pub fn start(&mut self, spec: &Spec) -> io::Result<()> {
        let fd = self
            .go
            .take()
            .ok_or_else(|| io::Error::other("the container was started already"))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(&serde_json::to_vec(spec).map_err(io::Error::other)?)?;
        drop(f);
        match self.ready()? {
            Some(master) => {
                self.master = master;
                Ok(())
            }
            None => Err(io::Error::other(
                "the container could not be set up (the reason is above)",
            )),
        }
    }

    /// The init's word that it is set up, with the terminal's master when
    /// it made one; `None` if it failed first (it closed the socket).
    fn ready(&self) -> io::Result<Option<Option<OwnedFd>>> {
        receive_ready(&self.tty_sock)
    }

    /// Lets an init started with [`Spec::wait_go`] start the command.
    pub fn go(&self) -> io::Result<()> {
        nix::unistd::write(&self.tty_sock, b"g")?;
        Ok(())
    }

    /// The master of the container's terminal (after [`Container::start`]
    /// with [`Spec::tty`]).
    pub fn terminal(&mut self) -> io::Result<Option<OwnedFd>> {
        Ok(self.master.take())
    }

    /// Lets the init go without a spec: it exits ([`EXIT_RCFS`]).
    pub fn start_never(&mut self) {
        self.go.take();
    }

    /// The init's exit code: its own, or 128+N when signal N killed it.
    pub fn wait(&self) -> io::Result<i32> {
        wait_for(self.pid)
    }

    /// Makes the container die with this process, whatever its pid 1
    /// does: the parent-death signal the init is given goes when a command
    /// that is pid 1 changes its uid (`gosu`, `su-exec`). A small watcher
    /// process, forked here, holds a pidfd of the init and the read end of
    /// a pipe whose only write end this process keeps; when this process
    /// is gone (the pipe ends), it kills the init, and the kernel the rest
    /// of its pid namespace. Call while single-threaded, right after
    /// [`Container::fork`]; returns the pipe's write end, to keep for as
    /// long as the container runs.
    pub fn watch(&self) -> io::Result<OwnedFd> {
        threads::ensure_single("starting the container's watcher")?;
        // SAFETY: pidfd_open with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid.as_raw(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd, the init's (an unreaped child of ours).
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: one thread (checked above).
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(wr);
                let _ = nix::unistd::setsid();
                if let Ok(null) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                {
                    for n in 0..3 {
                        // SAFETY: dup2 onto our stdio numbers.
                        unsafe { libc::dup2(null.as_raw_fd(), n) };
                    }
                }
                close_fds_except(&[pidfd.as_raw_fd(), rd.as_raw_fd()]);
                // SAFETY: prctl with a C string of at most 16 bytes.
                unsafe { libc::prctl(libc::PR_SET_NAME, c"rcfs-watch".as_ptr(), 0, 0, 0) };
                // Blocks until every write end is closed: this process's.
                let mut b = [0u8; 1];
                while matches!(
                    nix::unistd::read(&rd, &mut b),
                    Err(nix::errno::Errno::EINTR)
                ) {}
                // SAFETY: pidfd_send_signal on our pidfd; ESRCH once the
                // init has ended, which is all right.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                std::process::exit(0);
            }
            nix::unistd::ForkResult::Parent { .. } => Ok(wr),
        }
    }
}

/// The exit code of the child `pid`: its own, or 128+N when signal N
/// killed it.
pub(crate) fn wait_for(pid: Pid) -> io::Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The word of a process set up to exec (the init, or `rcfs exec`'s
/// command) on `sock`, with its terminal's master when it made one; `None`
/// if it failed first (it closed the socket).
pub(crate) fn receive_ready(sock: &OwnedFd) -> io::Result<Option<Option<OwnedFd>>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut master = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: a new fd the kernel passed us.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                master.get_or_insert(fd);
            }
        }
    }
    Ok(Some(master))
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

#[cfg(test)]
mod tests {
    use super::Spec;

    /// The seccomp program goes to the init as base64 and comes back the
    /// same; no program stays none.
    #[test]
    fn the_seccomp_program_crosses_to_the_init_intact() {
        let program: Vec<u8> = (0..=255u8).cycle().take(11_000).collect();
        let json = serde_json::json!({
            "root": "/r", "args": ["/bin/true"], "env": [], "cwd": "/", "hostname": "h",
            "user": "0", "net_none": false, "stdin": false, "host_files": [],
        });
        let mut spec: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(spec.seccomp, None);
        spec.seccomp = Some(program.clone());
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            text.len() < program.len() * 3 / 2 + 400,
            "{} bytes of JSON",
            text.len()
        );
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.seccomp, Some(program));
        spec.seccomp = None;
        let back: Spec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back.seccomp, None);
    }
}
