//! The terminal of `rcfs run -t` and `rcfs exec -t`: the container's pty
//! relayed to ours, ours in raw mode meanwhile.

use std::time::Duration;

use anyhow::Result;

/// The container's terminal seen from `rcfs run`: its master, relayed to
/// and from this process's stdio, and the user's terminal in raw mode
/// meanwhile.
pub(crate) struct Terminal {
    pub(crate) master: std::sync::Arc<std::os::fd::OwnedFd>,
    output: std::thread::JoinHandle<()>,
    /// Dropped after the rest of the output is written (fields drop after
    /// [`Terminal`]'s own `drop`).
    _raw: RawMode<std::io::Stdin>,
}

/// A terminal in raw mode (ours: stdin), its settings restored when
/// dropped: on every way out.
struct RawMode<Fd: std::os::fd::AsFd> {
    fd: Fd,
    saved: Option<nix::sys::termios::Termios>,
}

impl<Fd: std::os::fd::AsFd> RawMode<Fd> {
    /// Puts `fd`'s terminal in raw mode; nothing if it is not a terminal.
    fn enter(fd: Fd) -> RawMode<Fd> {
        use nix::sys::termios;
        let saved = termios::tcgetattr(&fd).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &raw);
        }
        RawMode { fd, saved }
    }
}

impl<Fd: std::os::fd::AsFd> Drop for RawMode<Fd> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

/// Gives the container's terminal the size of ours.
pub(crate) fn copy_window_size(master: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctls with a winsize buffer of the right type.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

impl Terminal {
    pub(crate) fn attach(master: std::os::fd::OwnedFd, input: bool) -> Result<Terminal> {
        use std::io::{Read, Write};
        let master = std::sync::Arc::new(master);
        copy_window_size(&master);
        let raw_mode = RawMode::enter(std::io::stdin());
        if input {
            let m = master.clone();
            std::thread::Builder::new()
                .name("rcfs-tty-in".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut out = std::fs::File::from(m.try_clone().expect("dup"));
                    loop {
                        match std::io::stdin().lock().read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })?;
        }
        let m = master.clone();
        let output = std::thread::Builder::new()
            .name("rcfs-tty-out".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut from = std::fs::File::from(m.try_clone().expect("dup"));
                let mut stdout = std::io::stdout();
                // Ends with EIO once the container's side is closed.
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let _ = stdout.flush();
                }
            })?;
        Ok(Terminal {
            master,
            output,
            _raw: raw_mode,
        })
    }
}

impl Drop for Terminal {
    /// After the container: the rest of its output (then our terminal back).
    fn drop(&mut self) {
        let t0 = std::time::Instant::now();
        while !self.output.is_finished() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal `rcfs run -t` puts in raw mode gets its settings back
    /// when the guard goes, whichever way `serve` is left (an error from
    /// the container's wait included): here on a pty of the test's own.
    #[test]
    fn a_terminal_in_raw_mode_gets_its_settings_back_when_the_guard_goes() {
        use nix::sys::termios::{tcgetattr, LocalFlags};
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = tcgetattr(&pty.slave).unwrap();
        assert!(before
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO));
        let failed: Result<()> = (|| {
            let _raw = RawMode::enter(&pty.slave);
            let now = tcgetattr(&pty.slave).unwrap();
            assert!(!now
                .local_flags
                .intersects(LocalFlags::ICANON | LocalFlags::ECHO));
            anyhow::bail!("the container's wait failed")
        })();
        assert!(failed.is_err());
        let after = tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
        // Not a terminal: nothing to change, nothing to restore.
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(RawMode::enter(&null).saved.is_none());
    }
}
