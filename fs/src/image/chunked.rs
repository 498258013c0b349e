//! Writing zstd:chunked blobs (see ../shared/FORMATS.md): a tar+zstd stream
//! that any tool decompresses to an ordinary tar, in which every file's
//! data is its own zstd frames (cut into content-defined chunks), and whose
//! table of contents, in a skippable frame at the end, lets rcfs (and
//! podman's partial pulls) fetch one file or chunk by range.
//!
//! [`ChunkedWriter`] takes entries one at a time (their metadata as a
//! [`TocEntry`] and, for regular files, their bytes), writes the tar headers
//! itself (ustar, with a PAX header for long names, sub-second times and
//! xattrs), and returns the annotations that point at the TOC.
//!
//! The blob also carries the tar's *tar-split* (github.com/vbatts/tar-split,
//! as containers/storage embeds it): the tar's bytes other than file data,
//! as JSON lines, so that a partial pull can rebuild the exact tar (its
//! diff_id) from the files it fetched; podman does no partial pull of a
//! layer without one. Blob layout: the tar's zstd frames, then skippable
//! frames holding the TOC, the tar-split and a 64-byte footer; the TOC
//! names the tar-split's sha256 (`tarSplitDigest`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use base64::Engine;

use super::digest::{Digest, Hasher};
use super::toc::{TocEntry, TocJson};

mod tarsplit;
pub use tarsplit::{tar_size, OpenData, Rebuild};
use tarsplit::{Crc64, TarSplit};

/// Annotation keys, in both spellings podman has used.
pub const CHECKSUM_KEYS: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-checksum",
];
/// rcfs's own annotation: how many bytes from a blob's start hold the
/// files a traced start reads (`rcfs convert --trace`); a lazy mount
/// fetches them at once.
pub const START_KEY: &str = "io.github.rcfs.start-bytes";
/// The annotation of a layer `rcfs convert --trace` wrote: the blob ranges
/// of the chunks a traced start read, in the order it read them, as
/// `START+LEN` pairs separated by commas.
pub const START_ORDER_KEY: &str = "io.github.rcfs.start-order";

/// The value of [`START_ORDER_KEY`] for `ranges` ((start, end) pairs).
pub fn format_ranges(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|(s, e)| format!("{s}+{}", e - s))
        .collect();
    parts.join(",")
}

/// The ranges of a [`START_ORDER_KEY`] value that lie within `[0, end)`;
/// anything malformed is left out (it is a hint).
pub fn parse_ranges(v: &str, end: u64) -> Vec<(u64, u64)> {
    v.split(',')
        .filter_map(|p| {
            let (s, n) = p.split_once('+')?;
            let (s, n): (u64, u64) = (s.trim().parse().ok()?, n.trim().parse().ok()?);
            let e = s.checked_add(n)?;
            (n > 0 && e <= end).then_some((s, e))
        })
        .collect()
}

/// Where the tar-split is (`OFFSET:LENGTH:UNCOMPRESSED`), and its digest
/// as containers/storage 1.53 read it (later ones read `tarSplitDigest`).
pub const TARSPLIT_POSITION_KEY: &str = "io.github.containers.zstd-chunked.tarsplit-position";
pub const TARSPLIT_CHECKSUM_KEY: &str = "io.github.containers.zstd-chunked.tarsplit-checksum";

pub const POSITION_KEYS: [&str; 2] = [
    "io.github.containers.zstd-chunked.manifest-position",
    "io.containers.zstd-chunked.manifest-position",
];

const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";

/// Content-defined chunking: cut where a rolling (gear) hash has its low
/// 16 bits zero, so about every 64 KiB, never under 16 KiB or over 256 KiB.
/// Edits in a file move only the chunks around them.
const CHUNK_MIN: usize = 16 << 10;
const CHUNK_MAX: usize = 256 << 10;
const CHUNK_MASK: u64 = (1 << 16) - 1;

