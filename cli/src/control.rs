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
/// and whose pid 1 `init` is (a pidfd), in a thread, for the life of the
/// process. Failing to listen costs only the control.
pub fn serve(dir: BorrowedFd<'_>, init: OwnedFd) {
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

/// `rcfs kill [-s SIG] NAME...`.
pub fn kill(store: &Store, names: &[String], sig: Signal) -> Result<()> {
    for n in names {
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

/// `rcfs stop [-t SECS] NAME...`: the stop signal (SIGTERM), then SIGKILL
/// after `timeout`; returns once each has stopped. A stopped container is
/// fine (as with podman).
pub fn stop(store: &Store, names: &[String], timeout: Duration) -> Result<()> {
    for n in names {
        if crate::containers::load(store, n)?.1 {
            // It may have stopped meanwhile: what counts is that it does.
            let _ = signal(store, n, Signal::SIGTERM);
            if !stopped_within(store, n, Some(timeout))? {
                eprintln!(
                    "rcfs stop: SIGTERM did not stop container {n} in {} s, resorting to SIGKILL",
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
        println!("{n}");
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
