//! Indexing a layer from its tar stream: every regular file's bytes go into
//! the store's `files/` by digest as the stream passes, and the entries
//! become a table of contents in zstd:chunked's JSON (with no offsets: the
//! data is in the store). The layer is then served like a zstd:chunked one.
//!
//! The stream is checked as it goes: the compressed bytes against the
//! layer's digest, the tar against the config's `diff_id` (a mismatch on a
//! zstd:chunked blob from podman before 5.0 is expected and only logged:
//! those drop the tar's trailing zero blocks), and every entry against what
//! a layer may hold (no `..`, no absolute names, hard links inside the
//! layer). Nothing is recorded for a layer whose stream fails a check.
//!
//! What a layer expands to is bounded ([`Limits`]): its uncompressed
//! stream and the files it holds (a sparse entry counts its full size, the
//! tar reader makes its holes up as zeros) are at most 256 GiB, and past the
//! first GiB at most 2000 times the compressed bytes read so far (gzip
//! cannot pass about 1032:1, so only zstd or raw tar layers of zeros or
//! sparse entries meet it); and at most [`MAX_ENTRIES`] entries. File
//! contents go to the store with their blocks of zeros as holes (see
//! `cas::CasWriter`), so a sparse entry takes the disk its data takes.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::OnceLock;

use base64::Engine;

use super::cas::Cas;
use super::digest::{Digest, Hasher};
use super::toc::{normalize, TocEntry, TocJson, MAX_ENTRIES};
use crate::error::layer_error;
use crate::layer::Time;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type (OCI and Docker spellings); `None` for media
    /// types that are not layers rcfs can read.
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        Some(match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// From the first bytes of a blob (docker-archive layers carry no media
    /// type).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.starts_with(&[0x50, 0x2a, 0x4d, 0x18])
        {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What one layer may expand to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of its uncompressed stream, and of the files it
    /// holds (sparse ones at their full size); 0: no limit.
    pub max_bytes: u64,
    /// The most uncompressed bytes per compressed byte read, once past
    /// `ratio_free` bytes; 0: no limit.
    pub max_ratio: u64,
    /// What a layer may expand to whatever its compressed size (1 GiB).
    pub ratio_free: u64,
    /// The most entries ([`MAX_ENTRIES`], as a table of contents).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 30,
            max_ratio: 2000,
            ratio_free: 1 << 30,
            max_entries: MAX_ENTRIES,
        }
    }
}

impl Limits {
    /// The limits of this process: the defaults, or
    /// `RCFS_LAYER_MAX_BYTES` and `RCFS_LAYER_MAX_RATIO` (numbers; 0 for no
    /// limit) from the environment.
    pub fn from_env() -> Limits {
        static LIMITS: OnceLock<Limits> = OnceLock::new();
        *LIMITS.get_or_init(|| {
            let d = Limits::default();
            let var = |name: &str, default: u64| match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                    log::warn!("{name}={v} is not a number of bytes; using {default}");
                    default
                }),
                Err(_) => default,
            };
            Limits {
                max_bytes: var("RCFS_LAYER_MAX_BYTES", d.max_bytes),
                max_ratio: var("RCFS_LAYER_MAX_RATIO", d.max_ratio),
                ..d
            }
        })
    }

    /// Refuses `expanded` bytes from `compressed` (`what`: of the stream,
    /// or of its files).
    fn check(&self, expanded: u64, compressed: u64, what: &str) -> io::Result<()> {
        if self.max_bytes > 0 && expanded > self.max_bytes {
            return Err(hostile(format!(
                "the layer's {what} pass {} bytes, rcfs's limit for one layer \
                 (RCFS_LAYER_MAX_BYTES, 0 for none); refusing it",
                self.max_bytes
            )));
        }
        if self.max_ratio > 0
            && expanded > self.ratio_free
            && expanded / compressed.max(1) > self.max_ratio
        {
            return Err(hostile(format!(
                "the layer's {what} pass {expanded} bytes from {compressed} compressed, over \
                 rcfs's limit of {}:1 past the first GiB (RCFS_LAYER_MAX_RATIO, 0 for none); \
                 refusing it",
                self.max_ratio
            )));
        }
        Ok(())
    }
}

