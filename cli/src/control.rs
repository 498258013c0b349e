//! A running container's control socket, and `rcfs kill`, `stop`, `wait`.
//!
//! The `rcfs run` of a container (or its monitor, with `-d`) listens on
//! `containers/NAME/ctl`, a unix socket in the container's 0700 dir, and
//! answers `kill N` by sending signal N to the container's pid 1. It signals
//! through a pidfd opened while the init was its unreaped child, so a
//! request that comes after the container ended can never reach another
//! process that got the pid. Only a client of the same uid (or root) is
//! answered. The socket is reached through the dir's fd
//! (`/proc/self/fd/N/ctl`): a store path can be longer than a socket
//! address may be.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use rcfs_fs::image::store::Store;
use rcfs_fs::sys;

/// A signal by name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse_signal(v: &str) -> Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr;
    if let Ok(n) = v.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| format!("no signal {n}"));
    }
    let up = v.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&full).map_err(|_| format!("no signal {v:?}"))
}

/// The socket's name in the container dir.
pub const SOCKET: &str = "ctl";

fn path_in(dir: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

/// A pidfd of `pid`, which must be an unreaped child of this process (then
/// it is that process for as long as the fd lives).
pub fn pidfd(pid: nix::unistd::Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts answering control requests for the container whose dir is `dir`
/// and whose pid 1 `init` is (a pidfd; `pid` its pid, an unreaped child of
/// this process), in cgroups `cgroups`, in a thread, for the life of the
/// process. Failing to listen costs only the control.
pub fn serve(
    dir: BorrowedFd<'_>,
    init: OwnedFd,
    pid: nix::unistd::Pid,
    cgroups: Vec<std::path::PathBuf>,
) {
    let path = path_in(dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            log::warn!(
                "no control socket for this container (rcfs stop and kill will not reach it): {e}"
            );
            return;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    let _ = std::thread::Builder::new()
        .name("rcfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(c) = conn else { continue };
                let peer =
                    nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials);
                if !peer.is_ok_and(|p| p.uid() == me || p.uid() == 0) {
                    continue;
                }
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&c).take(64).read_line(&mut line).is_err() {
                    continue;
                }
                if line.trim() == "join" {
                    if let Err(e) = send_join(&c, init.as_fd(), pid, &cgroups) {
                        let _ = (&c).write_all(format!("error {e}\n").as_bytes());
                    }
                    continue;
                }
                let answer = match line.trim().strip_prefix("kill ").map(str::parse::<i32>) {
                    Some(Ok(sig)) if Signal::try_from(sig).is_ok() => {
                        match send_signal(init.as_fd(), sig) {
                            Ok(()) => "ok\n".to_owned(),
                            Err(e) => format!("error {e}\n"),
                        }
                    }
                    _ => "error unknown request\n".to_owned(),
                };
                let _ = (&c).write_all(answer.as_bytes());
            }
        });
}

