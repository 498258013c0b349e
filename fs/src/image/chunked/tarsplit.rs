//! The tar-split of a zstd:chunked blob (github.com/vbatts/tar-split, as
//! containers/storage embeds it): the tar's bytes other than file data, as
//! JSON lines (a segment of raw bytes, or a file entry with the CRC-64 of
//! its data), from which a partial pull rebuilds the exact tar.

use std::io::{self, BufRead, Read};

use base64::Engine;

/// CRC-64 with the ISO polynomial, reflected, as Go's `hash/crc64` with
/// `crc64.ISO` computes it (what tar-split records of each file).
#[derive(Clone, Copy)]
pub(crate) struct Crc64(u64);

impl Crc64 {
    fn table() -> &'static [u64; 256] {
        static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let mut t = [0u64; 256];
            for (i, v) in t.iter_mut().enumerate() {
                let mut c = i as u64;
                for _ in 0..8 {
                    c = if c & 1 == 1 {
                        (c >> 1) ^ 0xd800_0000_0000_0000
                    } else {
                        c >> 1
                    };
                }
                *v = c;
            }
            t
        })
    }

    pub(crate) fn new() -> Crc64 {
        Crc64(!0)
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        let t = Self::table();
        for &b in data {
            self.0 = t[((self.0 ^ u64::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        !self.0
    }
}

/// The tar-split of a tar being written: JSON lines, one per piece.
#[derive(Default)]
pub(super) struct TarSplit {
    pub(super) lines: Vec<u8>,
    position: u64,
    /// Tar bytes other than file data since the last entry line.
    pub(super) raw: Vec<u8>,
}

impl TarSplit {
    fn line(&mut self, mut obj: serde_json::Map<String, serde_json::Value>) {
        obj.insert("position".into(), self.position.into());
        self.position += 1;
        serde_json::to_writer(&mut self.lines, &obj).expect("JSON of plain values");
        self.lines.push(b'\n');
    }

    /// The raw bytes gathered so far, as a segment.
    pub(super) fn segment(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.raw);
        self.raw.clear();
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), 2.into());
        obj.insert("payload".into(), b64.into());
        self.line(obj);
    }

    /// The entry `name`, after its header: `size` bytes of data with CRC
    /// `crc` (`None` when it has none).
    pub(super) fn file(&mut self, name: &str, size: u64, crc: Option<u64>) {
        self.segment();
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), 1.into());
        obj.insert("name".into(), name.into());
        if size > 0 {
            obj.insert("size".into(), size.into());
        }
        obj.insert(
            "payload".into(),
            match crc {
                Some(c) => base64::engine::general_purpose::STANDARD
                    .encode(c.to_be_bytes())
                    .into(),
                None => serde_json::Value::Null,
            },
        );
        self.line(obj);
    }
}

/// One line of a tar-split, as github.com/vbatts/tar-split writes it.
#[derive(serde::Deserialize)]
struct Line {
    /// 1: a tar entry whose data follows (`payload`: its CRC-64, big
    /// endian); 2: raw tar bytes (`payload`).
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    /// The name when it is not UTF-8.
    #[serde(default, with = "base64_opt")]
    name_raw: Option<Vec<u8>>,
    #[serde(default)]
    size: u64,
    #[serde(default, with = "base64_opt")]
    payload: Option<Vec<u8>>,
}

