//! Where a layer blob's bytes come from: [`BlobSource`], with one required
//! method, `open_range`. A blob in the store or an OCI layout dir is a
//! [`FileBlob`]; a blob in a registry is fetched by HTTP Range requests
//! (`registry::RegistryBlob`); tests put a counting or failing mock here.

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use crate::error::layer_error;

/// The most bytes one range or one chunk may hold in memory: a table of
/// contents (at most 50 MiB compressed) or one chunk (at most
/// [`crate::image::toc::MAX_CHUNK`]). Nothing a blob or its table of
/// contents says makes one read allocate more.
pub const MAX_RANGE: u64 = 64 << 20;

/// Refuses a range that is inverted or over [`MAX_RANGE`]; its length.
pub fn range_len(start: u64, end: u64, what: &dyn std::fmt::Display) -> io::Result<usize> {
    match end.checked_sub(start) {
        Some(n) if n <= MAX_RANGE => Ok(n as usize),
        _ => Err(layer_error(
            libc::EIO,
            format!(
                "{what}: range {start}..{end} is inverted or over rcfs's limit of {} MiB",
                MAX_RANGE >> 20
            ),
        )),
    }
}

/// A reader of a stream that a thread of its own reads ahead, up to
/// `pieces` pieces of `piece` bytes: the network keeps delivering while the
/// reader decompresses, hashes and writes what came before (a pull's
/// indexing then overlaps the download instead of adding to it). Made by
/// [`read_ahead`] inside a thread scope, which waits for the thread: it
/// ends at the stream's end or error, or when this reader is dropped.
pub struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