/// The gear table: 256 fixed pseudo-random words.
fn gear() -> &'static [u64; 256] {
    static GEAR: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    GEAR.get_or_init(|| {
        let mut t = [0u64; 256];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for v in t.iter_mut() {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *v = z ^ (z >> 31);
        }
        t
    })
}

/// Where the next chunk of `data` ends.
pub fn chunk_end(data: &[u8]) -> usize {
    if data.len() <= CHUNK_MIN {
        return data.len();
    }
    let g = gear();
    let mut h = 0u64;
    let end = data.len().min(CHUNK_MAX);
    for (i, b) in data[..end].iter().enumerate().skip(CHUNK_MIN) {
        h = (h << 1).wrapping_add(g[*b as usize]);
        if h & CHUNK_MASK == 0 {
            return i + 1;
        }
    }
    end
}

/// A writer that counts and hashes what passes.
struct Counted<W> {
    inner: W,
    n: u64,
    hash: Hasher,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a finished blob is.
#[derive(Debug, Clone)]
pub struct ChunkedBlob {
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub annotations: BTreeMap<String, String>,
    /// The compressed TOC (as stored) and its uncompressed length.
    pub toc: Vec<u8>,
    pub toc_len: u64,
    /// Where file data ends (the TOC frame's start).
    pub data_end: u64,
}

/// See the module doc.
pub struct ChunkedWriter<W: Write> {
    out: Counted<W>,
    /// Tar bytes not yet written: headers and padding, one frame when
    /// flushed.
    meta: Vec<u8>,
    tar_hash: Hasher,
    entries: Vec<TocEntry>,
    level: i32,
    split: TarSplit,
}

/// The PAX record `key=value` with its length prefix.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pad(n: u64) -> usize {
    ((512 - (n % 512)) % 512) as usize
}

/// Seconds and nanoseconds of an RFC 3339 time.
fn parse_time(s: &Option<String>) -> (i64, u32) {
    s.as_deref()
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp(), t.nanosecond()))
        .unwrap_or((0, 0))
}

impl<W: Write> ChunkedWriter<W> {
    pub fn new(out: W, level: i32) -> ChunkedWriter<W> {
        ChunkedWriter {
            out: Counted {
                inner: out,
                n: 0,
                hash: Hasher::new(),
            },
            meta: Vec::new(),
            tar_hash: Hasher::new(),
            entries: Vec::new(),
            level,
            split: TarSplit::default(),
        }
    }

    /// Writes the pending tar bytes as one frame.
    fn flush_meta(&mut self) -> io::Result<()> {
        if !self.meta.is_empty() {
            let frame = zstd::bulk::compress(&self.meta, self.level)?;
            self.out.write_all(&frame)?;
            self.meta.clear();
        }
        Ok(())
    }

    /// Appends tar bytes other than file data (hashed for the diff_id,
    /// and kept for the tar-split).
    fn tar(&mut self, bytes: &[u8]) {
        self.tar_hash.update(bytes);
        self.meta.extend_from_slice(bytes);
        self.split.raw.extend_from_slice(bytes);
    }