mod base64_opt {
    use base64::Engine;
    use serde::Deserialize;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// The size of the tar a tar-split (`lines`, JSON) makes: its raw bytes
/// and the sizes of its files' data.
pub fn tar_size(mut lines: impl BufRead) -> io::Result<u64> {
    let mut line = Vec::new();
    let mut size = 0u64;
    loop {
        line.clear();
        let n = (&mut lines)
            .take(LINE_MAX as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(size);
        }
        if n > LINE_MAX {
            return Err(bad(format!("a line is longer than {LINE_MAX} bytes")));
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let l: Line = serde_json::from_slice(text)
            .map_err(|e| bad(format!("a line is not what tar-split writes: {e}")))?;
        let add = match l.kind {
            2 => l.payload.map_or(0, |p| p.len() as u64),
            _ => l.size,
        };
        size = size
            .checked_add(add)
            .ok_or_else(|| bad("the tar it makes is larger than 2^64 bytes".into()))?;
    }
}

/// The longest tar-split line read: a segment holds the headers between
/// two files' data (PAX records with xattrs included), in base64.
pub const LINE_MAX: usize = 16 << 20;

/// Opens the data of tar entry `name` (as its header spells it), of
/// `size` bytes.
pub type OpenData<'a> = dyn FnMut(&[u8], u64) -> io::Result<Box<dyn Read + 'a>> + 'a;

/// A tar put back together from its tar-split (`lines`, JSON) and its
/// files' data (from `open`), read as a stream: each file's data must
/// have the size and CRC-64 the tar-split records, or the read fails
/// (`InvalidData`).
pub struct Rebuild<'a, R> {
    lines: R,
    open: Box<OpenData<'a>>,
    line: Vec<u8>,
    piece: Piece<'a>,
}

enum Piece<'a> {
    Done,
    Bytes(Vec<u8>, usize),
    Data {
        name: String,
        from: Box<dyn Read + 'a>,
        left: u64,
        crc: Crc64,
        want: Option<u64>,
    },
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tar-split: {msg}"))
}

impl<'a, R: BufRead> Rebuild<'a, R> {
    pub fn new(lines: R, open: Box<OpenData<'a>>) -> Rebuild<'a, R> {
        Rebuild {
            lines,
            open,
            line: Vec::new(),
            piece: Piece::Done,
        }
    }

    /// Reads the next line into the piece being read; `false` at the end.
    fn next_piece(&mut self) -> io::Result<bool> {
        self.line.clear();
        let n = (&mut self.lines)
            .take(LINE_MAX as u64 + 1)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(false);
        }
        if n > LINE_MAX {
            return Err(bad(format!("a line is longer than {LINE_MAX} bytes")));
        }
        let text = self.line.trim_ascii();
        if text.is_empty() {
            return Ok(true);
        }
        let l: Line = serde_json::from_slice(text)
            .map_err(|e| bad(format!("a line is not what tar-split writes: {e}")))?;
        self.piece = match l.kind {
            2 => Piece::Bytes(l.payload.unwrap_or_default(), 0),
            1 => {
                let name = match (l.name_raw, l.name) {
                    (Some(raw), _) => raw,
                    (None, Some(n)) => n.into_bytes(),
                    (None, None) => return Err(bad("an entry has no name".into())),
                };
                let want = match l.payload.as_deref() {
                    None | Some([]) => None,
                    Some(p) => Some(u64::from_be_bytes(p.try_into().map_err(|_| {
                        bad(format!(
                            "the CRC of '{}' is not 8 bytes",
                            String::from_utf8_lossy(&name)
                        ))
                    })?)),
                };
                let from = match l.size {
                    0 => Box::new(io::empty()) as Box<dyn Read + 'a>,
                    n => (self.open)(&name, n)?,
                };
                Piece::Data {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    from,
                    left: l.size,
                    crc: Crc64::new(),
                    want: want.filter(|_| l.size > 0),
                }
            }
            k => {
                return Err(bad(format!(
                    "a line has type {k}, neither 1 (file) nor 2 (segment)"
                )))
            }
        };
        Ok(true)
    }
}

