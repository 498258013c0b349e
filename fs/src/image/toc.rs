//! Tables of contents: what an image layer holds, without its data.
//!
//! The JSON form is zstd:chunked's (see ../shared/FORMATS.md): a list of
//! tar-like entries, each regular file with the sha256 of its contents and,
//! in a zstd:chunked blob, the compressed byte range of each of its chunks.
//! rcfs writes the same JSON for layers it indexes itself (ordinary tar
//! layers, whose file contents go into the store whole, by digest): one
//! parser, one layer type.
//!
//! [`Toc::parse`] turns the JSON into the in-memory tree a layer serves
//! from, and refuses what could make it serve wrong bytes or names: paths
//! with `..`, names over NAME_MAX, entries twice, a file inside a
//! non-directory, hard links to nothing, chunks that do not tile their file,
//! compressed ranges that overlap or leave the blob's data.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use crate::layer::{Attr, Kind, Time};

/// One entry of the JSON form (`FileMetadata` in containers/storage).
/// Fields are omitted when zero or empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    #[serde(default, rename = "modtime", skip_serializing_if = "Option::is_none")]
    pub mod_time: Option<String>,
    #[serde(
        default,
        rename = "accesstime",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_time: Option<String>,
    #[serde(
        default,
        rename = "changetime",
        skip_serializing_if = "Option::is_none"
    )]
    pub change_time: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    /// Name → base64 of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<HashMap<String, String>>,
    /// `sha256:HEX` of the whole file; empty for empty files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub end_offset: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_offset: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_type: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The JSON document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocJson {
    pub version: i64,
    /// At most [`MAX_ENTRIES`], counted while they are read.
    #[serde(deserialize_with = "bounded_entries")]
    pub entries: Vec<TocEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_split_digest: Option<String>,
}

/// The most entries a table of contents may list (a layer's files, dirs,
/// links and chunks): what its parsed form may cost in memory, about 1 KiB
/// each (see [`Toc::parse`]).
pub const MAX_ENTRIES: usize = 1 << 20;

/// The most bytes a chunk fetched from a blob may hold, compressed or
/// not: one fetch allocates this much for its frame and as much for its
/// bytes. rcfs cuts chunks of at most 256 KiB, containers/storage of about
/// 64 KiB on average.
pub const MAX_CHUNK: u64 = 64 << 20;

/// The longest path (and hard link or symlink target) an entry may have:
/// the kernel's `PATH_MAX`.
pub const MAX_PATH: usize = 4096;

/// The most xattrs an entry may have, and the kernel's limits on one's
/// name (`XATTR_NAME_MAX`) and value (`XATTR_SIZE_MAX`).
pub const MAX_XATTRS: usize = 128;
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 64 << 10;

/// `entries`, refused once there are more than [`MAX_ENTRIES`] (before the
/// next one is built, so a huge list costs no more than the limit).
fn bounded_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TocEntry>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<TocEntry>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX_ENTRIES} entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<TocEntry>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(e) = seq.next_element()? {
                if v.len() == MAX_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_ENTRIES} entries, rcfs's limit for one layer"
                    )));
                }
                v.push(e);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Entries)
}

/// Where a chunk's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One zstd frame at `[start, end)` of the layer blob.
    Blob { start: u64, end: u64 },
    /// A run of zeros: nothing to fetch.
    Zeros,
    /// Already in the store under its digest (layers rcfs indexed).
    Stored,
}

/// A piece of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where it starts in the file.
    pub offset: u64,
    pub len: u64,
    /// sha256 of its uncompressed bytes.
    pub digest: Digest,
    pub source: Source,
}

/// The contents of a regular file (shared by its hard links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub size: u64,
    /// sha256 of the whole file; `None` for an empty file.
    pub digest: Option<Digest>,
    /// In file order, tiling `[0, size)`.
    pub chunks: Box<[Chunk]>,
    /// Entries that are names of this file.
    pub links: Vec<u32>,
}