/// A reader whose bytes count against [`Limits`].
struct Bounded<'c, R> {
    inner: R,
    expanded: u64,
    compressed: &'c Cell<u64>,
    limits: Limits,
    what: &'static str,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.expanded += n as u64;
        self.limits
            .check(self.expanded, self.compressed.get(), self.what)?;
        Ok(n)
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    pub count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }
    /// Reads the rest and returns the digest of everything.
    pub fn finish(self) -> io::Result<(Digest, u64)> {
        let (h, n) = self.finish_hasher()?;
        Ok((h.finish(), n))
    }
    /// Reads the rest and returns the hash state of everything (to hash
    /// more after it).
    pub fn finish_hasher(mut self) -> io::Result<(Hasher, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher, self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// What indexing a layer found.
#[derive(Debug)]
pub struct Indexed {
    pub toc: TocJson,
    /// The compressed blob's digest and size.
    pub blob_digest: Digest,
    pub blob_size: u64,
    /// The uncompressed tar's digest (`diff_id`).
    pub diff_id: Digest,
    /// The hash state at the end of the uncompressed tar (to check a
    /// diff_id that blob lacks the tar's final zero blocks of).
    pub tar_hash: Hasher,
    pub files: u64,
    pub bytes: u64,
}

fn hostile(msg: String) -> io::Error {
    layer_error(libc::EIO, msg)
}

fn rfc3339(secs: i64, nanos: u32) -> Option<String> {
    super::toc::rfc3339(Time::from_timespec(secs, i64::from(nanos)))
}

/// A PAX time (`1700000000.123456789`) as seconds and nanoseconds.
fn pax_time(v: &str) -> Option<(i64, u32)> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

/// Reads the layer blob `blob` (compressed as `comp`) to its end, storing
/// file contents in `files`; `progress` is called with the compressed
/// bytes read so far.
pub fn index_layer(
    blob: impl Read,
    comp: Compression,
    files: &Cas,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Indexed> {
    index_layer_with(blob, comp, files, progress, &mut |_| {})
}

/// [`index_layer`], calling `on_entry` with each entry once its data is in
/// `files` (a layer being mounted while it streams, see
/// [`crate::layer::Stream`]). A path listed again is given again. The
/// layer is held to [`Limits::from_env`].
pub fn index_layer_with(
    blob: impl Read,
    comp: Compression,
    files: &Cas,
    progress: &mut dyn FnMut(u64),
    on_entry: &mut dyn FnMut(&TocEntry),
) -> io::Result<Indexed> {
    index_layer_limited(blob, comp, files, Limits::from_env(), progress, on_entry)
}

/// [`index_layer_with`] with `limits`.
pub fn index_layer_limited(
    blob: impl Read,
    comp: Compression,
    files: &Cas,
    limits: Limits,
    progress: &mut dyn FnMut(u64),
    on_entry: &mut dyn FnMut(&TocEntry),
) -> io::Result<Indexed> {
    struct Counting<'p, R> {
        inner: HashingReader<R>,
        progress: &'p mut dyn FnMut(u64),
        read: &'p Cell<u64>,
    }
    impl<R: Read> Read for Counting<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.inner.count);
            (self.progress)(self.inner.count);
            Ok(n)
        }
    }
    let read = Cell::new(0);
    let mut compressed = Counting {
        inner: HashingReader::new(blob),
        progress,
        read: &read,
    };
    let decompressed: Box<dyn Read + '_> = match comp {
        Compression::None => Box::new(&mut compressed),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 16, &mut compressed),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(&mut compressed)
                .map_err(|e| hostile(format!("not a zstd stream: {e}")))?,
        ),
    };
    let mut tar_hash = HashingReader::new(Bounded {
        inner: decompressed,
        expanded: 0,
        compressed: &read,
        limits,
        what: "uncompressed bytes",
    });
    let (toc, nfiles, bytes) = {
        let mut ar = tar::Archive::new(&mut tar_hash);
        ar.set_ignore_zeros(false);
        read_entries(&mut ar, files, limits, &read, on_entry)?
    };
    let (tar_hash, _) = tar_hash
        .finish_hasher()
        .map_err(|e| hostile(format!("cannot decompress the layer: {e}")))?;
    let diff_id = tar_hash.clone().finish();
    let (blob_digest, blob_size) = compressed.inner.finish()?;
    Ok(Indexed {
        toc,
        blob_digest,
        blob_size,
        diff_id,
        tar_hash,
        files: nfiles,
        bytes,
    })
}