    /// The tar header blocks of `e` (`size` bytes of data follow).
    fn header(&self, e: &TocEntry, size: u64) -> io::Result<Vec<u8>> {
        let typ = match e.kind.as_str() {
            "reg" => tar::EntryType::Regular,
            "dir" => tar::EntryType::Directory,
            "symlink" => tar::EntryType::Symlink,
            "hardlink" => tar::EntryType::Link,
            "char" => tar::EntryType::Char,
            "block" => tar::EntryType::Block,
            "fifo" => tar::EntryType::Fifo,
            t => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("entry type {t}"),
                ))
            }
        };
        let (secs, nanos) = parse_time(&e.mod_time);
        let mut pax = Vec::new();
        let name = e.name.as_bytes();
        if name.len() > 100 {
            pax_record(&mut pax, "path", name);
        }
        if e.link_name.len() > 100 {
            pax_record(&mut pax, "linkpath", e.link_name.as_bytes());
        }
        if nanos != 0 || secs < 0 {
            let frac = format!("{nanos:09}");
            pax_record(
                &mut pax,
                "mtime",
                format!("{secs}.{}", frac.trim_end_matches('0')).as_bytes(),
            );
        }
        // Times the TOC has must be in the header too: a partial pull
        // compares them.
        for (key, t) in [("atime", &e.access_time), ("ctime", &e.change_time)] {
            if t.is_some() {
                let (secs, nanos) = parse_time(t);
                let frac = format!("{nanos:09}");
                let frac = frac.trim_end_matches('0');
                let v = if frac.is_empty() {
                    secs.to_string()
                } else {
                    format!("{secs}.{frac}")
                };
                pax_record(&mut pax, key, v.as_bytes());
            }
        }
        for (k, v) in e.xattrs.iter().flatten() {
            let v = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("xattr {k} of {}", e.name),
                    )
                })?;
            pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), &v);
        }
        let mut out = Vec::new();
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            let pname = format!(
                "PaxHeaders/{}",
                String::from_utf8_lossy(&name[..name.len().min(80)])
            );
            h.as_ustar_mut().expect("ustar").name[..pname.len().min(100)]
                .copy_from_slice(&pname.as_bytes()[..pname.len().min(100)]);
            h.set_size(pax.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(secs.max(0) as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&pax);
            out.resize(out.len() + pad(pax.len() as u64), 0);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        {
            let u = h.as_ustar_mut().expect("ustar");
            let n = name.len().min(100);
            u.name[..n].copy_from_slice(&name[..n]);
            let l = e.link_name.as_bytes();
            let n = l.len().min(100);
            u.linkname[..n].copy_from_slice(&l[..n]);
        }
        h.set_mode(e.mode as u32);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_size(size);
        h.set_mtime(secs.max(0) as u64);
        if matches!(typ, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev_major as u32)?;
            h.set_device_minor(e.dev_minor as u32)?;
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        Ok(out)
    }

    /// Blob bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.n
    }

    /// Adds an entry; a regular file's `size` bytes come from `data`.
    pub fn add(&mut self, mut e: TocEntry, data: Option<&mut dyn Read>) -> io::Result<()> {
        let size = if e.kind == "reg" {
            e.size.max(0) as u64
        } else {
            0
        };
        if e.kind != "reg" {
            e.size = 0;
        }
        let header = self.header(&e, size)?;
        self.tar(&header);
        e.offset = 0;
        e.end_offset = 0;
        e.chunk_size = 0;
        e.chunk_offset = 0;
        e.chunk_digest.clear();
        e.chunk_type.clear();
        if size == 0 {
            e.digest.clear();
            self.split.file(&e.name, 0, None);
            self.entries.push(e);
            return Ok(());
        }
        let data = data.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no data for {}", e.name),
            )
        })?;
        self.flush_meta()?;
        self.split.segment();
        let mut crc = Crc64::new();
        let mut file_hash = Hasher::new();
        let mut chunks: Vec<TocEntry> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_MAX * 2);
        let mut done = 0u64;
        let mut read = 0u64;
        while done < size {
            while buf.len() < CHUNK_MAX && read < size {
                let want = (CHUNK_MAX - buf.len()).min((size - read) as usize);
                let old = buf.len();
                buf.resize(old + want, 0);
                let n = data.read(&mut buf[old..])?;
                buf.truncate(old + n);
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended after {done} of {size} bytes", e.name),
                ));
            }
            let cut = chunk_end(&buf);
            let piece = &buf[..cut];
            let start = self.out.n;
            self.out
                .write_all(&zstd::bulk::compress(piece, self.level)?)?;
            file_hash.update(piece);
            crc.update(piece);
            self.tar_hash.update(piece);
            chunks.push(TocEntry {
                kind: "chunk".into(),
                name: e.name.clone(),
                offset: start as i64,
                chunk_offset: done as i64,
                chunk_size: cut as i64,
                chunk_digest: Digest::of(piece).to_string(),
                chunk_type: if piece.iter().all(|b| *b == 0) {
                    "zeros".into()
                } else {
                    String::new()
                },
                ..Default::default()
            });
            done += cut as u64;
            buf.drain(..cut);
        }
        let digest = file_hash.finish().to_string();
        self.split.file(&e.name, size, Some(crc.finish()));
        let end = self.out.n as i64;
        let padding = vec![0u8; pad(size)];
        self.tar(&padding);
        e.digest = digest;
        e.offset = chunks[0].offset;
        e.end_offset = end;
        if chunks.len() == 1 {
            self.entries.push(e);
        } else {
            let first = chunks.remove(0);
            e.chunk_size = first.chunk_size;
            e.chunk_digest = first.chunk_digest;
            e.chunk_type = first.chunk_type;
            self.entries.push(e);
            self.entries.extend(chunks);
        }
        Ok(())
    }

    /// Ends the tar, writes the TOC and the footer; returns what the blob
    /// is and its annotations.
    pub fn finish(mut self) -> io::Result<(W, ChunkedBlob)> {
        self.tar(&[0u8; 1024]);
        self.flush_meta()?;
        // The last padding and the end blocks.
        self.split.segment();
        let split_len = self.split.lines.len() as u64;
        let split = zstd::bulk::compress(&self.split.lines, self.level)?;
        let split_digest = Digest::of(&split);
        let json = serde_json::to_vec(&TocJson {
            version: 1,
            entries: std::mem::take(&mut self.entries),
            tar_split_digest: Some(split_digest.to_string()),
        })
        .map_err(io::Error::other)?;
        let toc = zstd::bulk::compress(&json, self.level)?;
        let data_end = self.out.n;
        let toc_offset = data_end + 8;
        for frame in [&toc, &split] {
            self.out.write_all(&SKIPPABLE_MAGIC)?;
            self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
            self.out.write_all(frame)?;
        }
        let split_offset = toc_offset + toc.len() as u64 + 8;
        let mut footer = Vec::with_capacity(64);
        for v in [
            toc_offset,
            toc.len() as u64,
            json.len() as u64,
            1,
            split_offset,
            split.len() as u64,
            split_len,
        ] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.extend_from_slice(FOOTER_MAGIC);
        self.out.write_all(&SKIPPABLE_MAGIC)?;
        self.out.write_all(&(footer.len() as u32).to_le_bytes())?;
        self.out.write_all(&footer)?;
        self.out.flush()?;
        let toc_digest = Digest::of(&toc);
        let position = format!("{toc_offset}:{}:{}:1", toc.len(), json.len());
        let mut annotations = BTreeMap::new();
        for k in CHECKSUM_KEYS {
            annotations.insert(k.to_owned(), toc_digest.to_string());
        }
        for k in POSITION_KEYS {
            annotations.insert(k.to_owned(), position.clone());
        }
        annotations.insert(
            TARSPLIT_POSITION_KEY.to_owned(),
            format!("{split_offset}:{}:{split_len}", split.len()),
        );
        annotations.insert(TARSPLIT_CHECKSUM_KEY.to_owned(), split_digest.to_string());
        let Counted { inner, n, hash } = self.out;
        Ok((
            inner,
            ChunkedBlob {
                digest: hash.finish(),
                size: n,
                diff_id: self.tar_hash.finish(),
                annotations,
                toc,
                toc_len: json.len() as u64,
                data_end,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::toc::{DataIn, Toc};

    pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    pub(super) fn entry(kind: &str, name: &str, size: usize) -> TocEntry {
        TocEntry {
            kind: kind.into(),
            name: name.into(),
            mode: 0o644,
            size: size as i64,
            mod_time: Some("2023-11-14T22:13:20.5Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_blob_any_tool_reads_as_the_tar_and_rcfs_reads_by_range() {
        let big = noise(1_000_000, 1);
        let zeros = vec![0u8; 300_000];
        let long = format!("d/{}", "x".repeat(150));
        let mut w = ChunkedWriter::new(Vec::new(), 3);
        w.add(entry("dir", "d/", 0), None).unwrap();
        w.add(entry("reg", "d/big", big.len()), Some(&mut &big[..]))
            .unwrap();
        w.add(entry("reg", "zeros", zeros.len()), Some(&mut &zeros[..]))
            .unwrap();
        w.add(entry("reg", &long, 3), Some(&mut &b"abc"[..]))
            .unwrap();
        w.add(entry("reg", "empty", 0), None).unwrap();
        let mut x = entry("symlink", "link", 0);
        x.link_name = "d/big".into();
        x.xattrs = Some(
            [(
                "user.k".to_owned(),
                base64::engine::general_purpose::STANDARD.encode(b"v\0bin"),
            )]
            .into(),
        );
        w.add(x, None).unwrap();
        let (blob, info) = w.finish().unwrap();
        assert_eq!(info.digest, Digest::of(&blob));
        // Plain zstd gives the tar (skippable frames skipped), and the tar
        // crate reads it back.
        let tar_bytes = zstd::stream::decode_all(&blob[..]).unwrap();
        assert_eq!(Digest::of(&tar_bytes), info.diff_id);
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if path == "link" {
                let x = e
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .flatten()
                    .find(|x| x.key() == Ok("SCHILY.xattr.user.k"))
                    .unwrap();
                assert_eq!(x.value_bytes(), b"v\0bin");
                assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("d/big"));
            }
            if path == "d/big" {
                assert!(data == big);
            }
            seen.push(path);
        }
        assert_eq!(
            seen,
            ["d/", "d/big", "zeros", long.as_str(), "empty", "link"]
        );
        // The annotations find the TOC; its ranges decompress to the files.
        let pos = &info.annotations[POSITION_KEYS[1]];
        let p: Vec<u64> = pos.split(':').map(|n| n.parse().unwrap()).collect();
        let toc_bytes = &blob[p[0] as usize..(p[0] + p[1]) as usize];
        assert_eq!(
            Digest::of(toc_bytes).to_string(),
            info.annotations[CHECKSUM_KEYS[0]]
        );
        let json: TocJson =
            serde_json::from_slice(&zstd::stream::decode_all(toc_bytes).unwrap()).unwrap();
        let toc = Toc::parse(
            &json,
            DataIn::Blob {
                data_end: info.data_end,
            },
        )
        .unwrap();
        let f = &toc.files[toc.node(toc.lookup(b"d/big").unwrap()).file as usize];
        assert!(
            f.chunks.len() > 4,
            "content-defined chunks: {}",
            f.chunks.len()
        );
        let mut got = Vec::new();
        for c in f.chunks.iter() {
            let crate::image::toc::Source::Blob { start, end } = c.source else {
                panic!()
            };
            got.extend(zstd::stream::decode_all(&blob[start as usize..end as usize]).unwrap());
        }
        assert!(got == big);
        let z = &toc.files[toc.node(toc.lookup(b"zeros").unwrap()).file as usize];
        assert!(z
            .chunks
            .iter()
            .all(|c| c.source == crate::image::toc::Source::Zeros));
        assert_eq!(toc.node(toc.lookup(long.as_bytes()).unwrap()).attr.size, 3);
    }

    #[test]
    fn chunks_are_content_defined() {
        let data = noise(2_000_000, 2);
        let cuts = |d: &[u8]| {
            let mut v = Vec::new();
            let mut at = 0;
            while at < d.len() {
                at += chunk_end(&d[at..]);
                v.push(at);
            }
            v
        };
        let a = cuts(&data);
        assert!(a.windows(2).all(|w| w[1] - w[0] <= CHUNK_MAX));
        // Inserting bytes at the front shifts the later cuts, not changes them.
        let mut shifted = vec![7u8; 1000];
        shifted.extend_from_slice(&data);
        let b: std::collections::HashSet<usize> =
            cuts(&shifted).into_iter().map(|c| c - 1000).collect();
        let same = a.iter().filter(|c| b.contains(c)).count();
        assert!(same * 10 >= a.len() * 8, "{same} of {} cuts kept", a.len());
    }
}