/// No entry / no file.
pub const NONE: u32 = u32::MAX;

/// An xattr's name and value.
pub type Xattr = (Box<[u8]>, Box<[u8]>);

/// One entry of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub parent: u32,
    /// The last component (empty for the root).
    pub name: Box<[u8]>,
    pub attr: Attr,
    /// A symlink's target.
    pub target: Option<Box<[u8]>>,
    pub xattrs: Vec<Xattr>,
    /// A directory's entries.
    pub children: Vec<u32>,
    /// A regular file's data in [`Toc::files`], or [`NONE`].
    pub file: u32,
}

/// A layer's tree, validated.
#[derive(Debug)]
pub struct Toc {
    /// Entry 0 is the root directory.
    pub nodes: Vec<Node>,
    pub files: Vec<FileData>,
    by_path: HashMap<Box<[u8]>, u32>,
}

/// Why a table of contents was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadToc(pub String);

impl fmt::Display for BadToc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed table of contents: {}", self.0)
    }
}

impl std::error::Error for BadToc {}

fn bad<T>(msg: impl Into<String>) -> Result<T, BadToc> {
    Err(BadToc(msg.into()))
}

/// Where file data is: in a blob (with the offset where its data ends, the
/// start of the TOC's frame), or in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataIn {
    Blob { data_end: u64 },
    Store,
}

/// The longest name a union can serve.
const NAME_MAX: usize = 255;

/// A tar name as a list of plain components: leading `./` and `/` and
/// trailing `/` go; `.` and empty components are skipped; `..` is refused.
pub fn normalize(name: &str) -> Result<Vec<&str>, BadToc> {
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return bad(format!("entry '{name}' has a '..' component")),
            c if c.len() > NAME_MAX => {
                return bad(format!(
                    "entry '{name}' has a name longer than {NAME_MAX} bytes"
                ))
            }
            c if c.contains('\0') => return bad(format!("entry '{name}' has a NUL byte")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_time(s: &Option<String>, what: &str, name: &str) -> Result<Option<Time>, BadToc> {
    let Some(s) = s else { return Ok(None) };
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .or_else(|_| bad(format!("entry '{name}' has a bad {what} '{s}'")))?;
    let ns = t.unix_timestamp_nanos();
    // Go's zero time (year 1) means "not set".
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some(Time(i64::try_from(ns).unwrap_or(i64::MAX))))
}

/// A time in the spelling of TOCs (RFC 3339, nanoseconds).
pub fn rfc3339(t: Time) -> Option<String> {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0)).ok()?;
    dt.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn parse_digest(s: &str, what: &str, name: &str) -> Result<Digest, BadToc> {
    Digest::parse(s).or_else(|_| bad(format!("entry '{name}' has a bad {what} '{s}'")))
}

fn u64_of(n: i64, what: &str, name: &str) -> Result<u64, BadToc> {
    u64::try_from(n).or_else(|_| bad(format!("entry '{name}' has a negative {what}")))
}

/// Why a chunk was refused for its size.
fn too_big(path: &str, n: u64, what: &str) -> String {
    format!(
        "'{path}' has a chunk of {n} bytes {what}, over rcfs's limit of {} MiB for one chunk \
         fetched lazily; pull the image with --full to index it whole",
        MAX_CHUNK >> 20
    )
}

fn id32(n: usize) -> Result<u32, BadToc> {
    match u32::try_from(n) {
        Ok(n) if n != NONE => Ok(n),
        _ => bad("too many entries"),
    }
}