/// See [`ReadAhead`].
pub fn read_ahead<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut src: R,
    piece: usize,
    pieces: usize,
) -> ReadAhead {
    let (tx, rx) = std::sync::mpsc::sync_channel(pieces.max(1));
    scope.spawn(move || loop {
        let mut buf = vec![0u8; piece];
        let mut n = 0;
        // Whole pieces where the stream gives them quickly; what has come
        // once half a piece is there (a slow link's bytes are not held).
        let r = loop {
            match src.read(&mut buf[n..]) {
                Ok(0) => break Ok(()),
                Ok(k) => {
                    n += k;
                    if n >= piece / 2 {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let end = r.is_err() || n == 0;
        buf.truncate(n);
        let msg = match r {
            Err(e) if n == 0 => Err(e),
            Err(e) => {
                // The bytes before the error first, then the error.
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
                Err(e)
            }
            Ok(()) if n == 0 => return,
            Ok(()) => Ok(buf),
        };
        if tx.send(msg).is_err() || end {
            return;
        }
    });
    ReadAhead {
        rx,
        cur: Vec::new(),
        pos: 0,
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.cur = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Bytes of one blob by range.
pub trait BlobSource: Send + Sync + Debug {
    /// A reader of bytes `[start, end)` of the blob. It may give fewer
    /// bytes if the connection breaks; [`BlobSource::read_range`] checks.
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>>;

    /// Bytes `[start, end)`, all of them (at most [`MAX_RANGE`]).
    fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let want = range_len(start, end, &self.describe())?;
        let mut r = self.open_range(start, end)?;
        let mut v = Vec::with_capacity(want);
        r.by_ref().take(want as u64).read_to_end(&mut v)?;
        // Its end, never past it: a registry's body then goes back to the
        // pool if it can (see `registry::Exact`), and one that goes on is
        // not read further.
        let _ = r.read(&mut [0u8; 1])?;
        if v.len() != want {
            return Err(layer_error(
                libc::EIO,
                format!(
                    "{}: got {} of the {want} bytes at {start}",
                    self.describe(),
                    v.len()
                ),
            ));
        }
        Ok(v)
    }

    /// What the blob is, for messages.
    fn describe(&self) -> String;
}

/// A blob in a host file.
#[derive(Debug)]
pub struct FileBlob {
    file: Arc<File>,
    name: String,
}

impl FileBlob {
    pub fn new(file: File, name: impl Into<String>) -> FileBlob {
        FileBlob {
            file: Arc::new(file),
            name: name.into(),
        }
    }
}

/// A range of a shared file, read with `pread`.
struct FileRange {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, &mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl BlobSource for FileBlob {
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(FileRange {
            file: self.file.clone(),
            at: start,
            end,
        }))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Decompresses one zstd frame that must hold exactly `len` bytes (at
/// most [`MAX_RANGE`]).
pub fn unzstd_exact(frame: &[u8], len: u64, what: &dyn std::fmt::Display) -> io::Result<Vec<u8>> {
    let bad = |m: String| layer_error(libc::EIO, format!("{what}: {m}"));
    let mut out = Vec::with_capacity(range_len(0, len, what)?);
    let mut d = zstd::stream::read::Decoder::with_buffer(frame).map_err(|e| bad(e.to_string()))?;
    // One byte more than expected tells a frame that is too long.
    (&mut d)
        .take(len + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    if out.len() as u64 != len {
        return Err(bad(format!(
            "decompresses to {}{} bytes, the table of contents says {len}",
            out.len(),
            if out.len() as u64 > len { "+" } else { "" }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that gives `data` in reads of at most 1000 bytes, then
    /// fails (if `fail`) or ends.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        fail: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return match self.fail {
                    true => Err(io::Error::other("the connection broke")),
                    false => Ok(0),
                };
            }
            let n = buf.len().min(1000).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_ahead_stream_gives_every_byte_in_order_then_its_end_or_error() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        for fail in [false, true] {
            std::thread::scope(|s| {
                let src = Trickle {
                    data: data.clone(),
                    at: 0,
                    fail,
                };
                let mut r = read_ahead(s, src, 64 << 10, 4);
                let mut got = Vec::new();
                let res = r.read_to_end(&mut got);
                assert_eq!(got.len(), data.len());
                assert!(got == data);
                assert_eq!(res.is_err(), fail);
            });
        }
        // A reader that stops early: the thread ends (the scope returns).
        std::thread::scope(|s| {
            let src = Trickle {
                data: data.clone(),
                at: 0,
                fail: false,
            };
            let mut r = read_ahead(s, src, 4096, 2);
            let mut first = [0u8; 10];
            r.read_exact(&mut first).unwrap();
            assert_eq!(&first[..], &data[..10]);
        });
    }

    #[test]
    fn file_ranges_and_exact_frames() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let frame = zstd::bulk::compress(b"hello world", 3).unwrap();
        let mut all = b"xx".to_vec();
        all.extend_from_slice(&frame);
        std::fs::write(t.path(), &all).unwrap();
        let b = FileBlob::new(File::open(t.path()).unwrap(), "test blob");
        let got = b.read_range(2, 2 + frame.len() as u64).unwrap();
        assert_eq!(unzstd_exact(&got, 11, &"f").unwrap(), b"hello world");
        assert!(unzstd_exact(&got, 10, &"f")
            .unwrap_err()
            .to_string()
            .contains("11+"));
        assert!(unzstd_exact(&got, 12, &"f").is_err());
        assert!(unzstd_exact(b"garbage", 3, &"f").is_err());
        let short = b.read_range(2, 200).unwrap_err();
        assert!(short.to_string().contains("test blob"), "{short}");
        // An inverted range reads nothing (it panicked on the subtraction).
        let mut v = Vec::new();
        b.open_range(10, 5).unwrap().read_to_end(&mut v).unwrap();
        assert!(v.is_empty());
    }

    /// Counts what is asked of it; its reader never ends.
    #[derive(Debug, Default)]
    struct Endless(std::sync::atomic::AtomicU64);

    impl BlobSource for Endless {
        fn open_range(&self, _: u64, _: u64) -> io::Result<Box<dyn Read + Send>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(io::repeat(7)))
        }
        fn describe(&self) -> String {
            "endless blob".into()
        }
    }

    #[test]
    fn reads_allocate_what_the_limits_allow_and_end_at_their_end() {
        let b = Endless::default();
        // A body that never ends gives its range and is left there.
        assert_eq!(b.read_range(10, 20).unwrap(), vec![7u8; 10]);
        // Ranges past the limit, or inverted, are refused before anything
        // is asked or allocated.
        for (s, e) in [(0, MAX_RANGE + 1), (0, u64::MAX), (20, 10)] {
            let err = b.read_range(s, e).unwrap_err().to_string();
            assert!(err.contains("over rcfs's limit of 64 MiB"), "{err}");
        }
        assert_eq!(b.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A frame said to hold more than a chunk may: refused, not allocated.
        let frame = zstd::bulk::compress(b"x", 3).unwrap();
        let err = unzstd_exact(&frame, u64::MAX, &"f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
        let err = unzstd_exact(&frame, MAX_RANGE + 1, &"f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
    }
}
