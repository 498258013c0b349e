//! Moving file data: `pread` until full, copies that keep a sparse file's
//! holes (`SEEK_DATA`/`SEEK_HOLE`) and run in the kernel where they can
//! (`copy_file_range`), hole punching, and read-ahead hints.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};

/// `fstat(2)`.
pub fn fstat(f: &impl AsFd) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstat(f)?)
}

/// Starts reading the first `len` bytes of `f` into the page cache, without
/// waiting for them (`posix_fadvise(WILLNEED)`).
pub fn will_need(f: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    nix::fcntl::posix_fadvise(
        f,
        0,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    )?;
    Ok(())
}

/// Sets `f`'s access and modification times to those of `st`.
pub fn set_times(f: &File, st: &libc::stat) -> io::Result<()> {
    let ts = |sec, nsec| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    nix::sys::stat::futimens(
        f,
        &ts(st.st_atime, st.st_atime_nsec).into(),
        &ts(st.st_mtime, st.st_mtime_nsec).into(),
    )?;
    Ok(())
}

/// `fallocate(2)` (nix's, with offsets checked to fit `off_t`).
pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    let (off, len) = (
        i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?,
        i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?,
    );
    nix::fcntl::fallocate(
        f,
        nix::fcntl::FallocateFlags::from_bits_retain(mode),
        off,
        len,
    )?;
    Ok(())
}

/// Frees the blocks of `f` in `[off, off + len)` without changing its size;
/// where the filesystem cannot punch holes and the range ends at the end of
/// the file, truncates it away and back instead.
pub fn punch_hole(f: &File, off: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    match fallocate(f, mode, off, len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let size = fstat(f)?.st_size as u64;
            if off + len < size {
                return Err(e);
            }
            f.set_len(off)?;
            f.set_len(size)
        }
        Err(e) => Err(e),
    }
}

/// `pread(2)` until `buf` is full or end of file.
pub fn pread_full(f: &File, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Copies the first `len` bytes of `src` to `dst` (at the same offsets),
/// leaving holes where `src` has them (found with `SEEK_DATA`/`SEEK_HOLE`),
/// as kernel overlayfs's copy-up does: a sparse file stays sparse. Each run
/// of data goes through [`copy_range`]. `dst` ends up at least `len` bytes
/// long; bytes past `len` that it already holds are kept.
pub fn copy_data(src: &File, dst: &File, len: u64, durable: bool) -> io::Result<()> {
    let mut off = 0;
    while off < len {
        let data = match seek(src, off, libc::SEEK_DATA) {
            Ok(d) => d,
            // Only holes from here on.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            // The filesystem cannot tell: copy the rest as data.
            Err(_) => off,
        };
        if data >= len {
            break;
        }
        let hole = seek(src, data, libc::SEEK_HOLE).map_or(len, |h| h.clamp(data + 1, len));
        copy_range(src, dst, data, hole, durable)?;
        off = hole;
    }
    if fstat(dst)?.st_size < len as libc::off_t {
        dst.set_len(len)?;
    }
    Ok(())
}

/// `lseek(fd, off, whence)`. Only for `SEEK_DATA`/`SEEK_HOLE` on fds read
/// with `pread`, whose offset nothing else uses.
pub fn seek(f: &impl AsFd, off: u64, whence: i32) -> io::Result<u64> {
    let whence = match whence {
        libc::SEEK_DATA => nix::unistd::Whence::SeekData,
        libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
        libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
        libc::SEEK_END => nix::unistd::Whence::SeekEnd,
        _ => nix::unistd::Whence::SeekSet,
    };
    let off = i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::ENXIO))?;
    Ok(nix::unistd::lseek(f, off, whence)? as u64)
}