impl<R: BufRead> Read for Rebuild<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.piece {
                Piece::Bytes(b, at) if *at < b.len() => {
                    let n = buf.len().min(b.len() - *at);
                    buf[..n].copy_from_slice(&b[*at..*at + n]);
                    *at += n;
                    return Ok(n);
                }
                Piece::Data {
                    name,
                    from,
                    left,
                    crc,
                    ..
                } if *left > 0 => {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = from.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad(format!(
                            "the data of '{name}' ended {left} bytes early"
                        )));
                    }
                    crc.update(&buf[..n]);
                    *left -= n as u64;
                    return Ok(n);
                }
                Piece::Data {
                    name,
                    crc,
                    want: Some(w),
                    ..
                } if crc.finish() != *w => {
                    return Err(bad(format!(
                        "the data of '{name}' does not have the CRC-64 the tar-split records"
                    )));
                }
                _ => {
                    self.piece = Piece::Done;
                    if !self.next_piece()? {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{entry, noise};
    use super::super::*;
    use super::*;

    #[test]
    fn crc64_is_go_iso() {
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xb909_56c7_75a4_1001);
    }

    /// The tar-split, read as containers/storage reads it: found by its
    /// annotation, checked against the TOC's `tarSplitDigest`; segments
    /// and file contents (their CRCs checked) rebuild the tar byte for byte;
    /// each segment holds one header, after the previous file's padding,
    /// that agrees with the TOC entry of its name.
    #[test]
    fn the_tar_split_rebuilds_the_tar_and_agrees_with_the_toc() {
        use std::collections::HashMap;
        let b64 = base64::engine::general_purpose::STANDARD;
        let big = noise(700_000, 3);
        let long = format!("d/{}", "y".repeat(130));
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut w = ChunkedWriter::new(Vec::new(), 3);
        w.add(entry("dir", "d/", 0), None).unwrap();
        for (name, data) in [("d/big", big.clone()), (long.as_str(), b"abc".to_vec())] {
            w.add(entry("reg", name, data.len()), Some(&mut &data[..]))
                .unwrap();
            files.insert(name.to_owned(), data);
        }
        let mut h = entry("hardlink", "d/big-link", 0);
        h.link_name = "d/big".into();
        w.add(h, None).unwrap();
        let mut x = entry("reg", "empty", 0);
        x.access_time = Some("2024-01-02T03:04:05.25Z".into());
        x.xattrs = Some([("user.k".to_owned(), b64.encode(b"v"))].into());
        w.add(x, None).unwrap();
        let (blob, info) = w.finish().unwrap();
        let tar_bytes = zstd::stream::decode_all(&blob[..]).unwrap();

        let pos: Vec<u64> = info.annotations[TARSPLIT_POSITION_KEY]
            .split(':')
            .map(|n| n.parse().unwrap())
            .collect();
        let packed = &blob[pos[0] as usize..(pos[0] + pos[1]) as usize];
        let p: Vec<u64> = info.annotations[POSITION_KEYS[0]]
            .split(':')
            .map(|n| n.parse().unwrap())
            .collect();
        let toc: TocJson = serde_json::from_slice(
            &zstd::stream::decode_all(&blob[p[0] as usize..(p[0] + p[1]) as usize]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            toc.tar_split_digest.as_deref(),
            Some(Digest::of(packed).to_string().as_str())
        );
        assert_eq!(
            info.annotations[TARSPLIT_CHECKSUM_KEY],
            Digest::of(packed).to_string()
        );
        let lines = zstd::stream::decode_all(packed).unwrap();
        assert_eq!(lines.len() as u64, pos[2]);
        // What podman is told the layer's size is: the tar's, exactly.
        assert_eq!(tar_size(&lines[..]).unwrap(), tar_bytes.len() as u64);
        // The footer says the same.
        let footer = &blob[blob.len() - 64..];
        let f = |i: usize| u64::from_le_bytes(footer[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((f(4), f(5), f(6)), (pos[0], pos[1], pos[2]));

        let mut rebuilt = Vec::new();
        let mut by_name: HashMap<&str, &TocEntry> = toc
            .entries
            .iter()
            .filter(|e| e.kind != "chunk")
            .map(|e| (e.name.as_str(), e))
            .collect();
        let mut pending_pad = 0usize;
        for (i, line) in lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["position"], i as u64, "{v}");
            match v["type"].as_u64().unwrap() {
                2 => {
                    let seg = b64.decode(v["payload"].as_str().unwrap()).unwrap();
                    rebuilt.extend_from_slice(&seg);
                    let rest = &seg[pending_pad..];
                    let mut ar = tar::Archive::new(rest);
                    let Some(e) = ar.entries().unwrap().next() else {
                        pending_pad = 0;
                        continue;
                    };
                    let e = e.unwrap();
                    let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                    let name = match e.header().entry_type() {
                        tar::EntryType::Directory if !name.ends_with('/') => name + "/",
                        _ => name,
                    };
                    let t = by_name
                        .remove(name.as_str())
                        .unwrap_or_else(|| panic!("{name}"));
                    let hd = e.header();
                    assert_eq!(hd.mode().unwrap() as i64, t.mode, "{name}");
                    assert_eq!(hd.entry_size().unwrap() as i64, t.size, "{name}");
                    let link = e
                        .link_name_bytes()
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    assert_eq!(link, t.link_name.as_bytes(), "{name}");
                    let size = hd.entry_size().unwrap();
                    pending_pad = pad(size);
                }
                1 => {
                    let name = v["name"].as_str().unwrap();
                    let size = v["size"].as_u64().unwrap_or(0);
                    if size == 0 {
                        assert!(v["payload"].is_null(), "{v}");
                        continue;
                    }
                    let data = &files[name];
                    assert_eq!(data.len() as u64, size);
                    let mut c = Crc64::new();
                    c.update(data);
                    assert_eq!(
                        v["payload"].as_str().unwrap(),
                        b64.encode(c.finish().to_be_bytes())
                    );
                    rebuilt.extend_from_slice(data);
                }
                t => panic!("type {t}"),
            }
        }
        assert!(rebuilt == tar_bytes, "the tar-split rebuilds the tar");
        assert!(
            by_name.is_empty(),
            "TOC entries missing from the tar-split: {by_name:?}"
        );

        // [`Rebuild`] does the same as a stream; data that is not what the
        // tar-split records (other bytes, fewer bytes) fails the read.
        let rebuild = |files: HashMap<String, Vec<u8>>| {
            let open = move |name: &[u8], _: u64| -> io::Result<Box<dyn Read>> {
                let d = files[std::str::from_utf8(name).unwrap()].clone();
                Ok(Box::new(io::Cursor::new(d)))
            };
            let mut out = Vec::new();
            Rebuild::new(&lines[..], Box::new(open))
                .read_to_end(&mut out)
                .map(|_| out)
        };
        assert!(rebuild(files.clone()).unwrap() == tar_bytes);
        let mut other = files.clone();
        other.get_mut("d/big").unwrap()[1000] ^= 1;
        let e = rebuild(other).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("'d/big' does not have the CRC-64"),
            "{e}"
        );
        let mut short = files;
        short.get_mut("d/big").unwrap().truncate(500);
        let e = rebuild(short).unwrap_err();
        assert!(
            e.to_string().contains("'d/big' ended 699500 bytes early"),
            "{e}"
        );
    }

    #[test]
    fn a_tar_split_line_that_is_not_one_is_refused() {
        for (lines, says) in [
            (&b"{\"type\":3,\"position\":0}\n"[..], "type 3"),
            (b"{\"type\":1,\"size\":3,\"position\":0}\n", "no name"),
            (
                b"{\"type\":1,\"name\":\"a\",\"size\":3,\"payload\":\"AAE=\"}\n",
                "not 8 bytes",
            ),
            (b"not json\n", "not what tar-split writes"),
        ] {
            let open =
                |_: &[u8], _: u64| -> io::Result<Box<dyn Read>> { Ok(Box::new(&b"abc"[..])) };
            let e = Rebuild::new(lines, Box::new(open))
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
