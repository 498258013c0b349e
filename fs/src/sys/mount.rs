//! Mounting and unmounting FUSE: mount(2) with a /dev/fuse fd, the
//! fusermount3 helper for users who may not call mount(2), and what tells
//! one mount from another at the same path (the device number of its
//! superblock, whether its FUSE connection still stands).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::cvt;

/// Mounts a FUSE filesystem of type `fuse` (`data` names the /dev/fuse fd,
/// see fuse(4)); `flags` are mount(2)'s.
pub fn mount_fuse(source: &CStr, mp: &CStr, flags: libc::c_ulong, data: &CStr) -> io::Result<()> {
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            mp.as_ptr(),
            c"fuse".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// The setuid helper `fusermount` mounting a FUSE filesystem, started and
/// not waited for yet: it mounts while the caller does other work, and
/// [`HelperMount::wait`] takes the /dev/fuse fd it mounted with (its
/// `_FUSE_COMMFD` protocol: one byte and the fd as SCM_RIGHTS over a
/// socket).
#[derive(Debug)]
pub struct HelperMount {
    helper: std::path::PathBuf,
    child: std::process::Child,
    ours: UnixStream,
}

impl HelperMount {
    /// Starts `helper` mounting `mp` with `opts`.
    pub fn spawn(helper: &Path, mp: &Path, opts: &str) -> io::Result<HelperMount> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(helper);
        cmd.arg("-o")
            .arg(opts)
            .arg("--")
            .arg(mp)
            // The helper's end of the socket is its fd 0: std puts it there
            // in the spawn itself (with posix_spawn, no fork of the server),
            // so no other child of this process can inherit it meanwhile.
            .env("_FUSE_COMMFD", "0")
            // Not in the caller's process group: a Ctrl-C at the terminal
            // must not kill it between its mount and the fd's hand-over
            // (which would leave a dead mount no one can tell apart).
            .process_group(0)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn();
        // Our copy of the helper's end goes with the command: a helper that
        // exits without sending gives EOF.
        drop(cmd);
        Ok(HelperMount {
            helper: helper.to_owned(),
            child: child?,
            ours,
        })
    }

    /// The /dev/fuse fd the helper mounted with, once it exited; its own
    /// message if it failed. Also in a child forked after the spawn (the
    /// helper is then its parent's to reap, see [`HelperMount::reap`]).
    pub fn wait(mut self) -> io::Result<OwnedFd> {
        let got = recv_fd(&self.ours);
        let mut why = String::new();
        if got.is_err() {
            if let Some(mut err) = self.child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut why);
            }
        }
        // Gone by now, or about to be (it exits once it has sent).
        let status = self.child.wait();
        got.map_err(|e| {
            let why = why.trim();
            io::Error::new(
                e.kind(),
                match status {
                    _ if !why.is_empty() => why.to_owned(),
                    Ok(st) => format!("{} gave no /dev/fuse fd ({st}): {e}", self.helper.display()),
                    Err(_) => format!("{} gave no /dev/fuse fd: {e}", self.helper.display()),
                },
            )
        })
    }

    /// In the process that spawned the helper, once a child forked after
    /// the spawn has taken the mount over: closes this copy's ends and
    /// waits for the helper to exit (it exits once it has sent the fd).
    pub fn reap(mut self) {
        drop(self.child.stderr.take());
        let _ = self.child.wait();
    }
}

/// Receives one fd sent as SCM_RIGHTS over `sock`.
fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one control message with one fd, aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; the fields set point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: msg points at buffers that live across the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the mount helper exited without sending a /dev/fuse fd",
        ));
    }
    // SAFETY: the kernel filled msg's control buffer; CMSG_* walk it within
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd: RawFd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if fd >= 0 {
                    return Ok(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the mount helper sent no /dev/fuse fd",
    ))
}

/// The device number (minor; the major of a FUSE superblock is 0) of the
/// connection a /dev/fuse fd belongs to, as /proc says it (`None` where it
/// does not: no /proc, or a kernel without `fuse_connection` in fdinfo).
pub fn connection_of(fuse: BorrowedFd<'_>) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fuse.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("fuse_connection:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What `fd` (any file, also an O_PATH one) says of its mount without asking
/// its filesystem (`AT_STATX_DONT_SYNC`: a FUSE server must not wait on its
/// own mount): the device number of its superblock, and whether it is the
/// root of its mount.
pub fn mount_of(fd: BorrowedFd<'_>) -> io::Result<(u64, bool)> {
    // SAFETY: statx is plain data.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH names fd itself; st outlives
    // the call.
    cvt(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            0,
            &mut st,
        )
    })?;
    let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
    let known = st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
    let root = st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
    if !known {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not say whether a file is the root of its mount (Linux 5.8+)",
        ));
    }
    Ok((dev, root))
}

/// Whether the FUSE connection of /dev/fuse fd `fuse` has ended: unmounted,
/// or aborted through /sys/fs/fuse/connections (the kernel then answers a
/// poll with POLLERR alone).
pub fn fuse_disconnected(fuse: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fuse.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd that outlives the call; timeout 0.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n >= 0 {
            return n == 1 && p.revents & libc::POLLERR != 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // A valid fd cannot fail to poll but for ENOMEM: say it still
            // stands, the cautious answer for an unmount check.
            return false;
        }
    }
}

/// Detaches the mount `path` leads to (`umount2(MNT_DETACH)`), following
/// no symlink unless `follow` (a /proc/self/fd link must be followed).
pub fn umount_detach(path: &CStr, follow: bool) -> io::Result<()> {
    let flags = libc::MNT_DETACH | if follow { 0 } else { libc::UMOUNT_NOFOLLOW };
    // SAFETY: path is a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::umount2(path.as_ptr(), flags) }).map(drop)
}