/// Copies bytes `start..end` of `src` to the same offsets of `dst` with
/// `copy_file_range`, which reflinks or copies in the kernel, falling back to
/// a read/write loop where the kernel cannot (different filesystems on old
/// kernels, special files). With `durable`, writeback of each copied piece
/// starts at once, so the caller's `fdatasync` finds little left to do.
fn copy_range(src: &File, dst: &File, start: u64, end: u64, durable: bool) -> io::Result<()> {
    const PIECE: u64 = 16 << 20;
    let mut off_in = start as libc::loff_t;
    let mut off_out = start as libc::loff_t;
    while (off_in as u64) < end {
        let left = end - off_in as u64;
        // Pieces only so that writeback can start behind the copy.
        let chunk = if durable {
            left.min(PIECE)
        } else {
            left.min(1 << 30)
        } as usize;
        let piece = off_out;
        // SAFETY: both fds are open; offsets point at live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV)
                | Some(libc::ENOSYS)
                | Some(libc::EINVAL)
                | Some(libc::EOPNOTSUPP) => {
                    return copy_data_slow(src, dst, off_in as u64, end);
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            break; // source shorter than expected: copy what exists
        }
        if durable {
            // SAFETY: plain syscall on an open fd; failure only loses the head start.
            unsafe {
                libc::sync_file_range(
                    dst.as_raw_fd(),
                    piece,
                    n as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
    }
    Ok(())
}

/// One `copy_file_range(2)` of up to `len` bytes from `src` at `off_in` to
/// `dst` at `off_out`, in the kernel; where the kernel cannot (files on
/// different filesystems), up to 1 MiB read and written here. Returns the
/// bytes copied, 0 at the end of `src`.
pub fn copy_file_range(
    src: &(impl AsFd + AsRawFd),
    off_in: u64,
    dst: &File,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
    let (mut i, mut o) = (off_in as libc::loff_t, off_out as libc::loff_t);
    let e = match nix::fcntl::copy_file_range(src, Some(&mut i), dst, Some(&mut o), len as usize) {
        Ok(n) => return Ok(n),
        Err(e) => io::Error::from(e),
    };
    match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            // SAFETY: `src` is an open fd; the File is forgotten below, not closed.
            let src = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(src.as_raw_fd()) });
            let n = pread_full(&src, &mut buf, off_in)?;
            dst.write_all_at(&buf[..n], off_out)?;
            Ok(n)
        }
        _ => Err(e),
    }
}

fn copy_data_slow(src: &File, dst: &File, mut off: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while off < len {
        let want = ((len - off) as usize).min(buf.len());
        let n = pread_full(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copy_data_keeps_holes_and_what_dst_holds_past_len() {
        let t = tempfile::tempdir().unwrap();
        let new_file = |name: &str| {
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(t.path().join(name))
                .unwrap()
        };
        let src = new_file("src");
        const LEN: u64 = 8 << 20;
        src.set_len(LEN).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"middle", 3 << 20).unwrap();
        // An empty copy becomes LEN long, though the source ends in a hole.
        let empty = new_file("empty");
        copy_data(&src, &empty, LEN, false).unwrap();
        // A placeholder with a tail past LEN keeps the tail.
        let tail = new_file("tail");
        tail.write_all_at(b"tail", LEN).unwrap();
        copy_data(&src, &tail, LEN, true).unwrap();

        let want = std::fs::read(t.path().join("src")).unwrap();
        let empty_data = std::fs::read(t.path().join("empty")).unwrap();
        assert!(empty_data == want, "the copy differs from the source");
        let tail_data = std::fs::read(t.path().join("tail")).unwrap();
        assert_eq!(tail_data.len() as u64, LEN + 4);
        assert!(
            tail_data[..LEN as usize] == want[..],
            "the filled copy differs"
        );
        assert_eq!(&tail_data[LEN as usize..], b"tail");
        for name in ["empty", "tail"] {
            let blocks = std::fs::metadata(t.path().join(name)).unwrap().blocks();
            assert!(
                blocks * 512 <= 256 << 10,
                "{name}: {} KiB allocated for 10 bytes of data",
                blocks / 2
            );
        }
        // Where the filesystem finds the holes, the copy has them too.
        assert_eq!(
            seek(&empty, 0, libc::SEEK_HOLE).unwrap(),
            seek(&src, 0, libc::SEEK_HOLE).unwrap()
        );
        assert_eq!(
            seek(&empty, 4096, libc::SEEK_DATA).unwrap(),
            seek(&src, 4096, libc::SEEK_DATA).unwrap()
        );
    }
}