fn read_entries<R: Read>(
    ar: &mut tar::Archive<R>,
    files: &Cas,
    limits: Limits,
    compressed: &Cell<u64>,
    on_entry: &mut dyn FnMut(&TocEntry),
) -> io::Result<(TocJson, u64, u64)> {
    // The bytes of every file so far, sparse ones at their full size.
    let mut file_bytes = 0u64;
    let mut entries: Vec<TocEntry> = Vec::new();
    // Path → index in `entries`, for later entries of the same path (the
    // last one wins, as when a tar is unpacked).
    let mut by_path: HashMap<String, usize> = HashMap::new();
    // Names are kept as UTF-8 (each byte that is not part of a character
    // becomes U+FFFD): the paths that came from names that are not UTF-8,
    // with those names, so that two that would become one are refused
    // rather than merged.
    let mut not_utf8: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut nfiles, mut bytes) = (0u64, 0u64);
    for e in ar
        .entries()
        .map_err(|e| hostile(format!("not a tar stream: {e}")))?
    {
        let mut e = e.map_err(|e| hostile(format!("bad tar entry: {e}")))?;
        let raw_path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                "reg"
            }
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            // Metadata entries the tar crate has not folded in already.
            _ => continue,
        };
        // The root itself, as umoci writes it ("/"), names nothing
        // outside the layer; any other absolute name is refused.
        if raw_path.starts_with('/') && !raw_path.bytes().all(|b| b == b'/') {
            return Err(hostile(format!(
                "tar entry '{raw_path}' has an absolute path; a layer holds relative paths only"
            )));
        }
        let comps = normalize(&raw_path).map_err(|b| hostile(b.0))?;
        let path = comps.join("/");
        let raw = e.path_bytes();
        let merged = match (std::str::from_utf8(&raw).is_ok(), not_utf8.get(&path)) {
            (true, Some(_)) => true,
            (false, Some(other)) => *other != *raw,
            (false, None) => by_path.contains_key(&path),
            (true, None) => false,
        };
        if merged {
            return Err(hostile(format!(
                "tar entry '{}' has a name that is not UTF-8 and another entry's name differs from it \
                 only there: rcfs keeps names as UTF-8 and would merge the two (rename one of them)",
                raw.escape_ascii()
            )));
        }
        if std::str::from_utf8(&raw).is_err() {
            not_utf8.insert(path.clone(), raw.into_owned());
        }
        let h = e.header().clone();
        let mut entry = TocEntry {
            kind: kind.into(),
            name: if kind == "dir" {
                format!("{path}/")
            } else {
                path.clone()
            },
            mode: i64::from(h.mode().unwrap_or(0o644) & 0o7777),
            uid: h.uid().unwrap_or(0) as i64,
            gid: h.gid().unwrap_or(0) as i64,
            mod_time: rfc3339(h.mtime().unwrap_or(0) as i64, 0),
            ..Default::default()
        };
        if let Some(link) = e.link_name_bytes() {
            let link = String::from_utf8_lossy(&link).into_owned();
            if kind == "hardlink" {
                if link.starts_with('/') {
                    return Err(hostile(format!("hard link '{path}' points to the absolute path '{link}', outside the layer")));
                }
                let t = normalize(&link)
                    .map_err(|b| hostile(format!("hard link '{path}': {}", b.0)))?;
                entry.link_name = t.join("/");
            } else {
                entry.link_name = link;
            }
        }
        if matches!(kind, "char" | "block") {
            entry.dev_major = h.device_major().ok().flatten().unwrap_or(0) as i64;
            entry.dev_minor = h.device_minor().ok().flatten().unwrap_or(0) as i64;
        }
        if let Ok(Some(pax)) = e.pax_extensions() {
            let mut xattrs = HashMap::new();
            for ext in pax.flatten() {
                let (Ok(k), v) = (ext.key(), ext.value_bytes()) else {
                    continue;
                };
                let vs = String::from_utf8_lossy(v);
                match k {
                    "mtime" => {
                        if let Some((s, n)) = pax_time(&vs) {
                            entry.mod_time = rfc3339(s, n);
                        }
                    }
                    "atime" => entry.access_time = pax_time(&vs).and_then(|(s, n)| rfc3339(s, n)),
                    "ctime" => entry.change_time = pax_time(&vs).and_then(|(s, n)| rfc3339(s, n)),
                    k if k.starts_with("SCHILY.xattr.") => {
                        xattrs.insert(
                            k["SCHILY.xattr.".len()..].to_owned(),
                            base64::engine::general_purpose::STANDARD.encode(v),
                        );
                    }
                    _ => {}
                }
            }
            if !xattrs.is_empty() {
                entry.xattrs = Some(xattrs);
            }
        }
        if kind == "reg" {
            let mut w = files.writer()?;
            let mut data = Bounded {
                inner: &mut e,
                expanded: file_bytes,
                compressed,
                limits,
                what: "files",
            };
            let n = io::copy(&mut data, &mut w)
                .map_err(|err| hostile(format!("reading '{path}' from the layer: {err}")))?;
            file_bytes = data.expanded;
            entry.size = n as i64;
            if n > 0 {
                entry.digest = w.commit(None, false)?.to_string();
                nfiles += 1;
                bytes += n;
            }
        }
        if path.is_empty() && kind != "dir" {
            return Err(hostile(format!(
                "tar entry '{raw_path}' names the layer's root as a {kind}"
            )));
        }
        match by_path.get(&path) {
            Some(&i) => {
                if entries[i].kind == "dir" && kind == "dir" {
                    entries[i] = entry;
                } else if entries[i].kind == "dir" || kind == "dir" {
                    return Err(hostile(format!(
                        "'{path}' appears in the layer as a directory and as a {kind}"
                    )));
                } else {
                    entries[i] = entry;
                }
                on_entry(&entries[i]);
            }
            None => {
                if entries.len() == limits.max_entries {
                    return Err(hostile(format!(
                        "the layer has more than {} entries, rcfs's limit for one layer",
                        limits.max_entries
                    )));
                }
                by_path.insert(path, entries.len());
                on_entry(&entry);
                entries.push(entry);
            }
        }
    }
    Ok((
        TocJson {
            version: 1,
            entries,
            tar_split_digest: None,
        },
        nfiles,
        bytes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::toc::{DataIn, Toc};

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h
    }

    fn store() -> (tempfile::TempDir, Cas) {
        let t = tempfile::tempdir().unwrap();
        let c = crate::image::cas::temp_cas(t.path(), "files");
        (t, c)
    }

    /// Names that are not UTF-8 are kept with U+FFFD for each bad byte; two
    /// that would become one (or one that would become another entry's
    /// name) are refused, not merged; the same name twice is an update.
    #[test]
    fn names_that_are_not_utf8_are_never_merged() {
        let with = |names: &[&[u8]]| {
            let tar = tar_of(|b| {
                for n in names {
                    let mut h = header(tar::EntryType::Regular, 1);
                    let p: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(n);
                    h.set_path(p).unwrap();
                    h.set_cksum();
                    b.append(&h, &b"x"[..]).unwrap();
                }
            });
            let (_t, files) = store();
            index_layer(&tar[..], Compression::None, &files, &mut |_| {})
        };
        let ix = with(&[b"caf\xe9", b"caf\xe9", b"ok"]).unwrap();
        let names: Vec<&str> = ix.toc.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["caf\u{fffd}", "ok"]);
        for pair in [
            [&b"x\xe9"[..], b"x\xe8"],
            [b"x\xe9", "x\u{fffd}".as_bytes()],
            ["x\u{fffd}".as_bytes(), b"x\xe9"],
        ] {
            let e = with(&pair).unwrap_err().to_string();
            assert!(e.contains("would merge the two"), "{e}");
        }
    }

    #[test]
    fn indexes_gzip_and_zstd_layers_into_a_toc_and_the_store() {
        let tar = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Directory, 0), "./usr/", &[][..])
                .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 5),
                "./usr/hello",
                &b"hello"[..],
            )
            .unwrap();
            let mut l = header(tar::EntryType::Link, 0);
            b.append_link(&mut l, "usr/again", "./usr/hello").unwrap();
            let mut s = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut s, "abs", "/etc/passwd").unwrap();
            b.append_data(&mut header(tar::EntryType::Regular, 0), ".wh.gone", &[][..])
                .unwrap();
            let long = format!("d/{}", "n".repeat(200));
            b.append_data(&mut header(tar::EntryType::Regular, 2), &long, &b"hi"[..])
                .unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::bulk::compress(&tar, 3).unwrap();
        for (blob, comp) in [
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
            (&tar, Compression::None),
        ] {
            let (_t, files) = store();
            let mut seen = 0;
            let ix = index_layer(&blob[..], comp, &files, &mut |n| seen = n).unwrap();
            assert_eq!(ix.blob_digest, Digest::of(blob));
            assert_eq!((ix.blob_size, seen), (blob.len() as u64, blob.len() as u64));
            assert_eq!(ix.diff_id, Digest::of(&tar));
            assert_eq!((ix.files, ix.bytes), (2, 7));
            let toc = Toc::parse(&ix.toc, DataIn::Store).unwrap();
            let hello = toc.lookup(b"usr/hello").unwrap();
            let again = toc.lookup(b"usr/again").unwrap();
            assert_eq!(toc.node(hello).attr.file_id, toc.node(again).attr.file_id);
            assert_eq!(
                toc.node(toc.lookup(b"abs").unwrap()).target.as_deref(),
                Some(&b"/etc/passwd"[..])
            );
            assert!(toc.lookup(b".wh.gone").is_some());
            assert!(toc
                .lookup(format!("d/{}", "n".repeat(200)).as_bytes())
                .is_some());
            let d = toc.files[toc.node(hello).file as usize].digest.unwrap();
            assert_eq!(files.read(&d).unwrap().unwrap(), b"hello");
        }
    }

    /// A GNU sparse tar: one file of `size` bytes whose data is a 4 KiB
    /// block of `A` at 1 MiB and one of `B` at its end; the rest holes.
    fn sparse_tar(size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("sparse").unwrap();
        h.set_mode(0o644);
        h.set_size(8192);
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(size);
        g.sparse[0].set_offset(1 << 20);
        g.sparse[0].set_length(4096);
        g.sparse[1].set_offset(size - 4096);
        g.sparse[1].set_length(4096);
        h.set_cksum();
        let mut data = vec![b'A'; 4096];
        data.extend_from_slice(&[b'B'; 4096]);
        tar_of(|b| b.append(&h, &data[..]).unwrap())
    }

    #[test]
    fn a_sparse_entry_is_stored_sparse_and_a_layer_expands_within_the_limits() {
        use std::os::unix::fs::MetadataExt;
        let size = 64u64 << 20;
        let tar = sparse_tar(size);
        assert!(tar.len() < 16 << 10, "{}", tar.len());
        let (_t, files) = store();
        let ix = index_layer(&tar[..], Compression::None, &files, &mut |_| {}).unwrap();
        let e = &ix.toc.entries[0];
        assert_eq!((e.name.as_str(), e.size), ("sparse", size as i64));
        let d = Digest::parse(&e.digest).unwrap();
        let f = files.open_object(&d).unwrap().unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), size);
        assert!(
            md.blocks() * 512 < 1 << 20,
            "holes, not written zeros: {} blocks",
            md.blocks()
        );
        let all = files.read(&d).unwrap().unwrap();
        let mut want = vec![0u8; size as usize];
        want[1 << 20..(1 << 20) + 4096].fill(b'A');
        want[size as usize - 4096..].fill(b'B');
        assert!(all == want, "reads back as its data and zeros");

        // Over the limit on bytes: refused, with what to change.
        let small = Limits {
            max_bytes: 32 << 20,
            ..Limits::default()
        };
        let (_t, files) = store();
        let err = index_layer_limited(
            &tar[..],
            Compression::None,
            &files,
            small,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pass 33554432 bytes, rcfs's limit for one layer (RCFS_LAYER_MAX_BYTES"),
            "{err}"
        );
        // Over the ratio past what is free: refused.
        let ratio = Limits {
            max_ratio: 1000,
            ratio_free: 8 << 20,
            ..Limits::default()
        };
        let (_t, files) = store();
        let err = index_layer_limited(
            &tar[..],
            Compression::None,
            &files,
            ratio,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("over rcfs's limit of 1000:1"), "{err}");
        // The uncompressed stream counts too: a gzip layer of zeros.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(
            &mut gz,
            &tar_of(|b| {
                b.append_data(&mut header(tar::EntryType::Regular, 0), "a", &[][..])
                    .unwrap();
            }),
        )
        .unwrap();
        io::Write::write_all(&mut gz, &vec![0u8; 40 << 20]).unwrap();
        let gz = gz.finish().unwrap();
        let (_t, files) = store();
        let err = index_layer_limited(
            &gz[..],
            Compression::Gzip,
            &files,
            small,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("uncompressed bytes pass 33554432"), "{err}");
        // And the number of entries.
        let many = tar_of(|b| {
            for i in 0..11 {
                b.append_data(
                    &mut header(tar::EntryType::Regular, 0),
                    format!("f{i}"),
                    &[][..],
                )
                .unwrap();
            }
        });
        let few = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        let (_t, files) = store();
        let err = index_layer_limited(
            &many[..],
            Compression::None,
            &files,
            few,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than 10 entries"), "{err}");
    }

    #[test]
    fn refuses_hostile_entries() {
        let raw = |name: &str, kind: tar::EntryType, link: Option<&str>| {
            tar_of(|b| {
                let mut h = header(kind, 0);
                // Bypass the builder's own checks: write the name bytes raw.
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            })
        };
        for (tar, want) in [
            (raw("../escape", tar::EntryType::Regular, None), ".."),
            (
                raw("/etc/passwd", tar::EntryType::Regular, None),
                "absolute",
            ),
            (
                raw("h", tar::EntryType::Link, Some("../../etc/shadow")),
                "..",
            ),
            (
                raw("h", tar::EntryType::Link, Some("/etc/shadow")),
                "outside the layer",
            ),
        ] {
            let (_t, files) = store();
            let err = index_layer(&tar[..], Compression::None, &files, &mut |_| {}).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        // The root written as "/" (umoci) is the root.
        let (_t, files) = store();
        let mut root = raw("/", tar::EntryType::Directory, None);
        root.truncate(root.len() - 1024);
        root.extend_from_slice(&tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Regular, 2), "a", &b"hi"[..])
                .unwrap();
        }));
        let ix = index_layer(&root[..], Compression::None, &files, &mut |_| {}).unwrap();
        let toc = Toc::parse(&ix.toc, DataIn::Store).unwrap();
        assert_eq!(toc.node(0).attr.kind, crate::layer::Kind::Dir);
        assert!(toc.lookup(b"a").is_some());
        let (_t, files) = store();
        let err = index_layer(
            &b"\x1f\x8bnot gzip at all"[..],
            Compression::Gzip,
            &files,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::of_media_type("application/x-unknown"), None);
    }
}