/// Sends `sig` to the running container `name`'s pid 1.
fn signal(store: &Store, name: &str, sig: Signal) -> Result<()> {
    let dir = crate::containers::open(store, name)?;
    let (_, running) = crate::containers::load(store, name)?;
    if !running {
        bail!("container {name} is not running");
    }
    let mut c = UnixStream::connect(path_in(dir.as_fd()))
        .with_context(|| format!("cannot reach container {name}'s rcfs (its control socket)"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(c, "kill {}", sig as i32)?;
    let mut answer = String::new();
    BufReader::new(&c).take(256).read_line(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(()),
        a => bail!(
            "container {name}: signal {sig} not sent: {}",
            a.strip_prefix("error ").unwrap_or(a)
        ),
    }
}

/// The mark `rcfs stop` and `kill` leave in a container's dir: its
/// restart policy does not start it again.
const STOPPED: &str = "stopped";

/// Marks the container `name` stopped by its user (see [`STOPPED`]).
fn mark_stopped(store: &Store, name: &str) -> Result<()> {
    let dir = crate::containers::open(store, name)?;
    sys::open_at(
        dir.as_fd(),
        STOPPED.as_ref(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW,
        0o600,
    )
    .with_context(|| format!("cannot mark container {name} stopped"))?;
    Ok(())
}

/// Whether `rcfs stop` or `kill` stopped the container `name` since it was
/// (re)started by its user.
pub fn stopped_by_user(store: &Store, name: &str) -> bool {
    crate::containers::open(store, name).is_ok_and(|dir| {
        nix::sys::stat::fstatat(
            dir.as_fd(),
            STOPPED,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    })
}

/// Takes the mark of [`stopped_by_user`] away: a user started it.
pub fn clear_stopped(store: &Store, name: &str) {
    if let Ok(dir) = crate::containers::open(store, name) {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            STOPPED,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// `rcfs kill [-s SIG] NAME...`.
pub fn kill(store: &Store, names: &[String], sig: Signal) -> Result<()> {
    for n in names {
        mark_stopped(store, n)?;
        signal(store, n, sig)?;
        println!("{n}");
    }
    Ok(())
}

/// Waits until the container `name` has stopped, at most `limit`; whether
/// it has.
fn stopped_within(store: &Store, name: &str, limit: Option<Duration>) -> Result<bool> {
    let t0 = Instant::now();
    loop {
        // Gone (removed when it ended, --rm) is stopped too.
        if !crate::containers::load(store, name).is_ok_and(|(_, running)| running) {
            return Ok(true);
        }
        if limit.is_some_and(|l| t0.elapsed() >= l) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The signal that stops the container of `rec`: its `--stop-signal`, else
/// its image's StopSignal, else SIGTERM.
fn stop_signal_of(store: &Store, rec: &crate::containers::Record) -> Signal {
    let given = rec.options.as_ref().and_then(|o| o.stop_signal.clone());
    let from_image = || {
        crate::containers::image_config(store, rec)
            .ok()?
            .config()
            .as_ref()?
            .stop_signal()
            .clone()
    };
    given
        .or_else(from_image)
        .and_then(|s| parse_signal(&s).ok())
        .unwrap_or(Signal::SIGTERM)
}

/// `rcfs stop [-t SECS] NAME...`: the stop signal (see [`stop_signal_of`]), then SIGKILL
/// after `timeout`; returns once each has stopped. A stopped container is
/// fine (as with podman).
pub fn stop(store: &Store, names: &[String], timeout: Duration) -> Result<()> {
    for n in names {
        stop_quietly(store, n, timeout)?;
        println!("{n}");
    }
    Ok(())
}

/// Stops the container `name` as [`stop`] does, without saying so.
pub fn stop_quietly(store: &Store, n: &str, timeout: Duration) -> Result<()> {
    let (rec, running) = crate::containers::load(store, n)?;
    {
        mark_stopped(store, n)?;
        if running {
            let stop_signal = stop_signal_of(store, &rec);
            // It may have stopped meanwhile: what counts is that it does.
            let _ = signal(store, n, stop_signal);
            if !stopped_within(store, n, Some(timeout))? {
                eprintln!(
                    "rcfs stop: {stop_signal} did not stop container {n} in {} s, resorting to SIGKILL",
                    timeout.as_secs()
                );
                if let Err(e) = signal(store, n, Signal::SIGKILL) {
                    if crate::containers::load(store, n)?.1 {
                        return Err(e);
                    }
                }
                if !stopped_within(store, n, Some(Duration::from_secs(30)))? {
                    bail!("container {n} did not stop, even on SIGKILL");
                }
            }
        }
    }
    Ok(())
}

/// `rcfs wait NAME...`: waits until each has stopped and prints its exit
/// code.
pub fn wait(store: &Store, names: &[String]) -> Result<()> {
    for n in names {
        // Here while it runs: a container removed when it ended cannot
        // say how.
        crate::containers::load(store, n)?;
        stopped_within(store, n, None)?;
        let rec = crate::containers::load(store, n)
            .map(|(r, _)| r)
            .with_context(|| format!("container {n} was removed when it ended (--rm)"))?;
        match rec.exit_code {
            Some(c) => println!("{c}"),
            None => bail!("container {n} has stopped without an exit code (its rcfs was killed)"),
        }
    }
    Ok(())
}

/// Answers `join`: the container's namespaces (opened from `/proc/PID/ns`
/// of its pid 1) and its cgroups' `cgroup.procs`, as fds, with a line that
/// names them: `ok KIND... cgroups N`.
fn send_join(
    c: &UnixStream,
    init: BorrowedFd<'_>,
    pid: nix::unistd::Pid,
    cgroups: &[std::path::PathBuf],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut kinds = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    for kind in rcfs_runtime::exec::NAMESPACES {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))?;
        kinds.push(kind);
        fds.push(f.into());
    }
    for d in cgroups {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("cgroup.procs"))?;
        fds.push(f.into());
    }
    // Not reaped yet (a signal 0 reaches it): so `pid` was still pid 1 of
    // the container when its namespaces were opened.
    send_signal(init, 0)?;
    let line = format!("ok {} cgroups {}\n", kinds.join(" "), cgroups.len());
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        c.as_raw_fd(),
        &[std::io::IoSlice::new(line.as_bytes())],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// What joining a running container takes, from its `rcfs run`.
pub struct Joined {
    /// Its namespaces: (kind, fd).
    pub namespaces: Vec<(String, OwnedFd)>,
    /// Its cgroups' `cgroup.procs`, open for writing.
    pub cgroups: Vec<OwnedFd>,
}

/// What joining the running container `name` takes (see [`Joined`]).
pub fn join(store: &Store, name: &str) -> Result<Joined> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let dir = crate::containers::open(store, name)?;
    if !crate::containers::load(store, name)?.1 {
        bail!("container {name} is not running");
    }
    let mut c = UnixStream::connect(path_in(dir.as_fd()))
        .with_context(|| format!("cannot reach container {name}'s rcfs (its control socket)"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(b"join\n")?;
    let mut buf = [0u8; 512];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
    let msg = recvmsg::<()>(
        c.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("no answer from the container's rcfs")?;
    let mut fds = Vec::new();
    for m in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(got) = m {
            // SAFETY: new fds the kernel passed us.
            fds.extend(
                got.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    let line = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    let Some(rest) = line.strip_prefix("ok ") else {
        bail!(
            "container {name}: cannot join it: {}",
            line.strip_prefix("error ").unwrap_or(&line)
        );
    };
    let (kinds, cg) = rest
        .split_once(" cgroups ")
        .context("a garbled answer from the container's rcfs")?;
    let kinds: Vec<&str> = kinds.split(' ').collect();
    let cg: usize = cg
        .parse()
        .context("a garbled answer from the container's rcfs")?;
    if fds.len() != kinds.len() + cg {
        bail!(
            "container {name}: its rcfs sent {} fds for {} namespaces and {cg} cgroups",
            fds.len(),
            kinds.len()
        );
    }
    let cgroups = fds.split_off(kinds.len());
    Ok(Joined {
        namespaces: kinds.into_iter().map(str::to_owned).zip(fds).collect(),
        cgroups,
    })
}
