//! READ replies spliced from a file (rcfs's addition, see PATCH.md).
//!
//! A reply of file data normally goes through the server's memory twice:
//! the file is read into a buffer, and the buffer is written to /dev/fuse.
//! Here the reply header is written into a pipe, the file's pages are
//! spliced behind it (references to the page cache, no copy), and the pipe
//! is spliced into /dev/fuse, where the kernel copies the pages into the
//! request: one copy in all, none of it through this process. libfuse does
//! the same (`fuse_reply_data` with an fd buffer and `FUSE_CAP_SPLICE_WRITE`).

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;

use zerocopy::IntoBytes;

use crate::ll::fuse_abi as abi;

const HEADER: usize = size_of::<abi::fuse_out_header>();

/// A pipe of this thread's, empty between replies.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many buffers it holds (one per page spliced in).
    slots: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 returns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just made and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_GETPIPE_SZ takes no argument.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            slots: size as usize / page_size::get(),
        })
    }

    /// Makes room for `slots` buffers; false where the system does not
    /// allow a pipe that large (`/proc/sys/fs/pipe-max-size`, or the
    /// user's `pipe-user-pages-soft` spent).
    fn hold(&mut self, slots: usize) -> bool {
        if slots <= self.slots {
            return true;
        }
        let bytes = slots.next_power_of_two() * page_size::get();
        let Ok(bytes) = libc::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: F_SETPIPE_SZ takes an int.
        let size = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
        if size < 0 {
            return false;
        }
        self.slots = size as usize / page_size::get();
        slots <= self.slots
    }
}

thread_local! {
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
}

/// Sends the reply to request `unique` of up to `len` bytes of `file` at
/// `offset` through `dev`: `Ok(Some(n))` when `n` bytes were sent, `None`
/// when nothing was (the pipe cannot hold the reply, or the file cannot be
/// spliced): send it another way. The reply is fewer bytes only where the
/// file ends. An error is one of sending, after which the reply is gone.
pub(crate) fn send(
    dev: BorrowedFd<'_>,
    unique: u64,
    file: BorrowedFd<'_>,
    offset: u64,
    len: usize,
) -> io::Result<Option<usize>> {
    let page = page_size::get() as u64;
    let Some(end) = offset.checked_add(len as u64) else {
        return Ok(None);
    };
    let Ok(at) = libc::loff_t::try_from(offset) else {
        return Ok(None);
    };
    let Ok(total) = u32::try_from(HEADER + len) else {
        return Ok(None);
    };
    // The header takes a buffer, each page of the file's range another.
    let slots = 1 + (end.div_ceil(page) - offset / page) as usize;
    PIPE.with_borrow_mut(|slot| {
        if slot.is_none() {
            match Pipe::new() {
                Ok(p) => *slot = Some(p),
                Err(_) => return Ok(None),
            }
        }
        let pipe = slot.as_mut().expect("made above");
        if !pipe.hold(slots) {
            return Ok(None);
        }
        let mut header = abi::fuse_out_header {
            len: total,
            error: 0,
            unique,
        };
        let moved = match fill(pipe, header.as_bytes(), file, at, len) {
            Ok(n) => n,
            Err(_) => {
                // Whatever went in stays there: a new pipe for the next reply.
                *slot = None;
                return Ok(None);
            }
        };
        if moved < len {
            // The file ended first: the header says too much. The bytes
            // come back out of the pipe (emptying it) and go as a copy.
            let mut buf = vec![0u8; HEADER + moved];
            if read_all(&pipe.read, &mut buf).is_err() {
                *slot = None;
                return Ok(None);
            }
            header.len = (HEADER + moved) as u32;
            buf[..HEADER].copy_from_slice(header.as_bytes());
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::write(dev.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(Some(moved));
        }
        let mut sent = 0;
        while sent < HEADER + len {
            // SAFETY: plain fds and no offsets; the pipe holds exactly the
            // reply, and /dev/fuse takes a reply in one write.
            let n = unsafe {
                libc::splice(
                    pipe.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    dev.as_raw_fd(),
                    std::ptr::null_mut(),
                    HEADER + len - sent,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                *slot = None;
                return Err(if n == 0 {
                    io::Error::from(io::ErrorKind::WriteZero)
                } else {
                    e
                });
            }
            sent += n as usize;
        }
        Ok(Some(len))
    })
}

/// Writes `header` into the (empty) pipe and splices up to `len` bytes of
/// `file` at `at` behind it: how many went in, fewer only where the file
/// ends. An error leaves the pipe in an unknown state.
fn fill(
    pipe: &Pipe,
    header: &[u8],
    file: BorrowedFd<'_>,
    mut at: libc::loff_t,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: `header` is valid for its length.
    let n = unsafe { libc::write(pipe.write.as_raw_fd(), header.as_ptr().cast(), header.len()) };
    if n != header.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let mut moved = 0;
    while moved < len {
        // SAFETY: `at` is a valid offset the call advances; the pipe is
        // non-blocking, so a full pipe is EAGAIN, not a wait.
        let n = unsafe {
            libc::splice(
                file.as_raw_fd(),
                &mut at,
                pipe.write.as_raw_fd(),
                std::ptr::null_mut(),
                len - moved,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        match n {
            0 => break,
            n if n < 0 => return Err(io::Error::last_os_error()),
            n => moved += n as usize,
        }
    }
    Ok(moved)
}

/// Reads exactly `buf.len()` bytes out of the pipe.
fn read_all(pipe: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the rest of `buf` is valid for writing.
        let n = unsafe {
            libc::read(
                pipe.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n <= 0 {
            return Err(io::Error::last_os_error());
        }
        got += n as usize;
    }
    Ok(())
}
