//! Where a layer blob's bytes come from: [`BlobSource`], with one required
//! method, `open_range`. A blob in the store or an OCI layout dir is a
//! [`FileBlob`]; a blob in a registry is fetched by HTTP Range requests
//! (`registry::RegistryBlob`); tests put a counting or failing mock here.

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use crate::error::layer_error;

/// Bytes of one blob by range.
pub trait BlobSource: Send + Sync + Debug {
    /// A reader of bytes `[start, end)` of the blob. It may give fewer
    /// bytes if the connection breaks; [`BlobSource::read_range`] checks.
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>>;

    /// Bytes `[start, end)`, all of them.
    fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut r = self.open_range(start, end)?;
        let want = (end - start) as usize;
        let mut v = Vec::with_capacity(want);
        r.by_ref().take(want as u64).read_to_end(&mut v)?;
        // To the end: a connection is reused only after its body was read.
        io::copy(&mut r, &mut io::sink())?;
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
        let want = buf.len().min((self.end - self.at) as usize);
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

/// Decompresses one zstd frame that must hold exactly `len` bytes.
pub fn unzstd_exact(frame: &[u8], len: u64, what: &dyn std::fmt::Display) -> io::Result<Vec<u8>> {
    let bad = |m: String| layer_error(libc::EIO, format!("{what}: {m}"));
    let mut out = Vec::with_capacity(len as usize);
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
    }
}