impl Toc {
    /// The tree of `json`, whose file data is where `data` says.
    pub fn parse(json: &TocJson, data: DataIn) -> Result<Toc, BadToc> {
        if json.version != 1 {
            return bad(format!("version {} (rcfs reads version 1)", json.version));
        }
        let root_attr = Attr {
            size: 4096,
            blocks: 8,
            file_id: 0,
            atime: Time(0),
            mtime: Time(0),
            ctime: Time(0),
            uid: 0,
            gid: 0,
            nlink: 2,
            rdev: 0,
            perm: 0o755,
            kind: Kind::Dir,
        };
        let mut toc = Toc {
            nodes: vec![Node {
                parent: 0,
                name: Box::new([]),
                attr: root_attr,
                target: None,
                xattrs: Vec::new(),
                children: Vec::new(),
                file: NONE,
            }],
            files: Vec::new(),
            by_path: HashMap::new(),
        };
        toc.by_path.insert(Box::new([]), 0);
        // Entries that were made up as parents, which a later entry may
        // still describe.
        let mut implied: Vec<bool> = vec![true];
        let mut hardlinks: Vec<(u32, String)> = Vec::new();
        let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
        let entries = &json.entries;
        let mut i = 0;
        while i < entries.len() {
            let e = &entries[i];
            i += 1;
            let kind = match e.kind.as_str() {
                "reg" => Kind::File,
                "dir" => Kind::Dir,
                "symlink" => Kind::Symlink,
                "hardlink" => Kind::File,
                "char" => Kind::CharDev,
                "block" => Kind::BlockDev,
                "fifo" => Kind::Fifo,
                "chunk" => return bad(format!("chunk of '{}' follows no regular file", e.name)),
                t => return bad(format!("entry '{}' has unknown type '{t}'", e.name)),
            };
            if e.name.len() > MAX_PATH || e.link_name.len() > MAX_PATH {
                return bad(format!(
                    "entry '{}' has a name or target longer than {MAX_PATH} bytes",
                    e.name.chars().take(64).collect::<String>()
                ));
            }
            let comps = normalize(&e.name)?;
            let path = comps.join("/");
            let mtime = parse_time(&e.mod_time, "modtime", &e.name)?.unwrap_or(Time(0));
            let atime = parse_time(&e.access_time, "accesstime", &e.name)?.unwrap_or(mtime);
            let ctime = parse_time(&e.change_time, "changetime", &e.name)?.unwrap_or(mtime);
            let mode = u64_of(e.mode, "mode", &e.name)?;
            if mode > 0o7777 {
                return bad(format!("entry '{}' has mode {:o}", e.name, mode));
            }
            let uid = u32::try_from(e.uid).or_else(|_| bad(format!("entry '{}': uid", e.name)))?;
            let gid = u32::try_from(e.gid).or_else(|_| bad(format!("entry '{}': gid", e.name)))?;
            let (major, minor) = (
                u32::try_from(e.dev_major).unwrap_or(u32::MAX),
                u32::try_from(e.dev_minor).unwrap_or(u32::MAX),
            );
            if matches!(kind, Kind::CharDev | Kind::BlockDev) && (major > 0xfff || minor > 0xfffff)
            {
                return bad(format!("entry '{}' has device {major}:{minor}", e.name));
            }
            let mut xattrs = Vec::new();
            if e.xattrs.as_ref().is_some_and(|x| x.len() > MAX_XATTRS) {
                return bad(format!(
                    "entry '{}' has more than {MAX_XATTRS} xattrs",
                    e.name
                ));
            }
            for (k, v) in e.xattrs.iter().flatten() {
                // Base64 is 4 bytes for every 3.
                if k.is_empty() || k.len() > MAX_XATTR_NAME || v.len() > MAX_XATTR_VALUE / 3 * 4 + 4
                {
                    return bad(format!(
                        "entry '{}' has an xattr whose name is empty or longer than \
                         {MAX_XATTR_NAME} bytes, or whose value is over {MAX_XATTR_VALUE} bytes",
                        e.name
                    ));
                }
                let v = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .or_else(|_| bad(format!("entry '{}' xattr {k}: bad base64", e.name)))?;
                if v.len() > MAX_XATTR_VALUE {
                    return bad(format!(
                        "entry '{}' xattr {k}: a value over {MAX_XATTR_VALUE} bytes",
                        e.name
                    ));
                }
                xattrs.push((k.as_bytes().into(), v.into_boxed_slice()));
            }
            xattrs.sort();
            let attr = Attr {
                size: 0,
                blocks: 0,
                file_id: 0,
                atime,
                mtime,
                ctime,
                uid,
                gid,
                nlink: 1,
                rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                    Attr::rdev_of(major, minor)
                } else {
                    0
                },
                perm: mode as u16,
                kind,
            };
            // The root itself ("./").
            if comps.is_empty() {
                if kind != Kind::Dir {
                    return bad(format!(
                        "entry '{}' names the root as a non-directory",
                        e.name
                    ));
                }
                if !implied[0] {
                    return bad("the root directory is listed twice");
                }
                implied[0] = false;
                let root = &mut toc.nodes[0];
                root.attr = Attr {
                    nlink: 2,
                    size: 4096,
                    blocks: 8,
                    ..attr
                };
                root.xattrs = xattrs;
                continue;
            }
            let parent = toc.make_parents(&comps, &path, &mut implied)?;
            let key: Box<[u8]> = path.as_bytes().into();
            if let Some(&old) = toc.by_path.get(&key) {
                if implied[old as usize] && kind == Kind::Dir {
                    implied[old as usize] = false;
                    let n = &mut toc.nodes[old as usize];
                    n.attr = Attr {
                        nlink: n.attr.nlink,
                        size: 4096,
                        blocks: 8,
                        ..attr
                    };
                    n.xattrs = xattrs;
                    continue;
                }
                return bad(format!("'{path}' is listed twice"));
            }
            let idx = id32(toc.nodes.len())?;
            let mut node = Node {
                parent,
                name: comps[comps.len() - 1].as_bytes().into(),
                attr,
                target: None,
                xattrs,
                children: Vec::new(),
                file: NONE,
            };
            match e.kind.as_str() {
                "dir" => {
                    node.attr.size = 4096;
                    node.attr.blocks = 8;
                    node.attr.nlink = 2;
                    toc.nodes[parent as usize].attr.nlink += 1;
                }
                "symlink" => {
                    if e.link_name.is_empty() {
                        return bad(format!("symlink '{path}' has no target"));
                    }
                    node.attr.size = e.link_name.len() as u64;
                    node.target = Some(e.link_name.as_bytes().into());
                }
                "hardlink" => hardlinks.push((idx, e.link_name.clone())),
                "reg" => {
                    let size = u64_of(e.size, "size", &e.name)?;
                    // The chunks that follow this entry.
                    let mut group = vec![e];
                    while i < entries.len() && entries[i].kind == "chunk" {
                        if entries[i].name != e.name {
                            return bad(format!(
                                "chunk of '{}' follows '{}'",
                                entries[i].name, e.name
                            ));
                        }
                        group.push(&entries[i]);
                        i += 1;
                    }
                    let file = toc.file_of(&path, size, &group, data, idx, &mut ranges)?;
                    node.attr.size = size;
                    node.attr.blocks = size.div_ceil(512);
                    node.file = id32(toc.files.len())?;
                    toc.files.push(file);
                }
                _ => {}
            }
            toc.nodes.push(node);
            implied.push(false);
            toc.nodes[parent as usize].children.push(idx);
            toc.by_path.insert(key, idx);
        }
        for (idx, target) in hardlinks {
            let comps = normalize(&target)?;
            let t = toc.by_path.get(comps.join("/").as_bytes()).copied();
            let Some(t) = t.filter(|&t| toc.nodes[t as usize].file != NONE) else {
                let name = String::from_utf8_lossy(&toc.path_of(idx)).into_owned();
                return bad(format!(
                    "hard link '{name}' points to '{target}', which is no regular file"
                ));
            };
            let target = &toc.nodes[t as usize];
            let file = target.file;
            let attr = target.attr.clone();
            let xattrs = target.xattrs.clone();
            let n = &mut toc.nodes[idx as usize];
            n.file = file;
            n.attr = attr;
            n.xattrs = xattrs;
            toc.files[file as usize].links.push(idx);
        }
        if let DataIn::Blob { data_end } = data {
            ranges.sort_unstable();
            let mut prev_end = 0;
            for &(start, end, node) in &ranges {
                if start < prev_end || end > data_end {
                    let name = String::from_utf8_lossy(&toc.path_of(node)).into_owned();
                    return bad(format!(
                        "the data of '{name}' ({start}..{end}) overlaps another file's or \
                         lies outside the blob's data (which ends at {data_end})"
                    ));
                }
                prev_end = end;
            }
        }
        // Directories the TOC does not list (often the root) get the
        // newest time of the layer, not the epoch.
        let newest = toc
            .nodes
            .iter()
            .map(|n| n.attr.mtime)
            .max()
            .unwrap_or(Time(0));
        for (n, _) in toc.nodes.iter_mut().zip(&implied).filter(|(_, i)| **i) {
            n.attr.mtime = newest;
            n.attr.atime = newest;
            n.attr.ctime = newest;
        }
        // Ids: a regular file's is its data's index (shared by its hard
        // links), anything else's its entry index above every file's.
        let nfiles = toc.files.len() as u64;
        for (i, n) in toc.nodes.iter_mut().enumerate() {
            n.attr.file_id = if n.file != NONE {
                u64::from(n.file) + 1
            } else {
                nfiles + i as u64 + 1
            };
        }
        for f in 0..toc.files.len() {
            let nlink = toc.files[f].links.len() as u32;
            for l in toc.files[f].links.clone() {
                toc.nodes[l as usize].attr.nlink = nlink;
            }
        }
        Ok(toc)
    }

    /// The entry of every parent of `comps` (made up as 0755 dirs where
    /// the TOC lists none), and returns the last one's index.
    fn make_parents(
        &mut self,
        comps: &[&str],
        path: &str,
        implied: &mut Vec<bool>,
    ) -> Result<u32, BadToc> {
        let mut parent = 0u32;
        let mut end = 0;
        for c in &comps[..comps.len() - 1] {
            end += c.len() + usize::from(end > 0);
            let sub = &path[..end];
            parent = match self.by_path.get(sub.as_bytes()) {
                Some(&p) => {
                    if self.nodes[p as usize].attr.kind != Kind::Dir {
                        return bad(format!(
                            "'{path}' is inside '{sub}', which is not a directory"
                        ));
                    }
                    p
                }
                None => {
                    let idx = id32(self.nodes.len())?;
                    let mut attr = self.nodes[0].attr.clone();
                    attr.perm = 0o755;
                    attr.uid = 0;
                    attr.gid = 0;
                    attr.nlink = 2;
                    self.nodes.push(Node {
                        parent,
                        name: c.as_bytes().into(),
                        attr,
                        target: None,
                        xattrs: Vec::new(),
                        children: Vec::new(),
                        file: NONE,
                    });
                    implied.push(true);
                    self.nodes[parent as usize].children.push(idx);
                    self.nodes[parent as usize].attr.nlink += 1;
                    self.by_path.insert(sub.as_bytes().into(), idx);
                    idx
                }
            };
        }
        Ok(parent)
    }

    /// The data of a regular file from its `reg` entry and the `chunk`
    /// entries after it.
    fn file_of(
        &self,
        path: &str,
        size: u64,
        group: &[&TocEntry],
        data: DataIn,
        node: u32,
        ranges: &mut Vec<(u64, u64, u32)>,
    ) -> Result<FileData, BadToc> {
        let e = group[0];
        let mut file = FileData {
            size,
            digest: None,
            chunks: Box::new([]),
            links: vec![node],
        };
        if size == 0 {
            if group.len() > 1 {
                return bad(format!("empty file '{path}' has chunks"));
            }
            return Ok(file);
        }
        if e.digest.is_empty() {
            return bad(format!("'{path}' has {size} bytes and no digest"));
        }
        let digest = parse_digest(&e.digest, "digest", path)?;
        file.digest = Some(digest);
        let in_blob = |start: i64, end: i64| -> Result<Source, BadToc> {
            let (s, t) = (
                u64_of(start, "offset", path)?,
                u64_of(end, "endOffset", path)?,
            );
            if s >= t {
                return bad(format!("'{path}' has an empty or inverted range {s}..{t}"));
            }
            if t - s > MAX_CHUNK {
                return bad(too_big(path, t - s, "compressed"));
            }
            Ok(Source::Blob { start: s, end: t })
        };
        let single = group.len() == 1 && e.chunk_size == 0;
        if single {
            let source = match data {
                DataIn::Store => Source::Stored,
                DataIn::Blob { .. } => in_blob(e.offset, e.end_offset)?,
            };
            if let Source::Blob { start, end } = source {
                if size > MAX_CHUNK {
                    return bad(too_big(path, size, "uncompressed"));
                }
                ranges.push((start, end, node));
            }
            file.chunks = Box::new([Chunk {
                offset: 0,
                len: size,
                digest,
                source,
            }]);
            return Ok(file);
        }
        if data == DataIn::Store {
            return bad(format!(
                "'{path}' is in chunks in a layer whose files are stored whole"
            ));
        }
        let mut chunks = Vec::with_capacity(group.len());
        let mut at = 0u64;
        for (k, c) in group.iter().enumerate() {
            let off = u64_of(c.chunk_offset, "chunkOffset", path)?;
            let len = u64_of(c.chunk_size, "chunkSize", path)?;
            if off != at || len == 0 {
                return bad(format!("the chunks of '{path}' do not tile it (chunk {k} at {off}, {len} bytes, expected at {at})"));
            }
            at = at.checked_add(len).filter(|&a| a <= size).ok_or_else(|| {
                BadToc(format!("the chunks of '{path}' run past its size {size}"))
            })?;
            let end = match group.get(k + 1) {
                Some(next) => next.offset,
                None => e.end_offset,
            };
            let source = if c.chunk_type == "zeros" {
                Source::Zeros
            } else if c.chunk_type.is_empty() {
                let s = in_blob(c.offset, end)?;
                if len > MAX_CHUNK {
                    return bad(too_big(path, len, "uncompressed"));
                }
                if let Source::Blob { start, end } = s {
                    ranges.push((start, end, node));
                }
                s
            } else {
                return bad(format!(
                    "'{path}' has a chunk of unknown type '{}'",
                    c.chunk_type
                ));
            };
            let digest = if c.chunk_digest.is_empty() {
                if source != Source::Zeros {
                    return bad(format!("chunk {k} of '{path}' has no digest"));
                }
                Digest([0; 32])
            } else {
                parse_digest(&c.chunk_digest, "chunkDigest", path)?
            };
            chunks.push(Chunk {
                offset: off,
                len,
                digest,
                source,
            });
        }
        if at != size {
            return bad(format!(
                "the chunks of '{path}' cover {at} of its {size} bytes"
            ));
        }
        file.chunks = chunks.into_boxed_slice();
        Ok(file)
    }

    /// The entry at `path` (`""` is the root), without following symlinks.
    pub fn lookup(&self, path: &[u8]) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub fn node(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }

    /// The full path of entry `idx`.
    pub fn path_of(&self, mut idx: u32) -> Vec<u8> {
        let mut parts = Vec::new();
        while idx != 0 {
            let n = &self.nodes[idx as usize];
            parts.push(&n.name[..]);
            idx = n.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// How many regular files and bytes of data the layer holds.
    pub fn data_size(&self) -> (usize, u64) {
        (self.files.len(), self.files.iter().map(|f| f.size).sum())
    }
}

#[cfg(test)]
mod tests;
