//! A read-only shared mapping of a whole file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A file's bytes mapped read-only, unmapped when dropped. Only for files
/// nobody shrinks while mapped (store objects): a page past a new end of
/// file would fault (SIGBUS).
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned; the bytes are shared memory
// no one writes through it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `f` (as long as it is now).
    pub fn of(f: &File) -> io::Result<Mapping> {
        let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a new read-only mapping of an open file; the kernel picks
        // the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    /// Tells the kernel the mapping is read at random: a page fault reads
    /// that page, not a read-ahead window around it, and no huge page maps
    /// it (what a process that looks up a few names in a large index holds
    /// stays small).
    pub fn advise_random(&self) {
        if self.len > 0 {
            // SAFETY: our own mapping, whole; advice changes no contents.
            // (Huge pages would map 2 MiB of it for any page looked up.)
            unsafe {
                libc::madvise(self.ptr, self.len, libc::MADV_RANDOM);
                libc::madvise(self.ptr, self.len, libc::MADV_NOHUGEPAGE);
            }
        }
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` readable bytes at `ptr` for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_an_empty_one() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"mapped bytes").unwrap();
        let m = Mapping::of(&File::open(&p).unwrap()).unwrap();
        assert_eq!(m.bytes(), b"mapped bytes");
        std::fs::write(&p, b"").unwrap();
        let e = Mapping::of(&File::open(&p).unwrap()).unwrap();
        assert!(e.bytes().is_empty());
    }
}
