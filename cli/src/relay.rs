//! Without `-t`, the container must not get the caller's terminal open for
//! reading: through a terminal's stdout or stderr (one read-write open
//! file) the command could read the keystrokes meant for the caller's
//! shell. The container's init opens such a terminal again write-only.
//! Where that cannot be done (the terminal is another user's: after `su`
//! or `sudo -u`, the fd was inherited but the device is not the user's to
//! open), `rcfs run` hands the container a pipe in its place instead, and
//! a thread of its own copies what comes out of the pipe to the terminal,
//! as podman's conmon does for every container.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// One stdio fd of this process that goes to the container as a pipe.
pub struct Relay {
    /// 1 or 2.
    fd: i32,
    /// The terminal, as this process had it on `fd`.
    terminal: OwnedFd,
    /// The pipe's read end, until [`Relay::start`] hands it to the thread.
    pipe: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// Puts a pipe in place of each of stdout and stderr that is a terminal
/// this process cannot open again write-only. Call before the container's
/// init is forked (it inherits the pipes) and while single-threaded; the
/// threads that copy start with [`Relay::start`].
pub fn unopenable_terminals() -> Result<Vec<Relay>> {
    let mut out = Vec::new();
    for fd in [1, 2] {
        // SAFETY: isatty on an fd number.
        if unsafe { libc::isatty(fd) } != 1 {
            continue;
        }
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(format!("/proc/self/fd/{fd}"));
        if reopened.is_ok() {
            continue;
        }
        // SAFETY: a new fd, owned from here on.
        let terminal = unsafe {
            let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            if t < 0 {
                return Err(std::io::Error::last_os_error()).context("dup of a terminal");
            }
            OwnedFd::from_raw_fd(t)
        };
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        // The pipe's write end becomes `fd` (dup2 leaves it inheritable).
        // SAFETY: dup2 onto a stdio number this process owns.
        if unsafe { libc::dup2(wr.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2 of a pipe");
        }
        out.push(Relay {
            fd,
            terminal,
            pipe: Some(rd),
            thread: None,
        });
    }
    Ok(out)
}

impl Relay {
    /// Starts copying what the pipe brings to the terminal.
    pub fn start(&mut self) -> Result<()> {
        let Some(pipe) = self.pipe.take() else {
            return Ok(());
        };
        let mut to = File::from(self.terminal.try_clone()?);
        let mut from = File::from(pipe);
        self.thread = Some(
            std::thread::Builder::new()
                .name("rcfs-relay".into())
                .spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                })?,
        );
        Ok(())
    }
}

impl Drop for Relay {
    /// The terminal back on its fd (which closes this process's write end
    /// of the pipe), then the rest of what the container wrote.
    fn drop(&mut self) {
        // SAFETY: dup2 of an fd we own onto a stdio number.
        unsafe { libc::dup2(self.terminal.as_raw_fd(), self.fd) };
        if let Some(t) = self.thread.take() {
            let t0 = std::time::Instant::now();
            while !t.is_finished() && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
